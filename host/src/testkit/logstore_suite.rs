//! The conformance suite every `LogStore` must pass: SQLite in its unit tests,
//! MongoDB against a MongoDB-wire server. The checks say what the contract is,
//! so they rely on nothing a particular backend happens to do.
//!
//! Every check isolates itself, so checks can share one database with each
//! other and with other data: job names are `<prefix>-<check>-<random>`, run
//! ids are fresh ULIDs, and queries that do not filter by job are confined to
//! a tick window of one hour picked at random between 2001 and 2100. The one
//! exception is `purge`, which deletes every finished run before its cut-off:
//! its old runs live in a random hour of 1970, a year no other check (and no
//! real run) uses, and expire (`expire_at`) in 1970 too. Two `purge` checks
//! must not run at the same time against one database, or each would count
//! the other's deletions; `run_all` runs its checks one after another.
//!
//! A store may delete expired records on its own at any time (MongoDB's TTL
//! monitor does), so no check relies on an expired record still being there,
//! and every `expire_at` that must not pass yet lies days in the future.
//!
//! Timestamps are compared at millisecond precision: MongoDB stores dates as
//! milliseconds, and nothing in sandcron needs finer.
//!
//! `run_all` also runs the audit log's checks (`audit_suite`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::ids::{JobName, RunId};
use crate::logstore::{LogBatch, LogStore, LogStoreError, RunQuery};
use crate::run::{OutputChunk, RunRecord, RunStatus, StreamKind, Trigger};
use crate::testkit::sample_record;

/// Runs every check, one after another.
pub async fn run_all(store: Arc<dyn LogStore>, prefix: &str) {
    let store = &*store;
    records_round_trip(store, prefix).await;
    upserts_follow_the_fencing_rule(store, prefix).await;
    a_large_mixed_batch_applies_like_single_writes(store, prefix).await;
    lost_markers_replace_only_running_runs(store, prefix).await;
    output_is_idempotent_and_paged(store, prefix).await;
    runs_filter_and_order(store, prefix).await;
    runs_paginate(store, prefix).await;
    runs_filter_by_worker_and_trigger(store, prefix).await;
    malformed_cursors_are_invalid(store, prefix).await;
    last_runs_pick_the_newest_tick(store, prefix).await;
    expiry_round_trips(store, prefix).await;
    pages_stay_stable_while_runs_arrive(store, prefix).await;
    large_output_reads_back_in_pages(store, prefix).await;
    purge_keeps_running_runs(store, prefix).await;
    purge_follows_expiry(store, prefix).await;
    super::audit_suite::run_all(store, prefix).await;
}

/// A record written and read back keeps every field; so do the minimal
/// record (every optional field empty), every status and every trigger.
pub async fn records_round_trip(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "rt");
    let base = window();

    let mut full = sample_record(&job, base + micros(1_234_567), RunStatus::Missed, 1 << 40);
    full.trigger = Trigger::Catchup;
    full.attempt = 3;
    full.worker = "host-1.example-abc123".to_owned();
    full.kind = "shell".to_owned();
    full.exit_code = Some(-9);
    full.error = Some("boom: \"quoted\", ünïcödé\nsecond line\t€".to_owned());
    full.started_at = Some(base + micros(2_000_001));
    full.ended_at = Some(base + micros(3_999_999));
    full.fuel_used = Some(1 << 50);
    full.peak_memory = Some(1 << 33);
    full.output_bytes = 1 << 35;
    full.truncated = true;
    full.missed_count = Some(86_400);
    full.missed_until = Some(base + SignedDuration::from_hours(24));
    full.result_due = Some(base + micros(7_200_000_001));
    full.handed_off_from = Some("conformance-owner".to_owned());

    let mut minimal = sample_record(&job, base + SignedDuration::from_secs(1), RunStatus::Running, 0);
    minimal.module = None;
    minimal.exit_code = None;
    minimal.error = None;
    minimal.started_at = None;
    minimal.ended_at = None;
    minimal.fuel_used = None;
    minimal.peak_memory = None;

    let mut every: Vec<RunRecord> = vec![full, minimal];
    for (i, status) in RunStatus::ALL.into_iter().enumerate() {
        let mut record = sample_record(&job, base + SignedDuration::from_secs(10 + i as i64), status, i as i64);
        record.trigger = Trigger::ALL[i % Trigger::ALL.len()];
        if record.trigger == Trigger::Rerun {
            record.rerun_of = Some(RunId::generate());
        }
        every.push(record);
    }

    store
        .write(&LogBatch::default())
        .await
        .expect("an empty batch is accepted");
    store
        .write(&LogBatch {
            runs: every.clone(),
            chunks: vec![],
        })
        .await
        .expect("write");
    for want in &every {
        let got = store
            .run(want.run_id)
            .await
            .expect("run")
            .unwrap_or_else(|| panic!("run {} is missing", want.run_id));
        assert_eq!(
            to_millis(&got),
            to_millis(want),
            "run {} did not round-trip",
            want.run_id
        );
    }
    assert!(
        store.run(RunId::generate()).await.expect("run").is_none(),
        "an unknown run id must give None"
    );

    // The list query returns the same records.
    let page = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(page.runs.len(), every.len());
    for got in &page.runs {
        let want = every
            .iter()
            .find(|r| r.run_id == got.run_id)
            .expect("a run that was written");
        assert_eq!(
            to_millis(got),
            to_millis(want),
            "runs() returned a different {}",
            got.run_id
        );
    }
}

