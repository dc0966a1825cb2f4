//! The `Coordinator` conformance suite: sandcron's own operations (claims
//! and fencing, triggers, jobs, modules, workers, kill requests, the audit
//! outbox) checked over
//! any `KvStore`, so the embedded store and etcd are held to the same
//! behaviour one level above the primitive suite in `kv_suite`.
//!
//! Each check works under the caller's unique `prefix` so a shared server can
//! run many suites at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::auth::Role;
use crate::coord::{
    ClaimOutcome, ClaimRequest, Coordinator, Family, KillTarget, KvStore, MAX_VALUE_BYTES, PlanInputs, RunningEntry,
    WatchUpdate,
};
use crate::ids::{JobName, ModuleDigest, RunId};
use crate::job::{JobKind, JobMeta, JobRecord, JobSpec, ShellJob};
use crate::module::ModuleKind;
use crate::placement::WorkerInfo;
use crate::run::Trigger;

/// Runs every check.
pub async fn run_all(store: Arc<dyn KvStore>, prefix: &str) {
    claims_advance_state_and_fence_runs(store.clone(), &format!("{prefix}claims/")).await;
    packed_claims_fall_back_to_single_claims(store.clone(), &format!("{prefix}packed/")).await;
    queued_catchup_ticks_leave_the_state_as_their_runs_start(store.clone(), &format!("{prefix}queued/")).await;
    a_trigger_starts_exactly_one_run(store.clone(), &format!("{prefix}trigger/")).await;
    jobs_are_written_with_preconditions(store.clone(), &format!("{prefix}jobs/")).await;
    modules_are_chunked_and_committed_last(store.clone(), &format!("{prefix}modules/")).await;
    workers_and_running_entries_live_on_leases(store.clone(), &format!("{prefix}workers/")).await;
    runs_ending_together_share_delete_transactions(store.clone(), &format!("{prefix}finish/")).await;
    kill_requests_are_watchable(store.clone(), &format!("{prefix}kill/")).await;
    the_audit_outbox_keeps_entries_until_removed(store.clone(), &format!("{prefix}audit/")).await;
    super::kvstate_suite::run_all(store, &format!("{prefix}kvstate/")).await;
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn entry(worker: &str, tick: Timestamp) -> RunningEntry {
    RunningEntry {
        tick,
        ..super::sample_entry(worker, Trigger::Schedule)
    }
}

fn record(schedule: &str) -> JobRecord {
    let now = Timestamp::now();
    JobRecord {
        spec: JobSpec::new(
            schedule,
            JobKind::Shell(ShellJob {
                command: "true".into(),
                env: Default::default(),
                timeout_s: 1,
                output_kb: 1,
            }),
        ),
        meta: JobMeta {
            created_at: now,
            updated_at: now,
            active_since: now,
            written_by: Role::Admin,
        },
    }
}

/// A claim moves `state/<job>` forward and publishes the run under the
/// claimer's lease; its fence is the claim's revision; a second claimer that
/// saw the old state loses, even for a later tick.
pub async fn claims_advance_state_and_fence_runs(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let job = JobName::new("claimed").unwrap();
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let (state, seen) = coord.job_state(&job).await.unwrap();
    assert_eq!((state, seen), (None, 0), "a job never claimed has no state");
    let tick = ts("2026-01-01T00:00:01Z");
    let run = entry("w1", tick);
    let request = ClaimRequest {
        job: job.clone(),
        tick,
        seen_revision: seen,
        run: Some(run.clone()),
        lease,
        skipped: false,
        catchup: Vec::new(),
        plan: None,
    };
    let outcome = coord.claim(std::slice::from_ref(&request)).await.unwrap();
    let ClaimOutcome::Won { fence } = outcome[0] else {
        panic!("the first claim must win: {outcome:?}")
    };
    let (state, revision) = coord.job_state(&job).await.unwrap();
    assert_eq!(state.map(|s| s.last_tick), Some(tick));
    assert_eq!(revision, fence, "the fence is the revision of the claim");
    let running = coord.running(Some(&job)).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        running[0].1,
        RunningEntry {
            fence: Some(fence),
            ..run.clone()
        },
        "the entry carries the claim's fence"
    );
    // A worker that still believes the state is at `seen` loses, whatever tick it asks for.
    let late = ClaimRequest {
        tick: tick + SignedDuration::from_secs(1),
        run: Some(entry("w2", tick)),
        ..request.clone()
    };
    assert_eq!(coord.claim(&[late]).await.unwrap(), vec![ClaimOutcome::Lost]);
    assert!(
        !coord.job_state(&job).await.unwrap().0.unwrap().skipped,
        "a run claim is no skip"
    );
    // The winner, knowing the fence, claims the next tick, skipping it.
    let next = ClaimRequest {
        tick: tick + SignedDuration::from_secs(1),
        seen_revision: fence,
        run: None,
        skipped: true,
        ..request
    };
    let outcome = coord.claim(&[next]).await.unwrap();
    assert!(
        matches!(outcome[0], ClaimOutcome::Won { fence: second } if second > fence),
        "{outcome:?}"
    );
    let (state, _) = coord.job_state(&job).await.unwrap();
    assert_eq!(
        state.map(|s| (s.last_tick, s.lease, s.skipped)),
        Some((tick + SignedDuration::from_secs(1), Some(lease.0), true)),
        "the state says the claim skipped its tick, and whose it was"
    );
    // Finishing the run removes its entry.
    coord.finish_run(&job, run.run_id).await.unwrap();
    assert!(coord.running(Some(&job)).await.unwrap().is_empty());
    store.lease_revoke(lease).await.unwrap();
}

