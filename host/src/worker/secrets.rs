//! Opening a job's secrets for one run: read each sealed value the job
//! uses from the coordination store, open it with the worker's key file,
//! and key it by the name the job reads it under. Values live only in the
//! run's memory; a run whose secrets cannot all be opened does not start.

use crate::coord::Coordinator;
use crate::job::{Job, JobKind};
use crate::secret::{Keyring, RunSecrets};

/// The secrets `job` uses, opened; or why the run cannot have them.
pub(super) async fn open(coord: &Coordinator, keyring: Option<&Keyring>, job: &Job) -> Result<RunSecrets, String> {
    let references = job.spec.secret_references();
    if references.is_empty() {
        return Ok(RunSecrets::default());
    }
    let Some(keyring) = keyring else {
        return Err("the job uses secrets, but this worker has no secrets key file \
             (set [secrets] key_file or SANDCRON_SECRETS_KEY_FILE)"
            .to_owned());
    };
    let mut opened = std::collections::BTreeMap::new();
    for (_, name) in &references {
        let stored = match coord.get_secret(name).await {
            Ok(Some((stored, _))) => stored,
            Ok(None) => {
                return Err(format!(
                    "secret {name} does not exist (it was deleted after the job was saved)"
                ));
            }
            Err(err) => return Err(format!("cannot read secret {name}: {err}")),
        };
        let value = keyring.open(name, &stored.sealed).map_err(|err| err.to_string())?;
        opened.insert(name.clone(), value);
    }
    let mut secrets = RunSecrets {
        used: references.into_iter().map(|(_, name)| name).collect(),
        ..RunSecrets::default()
    };
    match &job.spec.kind {
        // HTTP jobs name each secret where they use it.
        JobKind::Http(_) => {
            for (name, value) in opened {
                secrets.values.insert(name.to_string(), value);
            }
        }
        JobKind::Wasm(_) | JobKind::Shell(_) => {
            for (alias, name) in &job.spec.secrets {
                if let Some(value) = opened.get(name) {
                    secrets.values.insert(alias.clone(), value.clone());
                }
            }
        }
    }
    Ok(secrets)
}
