//! The one error type of the HTTP API and the JSON body every error answers with.
//!
//! Every failure a client can see has a stable snake_case code (`ApiError::code`) and a status;
//! the body is always `{"error": {"code": "…", "message": "…"}}`, including for rejected bodies,
//! unknown routes and wrong methods. Internal failures are logged in full and answered with a
//! generic message, so no SQL, path or panic text reaches a client.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rusqlite::ErrorCode;
use sync_core::error::MergeError;
use tokio::task::JoinError;

use crate::routes::sync::{MAX_BODY_BYTES, MAX_CHANGES_PER_SYNC};
use crate::store::StoreError;

/// Seconds a client should wait before retrying after `busy`.
const RETRY_AFTER_SECONDS: &str = "1";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body exceeds the limit of its route.
    #[error("the request body is larger than {max} bytes", max = MAX_BODY_BYTES)]
    BodyTooLarge,
    /// The body, or a change in it, does not parse.
    #[error("{0}")]
    MalformedChange(String),
    /// More changes in one sync than the server accepts.
    #[error(
        "the request carries {count} changes; at most {max} are accepted in one sync",
        max = MAX_CHANGES_PER_SYNC
    )]
    BatchTooLarge {
        /// Changes in the request.
        count: usize,
    },
    /// Changes depend on changes neither stored nor uploaded.
    #[error("{0}")]
    MissingDeps(String),
    /// An (actor, seq) pair is already stored with other content.
    #[error("{0}")]
    DuplicateSeq(String),
    /// A change with no dependencies for an existing document.
    #[error("{0}")]
    ForeignRoot(String),
    /// Automerge refused the changes for another reason.
    #[error("{0}")]
    ChangeRefused(String),
    /// A change is already stored under another document.
    #[error("{0}")]
    DuplicateChange(String),
    /// A path segment that should be a document id is not a UUID.
    #[error("{0:?} is not a document id")]
    InvalidDocumentId(String),
    /// No such document.
    #[error("document {0} is unknown")]
    UnknownDocument(String),
    /// No route matches the path.
    #[error("no such endpoint")]
    NotFound,
    /// The route exists but not for this method.
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    /// SQLite failed; a full disk and a busy database get codes of their own.
    #[error("storage error: {0}")]
    Store(rusqlite::Error),
    /// Anything else that is the server's fault, including a panic in a blocking task.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// The stable code clients and tests match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BodyTooLarge => "body_too_large",
            Self::MalformedChange(_) => "malformed_change",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::MissingDeps(_) => "missing_deps",
            Self::DuplicateSeq(_) => "duplicate_seq",
            Self::ForeignRoot(_) => "foreign_root",
            Self::ChangeRefused(_) => "change_refused",
            Self::DuplicateChange(_) => "duplicate_change",
            Self::InvalidDocumentId(_) => "invalid_document_id",
            Self::UnknownDocument(_) => "unknown_document",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Store(err) => match err.sqlite_error_code() {
                Some(ErrorCode::DiskFull) => "storage_full",
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "busy",
                _ => "internal",
            },
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MalformedChange(_) | Self::InvalidDocumentId(_) => StatusCode::BAD_REQUEST,
            Self::MissingDeps(_)
            | Self::DuplicateSeq(_)
            | Self::ForeignRoot(_)
            | Self::DuplicateChange(_) => StatusCode::CONFLICT,
            Self::BatchTooLarge { .. } | Self::ChangeRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownDocument(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Store(err) => match err.sqlite_error_code() {
                Some(ErrorCode::DiskFull) => StatusCode::INSUFFICIENT_STORAGE,
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message for the client: the error itself, or a generic sentence for server faults.
    fn client_message(&self) -> String {
        match self {
            Self::Store(err) => {
                tracing::error!(error = %err, "storage error");
                match self.code() {
                    "storage_full" => "the server's storage is full; nothing was stored",
                    "busy" => "the server is busy; nothing was stored, retry shortly",
                    _ => "internal server error",
                }
                .to_owned()
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let body = serde_json::json!({
            "error": { "code": code, "message": self.client_message() }
        });
        let mut response = (self.status(), Json(body)).into_response();
        if code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::BodyTooLarge
        } else {
            Self::MalformedChange(format!("the request body could not be read: {rejection}"))
        }
    }
}

impl From<MergeError> for ApiError {
    fn from(err: MergeError) -> Self {
        let message = err.to_string();
        match err {
            MergeError::MalformedChange { .. } => Self::MalformedChange(message),
            MergeError::MissingDeps { .. } => Self::MissingDeps(message),
            MergeError::DuplicateSeq { .. } => Self::DuplicateSeq(message),
            MergeError::ForeignRoot { .. } => Self::ForeignRoot(message),
            MergeError::Refused { .. } => Self::ChangeRefused(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Sqlite(err) => Self::Store(err),
            StoreError::Merge(err) => err.into(),
            StoreError::DuplicateChange { .. } => Self::DuplicateChange(err.to_string()),
            StoreError::Unstorable { .. } => Self::ChangeRefused(err.to_string()),
            other @ (StoreError::Corrupt { .. }
            | StoreError::NewerSchema { .. }
            | StoreError::Pragma { .. }) => Self::Internal(other.into()),
        }
    }
}

impl From<JoinError> for ApiError {
    fn from(err: JoinError) -> Self {
        let what = if err.is_panic() { "panicked" } else { "was cancelled" };
        Self::Internal(anyhow::Error::new(err).context(format!("a blocking task {what}")))
    }
}
