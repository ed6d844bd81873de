//! SQL on document numbers (DOMAIN.md §3): the blocks leased to devices (`number_blocks`) and
//! the numbers the merged case files use or void (`document_numbers`), projected at every merge.
//!
//! A lease runs in a writer job, so the highest `last` of a number space read and the new block
//! written after it cannot interleave with another lease: two devices never get overlapping
//! blocks. The projection is what reconciliation and the merge-time rules read: a case file's
//! `documents` are uses of their serials, its `void_number` timeline events voided serials.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, Row, params};
use sync_core::ids::DocumentId;
use sync_core::numbers::{NumberBlock, NumberUse};
use sync_core::records::{CaseFile, Record};

use crate::store::registry::{self, Author};
use crate::store::{Refusal, StoreError};

/// The timeline event kind a device writes for a serial it took and spoiled (作废).
pub(crate) const VOID_EVENT: &str = "void_number";

/// The status of a block a device holds.
const LEASED: &str = "leased";

/// What a device asks for.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRequest {
    /// The block id, minted by the caller.
    pub(crate) id: String,
    /// The officer's township, whose active entrustment names the agency.
    pub(crate) township: String,
    /// Document type code.
    pub(crate) doc_type: String,
    /// Serials wanted.
    pub(crate) count: i64,
    /// Year of the number space, from the server clock.
    pub(crate) year: i32,
    /// Rendering template.
    pub(crate) template: String,
    /// The calling device.
    pub(crate) device: String,
    /// Its officer, who is audited as the author.
    pub(crate) officer: String,
    /// Server time, ms.
    pub(crate) now: i64,
}

/// Leases the next `count` serials of the space (name agency × document type × year) to the
/// device, audited; the name agency is the entrusting department of the township's active
/// entrustment.
pub(crate) fn lease(
    connection: &Connection,
    request: &LeaseRequest,
) -> Result<NumberBlock, StoreError> {
    let Some((name_agency, agency_code)) = name_agency(connection, &request.township, request.now)?
    else {
        return Err(Refusal::OutOfScope(format!(
            "township {} has no active entrustment whose agency could lend its numbers",
            request.township
        ))
        .into());
    };
    let highest: i64 = connection
        .prepare_cached(
            "SELECT COALESCE(MAX(last), 0) FROM number_blocks \
             WHERE name_agency = ?1 AND doc_type = ?2 AND year = ?3",
        )?
        .query_row(params![name_agency, request.doc_type, request.year], |row| row.get(0))?;
    let block = NumberBlock {
        id: request.id.clone(),
        name_agency,
        agency_code,
        doc_type: request.doc_type.clone(),
        year: request.year,
        first: highest + 1,
        last: highest + request.count,
        device: request.device.clone(),
        template: request.template.clone(),
    };
    connection
        .prepare_cached(
            "INSERT INTO number_blocks (id, name_agency, agency_code, doc_type, year, first, \
             last, device, template, leased_at, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            block.id,
            block.name_agency,
            block.agency_code,
            block.doc_type,
            block.year,
            block.first,
            block.last,
            block.device,
            block.template,
            request.now,
            LEASED
        ])?;
    let author = Author { who: &request.officer, now: request.now };
    registry::audit::<(), _>(
        connection,
        &author,
        "lease",
        ("number_block", &block.id),
        None,
        Some(&block),
    )?;
    Ok(block)
}

/// The agency whose numbers the township's documents carry: the entrusting department of its
/// active entrustment in force at `now`, with the department's short code.
fn name_agency(
    connection: &Connection,
    township: &str,
    now: i64,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT a.id, a.code FROM entrustments e JOIN agencies a ON a.id = e.entrusting_agency \
             WHERE e.township = ?1 AND e.status = 'active' AND e.valid_from <= ?2 \
             AND ?2 <= e.valid_to ORDER BY e.id LIMIT 1",
        )?
        .query_row(params![township, now], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

const BLOCK_COLUMNS: &str =
    "b.id, b.name_agency, b.agency_code, b.doc_type, b.year, b.first, b.last, b.device, b.template";

fn block_row(row: &Row<'_>) -> rusqlite::Result<NumberBlock> {
    Ok(NumberBlock {
        id: row.get(0)?,
        name_agency: row.get(1)?,
        agency_code: row.get(2)?,
        doc_type: row.get(3)?,
        year: row.get(4)?,
        first: row.get(5)?,
        last: row.get(6)?,
        device: row.get(7)?,
        template: row.get(8)?,
    })
}

/// One leased block with the officer of the device holding it, or `None` for an unknown id.
pub(crate) fn block(
    connection: &Connection,
    id: &str,
) -> Result<Option<(NumberBlock, Option<String>)>, StoreError> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {BLOCK_COLUMNS}, d.officer FROM number_blocks b \
             LEFT JOIN devices d ON d.id = b.device WHERE b.id = ?1"
        ))?
        .query_row([id], |row| Ok((block_row(row)?, row.get(9)?)))
        .optional()?)
}

