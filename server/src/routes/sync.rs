//! `POST /v1/sync`: one round trip in which a device uploads its changes and receives the
//! changes it lacks (DESIGN.md §5).
//!
//! The request is all or nothing: every change of every document is parsed strictly and
//! merged, and only then written in one transaction; any failure answers an error and stores
//! nothing. The answer lists, per uploaded document, the server's heads, and every change
//! after the device's cursor except those it just uploaded, of the documents the caller sees.
//!
//! Authorization (docs/identity.md), all before anything is written: only officers upload;
//! an existing document is judged by its stored township and matter, never by the uploaded
//! content (B-35); a new document by its merged content, whose township must be the
//! officer's and whose matter an active entrustment and the certificate's sectors must cover;
//! every new change must carry an actor registered to the uploading device (B-28).
//!
//! docs/sync.md: a request with an `Idempotency-Key` stores its answer in the same writer job
//! as its changes, and a retry of the same body gets that answer byte for byte; the answer
//! lists in `evict` the documents the device holds but may no longer see.
//!
//! Upload-only mode (DESIGN.md §7 item 4, SECURITY.md B-18): an officer whose certificate was
//! suspended or revoked after the access token was minted may still upload, and gets no feed.
//! A new document goes to quarantine; the changes to an existing one are judged by their
//! causal lower bound (`causal`): made no later than the withdrawal as far as the server can
//! tell → merged and flagged `needs_review`, building on a change received after it →
//! quarantined. Any merged change whose device time lies outside its causal bounds is flagged
//! `clock_suspect` (B-38).

mod causal;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use automerge::{ActorId, ChangeHash};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};
use sync_core::body::{self, BodyError};
use sync_core::ids::DocumentId;
use sync_core::merge::{UploadLimits, causal_not_before, parse_upload_within};
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, DocResult, SyncRequest, SyncResponse};
use sync_core::records::Procedure;
use sync_core::records::Record;
use sync_core::replica::hashes_from_wire;
use sync_core::scope::{Action, ScopeItem};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::auth::{Caller, SyncCaller, now_millis};
use crate::error::ApiError;
use crate::registry::{CertificateStatus, Role};
use crate::routes::run_blocking;
use crate::routes::sync::causal::{UploadOnly, Verdict};
use crate::state::AppState;
use crate::store::changes::Feed;
use crate::store::idempotency::{self, FeedBounds, StoredAnswer};
use crate::store::{
    Attribution, DocumentUpload, Premerged, Refusal, Store, StoreError, StoredScope, UploadPolicy,
    Weight, WriteContext, changes, device_documents, devices, documents, merge_uploads_in,
    quarantine, registry, review, review_flags,
};

/// 8 MiB: the largest sync body accepted, checked before any parsing (SECURITY.md B-25).
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Changes accepted in one sync, over all documents (SECURITY.md B-26); a device with more
/// pending uploads them over several round trips.
pub(crate) const MAX_CHANGES_PER_SYNC: usize = 2_000;

/// 8 MiB: change bytes sent back in one answer before paging with `more`.
pub(crate) const MAX_RESPONSE_CHANGE_BYTES: usize = 8 * 1024 * 1024;

/// 2 MiB: change bytes sent back in the answer to a round that uploaded changes, which is first
/// of all their acknowledgement. Feed pages are read one at a time ([`FEED_READS`]), so with
/// full pages the acknowledgements of fifty devices queued behind each other's pages: scenario
/// C confirmed every upload after 14.5 s with 8 MiB, 12.7 s with 2 MiB and 12.5 s with 1 MiB,
/// while A, whose feed fits one full page, took 1.09, 1.06 and 1.08 s (BENCHMARKS.md).
/// Rounds that only read get full pages.
pub(crate) const UPLOAD_ANSWER_CHANGE_BYTES: usize = 2 * 1024 * 1024;

/// Feed pages read and encoded at once, over all requests. A page holds up to 8 MiB of
/// changes, twice that while it is encoded: 50 devices reading theirs at once held 1.15 GB
/// (BENCHMARKS.md, scenario C). One at a time: against two, scenario C peaks at 160 MB instead
/// of 213 MB at the same wall time, and A is about 7 % slower (the uploads' merging keeps the
/// other core busy); a waiting request holds no page yet.
static FEED_READS: Semaphore = Semaphore::const_new(1);

/// Waits for a turn to read a feed page ([`FEED_READS`]).
async fn feed_turn() -> Result<SemaphorePermit<'static>, ApiError> {
    FEED_READS
        .acquire()
        .await
        .map_err(|closed| ApiError::Internal(anyhow::anyhow!("feed reads closed: {closed}")))
}

/// Uploads inflated, parsed, merged ahead of the writer ([`crate::store::Premerged`]) and
/// waiting for it, at once, over all requests. Each holds its inflated body, its parsed changes
/// and up to a batch of merged documents, new ones or copies of stored ones (bounded by the
/// premerge places): 50 devices' first syncs at once peaked at 488 MB (scenario C). The writer
/// takes one job group at a time, so four keep it fed and both cores busy; a waiting request
/// holds only the body it received.
static UPLOADS: Semaphore = Semaphore::const_new(4);

/// Waits for a turn to work on an upload ([`UPLOADS`]).
async fn upload_turn() -> Result<SemaphorePermit<'static>, ApiError> {
    UPLOADS
        .acquire()
        .await
        .map_err(|closed| ApiError::Internal(anyhow::anyhow!("uploads closed: {closed}")))
}

/// The header naming an upload, so that a retried identical body gets the stored answer.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// The sync route, with its own body limit.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync", post(upload_changes).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}

