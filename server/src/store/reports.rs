//! The supervision reports (issue 6, DOMAIN.md §4) as SQL over the columns projected at every
//! merge (`documents`, `document_findings`, `document_deadlines`, `document_cases`,
//! `document_officers`) and the registry: the overdue board, the alerts and the officer
//! assessment. No report reads a document.
//!
//! The assessment never selects a penalty, fine or confiscation amount: none is projected, and
//! Administrative Penalty Law Art. 74 forbids linking them to assessment.

use rusqlite::{Connection, params};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::store::changes::doc_id_column;

/// The finding codes that are out-of-scope (越权) alerts (DOMAIN.md §4.4).
pub(crate) const SCOPE_ALERTS: [&str; 8] = [
    "matter_not_entrusted",
    "agreement_not_in_force",
    "action_not_entrusted",
    "not_entrustable",
    "certificate_invalid",
    "certificate_out_of_scope",
    "certificate_out_of_territory",
    "summary_fine_over_limit",
];

/// The finding codes that are the assessment's out-of-scope veto item.
const OUT_OF_SCOPE_VETO: &str = "('matter_not_entrusted', 'agreement_not_in_force', \
    'action_not_entrusted', 'not_entrustable', 'certificate_out_of_scope', \
    'certificate_out_of_territory')";

/// One open statutory deadline of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
         WHERE f.code IN (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ORDER BY d.township, f.doc_id, f.code",
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// A record (`{t}`) with its handling window (`{t}w`) and case columns (`{t}c`), as the
/// duplicate-enforcement queries compare them; `{t}` is `h` for the record reported and `o` for
/// the other one.
fn handled(alias: &str) -> String {
    format!(
        "documents {alias} JOIN document_windows {alias}w ON {alias}w.doc_id = {alias}.id \
         LEFT JOIN document_cases {alias}c ON {alias}c.doc_id = {alias}.id"
    )
}

/// Whether `o` is another record of `h`'s party and matter whose handling window overlaps
/// `h`'s; an open window ends never. The equality on party key and matter comes first so that
/// SQLite looks `o` up by `documents_party_matter` rather than scanning every record.
const SAME_PARTY_MATTER_OVERLAPPING: &str = "o.party_key = h.party_key AND o.matter = h.matter \
    AND o.id <> h.id \
    AND ow.handled_from <= COALESCE(hw.handled_to, 9223372036854775807) \
    AND hw.handled_from <= COALESCE(ow.handled_to, 9223372036854775807)";

/// The columns of a [`DuplicateRow`] for `h`.
const DUPLICATE_COLUMNS: &str =
    "h.party_key, h.matter, h.id, h.kind, h.township, COALESCE(hc.name_agency, '')";

/// Records sharing a party key and a matter with a record handled by another township or in
/// the name of another agency while this one was handled (their windows overlap), grouped by
/// (party key, matter).
pub(crate) fn duplicate_enforcement(
    connection: &Connection,
) -> Result<Vec<DuplicateRow>, StoreError> {
    duplicates(
        connection,
        &format!(
            "SELECT {DUPLICATE_COLUMNS} FROM {} \
             WHERE h.party_key <> '' AND h.matter IS NOT NULL AND EXISTS (SELECT 1 FROM {} \
                 WHERE {SAME_PARTY_MATTER_OVERLAPPING} \
                 AND (o.township IS NOT h.township \
                      OR (oc.name_agency <> hc.name_agency \
                          AND oc.name_agency <> '' AND hc.name_agency <> ''))) \
             ORDER BY h.party_key, h.matter, h.township, h.id",
            handled("h"),
            handled("o"),
        ),
    )
}

/// Cases that imposed a fine on a party for a matter while another case fined the same party
/// for the same matter (一事不再罚, Administrative Penalty Law Art. 29), whoever handled them,
/// grouped by (party key, matter). The record model does not date the violating act itself,
/// so "the same act" is read as the same party and matter handled in overlapping windows.
pub(crate) fn second_fines(connection: &Connection) -> Result<Vec<DuplicateRow>, StoreError> {
    duplicates(
        connection,
        &format!(
            "SELECT {DUPLICATE_COLUMNS} FROM {} \
             WHERE h.party_key <> '' AND h.matter IS NOT NULL AND hc.fined \
             AND EXISTS (SELECT 1 FROM {} \
                 WHERE {SAME_PARTY_MATTER_OVERLAPPING} AND oc.fined) \
             ORDER BY h.party_key, h.matter, h.township, h.id",
            handled("h"),
            handled("o"),
        ),
    )
}

fn duplicates(connection: &Connection, sql: &str) -> Result<Vec<DuplicateRow>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
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

/// A lead passed on two or more times (推诿, DOMAIN.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct PassedOnRow {
    /// Always `passed_on`.
    pub(crate) code: &'static str,
    /// The case file.
    pub(crate) doc_id: String,
    /// The handling township.
    pub(crate) township: Option<String>,
    /// The matter code.
    pub(crate) matter: Option<String>,
    /// How many times it was transferred or passed on.
    pub(crate) times: i64,
}

