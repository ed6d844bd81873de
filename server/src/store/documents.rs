//! SQL on the document table: the projections reports query, the current heads, and the
//! snapshot a document is loaded from.
//!
//! The table is a cache of the change log: every column can be rebuilt by replaying the
//! document's changes, which is why a snapshot is only written now and then.

use automerge::{
    Automerge, Change, ChangeHash, LoadOptions, OnPartialLoad, ReadDoc, TextEncoding,
    VerificationMode,
};
use rusqlite::{Connection, OptionalExtension, params};
use sync_core::ids::DocumentId;
use sync_core::merge::field_conflicts;
use sync_core::records::Record;

use crate::store::StoreError;
use crate::store::changes::{self, doc_id_column, hashes_blob, hashes_column};
use crate::store::review::{ReviewProjection, review_of, sealed_by};

/// One row of the document list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocumentSummary {
    /// The document id.
    pub(crate) id: DocumentId,
    /// `inspection` or `case`; `None` when the document is not a readable record.
    pub(crate) kind: Option<String>,
    /// The one-word status of the record.
    pub(crate) status: Option<String>,
    /// The matter code.
    pub(crate) matter: Option<String>,
    /// The handling township.
    pub(crate) township: Option<String>,
    /// The server's current heads.
    pub(crate) heads: Vec<ChangeHash>,
    /// Server time of the last change, milliseconds since the Unix epoch.
    pub(crate) updated_at: i64,
}

/// The authorization-relevant columns of a stored document, fixed at its first upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredScope {
    /// `inspection` or `case`.
    pub(crate) kind: Option<String>,
    /// The matter code.
    pub(crate) matter: Option<String>,
    /// The handling township.
    pub(crate) township: Option<String>,
}

/// A document's scope by its id, from the covering index (migration 16): its row holds the
/// snapshot, a page per document to read.
pub(crate) const SCOPE_BY_ID: &str =
    "SELECT kind, matter, township FROM documents INDEXED BY documents_scope WHERE id = ?1";

/// A document's stored change bytes by its id, from the covering index, as [`SCOPE_BY_ID`].
pub(crate) const CHANGE_BYTES_BY_ID: &str =
    "SELECT change_bytes FROM documents INDEXED BY documents_scope WHERE id = ?1";

/// The stored kind, matter and township of a document, or `None` when it has no row.
pub(crate) fn stored_scope(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Option<StoredScope>, StoreError> {
    let mut statement = connection.prepare_cached(SCOPE_BY_ID)?;
    Ok(statement
        .query_row([doc_id.as_bytes()], |row| {
            Ok(StoredScope { kind: row.get(0)?, matter: row.get(1)?, township: row.get(2)? })
        })
        .optional()?)
}

/// The record fields projected into columns at merge time, so that reports are SQL.
///
/// All `None` when the document does not hydrate as a record: the merge still stands, since
/// what happened in the field happened, and the columns fill in once the record is whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Projection {
    kind: Option<String>,
    matter: Option<String>,
    township: Option<String>,
    party_key: Option<String>,
    status: Option<String>,
    // SHA-256 (hex) of every evidence item, withdrawn ones included.
    evidence: Vec<String>,
    // Fields with concurrent values.
    conflicts: i64,
    // The server-written review state (docs/review.md).
    review: ReviewProjection,
    // Why the record is sealed besides approval (`store::review::sealed_by`).
    sealed: Option<&'static str>,
    // The hydrated record, for the findings projected after the row (`store::review`).
    record: Option<Record>,
    // Why the document does not hydrate as a record, when it does not.
    not_a_record: Option<String>,
}

impl Projection {
    /// Reads the projected fields from the merged document.
    ///
    /// This is the one hydration of the record per merge: the scope check of a new document,
    /// the findings and the evidence links all read the record from here.
    ///
    /// A document whose every operation one actor wrote (one device's own record, until
    /// another device or a supervisor writes to it) has one chain of history: no field holds
    /// concurrent values, so the walk for conflicts is skipped. It was about a third of the
    /// projection's cost, and a sixth of the writer's time in a resync (BENCHMARKS.md).
    pub(crate) fn of(doc: &Automerge) -> Self {
        let conflicts = if doc.stats().num_actors <= 1 { 0 } else { field_conflicts(doc).len() };
        Self::with_conflicts(doc, i64::try_from(conflicts).unwrap_or(i64::MAX))
    }