/// Merges the uploaded changes and answers with the feed after the device's cursor, or with
/// the answer stored for a retried idempotency key.
#[utoipa::path(
    post,
    path = "/v1/sync",
    tag = "sync",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 characters of `[A-Za-z0-9_-]`; a retry of the same body gets the stored answer byte for byte"),
        ("Content-Encoding" = Option<String>, Header, description = "`gzip` for a compressed body (devices send uploads gzipped); absent or `identity` for an uncompressed one"),
    ),
    request_body(content = crate::routes::openapi::Binary, content_type = "application/vnd.fieldcase.sync", description = "A postcard-encoded `sync_core::protocol::SyncRequest` of at most 8 MiB"),
    responses(
        (status = 200, description = "A postcard-encoded `sync_core::protocol::SyncResponse`: per document the outcome and the server's heads, the feed after the cursor, `evict`, `more`", body = crate::routes::openapi::Binary, content_type = "application/vnd.fieldcase.sync"),
        (status = 400, description = "`malformed_change` or `invalid_idempotency_key`", body = crate::error::ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = crate::error::ErrorBody),
        (status = 403, description = "`forbidden`, `out_of_scope`, `foreign_actor`, or the certificate is not valid now", body = crate::error::ErrorBody),
        (status = 409, description = "`missing_deps`, `duplicate_seq` (with `actor` and `doc`), `foreign_root`, `duplicate_change`, `idempotency_conflict`", body = crate::error::ErrorBody),
        (status = 413, description = "`body_too_large` (also a gzip body inflating past 8 MiB) or `inflate_limit`", body = crate::error::ErrorBody),
        (status = 415, description = "`unsupported_encoding`: a `Content-Encoding` other than gzip or identity", body = crate::error::ErrorBody),
        (status = 422, description = "`batch_too_large`, `change_refused` or `document_quota`", body = crate::error::ErrorBody),
        (status = "5XX", description = "A server fault; `busy` (503, with `Retry-After`) or `storage_full` (507) stored nothing", body = crate::error::ErrorBody),
    )
)]
async fn upload_changes(
    State(state): State<AppState>,
    SyncCaller(caller): SyncCaller,
    request: Request,
) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    // Refuse from the declared length alone, before reading a byte of the body (B-25).
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let encoding = request.headers().get(header::CONTENT_ENCODING).cloned();
    let body: Bytes = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection: BytesRejection| ApiError::from(rejection))?;
    let turn = upload_turn().await?;
    let received_at = chrono::Utc::now().timestamp_millis();
    let store = state.store().clone();
    let prepared = run_blocking(move || {
        let body = decoded_body(encoding.as_ref(), body)?;
        prepare(&store, caller, &body, key, received_at)
    })
    .await?;
    let answer = match prepared {
        Prepared::Replay { device, answer } => {
            drop(turn);
            finish(&state, device, answer).await?
        }
        Prepared::Round(round) if round.pull_only() => {
            drop(turn);
            pull(&state, *round).await?
        }
        Prepared::Round(round) => {
            let device = round.device.clone();
            // A round that merges changes runs in a transaction of its own (`writer`).
            let weight = if round.policy.is_some() { Weight::Alone } else { Weight::Light };
            let answer =
                state.store().submit_weighted(weight, move |context| round.run(context)).await?;
            drop(turn);
            finish(&state, device, answer).await?
        }
    };
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], answer).into_response())
}

/// The upload as the device encoded it: as sent, or inflated from gzip within the same 8 MiB
/// that bounds an uncompressed body, so a gzip bomb is refused after at most that much work.
fn decoded_body(encoding: Option<&HeaderValue>, body: Bytes) -> Result<Bytes, ApiError> {
    let Some(encoding) = encoding else {
        return Ok(body);
    };
    match encoding.to_str().map(str::trim) {
        Ok(encoding) if encoding.eq_ignore_ascii_case("identity") => Ok(body),
        Ok(encoding) if encoding.eq_ignore_ascii_case(body::GZIP) => {
            match body::gunzip_within(&body, MAX_BODY_BYTES) {
                Ok(inflated) => Ok(Bytes::from(inflated)),
                Err(BodyError::TooLarge { .. }) => Err(ApiError::BodyTooLarge),
                Err(malformed @ BodyError::Malformed(_)) => {
                    Err(ApiError::MalformedChange(malformed.to_string()))
                }
            }
        }
        _ => Err(ApiError::UnsupportedEncoding(format!(
            "content-encoding {encoding:?} is not supported; send gzip or an uncompressed body"
        ))),
    }
}

/// A round's answer as the writer commits it: whole, or without its feed page, which
/// [`finish`] reads after `COMMIT` from the bounds committed with the answer.
struct RoundAnswer {
    /// The encoded answer; its cursor, `more` and updates are left empty when `feed` is set.
    response: Vec<u8>,
    /// The bounds of the answer's feed page.
    feed: Option<FeedBounds>,
}

impl From<StoredAnswer> for RoundAnswer {
    fn from(stored: StoredAnswer) -> Self {
        Self { response: stored.response, feed: stored.feed }
    }
}

