//! The registry-aware findings of a record (sync-core `validate::findings_with`), with the
//! `RuleContext` filled from the registry, and their codes projected into
//! `document_findings(doc_id, code)` at every merge so that the review queue filters in SQL,
//! with when each code was raised and resolved (`document_finding_history`).
//!
//! The context holds what the registry knows now: the certificates of the officers the record
//! names (with the time of their last suspension or revocation from the audit log), the
//! record's matter, every entrustment item of its township (active or not, with its term), and
//! the evidence blobs received, the number blocks its documents name (`store::numbers`) and
//! which of its document numbers other documents hold too. The record's numbers are projected
//! into `document_numbers` first, so that the rules read them next to everyone else's.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};
use sync_core::ids::DocumentId;
use sync_core::records::Record;
use sync_core::scope::Action;
use sync_core::validate::{
    CertificateFacts, EntrustmentFacts, Finding, MatterFacts, RuleContext, findings_with,
};

use crate::store::registry::{self, json_column};
use crate::store::{StoreError, blobs, numbers, review_flags};

/// Every finding of `record` judged against the registry as it stands at `now_ms`.
pub(crate) fn registry_findings(
    connection: &Connection,
    record: &Record,
    now_ms: i64,
) -> Result<Vec<Finding>, StoreError> {
    let context = rule_context(connection, record, now_ms)?;
    Ok(findings_with(record, &context))
}

/// Replaces the stored finding codes of a document with those of its merged `record` and the
/// codes its changes are flagged with; a document that is not a readable record has only the
/// latter.
pub(crate) fn project(
    connection: &Connection,
    doc_id: DocumentId,
    record: Option<&Record>,
    now_ms: i64,
) -> Result<(), StoreError> {
    numbers::project(connection, doc_id, record)?;
    connection
        .prepare_cached("DELETE FROM document_findings WHERE doc_id = ?1")?
        .execute([doc_id.as_bytes()])?;
    let codes: HashSet<&'static str> = match record {
        Some(record) => registry_findings(connection, record, now_ms)?
            .into_iter()
            .map(|finding| finding.code)
            .collect(),
        None => HashSet::new(),
    };
    let mut insert = connection
        .prepare_cached("INSERT OR IGNORE INTO document_findings (doc_id, code) VALUES (?1, ?2)")?;
    for code in codes {
        insert.execute(params![doc_id.as_bytes(), code])?;
    }
    // Flags on merged changes (`needs_review`, `clock_suspect`) stay findings of the record
    // whatever the later merges change.
    for code in review_flags::codes(connection, doc_id)? {
        insert.execute(params![doc_id.as_bytes(), code])?;
    }
    record_history(connection, doc_id, now_ms)
}

/// Brings `document_finding_history` in line with the codes just projected: a code not open
/// yet is raised (again) at `now_ms`, an open code no longer found is resolved at `now_ms`.
fn record_history(
    connection: &Connection,
    doc_id: DocumentId,
    now_ms: i64,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "UPDATE document_finding_history SET resolved_at = ?2 \
             WHERE doc_id = ?1 AND resolved_at IS NULL AND code NOT IN \
             (SELECT code FROM document_findings WHERE doc_id = ?1)",
        )?
        .execute(params![doc_id.as_bytes(), now_ms])?;
    connection
        .prepare_cached(
            "INSERT INTO document_finding_history (doc_id, code, raised_at) \
             SELECT doc_id, code, ?2 FROM document_findings WHERE doc_id = ?1 \
             ON CONFLICT (doc_id, code) DO UPDATE SET raised_at = excluded.raised_at, \
             resolved_at = NULL WHERE resolved_at IS NOT NULL",
        )?
        .execute(params![doc_id.as_bytes(), now_ms])?;
    Ok(())
}

