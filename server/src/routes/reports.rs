//! The supervision reports (issue 6, DOMAIN.md §4, DESIGN.md §10), for supervisors and admins:
//! `GET /v1/reports/overdue`, `GET /v1/reports/alerts` and `GET /v1/reports/assessment`, each
//! JSON or, with `?format=csv`, CSV (UTF-8 with a BOM, so spreadsheet programs read Chinese
//! text correctly). The CSV is for the people who read the report — township and department
//! staff — so its header row is Chinese, in the terms of DOMAIN.md §4; the JSON keys stay
//! English because they are the API contract.
//!
//! Every report is SQL over the projections of every merge (`store::reports`), never a scan of
//! documents. The assessment counts and never sums an amount (Administrative Penalty Law
//! Art. 74: fines and confiscations must not be linked to assessment).

// `#[utoipa::path(params(T))]` expands to a path to `T` that rustc finds needlessly qualified.
#![allow(unused_qualifications, reason = "the expansion of utoipa's path macro")]

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Supervisor, now_millis};
use crate::error::{ApiError, ErrorBody};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::reports::{
    self, AssessmentRow, DeadlineRow, DuplicateRow, ExpiringRow, PassedOnRow, Period, ScopeAlertRow,
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

/// `?format=json|csv` of the overdue board, the alerts and a quarterly report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FormatQuery {
    /// `json` (the default) or `csv` (UTF-8 with a BOM, Chinese header row).
    pub(crate) format: Option<String>,
}

/// The assessment's query string: the period as `YYYY-MM-DD` (UTC days, both inclusive).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AssessmentQuery {
    /// `json` (the default) or `csv`.
    format: Option<String>,
    /// First day of the period, `YYYY-MM-DD`; open when absent.
    from: Option<String>,
    /// Last day of the period, `YYYY-MM-DD`; open when absent.
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

/// The overdue board's CSV header; the columns are the JSON fields `deadline` (or
/// `entrustment_expiring` / `certificate_expiring`), `doc_id` (or the agreement id or certificate
/// number), `township`, `matter`, the officer of an expiring certificate, `from_event`, `due`
/// (ms), `due` as a day, `overdue` and `provisional`.
const OVERDUE_HEADER: [&str; 10] = [
    "期限事项",
    "记录编号",
    "乡镇",
    "执法事项",
    "执法人员",
    "起算环节",
    "到期时间戳",
    "到期日",
    "是否逾期",
    "日历未覆盖",
];

/// The alerts' CSV header: the alert code, `doc_id`, `kind`, `township`, `matter`, the masked
/// `party_key`, `name_agency` and, for a lead passed on, how many times.
const ALERTS_HEADER: [&str; 8] =
    ["预警类别", "记录编号", "记录类型", "乡镇", "执法事项", "当事人标识", "名义机关", "转交次数"];

/// The assessment's CSV header, in the order of the JSON fields of an assessment row after
/// the level (`officer` or `township`) and the id. No column is, or may become, an amount
/// (Art. 74).
const ASSESSMENT_HEADER: [&str; 26] = [
    "层级",
    "编号",
    "记录数",
    "检查数",
    "简易程序案件数",
    "普通程序案件数",
    "应在九十日内决定数",
    "九十日内决定数",
    "九十日内决定率",
    "应送达数",
    "按期送达数",
    "按期送达率",
    "应立案数",
    "按期立案数",
    "按期立案率",
    "逾期数",
    "决定超期数",
    "问题数",
    "每件问题数",
    "否决项：无执法主体",
    "否决项：执法人员不足两人",
    "否决项：执法人员不具备资格",
    "否决项：越权执法",
    "退回补正数",
    "退回补正率",
    "证件状态",
];

/// The overdue board as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OverdueBoard {
    generated_at: i64,
    deadlines: Vec<DeadlineRow>,
    expiring: Vec<ExpiringRow>,
}

/// Every open deadline of every case with its due date and whether it is overdue, and the
/// agreements and certificates expiring within 30 days.
#[utoipa::path(
    get,
    path = "/v1/reports/overdue",
    tag = "reports",
    params(FormatQuery),
    responses(
        (status = 200, description = "The overdue board: JSON, or with `?format=csv` CSV \
            (UTF-8 with a BOM)",
            content((OverdueBoard = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`invalid_query`: a format other than json or csv", body = ErrorBody),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
    ),
)]
pub(crate) async fn get_overdue(
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
    let mut table = Csv::new(&OVERDUE_HEADER);
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

/// One duplicate-enforcement or second-fine alert: the records of one party and matter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DuplicateAlert {
    /// `duplicate_enforcement` or `second_fine`.
    code: &'static str,
    /// The party's ID number or credit code, masked.
    party_key: String,
    /// The matter code.
    matter: String,
    /// The records, by township.
    records: Vec<DuplicateRecord>,
}

/// One record of a [`DuplicateAlert`].
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DuplicateRecord {
    doc_id: String,
    kind: Option<String>,
    township: Option<String>,
    name_agency: String,
}

/// The alerts as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Alerts {
    /// Out of scope (越权): one row per record and finding code.
    scope: Vec<ScopeAlertRow>,
    /// One party key and matter handled by two townships or agencies at overlapping times.
    duplicate_enforcement: Vec<DuplicateAlert>,
    /// Two fines for one party and matter at overlapping times (一事不再罚, Art. 29).
    second_fine: Vec<DuplicateAlert>,
    /// Leads passed on two or more times (推诿).
    passed_on: Vec<PassedOnRow>,
}

