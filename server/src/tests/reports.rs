//! In-process tests of the supervision reports (issue 6): the overdue board, the alerts and the
//! officer assessment, JSON and CSV, and the Art. 74 rule that no assessment output carries an
//! amount.
//!
//! Records are seeded straight through the store's merge (`Store::merge_unchecked`), which
//! makes the same projections as a sync, so that a case can be filed months ago and a record
//! can sit in a township its officer could not upload to.

use std::collections::BTreeMap;

use automerge::ActorId;
use axum::http::{StatusCode, header};
use serde_json::{Value, json};
use sync_core::ids::DocumentId;
use sync_core::records::{
    CaseFile, OfficerPresent, Party, Penalty, Procedure, SERVER_ACTOR, create_document,
};

use crate::auth::now_millis;
use crate::fixtures::doc_id;
use crate::tests::{CHENGGUAN, Client, ENTRUSTED, HEXI, TestApi};

const DAY_MS: i64 = 86_400_000;

async fn report_json(api: &TestApi, client: &Client, path: &str, query: &str) -> Value {
    let response = api.get(client, &format!("{path}{query}")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", String::from_utf8_lossy(&response.body));
    response.json()
}

/// A CSV answer: checks its content type and BOM, returns its text without the BOM.
pub(super) async fn report_csv(api: &TestApi, client: &Client, path: &str, query: &str) -> String {
    let response = api.get(client, &format!("{path}{query}")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let text = String::from_utf8(response.body.to_vec()).expect("UTF-8");
    text.strip_prefix('\u{feff}').expect("the CSV starts with a BOM").to_owned()
}

/// A case of `matter` in `township` against the party with `party_key`, handled by two demo
/// officers, with `events` (kind, device time) on its timeline.
pub(super) fn case_of(
    id: DocumentId,
    township: &str,
    matter: &str,
    party_key: &str,
    events: &[(&str, i64)],
) -> CaseFile {
    let party = Party {
        kind: "natural".to_owned(),
        name: "张三".to_owned(),
        id_number: party_key.to_owned(),
    };
    let mut case_file = CaseFile::new(id.to_string(), Procedure::General, matter.to_owned(), party);
    township.clone_into(&mut case_file.township);
    case_file.officers = ["o-1", "o-2"]
        .into_iter()
        .map(|officer| OfficerPresent { officer: officer.to_owned(), cert_no: String::new() })
        .collect();
    for (index, (kind, at)) in events.iter().enumerate() {
        case_file.append_event(
            format!("ev-{index}"),
            (*kind).to_owned(),
            "o-1".to_owned(),
            ActorId::from([9; 16]).to_hex_string(),
            *at,
            BTreeMap::new(),
        );
    }
    case_file
}

/// Stores a record through the store's merge, as a sync would.
pub(super) fn seed(api: &TestApi, id: DocumentId, case_file: &CaseFile) {
    // Written by the server's actor, as granted filings and decisions are: a device's own
    // `file` starts no clock.
    let mut doc = create_document(&ActorId::from(SERVER_ACTOR), case_file, now_millis()).unwrap();
    let changes = doc.get_changes(&[]);
    api.state.store().merge_unchecked(vec![(id, changes)], now_millis()).expect("merging");
}

fn rows_of<'a>(report: &'a Value, key: &str) -> &'a [Value] {
    report[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

#[tokio::test]
async fn a_case_filed_long_ago_shows_an_overdue_decision_deadline() {
    // Arrange: one case filed 120 days ago, one filed yesterday.
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let now = now_millis();
    let late = doc_id(60);
    let recent = doc_id(61);
    seed(&api, late, &case_of(late, CHENGGUAN, ENTRUSTED, "", &[("file", now - 120 * DAY_MS)]));
    seed(&api, recent, &case_of(recent, CHENGGUAN, ENTRUSTED, "", &[("file", now - DAY_MS)]));

    // Act
    let board = report_json(&api, &supervisor, "/v1/reports/overdue", "").await;
    let csv = report_csv(&api, &supervisor, "/v1/reports/overdue", "?format=csv").await;

    // Assert
    let deadlines = rows_of(&board, "deadlines");
    let summary: Vec<(Value, Value, Value)> = deadlines
        .iter()
        .map(|row| (row["doc_id"].clone(), row["deadline"].clone(), row["overdue"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!(late.to_string()), json!("decision"), json!(true)),
            (json!(recent.to_string()), json!("decision"), json!(false)),
        ],
        "{board}"
    );
    assert_eq!(deadlines[0]["township"], CHENGGUAN);
    assert_eq!(deadlines[0]["matter"], ENTRUSTED);
    assert_eq!(deadlines[0]["due"], now - 120 * DAY_MS + 90 * DAY_MS);
    // The demo registry's agreement and certificates run for years.
    assert_eq!(rows_of(&board, "expiring"), [] as [Value; 0]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("item,doc_id,township,matter"), "{csv}");
    assert!(lines[1].starts_with(&format!("decision,{late},{CHENGGUAN},{ENTRUSTED}")), "{csv}");
    assert!(lines[1].contains(",true,"), "{csv}");
}

#[tokio::test]
async fn the_same_party_and_matter_in_two_townships_is_a_duplicate_enforcement_alert() {
    // Arrange: one party key in Chengguan and in Hexi (which has no entrustment), another
    // party only in Chengguan.
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let shared = "110101199001011234";
    let (first, second, other) = (doc_id(62), doc_id(63), doc_id(64));
    seed(&api, first, &case_of(first, CHENGGUAN, ENTRUSTED, shared, &[]));
    seed(&api, second, &case_of(second, HEXI, ENTRUSTED, shared, &[]));
    seed(&api, other, &case_of(other, CHENGGUAN, ENTRUSTED, "110101198001015678", &[]));

    // Act
    let alerts = report_json(&api, &supervisor, "/v1/reports/alerts", "").await;
    let csv = report_csv(&api, &supervisor, "/v1/reports/alerts", "?format=csv").await;

    // Assert
    let duplicates = rows_of(&alerts, "duplicate_enforcement");
    assert_eq!(duplicates.len(), 1, "{alerts}");
    assert_eq!(duplicates[0]["code"], "duplicate_enforcement");
    assert_eq!(duplicates[0]["party_key"], "110101********1234");
    assert_eq!(duplicates[0]["matter"], ENTRUSTED);
    let townships: Vec<(Value, Value)> = rows_of(&duplicates[0], "records")
        .iter()
        .map(|record| (record["doc_id"].clone(), record["township"].clone()))
        .collect();
    assert_eq!(
        townships,
        [(json!(first.to_string()), json!(CHENGGUAN)), (json!(second.to_string()), json!(HEXI))]
    );
    let scope: Vec<(Value, Value)> = rows_of(&alerts, "scope")
        .iter()
        .map(|alert| (alert["code"].clone(), alert["doc_id"].clone()))
        .collect();
    // The seeded records carry no act time, so every one is judged out of scope; Hexi's is
    // out of scope at any time.
    assert!(scope.contains(&(json!("matter_not_entrusted"), json!(second.to_string()))));
    assert!(scope.iter().all(|(code, _)| code != "not_entrustable"), "{alerts}");
    assert!(csv.starts_with("alert,doc_id,kind,township,matter,party_key,name_agency\r\n"));
    assert!(csv.contains(&format!("duplicate_enforcement,{second},case,{HEXI},{ENTRUSTED},")));
    assert!(!csv.contains(shared), "{csv}");
}

#[tokio::test]
async fn no_assessment_output_carries_an_amount() {
    // Arrange: a decided case with a fine and a confiscation of unmistakable amounts.
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let now = now_millis();
    let id = doc_id(65);
    let mut case_file = case_of(
        id,
        CHENGGUAN,
        ENTRUSTED,
        "110101199001011234",
        &[("file", now - 10 * DAY_MS), ("decide", now - DAY_MS)],
    );
    let penalty = Penalty {
        kinds: vec!["fine".to_owned(), "confiscation".to_owned()],
        fine_yuan: 7_654_321,
        confiscation_yuan: 1_234_987,
        description: "罚款".to_owned(),
    };
    case_file.proposed_penalty = Some(penalty.clone());
    case_file.final_penalty = Some(penalty);
    seed(&api, id, &case_file);

    // Act
    let assessment = report_json(&api, &supervisor, "/v1/reports/assessment", "").await;
    let csv = report_csv(&api, &supervisor, "/v1/reports/assessment", "?format=csv").await;

    // Assert: the case is counted for both officers and the township ...
    let officers = rows_of(&assessment, "officers");
    let counted: Vec<(Value, Value)> =
        officers.iter().map(|row| (row["id"].clone(), row["general_cases"].clone())).collect();
    assert_eq!(counted, [(json!("o-1"), json!(1)), (json!("o-2"), json!(1))], "{assessment}");
    assert_eq!(rows_of(&assessment, "townships")[0]["id"], CHENGGUAN);
    assert_eq!(rows_of(&assessment, "townships")[0]["records"], 1);
    // ... and no key, column or value speaks of an amount.
    let json_text = assessment.to_string();
    for output in [json_text.as_str(), csv.as_str()] {
        for word in
            ["7654321", "1234987", "fine", "amount", "yuan", "confiscat", "罚", "金额", "元"]
        {
            assert!(!output.to_lowercase().contains(word), "{word:?} in {output}");
        }
    }
    // The period filter: a period before the record was stored counts nothing.
    let empty =
        report_json(&api, &supervisor, "/v1/reports/assessment", "?from=2000-01-01&to=2000-12-31")
            .await;
    assert_eq!(rows_of(&empty, "officers"), [] as [Value; 0]);
    api.get(&supervisor, "/v1/reports/assessment?from=yesterday")
        .await
        .check_error(StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn officers_may_not_read_reports_and_formats_are_checked() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    for report in ["overdue", "alerts", "assessment"] {
        let path = format!("/v1/reports/{report}");
        api.get(&officer, &path).await.check_error(StatusCode::FORBIDDEN, "forbidden");
        api.get(&supervisor, &format!("{path}?format=xlsx"))
            .await
            .check_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
}
