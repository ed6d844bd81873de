//! In-process tests of the quarterly case report (issue 6, DOMAIN.md §4.1): a seeded quarter's
//! counts and case list, the snapshot that later changes do not reach, submit and acknowledge
//! once each, the trigger that refuses editing a body, and the reconciliation of the number
//! blocks leased in the quarter.

use automerge::{ActorId, AutoCommit, ROOT, transaction::Transactable as _};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sync_core::ids::DocumentId;
use sync_core::records::{IssuedDocument, Penalty, Procedure, SERVER_ACTOR, create_document};

use crate::auth::now_millis;
use crate::fixtures::doc_id;
use crate::store::quarterly;
use crate::tests::reports::{case_of, parse_csv, report_csv, seed};
use crate::tests::{CHENGGUAN, Client, ENTRUSTED, HEXI, TestApi};

/// The entrusting department of the demo registry's agreement with Chengguan.
const DEPARTMENT: &str = "d-yingji";

/// Midnight UTC of a 2026 day, ms.
fn day_2026(month: u32, day: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, month, day)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

async fn generate(api: &TestApi, client: &Client, township: &str, quarter: &str) -> Value {
    let response = api
        .post_json(
            client,
            "/v1/reports/quarterly",
            &json!({"department": DEPARTMENT, "township": township, "quarter": quarter}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&response.body));
    response.json()
}

