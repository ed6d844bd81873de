//! Bad input gets a specific 4xx JSON error and stores nothing.

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ROOT};
use serde_json::Value;
use sync_core::ids::DocumentId;
use sync_core::protocol::{DocUpload, SyncRequest};

use crate::harness::TestServer;

/// A document with two changes, and its id.
fn two_changes() -> (DocumentId, Vec<Vec<u8>>) {
    let mut doc = AutoCommit::new().with_actor(ActorId::from([7u8; 16]));
    doc.put(ROOT, "kind", "inspection").unwrap();
    doc.commit();
    doc.put(ROOT, "outcome", "none").unwrap();
    doc.commit();
    let chunks =
        doc.get_changes(&[]).into_iter().map(|mut change| change.bytes().into_owned()).collect();
    (DocumentId::from_bytes([42; 16]), chunks)
}

fn upload(doc_id: DocumentId, changes: Vec<Vec<u8>>) -> Vec<u8> {
    SyncRequest {
        cursor: 0,
        docs: vec![DocUpload { doc_id, base_heads: vec![], heads: vec![], changes }],
    }
    .encode()
}

#[track_caller]
fn check(server: &TestServer, body: Vec<u8>, status: u16, code: &str) {
    let response = server.client().sync_raw(body).expect("server answers");
    assert_eq!(response.status, status);
    let error: Value = serde_json::from_slice(&response.body).expect("JSON error body");
    assert_eq!(error["error"]["code"], code, "{error}");
    assert!(error["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
    assert_eq!(stored_documents(server), 0, "nothing may be stored");
}

fn stored_documents(server: &TestServer) -> usize {
    let documents = server.client().documents().expect("document list");
    documents.as_array().expect("array").len()
}

#[test]
fn random_bytes_are_a_malformed_change() {
    let server = TestServer::spawn();
    check(&server, b"\x00\x01garbage that is not a sync message".to_vec(), 400, "malformed_change");
}

#[test]
fn a_truncated_change_is_malformed_and_stores_nothing() {
    let server = TestServer::spawn();
    let (doc_id, mut changes) = two_changes();
    let first = &mut changes[0];
    first.truncate(first.len() - 3);
    check(&server, upload(doc_id, changes), 400, "malformed_change");
}

#[test]
fn a_change_with_trailing_garbage_is_malformed_and_no_prefix_is_applied() {
    let server = TestServer::spawn();
    let (doc_id, mut changes) = two_changes();
    changes[0].extend_from_slice(b"tail");
    check(&server, upload(doc_id, changes), 400, "malformed_change");
}

#[test]
fn a_change_with_missing_dependencies_is_refused_whole() {
    let server = TestServer::spawn();
    let (doc_id, changes) = two_changes();
    check(&server, upload(doc_id, changes[1..].to_vec()), 409, "missing_deps");
    let missing = server.client().document(doc_id);
    assert!(missing.is_err(), "the document must stay unknown");
}

#[test]
fn an_oversize_body_is_refused_before_it_is_read() {
    // The client announces 9 MiB and sends only the headers: the server must answer from the
    // declared length alone. (A client that pushes the whole body may see the connection reset
    // once the server answers and closes, which is the point of refusing early.)
    use std::io::{Read, Write};
    let server = TestServer::spawn();
    let address = server.url().trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        9 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).expect("send headers");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).expect("body");
    let error: Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(error["error"]["code"], "body_too_large");
    assert_eq!(stored_documents(&server), 0);
}

#[test]
fn a_replayed_upload_stores_nothing_twice() {
    let server = TestServer::spawn();
    let (doc_id, changes) = two_changes();
    let body = upload(doc_id, changes);
    let first = server.client().sync_raw(body.clone()).expect("first upload");
    let second = server.client().sync_raw(body).expect("replay");
    assert_eq!((first.status, second.status), (200, 200));
    let history = server.client().history(doc_id).expect("history");
    assert_eq!(history.as_array().expect("array").len(), 2);
}
