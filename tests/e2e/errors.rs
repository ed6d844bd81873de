//! Bad input gets a specific 4xx JSON error and stores nothing.
//!
//! Every upload here is properly authenticated (an enrolled officer's token and DPoP proof),
//! so that the refusal is about the body and nothing else.

use cli::auth::Session;
use serde_json::Value;

use crate::harness::{Enrolled, HandMade, TestServer, assert_error, document_count, upload};

/// A demo server, an enrolled officer of its first township, and a supervisor who reads all.
struct Fixture {
    server: TestServer,
    officer: Enrolled,
    supervisor: Session,
    /// A record of the entrusted matter by the officer's own actor, with two changes.
    record: HandMade,
}

impl Fixture {
    fn new() -> Self {
        let server = TestServer::spawn_demo();
        let demo = server.demo().clone();
        let officer = server.enroll(&demo.officers[0].code);
        let supervisor = server.supervisor();
        let mut record =
            HandMade::inspection(&officer.actor(), &demo.officers[0].township, &demo.entrusted);
        record.set("outcome", "rectification_order");
        Self { server, officer, supervisor, record }
    }

    /// Uploads `body` as the officer and checks the refusal and that nothing was stored.
    #[track_caller]
    fn check(&mut self, body: Vec<u8>, status: u16, code: &str) {
        let response = upload(&mut self.officer.session, body);
        assert_error(&response, status, code);
        assert_eq!(document_count(&mut self.supervisor), 0, "nothing may be stored");
    }
}

#[test]
fn random_bytes_are_a_malformed_change() {
    // Arrange
    let mut fixture = Fixture::new();

    // Act + Assert
    fixture.check(b"\x00\x01garbage that is not a sync message".to_vec(), 400, "malformed_change");
}

#[test]
fn a_truncated_change_is_malformed_and_stores_nothing() {
    // Arrange
    let mut fixture = Fixture::new();
    let mut changes = fixture.record.chunks();
    let first = &mut changes[0];
    first.truncate(first.len() - 3);

    // Act + Assert
    let body = fixture.record.upload_changes(&[], changes);
    fixture.check(body, 400, "malformed_change");
}

#[test]
fn a_change_with_trailing_garbage_is_malformed_and_no_prefix_is_applied() {
    // Arrange
    let mut fixture = Fixture::new();
    let mut changes = fixture.record.chunks();
    changes[0].extend_from_slice(b"tail");

    // Act + Assert
    let body = fixture.record.upload_changes(&[], changes);
    fixture.check(body, 400, "malformed_change");
}

#[test]
fn a_change_with_missing_dependencies_is_refused_whole() {
    // Arrange
    let mut fixture = Fixture::new();
    let changes = fixture.record.chunks();

    // Act + Assert
    let body = fixture.record.upload_changes(&[], changes[1..].to_vec());
    fixture.check(body, 409, "missing_deps");
    let missing = fixture.supervisor.get_json(&format!("/v1/docs/{}", fixture.record.id));
    assert!(missing.is_err(), "the document must stay unknown");
}

#[test]
fn an_oversize_body_is_refused_before_it_is_read() {
    // The client announces 9 MiB and sends only the headers: the server must answer from the
    // declared length alone. (A client that pushes the whole body may see the connection reset
    // once the server answers and closes, which is the point of refusing early.) The request
    // carries a valid token and proof, so the answer is 413 whichever the server checks first,
    // authentication (SECURITY.md §a check order: token, proof, registry, then body limits) or
    // the declared length.
    use std::io::{Read, Write};

    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.officer.session.access_token().expect("an access token");
    let proof = fixture.officer.proof("POST", "/v1/sync", Some(&token));
    let address = fixture.server.url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: {address}\r\nContent-Type: {}\r\n\
         Authorization: DPoP {token}\r\nDPoP: {proof}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        sync_core::protocol::CONTENT_TYPE,
        9 * 1024 * 1024
    );

    // Act
    stream.write_all(head.as_bytes()).expect("send headers");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");

    // Assert
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).expect("body");
    let error: Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(error["error"]["code"], "body_too_large");
    assert_eq!(document_count(&mut fixture.supervisor), 0);
}

#[test]
fn a_replayed_upload_stores_nothing_twice() {
    // Arrange
    let mut fixture = Fixture::new();
    let body = fixture.record.upload(&[]);

    // Act: the same body twice, each with a fresh proof.
    let first = upload(&mut fixture.officer.session, body.clone());
    let second = upload(&mut fixture.officer.session, body);

    // Assert
    assert_eq!((first.status, second.status), (200, 200));
    let history = fixture
        .supervisor
        .get_json(&format!("/v1/docs/{}/history", fixture.record.id))
        .expect("history");
    assert_eq!(history.as_array().expect("array").len(), 2);
}