fn rows<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Seeds 2026-Q1 in Chengguan: two general cases (one decided after a hearing, one left
/// undecided and so overdue), two summary cases (one filed with the agency), and a case of
/// the second quarter and one of Hexi that the report leaves out. Answers the ids in order and
/// the document of the undecided case, for later changes.
fn seed_quarter(api: &TestApi) -> ([DocumentId; 4], AutoCommit) {
    let ids = [doc_id(70), doc_id(71), doc_id(72), doc_id(73)];
    let party = "110101199001011234";
    let mut decided = case_of(
        ids[0],
        CHENGGUAN,
        ENTRUSTED,
        party,
        &[("file", day_2026(1, 10)), ("hearing", day_2026(2, 1)), ("decide", day_2026(2, 20))],
    );
    decided.final_penalty = Some(Penalty {
        kinds: vec!["warning".to_owned(), "fine".to_owned()],
        fine_yuan: 1_500,
        confiscation_yuan: 0,
        description: "警告并处罚款".to_owned(),
    });
    decided.documents.push(IssuedDocument {
        number: "应急罚〔2026〕7号".to_owned(),
        doc_type: "decision".to_owned(),
        block: String::new(),
        serial: 7,
        issued_at: day_2026(2, 20),
    });
    let undecided = case_of(ids[1], CHENGGUAN, ENTRUSTED, "", &[("file", day_2026(2, 2))]);
    let mut summary_filed = case_of(
        ids[2],
        CHENGGUAN,
        ENTRUSTED,
        "",
        &[("issue_on_site", day_2026(3, 3)), ("file_with_agency", day_2026(3, 4))],
    );
    summary_filed.procedure = Procedure::Summary.as_str().to_owned();
    let mut summary_unfiled =
        case_of(ids[3], CHENGGUAN, ENTRUSTED, "", &[("issue_on_site", day_2026(3, 5))]);
    summary_unfiled.procedure = Procedure::Summary.as_str().to_owned();
    let later = case_of(doc_id(74), CHENGGUAN, ENTRUSTED, "", &[("file", day_2026(4, 2))]);
    let elsewhere = case_of(doc_id(75), HEXI, ENTRUSTED, "", &[("file", day_2026(1, 12))]);
    for (id, mut case_file) in [ids[0], ids[2], ids[3], doc_id(74), doc_id(75)].into_iter().zip([
        decided,
        summary_filed,
        summary_unfiled,
        later,
        elsewhere,
    ]) {
        DEPARTMENT.clone_into(&mut case_file.name_agency);
        seed(api, id, &case_file);
    }
    let mut undecided = undecided;
    DEPARTMENT.clone_into(&mut undecided.name_agency);
    let mut doc = create_document(&ActorId::from(SERVER_ACTOR), &undecided, now_millis()).unwrap();
    api.state.store().merge_unchecked(vec![(ids[1], doc.get_changes(&[]))], now_millis()).unwrap();
    (ids, doc)
}

#[tokio::test]
async fn a_quarterly_report_counts_and_lists_the_quarters_cases_and_stays_as_generated() {
    // Arrange
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let (ids, mut undecided) = seed_quarter(&api);

    // Act
    let report = generate(&api, &supervisor, CHENGGUAN, "2026-Q1").await;

    // Assert: the four cases of the quarter, in time order, and nothing else.
    let body = &report["body"];
    let listed: Vec<Value> =
        rows(body, "cases").iter().map(|case| case["doc_id"].clone()).collect();
    let expected: Vec<Value> = ids.iter().map(|id| json!(id.to_string())).collect();
    assert_eq!(listed, expected, "{body}");
    let first = &rows(body, "cases")[0];
    assert_eq!(first["party"], "110101********1234");
    assert_eq!(first["document_numbers"], json!(["应急罚〔2026〕7号"]));
    assert_eq!(first["hearing"], true);
    assert_eq!(first["filed_at"], day_2026(1, 10));
    assert_eq!(first["decided_at"], day_2026(2, 20));
    assert_eq!(
        first["penalty"],
        json!({"kinds": ["warning", "fine"], "fine_yuan": 1_500, "confiscation_yuan": 0})
    );
    assert_eq!(rows(body, "cases")[1]["penalty"], Value::Null);
    assert_eq!(rows(body, "cases")[1]["overdue"], true, "{body}");
    assert!(!body.to_string().contains("110101199001011234"));
    // The counts add up to the list, by matter × procedure × outcome.
    let counts = rows(body, "counts");
    let total: i64 = counts.iter().map(|row| row["cases"].as_i64().unwrap()).sum();
    assert_eq!(total, 4, "{body}");
    let summary: i64 = counts
        .iter()
        .filter(|row| row["procedure"] == "summary" && row["matter"] == ENTRUSTED)
        .map(|row| row["cases"].as_i64().unwrap())
        .sum();
    assert_eq!(summary, 2, "{body}");
    assert_eq!(
        body["summary_filing"],
        json!({"summary_cases": 2, "filed_with_agency": 1, "not_filed": [ids[3].to_string()]})
    );

    // A later change to a case (it moves to another name agency) does not reach the stored
    // snapshot; a fresh report sees it.
    let id = report["id"].as_str().unwrap().to_owned();
    let before = undecided.get_heads();
    undecided.put(ROOT, "name_agency", "d-other").unwrap();
    let changes = undecided.get_changes(&before);
    api.state.store().merge_unchecked(vec![(ids[1], changes)], now_millis()).unwrap();
    let again = api.get(&supervisor, &format!("/v1/reports/quarterly/{id}")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["body"], report["body"]);
    let fresh = generate(&api, &supervisor, CHENGGUAN, "2026-Q1").await;
    assert_eq!(rows(&fresh["body"], "cases").len(), 3, "{fresh}");
}

#[tokio::test]
async fn the_case_list_names_the_findings_a_case_raised_and_those_it_resolved() {
    // Arrange: a case filed with one officer present (too few), then a second officer added.
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let id = doc_id(76);
    let mut case_file = case_of(id, CHENGGUAN, ENTRUSTED, "", &[("file", day_2026(1, 20))]);
    DEPARTMENT.clone_into(&mut case_file.name_agency);
    let second = case_file.officers.pop().expect("case_of names two officers");
    let mut doc = create_document(&ActorId::from(SERVER_ACTOR), &case_file, now_millis()).unwrap();
    api.state.store().merge_unchecked(vec![(id, doc.get_changes(&[]))], now_millis()).unwrap();
    let raised = generate(&api, &supervisor, CHENGGUAN, "2026-Q1").await;

    // Act
    let before = doc.get_heads();
    case_file.officers.push(second);
    autosurgeon::reconcile(&mut doc, &case_file).unwrap();
    let changes = doc.get_changes(&before);
    api.state.store().merge_unchecked(vec![(id, changes)], now_millis()).unwrap();
    let resolved = generate(&api, &supervisor, CHENGGUAN, "2026-Q1").await;

    // Assert
    let open = |report: &Value, key: &str| rows(&report["body"]["cases"][0], key).to_vec();
    assert!(open(&raised, "findings").contains(&json!("too_few_officers")), "{raised}");
    assert_eq!(open(&raised, "findings_resolved"), Vec::<Value>::new(), "{raised}");
    assert!(!open(&resolved, "findings").contains(&json!("too_few_officers")), "{resolved}");
    assert_eq!(open(&resolved, "findings_resolved"), [json!("too_few_officers")], "{resolved}");
}

#[tokio::test]
async fn a_report_is_submitted_then_acknowledged_once_each_and_its_body_never_changes() {
    // Arrange
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let (ids, _) = seed_quarter(&api);
    let report = generate(&api, &supervisor, CHENGGUAN, "2026-Q1").await;
    let id = report["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/reports/quarterly/{id}");

    // Act and assert
    api.post_json(&supervisor, &format!("{path}/acknowledge"), &json!({}))
        .await
        .check_error(StatusCode::CONFLICT, "not_submitted");
    let submitted = api.post_json(&supervisor, &format!("{path}/submit"), &json!({})).await;
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.json());
    assert!(submitted.json()["submitted_by"].is_string());
    api.post_json(&supervisor, &format!("{path}/submit"), &json!({}))
        .await
        .check_error(StatusCode::CONFLICT, "already_submitted");
    let acknowledged = api.post_json(&supervisor, &format!("{path}/acknowledge"), &json!({})).await;
    assert_eq!(acknowledged.status, StatusCode::OK, "{}", acknowledged.json());
    assert!(acknowledged.json()["acknowledged_at"].is_i64());
    api.post_json(&supervisor, &format!("{path}/acknowledge"), &json!({}))
        .await
        .check_error(StatusCode::CONFLICT, "already_acknowledged");
    api.post_json(&supervisor, "/v1/reports/quarterly/qr-unknown/submit", &json!({}))
        .await
        .check_error(StatusCode::NOT_FOUND, "not_found");

    // The trigger refuses a new body, whoever writes it.
    let refused = api.state.store().write({
        let id = id.clone();
        move |tx| quarterly::overwrite_body(tx, &id, "{}")
    });
    assert!(refused.is_err());
    let stored = api.get(&supervisor, &path).await.json();
    assert_eq!(stored["body"], report["body"]);

    // The case list as CSV, parsed back: Chinese headers, and the Chinese values intact.
    let text = report_csv(&api, &supervisor, &path, "?format=csv").await;
    let (header, records) = parse_csv(&text);
    assert_eq!(
        header,
        [
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
            "已整改问题"
        ]
    );
    assert_eq!(records.len(), 4, "{text}");
    assert_eq!(records[0][1], ids[0].to_string());
    assert_eq!(records[0][2], "应急罚〔2026〕7号");
    assert_eq!(records[0][3], "110101********1234");
    assert_eq!(records[0][4], ENTRUSTED);
    assert_eq!(records[0][5], "未按规定设置安全警示标志");
    assert_eq!(records[0][8..10], ["2026-01-10", "2026-02-20"]);
    assert_eq!(records[0][11..14], ["warning fine", "1500", "0"]);
    assert_eq!(records[1][11..14], ["", "", ""], "an undecided case has no penalty");
}

