//! A seeded quarter of activity end to end (issue 6): two townships, three officers and a
//! supervisor, cases in every state the field reaches (lead, filed, investigating, suspended,
//! decided, served, terminated, transferred, issued on site, executed), an out-of-scope case,
//! a duplicate enforcement pair, a second fine for one act, a lead passed on twice and a late
//! payment — all through real devices and the real HTTP API. The quarterly report, the assessment, the
//! overdue board and the alerts must then say exactly what was seeded.
//!
//! The server's clock is the real one, and filing and decisions are written by the server when
//! the supervisor grants them, so no decision can be made late here: the late item is an
//! on-site fine whose 15 days to pay ran out while its officer's device was offline (a
//! hand-made document, stamped 16 days ago by the device, uploaded now). The late decision is
//! covered in process (`server/src/tests/reports.rs`), where records can be filed months ago.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use automerge::ActorId;
use chrono::{Datelike as _, TimeZone as _, Utc};
use serde_json::{Value, json};
use sync_core::ids::DocumentId;
use sync_core::protocol::{DocOutcome, SyncResponse};
use sync_core::records::{CaseFile, OfficerPresent, Party, Penalty, Procedure, create_document};

use crate::harness::{Device, Enrolled, HandMade, TestServer, actor_of, upload};

const DEPARTMENT: &str = "d-yingji";
const CHENGGUAN: &str = "t-chengguan";
const HEXI: &str = "t-hexi";
const MATTER: &str = "AJ-001";
const MATTER_NAME: &str = "未按规定设置安全警示标志";
const DAY_MS: i64 = 86_400_000;

/// Party keys: 18-character ID numbers and credit codes.
const DUPLICATED: &str = "110101199001011234";
const FINED_TWICE: &str = "91410100MA00000001";
const PAYS_LATE: &str = "110101198502025678";

fn rows<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}")).to_owned()
}

/// A general case opened on `device` with the CLI; the device names the entrusting department
/// (the name agency) from its master data.
fn general_case(device: &Device, party_name: &str, party_id: &str, colleague: &str) -> String {
    text(
        &device.json(&[
            "case",
            "new",
            "--matter",
            MATTER,
            "--party-name",
            party_name,
            "--party-id",
            party_id,
            "--officer",
            colleague,
        ])["id"],
    )
}

/// Records `kind` on the case with the CLI; answers the event id.
fn event(device: &Device, case: &str, kind: &str) -> String {
    text(&device.json(&["event", case, kind])["event"])
}

/// The officer requests filing or a decision; the supervisor grants it; the officer syncs.
fn granted(officer: &Device, supervisor: &Device, case: &str, request: &str) {
    let request = event(officer, case, request);
    officer.json(&["sync"]);
    supervisor.json(&["review", "grant", case, &request]);
    officer.json(&["sync"]);
}

/// An on-site (summary procedure) fine in Chengguan, handed over at `issued_at` by the device
/// of `enrolled` and uploaded now through the sync API; `executed` adds its execution.
fn on_site_fine(
    enrolled: &mut Enrolled,
    officers: [&str; 2],
    party_id: &str,
    issued_at: i64,
    executed: bool,
) -> String {
    let id = DocumentId::from_bytes(crate::jose::random_bytes::<16>());
    let party = Party {
        kind: if party_id.starts_with("91") { "legal" } else { "natural" }.to_owned(),
        name: "刘六".to_owned(),
        id_number: party_id.to_owned(),
    };
    let mut case_file = CaseFile::new(id.to_string(), Procedure::Summary, MATTER.to_owned(), party);
    CHENGGUAN.clone_into(&mut case_file.township);
    DEPARTMENT.clone_into(&mut case_file.name_agency);
    case_file.officers = officers
        .iter()
        .map(|officer| OfficerPresent { officer: (*officer).to_owned(), cert_no: String::new() })
        .collect();
    case_file.final_penalty = Some(Penalty {
        kinds: vec!["fine".to_owned()],
        fine_yuan: 100,
        confiscation_yuan: 0,
        description: "罚款".to_owned(),
    });
    let actor = actor_of(&enrolled.answer);
    let kinds: &[&str] = if executed { &["issue_on_site", "execute"] } else { &["issue_on_site"] };
    for (index, kind) in kinds.iter().enumerate() {
        case_file.append_event(
            format!("ev-{index}"),
            (*kind).to_owned(),
            officers[0].to_owned(),
            actor.clone(),
            issued_at,
            BTreeMap::new(),
        );
    }
    let doc =
        create_document(&ActorId::from_str(&actor).expect("hex actor"), &case_file, issued_at)
            .expect("the case document");
    let mut hand_made = HandMade { id, doc };
    let response = upload(&mut enrolled.session, hand_made.upload(&[]));
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let answer = SyncResponse::decode(&response.body).expect("a sync answer");
    assert!(
        matches!(answer.results[0].outcome, DocOutcome::Accepted { .. }),
        "{:?}",
        answer.results[0].outcome
    );
    id.to_string()
}

