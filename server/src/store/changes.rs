//! SQL on the append-only change log: inserting merged changes, the feed devices pull from,
//! the changes a document load replays, and a document's history.
//!
//! `feed_seq` is the server feed sequence: it only grows, so a device that has applied every
//! change up to some `feed_seq` (its cursor) needs exactly the rows after it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use automerge::{ActorId, Automerge, ChangeHash};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};
use sync_core::ids::DocumentId;
use sync_core::merge::{ChangeFacts, ReceivedChange};
use sync_core::protocol::DocUpdate;

use crate::store::{Attribution, StoreError, creations};

/// One change in a document's history, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistoryEntry {
    /// Position in the server feed.
    pub(crate) feed_seq: i64,
    /// The change hash.
    pub(crate) hash: ChangeHash,
    /// The Automerge actor that wrote the change.
    pub(crate) actor: ActorId,
    /// The actor's sequence number of the change.
    pub(crate) seq: i64,
    /// The changes this one depends on.
    pub(crate) deps: Vec<ChangeHash>,
    /// The uploading device.
    pub(crate) device: Option<String>,
    /// The uploading device's officer.
    pub(crate) officer: Option<String>,
    /// The officer's certificate at upload time.
    pub(crate) certificate: Option<String>,
    /// Server time of receipt, milliseconds since the Unix epoch.
    pub(crate) received_at: i64,
    /// The time the device stamped on the change (informational: device clocks drift).
    pub(crate) device_time: Option<i64>,
    /// The commit message, if the device wrote one.
    pub(crate) message: Option<String>,
}

/// A page of the feed after a device's cursor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Feed {
    /// Changes grouped by document, documents in order of their first change in the feed.
    pub(crate) updates: Vec<DocUpdate>,
    /// The feed sequence the device has reached once it applied `updates`.
    pub(crate) cursor: u64,
    /// The page stopped at the byte budget: more changes are waiting after `cursor`.
    pub(crate) more: bool,
}

/// Rows per multi-row `INSERT`: 12 parameters each, far below SQLite's 32,766 variables.
const INSERT_ROWS: usize = 64;

/// The columns of one inserted change, in statement order.
const INSERT_COLUMNS: &str = "(hash, doc_id, actor, seq, deps, bytes, message, device_time, \
     received_at, device, officer, certificate)";

/// Appends a document's new changes, whose stored bytes (`Change::bytes`) are `encoded` (one
/// entry per change, in order; empty for a change of a document chunk, whose creation holds
/// it: `store::creations`), and returns the feed sequence of the last one (0 for none).
///
/// The changes go in by multi-row `INSERT`s of up to [`INSERT_ROWS`]: one statement step per
/// row cost about as much as the B-tree work itself (BENCHMARKS.md). The caller passes the
/// bytes it encoded once for the quota, so that no change is encoded or copied twice. Feed
/// sequences follow the order of `changes`, as with one `INSERT` per change.
///
/// # Errors
/// [`StoreError::DuplicateChange`] when a change is already stored (for another document,
/// since the merge skips changes the document holds: then its root is, `changes_root`); the
/// failed statement wrote nothing and the writer rolls the rest of the job back.
pub(crate) fn insert_all(
    connection: &Connection,
    doc_id: DocumentId,
    changes: &[ChangeFacts],
    encoded: &[Vec<u8>],
    received_at: i64,
    attribution: &Attribution,
) -> Result<i64, StoreError> {
    debug_assert_eq!(changes.len(), encoded.len());
    let mut last = 0;
    let mut start = 0;
    while start < changes.len() {
        // Batches of a power of two rows, so that at most seven statements stay cached.
        let remaining = changes.len() - start;
        let rows = INSERT_ROWS.min(1 << remaining.ilog2());
        let end = start + rows;
        last = insert_batch(
            connection,
            doc_id,
            &changes[start..end],
            &encoded[start..end],
            received_at,
            attribution,
        )?;
        start = end;
    }
    Ok(last)
}

