//! The supervisor review (docs/review.md): `GET /v1/review/queue`, `GET /v1/review/{id}` and
//! the actions `resolve`, `approve`, `return` and `grant`, for supervisors and admins only.
//!
//! Every action is one server-authored change (actor `SERVER_ACTOR`, attributed to the
//! supervisor) written by one writer job (`store::review::write_server_change`), and answers
//! with the review view of the record after it; devices receive the change through the feed.

mod changed;

use std::collections::HashMap;

use automerge::{ActorId, AutoCommit, Automerge, ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Datelike as _;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Value, json};
use sync_core::ids::DocumentId;
use sync_core::records::Record;
use sync_core::validate::{Finding, Severity};
use sync_core::view::DocumentView;
use utoipa::ToSchema;

use crate::auth::{Caller, Supervisor, now_millis};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::review::{self, APPROVED, Comment, Grant, PENDING, QueueFilter, RETURNED};
use crate::store::review_flags::{self, CLOCK_SUSPECT, NEEDS_REVIEW, ReviewFlag};
use crate::store::{Attribution, Store, StoreError, changes, findings, quarantine};

/// The review routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/review/queue", get(list_queue))
        .route("/v1/review/{id}", get(show_review))
        .route("/v1/review/{id}/resolve", post(resolve_field))
        .route("/v1/review/{id}/approve", post(approve_record))
        .route("/v1/review/{id}/return", post(return_record))
        .route("/v1/review/{id}/grant", post(grant_request))
}

/// The queue's query string; unknown parameters are `invalid_query`.
// `utoipa::IntoParams` in full: the `params(...)` expansion names it so, and an import would
// make that an unnecessary qualification.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct QueueQuery {
    /// Only records of this township.
    township: Option<String>,
    /// Only records with a finding of this code.
    finding: Option<String>,
    /// Only records with conflicting values.
    conflicts: Option<bool>,
    /// Only records in this review state: `pending`, `approved` or `returned`.
    state: Option<String>,
    /// Only records changed since they were approved.
    changed_since_approval: Option<bool>,
    /// Only records resubmitted after being returned.
    resubmitted: Option<bool>,
}

/// `POST /v1/review/{id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
struct ResolveBody {
    /// The field's path in the record, e.g. `outcome`.
    path: String,
    /// The supervisor's value: a string, a number or a boolean.
    #[schema(value_type = Object)]
    value: Value,
}

/// `POST /v1/review/{id}/return`.
#[derive(Debug, Deserialize, ToSchema)]
struct ReturnBody {
    /// Why the record goes back to its officer; must not be blank.
    comment: String,
}

/// `POST /v1/review/{id}/grant`.
#[derive(Debug, Deserialize, ToSchema)]
struct GrantBody {
    /// The id of the device's request event to grant.
    event: String,
}

