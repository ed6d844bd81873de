//! Evidence blobs (docs/sync.md): `GET /v1/blobs/{sha256}/upload` (how much the server holds),
//! `PUT /v1/blobs/{sha256}` (a resumable chunk) and `GET /v1/blobs/{sha256}` (the bytes).
//!
//! Any authenticated caller may upload. A chunk must start where the server's upload stands
//! (`Upload-Offset`) and declare the blob's size (`Upload-Length`); the chunk that completes
//! the blob is verified against its SHA-256 before anything references it. A chunk of a blob
//! already stored is answered 200 and otherwise ignored. Reading a blob
//! needs a visible document whose evidence lists it, or the supervisor or admin role; any
//! other blob answers `not_found`, like an unknown one.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Caller, now_millis};
use crate::blob_files::{self, Finished, MAX_BLOB_BYTES, is_blob_id, is_storage_full};
use crate::error::{ApiError, ErrorBody};
use crate::registry::Role;
use crate::routes::openapi::Binary;
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::blobs::{self, NewBlob};

/// Where a chunk starts, and (in a 409) where the server's upload stands.
pub(crate) const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");

/// The blob's full size.
pub(crate) const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");

/// 8 MiB: the largest chunk accepted in one `PUT`, refused from its declared length.
pub(crate) const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// The blob routes; the `PUT` has its own body limit.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/blobs/{sha256}",
            get(get_blob).put(upload_blob).layer(DefaultBodyLimit::max(MAX_CHUNK_BYTES)),
        )
        .route("/v1/blobs/{sha256}/upload", get(get_upload))
}

/// Where a blob's upload stands.
#[derive(Debug, Serialize, ToSchema)]
struct BlobStatus {
    /// The blob's id: the SHA-256 of its bytes, lowercase hex.
    sha256: String,
    /// Whether the blob is stored and verified.
    complete: bool,
    /// Bytes the server holds; the next chunk starts here.
    received: u64,
    /// The blob's size once complete, `null` before; absent from a `202` chunk answer.
    #[serde(skip_serializing_if = "Size::is_omitted")]
    #[schema(value_type = Option<u64>)]
    size: Size,
}

/// `size` of a [`BlobStatus`]: the wire has three forms, so an `Option` would not do.
#[derive(Debug)]
enum Size {
    /// Left out (`202` to a chunk that does not complete the blob).
    Omitted,
    /// `null` (`GET …/upload` of an incomplete blob).
    Unknown,
    /// The stored blob's size.
    Known(u64),
}

impl Size {
    fn is_omitted(&self) -> bool {
        matches!(self, Self::Omitted)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Omitted | Self::Unknown => serializer.serialize_none(),
            Self::Known(size) => serializer.serialize_some(size),
        }
    }
}