/// One multi-row `INSERT` of up to [`INSERT_ROWS`] changes.
fn insert_batch(
    connection: &Connection,
    doc_id: DocumentId,
    changes: &[ChangeFacts],
    encoded: &[Vec<u8>],
    received_at: i64,
    attribution: &Attribution,
) -> Result<i64, StoreError> {
    let mut rows = Vec::with_capacity(changes.len());
    for change in changes {
        let hash = change.hash;
        let seq = i64::try_from(change.seq).map_err(|_| StoreError::Unstorable {
            hash: hash.to_string(),
            reason: "sequence number exceeds 2^63".to_owned(),
        })?;
        rows.push(InsertRow {
            hash,
            deps: hashes_blob(&change.deps),
            actor: change.actor.to_bytes(),
            seq,
            device_time: change.timestamp,
            message: change.message.as_deref(),
        });
    }
    let placeholders = vec!["(?,?,?,?,?,?,?,?,?,?,?,?)"; rows.len()].join(",");
    // One cached statement per batch size.
    let mut statement = connection
        .prepare_cached(&format!("INSERT INTO changes {INSERT_COLUMNS} VALUES {placeholders}"))?;
    let doc = doc_id.as_bytes();
    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 12);
    for (row, bytes) in rows.iter().zip(encoded) {
        values.extend_from_slice(&[
            &row.hash.0,
            &doc,
            &row.actor,
            &row.seq,
            &row.deps,
            bytes,
            &row.message,
            &row.device_time,
            &received_at,
            &attribution.device,
            &attribution.officer,
            &attribution.certificate,
        ]);
    }
    match statement.execute(values.as_slice()) {
        Ok(_) => Ok(connection.last_insert_rowid()),
        Err(err) if is_unique_violation(&err) => {
            // Name the root stored for another document (the merge skips changes the document
            // holds, so that is the constraint that failed); the statement wrote nothing.
            let duplicate = rows
                .iter()
                .find(|row| {
                    row.deps.is_empty() && is_stored_root(connection, &row.hash).unwrap_or(true)
                })
                .unwrap_or(&rows[0]);
            Err(StoreError::DuplicateChange { hash: duplicate.hash.to_string() })
        }
        Err(err) => Err(err.into()),
    }
}

/// The computed columns of one change to insert.
struct InsertRow<'a> {
    hash: ChangeHash,
    deps: Vec<u8>,
    actor: &'a [u8],
    seq: i64,
    device_time: i64,
    message: Option<&'a str>,
}

/// Whether a root change with this hash is stored, for any document (`changes_root`).
fn is_stored_root(connection: &Connection, hash: &ChangeHash) -> Result<bool, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT 1 FROM changes WHERE hash = ?1 AND deps = x''")?;
    Ok(statement.exists([hash.0.as_slice()])?)
}

/// The stored bytes of a document's changes after `after_feed_seq`, in feed order.
pub(crate) fn bytes_after(
    connection: &Connection,
    doc_id: DocumentId,
    after_feed_seq: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT bytes FROM changes WHERE doc_id = ?1 AND feed_seq > ?2 ORDER BY feed_seq",
    )?;
    let rows = statement.query_map(params![doc_id.as_bytes(), after_feed_seq], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The hashes of a document's changes from `first` to `last` feed sequence.
pub(crate) fn hashes_between(
    connection: &Connection,
    doc_id: DocumentId,
    first: i64,
    last: i64,
) -> Result<Vec<ChangeHash>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT hash FROM changes WHERE doc_id = ?1 AND feed_seq BETWEEN ?2 AND ?3",
    )?;
    let rows =
        statement.query_map(params![doc_id.as_bytes(), first, last], |row| hash_column(row, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many of a document's changes are logged without bytes outside the feed sequences
/// `first..=last` (those its creation holds).
pub(crate) fn without_bytes_outside(
    connection: &Connection,
    doc_id: DocumentId,
    first: i64,
    last: i64,
) -> Result<i64, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT COUNT(*) FROM changes WHERE doc_id = ?1 AND length(bytes) = 0 \
         AND feed_seq NOT BETWEEN ?2 AND ?3",
    )?;
    Ok(statement.query_row(params![doc_id.as_bytes(), first, last], |row| row.get(0))?)
}

