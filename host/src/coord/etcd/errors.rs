//! What an etcd or transport failure means: whether the request provably
//! never reached etcd (retry on another endpoint), may have been applied
//! (only reads retry), or is final; and the [`StoreError`] it becomes, with
//! a readable description of the status and its causes.

use crate::coord::{LeaseId, StoreError};

/// What etcd 3.4 says for a lease it does not know.
const LEASE_NOT_FOUND: &str = "requested lease not found";

/// Why one attempt failed.
pub(super) enum Failure {
    /// From etcd or the transport; classified by [`classify`].
    Etcd(etcd_client::Error),
    /// Already mapped, and final.
    Final(StoreError),
}

impl From<etcd_client::Error> for Failure {
    fn from(error: etcd_client::Error) -> Self {
        Failure::Etcd(error)
    }
}

/// What a failure means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// etcd did not act on the request. `refused`: no connection could be
    /// made at all.
    NotSent { refused: bool },
    /// The request may have been applied (a timeout, a broken connection).
    MaybeSent,
    /// Retrying elsewhere would fail the same way.
    Final,
}

pub(super) fn classify(error: &etcd_client::Error) -> Class {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) => classify_status(status),
        // Failures to use an already closed watch or keep-alive stream.
        Error::WatchError(_) | Error::LeaseKeepAliveError(_) | Error::IoError(_) => Class::MaybeSent,
        _ => Class::Final,
    }
}

fn classify_status(status: &tonic::Status) -> Class {
    use tonic::Code;
    if caused_by_connect_error(status) {
        return Class::NotSent { refused: true };
    }
    let message = status.message();
    match status.code() {
        // With `require_leader` a member without a leader turns requests
        // away before acting on them; "too many requests" is a refusal too.
        Code::Unavailable | Code::ResourceExhausted
            if message.contains("no leader")
                || message.contains("not capable")
                || message.contains("too many requests") =>
        {
            Class::NotSent { refused: false }
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => Class::MaybeSent,
        // A local transport failure (the status carries its cause); etcd's
        // own Unknown and Internal answers carry none and are final.
        Code::Unknown | Code::Internal if std::error::Error::source(status).is_some() => Class::MaybeSent,
        _ => Class::Final,
    }
}

/// Whether the connection could not be made: tonic wraps such failures in
/// `ConnectError` somewhere in the status' source chain.
fn caused_by_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The final [`StoreError`] for a failure.
pub(super) fn map_error(what: &str, error: &etcd_client::Error) -> StoreError {
    let description = describe(error);
    match classify(error) {
        Class::NotSent { .. } | Class::MaybeSent => {
            return StoreError::Unavailable(format!("{what}: {description}"));
        }
        Class::Final => {}
    }
    if let etcd_client::Error::GRpcStatus(status) = error
        && status.message().starts_with("etcdserver:")
    {
        // etcd reports some credential problems as invalid arguments; they
        // are not the request's fault.
        if is_auth_failure(status) {
            return StoreError::Other(format!("{what}: etcd refused the credentials: {}", status.message()));
        }
        match status.code() {
            // Too many operations, a key written twice in a txn, a request
            // too large, a revision in the future.
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                return StoreError::Invalid(format!("{what}: {}", status.message()));
            }
            _ => {}
        }
    }
    StoreError::Other(format!("{what}: {description}"))
}

fn is_auth_failure(status: &tonic::Status) -> bool {
    let message = status.message();
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    ) || [
        "authentication failed",
        "user name is empty",
        "invalid auth token",
        "permission denied",
    ]
    .iter()
    .any(|fragment| message.contains(fragment))
}

/// A readable description: the status code and message, then its causes.
pub(super) fn describe(error: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return error.to_string();
    };
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message of an error etcd itself sent.
pub(super) fn server_message(error: &etcd_client::Error) -> Option<&str> {
    match error {
        etcd_client::Error::GRpcStatus(status) if status.message().starts_with("etcdserver:") => Some(status.message()),
        _ => None,
    }
}

pub(super) fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::NotFound && status.message().contains(LEASE_NOT_FOUND))
}

/// A put naming a lease etcd does not know becomes `LeaseNotFound(lease)`.
pub(super) fn lease_failure(error: etcd_client::Error, lease: Option<LeaseId>) -> Failure {
    match lease {
        Some(lease) if is_lease_not_found(&error) => Failure::Final(StoreError::LeaseNotFound(lease)),
        _ => Failure::Etcd(error),
    }
}