/// A catch-up claim lists its queued ticks in the claim state; each leaves
/// the list in the transaction that publishes its run, and only while the
/// state is where the claimant left it.
pub async fn queued_catchup_ticks_leave_the_state_as_their_runs_start(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let job = JobName::new("caught-up").unwrap();
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let ticks: Vec<Timestamp> = (1..=3).map(|s| ts(&format!("2026-01-01T00:00:0{s}Z"))).collect();
    let claim = ClaimRequest {
        job: job.clone(),
        tick: ticks[2],
        seen_revision: 0,
        run: Some(entry("w1", ticks[0])),
        lease,
        skipped: false,
        catchup: ticks[1..].to_vec(),
        plan: Some(PlanInputs {
            job_revision: 7,
            after: ts("2026-01-01T00:00:00Z"),
            now: ts("2026-01-01T00:00:05Z"),
            missed_records: 1000,
            runs: 100,
            grace_ms: 1000,
            scan: 1_000_000,
            abandoned: vec![ts("2025-12-31T23:59:59Z")],
        }),
    };
    let ClaimOutcome::Won { fence } = coord.claim(std::slice::from_ref(&claim)).await.unwrap()[0] else {
        panic!("the claim must win");
    };
    let (state, _) = coord.job_state(&job).await.unwrap();
    let mut state = state.unwrap();
    assert_eq!(state.catchup, ticks[1..].to_vec(), "the queue is in the state");
    assert_eq!(state.plan, claim.plan, "so is the plan's making");
    state.catchup.remove(0);
    let second = entry("w1", ticks[1]);
    let started = coord
        .start_queued_run(&job, &second, lease, &state, fence)
        .await
        .unwrap()
        .expect("the state is where the claim left it");
    assert!(started > fence);
    let (stored, revision) = coord.job_state(&job).await.unwrap();
    assert_eq!((stored.unwrap().catchup, revision), (vec![ticks[2]], started));
    assert!(
        coord
            .running(Some(&job))
            .await
            .unwrap()
            .iter()
            .any(|(_, e)| e.run_id == second.run_id)
    );
    // A worker that still believes the state is at the claim's revision
    // (someone else took the job over since) publishes nothing.
    let third = entry("w1", ticks[2]);
    state.catchup.clear();
    assert_eq!(
        coord
            .start_queued_run(&job, &third, lease, &state, fence)
            .await
            .unwrap(),
        None
    );
    assert!(
        !coord
            .running(Some(&job))
            .await
            .unwrap()
            .iter()
            .any(|(_, e)| e.run_id == third.run_id)
    );
    assert_eq!(coord.job_state(&job).await.unwrap().0.unwrap().catchup, vec![ticks[2]]);
    store.lease_revoke(lease).await.unwrap();
}