    fn with_conflicts(doc: &Automerge, conflicts: i64) -> Self {
        let review = review_of(doc);
        match Record::hydrate(doc) {
            Ok(record) => Self {
                kind: Some(record.kind().as_str().to_owned()),
                matter: Some(record.matter().to_owned()),
                township: Some(record.township().to_owned()),
                party_key: record.party_key().map(str::to_owned),
                status: Some(record.status()),
                evidence: record.evidence().iter().map(|item| item.sha256.clone()).collect(),
                conflicts,
                review,
                sealed: sealed_by(&record),
                record: Some(record),
                not_a_record: None,
            },
            Err(err) => {
                tracing::debug!(error = %err, "document does not hydrate as a record");
                Self { conflicts, review, not_a_record: Some(err.to_string()), ..Self::default() }
            }
        }
    }

    /// The SHA-256 (hex) of every evidence item the record lists.
    pub(crate) fn evidence(&self) -> &[String] {
        &self.evidence
    }

    /// The hydrated record, when the document is one.
    pub(crate) fn record(&self) -> Option<&Record> {
        self.record.as_ref()
    }

    /// The hydrated record, or why the document is not one.
    pub(crate) fn hydrated(&self) -> Result<&Record, &str> {
        match (&self.record, &self.not_a_record) {
            (Some(record), _) => Ok(record),
            (None, reason) => Err(reason.as_deref().unwrap_or("it does not hydrate")),
        }
    }
}

/// A full save of a document and the last feed sequence it covers.
pub(crate) struct Snapshot {
    /// `Automerge::save()` of the document.
    pub(crate) bytes: Vec<u8>,
    /// The feed sequence of the last change the snapshot holds.
    pub(crate) feed_seq: i64,
}

/// Everything a merge writes into a document's row.
pub(crate) struct DocumentWrite<'a> {
    /// The document.
    pub(crate) doc_id: DocumentId,
    /// Projected record fields.
    pub(crate) projection: &'a Projection,
    /// Heads after the merge.
    pub(crate) heads: &'a [ChangeHash],
    /// A fresh snapshot, or `None` to keep the stored one.
    pub(crate) snapshot: Option<Snapshot>,
    /// Feed sequence of the document's last change.
    pub(crate) feed_seq: i64,
    /// How many changes this merge added.
    pub(crate) added: i64,
    /// Stored bytes of the changes this merge added.
    pub(crate) added_bytes: i64,
    /// Server time of the merge, milliseconds since the Unix epoch.
    pub(crate) now: i64,
}

/// Whether the document exists and, if so, the feed sequence its stored snapshot covers
/// (0 when it has none).
pub(crate) fn snapshot_seq(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Option<i64>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT snapshot_seq FROM documents WHERE id = ?1")?;
    let row: Option<Option<i64>> =
        statement.query_row([doc_id.as_bytes()], |row| row.get(0)).optional()?;
    Ok(row.map(|snapshot_seq| snapshot_seq.unwrap_or(0)))
}

/// Inserts or updates the document's row; a `None` snapshot keeps the stored one.
///
/// Kind, matter and township are written once, at the first upload, and never change after
/// (SECURITY.md B-35): authorization reads them, so an edit of the record's own `township`
/// field cannot move the document into anyone's scope.
pub(crate) fn upsert(connection: &Connection, write: DocumentWrite<'_>) -> Result<(), StoreError> {
    let (snapshot, snapshot_seq) = match write.snapshot {
        Some(snapshot) => (Some(snapshot.bytes), Some(snapshot.feed_seq)),
        None => (None, None),
    };
    let projection = write.projection;
    let mut statement = connection.prepare_cached(
        "INSERT INTO documents (id, kind, matter, township, party_key, status, heads, snapshot, \
         snapshot_seq, feed_seq, change_count, change_bytes, created_at, updated_at, conflicts, \
         review_state, review_heads, sealed) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13, ?12, ?12, ?14, ?15, ?16, \
         ?17) \
         ON CONFLICT (id) DO UPDATE SET \
         kind = COALESCE(documents.kind, excluded.kind), \
         matter = COALESCE(documents.matter, excluded.matter), \
         township = COALESCE(documents.township, excluded.township), \
         party_key = excluded.party_key, status = excluded.status, heads = excluded.heads, \
         snapshot = COALESCE(excluded.snapshot, documents.snapshot), \
         snapshot_seq = COALESCE(excluded.snapshot_seq, documents.snapshot_seq), \
         feed_seq = excluded.feed_seq, \
         change_count = documents.change_count + excluded.change_count, \
         change_bytes = documents.change_bytes + excluded.change_bytes, \
         updated_at = excluded.updated_at, conflicts = excluded.conflicts, \
         review_state = excluded.review_state, review_heads = excluded.review_heads, \
         sealed = excluded.sealed",
    )?;
    statement.execute(params![
        write.doc_id.as_bytes(),
        projection.kind,
        projection.matter,
        projection.township,
        projection.party_key,
        projection.status,
        hashes_blob(write.heads),
        snapshot,
        snapshot_seq,
        write.feed_seq,
        write.added,
        write.now,
        write.added_bytes,
        projection.conflicts,
        projection.review.state,
        projection.review.heads.as_deref().map(hashes_blob),
        projection.sealed,
    ])?;
    Ok(())
}

