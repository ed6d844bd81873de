//! `fieldcase-server check`: the consistency check of a data directory's database.
//!
//! The change log is the truth and every document row a cache of it, so the check rebuilds
//! each document from its changes alone (and its creation, which holds the bytes of the
//! changes a document chunk brought) and compares the heads with the row's `heads` and with
//! the document loaded from its snapshot and later changes, after SQLite's own
//! `integrity_check`. It reads in one read transaction, so it can run beside a live server
//! (WAL readers) or on a stopped one, and never writes.

use std::path::Path;

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use rusqlite::Connection;
use serde::Serialize;
use sync_core::ids::DocumentId;

use crate::store::{StoreError, changes, creations, documents, schema};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// `ok`, or the problems `PRAGMA integrity_check` listed.
    pub integrity: String,
    /// Documents checked.
    pub documents: usize,
    /// Rows in the change log.
    pub changes: i64,
    /// Every document whose stored state disagrees with its change log.
    pub mismatches: Vec<Mismatch>,
}

impl CheckReport {
    /// Whether the database passed: integrity ok and no mismatch.
    pub fn passed(&self) -> bool {
        self.integrity == "ok" && self.mismatches.is_empty()
    }
}

/// One document whose stored state disagrees with its change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The document id.
    pub doc: String,
    /// What disagrees.
    pub problem: String,
}

/// Checks the database file at `path`, read-only.
///
/// # Errors
/// Fails when the file cannot be opened or read at all (a missing file among others); a
/// file that opens but is damaged is a report, not an error.
pub fn check_database(path: &Path) -> Result<CheckReport, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Io(format!("{} is not a database file", path.display())));
    }
    let mut connection = schema::open_reader(path)?;
    let tx = connection.transaction()?;
    let report = check_connection(&tx)?;
    tx.commit()?;
    Ok(report)
}

fn check_connection(connection: &Connection) -> Result<CheckReport, StoreError> {
    let problems: Vec<String> = {
        let mut statement = connection.prepare("PRAGMA integrity_check")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let integrity = if problems == ["ok"] { "ok".to_owned() } else { problems.join("; ") };
    let change_rows: i64 =
        connection.query_row("SELECT COUNT(*) FROM changes", [], |row| row.get(0))?;
    let stored = documents::all_heads(connection)?;
    let mut mismatches = Vec::new();
    for (doc_id, stored_heads) in &stored {
        if let Err(problem) = check_document(connection, *doc_id, stored_heads)? {
            mismatches.push(Mismatch { doc: doc_id.to_string(), problem });
        }
    }
    Ok(CheckReport { integrity, documents: stored.len(), changes: change_rows, mismatches })
}

/// `Ok(Err(problem))` when the document disagrees with its change log.
fn check_document(
    connection: &Connection,
    doc_id: DocumentId,
    stored_heads: &[ChangeHash],
) -> Result<Result<(), String>, StoreError> {
    // A document chunk's changes are logged without their bytes, which its creation holds.
    // The feed sequences its creation holds: none (an empty range) without one.
    let (mut rebuilt, (first, last)) = match creations::of_document(connection, doc_id)? {
        None => (documents::empty_document(), (0, -1)),
        Some(creation) => {
            let Ok(created) = Automerge::load(&creation.bytes) else {
                return Ok(Err("its creation does not load".to_owned()));
            };
            let first = i64::try_from(creation.first_feed_seq).unwrap_or(i64::MAX);
            let last = i64::try_from(creation.last_feed_seq).unwrap_or(i64::MAX);
            let logged = changes::hashes_between(connection, doc_id, first, last)?;
            let saved: Vec<ChangeHash> =
                created.get_changes_meta(&[]).into_iter().map(|change| change.hash).collect();
            if sorted(saved) != sorted(logged) {
                return Ok(Err("its creation holds other changes than the log's".to_owned()));
            }
            (created, (first, last))
        }
    };
    if changes::without_bytes_outside(connection, doc_id, first, last)? > 0 {
        return Ok(Err("a logged change has no bytes and no creation holds it".to_owned()));
    }
    let logged = changes::bytes_after(connection, doc_id, 0)?;
    let parsed: Result<Vec<Change>, _> = logged
        .iter()
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| Change::try_from(bytes.as_slice()))
        .collect();
    let log_changes = match parsed {
        Ok(log_changes) => log_changes,
        Err(err) => return Ok(Err(format!("a logged change does not parse: {err}"))),
    };
    if let Err(err) = rebuilt.apply_changes(log_changes) {
        return Ok(Err(format!("the change log does not apply: {err}")));
    }
    if !rebuilt.get_missing_deps(&[]).is_empty() {
        return Ok(Err("the change log lacks dependencies of its changes".to_owned()));
    }
    let log_heads = sorted(rebuilt.get_heads());
    if sorted(stored_heads.to_vec()) != log_heads {
        return Ok(Err("documents.heads differ from the heads of the change log".to_owned()));
    }
    let loaded = match documents::load(connection, doc_id) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Ok(Err("the document row vanished".to_owned())),
        Err(StoreError::Corrupt { reason, .. }) => {
            return Ok(Err(format!("the snapshot and later changes do not load: {reason}")));
        }
        Err(err) => return Err(err),
    };
    if sorted(loaded.get_heads()) != log_heads {
        return Ok(Err(
            "the snapshot and later changes differ from the heads of the change log".to_owned()
        ));
    }
    Ok(Ok(()))
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort_unstable();
    heads
}
