//! Who may read and write which documents: registered actors, townships, entrusted matters,
//! roles, and certificate revocation from the admin tool (docs/identity.md, SECURITY.md B-28,
//! B-34, B-35).

use serde_json::{Value, json};
use sync_core::protocol::{SyncRequest, SyncResponse};

use crate::harness::{
    Device, HandMade, TestServer, actor_of, assert_error, audit, document_count, history_len, rows,
    upload,
};
use crate::jose::random_bytes;

/// Opens an inspection on an enrolled device with the CLI; returns the raw output.
fn inspection_new(device: &Device, matter: &str, other_officer: &str) -> std::process::Output {
    device.run(&[
        "inspection",
        "new",
        "--matter",
        matter,
        "--party-name",
        "张三五金店",
        "--party-id",
        "91330100MA2KXXXX1Q",
        "--site",
        "镇南路 8 号仓库",
        "--officer",
        other_officer,
    ])
}

/// The id printed by a successful `inspection new --json`.
#[track_caller]
fn created_id(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "inspection new failed: {stdout}");
    let created: Value = serde_json::from_str(&stdout).expect("JSON output");
    created["id"].as_str().expect("the new record's id").to_owned()
}

#[test]
fn a_change_by_an_actor_not_registered_to_the_uploading_device_is_foreign_actor() {
    // B-28: officer 2 uploads a record written with officer 1's actor, and one written with an
    // actor nobody registered; a batch that mixes an own record with a foreign one is refused
    // whole.
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let first = server.enroll(&demo.officers[0].code);
    let mut second = server.enroll(&demo.officers[1].code);
    let mut supervisor = server.supervisor();
    let township = &demo.officers[0].township;
    let mut forged = HandMade::inspection(&first.actor(), township, &demo.entrusted);
    let mut invented = HandMade::inspection(
        &automerge::ActorId::from(random_bytes::<16>()).to_hex_string(),
        township,
        &demo.entrusted,
    );
    let mut own = HandMade::inspection(&second.actor(), township, &demo.entrusted);
    let mixed =
        SyncRequest { cursor: 0, docs: vec![own.doc_upload(&[]), forged.doc_upload(&[])] }.encode();

    for body in [forged.upload(&[]), invented.upload(&[]), mixed] {
        // Act
        let response = upload(&mut second.session, body);

        // Assert
        assert_error(&response, 403, "foreign_actor");
        assert_eq!(document_count(&mut supervisor), 0, "nothing may be stored");
    }
}

#[test]
fn changes_already_stored_may_travel_again_with_another_device_own_changes() {
    // The attribution rule applies to changes not yet on the server: a device may re-upload
    // what it received from others together with its own edit.
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut first = server.enroll(&demo.officers[0].code);
    let mut second = server.enroll(&demo.officers[1].code);
    let mut supervisor = server.supervisor();
    let mut record =
        HandMade::inspection(&first.actor(), &demo.officers[0].township, &demo.entrusted);
    let created = upload(&mut first.session, record.upload(&[]));
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let mut continued = record.fork_as(&second.actor());
    continued.set("outcome", "rectification_order");

    // Act: the whole history, officer 1's creation included.
    let response = upload(&mut second.session, continued.upload(&[]));

    // Assert
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(history_len(&mut supervisor, &record.id.to_string()), 2);
}

#[test]
fn an_officer_of_another_township_can_neither_read_nor_write_its_documents() {
    // B-34
    // Arrange: officer 1 (first township) stores a record.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut first = server.enroll(&demo.officers[0].code);
    let mut outsider = server.enroll(&demo.officers[2].code);
    assert_ne!(demo.officers[2].township, demo.officers[0].township);
    let mut supervisor = server.supervisor();
    let mut record =
        HandMade::inspection(&first.actor(), &demo.officers[0].township, &demo.entrusted);
    let created = upload(&mut first.session, record.upload(&[]));
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let id = record.id.to_string();
    let base = record.heads();
    let mut intrusion = record.fork_as(&outsider.actor());
    intrusion.set("outcome", "case_lead");

    // Act
    let read = outsider.session.send("GET", &format!("/v1/docs/{id}"), None, Vec::new()).unwrap();
    let history =
        outsider.session.send("GET", &format!("/v1/docs/{id}/history"), None, Vec::new()).unwrap();
    let listed = outsider.session.get_json("/v1/docs").expect("the outsider's list");
    let (feed, _) = outsider
        .session
        .sync(&SyncRequest { cursor: 0, docs: vec![] })
        .expect("the outsider syncs");
    let write = upload(&mut outsider.session, intrusion.upload(&base));

    // Assert
    assert_error(&read, 404, "not_found");
    assert_error(&history, 404, "not_found");
    assert!(!rows(&listed).iter().any(|row| row["id"] == id.as_str()), "{listed}");
    assert_eq!(feed, SyncResponse { cursor: feed.cursor, ..SyncResponse::default() });
    assert_error(&write, 403, "out_of_scope");
    assert_eq!(history_len(&mut supervisor, &id), 1);
    let own_read = first.session.get_json(&format!("/v1/docs/{id}"));
    assert!(own_read.is_ok(), "the owner still reads it: {own_read:?}");
}

