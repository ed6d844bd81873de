//! SQL on the quarantine: changes kept for review instead of merged, never dropped.
//!
//! A device whose officer moved to another township may still hold edits to a document of the
//! old township that it made while it was allowed to. Merging them would let a device write
//! outside its scope; dropping them would lose an officer's work. They are kept here, with
//! their attribution, for a supervisor to review. So are the changes a device makes to a record
//! a supervisor approved (sealed, docs/review.md): `record_locked`.

use automerge::{Change, ChangeHash};
use rusqlite::{Connection, params};
use sync_core::ids::DocumentId;

use crate::store::changes::hash_column;
use crate::store::{Attribution, StoreError};

/// Keeps the changes of one document in quarantine (each once) and returns how many were new.
pub(crate) fn insert(
    connection: &Connection,
    doc_id: DocumentId,
    changes: &mut [Change],
    attribution: &Attribution,
    reason: &str,
    received_at: i64,
) -> Result<usize, StoreError> {
    let mut statement = connection.prepare_cached(
        "INSERT OR IGNORE INTO quarantine \
         (doc_id, hash, bytes, device, officer, certificate, reason, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut inserted = 0;
    for change in changes {
        inserted += statement.execute(params![
            doc_id.as_bytes(),
            change.hash().0.as_slice(),
            change.bytes().as_ref(),
            attribution.device,
            attribution.officer,
            attribution.certificate,
            reason,
            received_at,
        ])?;
    }
    Ok(inserted)
}

/// One quarantined change, as the review view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuarantinedChange {
    /// The change hash.
    pub(crate) hash: ChangeHash,
    /// The uploading device.
    pub(crate) device: Option<String>,
    /// Its officer.
    pub(crate) officer: Option<String>,
    /// Why the change was not merged.
    pub(crate) reason: String,
    /// Server time of receipt, ms.
    pub(crate) received_at: i64,
}

/// Whether the change is held in quarantine for the document.
pub(crate) fn holds(
    connection: &Connection,
    doc_id: DocumentId,
    hash: &ChangeHash,
) -> Result<bool, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT 1 FROM quarantine WHERE doc_id = ?1 AND hash = ?2")?;
    Ok(statement.exists(params![doc_id.as_bytes(), hash.0.as_slice()])?)
}

/// The quarantined changes of a document, oldest first.
pub(crate) fn list(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Vec<QuarantinedChange>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT hash, device, officer, reason, received_at FROM quarantine WHERE doc_id = ?1 \
         ORDER BY id",
    )?;
    let rows = statement.query_map([doc_id.as_bytes()], |row| {
        Ok(QuarantinedChange {
            hash: hash_column(row, 0)?,
            device: row.get(1)?,
            officer: row.get(2)?,
            reason: row.get(3)?,
            received_at: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
