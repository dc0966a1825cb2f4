//! The key layout (see the parent module's table): the key families, the
//! keys of each, and the decoding of a key (and its value) back into what
//! it names. Anything malformed decodes to `None`, so a stray key never
//! stops a listing or a watch.

use super::Coordinator;
use super::records::{KillRequest, KillTarget, RunReport, RunningEntry, TriggerRequest};
use crate::coord::KeyValue;
use crate::ids::{JobName, RunId};
use crate::job::{Job, JobError, JobRecord};

/// The family of keys a watch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Jobs,
    State,
    Running,
    Workers,
    Kill,
    Trigger,
    Modules,
    Results,
    Secrets,
    Handoff,
}

impl Family {
    fn segment(self) -> &'static str {
        match self {
            Family::Jobs => "jobs/",
            Family::State => "state/",
            Family::Running => "running/",
            Family::Workers => "workers/",
            Family::Kill => "kill/",
            Family::Trigger => "trigger/",
            Family::Modules => "modules/",
            Family::Results => "results/",
            Family::Secrets => "secrets/",
            Family::Handoff => "handoff/",
        }
    }
}

impl Coordinator {
    pub fn prefix_of(&self, family: Family) -> String {
        format!("{}{}", self.prefix, family.segment())
    }

    pub(super) fn key(&self, family: Family, rest: &str) -> String {
        format!("{}{}{}", self.prefix, family.segment(), rest)
    }

    /// The path of `key` below its family prefix, if it belongs to `family`.
    pub fn strip<'k>(&self, family: Family, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&*self.prefix)?.strip_prefix(family.segment())
    }

    /// The prefix of a `<family>/<job>/<id>` family: one job's keys, or all.
    pub(super) fn per_job_prefix(&self, family: Family, job: Option<&JobName>) -> String {
        match job {
            Some(job) => self.key(family, &format!("{job}/")),
            None => self.prefix_of(family),
        }
    }

    pub(super) fn running_key(&self, job: &JobName, run_id: RunId) -> String {
        self.key(Family::Running, &format!("{job}/{run_id}"))
    }

    pub(super) fn handoff_key(&self, job: &JobName, run_id: RunId) -> String {
        self.key(Family::Handoff, &format!("{job}/{run_id}"))
    }

    /// Decodes a `jobs/` key-value; `None` if the key is not a job key at all.
    pub fn decode_job(&self, kv: &KeyValue) -> Option<Result<Job, (String, JobError)>> {
        let rest = self.strip(Family::Jobs, &kv.key)?;
        Some(match JobName::new(rest) {
            Ok(name) => JobRecord::decode(name, &kv.value, kv.mod_revision).map_err(|err| (rest.to_owned(), err)),
            Err(err) => Err((
                rest.to_owned(),
                JobError {
                    field: "name".into(),
                    message: err.to_string(),
                },
            )),
        })
    }

    /// The job and run id named by a `running/` key.
    pub fn decode_running_key(&self, key: &str) -> Option<(JobName, RunId)> {
        let rest = self.strip(Family::Running, key)?;
        let (job, run_id) = rest.split_once('/')?;
        Some((JobName::new(job).ok()?, run_id.parse().ok()?))
    }

    /// Decodes a `running/` key-value, skipping anything malformed. The
    /// entry's fence is filled in from the key when the entry has none.
    pub fn decode_running(&self, kv: &KeyValue) -> Option<(JobName, RunningEntry)> {
        let rest = self.strip(Family::Running, &kv.key)?;
        let (job, _) = rest.split_once('/')?;
        let job = JobName::new(job).ok()?;
        let mut entry: RunningEntry = serde_json::from_slice(&kv.value).ok()?;
        entry.fence.get_or_insert(kv.create_revision);
        Some((job, entry))
    }

    /// Decodes a `kill/` key.
    pub fn decode_kill(&self, key: &str) -> Option<KillRequest> {
        let rest = self.strip(Family::Kill, key)?;
        let (job, which) = rest.split_once('/')?;
        let job = JobName::new(job).ok()?;
        let target = if which == "all" {
            KillTarget::All
        } else {
            KillTarget::Run(which.parse().ok()?)
        };
        Some(KillRequest { job, target })
    }

    /// Decodes a `trigger/` key-value into its job and request.
    pub fn decode_trigger(&self, kv: &KeyValue) -> Option<(JobName, TriggerRequest)> {
        let rest = self.strip(Family::Trigger, &kv.key)?;
        let (job, _) = rest.split_once('/')?;
        Some((JobName::new(job).ok()?, serde_json::from_slice(&kv.value).ok()?))
    }

    /// Decodes a `results/` key-value.
    pub fn decode_result(&self, kv: &KeyValue) -> Option<(JobName, RunId, RunReport)> {
        let rest = self.strip(Family::Results, &kv.key)?;
        let (job, run_id) = rest.split_once('/')?;
        Some((
            JobName::new(job).ok()?,
            run_id.parse().ok()?,
            serde_json::from_slice(&kv.value).ok()?,
        ))
    }
}
