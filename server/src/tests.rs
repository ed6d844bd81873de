//! In-process tests of the HTTP API through `router(state).oneshot(request)`: error mapping,
//! all-or-nothing uploads, replays and the feed a second device receives.

use automerge::{AutoCommit, Change, ChangeHash};
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, DocUpload, SyncRequest, SyncResponse};
use sync_core::view::DocumentView;
use tempfile::TempDir;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::fixtures::{actor, doc_id, new_inspection, set_outcome, temp_store, upload};
use crate::router;
use crate::routes::run_blocking;
use crate::routes::sync::MAX_BODY_BYTES;
use crate::state::AppState;

/// A server on a fresh store; the directory guard keeps the database alive.
struct TestApi {
    _dir: TempDir,
    state: AppState,
}

impl TestApi {
    fn new() -> Self {
        let (dir, store) = temp_store();
        Self { _dir: dir, state: AppState::new(store) }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Bytes) {
        let response = router(self.state.clone()).oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response.into_body().collect().await.expect("reading the body").to_bytes();
        (status, body)
    }

    async fn post_sync(&self, body: Vec<u8>) -> (StatusCode, Bytes) {
        let request = Request::post("/v1/sync")
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Body::from(body))
            .expect("a valid request");
        self.send(request).await
    }

    /// Sends a sync that must succeed and returns the decoded answer.
    async fn sync(&self, request: &SyncRequest) -> SyncResponse {
        let (status, body) = self.post_sync(request.encode()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        SyncResponse::decode(&body).expect("a valid sync response")
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri).body(Body::empty()).expect("a valid request");
        let (status, body) = self.send(request).await;
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    fn change_rows(&self) -> i64 {
        self.state.store().change_rows()
    }
}