/// A stored record is replaced only when `supersedes(new, stored)`: a higher
/// fence always wins, an equal fence may not turn a terminal status back into
/// `running`, a lower fence is ignored. Records of one batch apply in order.
pub async fn upserts_follow_the_fencing_rule(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "fence");
    let base = window();
    let running = sample_record(&job, base, RunStatus::Running, 10);
    let id = running.run_id;
    let with = |status: RunStatus, fence: i64, worker: &str| {
        let mut r = sample_record(&job, base, status, fence);
        r.run_id = id;
        r.worker = worker.to_owned();
        r
    };
    let write = |records: Vec<RunRecord>| async move {
        store
            .write(&LogBatch {
                runs: records,
                chunks: vec![],
            })
            .await
            .expect("write");
    };
    let stored = || async { to_millis(&store.run(id).await.expect("run").expect("the run is stored")) };

    write(vec![running.clone()]).await;
    assert_eq!(stored().await, to_millis(&running));

    let succeeded = with(RunStatus::Succeeded, 10, "a");
    write(vec![succeeded.clone()]).await;
    assert_eq!(
        stored().await,
        to_millis(&succeeded),
        "same fence, running -> terminal replaces"
    );

    write(vec![with(RunStatus::Running, 10, "late")]).await;
    assert_eq!(
        stored().await,
        to_millis(&succeeded),
        "same fence may not turn terminal back into running"
    );

    let failed = with(RunStatus::Failed, 10, "b");
    write(vec![failed.clone()]).await;
    assert_eq!(
        stored().await,
        to_millis(&failed),
        "same fence, terminal -> terminal replaces"
    );

    write(vec![with(RunStatus::Succeeded, 9, "fenced-out")]).await;
    write(vec![with(RunStatus::Running, 9, "fenced-out")]).await;
    assert_eq!(stored().await, to_millis(&failed), "a lower fence is ignored");

    let retaken = with(RunStatus::Running, 11, "new-owner");
    write(vec![retaken.clone()]).await;
    assert_eq!(
        stored().await,
        to_millis(&retaken),
        "a higher fence wins, even back to running"
    );

    // Within one batch, records apply in order, each against the previous.
    let ended = with(RunStatus::TimedOut, 11, "new-owner");
    write(vec![
        with(RunStatus::Succeeded, 5, "old"),
        ended.clone(),
        with(RunStatus::Running, 11, "new-owner"),
    ])
    .await;
    assert_eq!(stored().await, to_millis(&ended), "batch applied in order");

    // Replaying the same batch changes nothing.
    write(vec![running.clone(), succeeded.clone(), ended.clone()]).await;
    assert_eq!(stored().await, to_millis(&ended), "replay is idempotent");

    // Queries follow the stored status, not an earlier one.
    let by_status = |status| {
        let job = job.clone();
        async move {
            let query = RunQuery {
                job: Some(job),
                status: Some(status),
                ..RunQuery::default()
            };
            store
                .runs(&query)
                .await
                .expect("runs")
                .runs
                .iter()
                .map(|r| r.run_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_status(RunStatus::TimedOut).await, vec![id]);
    assert!(
        by_status(RunStatus::Running).await.is_empty(),
        "the superseded status is gone from queries"
    );
    assert!(
        by_status(RunStatus::Failed).await.is_empty(),
        "the superseded status is gone from queries"
    );
}

/// A batch of many runs, more than a store may send in one request, mixing
/// new runs, records a stored one supersedes, and records that supersede
/// a stored one — several per run, interleaved — ends exactly as if every
/// record had been written alone, in order.
pub async fn a_large_mixed_batch_applies_like_single_writes(store: &dyn LogStore, prefix: &str) {
    const RUNS: usize = 1_200;
    let job = unique_job(prefix, "mixed-batch");
    let base = window();
    let record = |id: RunId, status: RunStatus, fence: i64, worker: &str| {
        let mut r = sample_record(&job, base, status, fence);
        r.run_id = id;
        r.worker = worker.to_owned();
        r
    };
    let ids: Vec<RunId> = (0..RUNS).map(|_| RunId::generate()).collect();
    // Stored first: kind 1 ended at a higher fence, kind 2 running, kind 3
    // failed at a lower fence; kind 0 is not stored.
    let before: Vec<RunRecord> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, &id)| match i % 4 {
            1 => Some(record(id, RunStatus::Succeeded, 12, "stored")),
            2 => Some(record(id, RunStatus::Running, 10, "stored")),
            3 => Some(record(id, RunStatus::Failed, 9, "stored")),
            _ => None,
        })
        .collect();
    let mut expected: BTreeMap<RunId, RunRecord> = before.iter().map(|r| (r.run_id, r.clone())).collect();
    store
        .write(&LogBatch {
            runs: before,
            chunks: vec![],
        })
        .await
        .expect("write the stored records");
    // Each run's records in order, the runs interleaved: all first records,
    // then the second ones from the last run back.
    let mut firsts = Vec::new();
    let mut seconds = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        match i % 4 {
            0 => {
                firsts.push(record(id, RunStatus::Running, 10, "new"));
                let ended = record(id, RunStatus::Succeeded, 10, "new");
                expected.insert(id, ended.clone());
                seconds.push(ended);
            }
            1 => firsts.push(record(id, RunStatus::Running, 10, "fenced-out")),
            2 => {
                let failed = record(id, RunStatus::Failed, 10, "owner");
                expected.insert(id, failed.clone());
                firsts.push(failed);
                seconds.push(record(id, RunStatus::Running, 10, "late"));
            }
            _ => {
                let retaken = record(id, RunStatus::Succeeded, 11, "new-owner");
                expected.insert(id, retaken.clone());
                firsts.push(retaken);
            }
        }
    }
    seconds.reverse();
    firsts.extend(seconds);
    let batch = LogBatch {
        runs: firsts,
        chunks: vec![],
    };
    let expected: BTreeMap<RunId, RunRecord> = expected.into_iter().map(|(id, r)| (id, to_millis(&r))).collect();
    let stored = || async {
        let mut runs = BTreeMap::new();
        let mut cursor = None;
        loop {
            let query = RunQuery {
                job: Some(job.clone()),
                limit: 1000,
                cursor,
                ..RunQuery::default()
            };
            let page = store.runs(&query).await.expect("runs");
            runs.extend(page.runs.iter().map(|r| (r.run_id, to_millis(r))));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return runs,
            }
        }
    };
    store.write(&batch).await.expect("write the mixed batch");
    let after = stored().await;
    assert_eq!(after.len(), RUNS, "every run is stored once");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(after.get(id), expected.get(id), "run {i} (kind {})", i % 4);
    }
    // A replay changes nothing.
    store.write(&batch).await.expect("replay the mixed batch");
    assert!(stored().await == expected, "a replay changes nothing");
}