/// Completes an answer the writer committed without its feed page: reads the page from its
/// bounds on a pooled reader, off the writer thread, and records the documents it delivers as
/// held by the device before the answer goes out (a writer job, awaited), as [`pull`] does.
///
/// The page depends only on the bounds and on rows committed with or before the answer, so
/// the first answer and every replay of its key are the same bytes (docs/sync.md).
async fn finish(
    state: &AppState,
    device: String,
    answer: RoundAnswer,
) -> Result<Vec<u8>, ApiError> {
    let Some(bounds) = answer.feed else { return Ok(answer.response) };
    let (all, bounds_township) = (bounds.all, bounds.township.clone());
    let _turn = feed_turn().await?;
    let store = state.store().clone();
    // The budget follows from the stored bounds, so a replay reads the same page.
    let budget =
        if bounds.skip.is_empty() { MAX_RESPONSE_CHANGE_BYTES } else { UPLOAD_ANSWER_CHANGE_BYTES };
    let feed = run_blocking(move || Ok(store.read(|tx| bounds.read(tx, budget))?)).await?;
    let delivered = delivered_documents(&feed);
    record_delivery(state, device, delivered, all, bounds_township, false).await?;
    let (mut response, version) =
        SyncResponse::decode_versioned(&answer.response).map_err(|err| {
            ApiError::Internal(anyhow::anyhow!("a stored sync answer does not decode: {err}"))
        })?;
    response.cursor = feed.cursor;
    response.more = feed.more;
    response.updates = feed.updates;
    Ok(response.encode_as(version))
}

/// Records, in a writer job awaited before the answer goes out, the documents a feed page
/// delivers as held by `device`, and when `evict_due` lists and forgets those it may no longer
/// see (returned); no job when there is nothing to record.
async fn record_delivery(
    state: &AppState,
    device: String,
    delivered: Vec<DocumentId>,
    all: bool,
    township: Option<String>,
    evict_due: bool,
) -> Result<Vec<DocumentId>, ApiError> {
    if delivered.is_empty() && !evict_due {
        return Ok(Vec::new());
    }
    let evict = state
        .store()
        .submit(move |context| {
            let connection = context.connection();
            let township = township.as_deref();
            device_documents::record(connection, &device, delivered, all, township)?;
            if evict_due {
                device_documents::evict(connection, &device, all, township)
            } else {
                Ok(Vec::new())
            }
        })
        .await?;
    Ok(evict)
}

/// The documents a feed page delivers, each once.
fn delivered_documents(feed: &Feed) -> Vec<DocumentId> {
    let mut delivered: Vec<DocumentId> = feed.updates.iter().map(|update| update.doc_id).collect();
    delivered.sort_unstable();
    delivered.dedup();
    delivered
}

/// Answers a pull-only round: the feed and the evictions are read on a pooled reader, off the
/// writer thread; a writer job follows only when the round delivered or evicts a document,
/// and the answer goes out only after that job committed, so that `device_documents` holds
/// every document a device may have received before it receives it.
///
/// The cursor is the highest feed sequence of the reader's snapshot (`changes::feed_after`),
/// so a change committed meanwhile is sent by the next round, never skipped. Nothing here is
/// acknowledged (the round uploads no change) and no answer is stored (it has no key), so the
/// single writer transaction of an upload (DESIGN.md §6, docs/sync.md) is not needed.
async fn pull(state: &AppState, round: SyncRound) -> Result<Vec<u8>, ApiError> {
    let _turn = feed_turn().await?;
    let store = state.store().clone();
    let version = round.version;
    let PulledRound { device, all, township, resync, feed, delivered, evict_due } =
        run_blocking(move || Ok(store.read(|tx| round.read_pull(tx))?)).await?;
    let evict = record_delivery(state, device, delivered, all, township, evict_due).await?;
    Ok(SyncResponse {
        cursor: feed.cursor,
        more: feed.more,
        results: resync.into_iter().map(|(doc_id, heads)| resync_result(doc_id, &heads)).collect(),
        updates: feed.updates,
        evict,
    }
    .encode_as(version))
}

/// A pull-only round read on a pooled reader, with what the writer must still record.
struct PulledRound {
    device: String,
    all: bool,
    township: Option<String>,
    resync: Vec<(DocumentId, Vec<ChangeHash>)>,
    feed: Feed,
    // The documents of the feed, to record as held by the device.
    delivered: Vec<DocumentId>,
    // The device's visibility changed since it was last checked: the writer lists and
    // forgets what it may no longer see (`device_documents::evict`).
    evict_due: bool,
}

/// The result telling a device that the server does not know the heads it claims.
fn resync_result(doc_id: DocumentId, heads: &[ChangeHash]) -> DocResult {
    DocResult {
        doc_id,
        outcome: DocOutcome::Resync { heads: heads.iter().map(|hash| hash.0).collect() },
    }
}

/// The `Idempotency-Key` header, if present and well formed.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let invalid = || {
        ApiError::InvalidIdempotencyKey(format!(
            "the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters of \
             A-Z, a-z, 0-9, _ and -"
        ))
    };
    let key = value.to_str().map_err(|_| invalid())?;
    let well_formed = (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&key.len())
        && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if well_formed { Ok(Some(key.to_owned())) } else { Err(invalid()) }
}

/// A request ready for the writer, or the answer stored for its key.
enum Prepared {
    Replay { device: String, answer: RoundAnswer },
    Round(Box<SyncRound>),
}

/// An idempotency key with the SHA-256 of the body it names.
struct KeyedRequest {
    key: String,
    request_sha256: [u8; 32],
}

impl KeyedRequest {
    /// The stored answer for this key: `Some` for the same body, a conflict for another.
    fn stored_answer(
        &self,
        connection: &rusqlite::Connection,
        device: &str,
    ) -> Result<Option<RoundAnswer>, StoreError> {
        match idempotency::find(connection, device, &self.key)? {
            Some(stored) if stored.request_sha256 == self.request_sha256 => Ok(Some(stored.into())),
            Some(_) => Err(Refusal::IdempotencyConflict(self.key.clone()).into()),
            None => Ok(None),
        }
    }
}

