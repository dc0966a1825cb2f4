//! Bearer-token authentication and role checks.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time against
//! every configured token, so neither timing nor logs reveal a token. A server
//! without tokens (loopback only, see `config`) treats every caller as admin.
//! `GET /api/v1/whoami` tells a client (the console) which role it has.

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::auth::{Role, Token};

/// Who is calling, once authenticated, and from where (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name (never the token itself).
    pub name: String,
    pub role: Role,
    /// The peer address of the connection (`None` in in-process tests).
    pub remote: Option<String>,
    /// The request's `X-Forwarded-For` header, as sent.
    pub forwarded_for: Option<String>,
}

impl Caller {
    /// Fails with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role, action: &str) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{action} needs the {} role; token {:?} has the {} role",
                role.as_str(),
                self.name,
                self.role.as_str()
            )))
        }
    }
}

/// Finds the token matching `presented`; checks every token so the time taken
/// does not depend on which (if any) matched.
pub fn authenticate(tokens: &[Token], presented: &str) -> Option<Caller> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for token in tokens {
        if bool::from(token.sha256.ct_eq(&digest)) {
            found = Some(Caller {
                name: token.name.clone(),
                role: token.role,
                remote: None,
                forwarded_for: None,
            });
        }
    }
    found
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.to_string());
        let forwarded_for = parts
            .headers
            .get("x-forwarded-for")
            .map(|value| crate::audit::clip(&String::from_utf8_lossy(value.as_bytes())));
        let caller = authenticated(parts, state)?;
        Ok(Caller {
            remote,
            forwarded_for,
            ..caller
        })
    }
}

/// The caller a request's bearer token names (any caller is `local`, an
/// admin, on a server without tokens).
fn authenticated(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    if state.tokens.is_empty() {
        return Ok(Caller {
            name: "local".to_owned(),
            role: Role::Admin,
            remote: None,
            forwarded_for: None,
        });
    }
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'".into(),
        ));
    };
    let presented = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into()))?;
    authenticate(&state.tokens, presented).ok_or_else(|| ApiError::Unauthorized("invalid token".into()))
}

/// The caller as the server sees it, so a client can offer only what it may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The token's configured name (`local` on a server without tokens).
    pub name: String,
    pub role: Role,
    /// Whether the server requires a bearer token at all.
    pub tokens_required: bool,
    /// Whether this server accepts shell jobs (its workers may run native processes).
    pub shell_jobs: bool,
}

/// The caller's token name and role.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = Whoami), (status = 401, body = super::ErrorBody)))]
pub(super) async fn whoami(State(state): State<AppState>, caller: Caller) -> Json<Whoami> {
    Json(Whoami {
        name: caller.name,
        role: caller.role,
        tokens_required: !state.tokens.is_empty(),
        shell_jobs: state.shell_jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, role: Role) -> Token {
        Token {
            name: name.into(),
            role,
            sha256: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    #[test]
    fn tokens_match_by_digest_and_roles_are_checked() {
        let tokens = vec![
            token("ci", "secret-one-000000", Role::Operator),
            token("ro", "secret-two-000000", Role::Viewer),
        ];
        let caller = authenticate(&tokens, "secret-one-000000").expect("known token");
        assert_eq!(
            caller,
            Caller {
                name: "ci".into(),
                role: Role::Operator,
                remote: None,
                forwarded_for: None,
            }
        );
        assert!(authenticate(&tokens, "secret-one-00000").is_none());
        assert!(caller.require(Role::Viewer, "reading").is_ok());
        let err = caller
            .require(Role::Admin, "writing a shell job")
            .expect_err("needs admin");
        assert_eq!(
            err.to_string(),
            "writing a shell job needs the admin role; token \"ci\" has the operator role"
        );
    }
}
