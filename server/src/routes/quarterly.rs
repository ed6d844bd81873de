//! The quarterly case report (案件报告, issue 6, DOMAIN.md §4.1), township → entrusting
//! department, for supervisors and admins:
//!
//! - `POST /v1/reports/quarterly` generates an immutable snapshot of a township's cases handled
//!   in the department's name in a quarter: counts by matter × procedure × outcome, the case list
//!   (party masked), reconciliation of the department's number blocks leased in the quarter, and
//!   summary-procedure filing completeness (备案);
//! - `GET /v1/reports/quarterly/{id}` answers the stored snapshot, JSON or, with `?format=csv`,
//!   its case list (UTF-8 with a BOM);
//! - `POST /v1/reports/quarterly/{id}/submit` (the township's side) and `/acknowledge` (the
//!   department's side) are each recorded once, in that order.
//!
//! The snapshot is SQL over the projections of every merge (`store::quarterly`); a later change
//! to a case never reaches a generated report. Quarters are UTC, like the other reports.

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;
use serde_json::{Value, json};
use sync_core::numbers::reconcile;
use utoipa::ToSchema;

use crate::auth::Supervisor;
use crate::auth::keys::random_bytes;
use crate::auth::now_millis;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::routes::reports::{Csv, FormatQuery, date_of, mask, parse_query, wants_csv};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::quarterly::{self, QuarterCaseRow, QuarterlyReport, Step};
use crate::store::{Refusal, numbers};

/// The quarterly report routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reports/quarterly", post(generate))
        .route("/v1/reports/quarterly/{id}", get(get_report))
        .route("/v1/reports/quarterly/{id}/submit", post(submit))
        .route("/v1/reports/quarterly/{id}/acknowledge", post(acknowledge))
}

/// The body of `POST /v1/reports/quarterly`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    /// The entrusting department (agency id) the report goes to.
    department: String,
    /// The township that reports.
    township: String,
    /// `YYYY-Qn`.
    quarter: String,
}

