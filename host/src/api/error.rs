//! The API's error type, its JSON body `{ "error": { "code", "message", "field"? } }`,
//! and extractors that answer malformed requests in that same format.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::coord::StoreError;
use crate::logstore::LogStoreError;

/// Every way a request can fail. 4xx messages are for the caller; 5xx details
/// are logged and replaced by a generic message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is well-formed but a value is wrong (422), naming the field.
    #[error("{message}")]
    Invalid { field: Option<String>, message: String },
    /// The request cannot be parsed at all (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// A write that would take the installation past one of its quotas (409).
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A backing store is unreachable (503); worth retrying.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid`, `not_found`, `unauthorized`.
    pub code: &'static str,
    pub message: String,
    /// The offending field (a JSON path into the body, or a parameter name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A count given in a query string (`limit`, `count`): `given`, or
    /// `default` when absent, refused naming `field` outside `1..=max`.
    pub fn count(field: &str, given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
        let count = given.unwrap_or(default);
        if (1..=max).contains(&count) {
            Ok(count)
        } else {
            Err(ApiError::invalid(
                field,
                format!("must be between 1 and {max}, got {count}"),
            ))
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::QuotaExceeded(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::QuotaExceeded(_) => "quota_exceeded",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, field) = match &self {
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                ("internal server error; see the server log".to_owned(), None)
            }
            ApiError::Unavailable(message) => {
                tracing::warn!(%message, "backing store unavailable");
                (message.clone(), None)
            }
            ApiError::Invalid { field, message } => (message.clone(), field.clone()),
            other => (other.to_string(), None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                field,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"sandcron\""),
            );
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // A body refused for its size may be only partly read, and the
            // server then closes the connection: said here, a client does
            // not send its next request on a connection about to close (and
            // see it fail as an incomplete message).
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(message) => ApiError::Unavailable(message),
            StoreError::Invalid(message) => ApiError::Invalid { field: None, message },
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<LogStoreError> for ApiError {
    fn from(err: LogStoreError) -> Self {
        match err {
            LogStoreError::Unavailable(message) => ApiError::Unavailable(message),
            LogStoreError::Invalid(message) => ApiError::invalid("cursor", message),
            other => ApiError::Internal(other.into()),
        }
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s: malformed JSON is a 400
/// naming the line and column, a body of the wrong shape a 422 naming the
/// field, a missing content type a 415, an oversized body a 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => {
            // serde_path_to_error gives "path: message"; split it so the path
            // becomes the field.
            let text = std::error::Error::source(&err).map_or_else(|| err.body_text(), |s| s.to_string());
            match text.split_once(": ") {
                Some((path, message)) if !path.contains(' ') && path != "." => ApiError::Invalid {
                    field: Some(path.to_owned()),
                    message: message.to_owned(),
                },
                _ => ApiError::Invalid {
                    field: None,
                    message: text,
                },
            }
        }
        JsonRejection::JsonSyntaxError(err) => {
            let detail = std::error::Error::source(&err).map_or_else(|| err.body_text(), |s| s.to_string());
            ApiError::BadRequest(format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected a body with content-type application/json".to_owned())
        }
        JsonRejection::BytesRejection(err) => {
            if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is larger than the server accepts".to_owned())
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {}", err.body_text()))
            }
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                let text = std::error::Error::source(&err).map_or_else(|| err.body_text(), |s| s.to_string());
                Err(ApiError::BadRequest(format!("invalid query string: {text}")))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_oversized_body_closes_the_connection_and_other_errors_keep_it() {
        let connection = |err: ApiError| {
            err.into_response()
                .headers()
                .get(axum::http::header::CONNECTION)
                .map(|v| v.to_str().unwrap_or_default().to_owned())
        };
        assert_eq!(
            connection(ApiError::PayloadTooLarge("too big".into())).as_deref(),
            Some("close")
        );
        assert_eq!(
            connection(ApiError::Invalid {
                field: None,
                message: "no".into()
            }),
            None
        );
    }
}