/// One checked sync request, run as one job of the writer.
struct SyncRound {
    device: String,
    all: bool,
    township: Option<String>,
    keyed: Option<KeyedRequest>,
    cursor: u64,
    uploads: Vec<DocumentUpload>,
    // The heads each upload claims the server acknowledged.
    base_heads: HashMap<DocumentId, Vec<ChangeHash>>,
    uploaded: HashSet<ChangeHash>,
    // `Some` exactly when the request carries changes.
    policy: Option<SyncPolicy>,
    // Upload-only mode: no feed, and every new change judged against the withdrawal.
    upload_only: Option<UploadOnly>,
    received_at: i64,
    // The protocol version of the request, and of its answer.
    version: u8,
}

/// An upload kept in quarantine for review instead of merged, and how its document's result
/// says so; the device treats the changes as delivered.
struct Quarantined {
    doc_id: DocumentId,
    changes: Vec<automerge::Change>,
    /// The result's code (`out_of_scope`, `record_locked`, `certificate_revoked`, …).
    code: &'static str,
    /// Why, as stored with the quarantined changes.
    reason: String,
    /// The result's message to the device.
    message: String,
}

/// The uploaded changes the server does not hold yet, each once.
fn unstored_changes(
    connection: &rusqlite::Connection,
    doc_id: DocumentId,
    uploaded: &[automerge::Change],
) -> Result<Vec<automerge::Change>, StoreError> {
    let mut seen = HashSet::new();
    let mut unstored = Vec::new();
    for change in uploaded {
        let hash = change.hash();
        if seen.insert(hash) && !changes::is_stored(connection, doc_id, &hash)? {
            unstored.push(change.clone());
        }
    }
    Ok(unstored)
}

/// A `needs_review` flag to raise once its change is merged.
struct PendingFlag {
    doc_id: DocumentId,
    hash: ChangeHash,
    detail: String,
}

/// An uploaded change whose device time is far from its receipt, to judge once merged.
struct ClockCandidate {
    doc_id: DocumentId,
    hash: ChangeHash,
    actor: Vec<u8>,
    // Seconds, as the device stamped it.
    timestamp: i64,
}

/// Answers a stored key, or decodes, parses and authorizes one request; runs on a blocking
/// thread, so that the writer only merges and writes.
fn prepare(
    store: &Store,
    caller: Caller,
    body: &[u8],
    key: Option<String>,
    received_at: i64,
) -> Result<Prepared, ApiError> {
    let keyed = key.map(|key| KeyedRequest { key, request_sha256: Sha256::digest(body).into() });
    if let Some(keyed) = &keyed
        && let Some(answer) = store.read(|tx| keyed.stored_answer(tx, &caller.device))?
    {
        return Ok(Prepared::Replay { device: caller.device, answer });
    }
    let (request, version) = SyncRequest::decode_versioned(body).map_err(|err| {
        ApiError::MalformedChange(format!("the body is not a valid sync message: {err}"))
    })?;
    let change_count = request.change_count();
    if change_count > MAX_CHANGES_PER_SYNC {
        return Err(ApiError::BatchTooLarge { count: change_count });
    }
    let limits = UploadLimits::default();
    // One inflate budget for the whole upload, shared by its documents (B-23).
    let mut inflated_budget = limits.max_inflated_bytes;
    // The chunk count above bounds change chunks cheaply; a document chunk holds many
    // changes, which count against the same limit as they are parsed (B-26).
    let mut change_allowance = MAX_CHANGES_PER_SYNC;
    let mut doc_ids = HashSet::new();
    let mut uploaded = HashSet::new();
    let mut uploads = Vec::with_capacity(request.docs.len());
    let mut base_heads = HashMap::with_capacity(request.docs.len());
    for doc_upload in &request.docs {
        if !doc_ids.insert(doc_upload.doc_id) {
            return Err(ApiError::MalformedChange(format!(
                "document {} appears more than once in the request",
                doc_upload.doc_id
            )));
        }
        let parsed =
            parse_upload_within(doc_upload, limits, &mut inflated_budget, &mut change_allowance)?;
        uploaded.extend(parsed.hashes());
        uploads.push(DocumentUpload {
            doc_id: doc_upload.doc_id,
            changes: parsed,
            premerged: None,
        });
        base_heads.insert(doc_upload.doc_id, hashes_from_wire(&doc_upload.base_heads));
    }
    let upload_only = match caller.upload_only {
        Some(withdrawn_at) => Some(upload_only_mode(&caller, withdrawn_at, uploaded.is_empty())?),
        None => None,
    };
    let policy = if uploaded.is_empty() {
        None
    } else {
        if caller.role != Role::Officer {
            return Err(ApiError::Forbidden(format!(
                "role {} reads documents but uploads no changes",
                caller.role.as_str()
            )));
        }
        Some(SyncPolicy::load(store, &caller, received_at)?)
    };
    // Each document is merged here, in parallel with other requests: one the device says is
    // new into an empty document, one it holds onto the stored state. The writer uses the
    // result only if the store is still where the merge started.
    if let Some(policy) = policy.as_ref()
        && upload_only.is_none()
    {
        for upload in &mut uploads {
            upload.premerged = if base_heads.get(&upload.doc_id).is_some_and(Vec::is_empty) {
                Premerged::of(upload.doc_id, &upload.changes)
            } else {
                store.premerge_stored(upload, policy)
            };
        }
    }
    let (all, township) = {
        let visibility = caller.visibility();
        let (all, township) = visibility.sql();
        (all, township.map(str::to_owned))
    };
    tracing::debug!(
        officer = %caller.officer,
        device = %caller.device,
        cert_rev = caller.cert_rev,
        documents = uploads.len(),
        changes = uploaded.len(),
        cursor = request.cursor,
        "sync"
    );
    Ok(Prepared::Round(Box::new(SyncRound {
        device: caller.device,
        all,
        township,
        keyed,
        cursor: request.cursor,
        uploads,
        base_heads,
        uploaded,
        policy,
        upload_only,
        received_at,
        version,
    })))
}

