//! Who may do what: the roles a caller can hold and the validated bearer
//! tokens that carry them. A room of its own below the job model (which
//! records who wrote a job), the coordination store and the API, none of
//! which may depend on the configuration.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a bearer token may do. Ordered: each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read jobs, runs, output, workers.
    Viewer,
    /// Also write wasm jobs, upload modules, run now, pause, kill.
    Operator,
    /// Also write shell jobs.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A validated token: only its hash is kept in memory.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish()
    }
}
