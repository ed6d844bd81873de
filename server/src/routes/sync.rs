//! `POST /v1/sync`: one round trip in which a device uploads its changes and receives the
//! changes it lacks (DESIGN.md §5).
//!
//! The request is all or nothing: every change of every document is parsed strictly and
//! merged, and only then written in one transaction; any failure answers an error and stores
//! nothing. The answer lists, per uploaded document, the server's heads, and every change
//! after the device's cursor except those it just uploaded.

use std::collections::HashSet;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sync_core::merge::parse_changes;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, DocResult, SyncRequest, SyncResponse};

use crate::error::ApiError;
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::{DocumentUpload, Store};

/// 8 MiB: the largest sync body accepted, checked before any parsing (SECURITY.md B-25).
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Changes accepted in one sync, over all documents (SECURITY.md B-26); a device with more
/// pending uploads them over several round trips.
pub(crate) const MAX_CHANGES_PER_SYNC: usize = 2_000;

/// 8 MiB: change bytes sent back in one answer before paging with `more`.
pub(crate) const MAX_RESPONSE_CHANGE_BYTES: usize = 8 * 1024 * 1024;

/// The sync route, with its own body limit.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync", post(upload_changes).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}

/// Merges the uploaded changes and answers with the feed after the device's cursor.
async fn upload_changes(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    // Refuse from the declared length alone, before reading a byte of the body (B-25).
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let body: Bytes = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection: BytesRejection| ApiError::from(rejection))?;
    let received_at = chrono::Utc::now().timestamp_millis();
    let store = state.store().clone();
    let response = run_blocking(move || sync(&store, &body, received_at)).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], response.encode()).into_response())
}

/// Decodes, checks and merges one request, then reads the feed; runs on a blocking thread.
fn sync(store: &Store, body: &[u8], received_at: i64) -> Result<SyncResponse, ApiError> {
    let request = SyncRequest::decode(body).map_err(|err| {
        ApiError::MalformedChange(format!("the body is not a valid sync message: {err}"))
    })?;
    let change_count = request.change_count();
    if change_count > MAX_CHANGES_PER_SYNC {
        return Err(ApiError::BatchTooLarge { count: change_count });
    }
    let mut doc_ids = HashSet::new();
    let mut uploaded = HashSet::new();
    let mut uploads = Vec::with_capacity(request.docs.len());
    for doc_upload in &request.docs {
        if !doc_ids.insert(doc_upload.doc_id) {
            return Err(ApiError::MalformedChange(format!(
                "document {} appears more than once in the request",
                doc_upload.doc_id
            )));
        }
        let changes = parse_changes(doc_upload.doc_id, &doc_upload.changes)?;
        uploaded.extend(changes.iter().map(automerge::Change::hash));
        uploads.push(DocumentUpload { doc_id: doc_upload.doc_id, changes });
    }

    let merged = store.merge_uploads(uploads, received_at)?;
    let feed = store.feed_after(request.cursor, &uploaded, MAX_RESPONSE_CHANGE_BYTES)?;
    tracing::debug!(
        documents = merged.len(),
        stored = merged.iter().map(|doc| doc.stored).sum::<usize>(),
        sent = feed.updates.iter().map(|update| update.changes.len()).sum::<usize>(),
        cursor = feed.cursor,
        more = feed.more,
        "sync"
    );
    let results = merged
        .into_iter()
        .map(|doc| DocResult {
            doc_id: doc.doc_id,
            outcome: DocOutcome::Accepted {
                heads: doc.heads.iter().map(|hash| hash.0).collect(),
                stored: u32::try_from(doc.stored).expect("at most MAX_CHANGES_PER_SYNC changes"),
            },
        })
        .collect();
    Ok(SyncResponse {
        cursor: feed.cursor,
        more: feed.more,
        results,
        updates: feed.updates,
        evict: Vec::new(),
    })
}