/// How much of a blob the server holds.
#[utoipa::path(
    get,
    path = "/v1/blobs/{sha256}/upload",
    tag = "blobs",
    params(("sha256" = String, Path, description = "The blob's SHA-256, 64 lowercase hex digits")),
    responses(
        (status = 200, description = "Where the upload stands", body = BlobStatus),
        (status = 400, description = "`invalid_blob_id`", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn get_upload(
    State(state): State<AppState>,
    _caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<BlobStatus>, ApiError> {
    let sha256 = parse_blob_id(path)?;
    let store = state.store().clone();
    let files = state.blob_files().clone();
    let answer = run_blocking(move || {
        if let Some(size) = store.read(|tx| blobs::size(tx, &sha256))? {
            return Ok(complete(&sha256, size));
        }
        let received = files.received(&sha256).map_err(io_error)?;
        Ok(BlobStatus { sha256, complete: false, received, size: Size::Unknown })
    })
    .await?;
    Ok(Json(answer))
}

/// Appends one chunk of a blob; the chunk that completes it stores the verified blob.
#[utoipa::path(
    put,
    path = "/v1/blobs/{sha256}",
    tag = "blobs",
    params(
        ("sha256" = String, Path, description = "The blob's SHA-256, 64 lowercase hex digits"),
        ("Upload-Offset" = u64, Header, description = "Where the chunk starts in the blob"),
        ("Upload-Length" = u64, Header, description = "The whole blob's size"),
    ),
    request_body(
        content = Binary,
        content_type = "application/octet-stream",
        description = "One chunk of at most 8 MiB"
    ),
    responses(
        (status = 200, description = "The blob was already stored; the chunk is ignored", body = BlobStatus),
        (status = 201, description = "The chunk completed the blob, verified and stored", body = BlobStatus),
        (status = 202, description = "The chunk is held; more are needed", body = BlobStatus),
        (status = 400, description = "`invalid_blob_id`, `malformed_upload`, \
            `blob_hash_mismatch`", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 409, description = "`upload_offset_mismatch`: the chunk does not start where \
            the upload stands; `received` and `Upload-Offset` say where", body = ErrorBody),
        (status = 413, description = "`body_too_large` or `blob_too_large`", body = ErrorBody),
        (status = 507, description = "`storage_full`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn upload_blob(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    // Refuse from the declared length alone, before reading a byte of the body (B-25).
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_CHUNK_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    // Every other refusal comes after the chunk is read whole (at most 8 MiB): an answer that
    // left it unread would close the connection under a client about to send its next chunk.
    let headers = request.headers().clone();
    let chunk: Bytes = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection: BytesRejection| ApiError::from(rejection))?;
    let sha256 = parse_blob_id(path)?;
    let (offset, total) = upload_headers(&headers)?;
    if total > MAX_BLOB_BYTES {
        return Err(ApiError::BlobTooLarge);
    }
    let store = state.store().clone();
    let files = state.blob_files().clone();
    let _upload = files.lock_upload(&sha256).await;
    let (stored, received) = {
        let (store, files, sha256) = (store.clone(), files.clone(), sha256.clone());
        run_blocking(move || {
            let stored = store.read(|tx| blobs::size(tx, &sha256))?;
            let received = match stored {
                Some(_) => 0,
                None => files.received(&sha256).map_err(io_error)?,
            };
            Ok((stored, received))
        })
        .await?
    };
    // A blob stored before is answered without looking at the chunk.
    if let Some(size) = stored {
        return Ok((StatusCode::OK, Json(complete(&sha256, size))).into_response());
    }
    if offset != received {
        return Err(ApiError::UploadOffsetMismatch { received });
    }
    let end = offset.saturating_add(chunk.len() as u64);
    if end > total {
        return Err(ApiError::MalformedUpload(format!(
            "the chunk ends at byte {end}, past the blob's Upload-Length {total}"
        )));
    }

    let finished = {
        let (files, sha256) = (files.clone(), sha256.clone());
        run_blocking(move || {
            let held = files.append(&sha256, offset, &chunk).map_err(io_error)?;
            if held < total {
                return Ok(None);
            }
            Ok(Some(files.finish(&sha256).map_err(io_error)?))
        })
        .await?
    };
    match finished {
        None => {
            let answer = BlobStatus { sha256, complete: false, received: end, size: Size::Omitted };
            Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
        }
        Some(Finished::Mismatch(actual)) => Err(ApiError::BlobHashMismatch(format!(
            "the uploaded bytes hash to {actual}, not {sha256}; they were discarded"
        ))),
        Some(Finished::Stored) => {
            let blob = NewBlob {
                sha256: sha256.clone(),
                size: total,
                created_at: now_millis(),
                device: Some(caller.device.clone()),
                officer: Some(caller.officer.clone()),
            };
            store.submit(move |context| blobs::insert(context.connection(), &blob)).await?;
            tracing::info!(%sha256, size = total, device = %caller.device, "stored a blob");
            Ok((StatusCode::CREATED, Json(complete(&sha256, total))).into_response())
        }
    }
}

/// The bytes of a blob the caller may read.
#[utoipa::path(
    get,
    path = "/v1/blobs/{sha256}",
    tag = "blobs",
    params(("sha256" = String, Path, description = "The blob's SHA-256, 64 lowercase hex digits")),
    responses(
        (status = 200, description = "The blob's bytes", body = Binary,
            content_type = "application/octet-stream"),
        (status = 400, description = "`invalid_blob_id`", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 404, description = "No such blob, or none the caller may read", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn get_blob(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let sha256 = parse_blob_id(path)?;
    let store = state.store().clone();
    let files = state.blob_files().clone();
    let (all, township) = match caller.role {
        Role::Supervisor | Role::Admin => (true, None),
        Role::Officer => (false, caller.township.clone()),
    };
    let (size, file) = run_blocking(move || {
        let size = store.read(|tx| {
            let Some(size) = blobs::size(tx, &sha256)? else { return Ok(None) };
            let allowed =
                all || blobs::referenced_by_visible(tx, &sha256, false, township.as_deref())?;
            Ok(allowed.then_some(size))
        })?;
        let size = size.ok_or_else(|| ApiError::ObjectNotFound(format!("no blob {sha256}")))?;
        Ok((size, files.open(&sha256).map_err(io_error)?))
    })
    .await?;
    let pieces = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            let piece = blob_files::read_piece(&mut file);
            (file, piece)
        })
        .await;
        match read {
            Ok((_, Ok(piece))) if piece.is_empty() => None,
            Ok((file, Ok(piece))) => Some((Ok(Bytes::from(piece)), Some(file))),
            Ok((_, Err(err))) => Some((Err(err), None)),
            Err(err) => Some((Err(std::io::Error::other(err)), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(pieces),
    )
        .into_response())
}

fn complete(sha256: &str, size: u64) -> BlobStatus {
    BlobStatus {
        sha256: sha256.to_owned(),
        complete: true,
        received: size,
        size: Size::Known(size),
    }
}

fn parse_blob_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(text) = path.map_err(|_| ApiError::NotFound)?;
    if is_blob_id(&text) { Ok(text) } else { Err(ApiError::InvalidBlobId(text)) }
}

/// `Upload-Offset` and `Upload-Length`, both required non-negative integers.
fn upload_headers(headers: &HeaderMap) -> Result<(u64, u64), ApiError> {
    let number = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::MalformedUpload(format!("the {name} header must be a byte count"))
            })
    };
    Ok((number(&UPLOAD_OFFSET)?, number(&UPLOAD_LENGTH)?))
}

fn io_error(err: std::io::Error) -> ApiError {
    if is_storage_full(&err) {
        ApiError::StorageFull(err.to_string())
    } else {
        ApiError::Internal(anyhow::Error::new(err).context("blob file"))
    }
}