/// Upload-only mode for a caller whose certificate was withdrawn at `withdrawn_at`; a request
/// with nothing to upload reads the feed, which such a caller may not, and gets the
/// certificate's refusal.
fn upload_only_mode(
    caller: &Caller,
    withdrawn_at: i64,
    pull_only: bool,
) -> Result<UploadOnly, ApiError> {
    let certificate = caller.certificate.as_ref().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("an upload-only caller without a certificate"))
    })?;
    let cert_no = certificate.cert_no.clone();
    let (code, refusal) = match certificate.status {
        CertificateStatus::Suspended => {
            ("certificate_suspended", ApiError::CertificateSuspended(cert_no.clone()))
        }
        _ => ("certificate_revoked", ApiError::CertificateRevoked(cert_no.clone())),
    };
    if pull_only {
        return Err(refusal);
    }
    Ok(UploadOnly { withdrawn_at, code, cert_no })
}

impl SyncRound {
    /// Splits off the uploads whose acknowledged heads the server does not know (the device or
    /// the server was restored from a backup): nothing of them is merged, and the device is
    /// told the server's heads so that its next round carries only what the server lacks.
    #[allow(clippy::type_complexity)]
    fn split_unknown_heads(
        &self,
        uploads: Vec<DocumentUpload>,
        connection: &rusqlite::Connection,
    ) -> Result<(Vec<DocumentUpload>, Vec<(DocumentId, Vec<ChangeHash>)>), StoreError> {
        let mut kept = Vec::with_capacity(uploads.len());
        let mut resync = Vec::new();
        for upload in uploads {
            let claimed =
                self.base_heads.get(&upload.doc_id).map(Vec::as_slice).unwrap_or_default();
            let mut unknown = false;
            for hash in claimed {
                // Quarantined changes count as known: the device rightly treats them as
                // delivered, and its next upload after them goes to quarantine too.
                if !changes::is_stored(connection, upload.doc_id, hash)?
                    && !quarantine::holds(connection, upload.doc_id, hash)?
                {
                    unknown = true;
                    break;
                }
            }
            if unknown {
                resync.push((upload.doc_id, documents::heads(connection, upload.doc_id)?));
            } else {
                kept.push(upload);
            }
        }
        Ok((kept, resync))
    }

