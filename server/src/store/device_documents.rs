//! SQL on which documents each device holds: those the server delivered to it or received
//! from it, so that a sync can tell the device which of them it may no longer see (`evict`).
//!
//! Looking for such documents reads every document the device holds (10,000 in scenario C of
//! BENCHMARKS.md), so it runs only when the device's visibility changed: `device_visibility`
//! marks the visibility under which every document the device holds is visible. Each write
//! keeps that true: an eviction sets the mark in the transaction that forgets the rest, and
//! recording documents under another visibility than the mark's removes the mark (documents'
//! townships never change once set), so that the next sync looks again.

use rusqlite::{Connection, params};
use sync_core::ids::DocumentId;

use crate::store::StoreError;
use crate::store::changes::doc_id_column;

/// Records that the device holds these documents, delivered to it or received from it under
/// the visibility `all`, `township`.
pub(crate) fn record(
    connection: &Connection,
    device: &str,
    doc_ids: impl IntoIterator<Item = DocumentId>,
    all: bool,
    township: Option<&str>,
) -> Result<(), StoreError> {
    let mut statement = connection.prepare_cached(
        "INSERT OR IGNORE INTO device_documents (device, doc_id) VALUES (?1, ?2)",
    )?;
    let mut recorded = false;
    for doc_id in doc_ids {
        statement.execute(params![device, doc_id.as_bytes()])?;
        recorded = true;
    }
    if recorded {
        // Documents of another visibility than the mark's: the next sync must look again.
        connection
            .prepare_cached(
                "DELETE FROM device_visibility \
                 WHERE device = ?1 AND NOT (all_docs = ?2 AND township IS ?3)",
            )?
            .execute(params![device, all, township])?;
    }
    Ok(())
}

/// Whether every document the device holds is known to be visible under `all`, `township`:
/// then nothing is to evict, and [`evictable`] need not read them.
pub(crate) fn all_visible(
    connection: &Connection,
    device: &str,
    all: bool,
    township: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM device_visibility \
             WHERE device = ?1 AND all_docs = ?2 AND township IS ?3)",
        )?
        .query_row(params![device, all, township], |row| row.get(0))?)
}

/// Whether the device holds the document: the server delivered it, or the device wrote to it.
pub(crate) fn holds(
    connection: &Connection,
    device: &str,
    doc_id: DocumentId,
) -> Result<bool, StoreError> {
    Ok(connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM device_documents WHERE device = ?1 AND doc_id = ?2) \
             OR EXISTS (SELECT 1 FROM changes WHERE doc_id = ?2 AND device = ?1)",
        params![device, doc_id.as_bytes()],
        |row| row.get(0),
    )?)
}

/// The documents the device holds but can no longer see (visibility `all`, `township`),
/// forgotten for the device as they are returned, in id order; marks the visibility, so that
/// the next sync under it reads nothing. Call it on the writer.
pub(crate) fn evict(
    connection: &Connection,
    device: &str,
    all: bool,
    township: Option<&str>,
) -> Result<Vec<DocumentId>, StoreError> {
    if all_visible(connection, device, all, township)? {
        return Ok(Vec::new());
    }
    let evicted = evictable(connection, device, all, township)?;
    forget(connection, device, &evicted)?;
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO device_visibility (device, all_docs, township) \
             VALUES (?1, ?2, ?3)",
        )?
        .execute(params![device, all, township])?;
    Ok(evicted)
}

/// The documents the device holds but can no longer see (visibility `all`, `township`), in
/// id order; reads every document the device holds.
fn evictable(
    connection: &Connection,
    device: &str,
    all: bool,
    township: Option<&str>,
) -> Result<Vec<DocumentId>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT dd.doc_id FROM device_documents dd JOIN documents d ON d.id = dd.doc_id \
         WHERE dd.device = ?1 AND NOT (?2 OR d.township IS ?3 AND ?3 IS NOT NULL) \
         ORDER BY dd.doc_id",
    )?;
    let rows = statement.query_map(params![device, all, township], |row| doc_id_column(row, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets that the device holds these documents (they were evicted).
fn forget(connection: &Connection, device: &str, doc_ids: &[DocumentId]) -> Result<(), StoreError> {
    let mut statement = connection
        .prepare_cached("DELETE FROM device_documents WHERE device = ?1 AND doc_id = ?2")?;
    for doc_id in doc_ids {
        statement.execute(params![device, doc_id.as_bytes()])?;
    }
    Ok(())
}