/// How many of a document's changes come after `after_feed_seq`.
pub(crate) fn count_after(
    connection: &Connection,
    doc_id: DocumentId,
    after_feed_seq: i64,
) -> Result<i64, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT COUNT(*) FROM changes WHERE doc_id = ?1 AND feed_seq > ?2")?;
    Ok(statement.query_row(params![doc_id.as_bytes(), after_feed_seq], |row| row.get(0))?)
}

/// The changes after `cursor` of the visible documents (every document when `all`, else those
/// whose stored township is `township`), without those in `skip`, up to about `byte_budget`
/// bytes.
///
/// The feed stays one ordered scan of the change log; each document's visibility is looked up
/// once per page, when its first change comes by (a join looked it up for every change, and
/// reading the document's row, which holds its snapshot, was half of the feed's cost in
/// scenario C). The cursor still advances past invisible changes.
///
/// Call it inside one read transaction: the cursor of a complete page is the highest feed
/// sequence of that same snapshot, so a change committed meanwhile is not skipped. A page
/// always holds at least one change when any is due, so a change larger than the budget
/// cannot stall a device.
pub(crate) fn feed_after(
    connection: &Connection,
    cursor: u64,
    skip: &HashSet<ChangeHash>,
    byte_budget: usize,
    all: bool,
    township: Option<&str>,
    whole_documents: bool,
) -> Result<Feed, StoreError> {
    let last_feed_seq = last_feed_seq(connection)?;
    feed_until(connection, cursor, last_feed_seq, skip, byte_budget, all, township, whole_documents)
}

/// The highest feed sequence of the connection's snapshot (0 for an empty log).
pub(crate) fn last_feed_seq(connection: &Connection) -> Result<u64, StoreError> {
    let last: i64 =
        connection
            .query_row("SELECT COALESCE(MAX(feed_seq), 0) FROM changes", [], |row| row.get(0))?;
    Ok(u64::try_from(last).unwrap_or(0))
}