    /// Splits off the uploads for documents this device holds but may no longer see (its
    /// officer moved): their changes go to quarantine, neither merged nor lost. Uploads to
    /// documents the device never held still meet the policy, and a 403.
    fn quarantine_moved(
        &self,
        uploads: Vec<DocumentUpload>,
        connection: &rusqlite::Connection,
    ) -> Result<(Vec<DocumentUpload>, Vec<Quarantined>), StoreError> {
        let mut kept = Vec::with_capacity(uploads.len());
        let mut quarantined = Vec::new();
        for upload in uploads {
            let moved_away = match (&self.policy, self.all) {
                (Some(policy), false) => {
                    let stored = documents::stored_scope(connection, upload.doc_id)?;
                    let elsewhere = stored.is_some_and(|stored| {
                        stored.township.is_some() && stored.township != self.township
                    });
                    if elsewhere
                        && device_documents::holds(connection, &self.device, upload.doc_id)?
                    {
                        for change in upload.changes.facts().iter() {
                            policy.check_actor(&change.actor)?;
                        }
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            };
            if moved_away {
                let doc_id = upload.doc_id;
                quarantined.push(Quarantined {
                    doc_id,
                    changes: upload.changes.into_changes(),
                    code: "out_of_scope",
                    reason: "the officer can no longer see this document (moved to another \
                             township)"
                        .to_owned(),
                    message: format!(
                        "document {doc_id} left this device's scope; its changes are kept in \
                         quarantine for a supervisor to review"
                    ),
                });
            } else {
                kept.push(upload);
            }
        }
        Ok((kept, quarantined))
    }

    /// Splits off the uploads that would change a sealed record (approved, signed or served,
    /// docs/review.md): their new changes go to quarantine with why the record is sealed,
    /// neither merged nor lost, after the same scope and actor checks a merge makes. Uploads
    /// whose changes the server holds already pass.
    ///
    /// Sealing is read from the stored projection, before this upload merges: the upload that
    /// signs or serves a record is merged whole, changes it carries after the signature
    /// included, and every later upload is refused.
    fn quarantine_sealed(
        &self,
        uploads: Vec<DocumentUpload>,
        connection: &rusqlite::Connection,
    ) -> Result<(Vec<DocumentUpload>, Vec<Quarantined>), StoreError> {
        let Some(policy) = &self.policy else { return Ok((uploads, Vec::new())) };
        let mut kept = Vec::with_capacity(uploads.len());
        let mut sealed = Vec::new();
        for mut upload in uploads {
            let Some(sealed_state) = review::sealed_state(connection, upload.doc_id)? else {
                kept.push(upload);
                continue;
            };
            let new_changes = unstored_changes(connection, upload.doc_id, upload.changes.listed())?;
            if new_changes.is_empty() {
                kept.push(upload);
                continue;
            }
            if let Some(stored) = documents::stored_scope(connection, upload.doc_id)? {
                policy.check_existing(upload.doc_id, &stored)?;
            }
            for change in &new_changes {
                policy.check_actor(change.actor_id())?;
            }
            let doc_id = upload.doc_id;
            sealed.push(Quarantined {
                doc_id,
                changes: new_changes,
                code: "record_locked",
                reason: format!("record_locked: the record was {sealed_state} and is sealed"),
                message: format!(
                    "record {doc_id} was {sealed_state} and is sealed; its changes are kept in \
                     quarantine for a supervisor to review, and corrections go into an \
                     amendment record"
                ),
            });
        }
        Ok((kept, sealed))
    }

    /// In upload-only mode, splits off the uploads to quarantine: a document the upload
    /// creates, or one whose new changes build on a change the server received after the
    /// withdrawal (or on changes already in quarantine). Returns the kept uploads, the
    /// quarantined documents with their reasons, and the `needs_review` flags (document, change,
    /// lower bound) to raise once the kept uploads are merged. The checks a merge makes (actors,
    /// scope of an existing document) run first, so a refused upload is refused as always.
    #[allow(clippy::type_complexity)]
    fn judge_withdrawn(
        &self,
        uploads: Vec<DocumentUpload>,
        connection: &rusqlite::Connection,
    ) -> Result<(Vec<DocumentUpload>, Vec<Quarantined>, Vec<PendingFlag>), StoreError> {
        let (Some(policy), Some(upload_only)) = (&self.policy, &self.upload_only) else {
            return Ok((uploads, Vec::new(), Vec::new()));
        };
        let mut kept = Vec::with_capacity(uploads.len());
        let mut withdrawn = Vec::new();
        let mut flags = Vec::new();
        for mut upload in uploads {
            // Judged change by change, a document chunk's changes listed.
            let new_changes = unstored_changes(connection, upload.doc_id, upload.changes.listed())?;
            let uploaded: HashSet<ChangeHash> = upload.changes.hashes().into_iter().collect();
            let quarantine = |changes: Vec<automerge::Change>, reason: String| Quarantined {
                doc_id: upload.doc_id,
                changes,
                code: upload_only.code,
                message: format!(
                    "the changes to document {} are kept in quarantine for a supervisor to \
                     review: {reason}",
                    upload.doc_id
                ),
                reason,
            };
            if new_changes.is_empty() {
                kept.push(upload);
                continue;
            }
            for change in &new_changes {
                policy.check_actor(change.actor_id())?;
            }
            let Some(stored) = documents::stored_scope(connection, upload.doc_id)? else {
                withdrawn.push(quarantine(new_changes, upload_only.created_reason()));
                continue;
            };
            policy.check_existing(upload.doc_id, &stored)?;
            let facts = changes::causal_facts(connection, upload.doc_id)?;
            let mut follows_quarantine = false;
            for dep in new_changes.iter().flat_map(|change| change.deps()) {
                if !facts.contains_key(dep)
                    && !uploaded.contains(dep)
                    && quarantine::holds(connection, upload.doc_id, dep)?
                {
                    follows_quarantine = true;
                    break;
                }
            }
            if follows_quarantine {
                withdrawn.push(quarantine(new_changes, upload_only.follows_quarantine_reason()));
                continue;
            }
            let verdict = causal::judge(
                &new_changes,
                &facts,
                &self.device,
                self.received_at,
                upload_only.withdrawn_at,
            );
            match verdict {
                Verdict::Accept(bounds) => {
                    flags.extend(bounds.into_iter().map(|(hash, not_before)| PendingFlag {
                        doc_id: upload.doc_id,
                        hash,
                        detail: upload_only.review_detail(not_before, self.received_at),
                    }));
                    kept.push(upload);
                }
                Verdict::Late(not_before) => {
                    withdrawn.push(quarantine(new_changes, upload_only.late_reason(not_before)));
                }
            }
        }
        Ok((kept, withdrawn, flags))
    }

    /// The uploaded changes, not stored yet, whose device time may lie outside their bounds
    /// (more than 10 minutes away from the receipt): the candidates for `clock_suspect`,
    /// judged once merged. Changes stamped near the receipt cost nothing.
    fn clock_candidates(
        &self,
        uploads: &[DocumentUpload],
        connection: &rusqlite::Connection,
    ) -> Result<Vec<ClockCandidate>, StoreError> {
        let near = (self.received_at - causal::CLOCK_TOLERANCE_MS)
            ..=(self.received_at + causal::CLOCK_TOLERANCE_MS);
        let mut candidates = Vec::new();
        for upload in uploads {
            for change in upload.changes.facts().iter() {
                if near.contains(&change.timestamp.saturating_mul(1000)) {
                    continue;
                }
                if !changes::is_stored(connection, upload.doc_id, &change.hash)? {
                    candidates.push(ClockCandidate {
                        doc_id: upload.doc_id,
                        hash: change.hash,
                        actor: change.actor.to_bytes().to_vec(),
                        timestamp: change.timestamp,
                    });
                }
            }
        }
        Ok(candidates)
    }

    /// Flags the merged candidates whose device time lies outside their bounds, now that the
    /// change log holds them with their receipt. The lower bound is the causal one, or the
    /// registration of the change's actor when that is later: a device cannot write with an
    /// actor before the server allocated it.
    fn flag_suspect_clocks(
        &self,
        candidates: Vec<ClockCandidate>,
        connection: &rusqlite::Connection,
    ) -> Result<(), StoreError> {
        let mut facts = HashMap::new();
        let mut registered: HashMap<Vec<u8>, Option<i64>> = HashMap::new();
        for candidate in candidates {
            let stored = match facts.entry(candidate.doc_id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    entry.insert(changes::causal_facts(connection, candidate.doc_id)?)
                }
            };
            let stored = &*stored;
            // A candidate the merge did not store (a duplicate within the upload) has no facts.
            let Some(received) = stored.get(&candidate.hash) else { continue };
            let registered_at = match registered.entry(candidate.actor) {
                Entry::Occupied(entry) => *entry.get(),
                Entry::Vacant(entry) => {
                    let at = review::actor_registered_at(connection, entry.key())?;
                    *entry.insert(at)
                }
            }
            .unwrap_or(i64::MIN);
            let lower_bound = || {
                causal_not_before(&received.deps, &self.device, |dep| stored.get(dep).cloned())
                    .max(registered_at)
            };
            let suspect =
                causal::clock_suspect(candidate.timestamp, received.received_at, lower_bound);
            if let Some(detail) = suspect {
                review_flags::insert(
                    connection,
                    candidate.doc_id,
                    &candidate.hash,
                    review_flags::CLOCK_SUSPECT,
                    &detail,
                    self.received_at,
                )?;
            }
        }
        Ok(())
    }

    /// Whether the device reads documents sent whole (protocol version 2).
    fn reads_whole_documents(&self) -> bool {
        self.version >= 2
    }

    /// Whether the round only reads: no key (so no stored answer), no change uploaded (so
    /// nothing merged, quarantined or flagged), and not in upload-only mode.
    fn pull_only(&self) -> bool {
        self.keyed.is_none() && self.policy.is_none() && self.upload_only.is_none()
    }

    /// The reads of a pull-only round (`pull_only`), inside one read transaction: the heads of
    /// the documents whose claimed heads the server does not know, the feed and the evictions.
    /// The same reads as `run` makes for such a round, whose merge and quarantines are empty.
    fn read_pull(mut self, connection: &rusqlite::Connection) -> Result<PulledRound, StoreError> {
        let uploads = std::mem::take(&mut self.uploads);
        let (_, resync) = self.split_unknown_heads(uploads, connection)?;
        let township = self.township.as_deref();
        let feed = changes::feed_after(
            connection,
            self.cursor,
            &self.uploaded,
            MAX_RESPONSE_CHANGE_BYTES,
            self.all,
            township,
            self.reads_whole_documents(),
        )?;
        let delivered = delivered_documents(&feed);
        let evict_due =
            !device_documents::all_visible(connection, &self.device, self.all, township)?;
        Ok(PulledRound {
            device: self.device,
            all: self.all,
            township: self.township,
            resync,
            feed,
            delivered,
            evict_due,
        })
    }

    /// Merges, records what the device holds, lists what it must evict and stores the answer
    /// under the key, all in the job's transaction: the answer exists only if everything it
    /// acknowledges committed. The feed page is not read here but fixed by its bounds (the
    /// last feed sequence of this snapshot), stored with the answer and read after `COMMIT`.
    fn run(mut self, context: &mut WriteContext<'_>) -> Result<RoundAnswer, StoreError> {
        // Checked again on the writer: a request with the same key may have committed since.
        if let Some(keyed) = &self.keyed
            && let Some(answer) = keyed.stored_answer(context.connection(), &self.device)?
        {
            return Ok(answer);
        }
        let uploads = std::mem::take(&mut self.uploads);
        let (uploads, resync) = self.split_unknown_heads(uploads, context.connection())?;
        let (uploads, mut quarantined) = self.quarantine_moved(uploads, context.connection())?;
        let (uploads, sealed) = self.quarantine_sealed(uploads, context.connection())?;
        let (uploads, withdrawn, review) = self.judge_withdrawn(uploads, context.connection())?;
        quarantined.extend(withdrawn);
        quarantined.extend(sealed);
        let clock_candidates = self.clock_candidates(&uploads, context.connection())?;
        let merged = match &self.policy {
            Some(policy) => merge_uploads_in(context, uploads, self.received_at, policy)?,
            None => Vec::new(),
        };
        tracing::debug!(
            device = %self.device,
            documents = merged.len(),
            premerged = merged.iter().filter(|doc| doc.premerged).count(),
            "merged"
        );
        let connection = context.connection();
        for flag in &review {
            review_flags::insert(
                connection,
                flag.doc_id,
                &flag.hash,
                review_flags::NEEDS_REVIEW,
                &flag.detail,
                self.received_at,
            )?;
        }
        self.flag_suspect_clocks(clock_candidates, connection)?;
        if let Some(policy) = &self.policy {
            for kept in &mut quarantined {
                quarantine::insert(
                    connection,
                    kept.doc_id,
                    &mut kept.changes,
                    policy.attribution(),
                    &kept.reason,
                    self.received_at,
                )?;
            }
        }
        let township = self.township.as_deref();
        let received = merged.iter().filter(|doc| !doc.heads.is_empty()).map(|doc| doc.doc_id);
        device_documents::record(connection, &self.device, received, self.all, township)?;
        // Upload-only: nothing is read, not even what the device must evict; the cursor stays.
        let (feed, evict) = if self.upload_only.is_some() {
            (None, Vec::new())
        } else {
            let mut skip: Vec<ChangeHash> = self.uploaded.iter().copied().collect();
            skip.sort_unstable();
            let bounds = FeedBounds {
                cursor: self.cursor,
                last_feed_seq: changes::last_feed_seq(connection)?,
                all: self.all,
                township: self.township.clone(),
                skip,
                whole_documents: self.reads_whole_documents(),
            };
            let evict = device_documents::evict(connection, &self.device, self.all, township)?;
            (Some(bounds), evict)
        };
        let results = merged
            .into_iter()
            .map(|doc| DocResult {
                doc_id: doc.doc_id,
                outcome: DocOutcome::Accepted {
                    heads: doc.heads.iter().map(|hash| hash.0).collect(),
                    stored: u32::try_from(doc.stored)
                        .expect("at most MAX_CHANGES_PER_SYNC changes"),
                },
            })
            .chain(resync.into_iter().map(|(doc_id, heads)| resync_result(doc_id, &heads)))
            .chain(quarantined.into_iter().map(|kept| DocResult {
                doc_id: kept.doc_id,
                outcome: DocOutcome::Rejected {
                    code: kept.code.to_owned(),
                    message: kept.message,
                    quarantined: true,
                },
            }))
            .collect();
        // Without a feed page the cursor stays; with one, `finish` fills cursor and page in.
        let answer =
            SyncResponse { cursor: self.cursor, more: false, results, updates: Vec::new(), evict }
                .encode_as(self.version);
        if let Some(keyed) = &self.keyed {
            let stored = StoredAnswer {
                request_sha256: keyed.request_sha256,
                status: 200,
                response: answer.clone(),
                feed: feed.clone(),
            };
            idempotency::insert(connection, &self.device, &keyed.key, &stored, self.received_at)?;
        }
        Ok(RoundAnswer { response: answer, feed })
    }
}

/// What an officer's upload may touch, read from the registry just before the merge.
struct SyncPolicy {
    attribution: Attribution,
    township: Option<String>,
    scope: Vec<ScopeItem>,
    sectors: Vec<String>,
    actors: HashSet<Vec<u8>>,
    now_ms: i64,
}

impl SyncPolicy {
    fn load(store: &Store, caller: &Caller, now_ms: i64) -> Result<Self, ApiError> {
        let (actors, scope) = store.read(|tx| {
            let actors = devices::device_actors(tx, &caller.device)?;
            let scope = match &caller.township {
                Some(township) => registry::scope_items(tx, township, now_ms)?,
                None => Vec::new(),
            };
            Ok((actors, scope))
        })?;
        let certificate = caller.certificate.as_ref();
        Ok(Self {
            attribution: Attribution {
                device: Some(caller.device.clone()),
                officer: Some(caller.officer.clone()),
                certificate: certificate.map(|certificate| certificate.cert_no.clone()),
            },
            township: caller.township.clone(),
            scope,
            sectors: certificate.map(|certificate| certificate.sectors.clone()).unwrap_or_default(),
            actors: actors.into_iter().collect(),
            now_ms: now_millis().max(now_ms),
        })
    }

