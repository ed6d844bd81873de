//! The supervisor review (docs/review.md): server-authored changes written through the writer,
//! the `review` part of a record document, the queue over projected columns, and the official
//! case numbers handed out at filing.
//!
//! A server-authored change is made on a fork of the document with the well-known actor
//! `SERVER_ACTOR`, merged into the writer's copy and appended to the change log like an
//! upload, attributed to the supervisor (officer, certificate; no device). Devices receive it
//! through the normal feed.
//!
//! The review state lives in the document (a root map `review` that only the server writes),
//! so that it reaches the officer's device; the server reads it back only from operations by
//! `SERVER_ACTOR`, so a device that writes `review` itself changes nothing the server acts on.
//! `documents.review_state` and `documents.review_heads` (the heads the last review change
//! left) are projections of that map, rebuilt at every merge like every other column.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, Automerge, ChangeHash, LoadOptions, ObjId, ObjType, ROOT, ReadDoc,
    ScalarValue, TextEncoding, Value,
};
use rusqlite::{Connection, OptionalExtension, params};
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::json::value_json;
use sync_core::records::{
    CaseState, Procedure, ProcedureFold, Record, SERVER_ACTOR, server_actor_hex,
};

use crate::store::changes::{doc_id_column, hashes_column};
use crate::store::{Attribution, Refusal, StoreError, WorkingDocument, WriteContext};

/// Review states, as the document and `documents.review_state` hold them.
pub(crate) const PENDING: &str = "pending";
/// Approved at the heads the `review` map lists; sealed.
pub(crate) const APPROVED: &str = "approved";
/// Returned to the officer for correction, with comments; open again.
pub(crate) const RETURNED: &str = "returned";
/// `documents.sealed`: an inspection that carries a signature.
pub(crate) const SIGNED: &str = "signed";
/// `documents.sealed`: a case whose decision was served.
pub(crate) const SERVED: &str = "served";

/// The review state projected from a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReviewProjection {
    /// `pending`, `approved` or `returned`.
    pub(crate) state: &'static str,
    /// The heads right after the last review change (approve or return); `None` before any.
    pub(crate) heads: Option<Vec<ChangeHash>>,
}

impl Default for ReviewProjection {
    fn default() -> Self {
        Self { state: PENDING, heads: None }
    }
}

fn by_server(id: &ObjId) -> bool {
    matches!(id, ObjId::Id(_, actor, _) if actor.to_bytes() == SERVER_ACTOR)
}

/// The `review` map the server wrote, if any.
fn server_review_map(doc: &impl ReadDoc) -> Option<ObjId> {
    let values = doc.get_all(ROOT, "review").ok()?;
    values
        .into_iter()
        .rev()
        .find(|(value, id)| matches!(value, Value::Object(ObjType::Map)) && by_server(id))
        .map(|(_, id)| id)
}

/// The server-written value of `key` in the server's `review` map, with its operation id.
fn server_value(doc: &impl ReadDoc, review: &ObjId, key: &str) -> Option<(String, ObjId)> {
    doc.get_all(review, key).ok()?.into_iter().rev().find_map(|(value, id)| match value {
        Value::Scalar(scalar) if by_server(&id) => match scalar.as_ref() {
            ScalarValue::Str(text) => Some((text.to_string(), id)),
            _ => None,
        },
        _ => None,
    })
}

/// Reads the review state of a document from the server's operations only.
pub(crate) fn review_of(doc: &Automerge) -> ReviewProjection {
    let Some(review) = server_review_map(doc) else { return ReviewProjection::default() };
    let Some((state, id)) = server_value(doc, &review, "state") else {
        return ReviewProjection::default();
    };
    let state = match state.as_str() {
        APPROVED => APPROVED,
        RETURNED => RETURNED,
        _ => PENDING,
    };
    ReviewProjection { state, heads: doc.hash_for_opid(&id).map(|hash| vec![hash]) }
}