/// The registry facts the rules need about `record`.
pub(crate) fn rule_context(
    connection: &Connection,
    record: &Record,
    now_ms: i64,
) -> Result<RuleContext, StoreError> {
    let mut officers: Vec<&str> =
        record.officers().iter().map(|present| present.officer.as_str()).collect();
    officers.sort_unstable();
    officers.dedup();
    let mut certificates = Vec::new();
    for officer in officers {
        certificates.extend(certificates_of(connection, officer)?);
    }
    let hashes: Vec<String> = record.evidence().iter().map(|item| item.sha256.clone()).collect();
    let (number_blocks, numbers_used_elsewhere) = match record {
        Record::Case(case_file) => {
            let mut block_ids: Vec<&str> = case_file
                .documents
                .iter()
                .map(|document| document.block.as_str())
                .filter(|block| !block.is_empty())
                .collect();
            block_ids.sort_unstable();
            block_ids.dedup();
            let numbers: Vec<&str> =
                case_file.documents.iter().map(|document| document.number.as_str()).collect();
            (
                numbers::blocks(connection, &block_ids)?,
                numbers::used_by_several(connection, &numbers)?,
            )
        }
        Record::Inspection(_) => (Vec::new(), HashSet::new()),
    };
    Ok(RuleContext {
        certificates,
        matter: matter_facts(connection, record.matter())?,
        entrustments: entrustment_facts(connection, record.township())?,
        territories: territories(connection, record.township())?,
        blobs_received: Some(blobs::present(connection, &hashes)?),
        number_blocks,
        numbers_used_elsewhere,
        now_ms,
    })
}

/// The certificates of one officer; a suspended or revoked one is withdrawn when its current
/// suspension or revocation began in the audit log (`registry::certificate_withdrawal`, the
/// time upload-only mode judges against too), at its start when the log has none.
fn certificates_of(
    connection: &Connection,
    officer: &str,
) -> Result<Vec<CertificateFacts>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT c.cert_no, c.officer, c.sectors, c.valid_from, c.valid_to, c.status, \
         c.territory FROM certificates c WHERE c.officer = ?1 ORDER BY c.cert_no",
    )?;
    let rows = statement.query_map([officer], |row| {
        let status: String = row.get(5)?;
        let facts = CertificateFacts {
            cert_no: row.get(0)?,
            officer: row.get(1)?,
            sectors: json_column(row, 2)?,
            valid_from: row.get(3)?,
            valid_to: row.get(4)?,
            withdrawn_at: None,
            territory: row.get(6)?,
        };
        Ok((facts, matches!(status.as_str(), "suspended" | "revoked")))
    })?;
    let rows: Vec<(CertificateFacts, bool)> = rows.collect::<Result<_, _>>()?;
    let mut certificates = Vec::with_capacity(rows.len());
    for (mut facts, withdrawn) in rows {
        if withdrawn {
            let since = registry::certificate_withdrawal(connection, &facts.cert_no)?;
            facts.withdrawn_at = Some(since.map_or(facts.valid_from, |withdrawal| withdrawal.at));
        }
        certificates.push(facts);
    }
    Ok(certificates)
}

fn matter_facts(connection: &Connection, code: &str) -> Result<Option<MatterFacts>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT code, sector, hearing_threshold_person, hearing_threshold_org FROM matters \
             WHERE code = ?1",
        )?
        .query_row([code], |row| {
            Ok(MatterFacts {
                code: row.get(0)?,
                sector: row.get(1)?,
                hearing_threshold_person: row.get(2)?,
                hearing_threshold_org: row.get(3)?,
            })
        })
        .optional()?)
}

/// The township and every agency above it, nearest first: a certificate issued for any of
/// them covers an act in the township. Empty for a township the registry does not know, and
/// then the territory is not checked (the record is already out of scope).
fn territories(connection: &Connection, township: &str) -> Result<Vec<String>, StoreError> {
    let mut statement = connection.prepare_cached(
        "WITH RECURSIVE above (id, parent, depth) AS ( \
             SELECT id, parent, 0 FROM agencies WHERE id = ?1 \
             UNION ALL \
             SELECT a.id, a.parent, above.depth + 1 FROM agencies a \
             JOIN above ON a.id = above.parent WHERE above.depth < 16) \
         SELECT id FROM above ORDER BY depth",
    )?;
    let rows = statement.query_map([township], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every entrustment item of the township, whatever its agreement's status and term: the rule
/// judges them at the time of the act.
fn entrustment_facts(
    connection: &Connection,
    township: &str,
) -> Result<Vec<EntrustmentFacts>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT e.id, e.township, i.matter, i.actions, e.valid_from, e.valid_to, e.status \
         FROM entrustments e JOIN entrustment_items i ON i.entrustment = e.id \
         WHERE e.township = ?1 ORDER BY e.id, i.matter",
    )?;
    let rows = statement.query_map([township], |row| {
        let status: String = row.get(6)?;
        Ok(EntrustmentFacts {
            agreement: row.get(0)?,
            township: row.get(1)?,
            matter: row.get(2)?,
            actions: json_column::<Vec<Action>>(row, 3)?,
            valid_from: row.get(4)?,
            valid_to: row.get(5)?,
            active: status == "active",
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
