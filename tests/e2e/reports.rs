//! The supervision reports end to end (issue 6): a case filed on a supervisor's grant shows on the
//! supervisor's overdue board and assessment through `fieldcase report`, as JSON and as CSV with
//! a BOM and Chinese headers; an officer's device may not read them.

use serde_json::Value;

use crate::harness::{Device, TestServer};

fn rows<'a>(report: &'a Value, key: &str) -> &'a [Value] {
    report[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

#[test]
fn a_filed_case_reaches_the_overdue_board_and_the_assessment_as_json_and_csv() {
    // Arrange: an officer requests filing (立案) of a case with a colleague present, and the
    // supervisor grants it; the server-authored filing starts the 90-day clock.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (officer, _) = Device::enrolled(&server, &demo.officers[0].code);
    let (supervisor, _) = Device::enrolled(&server, &demo.supervisor_code);
    let case = officer.json(&[
        "case",
        "new",
        "--matter",
        &demo.entrusted,
        "--party-name",
        "王五",
        "--party-id",
        "110101199001011234",
        "--officer",
        &demo.officers[1].officer,
    ])["id"]
        .as_str()
        .expect("the case id")
        .to_owned();
    let request = officer.json(&["event", &case, "request_file"]);
    officer.json(&["sync"]);
    let request_id = request["event"].as_str().expect("the request event id");
    supervisor.json(&["review", "grant", &case, request_id]);

    // Act
    let board = supervisor.json(&["report", "overdue"]);
    let alerts = supervisor.json(&["report", "alerts"]);
    let assessment = supervisor.json(&["report", "assessment"]);
    let csv = supervisor.run(&["report", "overdue", "--format", "csv"]);

    // Assert: the decision deadline runs 90 days from today's filing, not overdue yet.
    let deadlines: Vec<(&Value, &Value, &Value)> = rows(&board, "deadlines")
        .iter()
        .map(|row| (&row["doc_id"], &row["deadline"], &row["overdue"]))
        .collect();
    assert_eq!(
        deadlines,
        [(&Value::from(case.as_str()), &Value::from("decision"), &Value::Bool(false))],
        "{board}"
    );
    assert!(alerts["scope"].is_array() && alerts["duplicate_enforcement"].is_array(), "{alerts}");
    let counted = rows(&assessment, "officers")
        .iter()
        .find(|row| row["id"] == demo.officers[0].officer.as_str())
        .expect("the filing officer is assessed");
    assert_eq!(counted["general_cases"], 1, "{assessment}");
    assert!(csv.status.success());
    let text = String::from_utf8(csv.stdout).expect("UTF-8");
    let text = text.strip_prefix('\u{feff}').expect("the CSV starts with a BOM");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[..4], ["期限事项", "记录编号", "乡镇", "执法事项"], "{text}");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!((&records[0][0], &records[0][1]), ("decision", case.as_str()), "{text}");
    assert_eq!(officer.error_code(&["report", "overdue"]), "forbidden");
}
