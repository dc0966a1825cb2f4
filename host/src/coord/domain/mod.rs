//! The sandcron key layout and every coordination operation built on the
//! [`KvStore`] contract: jobs, claim-by-CAS with fencing, running runs, workers,
//! kill and trigger requests, and a re-listing prefix watcher.
//!
//! ```text
//! <prefix>jobs/<name>                job record (JSON)
//! <prefix>state/<name>               { last_tick, lease, skipped, catchup,
//!                                    plan } — advanced only by claims
//! <prefix>running/<name>/<run_id>    a run in progress, on the runner's lease
//! <prefix>workers/<id>               worker info, on the worker's lease
//! <prefix>kill/<name>/<run_id|all>   kill request, on a short lease
//! <prefix>trigger/<name>/<id>        a run to start: "run now", a dependent
//!                                    job's run, a retry (not before its
//!                                    backoff ends), or one shard of a
//!                                    broadcast tick
//! <prefix>results/<name>/<run_id>    an async run's reported outcome, on a lease
//! <prefix>handoff/<name>/<run_id>    a run waiting for a slot, offered to other
//!                                    workers: its running entry (with its
//!                                    fence), on the offering worker's lease
//! <prefix>modules/meta/<hex>         module commit marker: size, chunks, kind
//! <prefix>modules/data/<hex>/<n>      module bytes, ≤ 1 MiB per chunk
//! <prefix>secrets/<name>             a secret: its sealed value, who wrote it
//! <prefix>kv/<name>/meta             a job's key-value state: its fence and
//!                                    usage (see `kvstate`)
//! <prefix>kv/<name>/k/<key>          one value of it, the key percent-encoded
//! <prefix>audit/<id>                 an audit entry on its way to the log
//!                                    store (the outbox)
//! <prefix>deadman/<name>             the last dead-man alert raised for a
//!                                    job: { since, period_s, periods },
//!                                    written by CAS (one master raises it)
//! <prefix>status/<worker-id>         what a worker publishes about itself
//!                                    beside its registration (its log
//!                                    backlog), on its lease; not watched
//! ```
//!
//! [`Coordinator`] is defined here; its operations live in one file a
//! family: `keys` (the layout above and the decoding of keys), `jobs`,
//! `claims` (claim-by-CAS and the claim state), `runs` (publishing and
//! removing running runs), `handoff` (offering a run that waits for a slot
//! to other workers), `requests` (kill and trigger requests, async
//! results), `workers`, `modules`, `secrets`, `kvstate` (a job's fenced
//! key-value state), `audit` (the audit log's outbox), `deadman` (dead-man
//! alert marks), `status` (what workers publish beside their registration)
//! and `watcher`
//! ([`PrefixWatcher`]). The records stored under the keys are in `records`.

use std::sync::{Arc, OnceLock};

use serde::Serialize;

use self::runs::DeleteQueue;
use crate::coord::{KvStore, StoreError};

mod audit;
mod claims;
mod deadman;
mod handoff;
mod jobs;
mod keys;
mod kvstate;
mod modules;
mod records;
mod requests;
mod runs;
mod secrets;
mod status;
mod watcher;
mod workers;

pub use self::audit::AuditOutbox;
pub use self::claims::{ClaimOutcome, ClaimRequest};
pub use self::keys::Family;
pub use self::kvstate::{StateEntry, StateListing, StateMeta};
pub use self::records::{
    JobState, KillRequest, KillTarget, ModuleMeta, PlanInputs, RunReport, RunningEntry, TriggerRequest,
};
pub use self::secrets::StoredSecret;
pub use self::status::LogBacklog;
pub use self::watcher::{PrefixWatcher, WatchUpdate};

/// Sandcron's view of the coordination store. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    store: Arc<dyn KvStore>,
    prefix: Arc<str>,
    /// The packer of `running/` deletes, started on first use.
    deletes: Arc<OnceLock<DeleteQueue>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("prefix", &self.prefix).finish()
    }
}

impl Coordinator {
    /// `prefix` must end with `/` (default `/sandcron/`).
    pub fn new(store: Arc<dyn KvStore>, prefix: &str) -> Self {
        let prefix = if prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Self {
            store,
            prefix: prefix.into(),
            deletes: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Other(format!("cannot encode value: {err}")))
}