#[test]
fn editing_the_township_field_does_not_move_a_document_into_another_scope() {
    // B-35: authorization follows the township stored at the first upload, never the field.
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut owner = server.enroll(&demo.officers[0].code);
    let mut outsider = server.enroll(&demo.officers[2].code);
    let mut supervisor = server.supervisor();
    let other_township = demo.officers[2].township.clone();
    let mut record =
        HandMade::inspection(&owner.actor(), &demo.officers[0].township, &demo.entrusted);
    let created = upload(&mut owner.session, record.upload(&[]));
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let id = record.id.to_string();

    // Act: the outsider rewrites the field to its own township.
    let base = record.heads();
    let mut claim = record.fork_as(&outsider.actor());
    claim.set("township", &other_township);
    let claimed = upload(&mut outsider.session, claim.upload(&base));

    // Assert
    assert_error(&claimed, 403, "out_of_scope");
    assert_eq!(history_len(&mut supervisor, &id), 1);

    // Act: the owner itself moves the field.
    record.set("township", &other_township);
    let moved = upload(&mut owner.session, record.upload(&base));

    // Assert: stored, yet still invisible to the other township and still the owner's.
    assert_eq!(moved.status, 200, "{}", String::from_utf8_lossy(&moved.body));
    let read = outsider.session.send("GET", &format!("/v1/docs/{id}"), None, Vec::new()).unwrap();
    assert_error(&read, 404, "not_found");
    let listed = outsider.session.get_json("/v1/docs").expect("the outsider's list");
    assert!(!rows(&listed).iter().any(|row| row["id"] == id.as_str()), "{listed}");
    let base = record.heads();
    let mut second_try = record.fork_as(&outsider.actor());
    second_try.set("outcome", "case_lead");
    let written = upload(&mut outsider.session, second_try.upload(&base));
    assert_error(&written, 403, "out_of_scope");
    assert_eq!(history_len(&mut supervisor, &id), 2);
    let view = owner.session.get_json(&format!("/v1/docs/{id}")).expect("the owner reads it");
    assert_eq!(view["record"]["township"], other_township.as_str());
}

#[test]
fn a_record_for_a_matter_not_entrusted_is_refused_on_the_device_and_by_the_server() {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let mut supervisor = server.supervisor();

    // Act: offline, on the device.
    let refused = inspection_new(&device, &demo.not_entrusted, &demo.officers[1].officer);

    // Assert
    assert!(!refused.status.success());
    let error: Value = serde_json::from_slice(&refused.stdout).expect("error JSON");
    assert_eq!(error["error"]["code"], "out_of_scope", "{error}");
    assert_eq!(device.json(&["list"]), json!([]));
    assert_eq!(device.json(&["status"])["documents"], 0);

    // Act: forced past the device check by a raw upload with the device's own actor.
    let mut session = device.session();
    let mut forced =
        HandMade::inspection(&actor_of(&enrolled), &demo.officers[0].township, &demo.not_entrusted);
    let response = upload(&mut session, forced.upload(&[]));

    // Assert
    assert_error(&response, 403, "out_of_scope");
    assert_eq!(document_count(&mut supervisor), 0);
}

#[test]
fn a_record_for_another_township_or_an_unentrusted_township_is_refused() {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut first = server.enroll(&demo.officers[0].code);
    let mut third = server.enroll(&demo.officers[2].code);
    let mut supervisor = server.supervisor();
    let mut elsewhere =
        HandMade::inspection(&first.actor(), &demo.officers[2].township, &demo.entrusted);
    let mut unentrusted =
        HandMade::inspection(&third.actor(), &demo.officers[2].township, &demo.entrusted);

    // Act
    let wrong_township = upload(&mut first.session, elsewhere.upload(&[]));
    let no_entrustment = upload(&mut third.session, unentrusted.upload(&[]));

    // Assert
    assert_error(&wrong_township, 403, "out_of_scope");
    assert_error(&no_entrustment, 403, "out_of_scope");
    assert_eq!(document_count(&mut supervisor), 0);
}