/// Claims of many jobs are packed into few transactions; when one of them
/// conflicts, the others still win and the conflicting one loses alone.
pub async fn packed_claims_fall_back_to_single_claims(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let tick = ts("2026-01-01T00:00:00Z");
    // 150 jobs with runs: 300 operations, more than one transaction holds.
    let jobs: Vec<JobName> = (0..150).map(|i| JobName::new(&format!("job-{i}")).unwrap()).collect();
    // Someone else already claimed job-77.
    let (_, seen) = coord.job_state(&jobs[77]).await.unwrap();
    let other = ClaimRequest {
        job: jobs[77].clone(),
        tick,
        seen_revision: seen,
        run: None,
        lease,
        skipped: false,
        catchup: Vec::new(),
        plan: None,
    };
    assert!(matches!(
        coord.claim(&[other]).await.unwrap()[0],
        ClaimOutcome::Won { .. }
    ));
    let requests: Vec<ClaimRequest> = jobs
        .iter()
        .map(|job| ClaimRequest {
            job: job.clone(),
            tick,
            seen_revision: 0,
            run: Some(entry("w", tick)),
            lease,
            skipped: false,
            catchup: Vec::new(),
            plan: None,
        })
        .collect();
    let outcomes = coord.claim(&requests).await.unwrap();
    assert_eq!(outcomes.len(), 150);
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 77 {
            assert_eq!(*outcome, ClaimOutcome::Lost, "job-77 was claimed by someone else");
        } else {
            assert!(matches!(outcome, ClaimOutcome::Won { .. }), "job-{i}: {outcome:?}");
        }
    }
    let running = coord.running(None).await.unwrap();
    assert_eq!(running.len(), 149, "one running entry per won claim");
    // Each job's state moved to the claim's revision.
    let states = coord.all_states().await.unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        if let ClaimOutcome::Won { fence } = outcome {
            assert_eq!(states[&jobs[i]].1, *fence, "job-{i}");
        }
    }
    // Read key by key, some jobs' states are the same as in the range; a
    // job without a state has no entry.
    let never_claimed = JobName::new("never-claimed").unwrap();
    let some: Vec<JobName> = [3, 77, 149]
        .iter()
        .map(|i| jobs[*i].clone())
        .chain([never_claimed.clone()])
        .collect();
    let read = coord.states_of(&some).await.unwrap();
    assert_eq!(read.len(), 3, "{read:?}");
    for name in &some[..3] {
        assert_eq!(read[name], states[name], "{name}");
    }
    assert!(!read.contains_key(&never_claimed));
    store.lease_revoke(lease).await.unwrap();
    assert!(
        coord.running(None).await.unwrap().is_empty(),
        "running entries go with the lease"
    );
}

/// A manual-run request is consumed by exactly one taker, however many try.
pub async fn a_trigger_starts_exactly_one_run(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let job = JobName::new("manual").unwrap();
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let key = coord.request_trigger(&job, Role::Operator).await.unwrap();
    let kv = store.get(&key).await.unwrap().expect("trigger stored");
    let (decoded_job, request) = coord.decode_trigger(&kv).unwrap();
    assert_eq!(decoded_job, job);
    assert_eq!(request.requested_by, "operator");
    let takers = (0..8).map(|i| {
        let coord = coord.clone();
        let key = key.clone();
        let job = job.clone();
        async move {
            coord
                .take_trigger(&key, &job, &entry(&format!("w{i}"), Timestamp::now()), lease)
                .await
                .unwrap()
        }
    });
    let taken: Vec<_> = futures::future::join_all(takers).await.into_iter().flatten().collect();
    assert_eq!(taken.len(), 1, "exactly one taker wins");
    assert!(store.get(&key).await.unwrap().is_none(), "the request is consumed");
    assert_eq!(coord.running(Some(&job)).await.unwrap().len(), 1);
    store.lease_revoke(lease).await.unwrap();
}

