//! Which worker runs which job: the worker record every worker publishes,
//! the one statement of eligibility (selector labels, native permission,
//! HTTP allow-list), weighted rendezvous hashing over the eligible live
//! workers, and who may take a run its owner has no free slot for
//! (least-loaded hand-off). Pure: no I/O and no clock; the coordination
//! store keeps the records, the worker and the API ask the questions.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::job::{Job, JobKind};

/// A worker as published under `workers/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub hostname: String,
    pub version: String,
    pub labels: BTreeMap<String, String>,
    pub allow_native: bool,
    pub capacity: usize,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// Whether it runs `http` jobs (its HTTP allow-list is not empty).
    #[serde(default)]
    pub http: bool,
}

impl WorkerInfo {
    /// Whether this worker may run `job` (see [`ineligibility`]).
    pub fn can_run(&self, job: &Job) -> bool {
        ineligibility(self, job).is_none()
    }
}

/// Why a worker may not run a job. The rules are checked in this order, and
/// only the ones that apply to the job's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ineligible {
    /// A shell job needs a worker that permits native processes.
    NoNative,
    /// An http job needs a worker with an HTTP allow-list.
    NoHttp,
    /// The worker lacks a label of the job's selector.
    Selector,
}

/// The one statement of worker eligibility: `None` when `worker` may run
/// `job` — it carries every label of the job's selector, permits native
/// processes for shell jobs, and has an HTTP allow-list for http jobs.
pub fn ineligibility(worker: &WorkerInfo, job: &Job) -> Option<Ineligible> {
    if job.spec.kind.is_native() && !worker.allow_native {
        return Some(Ineligible::NoNative);
    }
    if matches!(job.spec.kind, JobKind::Http(_)) && !worker.http {
        return Some(Ineligible::NoHttp);
    }
    let labelled = job
        .spec
        .selector
        .iter()
        .all(|(key, value)| worker.labels.get(key) == Some(value));
    (!labelled).then_some(Ineligible::Selector)
}

/// The worker that should schedule `job`: weighted rendezvous (highest random
/// weight) hashing over the live workers able to run it. When a worker joins
/// or leaves, only the jobs it wins or held move. `None` when no live worker
/// can run the job.
pub fn owner<'w>(job: &Job, workers: impl IntoIterator<Item = &'w WorkerInfo>) -> Option<&'w WorkerInfo> {
    workers
        .into_iter()
        .filter(|worker| worker.can_run(job))
        .map(|worker| (rendezvous_score(&worker.id, job.name.as_str(), worker.capacity), worker))
        .max_by(|(a, wa), (b, wb)| a.total_cmp(b).then_with(|| wb.id.cmp(&wa.id)))
        .map(|(_, worker)| worker)
}

/// Whether a worker other than `owner` can run `job`: only then is a run
/// of it that waits for one of the owner's slots worth offering.
pub fn others_can_run<'w>(job: &Job, owner: &str, workers: impl IntoIterator<Item = &'w WorkerInfo>) -> bool {
    workers
        .into_iter()
        .any(|worker| worker.id != owner && worker.can_run(job))
}

/// How long a worker with one free slot waits before it tries to take a run
/// another worker offered.
pub const HANDOFF_STEP: Duration = Duration::from_millis(200);

/// How long a worker with `free` free slots waits before it tries to take a
/// run another worker offered; `None` with no free slot (it does not try).
///
/// Inversely proportional to the free slots (`HANDOFF_STEP / free`): every
/// eligible worker sees the offer at about the same time, and the take is a
/// compare-and-swap, so without a delay the winner would be whichever
/// answers first — the least busy event loop or the one nearest the store,
/// not the one with the most room. With it, the worker with the most free
/// slots usually tries first; ties are settled by the compare-and-swap and
/// cost only a failed transaction. No worker waits longer than
/// `HANDOFF_STEP`, which is short beside a run waiting for a slot.
pub fn handoff_delay(free: usize) -> Option<Duration> {
    let free = u32::try_from(free).unwrap_or(u32::MAX);
    (free > 0).then(|| HANDOFF_STEP / free)
}

/// Why no worker can run `job`, in words, for the API: the rule that the
/// worker which came closest failed (every worker fails some rule, or the
/// job would have an owner).
pub fn unplaceable_reason(job: &Job, workers: &[WorkerInfo]) -> String {
    match workers.iter().filter_map(|worker| ineligibility(worker, job)).max() {
        None if workers.is_empty() => "no live workers".to_owned(),
        None => "a live worker can run it".to_owned(),
        Some(Ineligible::NoNative) => "no live worker permits shell jobs (allow_native)".to_owned(),
        Some(Ineligible::NoHttp) => "no live worker runs http jobs (its worker.http_allow is empty)".to_owned(),
        Some(Ineligible::Selector) => {
            let selector: Vec<String> = job.spec.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("no live worker matches the selector {}", selector.join(","))
        }
    }
}

