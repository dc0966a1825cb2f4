//! Kill switches: the switches of this worker's runs, shared with the kill
//! watcher, so that a kill request reaches a run without waiting for the
//! scheduling loop.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::coord::{Coordinator, Family, KillTarget, Revision};
use crate::exec::{KillSwitch, StopReason};
use crate::ids::{JobName, RunId};
use crate::sync::lock;
use crate::worker::watchers::watch_puts;

/// The kill switches of this worker's runs, shared with the kill watcher so a
/// kill request reaches a run without waiting for the scheduling loop.
#[derive(Clone, Default)]
pub(super) struct KillSwitches(Arc<std::sync::Mutex<HashMap<RunId, (JobName, KillSwitch)>>>);

impl KillSwitches {
    pub(super) fn insert(&self, run_id: RunId, job: JobName, kill: KillSwitch) {
        lock(&self.0).insert(run_id, (job, kill));
    }

    pub(super) fn remove(&self, run_id: &RunId) {
        lock(&self.0).remove(run_id);
    }

    /// Pulls the switches of the runs a kill request names.
    pub(super) fn pull(&self, job: &JobName, target: KillTarget) {
        let map = lock(&self.0);
        for (run_id, (run_job, kill)) in map.iter() {
            let hit = run_job == job
                && match target {
                    KillTarget::Run(target) => target == *run_id,
                    KillTarget::All => true,
                };
            if hit {
                tracing::info!(%job, run = %run_id, "kill requested");
                kill.pull(StopReason::Killed);
            }
        }
    }
}

/// Watches kill requests and pulls the switches of this worker's runs they
/// name. Requests already handled (a snapshot after a watch failure repeats
/// them) are skipped by revision, so "kill all" never hits a run that started
/// after the request.
pub(super) async fn watch_kills(coord: Coordinator, switches: KillSwitches, stop: CancellationToken) {
    let mut handled: Revision = 0;
    let decoder = coord.clone();
    watch_puts(coord, Family::Kill, stop, move |mut puts| {
        puts.sort_by_key(|kv| kv.mod_revision);
        for kv in puts {
            if kv.mod_revision <= handled {
                continue;
            }
            handled = kv.mod_revision;
            if let Some(request) = decoder.decode_kill(&kv.key) {
                switches.pull(&request.job, request.target);
            }
        }
    })
    .await;
}