/// `[start, end)` of a `YYYY-Qn` quarter, ms, UTC.
fn quarter_bounds(quarter: &str) -> Result<(i64, i64), ApiError> {
    let invalid = || ApiError::MalformedJson(format!("quarter {quarter:?} is not YYYY-Q1..Q4"));
    let (year, number) = quarter.split_once("-Q").ok_or_else(invalid)?;
    let year: i32 = year.parse().map_err(|_| invalid())?;
    let number: u32 = number.parse().map_err(|_| invalid())?;
    if !(1..=4).contains(&number) || !(2000..=2999).contains(&year) {
        return Err(invalid());
    }
    let start_of = |year: i32, month: u32| {
        NaiveDate::from_ymd_opt(year, month, 1)
            .map(|date| date.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
            .ok_or_else(invalid)
    };
    let start = start_of(year, number * 3 - 2)?;
    let end = if number == 4 { start_of(year + 1, 1)? } else { start_of(year, number * 3 + 1)? };
    Ok((start, end))
}

/// Generates and stores a snapshot; answers it with `201 Created`.
#[utoipa::path(
    post,
    path = "/v1/reports/quarterly",
    tag = "reports",
    request_body = GenerateRequest,
    responses(
        (status = 201, description = "The snapshot, generated and stored", body = QuarterlyReport),
        (status = 400, description = "`malformed_json`: a body that does not fit, or a quarter \
            that is not YYYY-Q1..Q4", body = ErrorBody),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
        (status = 422, description = "`unknown_reference`: an unknown department or township", body = ErrorBody),
    ),
)]
pub(crate) async fn generate(
    State(state): State<AppState>,
    supervisor: Supervisor,
    ApiJson(request): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let bounds = quarter_bounds(&request.quarter)?;
    let now = now_millis();
    let store = state.store().clone();
    let (department, township) = (request.department.clone(), request.township.clone());
    let (cases, blocks) = run_blocking(move || {
        Ok(store.read(|tx| {
            for agency in [&department, &township] {
                if !quarterly::agency_exists(tx, agency)? {
                    return Err(Refusal::UnknownReference(format!("no agency {agency}")).into());
                }
            }
            let cases = quarterly::cases(tx, &department, &township, bounds, now)?;
            let mut blocks = Vec::new();
            for block in numbers::blocks_leased(tx, &department, bounds)? {
                let uses = numbers::uses(tx, &block.id)?;
                blocks.push((block, uses));
            }
            Ok((cases, blocks))
        })?)
    })
    .await?;
    let number_blocks: Vec<Value> = blocks
        .iter()
        .map(|(block, uses)| {
            let reconciliation = reconcile(block, uses);
            json!({
                "block": block.id,
                "doc_type": block.doc_type,
                "year": block.year,
                "first": block.first,
                "last": block.last,
                "device": block.device,
                "used": reconciliation.used,
                "void": reconciliation.void,
                "unused": reconciliation.unused,
                "duplicates": reconciliation.duplicates,
                "outside": reconciliation.outside,
            })
        })
        .collect();
    let body = json!({
        "department": request.department,
        "township": request.township,
        "quarter": request.quarter,
        "from": bounds.0,
        "to": bounds.1,
        "counts": counts(&cases),
        "cases": cases.iter().map(case_entry).collect::<Vec<_>>(),
        "number_blocks": number_blocks,
        "summary_filing": summary_filing(&cases),
    });
    let report = QuarterlyReport {
        id: format!("qr-{}", hex::encode(random_bytes::<8>())),
        department: request.department,
        township: request.township,
        quarter: request.quarter,
        generated_at: now,
        generated_by: supervisor.0.officer,
        body,
        submitted_at: None,
        submitted_by: None,
        acknowledged_at: None,
        acknowledged_by: None,
    };
    let store = state.store().clone();
    let stored = report.clone();
    run_blocking(move || Ok(store.write(move |tx| quarterly::insert(tx, &stored))?)).await?;
    tracing::info!(report = %report.id, quarter = %report.quarter, "generated a quarterly report");
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

/// Cases by matter × procedure × outcome.
fn counts(cases: &[QuarterCaseRow]) -> Vec<Value> {
    let mut counted: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for case in cases {
        let key = (
            case.matter.clone().unwrap_or_default(),
            case.procedure.clone(),
            case.outcome.clone().unwrap_or_default(),
        );
        *counted.entry(key).or_default() += 1;
    }
    counted
        .into_iter()
        .map(|((matter, procedure, outcome), cases)| {
            json!({"matter": matter, "procedure": procedure, "outcome": outcome, "cases": cases})
        })
        .collect()
}

/// One case of the list, its party masked like the alerts mask it.
fn case_entry(case: &QuarterCaseRow) -> Value {
    json!({
        "doc_id": case.doc_id,
        "case_no": case.case_no,
        "document_numbers": case.document_numbers,
        "party": case.party_key.as_deref().map(mask).unwrap_or_default(),
        "matter": case.matter,
        "matter_name": case.matter_name,
        "procedure": case.procedure,
        "outcome": case.outcome,
        "filed_at": case.filed_at,
        "decided_at": case.decided_at,
        "issued_at": case.issued_at,
        "penalty": case.penalty,
        "hearing": case.hearing,
        "legal_review": case.legal_review,
        "overdue": case.overdue,
        "findings": case.findings,
        "findings_resolved": case.findings_resolved,
    })
}

/// Summary-procedure cases with and without a `file_with_agency` event (备案).
fn summary_filing(cases: &[QuarterCaseRow]) -> Value {
    let summary: Vec<&QuarterCaseRow> =
        cases.iter().filter(|case| case.procedure == "summary").collect();
    let not_filed: Vec<&str> = summary
        .iter()
        .filter(|case| !case.filed_with_agency)
        .map(|case| case.doc_id.as_str())
        .collect();
    json!({
        "summary_cases": summary.len(),
        "filed_with_agency": summary.len() - not_filed.len(),
        "not_filed": not_filed,
    })
}

fn report_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id).map_err(|_| ApiError::NotFound)
}

/// The case list's CSV header, in the order of a case's JSON fields: `case_no`, `doc_id`,
/// `document_numbers`, `party` (masked), `matter`, `matter_name`, `procedure`, `outcome`, the
/// filing, decision and on-site issue days, the penalty's kinds, fine and confiscation,
/// `hearing`, `legal_review`, `overdue`, `findings` and `findings_resolved`.
const CASE_LIST_HEADER: [&str; 19] = [
    "案号",
    "记录编号",
    "文书编号",
    "当事人",
    "执法事项",
    "事项名称",
    "程序",
    "办理结果",
    "立案日期",
    "决定日期",
    "当场处罚日期",
    "处罚种类",
    "罚款金额（元）",
    "没收金额（元）",
    "听证",
    "法制审核",
    "是否逾期",
    "问题",
    "已整改问题",
];

