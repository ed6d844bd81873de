//! The merged documents, read: `GET /v1/docs`, `GET /v1/docs/{id}` (the same view as
//! `fieldcase show --json` on a device) and `GET /v1/docs/{id}/history`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sync_core::ids::DocumentId;
use sync_core::records::Record;
use sync_core::validate::{Finding, RuleContext, findings_with};
use sync_core::view::DocumentView;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::{DocumentSummary, HistoryEntry, Store, Visibility, blobs};

/// The finding of an evidence item whose bytes have not reached the server.
const EVIDENCE_PENDING: &str = "evidence_pending";

/// The document routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/docs", get(list_documents))
        .route("/v1/docs/{id}", get(get_document))
        .route("/v1/docs/{id}/history", get(get_history))
}

/// One document in the list.
#[derive(Debug, Serialize, ToSchema)]
struct DocumentListItem {
    /// The document id, a UUID.
    id: String,
    /// `inspection` or `case`; `null` when the document is not a readable record.
    kind: Option<String>,
    /// The one-word status of the record.
    status: Option<String>,
    /// The matter code the record is about.
    matter: Option<String>,
    /// The township the record belongs to; it decides who sees it.
    township: Option<String>,
    /// The server's heads, change hashes in hex.
    heads: Vec<String>,
    /// Server time of the last change, Unix milliseconds.
    updated_at: i64,
}

impl From<DocumentSummary> for DocumentListItem {
    fn from(summary: DocumentSummary) -> Self {
        Self {
            id: summary.id.to_string(),
            kind: summary.kind,
            status: summary.status,
            matter: summary.matter,
            township: summary.township,
            heads: summary.heads.iter().map(ToString::to_string).collect(),
            updated_at: summary.updated_at,
        }
    }
}

/// One change of a document's history.
#[derive(Debug, Serialize, ToSchema)]
struct HistoryItem {
    /// The change's position in the server's feed.
    feed_seq: i64,
    /// The change hash, hex.
    hash: String,
    /// The Automerge actor that made it, hex.
    actor: String,
    /// The actor's sequence number.
    seq: i64,
    /// The hashes of the changes it depends on.
    deps: Vec<String>,
    /// The device that uploaded it; none for server-authored changes.
    device: Option<String>,
    /// The officer it is attributed to.
    officer: Option<String>,
    /// The certificate the officer acted under.
    certificate: Option<String>,
    /// When the server received it, Unix milliseconds.
    received_at: i64,
    /// The time the device claims it was made, Unix milliseconds; not to be trusted alone.
    device_time: Option<i64>,
    /// The change's commit message.
    message: Option<String>,
}

impl From<HistoryEntry> for HistoryItem {
    fn from(entry: HistoryEntry) -> Self {
        Self {
            feed_seq: entry.feed_seq,
            hash: entry.hash.to_string(),
            actor: entry.actor.to_hex_string(),
            seq: entry.seq,
            deps: entry.deps.iter().map(ToString::to_string).collect(),
            device: entry.device,
            officer: entry.officer,
            certificate: entry.certificate,
            received_at: entry.received_at,
            device_time: entry.device_time,
            message: entry.message,
        }
    }
}

