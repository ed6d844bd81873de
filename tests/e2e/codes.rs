//! The error codes of ARCHITECTURE.md's table that the other modules do not provoke: each is
//! asserted here with its status from outside, and each refusal stores or registers nothing.
//!
//! `busy` and `internal` cannot be provoked black-box (a database kept locked past the
//! writer's retries, a replay cache full of unexpired proofs, a bug); the server's in-process
//! tests cover them.

use cli::auth::Session;
use cli::client::{ClientError, RawResponse};
use serde_json::{Value, json};

use crate::harness::{
    HandMade, TestServer, assert_error, audit, certificate_of, document_count, history_len,
    send_with_headers, session_at, sha256_hex, upload,
};

/// A demo server with an admin and a supervisor session.
struct Fixture {
    server: TestServer,
    admin: Session,
    supervisor: Session,
}

impl Fixture {
    fn new() -> Self {
        let server = TestServer::spawn_demo();
        let admin = server.admin();
        let supervisor = server.supervisor();
        Self { server, admin, supervisor }
    }

    /// `POST /v1/admin/{path}` of raw JSON bytes as the admin.
    fn admin_post(&mut self, path: &str, body: &[u8]) -> RawResponse {
        self.admin
            .send("POST", &format!("/v1/admin/{path}"), Some("application/json"), body.to_vec())
            .expect("the server answers")
    }

    /// Posts each body to `/v1/admin/{path}` and checks the refusal, and that the registry
    /// (its audit trail) did not change.
    #[track_caller]
    fn check_registry_refusals(&mut self, cases: &[(&str, Value)], status: u16, code: &str) {
        let audited = audit(&mut self.admin).len();
        for (path, body) in cases {
            // Act
            let response = self.admin_post(path, body.to_string().as_bytes());

            // Assert
            assert_error(&response, status, code);
        }
        assert_eq!(audit(&mut self.admin).len(), audited, "nothing may be registered");
    }
}