/// The blocks with these ids that the server leased; unknown ids are left out.
pub(crate) fn blocks(
    connection: &Connection,
    ids: &[&str],
) -> Result<Vec<NumberBlock>, StoreError> {
    let mut statement = connection
        .prepare_cached(&format!("SELECT {BLOCK_COLUMNS} FROM number_blocks b WHERE b.id = ?1"))?;
    let mut found = Vec::new();
    for id in ids {
        if let Some(block) = statement.query_row([id], block_row).optional()? {
            found.push(block);
        }
    }
    Ok(found)
}

/// Every reported use of a serial of the block in the merged case files: a document that
/// carries it (`Used`, by document id) or a `void_number` event (`Void`).
pub(crate) fn uses(
    connection: &Connection,
    block_id: &str,
) -> Result<Vec<(i64, NumberUse)>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT serial, doc_id, void_reason FROM document_numbers WHERE block = ?1 \
         ORDER BY serial, doc_id",
    )?;
    let rows = statement.query_map([block_id], |row| {
        let serial: i64 = row.get(0)?;
        let doc_id: Vec<u8> = row.get(1)?;
        let void_reason: Option<String> = row.get(2)?;
        Ok((serial, doc_id, void_reason))
    })?;
    let mut found = Vec::new();
    for row in rows {
        let (serial, doc_id, void_reason) = row?;
        let number_use = match void_reason {
            Some(reason) => NumberUse::Void { reason },
            None => NumberUse::Used { doc: document_id(&doc_id)?.to_string() },
        };
        found.push((serial, number_use));
    }
    Ok(found)
}

fn document_id(bytes: &[u8]) -> Result<DocumentId, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Io(format!("a document id of {} bytes", bytes.len())))?;
    Ok(DocumentId::from_bytes(bytes))
}

/// Of `numbers`, those that more than one document holds. Read after the record's own numbers
/// were projected, so a number the record holds and any other document holds too is in it.
pub(crate) fn used_by_several(
    connection: &Connection,
    numbers: &[&str],
) -> Result<HashSet<String>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT COUNT(DISTINCT doc_id) FROM document_numbers WHERE number = ?1 AND number != ''",
    )?;
    let mut found = HashSet::new();
    for number in numbers {
        let holders: i64 = statement.query_row([number], |row| row.get(0))?;
        if holders > 1 {
            found.insert((*number).to_owned());
        }
    }
    Ok(found)
}

/// Replaces the projected numbers of a document with those of its merged `record`, and marks
/// `number_used_twice` on every other document that holds one of them, so the first user of a
/// reused number shows in the queue too.
pub(crate) fn project(
    connection: &Connection,
    doc_id: DocumentId,
    record: Option<&Record>,
) -> Result<(), StoreError> {
    connection
        .prepare_cached("DELETE FROM document_numbers WHERE doc_id = ?1")?
        .execute([doc_id.as_bytes()])?;
    let Some(Record::Case(case_file)) = record else { return Ok(()) };
    let mut insert = connection.prepare_cached(
        "INSERT INTO document_numbers (doc_id, block, serial, number, void_reason) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for document in case_file.documents.iter().filter(|document| !document.number.is_empty()) {
        insert.execute(params![
            doc_id.as_bytes(),
            document.block,
            document.serial,
            document.number,
            None::<String>
        ])?;
    }
    for (block, serial, reason) in voided(case_file) {
        insert.execute(params![doc_id.as_bytes(), block, serial, "", reason])?;
    }
    let mut mark = connection.prepare_cached(
        "INSERT OR IGNORE INTO document_findings (doc_id, code) \
         SELECT DISTINCT doc_id, 'number_used_twice' FROM document_numbers \
         WHERE number = ?1 AND doc_id != ?2",
    )?;
    for document in case_file.documents.iter().filter(|document| !document.number.is_empty()) {
        mark.execute(params![document.number, doc_id.as_bytes()])?;
    }
    Ok(())
}

/// The serials a case file voids: its `void_number` events with a `block` and a `serial`.
fn voided(case_file: &CaseFile) -> impl Iterator<Item = (&str, i64, &str)> {
    case_file.timeline.iter().filter(|event| event.kind == VOID_EVENT).filter_map(|event| {
        let block = event.fields.get("block")?;
        let serial = event.fields.get("serial")?.parse().ok()?;
        let reason = event.fields.get("reason").map_or("", String::as_str);
        Some((block.as_str(), serial, reason))
    })
}

/// The blocks leased in the name of `name_agency` in `[from_ms, to_ms)`, in lease order.
pub(crate) fn blocks_leased(
    connection: &Connection,
    name_agency: &str,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<NumberBlock>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {BLOCK_COLUMNS} FROM number_blocks b WHERE b.name_agency = ?1 \
         AND b.leased_at >= ?2 AND b.leased_at < ?3 ORDER BY b.leased_at, b.id"
    ))?;
    let rows = statement.query_map(params![name_agency, from_ms, to_ms], block_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