/// Every case whose lead was transferred or passed on two or more times.
pub(crate) fn passed_on(connection: &Connection) -> Result<Vec<PassedOnRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT d.id, d.township, d.matter, c.passed_on \
         FROM document_cases c JOIN documents d ON d.id = c.doc_id \
         WHERE c.passed_on >= 2 ORDER BY d.township, d.id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(PassedOnRow {
            code: "passed_on",
            doc_id: doc_id_column(row, 0)?.to_string(),
            township: row.get(1)?,
            matter: row.get(2)?,
            times: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The assessment figures of one officer or one township over a period (DOMAIN.md §4.2).
/// Counts and shares of counts only: no amount of any penalty is, or may become, a figure here
/// (Art. 74).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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
    /// Timeliness: cases whose 90-day decision clock can be judged — decided, or past due
    /// without a decision.
    pub(crate) decisions_due: i64,
    /// Timeliness: of those, decided within the 90 days plus recorded extensions and pauses.
    pub(crate) decided_in_time: i64,
    /// `decided_in_time / decisions_due`, two decimals; `None` when nothing was due.
    pub(crate) decided_in_time_share: Option<f64>,
    /// Timeliness: decisions whose 7-working-day service can be judged — served, or past due.
    pub(crate) services_due: i64,
    /// Timeliness: of those, served within the 7 working days.
    pub(crate) served_in_time: i64,
    /// `served_in_time / services_due`, two decimals.
    pub(crate) served_in_time_share: Option<f64>,
    /// Timeliness: leads whose 15-working-day filing period can be judged — filed, or still a
    /// lead past due.
    pub(crate) filings_due: i64,
    /// Timeliness: of those, filed (立案) within the 15 working days.
    pub(crate) filed_in_time: i64,
    /// `filed_in_time / filings_due`, two decimals.
    pub(crate) filed_in_time_share: Option<f64>,
    /// Records with a deadline past due now.
    pub(crate) overdue: i64,
    /// Records whose decision came or is due later than the 90 days (`decision_overdue`).
    pub(crate) decision_overdue: i64,
    /// Quality: finding codes raised over all records.
    pub(crate) findings: i64,
    /// `findings / records`, two decimals.
    pub(crate) findings_per_record: f64,
    /// Veto item: a case with no agency in whose name it is handled (no legal subject).
    pub(crate) veto_no_legal_subject: i64,
    /// Veto item: fewer than two certified officers present.
    pub(crate) veto_too_few_officers: i64,
    /// Veto item: an officer's certificate invalid at the act (unqualified officer).
    pub(crate) veto_certificate_invalid: i64,
    /// Veto item: out of scope (matter not entrusted, agreement not in force, action not
    /// entrusted or not entrustable, certificate of another sector or territory).
    pub(crate) veto_out_of_scope: i64,
    /// Quality: records returned for correction.
    pub(crate) returned: i64,
    /// `returned / records`, two decimals.
    pub(crate) returned_share: f64,
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
/// parameters are `?1` from, `?2` to and `?3` now. `IFNULL(..., 0)` because a comparison with
/// a step that has not happened is NULL.
const FIGURES: &str = "COUNT(*), \
    SUM(s.kind = 'inspection'), \
    SUM(s.kind = 'case' AND s.procedure = 'summary'), \
    SUM(s.kind = 'case' AND s.procedure = 'general'), \
    SUM(s.decided_at IS NOT NULL AND s.decision_due IS NOT NULL \
        OR EXISTS (SELECT 1 FROM document_deadlines dl WHERE dl.doc_id = s.id \
            AND dl.code = 'decision' AND dl.due < ?3)), \
    SUM(IFNULL(s.decided_at <= s.decision_due, 0)), \
    SUM(s.served_at IS NOT NULL AND s.service_due IS NOT NULL \
        OR EXISTS (SELECT 1 FROM document_deadlines dl WHERE dl.doc_id = s.id \
            AND dl.code = 'service' AND dl.due < ?3)), \
    SUM(IFNULL(s.served_at <= s.service_due, 0)), \
    SUM(s.filed_at IS NOT NULL AND s.filing_due IS NOT NULL \
        OR IFNULL(s.status = 'lead' AND s.filing_due < ?3, 0)), \
    SUM(IFNULL(s.filed_at <= s.filing_due, 0)), \
    SUM(EXISTS (SELECT 1 FROM document_deadlines dl WHERE dl.doc_id = s.id AND dl.due < ?3)), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id \
        AND f.code = 'decision_overdue')), \
    SUM((SELECT COUNT(*) FROM document_findings f WHERE f.doc_id = s.id)), \
    SUM(s.kind = 'case' AND IFNULL(s.name_agency, '') = ''), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id \
        AND f.code = 'too_few_officers')), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id \
        AND f.code = 'certificate_invalid')), \
    SUM(EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = s.id AND f.code IN \
        {OUT_OF_SCOPE_VETO})), \
    SUM(s.review_state = 'returned')";

/// The period's records with their case columns. Never a penalty column (Art. 74).
const SCOPED: &str = "WITH scoped AS ( \
    SELECT d.id, d.kind, d.township, d.review_state, d.status, c.procedure, c.name_agency, \
           c.filed_at, c.filing_due, c.decided_at, c.decision_due, c.served_at, c.service_due \
    FROM documents d LEFT JOIN document_cases c ON c.doc_id = d.id \
    WHERE d.kind IS NOT NULL AND d.created_at >= ?1 AND d.created_at < ?2) ";

/// The [`FIGURES`] with the veto codes in place.
fn figures() -> String {
    FIGURES.replace("{OUT_OF_SCOPE_VETO}", OUT_OF_SCOPE_VETO)
}

/// The assessment per officer named in the period's records, by officer id.
pub(crate) fn assessment_by_officer(
    connection: &Connection,
    period: Period,
) -> Result<Vec<AssessmentRow>, StoreError> {
    let sql = format!(
        "{SCOPED} SELECT o.officer, {}, \
         COALESCE((SELECT group_concat(c.cert_no || ':' || c.status, ' ') FROM \
             (SELECT cert_no, status FROM certificates WHERE officer = o.officer \
              ORDER BY cert_no) c), 'none') \
         FROM document_officers o JOIN scoped s ON s.id = o.doc_id \
         GROUP BY o.officer ORDER BY o.officer",
        figures()
    );
    assessment(connection, &sql, period)
}

/// The assessment per handling township of the period's records, by township id.
pub(crate) fn assessment_by_township(
    connection: &Connection,
    period: Period,
) -> Result<Vec<AssessmentRow>, StoreError> {
    let sql = format!(
        "{SCOPED} SELECT COALESCE(s.township, ''), {}, '' \
         FROM scoped s GROUP BY s.township ORDER BY s.township",
        figures()
    );
    assessment(connection, &sql, period)
}

/// `part / whole` rounded to two decimals; 0 of 0 is 0.
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 { 0.0 } else { (part as f64 / whole as f64 * 100.0).round() / 100.0 }
}

/// `part / whole`, `None` when nothing was due.
fn share(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| ratio(part, whole))
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
            let (decisions_due, decided_in_time): (i64, i64) = (row.get(5)?, row.get(6)?);
            let (services_due, served_in_time): (i64, i64) = (row.get(7)?, row.get(8)?);
            let (filings_due, filed_in_time): (i64, i64) = (row.get(9)?, row.get(10)?);
            let findings: i64 = row.get(13)?;
            let returned: i64 = row.get(18)?;
            Ok(AssessmentRow {
                id: row.get(0)?,
                records,
                inspections: row.get(2)?,
                summary_cases: row.get(3)?,
                general_cases: row.get(4)?,
                decisions_due,
                decided_in_time,
                decided_in_time_share: share(decided_in_time, decisions_due),
                services_due,
                served_in_time,
                served_in_time_share: share(served_in_time, services_due),
                filings_due,
                filed_in_time,
                filed_in_time_share: share(filed_in_time, filings_due),
                overdue: row.get(11)?,
                decision_overdue: row.get(12)?,
                findings,
                findings_per_record: ratio(findings, records),
                veto_no_legal_subject: row.get(14)?,
                veto_too_few_officers: row.get(15)?,
                veto_certificate_invalid: row.get(16)?,
                veto_out_of_scope: row.get(17)?,
                returned,
                returned_share: ratio(returned, records),
                certificate_status: row.get(19)?,
            })
        })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