/// Job writes honour their revision precondition; a schedule change can reset
/// the claim state; deleting removes state and pending triggers.
pub async fn jobs_are_written_with_preconditions(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let job = JobName::new("written").unwrap();
    let created = coord
        .put_job(&job, &record("@daily"), Some(0), false)
        .await
        .unwrap()
        .expect("create");
    assert!(
        coord
            .put_job(&job, &record("@daily"), Some(0), false)
            .await
            .unwrap()
            .is_none(),
        "create-only fails"
    );
    let (stored, revision) = coord.get_job(&job).await.unwrap().unwrap();
    assert_eq!((stored.spec.schedule.as_str(), revision), ("@daily", created));
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let tick = ts("2026-01-02T00:00:00Z");
    let claim = ClaimRequest {
        job: job.clone(),
        tick,
        seen_revision: 0,
        run: None,
        lease,
        skipped: false,
        catchup: Vec::new(),
        plan: None,
    };
    coord.claim(&[claim]).await.unwrap();
    assert!(coord.job_state(&job).await.unwrap().0.is_some());
    // A stale revision is refused; the current one with a reset clears the state.
    assert!(
        coord
            .put_job(&job, &record("@hourly"), Some(created - 1), true)
            .await
            .unwrap()
            .is_none()
    );
    coord
        .put_job(&job, &record("@hourly"), Some(created), true)
        .await
        .unwrap()
        .expect("replace");
    assert_eq!(
        coord.job_state(&job).await.unwrap(),
        (None, 0),
        "state reset with the new schedule"
    );
    let (jobs, _) = coord.list_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].as_ref().unwrap().spec.schedule, "@hourly");
    coord.request_trigger(&job, Role::Admin).await.unwrap();
    assert!(coord.delete_job(&job).await.unwrap());
    assert!(!coord.delete_job(&job).await.unwrap(), "already gone");
    assert!(
        store
            .range(&coord.prefix_of(Family::Trigger))
            .await
            .unwrap()
            .kvs
            .is_empty(),
        "triggers removed"
    );
    store.lease_revoke(lease).await.unwrap();
}

