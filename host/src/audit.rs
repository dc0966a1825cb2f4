//! The audit log's model: one [`AuditEntry`] per write made through the API
//! — who (the token's name and role), when, what ([`AuditAction`]) to which
//! target, the job revisions before and after, and where the request came
//! from. A room of its own below the stores (which keep entries) and the API
//! (which records them).
//!
//! What an entry never holds: a secret's value, a job's body (so no HTTP
//! header value, environment value or command line), a state value, a
//! token. A replace names the job's top-level fields it changed, not their
//! values; the revisions say which versions they were.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Role;
use crate::ids::{AuditId, JobName, RunId};

/// The longest `target`, `detail` or `forwarded_for` kept, in bytes; longer
/// text is cut (at a character boundary) and marked with `…`.
pub const MAX_TEXT_BYTES: usize = 512;

/// What was done. Stable names: they are stored, filtered on and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    JobCreate,
    JobReplace,
    JobDelete,
    JobPause,
    JobResume,
    RunNow,
    /// A run started again for an earlier run's tick.
    Rerun,
    Kill,
    ModuleUpload,
    ModuleDelete,
    SecretSet,
    SecretDelete,
    SecretRekey,
    StateDelete,
    StateClear,
}

impl AuditAction {
    pub const ALL: [AuditAction; 15] = [
        AuditAction::JobCreate,
        AuditAction::JobReplace,
        AuditAction::JobDelete,
        AuditAction::JobPause,
        AuditAction::JobResume,
        AuditAction::RunNow,
        AuditAction::Rerun,
        AuditAction::Kill,
        AuditAction::ModuleUpload,
        AuditAction::ModuleDelete,
        AuditAction::SecretSet,
        AuditAction::SecretDelete,
        AuditAction::SecretRekey,
        AuditAction::StateDelete,
        AuditAction::StateClear,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::JobCreate => "job_create",
            AuditAction::JobReplace => "job_replace",
            AuditAction::JobDelete => "job_delete",
            AuditAction::JobPause => "job_pause",
            AuditAction::JobResume => "job_resume",
            AuditAction::RunNow => "run_now",
            AuditAction::Rerun => "rerun",
            AuditAction::Kill => "kill",
            AuditAction::ModuleUpload => "module_upload",
            AuditAction::ModuleDelete => "module_delete",
            AuditAction::SecretSet => "secret_set",
            AuditAction::SecretDelete => "secret_delete",
            AuditAction::SecretRekey => "secret_rekey",
            AuditAction::StateDelete => "state_delete",
            AuditAction::StateClear => "state_clear",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown audit action {s:?}; expected one of {}", known.join(", "))
            })
    }
}

/// One write made through the API, recorded after it succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// A ULID: entries sort by it in time order.
    #[schema(value_type = String)]
    pub id: AuditId,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The name of the token that made the call (`local` on a server
    /// without tokens).
    pub actor: String,
    /// The token's role then.
    pub role: Role,
    pub action: AuditAction,
    /// What the action was done to: a job name, a module digest, a secret
    /// name, a state key, the sealing key's id (`secret_rekey`).
    pub target: String,
    /// The job the action concerns (job writes, run now, re-run, kill, state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub job: Option<JobName>,
    /// The job's revision before the write (none for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_before: Option<i64>,
    /// The job's revision after the write (none for a delete); equal to
    /// `revision_before` when nothing changed (pausing a paused job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_after: Option<i64>,
    /// For `job_replace`: the job's top-level fields whose values changed
    /// (`schedule`, `kind`, …), never the values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// The runs concerned: the run a "run now" starts, the run re-run and
    /// the run that re-runs it, the runs a kill stops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub runs: Vec<RunId>,
    /// A short outcome in words (`wasm job`, `created`, `3 keys deleted`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The address the request came from (the peer of the connection: a
    /// proxy, behind one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The request's `X-Forwarded-For` header, as sent (set by a proxy, or
    /// by anyone: not proof of anything on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
    /// When the entry may be deleted (`[logs] audit_retention_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expire_at: Option<Timestamp>,
}

impl AuditEntry {
    /// An entry for `action` on `target` by `actor` at `at`, every optional
    /// part empty.
    /// `at` is kept to the millisecond, as both stores keep it.
    pub fn new(at: Timestamp, actor: &str, role: Role, action: AuditAction, target: &str) -> Self {
        let at = Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at);
        Self {
            id: AuditId::at(at),
            at,
            actor: clip(actor),
            role,
            action,
            target: clip(target),
            job: None,
            revision_before: None,
            revision_after: None,
            changed: Vec::new(),
            runs: Vec::new(),
            detail: None,
            remote: None,
            forwarded_for: None,
            expire_at: None,
        }
    }

    /// Sets the job the entry concerns.
    pub fn job(mut self, job: &JobName) -> Self {
        self.job = Some(job.clone());
        self
    }

    /// Sets the job's revisions before and after the write.
    pub fn revisions(mut self, before: Option<i64>, after: Option<i64>) -> Self {
        self.revision_before = before;
        self.revision_after = after;
        self
    }

    /// Sets the outcome in words.
    pub fn detail(mut self, detail: impl AsRef<str>) -> Self {
        self.detail = Some(clip(detail.as_ref()));
        self
    }
}

/// `text` within [`MAX_TEXT_BYTES`].
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The top-level fields whose values differ between two JSON objects (a
/// field present in only one counts), in name order: what a job replace
/// changed, without saying to what.
pub fn changed_fields(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut names: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|name| before.get(*name) != after.get(*name))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_by_their_names() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
        }
        let err = "job_rename".parse::<AuditAction>().unwrap_err();
        assert!(err.contains("job_create, job_replace"), "{err}");
    }

    #[test]
    fn ids_sort_with_time() {
        let early = AuditEntry::new(
            Timestamp::from_second(100).unwrap(),
            "a",
            Role::Admin,
            AuditAction::Kill,
            "j",
        );
        let late = AuditEntry::new(
            Timestamp::from_second(101).unwrap(),
            "a",
            Role::Admin,
            AuditAction::Kill,
            "j",
        );
        assert!(early.id < late.id);
        assert_eq!(early.id.unix_ms(), 100_000);
        assert!(early.id.to_string() < late.id.to_string());
    }

    #[test]
    fn long_text_is_clipped_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(MAX_TEXT_BYTES);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_TEXT_BYTES, "{}", clipped.len());
        assert!(clipped.ends_with('…'));
    }

    #[test]
    fn changed_fields_name_what_differs_and_nothing_else() {
        let before = serde_json::json!({"schedule": "@daily", "paused": false, "kind": {"shell": {"command": "a"}}});
        let after = serde_json::json!({"schedule": "@daily", "paused": true, "kind": {"shell": {"command": "b"}},
            "description": "new"});
        assert_eq!(changed_fields(&before, &after), ["description", "kind", "paused"]);
        assert!(changed_fields(&before, &before).is_empty());
    }
}