#[test]
fn a_new_record_takes_the_township_of_the_enrolled_officer_and_an_unenrolled_device_records_nothing()
 {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let stranger = Device::new(&server);

    // Act
    let doc = created_id(&inspection_new(&device, &demo.entrusted, &demo.officers[1].officer));
    let refused = inspection_new(&stranger, &demo.entrusted, &demo.officers[1].officer);

    // Assert
    assert_eq!(enrolled["officer"], demo.officers[0].officer.as_str());
    assert_eq!(enrolled["role"], "officer");
    assert_eq!(enrolled["township"], demo.townships[0].as_str());
    assert_eq!(actor_of(&enrolled).len(), 32);
    assert!(enrolled["device"].is_string());
    let record = device.json(&["show", &doc])["record"].clone();
    assert_eq!(record["township"], demo.officers[0].township.as_str());
    let officers: Vec<&Value> = record["officers"]
        .as_array()
        .expect("officers")
        .iter()
        .map(|item| &item["officer"])
        .collect();
    assert!(officers.contains(&&json!(demo.officers[0].officer)), "{record}");
    assert_eq!(device.json(&["status"])["actor"], enrolled["actor"]);
    assert!(!refused.status.success());
    let error: Value = serde_json::from_slice(&refused.stdout).expect("error JSON");
    assert_eq!(error["error"]["code"], "not_enrolled");
}

#[test]
fn a_supervisor_uploads_nothing_and_an_officer_has_no_admin_api() {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut supervisor = server.enroll(&demo.supervisor_code);
    let mut officer = server.enroll(&demo.officers[0].code);
    let mut record =
        HandMade::inspection(&supervisor.actor(), &demo.officers[0].township, &demo.entrusted);

    // Act
    let upload_response = upload(&mut supervisor.session, record.upload(&[]));
    let admin_read =
        officer.session.send("GET", "/v1/admin/audit", None, Vec::new()).expect("answers");
    let admin_write = officer
        .session
        .send(
            "POST",
            &format!("/v1/admin/certificates/{}/revoke", "C-0001"),
            Some("application/json"),
            b"{}".to_vec(),
        )
        .expect("answers");

    // Assert
    assert_error(&upload_response, 403, "forbidden");
    assert_error(&admin_read, 403, "forbidden");
    assert_error(&admin_write, 403, "forbidden");
    assert_eq!(document_count(&mut supervisor.session), 0);
}

#[test]
fn revoking_a_certificate_with_the_admin_tool_takes_effect_on_the_next_request_and_is_audited() {
    // Arrange: the officer syncs a record; an admin device is enrolled with the CLI.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (officer, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let (admin, admin_enrolled) = Device::enrolled(&server, &demo.admin_code);
    assert_eq!(admin_enrolled["role"], "admin");
    let doc = created_id(&inspection_new(&officer, &demo.entrusted, &demo.officers[1].officer));
    assert_eq!(officer.json(&["sync"])["uploaded"], 1);
    let officer_id = enrolled["officer"].as_str().unwrap().to_owned();
    let certificates = admin.json(&["admin", "cert", "list"]);
    let cert_no = rows(&certificates)
        .iter()
        .find(|row| row["officer"] == officer_id.as_str())
        .and_then(|row| row["cert_no"].as_str())
        .unwrap_or_else(|| panic!("no certificate of {officer_id} in {certificates}"))
        .to_owned();
    officer.json(&["edit", &doc, "--append", "findings=现场检查。"]);

    // Act
    admin.json(&["admin", "cert", "revoke", &cert_no]);
    let upload_only = officer.json(&["sync"]);
    let code = officer.error_code(&["sync"]);

    // Assert: the edit made before the revocation goes up with the token the device still
    // holds (upload-only mode, SECURITY.md B-18) and waits for review; the next sync, which
    // only reads, is refused.
    assert_eq!(upload_only["uploaded"], 1, "{upload_only}");
    assert_eq!(code, "certificate_revoked");
    let mut supervisor = server.supervisor();
    assert_eq!(history_len(&mut supervisor, &doc), 2, "the edit is stored, flagged for review");
    assert_eq!(officer.json(&["status"])["pending_documents"], 0);
    let mut admin_session = admin.session();
    let entries = audit(&mut admin_session);
    let entry = entries
        .iter()
        .find(|entry| {
            entry["object_id"] == cert_no.as_str()
                && entry["action"].as_str().is_some_and(|action| action.contains("revoke"))
        })
        .unwrap_or_else(|| panic!("no audit entry for revoking {cert_no}: {entries:?}"));
    assert_eq!(entry["actor_officer"], admin_enrolled["officer"]);
}