/// [`feed_after`] as of the moment the log ended at `last_feed_seq`: rows after it are not
/// read, and a complete page's cursor is `last_feed_seq`.
///
/// The rows up to a committed `last_feed_seq` never change (the log is append-only and a
/// document's township is written once), so the same arguments give the same page, byte for
/// byte, on any later snapshot: a stored sync answer keeps these arguments instead of the
/// page (`store::idempotency::FeedBounds`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn feed_until(
    connection: &Connection,
    cursor: u64,
    last_feed_seq: u64,
    skip: &HashSet<ChangeHash>,
    byte_budget: usize,
    all: bool,
    township: Option<&str>,
    whole_documents: bool,
) -> Result<Feed, StoreError> {
    let last_feed_seq = i64::try_from(last_feed_seq).unwrap_or(i64::MAX);
    let mut statement = connection.prepare_cached(
        "SELECT feed_seq, doc_id, hash, bytes FROM changes \
         WHERE feed_seq > ?1 AND feed_seq <= ?2 ORDER BY feed_seq",
    )?;
    // Feed sequences only grow, so a cursor past the end of the feed was handed out before the
    // database was restored from a backup: send that device everything it may see again.
    let restored = i64::try_from(cursor).map_or(true, |cursor| cursor > last_feed_seq);
    let cursor = if restored { 0 } else { cursor };
    let mut visible: HashMap<DocumentId, bool> = HashMap::new();
    let mut updates: Vec<DocUpdate> = Vec::new();
    let mut positions: HashMap<DocumentId, usize> = HashMap::new();
    let mut page_bytes = 0;
    // The feed sequence of the last row this page accounts for, sent or skipped.
    let mut reached = cursor;
    // The scan starts again after a document sent whole, past the rows it stands for.
    'scan: loop {
        let mut rows =
            statement.query(params![i64::try_from(reached).unwrap_or(i64::MAX), last_feed_seq])?;
        while let Some(row) = rows.next()? {
            let feed_seq = feed_seq_column(row, 0)?;
            let doc_id = doc_id_column(row, 1)?;
            let sees = all
                || match visible.entry(doc_id) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        *entry.insert(in_township(connection, doc_id, township)?)
                    }
                };
            // The device's own upload of this round is not sent back, whole or in part.
            if !sees || skip.contains(&hash_column(row, 2)?) {
                reached = feed_seq;
                continue;
            }
            // A document's first change is the first thing this device gets of it: send the
            // document as its creating upload left it, for every change that upload held. A
            // document already on the page was looked up at its first row there.
            let whole = if whole_documents && !positions.contains_key(&doc_id) {
                creations::starting_at(connection, feed_seq)?
                    .filter(|creation| creation.doc_id == doc_id)
            } else {
                None
            };
            let (chunks, through) = match whole {
                Some(creation) => (vec![creation.bytes], creation.last_feed_seq),
                None => {
                    let bytes: Vec<u8> = row.get(3)?;
                    if bytes.is_empty() {
                        // A change of a document chunk, whose creation holds its bytes: reached
                        // past the document's first change (a round that uploaded only that
                        // one), it brings the document whole.
                        let creation = creations::covering(connection, feed_seq)?
                            .filter(|creation| creation.doc_id == doc_id)
                            .ok_or_else(|| StoreError::Corrupt {
                                doc_id,
                                reason: format!("change {feed_seq} has no bytes and no creation"),
                            })?;
                        let chunks = if whole_documents {
                            vec![creation.bytes]
                        } else {
                            change_chunks_of(doc_id, &creation.bytes)?
                        };
                        (chunks, creation.last_feed_seq)
                    } else {
                        (vec![bytes], feed_seq)
                    }
                }
            };
            let size: usize = chunks.iter().map(Vec::len).sum();
            if page_bytes > 0 && page_bytes + size > byte_budget {
                return Ok(Feed { updates, cursor: reached, more: true });
            }
            page_bytes += size;
            let position = *positions.entry(doc_id).or_insert_with(|| {
                updates.push(DocUpdate { doc_id, changes: Vec::new() });
                updates.len() - 1
            });
            updates[position].changes.extend(chunks);
            reached = through;
            if through > feed_seq {
                continue 'scan;
            }
        }
        break;
    }
    let cursor = u64::try_from(last_feed_seq).expect("feed sequences are positive");
    Ok(Feed { updates, cursor, more: false })
}

/// The change chunks of a saved document, for a device that reads no document whole.
fn change_chunks_of(doc_id: DocumentId, saved: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    let doc = Automerge::load(saved)
        .map_err(|err| StoreError::Corrupt { doc_id, reason: format!("creation: {err}") })?;
    Ok(doc.get_changes(&[]).into_iter().map(|mut change| change.bytes().into_owned()).collect())
}

/// Whether a document is in a township, from the covering index (migration 16): its row holds
/// the snapshot, a page per document to read.
pub(crate) const IN_TOWNSHIP: &str =
    "SELECT 1 FROM documents INDEXED BY documents_scope WHERE id = ?1 AND township = ?2";

/// Whether the stored document is in `township` (none: in no township a device may see).
fn in_township(
    connection: &Connection,
    doc_id: DocumentId,
    township: Option<&str>,
) -> Result<bool, StoreError> {
    let Some(township) = township else { return Ok(false) };
    let mut statement = connection.prepare_cached(IN_TOWNSHIP)?;
    Ok(statement.exists(params![doc_id.as_bytes(), township])?)
}