/// A `lost` marker (written by another worker under the run's own fence)
/// replaces a run that is still `running`, never a finished one; the run's
/// own outcome, arriving after the marker, replaces the marker.
pub async fn lost_markers_replace_only_running_runs(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "lost");
    let base = window();
    let write = |records: Vec<RunRecord>| async move {
        store
            .write(&LogBatch {
                runs: records,
                chunks: vec![],
            })
            .await
            .expect("write");
    };
    let stored = |id: RunId| async move { to_millis(&store.run(id).await.expect("run").expect("the run is stored")) };
    let run = |status: RunStatus, fence: i64, worker: &str| {
        let mut r = sample_record(&job, base, status, fence);
        r.worker = worker.to_owned();
        r
    };
    let again = |r: &RunRecord, status: RunStatus, worker: &str| {
        let mut r = r.clone();
        r.status = status;
        r.worker = worker.to_owned();
        r
    };

    // Still running: the marker replaces it; the run's own late outcome
    // then replaces the marker.
    let running = run(RunStatus::Running, 5, "owner");
    let lost = again(&running, RunStatus::Lost, "observer");
    write(vec![running.clone()]).await;
    write(vec![lost.clone()]).await;
    assert_eq!(stored(running.run_id).await, to_millis(&lost), "lost replaces running");
    let late = again(&running, RunStatus::Succeeded, "owner");
    write(vec![late.clone()]).await;
    assert_eq!(
        stored(running.run_id).await,
        to_millis(&late),
        "the run's own outcome replaces lost"
    );

    // Finished: the marker is ignored, in one batch as in two.
    let done = run(RunStatus::Failed, 5, "owner");
    write(vec![done.clone()]).await;
    write(vec![again(&done, RunStatus::Lost, "observer")]).await;
    assert_eq!(
        stored(done.run_id).await,
        to_millis(&done),
        "lost does not replace a finished run"
    );
    let started = run(RunStatus::Running, 6, "owner");
    let finished = again(&started, RunStatus::Killed, "owner");
    write(vec![
        started.clone(),
        finished.clone(),
        again(&started, RunStatus::Lost, "observer"),
    ])
    .await;
    assert_eq!(stored(started.run_id).await, to_millis(&finished), "in one batch too");
}

/// Chunks are keyed by `(run_id, seq)`: replays and duplicates are ignored
/// (the first write wins), and `output` pages by `seq` with `after` and
/// `limit`, across both streams.
pub async fn output_is_idempotent_and_paged(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "output");
    let base = window();
    let record = sample_record(&job, base, RunStatus::Running, 1);
    let run_id = record.run_id;
    let chunk = |seq: u64| OutputChunk {
        expire_at: None,
        run_id,
        seq,
        stream: if seq % 3 == 2 {
            StreamKind::Stderr
        } else {
            StreamKind::Stdout
        },
        at: base + micros(1_000_000 + seq as i64 * 1_500),
        data: format!("line {seq} ✓\n"),
    };
    let all: Vec<OutputChunk> = (0..10).map(chunk).collect();

    // Out of order within a batch, and split over batches.
    let first = LogBatch {
        runs: vec![record.clone()],
        chunks: vec![all[3].clone(), all[0].clone(), all[2].clone(), all[1].clone()],
    };
    let second = LogBatch {
        runs: vec![],
        chunks: all[4..].to_vec(),
    };
    store.write(&first).await.expect("write");
    store.write(&second).await.expect("write");
    // Replays, and a duplicate seq with other data, change nothing.
    store.write(&first).await.expect("replay");
    store.write(&second).await.expect("replay");
    let mut impostor = chunk(5);
    impostor.data = "replaced?\n".to_owned();
    impostor.stream = StreamKind::Stderr;
    store
        .write(&LogBatch {
            runs: vec![],
            chunks: vec![impostor, chunk(6)],
        })
        .await
        .expect("duplicate");

    let want = |range: std::ops::Range<usize>| all[range].iter().map(chunk_millis).collect::<Vec<_>>();
    let got = |after: Option<u64>, limit: usize| async move {
        store
            .output(run_id, after, limit)
            .await
            .expect("output")
            .iter()
            .map(chunk_millis)
            .collect::<Vec<_>>()
    };
    assert_eq!(got(None, 100).await, want(0..10), "every chunk once, in seq order");
    assert_eq!(got(Some(3), 100).await, want(4..10), "after is exclusive");
    assert_eq!(got(Some(3), 2).await, want(4..6), "limit caps the page");
    assert_eq!(got(None, 1).await, want(0..1));
    assert_eq!(got(Some(9), 100).await, Vec::new(), "nothing after the last seq");
    assert_eq!(
        got(Some(u64::MAX), 100).await,
        Vec::new(),
        "nothing after the largest seq"
    );
    assert_eq!(
        got(None, 0).await,
        want(0..10),
        "limit 0 means the store's default page"
    );
    assert!(
        store
            .output(RunId::generate(), None, 100)
            .await
            .expect("output")
            .is_empty(),
        "unknown run"
    );

    // Paging by the last seq seen walks everything exactly once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.output(run_id, after, 3).await.expect("output");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|c| c.seq);
        seen.extend(page.iter().map(chunk_millis));
    }
    assert_eq!(seen, want(0..10));
}

