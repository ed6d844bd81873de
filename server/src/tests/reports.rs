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

/// Parses a CSV answer (without its BOM) with a real CSV reader: its header row and its
/// records, each cell as text.
pub(super) fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let header = reader.headers().expect("a header row").iter().map(str::to_owned).collect();
    let records = reader
        .records()
        .map(|record| record.expect("a CSV record").iter().map(str::to_owned).collect())
        .collect();
    (header, records)
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
    let (header, records) = parse_csv(&csv);
    assert_eq!(
        header,
        [
            "期限事项",
            "记录编号",
            "乡镇",
            "执法事项",
            "执法人员",
            "起算环节",
            "到期时间戳",
            "到期日",
            "是否逾期",
            "日历未覆盖"
        ]
    );
    assert_eq!(records.len(), 2, "{csv}");
    assert_eq!(records[0][..4], ["decision", &late.to_string(), CHENGGUAN, ENTRUSTED]);
    assert_eq!(records[0][8], "true");
    assert_eq!(records[1][8], "false");
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
    let (header, records) = parse_csv(&csv);
    assert_eq!(
        header,
        [
            "预警类别",
            "记录编号",
            "记录类型",
            "乡镇",
            "执法事项",
            "当事人标识",
            "名义机关",
            "转交次数"
        ]
    );
    assert!(
        records.iter().any(|record| record[..6]
            == [
                "duplicate_enforcement",
                &second.to_string(),
                "case",
                HEXI,
                ENTRUSTED,
                "110101********1234"
            ]),
        "{csv}"
    );
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

/// `case_of` with the name agency set and, when `fine` is set, a decided penalty with a fine.
fn case_in_name(
    id: DocumentId,
    township: &str,
    party_key: &str,
    events: &[(&str, i64)],
    fine: bool,
) -> CaseFile {
    let mut case_file = case_of(id, township, ENTRUSTED, party_key, events);
    "d-yingji".clone_into(&mut case_file.name_agency);
    if fine {
        case_file.final_penalty = Some(Penalty {
            kinds: vec!["fine".to_owned()],
            fine_yuan: 500,
            confiscation_yuan: 0,
            description: String::new(),
        });
    }
    case_file
}