/// Lists every document the caller sees with its projected fields, the most recently changed
/// first.
#[utoipa::path(
    get,
    path = "/v1/docs",
    tag = "documents",
    responses(
        (status = 200, description = "The documents the caller sees", body = Vec<DocumentListItem>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "The certificate is not valid now", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_documents(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DocumentListItem>>, ApiError> {
    let store = state.store().clone();
    let visibility = caller.visibility();
    let summaries = run_blocking(move || Ok(store.list_documents(&visibility)?)).await?;
    Ok(Json(summaries.into_iter().map(DocumentListItem::from).collect()))
}

/// The merged view of one document.
#[utoipa::path(
    get,
    path = "/v1/docs/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "The document id, a UUID")),
    responses(
        (status = 200, description = "The merged view, as `fieldcase show --json` prints it \
            (`sync_core::view::DocumentView`)", body = Object),
        (status = 400, description = "`invalid_document_id`", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`out_of_scope`, or the certificate is not valid now", body = ErrorBody),
        (status = 404, description = "`unknown_document`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn get_document(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DocumentView>, ApiError> {
    let doc_id = parse_document_id(id)?;
    let store = state.store().clone();
    let visibility = caller.visibility();
    let view = run_blocking(move || {
        require_visible(&store, &visibility, doc_id)?;
        let doc =
            store.document(doc_id)?.ok_or_else(|| ApiError::UnknownDocument(doc_id.to_string()))?;
        let mut view = DocumentView::build(doc_id, &doc.get_heads(), &*doc);
        if let Ok(record) = Record::hydrate(&*doc) {
            view.findings.extend(evidence_pending(&store, &record)?);
        }
        Ok(view)
    })
    .await?;
    Ok(Json(view))
}

/// The `evidence_pending` findings: evidence items whose blob the server lacks.
///
/// Only the blobs part of the rule context is known here, so only the findings of that rule
/// are taken from `findings_with`; the others would judge the record against an empty
/// registry (no certificates, no entrustments) and report what is not so.
fn evidence_pending(store: &Store, record: &Record) -> Result<Vec<Finding>, ApiError> {
    let hashes: Vec<String> = record.evidence().iter().map(|item| item.sha256.clone()).collect();
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let received = store.read(|tx| blobs::present(tx, &hashes))?;
    let context = RuleContext { blobs_received: Some(received), ..RuleContext::default() };
    Ok(findings_with(record, &context)
        .into_iter()
        .filter(|finding| finding.code == EVIDENCE_PENDING)
        .collect())
}

/// Every change of one document in feed order: who wrote what, and when it arrived.
#[utoipa::path(
    get,
    path = "/v1/docs/{id}/history",
    tag = "documents",
    params(("id" = String, Path, description = "The document id, a UUID")),
    responses(
        (status = 200, description = "Every stored change of the document, in feed order", body = Vec<HistoryItem>),
        (status = 400, description = "`invalid_document_id`", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`out_of_scope`, or the certificate is not valid now", body = ErrorBody),
        (status = 404, description = "`unknown_document`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn get_history(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<HistoryItem>>, ApiError> {
    let doc_id = parse_document_id(id)?;
    let store = state.store().clone();
    let visibility = caller.visibility();
    let history = run_blocking(move || {
        require_visible(&store, &visibility, doc_id)?;
        store.history(doc_id)?.ok_or_else(|| ApiError::UnknownDocument(doc_id.to_string()))
    })
    .await?;
    Ok(Json(history.into_iter().map(HistoryItem::from).collect()))
}

fn parse_document_id(id: Result<Path<String>, PathRejection>) -> Result<DocumentId, ApiError> {
    let Path(text) = id.map_err(|rejection| ApiError::InvalidDocumentId(rejection.body_text()))?;
    DocumentId::parse(&text).map_err(|_| ApiError::InvalidDocumentId(text))
}

/// Refuses a document the caller may not see as `not_found`. An unknown document is
/// `unknown_document` for readers who see every township, and `not_found` for an officer, so
/// that an officer cannot learn which document ids exist elsewhere.
fn require_visible(
    store: &Store,
    visibility: &Visibility,
    doc_id: DocumentId,
) -> Result<(), ApiError> {
    match store.stored_scope(doc_id)? {
        None if matches!(visibility, Visibility::All) => {
            Err(ApiError::UnknownDocument(doc_id.to_string()))
        }
        None => Err(ApiError::ObjectNotFound(format!("document {doc_id} is not found"))),
        Some(stored) if visibility.sees(stored.township.as_deref()) => Ok(()),
        Some(_) => Err(ApiError::ObjectNotFound(format!("document {doc_id} is not found"))),
    }
}
