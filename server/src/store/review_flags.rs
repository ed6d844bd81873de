//! SQL on the review flags: merged changes a supervisor must look at, each with its reason.
//!
//! A change is flagged when it was merged but its authorship needs a second look (SECURITY.md
//! §a): `needs_review` when a device uploaded it after its officer's certificate was withdrawn
//! while its causal bound places it before the withdrawal (B-18), `clock_suspect` when the time
//! the device stamped on it lies outside its causal bounds (B-38). A flag never changes the
//! merged value. Every flag code is also a finding code of its document in `document_findings`,
//! so the review queue filters on it; `findings::project` keeps it there at every merge.

use automerge::ChangeHash;
use rusqlite::{Connection, params};
use sync_core::ids::DocumentId;

use crate::store::StoreError;
use crate::store::changes::hash_column;

/// An edit uploaded after the certificate was withdrawn, made before it as far as the server
/// can tell: merged, for a supervisor to confirm.
pub(crate) const NEEDS_REVIEW: &str = "needs_review";

/// A device time outside [causal lower bound − 10 min, receipt + 10 min].
pub(crate) const CLOCK_SUSPECT: &str = "clock_suspect";

/// One flag on one merged change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReviewFlag {
    /// The flagged change.
    pub(crate) hash: ChangeHash,
    /// [`NEEDS_REVIEW`] or [`CLOCK_SUSPECT`].
    pub(crate) code: String,
    /// Why, in one English sentence with the times involved.
    pub(crate) detail: String,
    /// Server time the flag was raised, ms.
    pub(crate) created_at: i64,
}

/// Flags one change of a document (once per code) and adds the code to the document's
/// findings.
pub(crate) fn insert(
    connection: &Connection,
    doc_id: DocumentId,
    hash: &ChangeHash,
    code: &str,
    detail: &str,
    created_at: i64,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO review_flags (doc_id, hash, code, detail, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![doc_id.as_bytes(), hash.0.as_slice(), code, detail, created_at])?;
    connection
        .prepare_cached("INSERT OR IGNORE INTO document_findings (doc_id, code) VALUES (?1, ?2)")?
        .execute(params![doc_id.as_bytes(), code])?;
    Ok(())
}

/// The flags of a document, oldest first.
pub(crate) fn list(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Vec<ReviewFlag>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT hash, code, detail, created_at FROM review_flags WHERE doc_id = ?1 ORDER BY id",
    )?;
    let rows = statement.query_map([doc_id.as_bytes()], |row| {
        Ok(ReviewFlag {
            hash: hash_column(row, 0)?,
            code: row.get(1)?,
            detail: row.get(2)?,
            created_at: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The distinct flag codes of a document.
pub(crate) fn codes(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Vec<String>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT DISTINCT code FROM review_flags WHERE doc_id = ?1 ORDER BY code")?;
    let rows = statement.query_map([doc_id.as_bytes()], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