fn doc_ids(records: &[Value]) -> Vec<String> {
    records.iter().map(|record| record["doc_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn duplicates_need_overlapping_windows_second_fines_and_passed_on_leads_are_alerts() {
    // Arrange. One party in Chengguan from day -100 to -80 and in Hexi from -90 to -85
    // (overlapping: a duplicate) and again in Hexi from -50 on (overlapping neither).
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let now = now_millis();
    let day = |days: i64| now + days * DAY_MS;
    let party = "110101199001011234";
    let (chengguan, hexi_early, hexi_late) = (doc_id(80), doc_id(81), doc_id(82));
    let ended = |file: i64, end: i64| [("file", day(file)), ("terminate", day(end))];
    seed(&api, chengguan, &case_in_name(chengguan, CHENGGUAN, party, &ended(-100, -80), false));
    seed(&api, hexi_early, &case_in_name(hexi_early, HEXI, party, &ended(-90, -85), false));
    seed(&api, hexi_late, &case_in_name(hexi_late, HEXI, party, &[("file", day(-50))], false));
    // Another party fined twice by Chengguan for the same matter at overlapping times, and a
    // third fined once.
    let (other, third) = ("91410100MA00000001", "91410100MA00000002");
    let (fined, fined_again, fined_once) = (doc_id(83), doc_id(84), doc_id(85));
    let decided = |file: i64, decide: i64| [("file", day(file)), ("decide", day(decide))];
    seed(&api, fined, &case_in_name(fined, CHENGGUAN, other, &decided(-29, -10), true));
    seed(&api, fined_again, &case_in_name(fined_again, CHENGGUAN, other, &decided(-20, -5), true));
    seed(&api, fined_once, &case_in_name(fined_once, CHENGGUAN, third, &decided(-20, -5), true));
    // A lead passed on twice, and one passed on once.
    let (twice, once) = (doc_id(86), doc_id(87));
    let passed = [("pass_on", day(-5)), ("pass_on", day(-3))];
    seed(&api, twice, &case_in_name(twice, CHENGGUAN, "", &passed, false));
    seed(&api, once, &case_in_name(once, CHENGGUAN, "", &passed[..1], false));

    // Act
    let alerts = report_json(&api, &supervisor, "/v1/reports/alerts", "").await;
    let csv = report_csv(&api, &supervisor, "/v1/reports/alerts", "?format=csv").await;

    // Assert
    let duplicates = rows_of(&alerts, "duplicate_enforcement");
    assert_eq!(duplicates.len(), 1, "{alerts}");
    assert_eq!(
        doc_ids(rows_of(&duplicates[0], "records")),
        [chengguan.to_string(), hexi_early.to_string()]
    );
    let second = rows_of(&alerts, "second_fine");
    assert_eq!(second.len(), 1, "{alerts}");
    assert_eq!(second[0]["code"], "second_fine");
    assert_eq!(second[0]["party_key"], "914101********0001");
    assert_eq!(
        doc_ids(rows_of(&second[0], "records")),
        [fined.to_string(), fined_again.to_string()]
    );
    let passed_on: Vec<(Value, Value)> = rows_of(&alerts, "passed_on")
        .iter()
        .map(|row| (row["doc_id"].clone(), row["times"].clone()))
        .collect();
    assert_eq!(passed_on, [(json!(twice.to_string()), json!(2))]);
    // The demo agreement runs from 30 days ago: an act 100 days ago was under no agreement in
    // force; Hexi has none at all; Chengguan's officers' certificates do not cover Hexi.
    let scope: Vec<(String, String)> = rows_of(&alerts, "scope")
        .iter()
        .map(|row| {
            (row["code"].as_str().unwrap().to_owned(), row["doc_id"].as_str().unwrap().to_owned())
        })
        .collect();
    for expected in [
        ("agreement_not_in_force", chengguan),
        ("matter_not_entrusted", hexi_early),
        ("certificate_out_of_territory", hexi_early),
    ] {
        assert!(
            scope.contains(&(expected.0.to_owned(), expected.1.to_string())),
            "{expected:?} {alerts}"
        );
    }
    assert!(!scope.iter().any(|(_, doc)| *doc == fined.to_string()), "{alerts}");
    let (_, records) = parse_csv(&csv);
    let second_rows: Vec<&Vec<String>> =
        records.iter().filter(|record| record[0] == "second_fine").collect();
    assert_eq!(second_rows.len(), 2, "{csv}");
    let passed_rows: Vec<&Vec<String>> =
        records.iter().filter(|record| record[0] == "passed_on").collect();
    assert_eq!(passed_rows.len(), 1, "{csv}");
    assert_eq!(passed_rows[0][7], "2");
}

#[tokio::test]
async fn the_assessment_gives_timeliness_shares_and_veto_counts() {
    // Arrange, in Chengguan:
    // - on time: a lead filed 3 days later, decided 57 days after filing, served the next day;
    // - undecided 120 days after filing (decision overdue, an open deadline past due);
    // - late everywhere: filed 40 days after the lead, decided 150 days after filing, served
    //   20 days after the decision, and in no agency's name.
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let now = now_millis();
    let day = |days: i64| now + days * DAY_MS;
    let (on_time, undecided, late) = (doc_id(90), doc_id(91), doc_id(92));
    let timely = [
        ("request_file", day(-100)),
        ("file", day(-97)),
        ("decide", day(-40)),
        ("serve", day(-39)),
    ];
    seed(&api, on_time, &case_in_name(on_time, CHENGGUAN, "", &timely, false));
    seed(&api, undecided, &case_in_name(undecided, CHENGGUAN, "", &[("file", day(-120))], false));
    let slow = [
        ("request_file", day(-240)),
        ("file", day(-200)),
        ("decide", day(-50)),
        ("serve", day(-30)),
    ];
    let mut slow_case = case_of(late, CHENGGUAN, ENTRUSTED, "", &slow);
    slow_case.name_agency.clear();
    seed(&api, late, &slow_case);

    // Act
    let assessment = report_json(&api, &supervisor, "/v1/reports/assessment", "").await;
    let csv = report_csv(&api, &supervisor, "/v1/reports/assessment", "?format=csv").await;

    // Assert
    let township = &rows_of(&assessment, "townships")[0];
    let figures: Vec<(&str, Value)> = [
        "id",
        "records",
        "general_cases",
        "decisions_due",
        "decided_in_time",
        "decided_in_time_share",
        "services_due",
        "served_in_time",
        "served_in_time_share",
        "filings_due",
        "filed_in_time",
        "filed_in_time_share",
        "overdue",
        "decision_overdue",
        "veto_no_legal_subject",
        "returned",
        "returned_share",
    ]
    .into_iter()
    .map(|key| (key, township[key].clone()))
    .collect();
    assert_eq!(
        figures,
        [
            ("id", json!(CHENGGUAN)),
            ("records", json!(3)),
            ("general_cases", json!(3)),
            ("decisions_due", json!(3)),
            ("decided_in_time", json!(1)),
            ("decided_in_time_share", json!(0.33)),
            ("services_due", json!(2)),
            ("served_in_time", json!(1)),
            ("served_in_time_share", json!(0.5)),
            ("filings_due", json!(3)),
            ("filed_in_time", json!(2)),
            ("filed_in_time_share", json!(0.67)),
            ("overdue", json!(1)),
            ("decision_overdue", json!(2)),
            ("veto_no_legal_subject", json!(1)),
            ("returned", json!(0)),
            ("returned_share", json!(0.0)),
        ],
        "{assessment}"
    );
    let (header, records) = parse_csv(&csv);
    assert_eq!(header[6..9], ["应在九十日内决定数", "九十日内决定数", "九十日内决定率"]);
    let row = records.iter().find(|record| record[0] == "township").expect("the township row");
    assert_eq!(row[6..9], ["3", "1", "0.33"]);
}
