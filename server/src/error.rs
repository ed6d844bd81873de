//! The one error type of the HTTP API and the JSON body every error answers with.
//!
//! Every failure a client can see has a stable snake_case code (`ApiError::code`) and a status;
//! the body is always `{"error": {"code": "…", "message": "…"}}`, including for rejected bodies,
//! unknown routes and wrong methods. Internal failures are logged in full and answered with a
//! generic message, so no SQL, path or panic text reaches a client.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rusqlite::ErrorCode;
use serde::Serialize;
use sync_core::error::MergeError;
use tokio::task::JoinError;
use utoipa::ToSchema;

use crate::routes::blobs::UPLOAD_OFFSET;
use crate::routes::sync::{MAX_BODY_BYTES, MAX_CHANGES_PER_SYNC};
use crate::store::{Refusal, StoreError};

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
    /// The body is compressed in an encoding the route does not take.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// More changes in one sync than the server accepts.
    #[error(
        "the request carries {count} changes; at most {max} are accepted in one sync",
        max = MAX_CHANGES_PER_SYNC
    )]
    BatchTooLarge {
        /// Changes in the request.
        count: usize,
    },
    /// A compressed change inflates past the upload's limit (a deflate bomb, B-23).
    #[error("{0}")]
    InflateLimit(String),
    /// Changes depend on changes neither stored nor uploaded.
    #[error("{0}")]
    MissingDeps(String),
    /// An (actor, seq) pair is already stored with other content; the answer names the actor
    /// and the document, so a device restored from a backup knows its actor is spent.
    #[error("{message}")]
    DuplicateSeq {
        /// The human sentence.
        message: String,
        /// Hex id of the actor whose sequence number is taken.
        actor: String,
        /// The document concerned.
        doc: String,
    },
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
    /// The DPoP proof is missing, malformed, forged, replayed or for another request.
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(String),
    /// The proof carries no nonce, or one that is expired or not ours; retry with the
    /// `DPoP-Nonce` of this answer.
    #[error("the DPoP proof needs a fresh server nonce; retry with the DPoP-Nonce header")]
    UseDpopNonce,
    /// The access token is missing or does not verify.
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    /// The access token is past its expiry; mint a new one.
    #[error("the access token expired")]
    TokenExpired,
    /// The certificate changed since the token was minted; mint a new one.
    #[error("the access token was revoked; mint a new one")]
    TokenRevoked,
    /// The device is unknown or revoked.
    #[error("this device is not enrolled or was revoked")]
    DeviceRevoked,
    /// The officer's certificate is revoked.
    #[error("certificate {0} is revoked")]
    CertificateRevoked(String),
    /// The officer's certificate is suspended.
    #[error("certificate {0} is suspended")]
    CertificateSuspended(String),
    /// The officer's certificate is expired, not yet valid, or missing.
    #[error("certificate {0} is not valid now")]
    CertificateExpired(String),
    /// The caller's role may not use this endpoint.
    #[error("{0}")]
    Forbidden(String),
    /// The document is outside the caller's township or scope.
    #[error("{0}")]
    OutOfScope(String),
    /// A new change carries an actor not registered to the uploading device.
    #[error("{0}")]
    ForeignActor(String),
    /// The enrollment code is unknown, used or expired.
    #[error("the enrollment code is unknown, already used or expired")]
    InvalidEnrollmentCode,
    /// The device key is already enrolled.
    #[error("this device key is already enrolled")]
    DeviceAlreadyEnrolled,
    /// An entrustment item grants an action that can never be entrusted.
    #[error("action {0} can never be entrusted to a township")]
    NotEntrustable(String),
    /// A referenced registry object does not exist.
    #[error("{0}")]
    UnknownReference(String),
    /// A registry object with that id already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The JSON body does not parse or lacks a field.
    #[error("{0}")]
    MalformedJson(String),
    /// The object named in the path does not exist, or is not visible to the caller.
    #[error("{0}")]
    ObjectNotFound(String),
    /// A review action names a path, value or event the record cannot take.
    #[error("{0}")]
    InvalidEdit(String),
    /// A quarterly report is submitted once.
    #[error("{0}")]
    AlreadySubmitted(String),
    /// A quarterly report is acknowledged only after it was submitted.
    #[error("{0}")]
    NotSubmitted(String),
    /// A quarterly report is acknowledged once.
    #[error("{0}")]
    AlreadyAcknowledged(String),
    /// A query string parameter that does not parse.
    #[error("{0}")]
    InvalidQuery(String),
    /// The `Idempotency-Key` was used before by this device with another body.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// The `Idempotency-Key` header is not 1 to 128 characters of `[A-Za-z0-9_-]`.
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// The document would pass its quota of stored change bytes.
    #[error("{0}")]
    DocumentQuota(String),
    /// A blob chunk does not start where the server's upload stands.
    #[error("the upload stands at byte {received}; send the chunk that starts there")]
    UploadOffsetMismatch {
        /// Bytes of the blob the server holds.
        received: u64,
    },
    /// The uploaded bytes do not hash to the blob's id; they were discarded.
    #[error("{0}")]
    BlobHashMismatch(String),
    /// The blob is larger than the server accepts.
    #[error("a blob may hold at most {max} bytes", max = crate::blob_files::MAX_BLOB_BYTES)]
    BlobTooLarge,
    /// A path segment that should be a blob's SHA-256 is not 64 lowercase hex digits.
    #[error("{0:?} is not a SHA-256 in lowercase hex")]
    InvalidBlobId(String),
    /// The `Upload-Offset` or `Upload-Length` header is missing or inconsistent.
    #[error("{0}")]
    MalformedUpload(String),
    /// The disk holding the blobs is full; nothing half-written is referenced.
    #[error("{0}")]
    StorageFull(String),
    /// The proof replay cache is full of unexpired ids.
    #[error("the server is busy; retry shortly")]
    ReplayCacheFull,
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
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::InflateLimit(_) => "inflate_limit",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::MissingDeps(_) => "missing_deps",
            Self::DuplicateSeq { .. } => "duplicate_seq",
            Self::ForeignRoot(_) => "foreign_root",
            Self::ChangeRefused(_) => "change_refused",
            Self::DuplicateChange(_) => "duplicate_change",
            Self::InvalidDocumentId(_) => "invalid_document_id",
            Self::UnknownDocument(_) => "unknown_document",
            Self::NotFound | Self::ObjectNotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidDpopProof(_) => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::InvalidToken(_) => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::DeviceRevoked => "device_revoked",
            Self::CertificateRevoked(_) => "certificate_revoked",
            Self::CertificateSuspended(_) => "certificate_suspended",
            Self::CertificateExpired(_) => "certificate_expired",
            Self::Forbidden(_) => "forbidden",
            Self::OutOfScope(_) => "out_of_scope",
            Self::ForeignActor(_) => "foreign_actor",
            Self::InvalidEnrollmentCode => "invalid_enrollment_code",
            Self::DeviceAlreadyEnrolled => "device_already_enrolled",
            Self::NotEntrustable(_) => "not_entrustable",
            Self::UnknownReference(_) => "unknown_reference",
            Self::AlreadyExists(_) => "already_exists",
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidEdit(_) => "invalid_edit",
            Self::InvalidQuery(_) => "invalid_query",
            Self::IdempotencyConflict(_) => "idempotency_conflict",
            Self::AlreadySubmitted(_) => "already_submitted",
            Self::NotSubmitted(_) => "not_submitted",
            Self::AlreadyAcknowledged(_) => "already_acknowledged",
            Self::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            Self::DocumentQuota(_) => "document_quota",
            Self::UploadOffsetMismatch { .. } => "upload_offset_mismatch",
            Self::BlobHashMismatch(_) => "blob_hash_mismatch",
            Self::BlobTooLarge => "blob_too_large",
            Self::InvalidBlobId(_) => "invalid_blob_id",
            Self::MalformedUpload(_) => "malformed_upload",
            Self::StorageFull(_) => "storage_full",
            Self::ReplayCacheFull => "busy",
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
            Self::BodyTooLarge | Self::InflateLimit(_) | Self::BlobTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::MalformedChange(_)
            | Self::InvalidDocumentId(_)
            | Self::InvalidEnrollmentCode
            | Self::MalformedJson(_)
            | Self::InvalidQuery(_)
            | Self::InvalidIdempotencyKey(_)
            | Self::BlobHashMismatch(_)
            | Self::InvalidBlobId(_)
            | Self::MalformedUpload(_) => StatusCode::BAD_REQUEST,
            Self::InvalidDpopProof(_)
            | Self::UseDpopNonce
            | Self::InvalidToken(_)
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::DeviceRevoked => StatusCode::UNAUTHORIZED,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::CertificateRevoked(_)
            | Self::CertificateSuspended(_)
            | Self::CertificateExpired(_)
            | Self::Forbidden(_)
            | Self::OutOfScope(_)
            | Self::ForeignActor(_) => StatusCode::FORBIDDEN,
            Self::MissingDeps(_)
            | Self::DuplicateSeq { .. }
            | Self::ForeignRoot(_)
            | Self::DuplicateChange(_)
            | Self::DeviceAlreadyEnrolled
            | Self::AlreadyExists(_)
            | Self::IdempotencyConflict(_)
            | Self::AlreadySubmitted(_)
            | Self::NotSubmitted(_)
            | Self::AlreadyAcknowledged(_)
            | Self::UploadOffsetMismatch { .. } => StatusCode::CONFLICT,
            Self::BatchTooLarge { .. }
            | Self::DocumentQuota(_)
            | Self::ChangeRefused(_)
            | Self::NotEntrustable(_)
            | Self::InvalidEdit(_)
            | Self::UnknownReference(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownDocument(_) | Self::NotFound | Self::ObjectNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Self::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
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

    /// Whether the error is about the caller's credentials (RFC 9449 §7.1): every 401, and the
    /// certificate states that refuse a valid token.
    fn is_auth_error(&self) -> bool {
        self.status() == StatusCode::UNAUTHORIZED
            || matches!(
                self,
                Self::CertificateRevoked(_)
                    | Self::CertificateSuspended(_)
                    | Self::CertificateExpired(_)
            )
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
            Self::StorageFull(reason) => {
                tracing::error!(error = %reason, "storage full");
                "the server's storage is full; nothing was stored".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// The body of every error answer. It is a type rather than a `json!` literal so that the
/// OpenAPI document describes exactly what is serialized (`routes::openapi`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong; always present.
    error: ErrorDetail,
    /// With `upload_offset_mismatch` only: the bytes of the blob the server holds, so the
    /// client resumes from there without another request.
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<u64>,
    /// With `duplicate_seq` only: the hex actor whose sequence number is taken, so a device
    /// restored from a backup knows to ask for a fresh actor.
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    /// With `duplicate_seq` only: the document concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    doc: Option<String>,
}

/// The stable part of an error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// The stable snake_case code clients match on (`ApiError::code`), e.g. `token_expired`.
    code: &'static str,
    /// A sentence for people; never carries SQL, paths or panic text.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let (actor, doc) = match &self {
            Self::DuplicateSeq { actor, doc, .. } => (Some(actor.clone()), Some(doc.clone())),
            _ => (None, None),
        };
        let received = match &self {
            Self::UploadOffsetMismatch { received } => Some(*received),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail { code, message: self.client_message() },
            received,
            actor,
            doc,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::UploadOffsetMismatch { received } = &self {
            response.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(*received));
        }
        if code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        if self.is_auth_error()
            && let Ok(value) = HeaderValue::from_str(&format!("DPoP error=\"{code}\""))
        {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
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
            MergeError::DuplicateSeq { doc, actor, .. } => {
                Self::DuplicateSeq { message, actor, doc }
            }
            MergeError::ForeignRoot { .. } => Self::ForeignRoot(message),
            MergeError::Refused { .. } | MergeError::TooManyOps { .. } => {
                Self::ChangeRefused(message)
            }
            MergeError::InflateLimit { .. } => Self::InflateLimit(message),
            // `limit` is what the request could still carry, so the request's count is what
            // came before plus this document's.
            MergeError::TooManyChanges { changes, limit, .. } => Self::BatchTooLarge {
                count: MAX_CHANGES_PER_SYNC.saturating_sub(limit).saturating_add(changes),
            },
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
            StoreError::Refused(refusal) => refusal.into(),
            other @ (StoreError::Corrupt { .. }
            | StoreError::NewerSchema { .. }
            | StoreError::Pragma { .. }
            | StoreError::Io(_)
            | StoreError::JobPanicked
            | StoreError::WriterStopped) => Self::Internal(other.into()),
        }
    }
}