/// Modules larger than one value are chunked; the meta is the commit marker;
/// uploads are idempotent; listing does not read bytes; deletion removes all.
pub async fn modules_are_chunked_and_committed_last(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let bytes: Vec<u8> = (0..(2 * MAX_VALUE_BYTES + 12345))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let digest = ModuleDigest::of(&bytes);
    assert!(!coord.module_exists(&digest).await.unwrap());
    assert!(coord.module_bytes(&digest).await.unwrap().is_none());
    let (meta, created) = coord
        .put_module(&digest, &bytes, ModuleKind::Module, Vec::new(), Some("first.wasm"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (meta.size, meta.chunks, meta.kind, meta.name.as_deref()),
        (bytes.len() as u64, 3, ModuleKind::Module, Some("first.wasm"))
    );
    let (again, created) = coord
        .put_module(&digest, &bytes, ModuleKind::Module, Vec::new(), None)
        .await
        .unwrap();
    assert!(!created, "a re-upload is a no-op");
    assert_eq!(again, meta, "a re-upload without a name keeps the label");
    // A re-upload under another name relabels it and changes nothing else.
    let (relabelled, created) = coord
        .put_module(&digest, &bytes, ModuleKind::Module, Vec::new(), Some("report.wasm"))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(relabelled.name.as_deref(), Some("report.wasm"));
    assert_eq!((relabelled.size, relabelled.uploaded_at), (meta.size, meta.uploaded_at));
    assert_eq!(coord.module_meta(&digest).await.unwrap(), Some(relabelled.clone()));
    let meta = relabelled;
    assert_eq!(
        coord.module_bytes(&digest).await.unwrap().as_deref(),
        Some(bytes.as_slice())
    );
    let listed = coord.list_modules().await.unwrap();
    assert_eq!(listed, vec![(digest.clone(), meta)]);
    assert!(coord.delete_module(&digest).await.unwrap());
    assert!(!coord.module_exists(&digest).await.unwrap());
    assert!(
        store
            .range(&coord.prefix_of(Family::Modules))
            .await
            .unwrap()
            .kvs
            .is_empty(),
        "chunks deleted too"
    );
}

/// Workers and their runs disappear with the worker's lease.
pub async fn workers_and_running_entries_live_on_leases(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let info = WorkerInfo {
        id: "w-1".into(),
        hostname: "h".into(),
        version: "0".into(),
        labels: Default::default(),
        allow_native: false,
        capacity: 4,
        started_at: Timestamp::now(),
        http: false,
    };
    coord.register_worker(&info, lease).await.unwrap();
    let job = JobName::new("leased").unwrap();
    let run = entry("w-1", Timestamp::now());
    let fence = coord.start_run(&job, &run, lease).await.unwrap();
    assert!(fence > 0);
    assert_eq!(coord.list_workers().await.unwrap(), vec![info]);
    assert_eq!(
        coord.running(None).await.unwrap(),
        vec![(
            job.clone(),
            RunningEntry {
                fence: Some(fence),
                ..run.clone()
            }
        )]
    );
    assert_eq!(coord.live_workers().await.unwrap(), HashSet::from(["w-1".to_owned()]));
    let key = format!("{}{}/{}", coord.prefix_of(Family::Running), job, run.run_id);
    assert_eq!(coord.decode_running_key(&key), Some((job, run.run_id)));
    store.lease_revoke(lease).await.unwrap();
    assert!(coord.list_workers().await.unwrap().is_empty());
    assert!(coord.live_workers().await.unwrap().is_empty());
    assert!(coord.running(None).await.unwrap().is_empty());
}

/// Runs that end at the same time have their `running/` entries removed in
/// shared transactions (more than one transaction holds, so the packs stay
/// within `MAX_TXN_OPS`), and finishing a run twice is harmless.
pub async fn runs_ending_together_share_delete_transactions(store: Arc<dyn KvStore>, prefix: &str) {
    // Every transaction takes at least a couple of milliseconds, as with a
    // store across a network: a fast in-memory store on a busy machine may
    // otherwise finish each delete before the next one is even queued, and
    // packing (which only gathers what waits) would have nothing to pack.
    let slow = Coordinator::new(Arc::new(SlowTxns(store.clone())), prefix);
    let coord = Coordinator::new(store.clone(), prefix);
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let job = JobName::new("busy").unwrap();
    let count = 3 * crate::coord::MAX_TXN_OPS;
    let mut runs = Vec::new();
    let mut revision = 0;
    for _ in 0..count {
        let run = entry("w-1", Timestamp::now());
        revision = coord.start_run(&job, &run, lease).await.unwrap();
        runs.push(run.run_id);
    }
    let ended = futures::future::join_all(runs.iter().map(|run| slow.finish_run(&job, *run))).await;
    assert!(ended.iter().all(Result::is_ok), "{ended:?}");
    assert!(coord.running(Some(&job)).await.unwrap().is_empty());
    coord.finish_run(&job, runs[0]).await.unwrap();
    // The next write's revision tells how many transactions the deletes took.
    let probe = entry("w-1", Timestamp::now());
    let after = coord.start_run(&job, &probe, lease).await.unwrap();
    let transactions = after - revision - 1;
    // One each would be `count`; how many share a pack depends on how fast
    // the store answers (etcd: a few packs; the embedded store: smaller ones).
    assert!(
        (3..i64::try_from(count).unwrap()).contains(&transactions),
        "{count} deletes took {transactions} transactions"
    );
    store.lease_revoke(lease).await.unwrap();
}

/// Kill requests are visible to a watcher and decode to their target.
pub async fn kill_requests_are_watchable(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store, prefix);
    let mut watcher = coord.watcher(Family::Kill);
    let WatchUpdate::Snapshot(initial) = watcher.next().await.unwrap() else {
        panic!("a watcher starts with a snapshot")
    };
    assert!(initial.is_empty());
    let job = JobName::new("victim").unwrap();
    let run_id = RunId::generate();
    coord.request_kill(&job, KillTarget::Run(run_id)).await.unwrap();
    coord.request_kill(&job, KillTarget::All).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let update = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .expect("watch event")
            .unwrap();
        let WatchUpdate::Events(events) = update else {
            panic!("events after the snapshot")
        };
        seen.extend(events.iter().filter_map(|event| coord.decode_kill(event.key())));
    }
    assert_eq!(seen[0].target, KillTarget::Run(run_id));
    assert_eq!(seen[1].target, KillTarget::All);
    assert!(seen.iter().all(|request| request.job == job));
}