    /// Whether an active entrustment item of the township allows one of `actions` on the
    /// matter, in a sector the certificate covers.
    fn covers(&self, matter: &str, actions: &[Action]) -> bool {
        self.scope.iter().any(|item| {
            item.matter == matter
                && item.valid_from <= self.now_ms
                && self.now_ms <= item.valid_to
                && self.sectors.contains(&item.sector)
                && item.actions.iter().any(|action| actions.contains(action))
        })
    }

    fn in_township(&self, township: Option<&str>) -> bool {
        self.township.is_some() && self.township.as_deref() == township
    }
}

/// The actions that make a record of this kind: inspecting, or the penalty procedure.
fn actions_for_kind(kind: Option<&str>) -> &'static [Action] {
    match kind {
        Some("inspection") => &[Action::Inspect],
        Some("case") => &[Action::SummaryPenalty, Action::GeneralPenalty],
        _ => &[],
    }
}

impl UploadPolicy for SyncPolicy {
    fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    fn check_existing(&self, doc_id: DocumentId, stored: &StoredScope) -> Result<(), Refusal> {
        if !self.in_township(stored.township.as_deref()) {
            return Err(Refusal::OutOfScope(format!(
                "document {doc_id} belongs to another township"
            )));
        }
        let matter = stored.matter.as_deref().unwrap_or_default();
        if !self.covers(matter, actions_for_kind(stored.kind.as_deref())) {
            return Err(Refusal::OutOfScope(format!(
                "matter {matter:?} of document {doc_id} is not in this officer's scope"
            )));
        }
        Ok(())
    }