/// A document's changes in feed order; empty for an unknown document.
pub(crate) fn history(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT feed_seq, hash, actor, seq, deps, device, received_at, device_time, message, \
         officer, certificate FROM changes WHERE doc_id = ?1 ORDER BY feed_seq",
    )?;
    let rows = statement.query_map([doc_id.as_bytes()], |row| {
        Ok(HistoryEntry {
            feed_seq: row.get(0)?,
            hash: hash_column(row, 1)?,
            actor: ActorId::from(row.get_ref(2)?.as_blob()?),
            seq: row.get(3)?,
            deps: hashes_column(row, 4)?,
            device: row.get(5)?,
            received_at: row.get(6)?,
            device_time: row.get(7)?,
            message: row.get(8)?,
            officer: row.get(9)?,
            certificate: row.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What the server recorded of each stored change of a document, for its causal time bounds
/// (`sync_core::merge::causal_not_before`): uploading device, receipt time and dependencies.
pub(crate) fn causal_facts(
    connection: &Connection,
    doc_id: DocumentId,
) -> Result<HashMap<ChangeHash, ReceivedChange>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT hash, device, received_at, deps FROM changes WHERE doc_id = ?1")?;
    let rows = statement.query_map([doc_id.as_bytes()], |row| {
        Ok((
            hash_column(row, 0)?,
            ReceivedChange {
                device: row.get(1)?,
                received_at: row.get(2)?,
                deps: hashes_column(row, 3)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the change is stored for the document.
pub(crate) fn is_stored(
    connection: &Connection,
    doc_id: DocumentId,
    hash: &ChangeHash,
) -> Result<bool, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT 1 FROM changes WHERE doc_id = ?2 AND hash = ?1")?;
    Ok(statement.exists(params![hash.0.as_slice(), doc_id.as_bytes()])?)
}

/// Number of rows in the change log.
#[cfg(test)]
pub(crate) fn count(connection: &Connection) -> Result<i64, StoreError> {
    Ok(connection.query_row("SELECT COUNT(*) FROM changes", [], |row| row.get(0))?)
}

/// The feed sequence of the change with this hash, if stored.
#[cfg(test)]
pub(crate) fn feed_seq_of(
    connection: &Connection,
    hash: ChangeHash,
) -> Result<Option<i64>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(connection
        .query_row("SELECT feed_seq FROM changes WHERE hash = ?1", [hash.0], |row| row.get(0))
        .optional()?)
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    err.sqlite_error().is_some_and(|sqlite| {
        sqlite.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || sqlite.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    })
}

fn feed_seq_column(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let feed_seq: i64 = row.get(index)?;
    u64::try_from(feed_seq).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Integer, Box::new(err))
    })
}

/// Reads a 32-byte change hash.
pub(crate) fn hash_column(row: &Row<'_>, index: usize) -> rusqlite::Result<ChangeHash> {
    let bytes: [u8; 32] = row.get(index)?;
    Ok(ChangeHash(bytes))
}

/// Reads concatenated 32-byte change hashes (dependencies, heads).
pub(crate) fn hashes_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<ChangeHash>> {
    let bytes = row.get_ref(index)?.as_blob()?;
    if !bytes.len().is_multiple_of(32) {
        let reason = format!("{} bytes is not a whole number of change hashes", bytes.len());
        return Err(rusqlite::Error::FromSqlConversionFailure(index, Type::Blob, reason.into()));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|chunk| ChangeHash(chunk.try_into().expect("chunks are 32 bytes")))
        .collect())
}

/// Concatenates change hashes for a BLOB column.
pub(crate) fn hashes_blob(hashes: &[ChangeHash]) -> Vec<u8> {
    hashes.iter().flat_map(|hash| hash.0).collect()
}

/// Reads a 16-byte document id.
pub(crate) fn doc_id_column(row: &Row<'_>, index: usize) -> rusqlite::Result<DocumentId> {
    let bytes = row.get_ref(index)?.as_blob()?;
    DocumentId::try_from_slice(bytes)
        .map_err(|err| rusqlite::Error::FromSqlConversionFailure(index, Type::Blob, Box::new(err)))
}