/// Loads a stored document: its snapshot, then every later change in one `apply_changes`.
///
/// Call it inside one read transaction (or on the writer) so that the snapshot and the
/// changes come from the same state. Returns `None` for an unknown document.
///
/// # Errors
/// [`StoreError::Corrupt`] when the stored bytes do not load or leave dependencies missing.
pub(crate) fn load(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Option<Automerge>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT snapshot, snapshot_seq FROM documents WHERE id = ?1")?;
    let row: Option<(Option<Vec<u8>>, Option<i64>)> = statement
        .query_row([doc_id.as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((snapshot, snapshot_seq)) = row else { return Ok(None) };
    let corrupt = |reason: String| StoreError::Corrupt { doc_id, reason };
    let mut doc = match snapshot {
        Some(bytes) => Automerge::load_with_options(&bytes, load_options())
            .map_err(|err| corrupt(format!("snapshot: {err}")))?,
        None => empty_document(),
    };
    let later_changes = changes::bytes_after(connection, doc_id, snapshot_seq.unwrap_or(0))?
        .iter()
        .map(|bytes| Change::try_from(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| corrupt(format!("stored change: {err}")))?;
    doc.apply_changes(later_changes).map_err(|err| corrupt(format!("applying changes: {err}")))?;
    let missing = doc.get_missing_deps(&[]);
    if !missing.is_empty() {
        return Err(corrupt(format!("{} dependencies are missing", missing.len())));
    }
    Ok(Some(doc))
}

/// Every visible document (all, or those of `township`), the most recently changed first.
pub(crate) fn list(
    connection: &Connection,
    all: bool,
    township: Option<&str>,
) -> Result<Vec<DocumentSummary>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, kind, status, matter, township, heads, updated_at FROM documents \
         WHERE ?1 OR township = ?2 ORDER BY feed_seq DESC",
    )?;
    let rows = statement.query_map(params![all, township], |row| {
        Ok(DocumentSummary {
            id: doc_id_column(row, 0)?,
            kind: row.get(1)?,
            status: row.get(2)?,
            matter: row.get(3)?,
            township: row.get(4)?,
            heads: hashes_column(row, 5)?,
            updated_at: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored bytes of a document's changes; 0 for an unknown document.
pub(crate) fn change_bytes(connection: &Connection, doc_id: DocumentId) -> Result<i64, StoreError> {
    let mut statement = connection.prepare_cached(CHANGE_BYTES_BY_ID)?;
    Ok(statement.query_row([doc_id.as_bytes()], |row| row.get(0)).optional()?.unwrap_or(0))
}

/// Every document's id and stored heads, in id order, for the consistency check.
pub(crate) fn all_heads(
    connection: &Connection,
) -> Result<Vec<(DocumentId, Vec<ChangeHash>)>, StoreError> {
    let mut statement = connection.prepare("SELECT id, heads FROM documents ORDER BY id")?;
    let rows =
        statement.query_map([], |row| Ok((doc_id_column(row, 0)?, hashes_column(row, 1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored heads of a document; empty when it has no row.
pub(crate) fn heads(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Vec<ChangeHash>, StoreError> {
    let mut statement = connection.prepare_cached("SELECT heads FROM documents WHERE id = ?1")?;
    let heads = statement.query_row([doc_id.as_bytes()], |row| hashes_column(row, 0)).optional()?;
    Ok(heads.unwrap_or_default())
}

/// Whether the document has a row.
pub(crate) fn exists(connection: &Connection, doc_id: DocumentId) -> Result<bool, StoreError> {
    let mut statement = connection.prepare_cached("SELECT 1 FROM documents WHERE id = ?1")?;
    Ok(statement.exists([doc_id.as_bytes()])?)
}

/// A new, empty server-side document.
///
/// UTF-8 text indices match the devices' documents (AUTOMERGE.md P1); the server never edits
/// text, but a view or a future server-authored change then reads indices the same way.
pub(crate) fn empty_document() -> Automerge {
    Automerge::new_with_encoding(TextEncoding::Utf8CodeUnit)
}

fn load_options() -> LoadOptions<'static> {
    LoadOptions::new()
        .on_partial_load(OnPartialLoad::Error)
        .verification_mode(VerificationMode::Check)
        .text_encoding(TextEncoding::Utf8CodeUnit)
}
