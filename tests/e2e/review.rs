//! The supervisor's review, end to end with real devices: conflicts resolved, records returned
//! and corrected, approved records sealed.

use serde_json::{Value, json};

use crate::harness::{Device, TestServer};

fn queue_item<'a>(queue: &'a Value, doc: &str) -> Option<&'a Value> {
    queue.as_array().expect("the queue is a list").iter().find(|item| item["id"] == doc)
}

fn conflict_paths(view: &Value) -> Vec<String> {
    view["conflicts"]
        .as_array()
        .expect("conflicts list")
        .iter()
        .map(|conflict| conflict["path"].as_str().expect("a path").to_owned())
        .collect()
}

/// A demo server, two officers of the first township and the supervisor, all enrolled devices.
fn county() -> (TestServer, Device, Device, Device) {
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (a, _) = Device::enrolled(&server, &demo.officers[0].code);
    let (b, _) = Device::enrolled(&server, &demo.officers[1].code);
    let (supervisor, _) = Device::enrolled(&server, &demo.supervisor_code);
    (server, a, b, supervisor)
}

#[test]
fn a_conflict_between_two_officers_is_resolved_by_the_supervisor_and_reaches_both_devices() {
    // Arrange: both officers hold the case, then set the legal basis differently offline.
    let (server, a, b, supervisor) = county();
    let demo = server.demo().clone();
    let case = a.json(&[
        "case",
        "new",
        "--matter",
        &demo.entrusted,
        "--party-name",
        "李四",
        "--party-id",
        "110101199001011234",
        "--officer",
        &demo.officers[1].officer,
    ])["id"]
        .as_str()
        .expect("the case id")
        .to_owned();
    a.json(&["sync"]);
    b.json(&["sync"]);
    a.json(&["edit", &case, "--set", "legal_basis=《安全生产法》第九十九条"]);
    b.json(&["edit", &case, "--set", "legal_basis=《安全生产法》第一百零一条"]);
    a.json(&["sync"]);
    b.json(&["sync"]);
    supervisor.json(&["sync"]);
    let queue = supervisor.json(&["review", "queue", "--conflicts"]);
    let item = queue_item(&queue, &case).expect("the case is in the conflicts queue");
    assert!(item["conflicts"].as_u64().is_some_and(|count| count >= 1), "{item}");

    // Act
    supervisor.json(&[
        "review",
        "resolve",
        &case,
        "legal_basis",
        "--value",
        "《安全生产法》第九十九条",
    ]);
    a.json(&["sync"]);
    b.json(&["sync"]);

    // Assert
    for device in [&a, &b] {
        let view = device.json(&["show", &case]);
        assert_eq!(view["record"]["legal_basis"], "《安全生产法》第九十九条");
        assert!(!conflict_paths(&view).contains(&"legal_basis".to_owned()), "{view}");
    }
    let reviewed = supervisor.json(&["review", "show", &case]);
    let history = reviewed["history"].as_array().expect("history");
    let resolution = history.last().expect("the resolution is the last change");
    assert_eq!(resolution["officer"], "s-1", "attributed to the supervisor: {resolution}");
    assert_eq!(resolution["device"], Value::Null);
}

#[test]
fn a_returned_record_reaches_the_officer_is_corrected_and_approved() {
    // Arrange
    let (server, a, _, supervisor) = county();
    let demo = server.demo().clone();
    let doc = a.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    a.json(&["sync"]);

    // Act: the supervisor returns it; the officer sees the comment, fixes the record, resyncs.
    supervisor.json(&["review", "return", &doc, "--comment", "请补充现场照片和整改期限"]);
    a.json(&["sync"]);
    let status = a.json(&["status"]);
    a.json(&["edit", &doc, "--append", "findings=已补充：责令七日内整改。"]);
    a.json(&["sync"]);
    let queue = supervisor.json(&["review", "queue", "--resubmitted"]);
    supervisor.json(&["review", "approve", &doc]);
    let approved = supervisor.json(&["review", "queue", "--state", "approved"]);

    // Assert
    let returned = status["returned"].as_array().expect("returned records");
    assert_eq!(returned.len(), 1, "{status}");
    assert_eq!(returned[0]["id"], doc.as_str());
    assert_eq!(returned[0]["comments"][0]["text"], "请补充现场照片和整改期限");
    assert!(
        queue_item(&queue, &doc).is_some(),
        "the corrected record is back in the queue: {queue}"
    );
    assert_eq!(queue_item(&approved, &doc).expect("approved")["review_state"], "approved");
}

#[test]
fn an_edit_to_an_approved_record_is_quarantined_for_the_supervisor_and_work_goes_on() {
    // Arrange
    let (server, a, _, supervisor) = county();
    let demo = server.demo().clone();
    let doc = a.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    a.json(&["sync"]);
    supervisor.json(&["review", "approve", &doc]);
    a.json(&["sync"]);

    // Act: the officer edits the sealed record, then opens a case that links it.
    a.json(&["edit", &doc, "--set", "outcome=case_lead"]);
    let locked = a.json(&["sync"]);
    let case = a.json(&[
        "case",
        "new",
        "--matter",
        &demo.entrusted,
        "--party-name",
        "张三五金店",
        "--party-id",
        "91330100MA2KXXXX1Q",
        "--from-inspection",
        &doc,
        "--officer",
        &demo.officers[1].officer,
    ])["id"]
        .as_str()
        .expect("the case id")
        .to_owned();
    let next = a.json(&["sync"]);

    // Assert
    assert_eq!(locked["ok"], false, "{locked}");
    assert_eq!(locked["rejected"][0]["id"], doc.as_str());
    assert_eq!(locked["rejected"][0]["code"], "record_locked");
    let reviewed = supervisor.json(&["review", "show", &doc]);
    assert_eq!(reviewed["record"]["outcome"], "none", "the sealed record is unchanged");
    let quarantined = reviewed["quarantined"].as_array().expect("quarantined changes");
    assert_eq!(quarantined.len(), 1, "{reviewed}");
    assert_eq!(next["ok"], true, "{next}");
    assert_eq!(next["rejected"], json!([]));
    supervisor.json(&["sync"]);
    assert_eq!(supervisor.json(&["show", &case])["record"]["inspections"], json!([doc]));
}