/// Why a record is sealed besides approval, `None` when it is not: `signed` once an
/// inspection carries a signature, `served` once a case's procedure reached `served` (and so
/// every state after it). Projected into `documents.sealed` at every merge; the sync then
/// quarantines later device changes as `record_locked`, like those to an approved record.
///
/// It is read from the merged record, so the upload that adds the signature or the serve event
/// is merged, and only the uploads after it are refused.
pub(crate) fn sealed_by(record: &Record) -> Option<&'static str> {
    match record {
        Record::Inspection(inspection) => (!inspection.signatures.is_empty()).then_some(SIGNED),
        Record::Case(case_file) => {
            let procedure = Procedure::parse(&case_file.procedure).unwrap_or(Procedure::General);
            // Served is left only for executing or closed, so the case reached it when some
            // prefix of its timeline folds to it.
            (1..=case_file.timeline.len())
                .any(|end| {
                    ProcedureFold::run(procedure, &case_file.timeline[..end]).state
                        == CaseState::Served
                })
                .then_some(SERVED)
        }
    }
}

/// `{"state", "heads", "comments"}` of the document, from the server's `review` map.
pub(crate) fn review_json(doc: &Automerge) -> serde_json::Value {
    let state = review_of(doc).state;
    let map = server_review_map(doc);
    let part = |key: &str| {
        map.as_ref()
            .and_then(|map| doc.get(map, key).ok().flatten())
            .filter(|(_, id)| by_server(id))
            .map_or_else(|| serde_json::json!([]), |(_, id)| value_json(doc, &id))
    };
    serde_json::json!({ "state": state, "heads": part("heads"), "comments": part("comments") })
}

// ---- server-authored changes -----------------------------------------------------------------

/// Makes one server-authored change to a stored document inside the caller's writer job:
/// `edit` runs on a fork with `SERVER_ACTOR` and returns the commit message; the new change is
/// merged, appended to the change log with `attribution`, and the document's row and
/// projections are updated. An edit that changes nothing stores nothing.
///
/// # Errors
/// [`Refusal::NotFound`] for an unknown document, the edit's own refusal, or a store failure;
/// on any error the job's savepoint is rolled back and the taken document dropped.
pub(crate) fn write_server_change(
    context: &mut WriteContext<'_>,
    doc_id: DocumentId,
    now_ms: i64,
    attribution: &Attribution,
    edit: impl FnOnce(&mut AutoCommit, &Connection) -> Result<String, StoreError>,
) -> Result<(), StoreError> {
    let Some(mut doc) = context.take_document(doc_id)? else {
        return Err(Refusal::NotFound(format!("document {doc_id} is not found")).into());
    };
    let old_heads = doc.get_heads();
    let options = LoadOptions::new().text_encoding(TextEncoding::Utf8CodeUnit);
    let mut fork = AutoCommit::load_with_options(&doc.save(), options)
        .map_err(|err| StoreError::Corrupt { doc_id, reason: err.to_string() })?
        .with_actor(ActorId::from(SERVER_ACTOR));
    let message = edit(&mut fork, context.connection())?;
    fork.commit_with(CommitOptions::default().with_message(message).with_time(now_ms / 1000));
    let new_changes = fork.get_changes(&old_heads);
    if new_changes.is_empty() {
        context.stage_document(doc_id, doc);
        return Ok(());
    }
    doc.apply_changes(new_changes.clone())
        .map_err(|err| StoreError::Corrupt { doc_id, reason: err.to_string() })?;
    let mut item = WorkingDocument::new(doc_id, doc, false);
    item.new_changes.extend(new_changes);
    item.check_quota(context.connection())?;
    item.write(context.connection(), now_ms, attribution)?;
    item.into_merged(context);
    Ok(())
}

fn invalid(message: impl Into<String>) -> StoreError {
    Refusal::InvalidEdit(message.into()).into()
}

fn automerge_failed(err: &automerge::AutomergeError) -> StoreError {
    invalid(format!("the edit does not apply: {err}"))
}

/// The server's `review` map, created when the document has none yet.
fn review_map(doc: &mut AutoCommit) -> Result<ObjId, StoreError> {
    match server_review_map(doc) {
        Some(map) => Ok(map),
        None => doc.put_object(ROOT, "review", ObjType::Map).map_err(|err| automerge_failed(&err)),
    }
}