    fn check_created(
        &self,
        doc_id: DocumentId,
        merged: Result<&Record, &str>,
    ) -> Result<(), Refusal> {
        let record = merged.map_err(|err| {
            Refusal::OutOfScope(format!(
                "document {doc_id} is not a record whose township and matter can be checked: {err}"
            ))
        })?;
        if !self.in_township(Some(record.township())) {
            return Err(Refusal::OutOfScope(format!(
                "document {doc_id} is for township {:?}, not this officer's",
                record.township()
            )));
        }
        let actions: &[Action] = match record {
            Record::Inspection(_) => &[Action::Inspect],
            Record::Case(case) => match Procedure::parse(&case.procedure) {
                Some(Procedure::Summary) => &[Action::SummaryPenalty],
                Some(Procedure::General) => &[Action::GeneralPenalty],
                None => &[],
            },
        };
        if !self.covers(record.matter(), actions) {
            return Err(Refusal::OutOfScope(format!(
                "matter {:?} is not entrusted to this township for this action, or not covered \
                 by the certificate",
                record.matter()
            )));
        }
        Ok(())
    }

    fn check_actor(&self, actor: &ActorId) -> Result<(), Refusal> {
        if self.actors.contains(actor.to_bytes()) {
            Ok(())
        } else {
            Err(Refusal::ForeignActor(format!(
                "actor {} is not registered to this device; nothing was stored",
                actor.to_hex_string()
            )))
        }
    }
}