/// `-weight / ln(h)` with `h` a uniform hash of (worker, job) in (0, 1): the
/// standard weighted rendezvous score. The hash is FNV-1a plus a SplitMix64
/// finaliser — stable across builds and platforms, unlike std's hasher, so
/// workers of different versions agree on owners.
fn rendezvous_score(worker: &str, job: &str, capacity: usize) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in worker.bytes().chain([0xff]).chain(job.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    // 53 random bits mapped into the open interval (0, 1).
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let weight = capacity.max(1) as f64;
    -weight / unit.ln()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::job::{JobSpec, ShellJob};

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn job(name: &str, shell: bool, selector: &[(&str, &str)]) -> Job {
        let now = ts("2026-01-01T00:00:00Z");
        let kind = if shell {
            JobKind::Shell(ShellJob {
                command: "true".into(),
                env: BTreeMap::new(),
                timeout_s: 1,
                output_kb: 1,
            })
        } else {
            JobKind::Wasm(crate::job::WasmJob::new(crate::ids::ModuleDigest::of(b"x")))
        };
        let spec = JobSpec {
            selector: selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..JobSpec::new("@daily", kind)
        };
        Job::for_test(name, spec, now)
    }

    fn worker(id: &str, native: bool, labels: &[(&str, &str)], capacity: usize) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            hostname: "h".into(),
            version: "0".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            allow_native: native,
            capacity,
            started_at: ts("2026-01-01T00:00:00Z"),
            http: false,
        }
    }

    #[test]
    fn placement_respects_selectors_and_native_permission() {
        let workers = vec![
            worker("a", false, &[("zone", "eu")], 4),
            worker("b", true, &[("zone", "us")], 4),
        ];
        assert_eq!(owner(&job("s", true, &[]), &workers).map(|w| w.id.as_str()), Some("b"));
        assert_eq!(
            owner(&job("w", false, &[("zone", "eu")]), &workers).map(|w| w.id.as_str()),
            Some("a")
        );
        let nowhere = job("x", true, &[("zone", "eu")]);
        assert!(owner(&nowhere, &workers).is_none());
        assert!(unplaceable_reason(&nowhere, &workers).contains("selector zone=eu"));
        let only_wasm = vec![worker("a", false, &[], 4)];
        assert!(unplaceable_reason(&job("s", true, &[]), &only_wasm).contains("allow_native"));
        assert_eq!(unplaceable_reason(&job("s", true, &[]), &[]), "no live workers");
    }

    #[test]
    fn a_worker_with_more_free_slots_tries_to_take_an_offered_run_sooner() {
        assert_eq!(handoff_delay(0), None, "no free slot: no try");
        assert_eq!(handoff_delay(1), Some(HANDOFF_STEP));
        let delays: Vec<Duration> = [1, 2, 3, 8, 16, 10_000]
            .into_iter()
            .map(|free| handoff_delay(free).expect("a delay"))
            .collect();
        assert!(delays.windows(2).all(|w| w[0] > w[1]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= HANDOFF_STEP));
    }

    #[test]
    fn only_another_eligible_worker_makes_a_run_worth_offering() {
        let shell = job("s", true, &[]);
        let alone = vec![worker("a", true, &[], 1)];
        assert!(!others_can_run(&shell, "a", &alone), "the owner itself does not count");
        let wasm_only = vec![worker("a", true, &[], 1), worker("b", false, &[], 8)];
        assert!(!others_can_run(&shell, "a", &wasm_only), "b may not run shell jobs");
        assert!(others_can_run(&job("w", false, &[]), "a", &wasm_only));
        let labelled = job("l", false, &[("zone", "eu")]);
        let zones = vec![
            worker("a", false, &[("zone", "eu")], 1),
            worker("b", false, &[("zone", "us")], 8),
        ];
        assert!(!others_can_run(&labelled, "a", &zones), "b lacks the selector's label");
    }

    #[test]
    fn placement_moves_only_the_jobs_of_a_changed_worker_and_follows_capacity() {
        let jobs: Vec<Job> = (0..2000).map(|i| job(&format!("job-{i}"), false, &[])).collect();
        let three = vec![
            worker("w1", false, &[], 1),
            worker("w2", false, &[], 1),
            worker("w3", false, &[], 1),
        ];
        let four = [three.clone(), vec![worker("w4", false, &[], 1)]].concat();
        let mut moved = 0;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for job in &jobs {
            let before = owner(job, &three).expect("owner").id.clone();
            let after = owner(job, &four).expect("owner").id.clone();
            if before != after {
                assert_eq!(after, "w4", "a job moved between old workers");
                moved += 1;
            }
            *counts.entry(after).or_default() += 1;
        }
        // About a quarter of the jobs move to the new worker, no more.
        assert!((350..650).contains(&moved), "moved {moved}");
        for (id, count) in &counts {
            assert!((350..650).contains(count), "{id} got {count}");
        }
        // A worker with three times the capacity gets about three times the jobs.
        let weighted = vec![worker("big", false, &[], 3), worker("small", false, &[], 1)];
        let big = jobs
            .iter()
            .filter(|job| owner(job, &weighted).expect("owner").id == "big")
            .count();
        assert!((1350..1650).contains(&big), "big got {big}");
    }
}
