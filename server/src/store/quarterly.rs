//! SQL of the quarterly case report (案件报告, issue 6, DOMAIN.md §4.1): the case list of a
//! township's cases handled in the name of a department in a quarter, read from the projections
//! of every merge (`documents`, `document_cases`, `document_numbers`, `document_findings`,
//! `document_deadlines`, `case_numbers`), and the stored reports.
//!
//! A report is an immutable snapshot in `quarterly_reports`: triggers refuse deleting a row,
//! changing its body or its other snapshot columns, and recording a submission or an
//! acknowledgement twice or out of order. Only `submitted_*` and `acknowledged_*` are ever
//! updated, each once.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::store::changes::doc_id_column;
use crate::store::{Refusal, StoreError};

/// One case of the quarter, as its projections describe it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QuarterCaseRow {
    /// The case file.
    pub(crate) doc_id: String,
    /// The official case number (案号); empty before filing.
    pub(crate) case_no: String,
    /// The document numbers (文号) the case's issued documents carry, in order.
    pub(crate) document_numbers: Vec<String>,
    /// The first party's ID number or credit code, unmasked (the route masks it).
    pub(crate) party_key: Option<String>,
    /// The matter code.
    pub(crate) matter: Option<String>,
    /// The matter's name in the registry (执法事项名称), empty for an unknown code.
    pub(crate) matter_name: String,
    /// `summary` or `general`.
    pub(crate) procedure: String,
    /// The procedure state, the outcome the counts group by.
    pub(crate) outcome: Option<String>,
    /// When the server filed the case (立案), ms.
    pub(crate) filed_at: Option<i64>,
    /// When the server decided it, ms.
    pub(crate) decided_at: Option<i64>,
    /// When a summary decision was issued on site, ms.
    pub(crate) issued_at: Option<i64>,
    /// A hearing event is on the timeline.
    pub(crate) hearing: bool,
    /// A legal review event is on the timeline.
    pub(crate) legal_review: bool,
    /// A summary case was filed with the agency (备案).
    pub(crate) filed_with_agency: bool,
    /// A deadline is past due at generation, or the decision came after the 90 days.
    pub(crate) overdue: bool,
    /// The finding codes of the merged record, in order.
    pub(crate) findings: Vec<String>,
    /// The finding codes the record raised and no longer has (整改), in order.
    pub(crate) findings_resolved: Vec<String>,
    /// The decided penalty, if any.
    pub(crate) penalty: Option<QuarterPenalty>,
}

/// A case's decided penalty as the quarterly case list shows it (DOMAIN.md §4.1). Read from
/// `document_penalties`, which only this report reads: the assessment never sees an amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QuarterPenalty {
    /// Penalty kinds (warning, fine, confiscation, …).
    pub(crate) kinds: Vec<String>,
    /// Fine, yuan.
    pub(crate) fine_yuan: i64,
    /// Value confiscated, yuan.
    pub(crate) confiscation_yuan: i64,
}

/// The time that places a case in a quarter: its filing, else its on-site decision, else its
/// first upload.
const CASE_TIME: &str = "COALESCE(c.filed_at, c.issued_at, d.created_at)";

/// The cases of `township` handled in the name of `department` whose time falls in
/// `[from_ms, to_ms)`, in time order, with overdue judged at `now_ms`.
pub(crate) fn cases(
    connection: &Connection,
    department: &str,
    township: &str,
    (from_ms, to_ms): (i64, i64),
    now_ms: i64,
) -> Result<Vec<QuarterCaseRow>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT d.id, COALESCE(n.case_no, ''), \
             (SELECT group_concat(number, ' ') FROM (SELECT number FROM document_numbers \
              WHERE doc_id = d.id AND void_reason IS NULL AND number <> '' ORDER BY number)), \
             d.party_key, d.matter, c.procedure, d.status, c.filed_at, c.decided_at, c.issued_at, \
             c.hearing, c.legal_review, c.filed_with_agency, \
             EXISTS (SELECT 1 FROM document_deadlines dl WHERE dl.doc_id = d.id AND dl.due < ?5) \
             OR EXISTS (SELECT 1 FROM document_findings f WHERE f.doc_id = d.id \
                 AND f.code = 'decision_overdue'), \
             (SELECT group_concat(code, ' ') FROM (SELECT code FROM document_findings \
              WHERE doc_id = d.id ORDER BY code)), \
             COALESCE(m.name, ''), p.kinds, p.fine_yuan, p.confiscation_yuan, \
             (SELECT group_concat(code, ' ') FROM (SELECT code FROM document_finding_history \
              WHERE doc_id = d.id AND resolved_at IS NOT NULL ORDER BY code)) \
         FROM documents d JOIN document_cases c ON c.doc_id = d.id \
         LEFT JOIN document_penalties p ON p.doc_id = d.id \
         LEFT JOIN case_numbers n ON n.doc_id = d.id \
         LEFT JOIN matters m ON m.code = d.matter \
         WHERE d.kind = 'case' AND d.township = ?1 AND c.name_agency = ?2 \
         AND {CASE_TIME} >= ?3 AND {CASE_TIME} < ?4 \
         ORDER BY {CASE_TIME}, d.id"
    ))?;
    let words = |text: Option<String>| -> Vec<String> {
        text.map(|text| text.split(' ').map(str::to_owned).collect()).unwrap_or_default()
    };
    let rows =
        statement.query_map(params![township, department, from_ms, to_ms, now_ms], |row| {
            Ok(QuarterCaseRow {
                doc_id: doc_id_column(row, 0)?.to_string(),
                case_no: row.get(1)?,
                document_numbers: words(row.get(2)?),
                party_key: row.get(3)?,
                matter: row.get(4)?,
                procedure: row.get(5)?,
                outcome: row.get(6)?,
                filed_at: row.get(7)?,
                decided_at: row.get(8)?,
                issued_at: row.get(9)?,
                hearing: row.get(10)?,
                legal_review: row.get(11)?,
                filed_with_agency: row.get(12)?,
                overdue: row.get(13)?,
                findings: words(row.get(14)?),
                findings_resolved: words(row.get(19)?),
                matter_name: row.get(15)?,
                penalty: match row.get::<_, Option<String>>(16)? {
                    Some(kinds) => Some(QuarterPenalty {
                        kinds: words(Some(kinds)),
                        fine_yuan: row.get(17)?,
                        confiscation_yuan: row.get(18)?,
                    }),
                    None => None,
                },
            })
        })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether an agency with this id is registered.