/// The records to review, filtered in SQL over the columns projected at every merge.
#[utoipa::path(
    get,
    path = "/v1/review/queue",
    tag = "review",
    params(QueueQuery),
    responses(
        (status = 200, description = "The records to review", body = Vec<review::QueueItem>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a supervisor or an admin", body = ErrorBody),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_queue(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    query: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<Vec<review::QueueItem>>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))?;
    if let Some(wanted) = &query.state
        && ![PENDING, APPROVED, RETURNED].contains(&wanted.as_str())
    {
        return Err(ApiError::InvalidQuery(format!(
            "state {wanted:?} is not one of pending, approved, returned"
        )));
    }
    let filter = QueueFilter {
        township: query.township,
        finding: query.finding,
        conflicts: query.conflicts.unwrap_or(false),
        state: query.state,
        changed_since_approval: query.changed_since_approval.unwrap_or(false),
        resubmitted: query.resubmitted.unwrap_or(false),
    };
    let store = state.store().clone();
    let items = run_blocking(move || Ok(store.read(|tx| review::queue(tx, &filter))?)).await?;
    Ok(Json(items))
}

/// The record as a supervisor reviews it.
#[utoipa::path(
    get,
    path = "/v1/review/{id}",
    tag = "review",
    params(("id" = String, Path, description = "The document id, a UUID")),
    responses(
        (status = 200, description = "The record as a supervisor reviews it: the merged view with registry-aware findings, history with what each change did, quarantined changes, the writers of conflicting values and the review state (docs/review.md)", body = Object),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a supervisor or an admin", body = ErrorBody),
        (status = 400, description = "`invalid_document_id`", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn show_review(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let doc_id = parse_document_id(id)?;
    let store = state.store().clone();
    Ok(Json(run_blocking(move || review_view(&store, doc_id)).await?))
}

/// Sets a field to the supervisor's value, superseding every concurrent value.
#[utoipa::path(
    post,
    path = "/v1/review/{id}/resolve",
    tag = "review",
    params(("id" = String, Path, description = "The document id, a UUID")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "The review view of the record after the action: the merged view with registry-aware findings, history with what each change did, quarantined changes, the writers of conflicting values and the review state (docs/review.md)", body = Object),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a supervisor or an admin", body = ErrorBody),
        (status = 400, description = "`invalid_document_id` or `malformed_json`", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 422, description = "`invalid_edit`: the record cannot take this action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn resolve_field(
    State(state): State<AppState>,
    Supervisor(caller): Supervisor,
    id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let doc_id = parse_document_id(id)?;
    let value = match body.value {
        Value::String(text) => text,
        Value::Number(_) | Value::Bool(_) => body.value.to_string(),
        _ => {
            return Err(ApiError::InvalidEdit(
                "the value must be a string, a number or a boolean".to_owned(),
            ));
        }
    };
    let path = body.path;
    act(&state, &caller, doc_id, move |doc, _| review::resolve(doc, &path, &value)).await
}

/// Approves the record at its current heads; later uploads to it are quarantined.
#[utoipa::path(
    post,
    path = "/v1/review/{id}/approve",
    tag = "review",
    params(("id" = String, Path, description = "The document id, a UUID")),
    responses(
        (status = 200, description = "The review view of the record after the action: the merged view with registry-aware findings, history with what each change did, quarantined changes, the writers of conflicting values and the review state (docs/review.md)", body = Object),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a supervisor or an admin", body = ErrorBody),
        (status = 400, description = "`invalid_document_id` or `malformed_json`", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 422, description = "`invalid_edit`: the record cannot take this action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn approve_record(
    State(state): State<AppState>,
    Supervisor(caller): Supervisor,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let doc_id = parse_document_id(id)?;
    act(&state, &caller, doc_id, |doc, _| review::approve(doc)).await
}

/// Returns the record to its officer for correction, with a comment.
#[utoipa::path(
    post,
    path = "/v1/review/{id}/return",
    tag = "review",
    params(("id" = String, Path, description = "The document id, a UUID")),
    request_body = ReturnBody,
    responses(
        (status = 200, description = "The review view of the record after the action: the merged view with registry-aware findings, history with what each change did, quarantined changes, the writers of conflicting values and the review state (docs/review.md)", body = Object),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a supervisor or an admin", body = ErrorBody),
        (status = 400, description = "`invalid_document_id` or `malformed_json`", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 422, description = "`invalid_edit`: the record cannot take this action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn return_record(
    State(state): State<AppState>,
    Supervisor(caller): Supervisor,
    id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<ReturnBody>,
) -> Result<Json<Value>, ApiError> {
    let doc_id = parse_document_id(id)?;
    if body.comment.trim().is_empty() {
        return Err(ApiError::InvalidEdit("a returned record needs a comment".to_owned()));
    }
    let comment = Comment {
        id: hex::encode(crate::auth::keys::random_bytes::<8>()),
        by: caller.officer.clone(),
        at: now_millis(),
        text: body.comment,
    };
    act(&state, &caller, doc_id, move |doc, _| review::return_for_correction(doc, &comment)).await
}

/// Grants a device's request event with the server-authored event it asks for.
#[utoipa::path(
    post,
    path = "/v1/review/{id}/grant",
    tag = "review",
    params(("id" = String, Path, description = "The document id, a UUID")),
    request_body = GrantBody,
    responses(
        (status = 200, description = "The review view of the record after the action: the merged view with registry-aware findings, history with what each change did, quarantined changes, the writers of conflicting values and the review state (docs/review.md)", body = Object),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a supervisor or an admin", body = ErrorBody),
        (status = 400, description = "`invalid_document_id` or `malformed_json`", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 422, description = "`invalid_edit`: the record cannot take this action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn grant_request(
    State(state): State<AppState>,
    Supervisor(caller): Supervisor,
    id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Json<Value>, ApiError> {
    let doc_id = parse_document_id(id)?;
    let now = chrono::Utc::now();
    let grant = Grant {
        request: body.event,
        event_id: hex::encode(crate::auth::keys::random_bytes::<16>()),
        now_ms: now.timestamp_millis(),
        year: now.year(),
    };
    act(&state, &caller, doc_id, move |doc, connection| {
        review::grant(doc, connection, doc_id, &grant)
    })
    .await
}

/// Writes one server-authored change attributed to the caller, then answers the review view.
async fn act(
    state: &AppState,
    caller: &Caller,
    doc_id: DocumentId,
    edit: impl FnOnce(&mut AutoCommit, &Connection) -> Result<String, StoreError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let attribution = Attribution {
        device: None,
        officer: Some(caller.officer.clone()),
        certificate: caller.certificate.as_ref().map(|certificate| certificate.cert_no.clone()),
    };
    let now = now_millis();
    state
        .store()
        .submit(move |context| {
            review::write_server_change(context, doc_id, now, &attribution, edit)
        })
        .await?;
    let store = state.store().clone();
    Ok(Json(run_blocking(move || review_view(&store, doc_id)).await?))
}

/// How many of a record's latest changes get `changed` in the history; older entries get
/// `"changed": null`. Each diff renders the record twice at the change's heads, so this bounds
/// the work of one view at 400 renderings of the record, however long its history.
const MAX_DIFFED_CHANGES: usize = 200;

/// The merged view with the registry-aware findings, the history, the quarantined changes,
/// the writers of conflicting values and the review state.
///
/// Each history entry carries `changed`, what the change did to the record as JSON
/// (`[{"path", "before", "after"}]`, `changed::changed`), for the last [`MAX_DIFFED_CHANGES`]
/// changes in feed order only; older entries carry `null`.
fn review_view(store: &Store, doc_id: DocumentId) -> Result<Value, ApiError> {
    let not_found = || ApiError::ObjectNotFound(format!("document {doc_id} is not found"));
    let doc = store.document(doc_id)?.ok_or_else(not_found)?;
    let mut view = DocumentView::build(doc_id, &doc.get_heads(), &*doc);
    let record = Record::hydrate(&*doc).ok();
    let now = now_millis();
    let writers = conflict_writers(&doc, &view.conflicts);
    let actors: Vec<String> = view
        .conflicts
        .iter()
        .flat_map(|conflict| conflict.values.iter().map(|value| value.actor.clone()))
        .collect();
    let (registry_findings, history, quarantined, owners, flags) = store.read(|tx| {
        let registry_findings = match &record {
            Some(record) => Some(findings::registry_findings(tx, record, now)?),
            None => None,
        };
        let mut owners = HashMap::new();
        for actor in actors {
            if owners.contains_key(&actor) {
                continue;
            }
            let owner = match hex::decode(&actor) {
                Ok(bytes) => review::actor_owner(tx, &bytes)?,
                Err(_) => None,
            };
            owners.insert(actor, owner);
        }
        Ok((
            registry_findings,
            changes::history(tx, doc_id)?,
            quarantine::list(tx, doc_id)?,
            owners,
            review_flags::list(tx, doc_id)?,
        ))
    })?;
    if let Some(registry_findings) = registry_findings {
        view.findings = registry_findings;
    }
    view.findings.extend(flag_findings(&flags));
    let mut json = serde_json::to_value(&view)
        .map_err(|err| ApiError::Internal(anyhow::Error::new(err).context("serialising a view")))?;
    let received: HashMap<ChangeHash, i64> =
        history.iter().map(|entry| (entry.hash, entry.received_at)).collect();
    if let Some(conflicts) = json["conflicts"].as_array_mut() {
        let values = conflicts.iter_mut().filter_map(|conflict| conflict["values"].as_array_mut());
        for (value, writers) in values.zip(&writers) {
            for (index, item) in value.iter_mut().enumerate() {
                let owner = item["actor"].as_str().and_then(|actor| owners.get(actor)).cloned();
                let (device, officer) = owner.flatten().unzip();
                item["device"] = json!(device);
                item["officer"] = json!(officer);
                let writer = writers.get(index).copied().flatten();
                item["device_time"] = json!(writer.map(|(_, device_time)| device_time));
                item["received_at"] =
                    json!(writer.and_then(|(hash, _)| received.get(&hash).copied()));
            }
        }
    }
    let diffed_from = history.len().saturating_sub(MAX_DIFFED_CHANGES);
    json["history"] = history
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let changed = if index >= diffed_from {
                changed::changed(&doc, entry.hash, &entry.deps)
            } else {
                Value::Null
            };
            json!({
                "feed_seq": entry.feed_seq,
                "hash": entry.hash.to_string(),
                "actor": entry.actor.to_hex_string(),
                "device": entry.device,
                "officer": entry.officer,
                "certificate": entry.certificate,
                "received_at": entry.received_at,
                "device_time": entry.device_time,
                "message": entry.message,
                "changed": changed,
            })
        })
        .collect();
    json["quarantined"] = quarantined
        .into_iter()
        .map(|change| {
            json!({
                "hash": change.hash.to_string(),
                "device": change.device,
                "officer": change.officer,
                "reason": change.reason,
                "received_at": change.received_at,
            })
        })
        .collect();
    json["review_flags"] = flags
        .into_iter()
        .map(|flag| {
            json!({
                "hash": flag.hash.to_string(),
                "code": flag.code,
                "detail": flag.detail,
                "created_at": flag.created_at,
            })
        })
        .collect();
    json["review"] = review::review_json(&doc);
    Ok(json)
}

/// For each conflict of the view and each of its values, in the view's order (the winner
/// first), the change that wrote the value: its hash and its device time in milliseconds
/// (`Change::timestamp` is seconds). `None` where the value's op is not found.
///
/// `merge::field_conflicts` keeps only the writer's actor, so the conflicting props are read
/// again here: the path is walked through the winning values to the parent object, and the op
/// id of each value from `get_all` is matched to the change of its actor whose op range
/// covers the op's counter.
fn conflict_writers(
    doc: &Automerge,
    conflicts: &[sync_core::merge::FieldConflict],
) -> Vec<Vec<Option<(ChangeHash, i64)>>> {
    if conflicts.is_empty() {
        return Vec::new();
    }
    let op_ids: Vec<Vec<Option<(u64, ActorId)>>> =
        conflicts.iter().map(|conflict| conflict_op_ids(doc, &conflict.path)).collect();
    let mut changes: HashMap<ActorId, Vec<(u64, u64, ChangeHash, i64)>> =
        op_ids.iter().flatten().flatten().map(|(_, actor)| (actor.clone(), Vec::new())).collect();
    for change in doc.get_changes(&[]) {
        if let Some(ranges) = changes.get_mut(change.actor_id()) {
            ranges.push((
                change.start_op().get(),
                change.max_op(),
                change.hash(),
                change.timestamp().saturating_mul(1000),
            ));
        }
    }
    op_ids
        .into_iter()
        .map(|values| {
            values
                .into_iter()
                .map(|op| {
                    let (counter, actor) = op?;
                    changes.get(&actor)?.iter().find_map(|&(start, max, hash, device_time)| {
                        (start <= counter && counter <= max).then_some((hash, device_time))
                    })
                })
                .collect()
        })
        .collect()
}

/// The op ids (counter, actor) of the values at a conflict path (`site.name`, list indices as
/// numbers), winner first as `merge::field_conflicts` lists them; empty where the path does
/// not resolve.
fn conflict_op_ids(doc: &Automerge, path: &str) -> Vec<Option<(u64, ActorId)>> {
    let prop = |obj: &ObjId, segment: &str| match doc.object_type(obj) {
        Ok(ObjType::List) => segment.parse::<usize>().ok().map(Prop::from),
        Ok(ObjType::Map | ObjType::Table) => Some(Prop::from(segment)),
        Ok(ObjType::Text) | Err(_) => None,
    };
    let (parents, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut obj = ROOT;
    for segment in parents.split('.').filter(|_| !parents.is_empty()) {
        let Some(prop) = prop(&obj, segment) else { return Vec::new() };
        match doc.get(&obj, prop) {
            Ok(Some((automerge::Value::Object(_), child))) => obj = child,
            _ => return Vec::new(),
        }
    }
    let Some(prop) = prop(&obj, last) else { return Vec::new() };
    let Ok(values) = doc.get_all(&obj, prop) else { return Vec::new() };
    values
        .into_iter()
        .rev()
        .map(|(_, id)| match id {
            ObjId::Id(counter, actor, _) => Some((counter, actor)),
            ObjId::Root => None,
        })
        .collect()
}

/// One finding per flag code of the record's changes, naming how many changes carry it; the
/// changes and the reasons are in the view's `review_flags`.
fn flag_findings(flags: &[ReviewFlag]) -> Vec<Finding> {
    let count = |code: &str| flags.iter().filter(|flag| flag.code == code).count();
    let mut found = Vec::new();
    let needs_review = count(NEEDS_REVIEW);
    if needs_review > 0 {
        found.push(Finding {
            code: NEEDS_REVIEW,
            severity: Severity::Warning,
            path: String::new(),
            message: format!(
                "{needs_review} change(s) were uploaded after the officer's certificate was \
                 withdrawn and may have been made before it; confirm them"
            ),
            message_zh: format!(
                "{needs_review} 项修改在执法证被吊销或暂停后上传，可能形成于此之前，请核实"
            ),
        });
    }
    let clock_suspect = count(CLOCK_SUSPECT);
    if clock_suspect > 0 {
        found.push(Finding {
            code: CLOCK_SUSPECT,
            severity: Severity::Info,
            path: String::new(),
            message: format!(
                "{clock_suspect} change(s) carry a device time outside what the server's receipts \
                 allow; the device clock may be wrong"
            ),
            message_zh: format!(
                "{clock_suspect} 项修改的设备时间与服务器接收时间不符，设备时钟可能有误"
            ),
        });
    }
    found
}

fn parse_document_id(id: Result<Path<String>, PathRejection>) -> Result<DocumentId, ApiError> {
    let Path(text) = id.map_err(|rejection| ApiError::InvalidDocumentId(rejection.body_text()))?;
    DocumentId::parse(&text).map_err(|_| ApiError::InvalidDocumentId(text))
}