/// Out-of-scope alerts from the projected finding codes; duplicate enforcement (one party key
/// and matter handled by two townships or in the name of two agencies at overlapping times);
/// second fines for one act; leads passed on two or more times.
#[utoipa::path(
    get,
    path = "/v1/reports/alerts",
    tag = "reports",
    params(FormatQuery),
    responses(
        (status = 200, description = "The alerts: JSON, or with `?format=csv` CSV (UTF-8 with \
            a BOM), one row per record",
            content((Alerts = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`invalid_query`: a format other than json or csv", body = ErrorBody),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
    ),
)]
pub(crate) async fn get_alerts(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(parse_query(query)?.format.as_deref())?;
    let store = state.store().clone();
    let (scope, duplicates, second_fines, passed_on) = run_blocking(move || {
        Ok(store.read(|tx| {
            Ok((
                reports::scope_alerts(tx)?,
                reports::duplicate_enforcement(tx)?,
                reports::second_fines(tx)?,
                reports::passed_on(tx)?,
            ))
        })?)
    })
    .await?;
    let duplicate_enforcement = group_duplicates("duplicate_enforcement", duplicates);
    let second_fine = group_duplicates("second_fine", second_fines);
    if !csv {
        let alerts = Alerts { scope, duplicate_enforcement, second_fine, passed_on };
        return Ok(Json(alerts).into_response());
    }
    let mut table = Csv::new(&ALERTS_HEADER);
    for row in &scope {
        table.row(&[
            &row.code,
            &row.doc_id,
            row.kind.as_deref().unwrap_or_default(),
            row.township.as_deref().unwrap_or_default(),
            row.matter.as_deref().unwrap_or_default(),
            "",
            "",
            "",
        ]);
    }
    for alert in duplicate_enforcement.iter().chain(&second_fine) {
        for record in &alert.records {
            table.row(&[
                alert.code,
                &record.doc_id,
                record.kind.as_deref().unwrap_or_default(),
                record.township.as_deref().unwrap_or_default(),
                &alert.matter,
                &alert.party_key,
                &record.name_agency,
                "",
            ]);
        }
    }
    for row in &passed_on {
        table.row(&[
            row.code,
            &row.doc_id,
            "case",
            row.township.as_deref().unwrap_or_default(),
            row.matter.as_deref().unwrap_or_default(),
            "",
            "",
            &row.times.to_string(),
        ]);
    }
    Ok(table.into_response())
}

/// Groups the rows (ordered by party key and matter) into one alert per pair, with the party
/// key masked.
fn group_duplicates(code: &'static str, rows: Vec<DuplicateRow>) -> Vec<DuplicateAlert> {
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
                    code,
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
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Assessment {
    from: Option<String>,
    to: Option<String>,
    officers: Vec<AssessmentRow>,
    townships: Vec<AssessmentRow>,
}

/// Per officer named in the period's records and per township: volume, timeliness, quality,
/// veto items, returns and certificate status; never an amount (Art. 74).
#[utoipa::path(
    get,
    path = "/v1/reports/assessment",
    tag = "reports",
    params(AssessmentQuery),
    responses(
        (status = 200, description = "The assessment: JSON, or with `?format=csv` CSV (UTF-8 \
            with a BOM)",
            content((Assessment = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`invalid_query`: a bad format or a day not YYYY-MM-DD", body = ErrorBody),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
    ),
)]
pub(crate) async fn get_assessment(
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
    let mut table = Csv::new(&ASSESSMENT_HEADER);
    let share = |share: Option<f64>| share.map(|share| share.to_string()).unwrap_or_default();
    for (level, rows) in [("officer", &officers), ("township", &townships)] {
        for row in rows {
            table.row(&[
                level,
                &row.id,
                &row.records.to_string(),
                &row.inspections.to_string(),
                &row.summary_cases.to_string(),
                &row.general_cases.to_string(),
                &row.decisions_due.to_string(),
                &row.decided_in_time.to_string(),
                &share(row.decided_in_time_share),
                &row.services_due.to_string(),
                &row.served_in_time.to_string(),
                &share(row.served_in_time_share),
                &row.filings_due.to_string(),
                &row.filed_in_time.to_string(),
                &share(row.filed_in_time_share),
                &row.overdue.to_string(),
                &row.decision_overdue.to_string(),
                &row.findings.to_string(),
                &row.findings_per_record.to_string(),
                &row.veto_no_legal_subject.to_string(),
                &row.veto_too_few_officers.to_string(),
                &row.veto_certificate_invalid.to_string(),
                &row.veto_out_of_scope.to_string(),
                &row.returned.to_string(),
                &row.returned_share.to_string(),
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
    use utoipa::OpenApi;

    use super::*;
    use crate::routes::openapi::ApiDoc;

    #[test]
    fn the_report_answers_are_schemas_and_their_query_parameters_are_documented() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        for schema in ["OverdueBoard", "Alerts", "Assessment", "AssessmentRow", "QuarterlyReport"] {
            assert!(schemas[schema].is_object(), "{schema} in {schemas}");
        }
        // A report answers JSON or CSV under the one 200: both must be documented there.
        for path in [
            "/v1/reports/overdue",
            "/v1/reports/alerts",
            "/v1/reports/assessment",
            "/v1/reports/quarterly/{id}",
        ] {
            let content = &document["paths"][path]["get"]["responses"]["200"]["content"];
            assert!(content["application/json"]["schema"].is_object(), "{path}: {content}");
            assert!(content["text/csv"].is_object(), "{path}: {content}");
        }
        let assessment = document["paths"]["/v1/reports/assessment"]["get"].to_string();
        for parameter in ["\"format\"", "\"from\"", "\"to\""] {
            assert!(assessment.contains(parameter), "{parameter} in {assessment}");
        }
    }

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
