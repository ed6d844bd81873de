//! SQL on the creations: each document saved once, as the upload that created it left it.
//!
//! For a document created by a document chunk this is where its changes' bytes are: their
//! change-log rows store none, since listing the changes of a loaded document encodes every
//! operation again (`sync_core::merge::LoadedDocument`). The document's first snapshot is the
//! same bytes, and `check` rebuilds the document from its creation and its later changes.
//!
//! A device that has none of a document's changes (its cursor is before the first of them)
//! would otherwise download them one by one: in a first sync of a township, every device
//! downloads every other device's records, so that is most of the feed. The saved document is
//! under half of its change chunks' bytes, one row instead of one per change, and one load
//! on the device instead of an apply per change. The row is written in the transaction that
//! appends the changes it holds, which have consecutive feed sequences, and never changed
//! after (the table is append-only), so a feed page stays a function of its bounds.

use rusqlite::{Connection, OptionalExtension, params};
use sync_core::ids::DocumentId;

use crate::store::StoreError;
use crate::store::changes::doc_id_column;

/// A created document, as the feed sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creation {
    /// The document.
    pub(crate) doc_id: DocumentId,
    /// The feed sequence of the first change it holds.
    pub(crate) first_feed_seq: u64,
    /// The feed sequence of the last change it holds.
    pub(crate) last_feed_seq: u64,
    /// The saved document (`Automerge::save`): exactly the changes from `first_feed_seq` to
    /// `last_feed_seq`.
    pub(crate) bytes: Vec<u8>,
}

/// Records that the changes `first_feed_seq..=last_feed_seq`, all of them `doc_id`'s and all
/// it holds, were saved as `bytes`.
pub(crate) fn insert(
    connection: &Connection,
    doc_id: DocumentId,
    first_feed_seq: i64,
    last_feed_seq: i64,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO creations (first_feed_seq, last_feed_seq, doc_id, bytes) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    statement.execute(params![first_feed_seq, last_feed_seq, doc_id.as_bytes(), bytes])?;
    Ok(())
}

/// The document whose creation starts at `first_feed_seq`, if that change created one.
pub(crate) fn starting_at(
    connection: &Connection,
    first_feed_seq: u64,
) -> Result<Option<Creation>, StoreError> {
    let Ok(first_feed_seq) = i64::try_from(first_feed_seq) else { return Ok(None) };
    let mut statement = connection.prepare_cached(
        "SELECT doc_id, first_feed_seq, last_feed_seq, bytes FROM creations \
         WHERE first_feed_seq = ?1",
    )?;
    Ok(statement.query_row([first_feed_seq], creation_row).optional()?)
}

/// The creation holding the change at `feed_seq`, if a creation holds it.
pub(crate) fn covering(
    connection: &Connection,
    feed_seq: u64,
) -> Result<Option<Creation>, StoreError> {
    let Ok(feed_seq) = i64::try_from(feed_seq) else { return Ok(None) };
    let mut statement = connection.prepare_cached(
        "SELECT doc_id, first_feed_seq, last_feed_seq, bytes FROM creations \
         WHERE first_feed_seq <= ?1 ORDER BY first_feed_seq DESC LIMIT 1",
    )?;
    let creation = statement.query_row([feed_seq], creation_row).optional()?;
    Ok(creation.filter(|creation| creation.last_feed_seq >= u64::try_from(feed_seq).unwrap_or(0)))
}

/// A document's creation, if it has one.
pub(crate) fn of_document(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Option<Creation>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT doc_id, first_feed_seq, last_feed_seq, bytes FROM creations WHERE doc_id = ?1",
    )?;
    Ok(statement.query_row([doc_id.as_bytes()], creation_row).optional()?)
}

/// Reads `doc_id, first_feed_seq, last_feed_seq, bytes`.
fn creation_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Creation> {
    let feed_seq = |index| row.get::<_, i64>(index).map(|seq| u64::try_from(seq).unwrap_or(0));
    Ok(Creation {
        doc_id: doc_id_column(row, 0)?,
        first_feed_seq: feed_seq(1)?,
        last_feed_seq: feed_seq(2)?,
        bytes: row.get(3)?,
    })
}