/// A store whose transactions take at least 2 ms.
struct SlowTxns(Arc<dyn KvStore>);

#[async_trait::async_trait]
impl KvStore for SlowTxns {
    async fn get(&self, key: &str) -> Result<Option<crate::coord::KeyValue>, crate::coord::StoreError> {
        self.0.get(key).await
    }
    async fn range(&self, prefix: &str) -> Result<crate::coord::RangeResult, crate::coord::StoreError> {
        self.0.range(prefix).await
    }
    async fn txn(&self, txn: crate::coord::Txn) -> Result<crate::coord::TxnResponse, crate::coord::StoreError> {
        let (answer, ()) = tokio::join!(self.0.txn(txn), tokio::time::sleep(Duration::from_millis(2)));
        answer
    }
    async fn watch(
        &self,
        prefix: &str,
        after: crate::coord::Revision,
    ) -> Result<crate::coord::WatchStream, crate::coord::StoreError> {
        self.0.watch(prefix, after).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<crate::coord::LeaseId, crate::coord::StoreError> {
        self.0.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: crate::coord::LeaseId) -> Result<(), crate::coord::StoreError> {
        self.0.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: crate::coord::LeaseId) -> Result<(), crate::coord::StoreError> {
        self.0.lease_revoke(lease).await
    }
    async fn compact(&self, revision: crate::coord::Revision) -> Result<(), crate::coord::StoreError> {
        self.0.compact(revision).await
    }
}

/// The audit outbox lists what was put in id (time) order, reports keys
/// that hold no entry instead of failing, and removes in batches larger
/// than one transaction; removing what is gone is no error.
pub async fn the_audit_outbox_keeps_entries_until_removed(store: Arc<dyn KvStore>, prefix: &str) {
    use crate::audit::{AuditAction, AuditEntry};
    let coord = Coordinator::new(store.clone(), prefix);
    assert!(coord.audit_outbox().await.unwrap().entries.is_empty());
    let base = Timestamp::now();
    let entries: Vec<AuditEntry> = (0..300)
        .map(|i| {
            AuditEntry::new(
                base + SignedDuration::from_millis(i),
                "ops",
                Role::Operator,
                AuditAction::RunNow,
                &format!("job-{i}"),
            )
        })
        .collect();
    // Put out of order: the listing is in id order all the same.
    for entry in entries.iter().rev() {
        coord.put_audit(entry).await.unwrap();
    }
    let junk = format!("{prefix}audit/not-an-entry");
    store.put(&junk, b"{".to_vec(), None).await.unwrap();
    let outbox = coord.audit_outbox().await.unwrap();
    assert_eq!(outbox.entries, entries);
    assert_eq!(outbox.unreadable, vec![junk.clone()]);
    let ids: Vec<_> = entries.iter().map(|entry| entry.id).collect();
    coord.remove_audit(&ids[..200], &outbox.unreadable).await.unwrap();
    let outbox = coord.audit_outbox().await.unwrap();
    assert_eq!(outbox.entries, entries[200..].to_vec());
    assert!(outbox.unreadable.is_empty());
    coord.remove_audit(&ids, &[]).await.unwrap();
    assert!(coord.audit_outbox().await.unwrap().entries.is_empty());
    // A key outside the outbox is never removed through it.
    let other = format!("{prefix}jobs/x");
    store.put(&other, b"{}".to_vec(), None).await.unwrap();
    coord.remove_audit(&[], std::slice::from_ref(&other)).await.unwrap();
    assert!(store.get(&other).await.unwrap().is_some());
}