impl From<JoinError> for ApiError {
    fn from(err: JoinError) -> Self {
        let what = if err.is_panic() { "panicked" } else { "was cancelled" };
        Self::Internal(anyhow::Error::new(err).context(format!("a blocking task {what}")))
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::AlreadyExists(message) => Self::AlreadyExists(message),
            Refusal::UnknownReference(message) => Self::UnknownReference(message),
            Refusal::NotFound(message) => Self::ObjectNotFound(message),
            Refusal::InvalidEnrollmentCode => Self::InvalidEnrollmentCode,
            Refusal::DeviceAlreadyEnrolled => Self::DeviceAlreadyEnrolled,
            Refusal::ForeignActor(message) => Self::ForeignActor(message),
            Refusal::OutOfScope(message) => Self::OutOfScope(message),
            Refusal::IdempotencyConflict(_) => Self::IdempotencyConflict(refusal.to_string()),
            Refusal::DocumentQuota(message) => Self::DocumentQuota(message),
            Refusal::InvalidEdit(message) => Self::InvalidEdit(message),
            Refusal::AlreadySubmitted(message) => Self::AlreadySubmitted(message),
            Refusal::NotSubmitted(message) => Self::NotSubmitted(message),
            Refusal::AlreadyAcknowledged(message) => Self::AlreadyAcknowledged(message),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::MalformedJson(format!("the JSON body is not accepted: {}", rejection.body_text()))
    }
}

/// A JSON body whose rejection answers `malformed_json` in the API's error shape.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}
