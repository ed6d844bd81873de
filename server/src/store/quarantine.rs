//! SQL on the quarantine: changes kept for review instead of merged, never dropped.
//!
//! A device whose officer moved to another township may still hold edits to a document of the
//! old township that it made while it was allowed to. Merging them would let a device write
//! outside its scope; dropping them would lose an officer's work. They are kept here, with
//! their attribution, for a supervisor to review.

use automerge::Change;
use rusqlite::{Connection, params};
use sync_core::ids::DocumentId;

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