#[tokio::test]
async fn officers_may_not_generate_and_the_quarter_is_checked() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let body = json!({"department": DEPARTMENT, "township": CHENGGUAN, "quarter": "2026-Q1"});
    api.post_json(&officer, "/v1/reports/quarterly", &body)
        .await
        .check_error(StatusCode::FORBIDDEN, "forbidden");
    let bad = json!({"department": DEPARTMENT, "township": CHENGGUAN, "quarter": "2026-Q5"});
    api.post_json(&supervisor, "/v1/reports/quarterly", &bad)
        .await
        .check_error(StatusCode::BAD_REQUEST, "malformed_json");
}

#[tokio::test]
async fn the_blocks_leased_in_the_quarter_are_reconciled() {
    // Arrange: an officer leases a block now.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let leased = api
        .post_json(
            &officer,
            "/v1/numbers/lease",
            &json!({"doc_type": "onsite_decision", "count": 3}),
        )
        .await;
    assert_eq!(leased.status, StatusCode::CREATED, "{}", leased.json());
    let block = leased.json();
    let now = chrono::DateTime::from_timestamp_millis(now_millis()).unwrap();
    let quarter =
        format!("{}-Q{}", chrono::Datelike::year(&now), chrono::Datelike::month0(&now) / 3 + 1);

    // Act
    let report = generate(&api, &supervisor, CHENGGUAN, &quarter).await;

    // Assert
    let blocks = rows(&report["body"], "number_blocks");
    assert_eq!(blocks.len(), 1, "{report}");
    assert_eq!(blocks[0]["block"], block["id"]);
    assert_eq!(blocks[0]["unused"], json!([1, 2, 3]));
}