/// The stored snapshot, JSON or its case list as CSV.
#[utoipa::path(
    get,
    path = "/v1/reports/quarterly/{id}",
    tag = "reports",
    params(("id" = String, Path, description = "The report id"), FormatQuery),
    responses(
        (status = 200, description = "The stored snapshot as JSON, or with `?format=csv` its \
            case list as CSV (UTF-8 with a BOM)",
            content((QuarterlyReport = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`invalid_query`: a format other than json or csv", body = ErrorBody),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such report", body = ErrorBody),
    ),
)]
pub(crate) async fn get_report(
    State(state): State<AppState>,
    _supervisor: Supervisor,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = report_id(id)?;
    let csv = wants_csv(parse_query(query)?.format.as_deref())?;
    let store = state.store().clone();
    let report = run_blocking(move || Ok(store.read(|tx| quarterly::get(tx, &id))?))
        .await?
        .ok_or(ApiError::NotFound)?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let mut table = Csv::new(&CASE_LIST_HEADER);
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    };
    let day = |value: &Value| value.as_i64().map(date_of).unwrap_or_default();
    for case in report.body["cases"].as_array().map(Vec::as_slice).unwrap_or_default() {
        table.row(&[
            &text(&case["case_no"]),
            &text(&case["doc_id"]),
            &text(&case["document_numbers"]),
            &text(&case["party"]),
            &text(&case["matter"]),
            &text(&case["matter_name"]),
            &text(&case["procedure"]),
            &text(&case["outcome"]),
            &day(&case["filed_at"]),
            &day(&case["decided_at"]),
            &day(&case["issued_at"]),
            &text(&case["penalty"]["kinds"]),
            &text(&case["penalty"]["fine_yuan"]),
            &text(&case["penalty"]["confiscation_yuan"]),
            &text(&case["hearing"]),
            &text(&case["legal_review"]),
            &text(&case["overdue"]),
            &text(&case["findings"]),
            &text(&case["findings_resolved"]),
        ]);
    }
    Ok(table.into_response())
}

/// The township submits the report, once.
#[utoipa::path(
    post,
    path = "/v1/reports/quarterly/{id}/submit",
    tag = "reports",
    params(("id" = String, Path, description = "The report id")),
    responses(
        (status = 200, description = "The report, submitted", body = QuarterlyReport),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such report", body = ErrorBody),
        (status = 409, description = "`already_submitted`", body = ErrorBody),
    ),
)]
pub(crate) async fn submit(
    state: State<AppState>,
    supervisor: Supervisor,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<QuarterlyReport>, ApiError> {
    record(state, supervisor, id, Step::Submit).await
}

/// The department acknowledges the submitted report, once.
#[utoipa::path(
    post,
    path = "/v1/reports/quarterly/{id}/acknowledge",
    tag = "reports",
    params(("id" = String, Path, description = "The report id")),
    responses(
        (status = 200, description = "The report, acknowledged", body = QuarterlyReport),
        (status = 401, description = "Missing or invalid token or DPoP proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a supervisor or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such report", body = ErrorBody),
        (status = 409, description = "`not_submitted` or `already_acknowledged`", body = ErrorBody),
    ),
)]
pub(crate) async fn acknowledge(
    state: State<AppState>,
    supervisor: Supervisor,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<QuarterlyReport>, ApiError> {
    record(state, supervisor, id, Step::Acknowledge).await
}

async fn record(
    State(state): State<AppState>,
    supervisor: Supervisor,
    id: Result<Path<String>, PathRejection>,
    step: Step,
) -> Result<Json<QuarterlyReport>, ApiError> {
    let id = report_id(id)?;
    let now = now_millis();
    let store = state.store().clone();
    let report = run_blocking(move || {
        Ok(store.write(move |tx| quarterly::record(tx, &id, step, &supervisor.0.officer, now))?)
    })
    .await?;
    tracing::info!(report = %report.id, ?step, "recorded a quarterly report step");
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_are_three_utc_months() {
        let (start, end) = quarter_bounds("2026-Q4").unwrap();
        assert_eq!(
            (date_of(start), date_of(end)),
            ("2026-10-01".to_owned(), "2027-01-01".to_owned())
        );
        assert!(quarter_bounds("2026-Q5").is_err());
        assert!(quarter_bounds("2026Q1").is_err());
    }
}
