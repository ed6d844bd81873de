//! The supervision reports (issue 6, DOMAIN.md §4) as SQL over the columns projected at every
//! merge (`documents`, `document_findings`, `document_deadlines`, `document_cases`,
//! `document_officers`) and the registry: the overdue board, the alerts and the officer
//! assessment. No report reads a document.
//!
//! The assessment never selects a penalty, fine or confiscation amount: none is projected, and
//! Administrative Penalty Law Art. 74 forbids linking them to assessment.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::store::StoreError;
use crate::store::changes::doc_id_column;

/// The finding codes that are out-of-scope (越权) alerts.
pub(crate) const SCOPE_ALERTS: [&str; 5] = [
    "matter_not_entrusted",
    "certificate_invalid",
    "certificate_out_of_scope",
    "not_entrustable",
    "summary_fine_over_limit",
];

/// One open statutory deadline of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DeadlineRow {
    /// The case file.
    pub(crate) doc_id: String,
    /// The handling township.
    pub(crate) township: Option<String>,
    /// The matter code.
    pub(crate) matter: Option<String>,
    /// The deadline: `decision`, `service`, `hearing_request`, `payment`.
    pub(crate) deadline: String,
    /// The event its clock runs from.
    pub(crate) from_event: String,
    /// Due time, ms since the epoch.
    pub(crate) due: i64,
    /// Whether the due time has passed.
    pub(crate) overdue: bool,
    /// The holiday calendar did not cover the year: weekends only were counted.
    pub(crate) provisional: bool,
}

/// An entrustment agreement or a certificate whose term ends soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ExpiringRow {
    /// `entrustment` or `certificate`.
    pub(crate) kind: &'static str,
    /// The agreement id or the certificate number.
    pub(crate) id: String,
    /// The township of the agreement, or the territory of the certificate.
    pub(crate) township: String,
    /// The certificate's holder; `None` for an agreement.
    pub(crate) officer: Option<String>,
    /// End of the term, ms since the epoch.
    pub(crate) valid_to: i64,
}

