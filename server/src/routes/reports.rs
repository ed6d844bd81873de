//! The supervision reports (issue 6, DOMAIN.md §4, DESIGN.md §10), for supervisors and admins:
//! `GET /v1/reports/overdue`, `GET /v1/reports/alerts` and `GET /v1/reports/assessment`, each
//! JSON or, with `?format=csv`, CSV (UTF-8 with a BOM, so spreadsheet programs read Chinese
//! text correctly; a header row of the JSON keys).
//!
//! Every report is SQL over the projections of every merge (`store::reports`), never a scan of
//! documents. The assessment counts and never sums an amount (Administrative Penalty Law
//! Art. 74: fines and confiscations must not be linked to assessment).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::auth::{Supervisor, now_millis};
use crate::error::ApiError;
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::reports::{
    self, AssessmentRow, DeadlineRow, DuplicateRow, ExpiringRow, Period, ScopeAlertRow,
};

/// How far ahead the overdue board looks for agreements and certificates that expire.
const EXPIRY_WINDOW_MS: i64 = 30 * DAY_MS;

const DAY_MS: i64 = 86_400_000;

/// The byte order mark that opens every CSV answer.
const BOM: &str = "\u{feff}";

/// The report routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reports/overdue", get(get_overdue))
        .route("/v1/reports/alerts", get(get_alerts))
        .route("/v1/reports/assessment", get(get_assessment))
}

/// `?format=json|csv` of the overdue board and the alerts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatQuery {
    pub(crate) format: Option<String>,
}

/// The assessment's query string: the period as `YYYY-MM-DD` (UTC days, both inclusive).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssessmentQuery {
    format: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Whether the answer is CSV; refuses a format other than `json` and `csv`.
pub(crate) fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => {
            Err(ApiError::InvalidQuery(format!("format {other:?} is not one of json, csv")))
        }
    }
}

pub(crate) fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))
}

/// The overdue board as JSON.
#[derive(Debug, Serialize)]
struct OverdueBoard {
    generated_at: i64,
    deadlines: Vec<DeadlineRow>,
    expiring: Vec<ExpiringRow>,
}

/// Every open deadline of every case with its due date and whether it is overdue, and the
/// agreements and certificates expiring within 30 days.
async fn get_overdue(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(parse_query(query)?.format.as_deref())?;
    let now = now_millis();
    let store = state.store().clone();
    let (deadlines, expiring) = run_blocking(move || {
        Ok(store.read(|tx| {
            Ok((
                reports::open_deadlines(tx, now)?,
                reports::expiring(tx, now, now + EXPIRY_WINDOW_MS)?,
            ))
        })?)
    })
    .await?;
    if !csv {
        return Ok(Json(OverdueBoard { generated_at: now, deadlines, expiring }).into_response());
    }
    let mut table = Csv::new(&[
        "item",
        "doc_id",
        "township",
        "matter",
        "officer",
        "from_event",
        "due",
        "due_date",
        "overdue",
        "provisional",
    ]);
    for row in &deadlines {
        table.row(&[
            &row.deadline,
            &row.doc_id,
            row.township.as_deref().unwrap_or_default(),
            row.matter.as_deref().unwrap_or_default(),
            "",
            &row.from_event,
            &row.due.to_string(),
            &date_of(row.due),
            &row.overdue.to_string(),
            &row.provisional.to_string(),
        ]);
    }
    for row in &expiring {
        table.row(&[
            &format!("{}_expiring", row.kind),
            &row.id,
            &row.township,
            "",
            row.officer.as_deref().unwrap_or_default(),
            "",
            &row.valid_to.to_string(),
            &date_of(row.valid_to),
            &(row.valid_to < now).to_string(),
            "false",
        ]);
    }
    Ok(table.into_response())
}

/// One duplicate-enforcement alert: records of one party and matter in several townships or
/// agencies.
#[derive(Debug, Serialize)]
struct DuplicateAlert {
    code: &'static str,
    party_key: String,
    matter: String,
    records: Vec<DuplicateRecord>,
}

#[derive(Debug, Serialize)]
struct DuplicateRecord {
    doc_id: String,
    kind: Option<String>,
    township: Option<String>,
    name_agency: String,
}

/// The alerts as JSON.
#[derive(Debug, Serialize)]
struct Alerts {
    scope: Vec<ScopeAlertRow>,
    duplicate_enforcement: Vec<DuplicateAlert>,
}

/// Out-of-scope alerts from the projected finding codes, and duplicate enforcement: one party
/// key and matter handled by two townships or in the name of two agencies.
async fn get_alerts(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(parse_query(query)?.format.as_deref())?;
    let store = state.store().clone();
    let (scope, duplicates) = run_blocking(move || {
        Ok(store
            .read(|tx| Ok((reports::scope_alerts(tx)?, reports::duplicate_enforcement(tx)?)))?)
    })
    .await?;
    let duplicate_enforcement = group_duplicates(duplicates);
    if !csv {
        return Ok(Json(Alerts { scope, duplicate_enforcement }).into_response());
    }
    let mut table =
        Csv::new(&["alert", "doc_id", "kind", "township", "matter", "party_key", "name_agency"]);
    for row in &scope {
        table.row(&[
            &row.code,
            &row.doc_id,
            row.kind.as_deref().unwrap_or_default(),
            row.township.as_deref().unwrap_or_default(),
            row.matter.as_deref().unwrap_or_default(),
            "",
            "",
        ]);
    }
    for alert in &duplicate_enforcement {
        for record in &alert.records {
            table.row(&[
                alert.code,
                &record.doc_id,
                record.kind.as_deref().unwrap_or_default(),
                record.township.as_deref().unwrap_or_default(),
                &alert.matter,
                &alert.party_key,
                &record.name_agency,
            ]);
        }
    }
    Ok(table.into_response())
}