/// `YYYY-Qn` of a time, and whether another time falls in the same quarter.
fn quarter_of(ms: i64) -> String {
    let time = Utc.timestamp_millis_opt(ms).unwrap();
    format!("{}-Q{}", time.year(), time.month0() / 3 + 1)
}

#[test]
fn a_seeded_quarter_gives_exactly_the_seeded_report_assessment_board_and_alerts() {
    // Arrange: Hexi is entrusted with the matter too, so that both townships can act on it.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut admin = server.admin();
    let now = Utc::now();
    let term = json!({
        "entrusting_agency": DEPARTMENT, "township": HEXI, "legal_basis": "委托书（河西）",
        "valid_from": format!("{}-01-01", now.year() - 1),
        "valid_to": format!("{}-12-31", now.year() + 3),
        "status": "active",
        "items": [{"matter": MATTER, "actions": ["inspect", "summary_penalty", "general_penalty"]}],
    });
    admin.post_json("/v1/admin/entrustments", &term).expect("the Hexi entrustment");
    let (li, _) = Device::enrolled(&server, &demo.officers[0].code); // o-1, Chengguan
    let (zhao, _) = Device::enrolled(&server, &demo.officers[2].code); // o-3, Hexi
    let mut wang = server.enroll(&demo.officers[1].code); // o-2, Chengguan, uploads by hand
    let (supervisor, _) = Device::enrolled(&server, &demo.supervisor_code);
    let (o1, o2, o3) = (
        demo.officers[0].officer.as_str(),
        demo.officers[1].officer.as_str(),
        demo.officers[2].officer.as_str(),
    );

    // Chengguan, general procedure: filed (A); decided after notice (B); filed with a Hexi
    // officer whose certificate does not cover Chengguan (C, out of scope); a lead passed on
    // twice (D).
    let filed = general_case(&li, "王五", DUPLICATED, o2);
    granted(&li, &supervisor, &filed, "request_file");
    let decided = general_case(&li, "赵六", "110101197003030011", o2);
    granted(&li, &supervisor, &decided, "request_file");
    for kind in ["investigate", "close_investigation", "notify"] {
        event(&li, &decided, kind);
    }
    granted(&li, &supervisor, &decided, "request_decision");
    let out_of_scope = general_case(&li, "孙七", "110101196004040022", o3);
    granted(&li, &supervisor, &out_of_scope, "request_file");
    let passed_on = general_case(&li, "周八", "110101195005050033", o2);
    for _ in 0..2 {
        li.json(&["event", &passed_on, "pass_on", "--set", "to=县市场监管局"]);
    }
    // Further along: investigating (K), suspended (P), served (L); ended: terminated (N) and
    // a lead transferred once (O, no alert).
    let investigating = general_case(&li, "吴九", "110101198107070055", o2);
    granted(&li, &supervisor, &investigating, "request_file");
    event(&li, &investigating, "investigate");
    let suspended = general_case(&li, "郑十", "110101198208080066", o2);
    granted(&li, &supervisor, &suspended, "request_file");
    event(&li, &suspended, "investigate");
    event(&li, &suspended, "suspend");
    let served = general_case(&li, "冯一", "110101198309090077", o2);
    granted(&li, &supervisor, &served, "request_file");
    for kind in ["investigate", "close_investigation", "notify"] {
        event(&li, &served, kind);
    }
    granted(&li, &supervisor, &served, "request_decision");
    event(&li, &served, "serve");
    let terminated = general_case(&li, "陈二", "110101198410100088", o2);
    granted(&li, &supervisor, &terminated, "request_file");
    event(&li, &terminated, "terminate");
    let transferred = general_case(&li, "褚三", "110101198511110099", o2);
    li.json(&["event", &transferred, "transfer", "--set", "to=县公安局"]);
    li.json(&["sync"]);
    // Chengguan, on-site fines: the same company fined twice for the matter (E, F), a fine
    // executed on the spot (I), and one handed over 16 days ago by a device offline since,
    // unpaid (G).
    let now_ms = now.timestamp_millis();
    let fined = on_site_fine(&mut wang, [o2, o1], FINED_TWICE, now_ms, false);
    let fined_again = on_site_fine(&mut wang, [o2, o1], FINED_TWICE, now_ms, false);
    let executed = on_site_fine(&mut wang, [o2, o1], "110101194006060044", now_ms, true);
    let late_at = now_ms - 16 * DAY_MS;
    let pays_late = on_site_fine(&mut wang, [o2, o1], PAYS_LATE, late_at, false);
    // Hexi: a lead against the party Chengguan has filed against, for the same matter, while
    // Chengguan's case runs (H, duplicate enforcement), by one officer alone.
    let hexi_case = text(
        &zhao.json(&[
            "case",
            "new",
            "--matter",
            MATTER,
            "--party-name",
            "王五",
            "--party-id",
            DUPLICATED,
        ])["id"],
    );
    event(&zhao, &hexi_case, "request_file");
    zhao.json(&["sync"]);

    // Act
    let quarter = quarter_of(now_ms);
    let report = supervisor.json(&[
        "report",
        "quarterly",
        "--department",
        DEPARTMENT,
        "--township",
        CHENGGUAN,
        "--quarter",
        &quarter,
    ]);
    let report_csv = supervisor.run(&[
        "report",
        "quarterly",
        "--department",
        DEPARTMENT,
        "--township",
        CHENGGUAN,
        "--quarter",
        &quarter,
        "--format",
        "csv",
    ]);
    let assessment = supervisor.json(&["report", "assessment"]);
    let board = supervisor.json(&["report", "overdue"]);
    let alerts = supervisor.json(&["report", "alerts"]);

    // Assert: the quarterly report lists exactly Chengguan's cases of the quarter; the late
    // fine belongs to it only if it was handed over in the same quarter.
    let late_in_quarter = quarter_of(late_at) == quarter;
    let mut expected_cases = vec![
        (filed.clone(), "general", "filed"),
        (decided.clone(), "general", "decided"),
        (out_of_scope.clone(), "general", "filed"),
        (passed_on.clone(), "general", "lead"),
        (investigating.clone(), "general", "investigating"),
        (suspended.clone(), "general", "suspended"),
        (served, "general", "served"),
        (terminated, "general", "terminated"),
        (transferred, "general", "transferred"),
        (fined.clone(), "summary", "issued_on_site"),
        (fined_again.clone(), "summary", "issued_on_site"),
        (executed, "summary", "executed"),
    ];
    if late_in_quarter {
        expected_cases.push((pays_late.clone(), "summary", "issued_on_site"));
    }
    expected_cases.sort();
    let body = &report["body"];
    let mut listed: Vec<(String, &str, &str)> = rows(body, "cases")
        .iter()
        .map(|case| {
            (
                text(&case["doc_id"]),
                case["procedure"].as_str().unwrap(),
                case["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, expected_cases, "{body}");
    let summary_issued = if late_in_quarter { 3 } else { 2 };
    let counts: Vec<(String, String, String, i64)> = rows(body, "counts")
        .iter()
        .map(|row| {
            (
                text(&row["matter"]),
                text(&row["procedure"]),
                text(&row["outcome"]),
                row["cases"].as_i64().unwrap(),
            )
        })
        .collect();
    let count = |procedure: &str, outcome: &str, cases: i64| {
        (MATTER.to_owned(), procedure.to_owned(), outcome.to_owned(), cases)
    };
    assert_eq!(
        counts,
        [
            count("general", "decided", 1),
            count("general", "filed", 2),
            count("general", "investigating", 1),
            count("general", "lead", 1),
            count("general", "served", 1),
            count("general", "suspended", 1),
            count("general", "terminated", 1),
            count("general", "transferred", 1),
            count("summary", "executed", 1),
            count("summary", "issued_on_site", summary_issued),
        ],
        "{body}"
    );
    let case_of = |id: &str| {
        rows(body, "cases").iter().find(|case| case["doc_id"] == id).expect("listed").clone()
    };
    assert_eq!(case_of(&filed)["party"], "110101********1234");
    assert_eq!(case_of(&decided)["overdue"], false);
    assert_eq!(
        case_of(&fined)["penalty"],
        json!({"kinds": ["fine"], "fine_yuan": 100, "confiscation_yuan": 0})
    );
    assert_eq!(case_of(&filed)["penalty"], Value::Null);
    assert!(case_of(&decided)["decided_at"].is_i64(), "{body}");
    assert!(!body.to_string().contains(DUPLICATED), "the party key is masked");
    // The CSV of the same quarter parses back with Chinese headers and the matter's name.
    assert!(report_csv.status.success());
    let csv_text = String::from_utf8(report_csv.stdout).expect("UTF-8");
    let csv_text = csv_text.strip_prefix('\u{feff}').expect("a BOM");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[..6], ["案号", "记录编号", "文书编号", "当事人", "执法事项", "事项名称"]);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), expected_cases.len(), "{csv_text}");
    assert!(records.iter().all(|record| &record[5] == MATTER_NAME), "{csv_text}");

    // The assessment per township: volume, timeliness, vetoes, overdue.
    let township = |id: &str| {
        rows(&assessment, "townships")
            .iter()
            .find(|row| row["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {assessment}"))
            .clone()
    };
    let figures = |row: &Value| -> Vec<(&'static str, Value)> {
        [
            "records",
            "inspections",
            "summary_cases",
            "general_cases",
            "decisions_due",
            "decided_in_time",
            "decided_in_time_share",
            "services_due",
            "served_in_time_share",
            "filings_due",
            "filed_in_time",
            "overdue",
            "decision_overdue",
            "veto_no_legal_subject",
            "veto_too_few_officers",
            "veto_certificate_invalid",
            "veto_out_of_scope",
            "returned",
        ]
        .into_iter()
        .map(|key| (key, row[key].clone()))
        .collect()
    };
    let expected = |values: [Value; 18]| -> Vec<(&'static str, Value)> {
        figures(&township(CHENGGUAN)).iter().map(|(key, _)| *key).zip(values).collect()
    };
    assert_eq!(
        figures(&township(CHENGGUAN)),
        expected([
            json!(13), // A, B, C, D, K, L, N, O, P general; E, F, G, I on site
            json!(0),
            json!(4),
            json!(9),
            json!(2), // B and L decided
            json!(2),
            json!(1.0),
            json!(1), // L served; B's service is not due yet
            json!(1.0),
            json!(7), // A, B, C, K, L, N, P filed the day they were requested
            json!(7),
            json!(1), // G's payment
            json!(0),
            json!(0),
            json!(0),
            json!(0),
            json!(1), // C: a certificate of Hexi in Chengguan
            json!(0),
        ]),
        "{assessment}"
    );
    assert_eq!(
        figures(&township(HEXI)),
        expected([
            json!(1),
            json!(0),
            json!(0),
            json!(1),
            json!(0),
            json!(0),
            Value::Null,
            json!(0),
            Value::Null,
            json!(0), // H is a lead whose 15 working days run
            json!(0),
            json!(0),
            json!(0),
            json!(0),
            json!(1), // Zhao alone
            json!(0),
            json!(0),
            json!(0),
        ]),
        "{assessment}"
    );
    assert_eq!(rows(&assessment, "townships").len(), 2, "{assessment}");

    // The overdue board: every open deadline (the leads D and H wait to be filed), and only
    // the unpaid fine of 16 days ago late.
    let mut deadlines: Vec<(String, String, bool)> = rows(&board, "deadlines")
        .iter()
        .map(|row| (text(&row["doc_id"]), text(&row["deadline"]), row["overdue"] == true))
        .collect();
    deadlines.sort();
    let mut expected_deadlines = vec![
        (filed.clone(), "decision".to_owned(), false),
        (out_of_scope.clone(), "decision".to_owned(), false),
        (investigating, "decision".to_owned(), false),
        (suspended, "decision".to_owned(), false),
        (passed_on.clone(), "filing".to_owned(), false),
        (hexi_case.clone(), "filing".to_owned(), false),
        (decided, "service".to_owned(), false),
        (fined.clone(), "payment".to_owned(), false),
        (fined_again.clone(), "payment".to_owned(), false),
        (pays_late, "payment".to_owned(), true),
    ];
    expected_deadlines.sort();
    assert_eq!(deadlines, expected_deadlines, "{board}");
    assert_eq!(rows(&board, "expiring"), [] as [Value; 0], "{board}");

    // The alerts, exactly.
    let scope: Vec<(String, String)> = rows(&alerts, "scope")
        .iter()
        .map(|row| (text(&row["code"]), text(&row["doc_id"])))
        .collect();
    assert_eq!(scope, [("certificate_out_of_territory".to_owned(), out_of_scope)]);
    let grouped = |key: &str| -> Vec<(String, String, Vec<String>)> {
        rows(&alerts, key)
            .iter()
            .map(|alert| {
                let records = rows(alert, "records").iter().map(|r| text(&r["doc_id"])).collect();
                (text(&alert["party_key"]), text(&alert["matter"]), records)
            })
            .collect()
    };
    assert_eq!(
        grouped("duplicate_enforcement"),
        [("110101********1234".to_owned(), MATTER.to_owned(), vec![filed, hexi_case])],
        "{alerts}"
    );
    let mut twice = vec![fined, fined_again];
    twice.sort();
    assert_eq!(
        grouped("second_fine"),
        [("914101********0001".to_owned(), MATTER.to_owned(), twice)],
        "{alerts}"
    );
    let passed: Vec<(String, Value)> = rows(&alerts, "passed_on")
        .iter()
        .map(|row| (text(&row["doc_id"]), row["times"].clone()))
        .collect();
    assert_eq!(passed, [(passed_on, json!(2))], "{alerts}");
}