/// The status and code of a refused session call.
#[track_caller]
fn api_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_json_body_that_does_not_parse_or_fit_is_malformed_json_and_registers_nothing() {
    // Arrange
    let mut fixture = Fixture::new();
    let audited = audit(&mut fixture.admin).len();
    let cases: [(&str, &[u8]); 5] = [
        ("agencies", b"{\"id\": \"a-x\", \"name\": "),
        ("agencies", b"[1, 2, 3]"),
        ("agencies", br#"{"id": "a-x", "name": "X", "code": "X"}"#),
        ("agencies", br#"{"id": "a-x", "name": "X", "code": "X", "kind": "castle"}"#),
        ("officers", br#"{"id": "o-x", "name": 7, "role": "officer"}"#),
    ];

    for (path, body) in cases {
        // Act
        let response = fixture.admin_post(path, body);

        // Assert
        assert_error(&response, 400, "malformed_json");
    }
    let term = json!({
        "entrusting_agency": "d-yingji", "township": "t-hexi", "legal_basis": "x",
        "valid_from": "next spring", "valid_to": "2027-01-01",
        "items": [{"matter": "AJ-001", "actions": ["inspect"]}],
    });
    let response = fixture.admin_post("entrustments", term.to_string().as_bytes());
    assert_error(&response, 400, "malformed_json");
    assert_eq!(audit(&mut fixture.admin).len(), audited, "nothing may be registered");
}

#[test]
fn a_document_path_that_does_not_hold_a_uuid_is_invalid_document_id() {
    // Arrange
    let mut fixture = Fixture::new();

    for path in ["/v1/docs/not-a-uuid", "/v1/docs/12345/history", "/v1/docs/%20"] {
        // Act
        let response = fixture.supervisor.send("GET", path, None, Vec::new()).unwrap();

        // Assert
        assert_error(&response, 400, "invalid_document_id");
    }
}

#[test]
fn a_document_that_does_not_exist_is_unknown_document_to_a_supervisor_and_not_found_to_an_officer()
{
    // Arrange: a record of the first township; an officer of the second township.
    let fixture = Fixture::new();
    let demo = fixture.server.demo().clone();
    let mut owner = fixture.server.enroll(&demo.officers[0].code);
    let mut outsider = fixture.server.enroll(&demo.officers[2].code);
    let mut supervisor = fixture.supervisor;
    let mut record =
        HandMade::inspection(&owner.actor(), &demo.officers[0].township, &demo.entrusted);
    assert_eq!(upload(&mut owner.session, record.upload(&[])).status, 200);
    let stored = record.id.to_string();
    let never = HandMade::inspection(&owner.actor(), &demo.officers[0].township, &demo.entrusted)
        .id
        .to_string();
    let get = |session: &mut Session, path: String| session.send("GET", &path, None, Vec::new());

    // Act
    let unknown_to_owner = get(&mut owner.session, format!("/v1/docs/{never}")).unwrap();
    let unknown_to_outsider = get(&mut outsider.session, format!("/v1/docs/{never}")).unwrap();
    let unknown_history = get(&mut supervisor, format!("/v1/docs/{never}/history")).unwrap();
    let out_of_sight = get(&mut outsider.session, format!("/v1/docs/{stored}")).unwrap();
    let out_of_sight_history =
        get(&mut outsider.session, format!("/v1/docs/{stored}/history")).unwrap();
    let no_route = get(&mut supervisor, "/v1/no-such-route".to_owned()).unwrap();

    // Assert
    // An officer cannot tell a document that does not exist from one out of sight.
    assert_error(&unknown_to_owner, 404, "not_found");
    assert_error(&unknown_to_outsider, 404, "not_found");
    assert_error(&unknown_history, 404, "unknown_document");
    assert_error(&out_of_sight, 404, "not_found");
    assert_error(&out_of_sight_history, 404, "not_found");
    assert_error(&no_route, 404, "not_found");
    assert!(get(&mut owner.session, format!("/v1/docs/{stored}")).unwrap().status == 200);
}

#[test]
fn an_unknown_registry_object_in_the_path_is_not_found_and_changes_nothing() {
    // Arrange
    let mut fixture = Fixture::new();
    let officer = fixture.server.demo().officers[0].officer.clone();
    let cert_no = certificate_of(&mut fixture.admin, &officer);
    let audited = audit(&mut fixture.admin).len();

    for path in [
        "certificates/C-9999/revoke".to_owned(),
        format!("certificates/{cert_no}/explode"),
        "devices/dev-nobody/revoke".to_owned(),
        "entrustments/e-nothing/suspend".to_owned(),
    ] {
        // Act
        let response = fixture.admin_post(&path, b"{}");

        // Assert
        assert_error(&response, 404, "not_found");
    }
    assert_eq!(audit(&mut fixture.admin).len(), audited, "nothing may change");
}

#[test]
fn a_wrong_method_on_a_known_route_is_method_not_allowed_and_no_blob_is_ever_deleted() {
    // Arrange: a stored blob, which no method may delete.
    let mut fixture = Fixture::new();
    let demo = fixture.server.demo().clone();
    let mut officer = fixture.server.enroll(&demo.officers[0].code);
    let bytes = b"a photo that stays".to_vec();
    let sha256 = sha256_hex(&bytes);
    let stored = put_chunk(&mut officer.session, &sha256, "0", &bytes.len().to_string(), &bytes);
    assert_eq!(stored.status, 201, "{}", String::from_utf8_lossy(&stored.body));
    let doc = "00000000-0000-4000-8000-000000000001";

    for (method, path) in [
        ("DELETE", format!("/v1/blobs/{sha256}")),
        ("POST", format!("/v1/blobs/{sha256}")),
        ("GET", "/v1/sync".to_owned()),
        ("DELETE", "/v1/docs".to_owned()),
        ("PUT", format!("/v1/docs/{doc}")),
        ("DELETE", "/v1/admin/audit".to_owned()),
        ("POST", "/v1/nonce".to_owned()),
    ] {
        // Act
        let response = fixture.supervisor.send(method, &path, None, Vec::new()).unwrap();

        // Assert
        assert_error(&response, 405, "method_not_allowed");
        assert!(response.header("dpop-nonce").is_some(), "{method} {path}");
    }
    let status = fixture.supervisor.get_json(&format!("/v1/blobs/{sha256}/upload")).unwrap();
    assert_eq!(status["complete"], true, "{status}");
}

/// `PUT /v1/blobs/{sha256}` of `chunk` with exactly these upload headers.
fn put_raw(
    session: &mut Session,
    sha256: &str,
    headers: &[(&str, &str)],
    chunk: &[u8],
) -> RawResponse {
    let mut all = vec![("content-type", "application/octet-stream")];
    all.extend_from_slice(headers);
    send_with_headers(session, "PUT", &format!("/v1/blobs/{sha256}"), &all, chunk)
        .expect("the server answers")
}

/// `PUT /v1/blobs/{sha256}` of `chunk` at `offset` of a blob of `total` bytes.
fn put_chunk(
    session: &mut Session,
    sha256: &str,
    offset: &str,
    total: &str,
    chunk: &[u8],
) -> RawResponse {
    put_raw(session, sha256, &[("upload-offset", offset), ("upload-length", total)], chunk)
}

#[test]
fn missing_or_inconsistent_upload_headers_are_malformed_upload_and_keep_nothing() {
    // Arrange
    let fixture = Fixture::new();
    let demo = fixture.server.demo().clone();
    let mut officer = fixture.server.enroll(&demo.officers[0].code);
    let bytes = b"twenty bytes of blob".to_vec();
    let sha256 = sha256_hex(&bytes);
    let length = bytes.len().to_string();
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("upload-length", &length)],
        &[("upload-offset", "0")],
        &[("upload-offset", "zero"), ("upload-length", &length)],
        &[("upload-offset", "0"), ("upload-length", "-20")],
    ];

    // Act: a chunk that ends past the length it announces.
    let past_the_end = put_chunk(&mut officer.session, &sha256, "0", "10", &bytes);

    // Assert
    assert_error(&past_the_end, 400, "malformed_upload");

    for headers in cases {
        // Act: each on a connection of its own, since the server refuses bad headers before
        // it reads the chunk and then closes the connection, which the client would reuse.
        let mut session = session_at(fixture.server.url(), officer.key.pkcs8());
        let response = put_raw(&mut session, &sha256, headers, &bytes);

        // Assert
        assert_error(&response, 400, "malformed_upload");
    }
    let status = officer.session.get_json(&format!("/v1/blobs/{sha256}/upload")).unwrap();
    assert_eq!((&status["complete"], &status["received"]), (&json!(false), &json!(0)), "{status}");
}

#[test]
fn the_same_change_uploaded_under_a_second_document_id_is_a_duplicate_change() {
    // Arrange: a stored record, and the same change bytes under a fresh document id.
    let fixture = Fixture::new();
    let demo = fixture.server.demo().clone();
    let mut officer = fixture.server.enroll(&demo.officers[0].code);
    let mut supervisor = fixture.supervisor;
    let mut record =
        HandMade::inspection(&officer.actor(), &demo.officers[0].township, &demo.entrusted);
    assert_eq!(upload(&mut officer.session, record.upload(&[])).status, 200);
    let mut copy = HandMade {
        id: HandMade::inspection(&officer.actor(), "t", "m").id,
        doc: record.doc.fork(),
    };
    let copied = copy.upload(&[]);

    // Act
    let response = upload(&mut officer.session, copied);

    // Assert
    assert_error(&response, 409, "duplicate_change");
    assert_eq!(document_count(&mut supervisor), 1);
    assert_eq!(history_len(&mut supervisor, &record.id.to_string()), 1);
    let missing = supervisor.send("GET", &format!("/v1/docs/{}", copy.id), None, Vec::new());
    assert_eq!(missing.expect("the server answers").status, 404);
}

#[test]
fn a_change_with_more_than_100000_operations_is_change_refused_and_stores_nothing() {
    // Arrange: a stored record, then one edit typing 100,001 characters (one op each).
    let fixture = Fixture::new();
    let demo = fixture.server.demo().clone();
    let mut officer = fixture.server.enroll(&demo.officers[0].code);
    let mut supervisor = fixture.supervisor;
    let mut record =
        HandMade::inspection(&officer.actor(), &demo.officers[0].township, &demo.entrusted);
    assert_eq!(upload(&mut officer.session, record.upload(&[])).status, 200);
    let base = record.heads();
    sync_core::edit::edit_text(
        &mut record.doc,
        "findings",
        sync_core::edit::TextEdit::Append,
        &"查".repeat(100_001),
    )
    .expect("append to the findings");
    record.doc.commit();
    let change = record.doc.get_last_local_change().expect("the big edit");
    assert_eq!(change.len(), 100_001, "one op per character");

    // Act
    let response = upload(&mut officer.session, record.upload(&base));

    // Assert
    assert_error(&response, 422, "change_refused");
    assert_eq!(history_len(&mut supervisor, &record.id.to_string()), 1);
}

#[test]
fn an_entrustment_granting_coercive_measures_or_detention_is_not_entrustable() {
    // Arrange
    let mut fixture = Fixture::new();
    let entrustment = |actions: Value| {
        json!({
            "entrusting_agency": "d-yingji", "township": "t-hexi", "legal_basis": "《安全生产法》",
            "valid_from": "2026-01-01", "valid_to": "2028-12-31", "status": "active",
            "items": [{"matter": "AJ-002", "actions": actions}],
        })
    };
    let before = fixture.admin.get_json("/v1/admin/entrustments").expect("entrustments");

    // Act + Assert
    fixture.check_registry_refusals(
        &[
            ("entrustments", entrustment(json!(["inspect", "coerce"]))),
            ("entrustments", entrustment(json!(["detain"]))),
        ],
        422,
        "not_entrustable",
    );
    let after = fixture.admin.get_json("/v1/admin/entrustments").expect("entrustments");
    assert_eq!(before, after);
}

#[test]
fn a_registry_row_naming_an_unknown_agency_officer_or_matter_is_unknown_reference() {
    // Arrange
    let mut fixture = Fixture::new();
    let entrustment = |agency: &str, matter: &str| {
        json!({
            "entrusting_agency": agency, "township": "t-hexi", "legal_basis": "x",
            "valid_from": "2026-01-01", "valid_to": "2028-12-31", "status": "active",
            "items": [{"matter": matter, "actions": ["inspect"]}],
        })
    };
    let certificate = json!({
        "cert_no": "C-9001", "officer": "o-nobody", "issuer": "县人民政府",
        "sectors": ["work_safety"], "territory": "t-hexi",
        "valid_from": "2026-01-01", "valid_to": "2028-12-31",
    });

    // Act + Assert
    fixture.check_registry_refusals(
        &[
            ("entrustments", entrustment("d-nowhere", "AJ-001")),
            ("entrustments", entrustment("d-yingji", "AJ-999")),
            (
                "officers",
                json!({"id": "o-9", "name": "孙九", "township": "t-nowhere", "role": "officer"}),
            ),
            ("certificates", certificate),
            ("enroll-codes", json!({"officer": "o-nobody"})),
        ],
        422,
        "unknown_reference",
    );
}

#[test]
fn a_registry_id_that_is_taken_is_already_exists() {
    // Arrange
    let mut fixture = Fixture::new();
    let demo = fixture.server.demo().clone();
    let first = demo.officers[0].officer.clone();
    let cert_no = certificate_of(&mut fixture.admin, &first);
    let matter = json!({
        "code": demo.entrusted, "name": "重名", "sector": "work_safety", "legal_basis": "x",
        "penalty_standard": "x", "allowed_actions": ["inspect"],
    });

    // Act + Assert
    fixture.check_registry_refusals(
        &[
            (
                "agencies",
                json!({"id": demo.townships[0], "name": "重名镇", "code": "重", "kind": "township"}),
            ),
            ("officers", json!({"id": first, "name": "重名", "township": demo.townships[0], "role": "officer"})),
            (
                "certificates",
                json!({
                    "cert_no": cert_no, "officer": first, "issuer": "县人民政府",
                    "sectors": ["work_safety"], "territory": demo.townships[0],
                    "valid_from": "2026-01-01", "valid_to": "2028-12-31",
                }),
            ),
            ("matters", matter),
        ],
        409,
        "already_exists",
    );
}

#[test]
fn an_officer_whose_certificate_has_expired_or_who_has_none_gets_no_token() {
    // Arrange: two officers of the first township, one with a certificate that ended in
    // 2021, one with none; both hold enrolled devices.
    let mut fixture = Fixture::new();
    let township = fixture.server.demo().townships[0].clone();
    for officer in ["o-expired", "o-uncertified"] {
        let row = json!({"id": officer, "name": "临时", "township": township, "role": "officer"});
        assert_eq!(fixture.admin_post("officers", row.to_string().as_bytes()).status, 201);
    }
    let certificate = json!({
        "cert_no": "C-2020", "officer": "o-expired", "issuer": "县人民政府",
        "sectors": ["work_safety"], "territory": township,
        "valid_from": "2020-01-01", "valid_to": "2021-01-01",
    });
    assert_eq!(fixture.admin_post("certificates", certificate.to_string().as_bytes()).status, 201);
    let mut code_of = |officer: &str| {
        let issued =
            fixture.admin_post("enroll-codes", json!({"officer": officer}).to_string().as_bytes());
        let issued: Value = serde_json::from_slice(&issued.body).expect("a code");
        issued["code"].as_str().expect("the code").to_owned()
    };
    let (expired_code, uncertified_code) = (code_of("o-expired"), code_of("o-uncertified"));
    let mut expired = fixture.server.enroll(&expired_code);
    let mut uncertified = fixture.server.enroll(&uncertified_code);

    // Act
    let expired_token = expired.session.access_token();
    let uncertified_token = uncertified.session.access_token();

    // Assert
    assert_eq!(api_error(expired_token), (403, "certificate_expired".to_owned()));
    assert_eq!(api_error(uncertified_token), (403, "certificate_expired".to_owned()));
    assert_eq!(document_count(&mut fixture.supervisor), 0);
}
