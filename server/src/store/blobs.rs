//! SQL on evidence blobs: the row written once a blob's bytes are stored and verified, and the
//! `document_blobs` projection of which documents reference which blob.
//!
//! A `blobs` row exists only for a complete, hash-verified file (the bytes live under
//! `<data-dir>/blobs`, see `blob_files`); rows are never changed or deleted (triggers).
//! `document_blobs` only grows: a withdrawn evidence item stays in its record, so its blob
//! stays referenced.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};
use sync_core::ids::DocumentId;

use crate::store::StoreError;

/// Who stored a blob, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewBlob {
    /// Hex SHA-256 of the bytes.
    pub(crate) sha256: String,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Server time, milliseconds since the Unix epoch.
    pub(crate) created_at: i64,
    /// The uploading device.
    pub(crate) device: Option<String>,
    /// Its officer.
    pub(crate) officer: Option<String>,
}

/// Records a stored blob; a blob stored before keeps its first row.
pub(crate) fn insert(connection: &Connection, blob: &NewBlob) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO blobs (sha256, size, created_at, device, officer) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            blob.sha256,
            i64::try_from(blob.size).unwrap_or(i64::MAX),
            blob.created_at,
            blob.device,
            blob.officer,
        ])?;
    Ok(())
}

/// The size of a stored blob, or `None` when the server does not hold it whole.
pub(crate) fn size(connection: &Connection, sha256: &str) -> Result<Option<u64>, StoreError> {
    let size: Option<i64> = connection
        .prepare_cached("SELECT size FROM blobs WHERE sha256 = ?1")?
        .query_row([sha256], |row| row.get(0))
        .optional()?;
    Ok(size.map(|size| u64::try_from(size).unwrap_or_default()))
}

/// Which of `hashes` the server holds.
pub(crate) fn present(
    connection: &Connection,
    hashes: &[String],
) -> Result<HashSet<String>, StoreError> {
    let mut statement = connection.prepare_cached("SELECT 1 FROM blobs WHERE sha256 = ?1")?;
    let mut present = HashSet::new();
    for sha256 in hashes {
        if statement.exists([sha256])? {
            present.insert(sha256.clone());
        }
    }
    Ok(present)
}

/// Records that a document references these blobs (its evidence list at this merge).
pub(crate) fn link_document(
    connection: &Connection,
    doc_id: DocumentId,
    hashes: &[String],
) -> Result<(), StoreError> {
    let mut statement = connection
        .prepare_cached("INSERT OR IGNORE INTO document_blobs (doc_id, sha256) VALUES (?1, ?2)")?;
    for sha256 in hashes {
        statement.execute(params![doc_id.as_bytes(), sha256])?;
    }
    Ok(())
}

/// Whether a document visible with (`all`, `township`) references the blob.
pub(crate) fn referenced_by_visible(
    connection: &Connection,
    sha256: &str,
    all: bool,
    township: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT 1 FROM document_blobs b JOIN documents d ON d.id = b.doc_id \
             WHERE b.sha256 = ?1 AND (?2 OR d.township = ?3)",
        )?
        .exists(params![sha256, all, township])?)
}