/// Groups the rows (ordered by party key and matter) into one alert per pair, with the party
/// key masked.
fn group_duplicates(rows: Vec<DuplicateRow>) -> Vec<DuplicateAlert> {
    let mut alerts: Vec<(String, DuplicateAlert)> = Vec::new();
    for row in rows {
        let record = DuplicateRecord {
            doc_id: row.doc_id,
            kind: row.kind,
            township: row.township,
            name_agency: row.name_agency,
        };
        match alerts.last_mut() {
            Some((key, alert)) if *key == row.party_key && alert.matter == row.matter => {
                alert.records.push(record);
            }
            _ => alerts.push((
                row.party_key.clone(),
                DuplicateAlert {
                    code: "duplicate_enforcement",
                    party_key: mask(&row.party_key),
                    matter: row.matter,
                    records: vec![record],
                },
            )),
        }
    }
    alerts.into_iter().map(|(_, alert)| alert).collect()
}

/// An ID number or credit code with all but its first six and last four characters hidden;
/// shorter keys keep only their last two.
pub(crate) fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let (head, tail) = if chars.len() > 10 { (6, 4) } else { (0, chars.len().min(2)) };
    chars
        .iter()
        .enumerate()
        .map(|(index, ch)| if index < head || index >= chars.len() - tail { *ch } else { '*' })
        .collect()
}

/// The assessment as JSON.
#[derive(Debug, Serialize)]
struct Assessment {
    from: Option<String>,
    to: Option<String>,
    officers: Vec<AssessmentRow>,
    townships: Vec<AssessmentRow>,
}

/// Per officer named in the period's records and per township: volume, timeliness, quality,
/// veto items, returns and certificate status; never an amount (Art. 74).
async fn get_assessment(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    query: Result<Query<AssessmentQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parse_query(query)?;
    let csv = wants_csv(query.format.as_deref())?;
    let now = now_millis();
    let from_ms = query.from.as_deref().map(start_of_day).transpose()?.unwrap_or(i64::MIN);
    let to_ms =
        query.to.as_deref().map(start_of_day).transpose()?.map_or(i64::MAX, |start| start + DAY_MS);
    let period = Period { from_ms, to_ms, now_ms: now };
    let store = state.store().clone();
    let (officers, townships) = run_blocking(move || {
        Ok(store.read(|tx| {
            Ok((
                reports::assessment_by_officer(tx, period)?,
                reports::assessment_by_township(tx, period)?,
            ))
        })?)
    })
    .await?;
    if !csv {
        let assessment = Assessment { from: query.from, to: query.to, officers, townships };
        return Ok(Json(assessment).into_response());
    }
    let mut table = Csv::new(&[
        "level",
        "id",
        "records",
        "inspections",
        "summary_cases",
        "general_cases",
        "overdue",
        "decision_overdue",
        "findings",
        "findings_per_record",
        "veto_too_few_officers",
        "veto_certificate_invalid",
        "veto_out_of_scope",
        "returned",
        "certificate_status",
    ]);
    for (level, rows) in [("officer", &officers), ("township", &townships)] {
        for row in rows {
            table.row(&[
                level,
                &row.id,
                &row.records.to_string(),
                &row.inspections.to_string(),
                &row.summary_cases.to_string(),
                &row.general_cases.to_string(),
                &row.overdue.to_string(),
                &row.decision_overdue.to_string(),
                &row.findings.to_string(),
                &row.findings_per_record.to_string(),
                &row.veto_too_few_officers.to_string(),
                &row.veto_certificate_invalid.to_string(),
                &row.veto_out_of_scope.to_string(),
                &row.returned.to_string(),
                &row.certificate_status,
            ]);
        }
    }
    Ok(table.into_response())
}

/// Midnight UTC of a `YYYY-MM-DD` day, ms.
fn start_of_day(day: &str) -> Result<i64, ApiError> {
    let date = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| ApiError::InvalidQuery(format!("{day:?} is not a date (YYYY-MM-DD)")))?;
    Ok(date.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
}

/// The UTC day of a time, `YYYY-MM-DD`.
pub(crate) fn date_of(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|time| time.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A CSV document (RFC 4180, CRLF line ends) that starts with a BOM and a header row.
pub(crate) struct Csv {
    text: String,
}

impl Csv {
    pub(crate) fn new(header: &[&str]) -> Self {
        let mut table = Self { text: BOM.to_owned() };
        table.row(header);
        table
    }

    pub(crate) fn row(&mut self, cells: &[&str]) {
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                self.text.push(',');
            }
            if cell.contains([',', '"', '\n', '\r']) {
                self.text.push('"');
                self.text.push_str(&cell.replace('"', "\"\""));
                self.text.push('"');
            } else {
                self.text.push_str(cell);
            }
        }
        self.text.push_str("\r\n");
    }

    pub(crate) fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], self.text).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_keys_are_masked_in_the_middle() {
        assert_eq!(mask("110101199001011234"), "110101********1234");
        assert_eq!(mask("ABC"), "*BC");
    }

    #[test]
    fn cells_with_separators_are_quoted() {
        let mut table = Csv::new(&["a", "b"]);
        table.row(&["x,y", "say \"hi\""]);
        assert_eq!(table.text, "\u{feff}a,b\r\n\"x,y\",\"say \"\"hi\"\"\"\r\n");
    }
}