/// `runs` filters by job, status and tick (`since` inclusive, `until`
/// exclusive) and orders by tick descending, then run id descending.
pub async fn runs_filter_and_order(store: &dyn LogStore, prefix: &str) {
    let job_a = unique_job(prefix, "filter-a");
    let job_b = unique_job(prefix, "filter-b");
    let base = window();
    let at = |secs: i64| base + SignedDuration::from_secs(secs);

    // Two runs share tick 20 so that the run id breaks the tie; their ids are
    // made so that the one written first sorts last.
    let mut tie_low = sample_record(&job_a, at(20), RunStatus::Failed, 1);
    let mut tie_high = sample_record(&job_a, at(20), RunStatus::Succeeded, 1);
    tie_low.run_id = RunId::from_parts(base.as_millisecond() as u64, random_u64() as u128);
    tie_high.run_id = RunId::from_parts(base.as_millisecond() as u64 + 1, random_u64() as u128);
    let a = vec![
        sample_record(&job_a, at(10), RunStatus::Succeeded, 1),
        tie_high,
        tie_low,
        sample_record(&job_a, at(30), RunStatus::Running, 1),
        sample_record(&job_a, at(40), RunStatus::Failed, 1),
        sample_record(&job_a, at(50), RunStatus::Skipped, 1),
    ];
    let b = vec![
        sample_record(&job_b, at(15), RunStatus::Failed, 1),
        sample_record(&job_b, at(35), RunStatus::Succeeded, 1),
    ];
    let everything: Vec<RunRecord> = a.iter().chain(&b).cloned().collect();
    store
        .write(&LogBatch {
            runs: everything.clone(),
            chunks: vec![],
        })
        .await
        .expect("write");

    let ids = |query: RunQuery| async move {
        let page = store.runs(&query).await.expect("runs");
        assert!(
            page.next_cursor.is_none(),
            "a page holding every match has no next cursor: {query:?}"
        );
        page.runs.iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    let expect = |records: &[RunRecord], keep: &dyn Fn(&RunRecord) -> bool| {
        let mut kept: Vec<&RunRecord> = records.iter().filter(|r| keep(r)).collect();
        kept.sort_by_key(|r| Reverse((r.tick, r.run_id)));
        kept.iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    let in_window = |since: Option<Timestamp>, until: Option<Timestamp>| RunQuery {
        since: since.or(Some(base)),
        until: until.or(Some(base + SignedDuration::from_hours(1))),
        ..RunQuery::default()
    };

    let by_a = ids(RunQuery {
        job: Some(job_a.clone()),
        ..RunQuery::default()
    })
    .await;
    assert_eq!(by_a, expect(&a, &|_| true), "job filter, newest tick first");
    assert_eq!(
        by_a[3..5],
        [a[1].run_id, a[2].run_id],
        "equal ticks order by run id descending"
    );

    let failed_a = RunQuery {
        job: Some(job_a.clone()),
        status: Some(RunStatus::Failed),
        ..RunQuery::default()
    };
    assert_eq!(
        ids(failed_a).await,
        expect(&a, &|r| r.status == RunStatus::Failed),
        "job and status"
    );

    let failed_anywhere = RunQuery {
        status: Some(RunStatus::Failed),
        ..in_window(None, None)
    };
    assert_eq!(
        ids(failed_anywhere).await,
        expect(&everything, &|r| r.status == RunStatus::Failed),
        "status alone"
    );

    assert_eq!(
        ids(in_window(None, None)).await,
        expect(&everything, &|_| true),
        "time window alone"
    );

    let between = in_window(Some(at(15)), Some(at(35)));
    assert_eq!(
        ids(between).await,
        expect(&everything, &|r| r.tick >= at(15) && r.tick < at(35)),
        "since is inclusive, until exclusive"
    );
    let a_since = RunQuery {
        job: Some(job_a.clone()),
        since: Some(at(40)),
        ..RunQuery::default()
    };
    assert_eq!(ids(a_since).await, expect(&a, &|r| r.tick >= at(40)), "job and since");
    let a_until = RunQuery {
        job: Some(job_a.clone()),
        until: Some(at(20)),
        ..RunQuery::default()
    };
    assert_eq!(ids(a_until).await, expect(&a, &|r| r.tick < at(20)), "job and until");

    let nobody = RunQuery {
        job: Some(unique_job(prefix, "filter-none")),
        ..RunQuery::default()
    };
    assert!(ids(nobody).await.is_empty(), "a job without runs");
    let empty_window = in_window(Some(at(51)), Some(at(60)));
    assert!(ids(empty_window).await.is_empty(), "a window without runs");
}

/// Paging through 250 runs with limit 100 yields pages of 100, 100 and 50,
/// every run exactly once, in order, across ties at page boundaries; a page
/// that ends exactly at the last match has no cursor; limit 0 means 100.
pub async fn runs_paginate(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "pages");
    let base = window();
    // Three runs per tick, so ties straddle page boundaries.
    let records: Vec<RunRecord> = (0..250)
        .map(|i| {
            let status = if i % 7 == 0 {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            };
            sample_record(&job, base + SignedDuration::from_secs(i / 3), status, 1)
        })
        .collect();
    store
        .write(&LogBatch {
            runs: records.clone(),
            chunks: vec![],
        })
        .await
        .expect("write");
    let mut expected = records.clone();
    expected.sort_by_key(|r| Reverse((r.tick, r.run_id)));
    let expected: Vec<RunId> = expected.iter().map(|r| r.run_id).collect();

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = None;
    loop {
        let query = RunQuery {
            job: Some(job.clone()),
            limit: 100,
            cursor: cursor.take(),
            ..RunQuery::default()
        };
        let page = store.runs(&query).await.expect("runs");
        sizes.push(page.runs.len());
        seen.extend(page.runs.iter().map(|r| r.run_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() <= 3, "more pages than 250 runs fill");
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(seen, expected, "every run once, in order");

    // 200 then exactly 50: the second page ends at the last match, so it has
    // no cursor.
    let first = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            limit: 200,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    let rest = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            limit: 50,
            cursor: first.next_cursor.clone(),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(rest.runs.len(), 50);
    assert!(rest.next_cursor.is_none(), "no cursor when no more runs match");

    let default = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(default.runs.len(), 100, "limit 0 means 100");
    assert!(default.next_cursor.is_some());
    let huge = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            limit: usize::MAX,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(huge.runs.len(), 250, "an over-large limit is clamped, not an error");

    // Pages of a filtered query stay filtered.
    let mut failed = Vec::new();
    let mut cursor = None;
    loop {
        let query = RunQuery {
            job: Some(job.clone()),
            status: Some(RunStatus::Failed),
            limit: 7,
            cursor: cursor.take(),
            ..RunQuery::default()
        };
        let page = store.runs(&query).await.expect("runs");
        failed.extend(page.runs.iter().map(|r| r.run_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let want: Vec<RunId> = expected
        .iter()
        .filter(|id| {
            records
                .iter()
                .any(|r| r.run_id == **id && r.status == RunStatus::Failed)
        })
        .copied()
        .collect();
    assert_eq!(failed, want, "filtered pages");
}

/// `runs` filters by worker and by trigger, alone and together with a job
/// and each other, and pages through the filtered runs with a cursor: every
/// match once, in order, across ties at page boundaries.
pub async fn runs_filter_by_worker_and_trigger(store: &dyn LogStore, prefix: &str) {
    let job_a = unique_job(prefix, "by-worker-a");
    let job_b = unique_job(prefix, "by-worker-b");
    // Worker ids unique to this call, so a worker filter alone is isolated.
    let suffix = unique_job(prefix, "w");
    let worker_1 = format!("{suffix}-1");
    let worker_2 = format!("{suffix}-2");
    let base = window();
    let triggers = [
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Catchup,
        Trigger::Retry,
        Trigger::Dependency,
    ];
    // Two runs per tick, so ties straddle page boundaries; every job, worker
    // and trigger is mixed with every other.
    let records: Vec<RunRecord> = (0..60)
        .map(|i: usize| {
            let job = if i.is_multiple_of(2) { &job_a } else { &job_b };
            let mut record = sample_record(
                job,
                base + SignedDuration::from_secs((i / 2) as i64),
                RunStatus::Succeeded,
                1,
            );
            record.worker = if i.is_multiple_of(3) {
                worker_2.clone()
            } else {
                worker_1.clone()
            };
            record.trigger = triggers[i % triggers.len()];
            record
        })
        .collect();
    store
        .write(&LogBatch {
            runs: records.clone(),
            chunks: vec![],
        })
        .await
        .expect("write");
    let expect = |keep: &dyn Fn(&RunRecord) -> bool| {
        let mut kept: Vec<&RunRecord> = records.iter().filter(|r| keep(r)).collect();
        kept.sort_by_key(|r| Reverse((r.tick, r.run_id)));
        kept.iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    // Every page of `query` at `limit` runs a page, each asserted no longer
    // than `limit`, concatenated.
    let most_pages = records.len() + 1;
    let all_pages = |query: RunQuery, limit: usize| async move {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..most_pages {
            let page = store
                .runs(&RunQuery {
                    limit,
                    cursor: cursor.take(),
                    ..query.clone()
                })
                .await
                .expect("runs");
            assert!(page.runs.len() <= limit, "{query:?}: a page longer than its limit");
            seen.extend(page.runs.iter().map(|r| r.run_id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
        panic!("{query:?}: more pages than runs");
    };
    let in_window = RunQuery {
        since: Some(base),
        until: Some(base + SignedDuration::from_hours(1)),
        ..RunQuery::default()
    };

    let by_worker = RunQuery {
        worker: Some(worker_1.clone()),
        ..RunQuery::default()
    };
    assert_eq!(
        all_pages(by_worker.clone(), 1000).await,
        expect(&|r| r.worker == worker_1),
        "worker alone"
    );
    let by_trigger = RunQuery {
        trigger: Some(Trigger::Manual),
        ..in_window.clone()
    };
    assert_eq!(
        all_pages(by_trigger, 1000).await,
        expect(&|r| r.trigger == Trigger::Manual),
        "trigger alone"
    );
    let job_and_trigger = RunQuery {
        job: Some(job_a.clone()),
        trigger: Some(Trigger::Retry),
        ..RunQuery::default()
    };
    assert_eq!(
        all_pages(job_and_trigger, 1000).await,
        expect(&|r| r.job == job_a && r.trigger == Trigger::Retry),
        "job and trigger"
    );
    let everything = RunQuery {
        job: Some(job_b.clone()),
        worker: Some(worker_2.clone()),
        trigger: Some(Trigger::Schedule),
        ..RunQuery::default()
    };
    let want = expect(&|r| r.job == job_b && r.worker == worker_2 && r.trigger == Trigger::Schedule);
    assert!(!want.is_empty(), "the records mix every job, worker and trigger");
    assert_eq!(all_pages(everything, 1000).await, want, "job, worker and trigger");
    let worker_and_trigger = RunQuery {
        worker: Some(worker_1.clone()),
        trigger: Some(Trigger::Dependency),
        status: Some(RunStatus::Succeeded),
        ..RunQuery::default()
    };
    assert_eq!(
        all_pages(worker_and_trigger, 1000).await,
        expect(&|r| r.worker == worker_1 && r.trigger == Trigger::Dependency),
        "worker, trigger and status"
    );

    // Paged with a cursor: no duplicates, no gaps, whatever the page size.
    for limit in [1, 3, 7] {
        assert_eq!(
            all_pages(by_worker.clone(), limit).await,
            expect(&|r| r.worker == worker_1),
            "worker pages of {limit}"
        );
        let scheduled_in_window = RunQuery {
            trigger: Some(Trigger::Schedule),
            ..in_window.clone()
        };
        assert_eq!(
            all_pages(scheduled_in_window, limit).await,
            expect(&|r| r.trigger == Trigger::Schedule),
            "trigger pages of {limit}"
        );
        let job_worker_trigger = RunQuery {
            job: Some(job_a.clone()),
            worker: Some(worker_1.clone()),
            trigger: Some(Trigger::Manual),
            ..RunQuery::default()
        };
        assert_eq!(
            all_pages(job_worker_trigger, limit).await,
            expect(&|r| r.job == job_a && r.worker == worker_1 && r.trigger == Trigger::Manual),
            "job, worker and trigger pages of {limit}"
        );
    }

    let nobody = RunQuery {
        worker: Some(format!("{suffix}-none")),
        ..RunQuery::default()
    };
    assert!(all_pages(nobody, 100).await.is_empty(), "a worker without runs");
}

/// A cursor the store did not hand out is `Invalid`, not a server error.
pub async fn malformed_cursors_are_invalid(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "cursor");
    for cursor in [
        "",
        "garbage",
        "12345",
        "not a cursor at all",
        "%00%ff",
        "{\"tick\":1}",
        "😀",
    ] {
        let query = RunQuery {
            job: Some(job.clone()),
            cursor: Some(cursor.to_owned()),
            ..RunQuery::default()
        };
        match store.runs(&query).await {
            Err(LogStoreError::Invalid(message)) => {
                assert_eq!(message, "invalid cursor", "cursor {cursor:?}");
            }
            other => {
                panic!("cursor {cursor:?} gave {other:?}; expected Invalid(\"invalid cursor\")")
            }
        }
    }
}

/// `last_runs` gives, per named job that has runs, the one with the newest
/// tick (not the newest run id), and nothing for jobs without runs.
pub async fn last_runs_pick_the_newest_tick(store: &dyn LogStore, prefix: &str) {
    let x = unique_job(prefix, "last-x");
    let y = unique_job(prefix, "last-y");
    let z = unique_job(prefix, "last-z");
    let base = window();
    let mut newest_x = sample_record(&x, base + SignedDuration::from_secs(300), RunStatus::Running, 1);
    // An old run id on the newest tick: order is by tick.
    newest_x.run_id = RunId::from_parts(1_000, random_u64() as u128);
    let x_runs = vec![
        sample_record(&x, base + SignedDuration::from_secs(100), RunStatus::Succeeded, 1),
        newest_x.clone(),
        sample_record(&x, base + SignedDuration::from_secs(200), RunStatus::Failed, 1),
    ];
    let only_y = sample_record(&y, base, RunStatus::Missed, 1);
    let mut runs = x_runs;
    runs.push(only_y.clone());
    store.write(&LogBatch { runs, chunks: vec![] }).await.expect("write");

    let got = store
        .last_runs(&[x.clone(), y.clone(), z.clone()])
        .await
        .expect("last_runs");
    let got: BTreeMap<JobName, RunRecord> = got.into_iter().map(|(job, r)| (job, to_millis(&r))).collect();
    let want = BTreeMap::from([(x.clone(), to_millis(&newest_x)), (y.clone(), to_millis(&only_y))]);
    assert_eq!(got, want);
    assert!(store.last_runs(&[]).await.expect("last_runs").is_empty());
    assert!(store.last_runs(&[z]).await.expect("last_runs").is_empty());
}

/// `purge(before)` deletes finished runs whose tick is before the cut-off,
/// with their output, keeps running ones and later ones, and says how many
/// it deleted.
pub async fn purge_keeps_running_runs(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "purge");
    // A random hour of 1970: see the module comment.
    let old = Timestamp::from_millisecond((random_u64() % (365 * 24 - 1)) as i64 * 3_600_000).unwrap();
    let cutoff = old + SignedDuration::from_hours(1);
    let old_done: Vec<RunRecord> = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Missed,
        RunStatus::Lost,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, status)| sample_record(&job, old + SignedDuration::from_secs(i as i64), status, 1))
    .collect();
    let old_running = sample_record(&job, old + SignedDuration::from_secs(10), RunStatus::Running, 1);
    let at_cutoff = sample_record(&job, cutoff, RunStatus::Succeeded, 1);
    let recent = sample_record(&job, window(), RunStatus::Succeeded, 1);
    let line = |run: &RunRecord, seq: u64| OutputChunk {
        expire_at: None,
        run_id: run.run_id,
        seq,
        stream: StreamKind::Stdout,
        at: run.tick,
        data: format!("{seq}\n"),
    };
    let mut runs = old_done.clone();
    runs.extend([old_running.clone(), at_cutoff.clone(), recent.clone()]);
    let chunks: Vec<OutputChunk> = runs.iter().flat_map(|r| [line(r, 0), line(r, 1)]).collect();
    store.write(&LogBatch { runs, chunks }).await.expect("write");

    let deleted = store.purge(cutoff).await.expect("purge");
    assert_eq!(
        deleted,
        old_done.len() as u64,
        "finished runs before the cut-off are deleted"
    );
    for gone in &old_done {
        assert!(
            store.run(gone.run_id).await.expect("run").is_none(),
            "{} should be purged",
            gone.run_id
        );
        assert!(
            store.output(gone.run_id, None, 100).await.expect("output").is_empty(),
            "output of a purged run"
        );
    }
    for kept in [&old_running, &at_cutoff, &recent] {
        assert!(
            store.run(kept.run_id).await.expect("run").is_some(),
            "{} should be kept",
            kept.run_id
        );
        assert_eq!(
            store.output(kept.run_id, None, 100).await.expect("output").len(),
            2,
            "output of a kept run"
        );
    }
    let remaining = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(remaining.runs.len(), 3);
    assert_eq!(
        store.purge(cutoff).await.expect("purge"),
        0,
        "a second purge finds nothing"
    );

    // Once the old run has finished it goes too; this also leaves nothing of
    // this check in 1970 for a later purge check to count.
    let mut finished = old_running.clone();
    finished.status = RunStatus::Succeeded;
    store
        .write(&LogBatch {
            runs: vec![finished],
            chunks: vec![],
        })
        .await
        .expect("write");
    let deleted = store
        .purge(cutoff + SignedDuration::from_millis(1))
        .await
        .expect("purge");
    assert_eq!(deleted, 2, "the finished old run and the one at the cut-off");
    let remaining = store
        .runs(&RunQuery {
            job: Some(job),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(
        remaining.runs.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        vec![recent.run_id]
    );
}

/// `expire_at` round-trips on run records (through `run`, `runs` and
/// `last_runs`) and on chunks, and a later record without one clears it.
pub async fn expiry_round_trips(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "expiry");
    let base = window();
    // Days ahead, so that no TTL monitor removes the records mid-check; one
    // with sub-millisecond digits, which a store may cut to milliseconds.
    let later = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    let mut whole_ms = sample_record(&job, base, RunStatus::Succeeded, 1);
    whole_ms.expire_at = Some(ms(later));
    let mut fine = sample_record(&job, base + SignedDuration::from_secs(1), RunStatus::Running, 1);
    fine.expire_at = Some(later + micros(1_234_567));
    let none = sample_record(&job, base + SignedDuration::from_secs(2), RunStatus::Failed, 1);
    let chunk = |run: &RunRecord, seq: u64| OutputChunk {
        expire_at: run.expire_at,
        run_id: run.run_id,
        seq,
        stream: StreamKind::Stdout,
        at: run.tick + micros(seq as i64 * 1_001),
        data: format!("{seq}\n"),
    };
    let records = vec![whole_ms.clone(), fine.clone(), none.clone()];
    let chunks: Vec<OutputChunk> = records.iter().flat_map(|r| [chunk(r, 0), chunk(r, 1)]).collect();
    store
        .write(&LogBatch {
            runs: records.clone(),
            chunks: chunks.clone(),
        })
        .await
        .expect("write");

    for want in &records {
        let got = store.run(want.run_id).await.expect("run").expect("stored");
        assert_eq!(to_millis(&got), to_millis(want), "expire_at of {}", want.run_id);
        let got: Vec<OutputChunk> = store.output(want.run_id, None, 10).await.expect("output");
        let want_chunks: Vec<OutputChunk> = chunks
            .iter()
            .filter(|c| c.run_id == want.run_id)
            .map(chunk_millis)
            .collect();
        assert_eq!(
            got.iter().map(chunk_millis).collect::<Vec<_>>(),
            want_chunks,
            "chunk expire_at"
        );
    }
    let page = store
        .runs(&RunQuery {
            job: Some(job.clone()),
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    let mut listed: Vec<RunRecord> = page.runs.iter().map(to_millis).collect();
    listed.sort_by_key(|r| r.tick);
    assert_eq!(
        listed,
        records.iter().map(to_millis).collect::<Vec<_>>(),
        "runs() keeps expire_at"
    );
    let last = store.last_runs(std::slice::from_ref(&job)).await.expect("last_runs");
    assert_eq!(last.get(&job).map(to_millis), Some(to_millis(&none)));

    // A record that supersedes one with an expiry, and has none, clears it.
    let mut cleared = fine.clone();
    cleared.status = RunStatus::Succeeded;
    cleared.expire_at = None;
    store
        .write(&LogBatch {
            runs: vec![cleared.clone()],
            chunks: vec![],
        })
        .await
        .expect("write");
    let got = store.run(fine.run_id).await.expect("run").expect("stored");
    assert_eq!(
        to_millis(&got),
        to_millis(&cleared),
        "a superseding record replaces expire_at"
    );
}

/// Paging through 250 runs while newer runs of the same job keep arriving
/// (written between and during page reads) yields every run that existed
/// before the first page exactly once, in order; runs that arrive later may
/// show up, but nothing twice.
pub async fn pages_stay_stable_while_runs_arrive(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "stable");
    let base = window();
    let existing: Vec<RunRecord> = (0..250)
        .map(|i| sample_record(&job, base + SignedDuration::from_secs(i / 3), RunStatus::Succeeded, 1))
        .collect();
    store
        .write(&LogBatch {
            runs: existing.clone(),
            chunks: vec![],
        })
        .await
        .expect("write");
    let mut expected = existing.clone();
    expected.sort_by_key(|r| Reverse((r.tick, r.run_id)));
    let expected: Vec<RunId> = expected.iter().map(|r| r.run_id).collect();

    // The writer adds a batch of newer runs (later ticks, some tied with
    // each other) each time the reader has fetched a page, while the reader
    // goes on: the two interleave at every await.
    let (pages_read, mut pages_seen) = tokio::sync::watch::channel(0usize);
    let arrived = std::sync::Mutex::new(BTreeSet::new());
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .runs(&RunQuery {
                    job: Some(job.clone()),
                    limit: 30,
                    cursor: cursor.take(),
                    ..RunQuery::default()
                })
                .await
                .expect("runs");
            seen.extend(page.runs.iter().map(|r| r.run_id));
            pages_read.send_modify(|n| *n += 1);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(seen.len() <= 1_000, "paging does not end");
        }
        drop(pages_read);
        seen
    };
    let writer = async {
        let mut batch = 0i64;
        while pages_seen.wait_for(|n| *n as i64 > batch).await.is_ok() {
            let newer: Vec<RunRecord> = (0..5)
                .map(|i| {
                    let tick = base + SignedDuration::from_secs(100 + batch * 2 + i / 2);
                    sample_record(&job, tick, RunStatus::Running, 1)
                })
                .collect();
            crate::sync::lock(&arrived).extend(newer.iter().map(|r| r.run_id));
            store
                .write(&LogBatch {
                    runs: newer,
                    chunks: vec![],
                })
                .await
                .expect("write");
            batch += 1;
        }
        batch
    };
    let (seen, batches) = tokio::join!(reader, writer);
    assert!(batches >= 8, "runs kept arriving while paging ({batches} batches)");

    let arrived = arrived.into_inner().unwrap();
    let unique: BTreeSet<RunId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no run appears twice");
    let old: Vec<RunId> = seen.iter().copied().filter(|id| !arrived.contains(id)).collect();
    assert_eq!(
        old, expected,
        "every run that existed before paging, exactly once, in order"
    );
    assert!(seen.iter().all(|id| arrived.contains(id) || expected.contains(id)));
}

/// A 10 MiB output written as 2,560 chunks of 4 KiB, in batches the size a
/// sink would send, reads back complete and in order, page by page.
pub async fn large_output_reads_back_in_pages(store: &dyn LogStore, prefix: &str) {
    const CHUNKS: u64 = 2_560;
    const CHUNK_BYTES: usize = 4_096;
    let job = unique_job(prefix, "bulk");
    let run = sample_record(&job, window(), RunStatus::Running, 1);
    let run_id = run.run_id;
    let data = |seq: u64| {
        let mut line = format!("{seq:08} ");
        let fill = char::from(b'a' + (seq % 26) as u8);
        while line.len() < CHUNK_BYTES - 1 {
            line.push(fill);
        }
        line.push('\n');
        line
    };
    let chunk = |seq: u64| OutputChunk {
        expire_at: None,
        run_id,
        seq,
        stream: if seq % 10 == 9 {
            StreamKind::Stderr
        } else {
            StreamKind::Stdout
        },
        at: run.tick + micros(seq as i64 * 1_000),
        data: data(seq),
    };
    store
        .write(&LogBatch {
            runs: vec![run.clone()],
            chunks: vec![],
        })
        .await
        .expect("write");
    let seqs: Vec<u64> = (0..CHUNKS).collect();
    for batch in seqs.chunks(256) {
        store
            .write(&LogBatch {
                runs: vec![],
                chunks: batch.iter().map(|seq| chunk(*seq)).collect(),
            })
            .await
            .expect("write");
    }

    let mut next = 0u64;
    let mut after = None;
    let mut pages = 0;
    let mut bytes = 0usize;
    loop {
        let page = store.output(run_id, after, 1_000).await.expect("output");
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 1_000, "limit caps the page");
        for got in &page {
            // Compared field by field: a failed assert_eq on 4 KiB strings
            // would drown the message.
            assert_eq!(got.seq, next, "chunks in seq order, none missing");
            assert!(got.data == data(next), "chunk {next} came back altered");
            assert_eq!(chunk_millis(got).at, ms(chunk(next).at));
            assert_eq!(got.stream, chunk(next).stream);
            bytes += got.data.len();
            next += 1;
        }
        after = page.last().map(|c| c.seq);
    }
    assert_eq!(next, CHUNKS, "every chunk read back");
    assert_eq!(bytes, CHUNKS as usize * CHUNK_BYTES);
    assert_eq!(pages, 3, "pages of 1000, 1000 and 560");
}

/// `purge(before)` follows `expire_at` when a record has one and the tick
/// when it does not: an expired run goes even if its tick is recent, an
/// unexpired one stays even if its tick is old, and running runs stay.
/// Expired records may already be gone before `purge` runs (a TTL monitor),
/// so `purge` is only required to count what it deleted itself.
pub async fn purge_follows_expiry(store: &dyn LogStore, prefix: &str) {
    let job = unique_job(prefix, "expire");
    // A random hour of 1970: see the module comment.
    let old = Timestamp::from_millisecond((random_u64() % (365 * 24 - 1)) as i64 * 3_600_000).unwrap();
    let cutoff = old + SignedDuration::from_hours(1);
    let future = Timestamp::now() + SignedDuration::from_hours(24 * 3);
    let with = |tick: Timestamp, status: RunStatus, expire_at: Option<Timestamp>| {
        let mut r = sample_record(&job, tick, status, 1);
        r.expire_at = expire_at;
        r
    };
    let expired_recent = with(
        window(),
        RunStatus::Succeeded,
        Some(old + SignedDuration::from_mins(10)),
    );
    let unexpired_old = with(old, RunStatus::Failed, Some(future));
    let plain_old = with(old + SignedDuration::from_secs(1), RunStatus::Killed, None);
    let plain_recent = with(window(), RunStatus::Succeeded, None);
    let running_old = with(old + SignedDuration::from_secs(2), RunStatus::Running, None);
    let running_unexpired = with(old + SignedDuration::from_secs(3), RunStatus::Running, Some(future));
    let runs = vec![
        expired_recent.clone(),
        unexpired_old.clone(),
        plain_old.clone(),
        plain_recent.clone(),
        running_old.clone(),
        running_unexpired.clone(),
    ];
    let chunks: Vec<OutputChunk> = runs
        .iter()
        .flat_map(|run| {
            (0..2).map(|seq| OutputChunk {
                expire_at: run.expire_at,
                run_id: run.run_id,
                seq,
                stream: StreamKind::Stdout,
                at: run.tick,
                data: format!("{seq}\n"),
            })
        })
        .collect();
    store.write(&LogBatch { runs, chunks }).await.expect("write");

    let deleted = store.purge(cutoff).await.expect("purge");
    assert!(
        (1..=2).contains(&deleted),
        "purge deletes the old run without expiry and (unless already expired away) the expired one; it said {deleted}"
    );
    for gone in [&expired_recent, &plain_old] {
        assert!(
            store.run(gone.run_id).await.expect("run").is_none(),
            "{} should be purged",
            gone.run_id
        );
        // A TTL monitor may take the run before its output; it takes both.
        eventually_empty(store, gone.run_id).await;
    }
    for kept in [&unexpired_old, &plain_recent, &running_old, &running_unexpired] {
        assert!(
            store.run(kept.run_id).await.expect("run").is_some(),
            "{} should be kept",
            kept.run_id
        );
        assert_eq!(store.output(kept.run_id, None, 10).await.expect("output").len(), 2);
    }

    // Leave nothing of this check in 1970: the old runs finish without an
    // expiry and go by their tick, which also shows that a record without
    // `expire_at` replaces the expiry of the one it supersedes.
    let finished: Vec<RunRecord> = [&unexpired_old, &running_old, &running_unexpired]
        .into_iter()
        .map(|r| {
            let mut r = r.clone();
            r.status = RunStatus::Succeeded;
            r.expire_at = None;
            r
        })
        .collect();
    store
        .write(&LogBatch {
            runs: finished.clone(),
            chunks: vec![],
        })
        .await
        .expect("write");
    assert_eq!(store.purge(cutoff).await.expect("purge"), 3);
    for gone in &finished {
        assert!(store.run(gone.run_id).await.expect("run").is_none());
        assert!(store.output(gone.run_id, None, 10).await.expect("output").is_empty());
    }
    assert!(store.run(plain_recent.run_id).await.expect("run").is_some());
}

/// Waits until the run has no output left: a store's own expiry (MongoDB's
/// TTL monitor, every 60 s) may delete a run and its chunks in separate
/// passes. Stores without one are empty at the first look.
async fn eventually_empty(store: &dyn LogStore, run_id: RunId) {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        if store.output(run_id, None, 10).await.expect("output").is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "output of purged run {run_id} is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `<prefix>-<check>-<6 random characters>`, a valid job name unique to one
/// call of one check.
pub(super) fn unique_job(prefix: &str, check: &str) -> JobName {
    let random = RunId::generate().to_string().to_ascii_lowercase();
    let name = format!("{prefix}-{check}-{}", &random[random.len() - 6..]);
    JobName::new(&name).unwrap_or_else(|e| panic!("prefix {prefix:?} makes a bad job name {name:?}: {e}"))
}

/// The start of a random whole hour between 2001 and 2100, for checks whose
/// queries do not filter by job.
pub(super) fn window() -> Timestamp {
    const START_2001_MS: i64 = 978_307_200_000;
    let hours = (random_u64() % (99 * 365 * 24)) as i64;
    Timestamp::from_millisecond(START_2001_MS + hours * 3_600_000).unwrap()
}

/// A random number without a `rand` dependency: std's hasher keys are seeded
/// randomly per process and differ for every `RandomState`.
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(RunId::generate().unix_ms() as u128);
    hasher.finish()
}

fn micros(n: i64) -> SignedDuration {
    SignedDuration::from_micros(n)
}

fn ms(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap()
}

/// The record with every timestamp cut to whole milliseconds.
fn to_millis(record: &RunRecord) -> RunRecord {
    let mut r = record.clone();
    r.tick = ms(r.tick);
    r.started_at = r.started_at.map(ms);
    r.ended_at = r.ended_at.map(ms);
    r.missed_until = r.missed_until.map(ms);
    r.result_due = r.result_due.map(ms);
    r.expire_at = r.expire_at.map(ms);
    r
}

fn chunk_millis(chunk: &OutputChunk) -> OutputChunk {
    OutputChunk {
        at: ms(chunk.at),
        expire_at: chunk.expire_at.map(ms),
        ..chunk.clone()
    }
}