/// Writes the review state and the heads it concerns.
fn put_state(
    doc: &mut AutoCommit,
    review: &ObjId,
    state: &str,
    heads: &[ChangeHash],
) -> Result<(), StoreError> {
    doc.put(review, "state", state).map_err(|err| automerge_failed(&err))?;
    let list =
        doc.put_object(review, "heads", ObjType::List).map_err(|err| automerge_failed(&err))?;
    let mut sorted: Vec<String> = heads.iter().map(ToString::to_string).collect();
    sorted.sort();
    for (index, head) in sorted.into_iter().enumerate() {
        doc.insert(&list, index, head).map_err(|err| automerge_failed(&err))?;
    }
    Ok(())
}

/// Sets the field at `path` to `value`, superseding every concurrent value of it.
///
/// # Errors
/// `invalid_edit` for an unknown path, a value of the wrong type, or the server's own `review`.
pub(crate) fn resolve(doc: &mut AutoCommit, path: &str, value: &str) -> Result<String, StoreError> {
    if path == "review" || path.starts_with("review.") {
        return Err(invalid("the review part of a record is written by the review actions"));
    }
    set_field(doc, path, value).map_err(|err| invalid(err.to_string()))?;
    Ok(format!("resolve {path}"))
}

/// Marks the record approved at its current heads.
pub(crate) fn approve(doc: &mut AutoCommit) -> Result<String, StoreError> {
    let heads = doc.get_heads();
    let review = review_map(doc)?;
    put_state(doc, &review, APPROVED, &heads)?;
    Ok("approve".to_owned())
}

/// A supervisor's comment on a returned record.
#[derive(Debug, Clone)]
pub(crate) struct Comment {
    /// Id minted by the server.
    pub(crate) id: String,
    /// The supervisor.
    pub(crate) by: String,
    /// Server time, ms.
    pub(crate) at: i64,
    /// What to correct.
    pub(crate) text: String,
}

/// Marks the record returned for correction and appends the comment.
pub(crate) fn return_for_correction(
    doc: &mut AutoCommit,
    comment: &Comment,
) -> Result<String, StoreError> {
    let review = review_map(doc)?;
    put_state(doc, &review, RETURNED, &[])?;
    let comments = match doc.get(&review, "comments").map_err(|err| automerge_failed(&err))? {
        Some((Value::Object(ObjType::List), id)) if by_server(&id) => id,
        _ => doc
            .put_object(&review, "comments", ObjType::List)
            .map_err(|err| automerge_failed(&err))?,
    };
    let index = doc.length(&comments);
    let item =
        doc.insert_object(&comments, index, ObjType::Map).map_err(|err| automerge_failed(&err))?;
    doc.put(&item, "id", comment.id.as_str()).map_err(|err| automerge_failed(&err))?;
    doc.put(&item, "by", comment.by.as_str()).map_err(|err| automerge_failed(&err))?;
    doc.put(&item, "at", comment.at).map_err(|err| automerge_failed(&err))?;
    doc.put(&item, "text", comment.text.as_str()).map_err(|err| automerge_failed(&err))?;
    Ok("return for correction".to_owned())
}

/// The server-authored event that grants a device's request event.
pub(crate) fn granted_kind(request: &str) -> Option<&'static str> {
    match request {
        "request_file" => Some("file"),
        "request_decision" => Some("decide"),
        "request_close" => Some("close"),
        _ => None,
    }
}

/// What a grant needs besides the document.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The request event granted.
    pub(crate) request: String,
    /// Id of the new event.
    pub(crate) event_id: String,
    /// Server time, ms.
    pub(crate) now_ms: i64,
    /// Year of the official case number.
    pub(crate) year: i32,
}