/// Asserts the status and the error code of a JSON error body.
#[track_caller]
fn check_error(status: StatusCode, body: &[u8], expected_status: StatusCode, expected_code: &str) {
    let json: Value = serde_json::from_slice(body).expect("an error body is JSON");
    assert_eq!((status, json["error"]["code"].as_str()), (expected_status, Some(expected_code)));
    assert!(json["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
}

fn request_for(cursor: u64, docs: Vec<DocUpload>) -> SyncRequest {
    SyncRequest { cursor, docs }
}

fn accepted_heads(response: &SyncResponse, index: usize) -> (Vec<[u8; 32]>, u32) {
    match &response.results[index].outcome {
        DocOutcome::Accepted { heads, stored } => (heads.clone(), *stored),
        DocOutcome::Rejected { code, message } => panic!("rejected: {code}: {message}"),
    }
}

fn wire_heads(doc: &mut AutoCommit) -> Vec<[u8; 32]> {
    let mut heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|hash| hash.0).collect();
    heads.sort_unstable();
    heads
}

fn first_change(doc: &mut AutoCommit) -> Change {
    doc.get_changes(&[]).remove(0)
}

#[tokio::test]
async fn random_bytes_are_malformed_and_store_nothing() {
    let api = TestApi::new();

    let (status, body) = api.post_sync(b"\x8f\x00not a sync message at all".to_vec()).await;

    check_error(status, &body, StatusCode::BAD_REQUEST, "malformed_change");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_valid_change_with_trailing_garbage_is_malformed_and_stores_nothing() {
    let api = TestApi::new();
    let id = doc_id(1);
    let mut doc = new_inspection(&actor(1), id);
    let mut doc_upload = upload(id, &mut doc, &[]);
    doc_upload.changes[0].extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);

    let (status, body) = api.post_sync(request_for(0, vec![doc_upload]).encode()).await;

    check_error(status, &body, StatusCode::BAD_REQUEST, "malformed_change");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_change_whose_deps_are_missing_is_refused_and_stores_nothing() {
    let api = TestApi::new();
    let id = doc_id(2);
    let mut doc = new_inspection(&actor(1), id);
    let created = doc.get_heads();
    set_outcome(&mut doc, "case_lead");

    let (status, body) =
        api.post_sync(request_for(0, vec![upload(id, &mut doc, &created)]).encode()).await;

    check_error(status, &body, StatusCode::CONFLICT, "missing_deps");
    let message = serde_json::from_slice::<Value>(&body).unwrap()["error"]["message"].to_string();
    assert!(message.contains(&created[0].to_string()), "{message}");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large() {
    let api = TestApi::new();

    let (status, body) = api.post_sync(vec![0; MAX_BODY_BYTES + 1]).await;

    check_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

#[tokio::test]
async fn too_many_changes_in_one_sync_are_refused() {
    let api = TestApi::new();
    let doc_upload = DocUpload {
        doc_id: doc_id(3),
        base_heads: vec![],
        heads: vec![],
        changes: vec![vec![0]; 2_001],
    };

    let (status, body) = api.post_sync(request_for(0, vec![doc_upload]).encode()).await;

    check_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "batch_too_large");
}

#[tokio::test]
async fn the_same_document_twice_in_one_sync_is_malformed() {
    let api = TestApi::new();
    let id = doc_id(4);
    let mut doc = new_inspection(&actor(1), id);
    let doc_upload = upload(id, &mut doc, &[]);

    let (status, body) =
        api.post_sync(request_for(0, vec![doc_upload.clone(), doc_upload]).encode()).await;

    check_error(status, &body, StatusCode::BAD_REQUEST, "malformed_change");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_replayed_upload_answers_the_same_heads_and_stores_nothing_twice() {
    // Arrange
    let api = TestApi::new();
    let id = doc_id(5);
    let mut doc = new_inspection(&actor(1), id);
    set_outcome(&mut doc, "rectification_order");
    let body = request_for(0, vec![upload(id, &mut doc, &[])]).encode();

    // Act
    let first = api.sync(&SyncRequest::decode(&body).unwrap()).await;
    let rows_after_first = api.change_rows();
    let (status, replay) = api.post_sync(body).await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    let replay = SyncResponse::decode(&replay).unwrap();
    assert_eq!(accepted_heads(&first, 0), (wire_heads(&mut doc), 2));
    assert_eq!(accepted_heads(&replay, 0), (wire_heads(&mut doc), 0));
    assert_eq!(rows_after_first, 2);
    assert_eq!(api.change_rows(), 2);
    assert_eq!((first.cursor, replay.cursor), (2, 2));
    assert!(first.updates.is_empty() && replay.updates.is_empty());
}

#[tokio::test]
async fn a_second_device_receives_the_first_devices_changes() {
    // Arrange: device A creates the record and syncs; device B forks it before A's next edit.
    let api = TestApi::new();
    let id = doc_id(6);
    let mut device_a = new_inspection(&actor(1), id);
    let created = device_a.get_heads();
    let mut device_b = device_a.fork().with_actor(actor(2));
    let first_sync = api.sync(&request_for(0, vec![upload(id, &mut device_a, &[])])).await;
    set_outcome(&mut device_a, "case_lead");
    api.sync(&request_for(first_sync.cursor, vec![upload(id, &mut device_a, &created)])).await;
    set_outcome(&mut device_b, "referral");

    // Act: B uploads its own edit with cursor 0.
    let response = api.sync(&request_for(0, vec![upload(id, &mut device_b, &created)])).await;

    // Assert: B gets both of A's changes, not its own, and converges with the server.
    assert_eq!(response.updates.len(), 1);
    assert_eq!(response.updates[0].doc_id, id);
    let received: Vec<Change> = response.updates[0]
        .changes
        .iter()
        .map(|bytes| Change::try_from(bytes.as_slice()).expect("the server sends valid changes"))
        .collect();
    let from_a: Vec<ChangeHash> = device_a.get_changes(&[]).iter().map(Change::hash).collect();
    assert_eq!(received.iter().map(Change::hash).collect::<Vec<_>>(), from_a);
    assert_eq!(response.cursor, 3);
    device_b.apply_changes(received).unwrap();
    let mut server_heads = accepted_heads(&response, 0).0;
    server_heads.sort_unstable();
    assert_eq!(server_heads, wire_heads(&mut device_b));
}

#[tokio::test]
async fn the_server_view_of_a_document_equals_the_devices() {
    let api = TestApi::new();
    let id = doc_id(7);
    let mut doc = new_inspection(&actor(1), id);
    set_outcome(&mut doc, "referral");
    api.sync(&request_for(0, vec![upload(id, &mut doc, &[])])).await;

    let (status, view) = api.get(&format!("/v1/docs/{id}")).await;

    assert_eq!(status, StatusCode::OK);
    let heads = doc.get_heads();
    let device_view = serde_json::to_value(DocumentView::build(id, &heads, &doc)).unwrap();
    assert_eq!(view, device_view);
}

#[tokio::test]
async fn documents_are_listed_with_their_projections_and_history() {
    let api = TestApi::new();
    let id = doc_id(8);
    let mut doc = new_inspection(&actor(1), id);
    set_outcome(&mut doc, "referral");
    api.sync(&request_for(0, vec![upload(id, &mut doc, &[])])).await;

    let (list_status, list) = api.get("/v1/docs").await;
    let (history_status, history) = api.get(&format!("/v1/docs/{id}/history")).await;

    assert_eq!((list_status, history_status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(list[0]["id"], id.to_string());
    assert_eq!(list[0]["kind"], "inspection");
    assert_eq!(list[0]["status"], "open");
    assert_eq!(list[0]["matter"], "M1");
    assert_eq!(list[0]["heads"][0], doc.get_heads()[0].to_string());
    let history = history.as_array().expect("an array");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["feed_seq"], 1);
    assert_eq!(history[0]["actor"], actor(1).to_hex_string());
    assert_eq!(history[0]["message"], "create");
    assert_eq!(history[1]["deps"][0], history[0]["hash"]);
    assert_eq!(history[1]["seq"], 2);
}

#[tokio::test]
async fn document_reads_refuse_bad_and_unknown_ids() {
    let api = TestApi::new();
    let unknown: DocumentId = doc_id(9);

    let (bad_status, bad) = api.get("/v1/docs/not-a-uuid").await;
    let (unknown_status, missing) = api.get(&format!("/v1/docs/{unknown}")).await;
    let (history_status, missing_history) = api.get(&format!("/v1/docs/{unknown}/history")).await;

    assert_eq!(
        (bad_status, bad["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_document_id"))
    );
    for (status, body) in [(unknown_status, missing), (history_status, missing_history)] {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_document"))
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json_errors() {
    let api = TestApi::new();
    let wrong_method =
        Request::builder().method(Method::GET).uri("/v1/sync").body(Body::empty()).unwrap();

    let (health_status, health) = api.get("/healthz").await;
    let (missing_status, missing) = api.get("/v1/nothing-here").await;
    let (method_status, method_body) = api.send(wrong_method).await;

    assert_eq!((health_status, health), (StatusCode::OK, serde_json::json!({ "status": "ok" })));
    assert_eq!(
        (missing_status, missing["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    check_error(method_status, &method_body, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn an_empty_sync_returns_the_feed_after_the_cursor() {
    let api = TestApi::new();
    let id = doc_id(10);
    let mut doc = new_inspection(&actor(1), id);
    set_outcome(&mut doc, "referral");
    api.sync(&request_for(0, vec![upload(id, &mut doc, &[])])).await;

    let everything = api.sync(&request_for(0, vec![])).await;
    let after_first = api.sync(&request_for(1, vec![])).await;
    let nothing = api.sync(&request_for(2, vec![])).await;

    assert_eq!(everything.updates[0].changes.len(), 2);
    assert_eq!(after_first.updates[0].changes.len(), 1);
    assert!(nothing.updates.is_empty());
    for response in [&everything, &after_first, &nothing] {
        assert_eq!((response.cursor, response.more), (2, false));
        assert!(response.results.is_empty());
    }
    let mut creation = first_change(&mut doc);
    assert_eq!(everything.updates[0].changes[0], creation.bytes().into_owned());
}

#[tokio::test]
async fn a_panic_in_blocking_work_is_an_internal_error() {
    let result: Result<(), ApiError> = run_blocking(|| panic!("automerge blew up")).await;

    let err = result.expect_err("the panic is caught");
    assert_eq!((err.status(), err.code()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
}
