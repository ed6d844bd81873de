//! SQL on which documents each device holds: those the server delivered to it or received
//! from it, so that a sync can tell the device which of them it may no longer see (`evict`).

use rusqlite::{Connection, params};
use sync_core::ids::DocumentId;

use crate::store::StoreError;
use crate::store::changes::doc_id_column;

/// Records that the device holds these documents.
pub(crate) fn record(
    connection: &Connection,
    device: &str,
    doc_ids: impl IntoIterator<Item = DocumentId>,
) -> Result<(), StoreError> {
    let mut statement = connection.prepare_cached(
        "INSERT OR IGNORE INTO device_documents (device, doc_id) VALUES (?1, ?2)",
    )?;
    for doc_id in doc_ids {
        statement.execute(params![device, doc_id.as_bytes()])?;
    }
    Ok(())
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
/// forgotten for the device as they are returned, in id order.
pub(crate) fn evict(
    connection: &Connection,
    device: &str,
    all: bool,
    township: Option<&str>,
) -> Result<Vec<DocumentId>, StoreError> {
    let evicted = evictable(connection, device, all, township)?;
    forget(connection, device, &evicted)?;
    Ok(evicted)
}

/// The documents the device holds but can no longer see (visibility `all`, `township`), in
/// id order; a read, so that a pull-only sync can list them on a pooled reader.
pub(crate) fn evictable(
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
pub(crate) fn forget(
    connection: &Connection,
    device: &str,
    doc_ids: &[DocumentId],
) -> Result<(), StoreError> {
    let mut statement = connection
        .prepare_cached("DELETE FROM device_documents WHERE device = ?1 AND doc_id = ?2")?;
    for doc_id in doc_ids {
        statement.execute(params![device, doc_id.as_bytes()])?;
    }
    Ok(())
}