pub(crate) fn agency_exists(connection: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM agencies WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// One stored report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct QuarterlyReport {
    /// The report id.
    pub(crate) id: String,
    /// The entrusting department the report goes to.
    pub(crate) department: String,
    /// The township that reports.
    pub(crate) township: String,
    /// `YYYY-Qn`.
    pub(crate) quarter: String,
    /// Generation time, ms.
    pub(crate) generated_at: i64,
    /// The officer who generated it.
    pub(crate) generated_by: String,
    /// The snapshot.
    pub(crate) body: serde_json::Value,
    /// When the township submitted it, ms.
    pub(crate) submitted_at: Option<i64>,
    /// Who submitted it.
    pub(crate) submitted_by: Option<String>,
    /// When the department acknowledged it, ms.
    pub(crate) acknowledged_at: Option<i64>,
    /// Who acknowledged it.
    pub(crate) acknowledged_by: Option<String>,
}

/// Stores a newly generated report.
pub(crate) fn insert(connection: &Connection, report: &QuarterlyReport) -> Result<(), StoreError> {
    let body = serde_json::to_string(&report.body)
        .map_err(|err| StoreError::Io(format!("encoding a report body: {err}")))?;
    connection
        .prepare_cached(
            "INSERT INTO quarterly_reports (id, department, township, quarter, generated_at, \
             generated_by, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            report.id,
            report.department,
            report.township,
            report.quarter,
            report.generated_at,
            report.generated_by,
            body
        ])?;
    Ok(())
}

/// The report with this id, or `None`.
pub(crate) fn get(
    connection: &Connection,
    id: &str,
) -> Result<Option<QuarterlyReport>, StoreError> {
    let found = connection
        .prepare_cached(
            "SELECT id, department, township, quarter, generated_at, generated_by, body, \
             submitted_at, submitted_by, acknowledged_at, acknowledged_by \
             FROM quarterly_reports WHERE id = ?1",
        )?
        .query_row([id], |row| {
            let body: String = row.get(6)?;
            Ok((
                QuarterlyReport {
                    id: row.get(0)?,
                    department: row.get(1)?,
                    township: row.get(2)?,
                    quarter: row.get(3)?,
                    generated_at: row.get(4)?,
                    generated_by: row.get(5)?,
                    body: serde_json::Value::Null,
                    submitted_at: row.get(7)?,
                    submitted_by: row.get(8)?,
                    acknowledged_at: row.get(9)?,
                    acknowledged_by: row.get(10)?,
                },
                body,
            ))
        })
        .optional()?;
    let Some((mut report, body)) = found else { return Ok(None) };
    report.body = serde_json::from_str(&body)
        .map_err(|err| StoreError::Io(format!("a stored report body does not parse: {err}")))?;
    Ok(Some(report))
}

/// Which side of the workflow records itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The township submits the report.
    Submit,
    /// The department acknowledges it.
    Acknowledge,
}

/// Records the submission or the acknowledgement of a report once, and answers the report.
pub(crate) fn record(
    connection: &Connection,
    id: &str,
    step: Step,
    who: &str,
    now: i64,
) -> Result<QuarterlyReport, StoreError> {
    let Some(report) = get(connection, id)? else {
        return Err(Refusal::NotFound(format!("no quarterly report {id}")).into());
    };
    let sql = match step {
        Step::Submit => {
            if report.submitted_at.is_some() {
                return Err(Refusal::AlreadySubmitted(format!(
                    "quarterly report {id} was already submitted"
                ))
                .into());
            }
            "UPDATE quarterly_reports SET submitted_at = ?2, submitted_by = ?3 WHERE id = ?1"
        }
        Step::Acknowledge => {
            if report.submitted_at.is_none() {
                return Err(Refusal::NotSubmitted(format!(
                    "quarterly report {id} has not been submitted; it cannot be acknowledged"
                ))
                .into());
            }
            if report.acknowledged_at.is_some() {
                return Err(Refusal::AlreadyAcknowledged(format!(
                    "quarterly report {id} was already acknowledged"
                ))
                .into());
            }
            "UPDATE quarterly_reports SET acknowledged_at = ?2, acknowledged_by = ?3 WHERE id = ?1"
        }
    };
    connection.prepare_cached(sql)?.execute(params![id, now, who])?;
    get(connection, id)?
        .ok_or_else(|| Refusal::NotFound(format!("no quarterly report {id}")).into())
}

/// Tries to overwrite a report's body, which the trigger refuses; for tests of that trigger.
#[cfg(test)]
pub(crate) fn overwrite_body(
    connection: &Connection,
    id: &str,
    body: &str,
) -> Result<(), StoreError> {
    connection
        .prepare_cached("UPDATE quarterly_reports SET body = ?2 WHERE id = ?1")?
        .execute(params![id, body])?;
    Ok(())
}