/// Every open deadline of every case, soonest first, judged overdue at `now_ms`.
pub(crate) fn open_deadlines(
    connection: &Connection,
    now_ms: i64,
) -> Result<Vec<DeadlineRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT dl.doc_id, d.township, d.matter, dl.code, dl.from_event, dl.due, dl.provisional \
         FROM document_deadlines dl JOIN documents d ON d.id = dl.doc_id \
         ORDER BY dl.due, dl.doc_id, dl.code",
    )?;
    let rows = statement.query_map([], |row| {
        let due: i64 = row.get(5)?;
        Ok(DeadlineRow {
            doc_id: doc_id_column(row, 0)?.to_string(),
            township: row.get(1)?,
            matter: row.get(2)?,
            deadline: row.get(3)?,
            from_event: row.get(4)?,
            due,
            overdue: due < now_ms,
            provisional: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Agreements and certificates still in force whose term ends between `now_ms` and `until_ms`.
pub(crate) fn expiring(
    connection: &Connection,
    now_ms: i64,
    until_ms: i64,
) -> Result<Vec<ExpiringRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT 'entrustment', id, township, NULL, valid_to FROM entrustments \
         WHERE status NOT IN ('expired', 'revoked') AND valid_to BETWEEN ?1 AND ?2 \
         UNION ALL \
         SELECT 'certificate', cert_no, territory, officer, valid_to FROM certificates \
         WHERE status NOT IN ('expired', 'revoked') AND valid_to BETWEEN ?1 AND ?2 \
         ORDER BY 5, 2",
    )?;
    let rows = statement.query_map(params![now_ms, until_ms], |row| {
        let kind: String = row.get(0)?;
        Ok(ExpiringRow {
            kind: if kind == "entrustment" { "entrustment" } else { "certificate" },
            id: row.get(1)?,
            township: row.get(2)?,
            officer: row.get(3)?,
            valid_to: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One out-of-scope alert: a record with one of [`SCOPE_ALERTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ScopeAlertRow {
    /// The finding code.
    pub(crate) code: String,
    /// The record.
    pub(crate) doc_id: String,
    /// `inspection` or `case`.
    pub(crate) kind: Option<String>,
    /// The handling township.
    pub(crate) township: Option<String>,
    /// The matter code.
    pub(crate) matter: Option<String>,
}

/// Every record carrying an out-of-scope finding, one row per record and code.
pub(crate) fn scope_alerts(connection: &Connection) -> Result<Vec<ScopeAlertRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT f.code, f.doc_id, d.kind, d.township, d.matter \
         FROM document_findings f JOIN documents d ON d.id = f.doc_id \
         WHERE f.code IN (?1, ?2, ?3, ?4, ?5) ORDER BY d.township, f.doc_id, f.code",
    )?;
    let rows = statement.query_map(rusqlite::params_from_iter(SCOPE_ALERTS), |row| {
        Ok(ScopeAlertRow {
            code: row.get(0)?,
            doc_id: doc_id_column(row, 1)?.to_string(),
            kind: row.get(2)?,
            township: row.get(3)?,
            matter: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One record of a duplicate-enforcement group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DuplicateRow {
    /// The party key the records share (unmasked; the route masks it).
    pub(crate) party_key: String,
    /// The matter they share.
    pub(crate) matter: String,
    /// The record.
    pub(crate) doc_id: String,
    /// `inspection` or `case`.
    pub(crate) kind: Option<String>,
    /// The handling township.
    pub(crate) township: Option<String>,
    /// The agency in whose name a case is handled (empty for inspections).
    pub(crate) name_agency: String,
}

/// Records sharing a party key and a matter with a record handled by another township or in
/// the name of another agency, grouped by (party key, matter).
pub(crate) fn duplicate_enforcement(
    connection: &Connection,
) -> Result<Vec<DuplicateRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "WITH handled AS ( \
             SELECT d.id, d.kind, d.party_key, d.matter, d.township, \
                    COALESCE(c.name_agency, '') AS name_agency \
             FROM documents d LEFT JOIN document_cases c ON c.doc_id = d.id \
             WHERE d.party_key IS NOT NULL AND d.party_key <> '' AND d.matter IS NOT NULL) \
         SELECT h.party_key, h.matter, h.id, h.kind, h.township, h.name_agency FROM handled h \
         WHERE EXISTS (SELECT 1 FROM handled o WHERE o.party_key = h.party_key \
             AND o.matter = h.matter AND o.id <> h.id \
             AND (o.township IS NOT h.township OR (o.name_agency <> h.name_agency \
                  AND o.name_agency <> '' AND h.name_agency <> ''))) \
         ORDER BY h.party_key, h.matter, h.township, h.id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(DuplicateRow {
            party_key: row.get(0)?,
            matter: row.get(1)?,
            doc_id: doc_id_column(row, 2)?.to_string(),
            kind: row.get(3)?,
            township: row.get(4)?,
            name_agency: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The assessment figures of one officer or one township over a period. Counts only: no
/// amount of any penalty is, or may become, a figure here (Art. 74).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AssessmentRow {
    /// The officer id or the township id.
    pub(crate) id: String,
    /// Records in the period.
    pub(crate) records: i64,
    /// Inspection records.
    pub(crate) inspections: i64,
    /// Summary-procedure cases.
    pub(crate) summary_cases: i64,
    /// General-procedure cases.
    pub(crate) general_cases: i64,
    /// Records with a deadline past due now.
    pub(crate) overdue: i64,
    /// Records whose decision came or is due later than the 90 days (`decision_overdue`).
    pub(crate) decision_overdue: i64,
    /// Finding codes raised over all records.
    pub(crate) findings: i64,
    /// `findings / records`, two decimals.
    pub(crate) findings_per_record: f64,
    /// Veto item: fewer than two certified officers present.
    pub(crate) veto_too_few_officers: i64,
    /// Veto item: an officer's certificate invalid at the act.
    pub(crate) veto_certificate_invalid: i64,
    /// Veto item: out of scope (matter not entrusted, certificate of another sector, action not
    /// entrustable).
    pub(crate) veto_out_of_scope: i64,
    /// Records returned for correction.
    pub(crate) returned: i64,
    /// The officer's certificates as `cert_no:status` (`none` without one); empty for a
    /// township.
    pub(crate) certificate_status: String,
}

/// The period of an assessment: records first uploaded in `[from_ms, to_ms)`, judged at `now_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Period {
    /// Start, inclusive, ms.
    pub(crate) from_ms: i64,
    /// End, exclusive, ms.
    pub(crate) to_ms: i64,
    /// When overdue is judged, ms.
    pub(crate) now_ms: i64,
}

/// The aggregate columns of the assessment over the rows of `scoped` aliased `s`; the
/// parameters are `?1` from, `?2` to and `?3` now.
const FIGURES: &str = "COUNT(*), \
    SUM(s.kind = 'inspection'), \
    SUM(s.kind = 'case' AND s.procedure = 'summary'), \
    SUM(s.kind = 'case' AND s.procedure = 'general'), \
    SUM(EXISTS (SELECT 1 FROM document_deadlines dl WHERE dl.doc_id = s.id AND dl.due < ?3)), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id \
        AND f.code = 'decision_overdue')), \
    SUM((SELECT COUNT(*) FROM document_findings f WHERE f.doc_id = s.id)), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id \
        AND f.code = 'too_few_officers')), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id \
        AND f.code = 'certificate_invalid')), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id AND f.code IN \
        ('matter_not_entrusted', 'certificate_out_of_scope', 'not_entrustable'))), \
    SUM(s.review_state = 'returned')";

const SCOPED: &str = "WITH scoped AS ( \
    SELECT d.id, d.kind, d.township, d.review_state, c.procedure \
    FROM documents d LEFT JOIN document_cases c ON c.doc_id = d.id \
    WHERE d.kind IS NOT NULL AND d.created_at >= ?1 AND d.created_at < ?2) ";

/// The assessment per officer named in the period's records, by officer id.
pub(crate) fn assessment_by_officer(
    connection: &Connection,
    period: Period,
) -> Result<Vec<AssessmentRow>, StoreError> {
    let sql = format!(
        "{SCOPED} SELECT o.officer, {FIGURES}, \
         COALESCE((SELECT group_concat(c.cert_no || ':' || c.status, ' ') FROM \
             (SELECT cert_no, status FROM certificates WHERE officer = o.officer \
              ORDER BY cert_no) c), 'none') \
         FROM document_officers o JOIN scoped s ON s.id = o.doc_id \
         GROUP BY o.officer ORDER BY o.officer"
    );
    assessment(connection, &sql, period)
}

/// The assessment per handling township of the period's records, by township id.
pub(crate) fn assessment_by_township(
    connection: &Connection,
    period: Period,
) -> Result<Vec<AssessmentRow>, StoreError> {
    let sql = format!(
        "{SCOPED} SELECT COALESCE(s.township, ''), {FIGURES}, '' \
         FROM scoped s GROUP BY s.township ORDER BY s.township"
    );
    assessment(connection, &sql, period)
}

fn assessment(
    connection: &Connection,
    sql: &str,
    period: Period,
) -> Result<Vec<AssessmentRow>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows =
        statement.query_map(params![period.from_ms, period.to_ms, period.now_ms], |row| {
            let records: i64 = row.get(1)?;
            let findings: i64 = row.get(7)?;
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let per_record = if records == 0 {
                0.0
            } else {
                (findings as f64 / records as f64 * 100.0).round() / 100.0
            };
            Ok(AssessmentRow {
                id: row.get(0)?,
                records,
                inspections: row.get(2)?,
                summary_cases: row.get(3)?,
                general_cases: row.get(4)?,
                overdue: row.get(5)?,
                decision_overdue: row.get(6)?,
                findings,
                findings_per_record: per_record,
                veto_too_few_officers: row.get(8)?,
                veto_certificate_invalid: row.get(9)?,
                veto_out_of_scope: row.get(10)?,
                returned: row.get(11)?,
                certificate_status: row.get(12)?,
            })
        })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