/// Appends the server-authored event granting `grant.request`; a filing also takes the
/// official case number `{township}-{year}-{n}` and writes it to the record's `case_no`.
///
/// # Errors
/// `invalid_edit` when the document is not a case file, the event is unknown, not a request,
/// or already granted.
pub(crate) fn grant(
    doc: &mut AutoCommit,
    connection: &Connection,
    doc_id: DocumentId,
    grant: &Grant,
) -> Result<String, StoreError> {
    let Ok(Record::Case(case_file)) = Record::hydrate(&*doc) else {
        return Err(invalid(format!("document {doc_id} is not a case file")));
    };
    let request = case_file
        .timeline
        .iter()
        .find(|event| event.id == grant.request)
        .ok_or_else(|| invalid(format!("case {doc_id} has no event {}", grant.request)))?;
    let kind = granted_kind(&request.kind).ok_or_else(|| {
        invalid(format!("event {} is a {:?}, not a request to grant", request.id, request.kind))
    })?;
    let server = server_actor_hex();
    if case_file
        .timeline
        .iter()
        .any(|event| event.actor == server && event.fields.get("request") == Some(&grant.request))
    {
        return Err(invalid(format!("event {} is already granted", grant.request)));
    }
    let mut fields: BTreeMap<String, String> = request.fields.clone();
    fields.insert("request".to_owned(), grant.request.clone());
    if kind == "file" {
        let case_no = case_number(connection, doc_id, &case_file.township, grant.year)?;
        doc.put(ROOT, "case_no", case_no.as_str()).map_err(|err| automerge_failed(&err))?;
        fields.insert("case_no".to_owned(), case_no);
    }
    let prev = case_file.timeline.last().map(|event| event.id.clone()).unwrap_or_default();
    let Some((Value::Object(ObjType::List), timeline)) =
        doc.get(ROOT, "timeline").map_err(|err| automerge_failed(&err))?
    else {
        return Err(invalid(format!("case {doc_id} has no timeline")));
    };
    let index = doc.length(&timeline);
    let event =
        doc.insert_object(&timeline, index, ObjType::Map).map_err(|err| automerge_failed(&err))?;
    let put = |doc: &mut AutoCommit, key: &str, value: ScalarValue| {
        doc.put(&event, key, value).map_err(|err| automerge_failed(&err))
    };
    put(doc, "id", grant.event_id.as_str().into())?;
    put(doc, "kind", kind.into())?;
    put(doc, "prev", prev.as_str().into())?;
    put(doc, "officer", request.officer.as_str().into())?;
    put(doc, "actor", server.as_str().into())?;
    put(doc, "device_time", grant.now_ms.into())?;
    let map =
        doc.put_object(&event, "fields", ObjType::Map).map_err(|err| automerge_failed(&err))?;
    for (key, value) in &fields {
        doc.put(&map, key.as_str(), value.as_str()).map_err(|err| automerge_failed(&err))?;
    }
    Ok(format!("grant {} ({kind})", grant.request))
}

/// The official case number of a filed case: the one it already has, else the next of its
/// township and year.
fn case_number(
    connection: &Connection,
    doc_id: DocumentId,
    township: &str,
    year: i32,
) -> Result<String, StoreError> {
    let existing: Option<String> = connection
        .prepare_cached("SELECT case_no FROM case_numbers WHERE doc_id = ?1")?
        .query_row([doc_id.as_bytes()], |row| row.get(0))
        .optional()?;
    if let Some(case_no) = existing {
        return Ok(case_no);
    }
    let n: i64 = connection
        .prepare_cached(
            "SELECT COALESCE(MAX(n), 0) + 1 FROM case_numbers WHERE township = ?1 AND year = ?2",
        )?
        .query_row(params![township, year], |row| row.get(0))?;
    let case_no = format!("{township}-{year}-{n}");
    connection
        .prepare_cached(
            "INSERT INTO case_numbers (township, year, n, doc_id, case_no) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![township, year, n, doc_id.as_bytes(), case_no])?;
    Ok(case_no)
}

// ---- reads -----------------------------------------------------------------------------------

/// Why device changes to a stored document are refused as `record_locked`: `approved`,
/// `signed` or `served`; `None` when it is open or has no row.
pub(crate) fn sealed_state(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String, Option<String>)> = connection
        .prepare_cached("SELECT review_state, sealed FROM documents WHERE id = ?1")?
        .query_row([doc_id.as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(row.and_then(
        |(review_state, sealed)| {
            if review_state == APPROVED { Some(review_state) } else { sealed }
        },
    ))
}

/// The device and officer an actor is registered to, if any.
pub(crate) fn actor_owner(
    connection: &Connection,
    actor: &[u8],
) -> Result<Option<(String, String)>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT device, officer FROM actors WHERE actor = ?1")?
        .query_row([actor], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

/// When the server registered an actor to a device (ms), if it did: no change by that actor
/// can have been made before, whatever time the device stamped on it.
pub(crate) fn actor_registered_at(
    connection: &Connection,
    actor: &[u8],
) -> Result<Option<i64>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT created_at FROM actors WHERE actor = ?1")?
        .query_row([actor], |row| row.get(0))
        .optional()?)
}

/// What the queue is filtered on; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueFilter {
    /// Only this township.
    pub(crate) township: Option<String>,
    /// Only records with this finding code.
    pub(crate) finding: Option<String>,
    /// Only records with conflicting fields.
    pub(crate) conflicts: bool,
    /// Only this review state.
    pub(crate) state: Option<String>,
    /// Only approved records whose heads moved since.
    pub(crate) changed_since_approval: bool,
    /// Only returned records the officer changed since.
    pub(crate) resubmitted: bool,
}

/// One record in the queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct QueueItem {
    /// Document id.
    pub(crate) id: String,
    /// `inspection` or `case`.
    pub(crate) kind: Option<String>,
    /// Handling township.
    pub(crate) township: Option<String>,
    /// Matter code.
    pub(crate) matter: Option<String>,
    /// One-word status.
    pub(crate) status: Option<String>,
    /// `pending`, `approved` or `returned`.
    pub(crate) review_state: String,
    /// Fields with concurrent values.
    pub(crate) conflicts: i64,
    /// Finding codes, sorted.
    pub(crate) findings: Vec<String>,
    /// Approved, and changed since.
    pub(crate) changed_since_approval: bool,
    /// Returned, and changed since.
    pub(crate) resubmitted: bool,
    /// Server time of the last change, ms.
    pub(crate) updated_at: i64,
}

/// The records matching `filter`, the most recently changed first.
pub(crate) fn queue(
    connection: &Connection,
    filter: &QueueFilter,
) -> Result<Vec<QueueItem>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT d.id, d.kind, d.township, d.matter, d.status, d.review_state, d.conflicts, \
         d.heads, d.review_heads, d.updated_at, \
         (SELECT group_concat(code, ' ') FROM \
          (SELECT code FROM document_findings f WHERE f.doc_id = d.id ORDER BY code)) \
         FROM documents d \
         WHERE d.kind IS NOT NULL \
         AND (?1 IS NULL OR d.township = ?1) \
         AND (?2 IS NULL OR EXISTS \
              (SELECT 1 FROM document_findings f WHERE f.doc_id = d.id AND f.code = ?2)) \
         AND (NOT ?3 OR d.conflicts > 0) \
         AND (?4 IS NULL OR d.review_state = ?4) \
         AND (NOT ?5 OR (d.review_state = 'approved' AND d.heads IS NOT d.review_heads)) \
         AND (NOT ?6 OR (d.review_state = 'returned' AND d.heads IS NOT d.review_heads)) \
         ORDER BY d.feed_seq DESC",
    )?;
    let rows = statement.query_map(
        params![
            filter.township,
            filter.finding,
            filter.conflicts,
            filter.state,
            filter.changed_since_approval,
            filter.resubmitted,
        ],
        |row| {
            let review_state: String = row.get(5)?;
            let heads = hashes_column(row, 7)?;
            let review_heads: Option<Vec<u8>> = row.get(8)?;
            let moved = review_heads.is_some_and(|review_heads| {
                review_heads != heads.iter().flat_map(|hash| hash.0).collect::<Vec<u8>>()
            });
            let findings: Option<String> = row.get(10)?;
            Ok(QueueItem {
                id: doc_id_column(row, 0)?.to_string(),
                kind: row.get(1)?,
                township: row.get(2)?,
                matter: row.get(3)?,
                status: row.get(4)?,
                changed_since_approval: moved && review_state == APPROVED,
                resubmitted: moved && review_state == RETURNED,
                review_state,
                conflicts: row.get(6)?,
                findings: findings
                    .map(|codes| codes.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default(),
                updated_at: row.get(9)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
