//! In-process tests of the HTTP API through `router(state).oneshot(request)`: error mapping,
//! all-or-nothing uploads, replays, the feed a second device receives, and identity: enrollment,
//! DPoP-bound tokens, live revocation, scope, attribution and the admin API.
//!
//! `resync` holds the tests of issue 4: idempotent syncs, evidence blobs, eviction;
//! `convergence` its property: devices converge through the handler whatever the network does.
//!
//! Every test starts from the demo registry (`bootstrap::prepare` with `demo`) and talks as
//! enrolled devices whose keys sign a fresh proof for every request.

use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sync_core::body;
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, DocUpload, SyncRequest, SyncResponse};
use sync_core::replica::changes_in;
use sync_core::view::DocumentView;
use tempfile::TempDir;
use tower::ServiceExt;

use crate::auth::{DPOP_NONCE, now_millis};
use crate::error::ApiError;
use crate::fixtures::{
    TestDevice, actor, doc_id, document_chunk_upload, inspection_in, set_outcome, temp_store,
    upload,
};
use crate::registry::SYSTEM;
use crate::routes::enroll::enrollment_code_hash;
use crate::routes::run_blocking;
use crate::routes::sync::MAX_BODY_BYTES;
use crate::state::AppState;
use crate::store::devices;
use crate::store::registry::{self, Author};
use crate::{bootstrap, router};

mod convergence;
mod numbers;
mod openapi;
mod quarterly;
mod reports;
mod resync;
mod review;
mod revoked;

const HOST: &str = "fieldcase.test";
const CHENGGUAN: &str = "t-chengguan";
const HEXI: &str = "t-hexi";
const ENTRUSTED: &str = "AJ-001";
const NOT_ENTRUSTED: &str = "AJ-002";

/// A server on a fresh store seeded with the demo registry; the guard keeps the directory.
struct TestApi {
    dir: TempDir,
    state: AppState,
}

/// One answer.
struct TestResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl TestResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Asserts the status and the error code of a JSON error body.
    #[track_caller]
    fn check_error(&self, expected_status: StatusCode, expected_code: &str) {
        let json = self.json();
        assert_eq!(
            (self.status, json["error"]["code"].as_str()),
            (expected_status, Some(expected_code)),
            "{json}"
        );
        assert!(json["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
    }
}

/// An enrolled device holding an access token.
struct Client {
    device: TestDevice,
    token: String,
    actor: ActorId,
    device_id: String,
}

impl TestApi {
    fn new() -> Self {
        let (dir, store) = temp_store();
        let state = AppState::with_generated_keys(store);
        bootstrap::prepare(&state, dir.path(), true).expect("seeding the demo registry");
        Self { dir, state }
    }

    /// The demo code of `who`: `admin`, `supervisor` or an officer id.
    fn code(&self, who: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(bootstrap::DEMO_FILE)).unwrap();
        let demo: Value = serde_json::from_str(&text).unwrap();
        let code = match who {
            "admin" | "supervisor" => demo["codes"][who].clone(),
            officer => demo["codes"]["officers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|entry| entry["officer"] == officer)
                .expect("a demo officer")["code"]
                .clone(),
        };
        code.as_str().expect("a code").to_owned()
    }

    async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = router(self.state.clone()).oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("reading the body").to_bytes();
        TestResponse { status, headers, body }
    }

    fn nonce(&self) -> String {
        self.state.auth().fresh_nonce()
    }

    /// A request signed by `device`, with `token` if given.
    fn signed(
        &self,
        device: &TestDevice,
        token: Option<&str>,
        method: &Method,
        uri: &str,
    ) -> axum::http::request::Builder {
        // The proof names the URL without its query (RFC 9449 §4.3).
        let path = uri.split_once('?').map_or(uri, |(path, _)| path);
        let proof = device.proof(
            method.as_str(),
            &format!("http://{HOST}{path}"),
            token,
            Some(&self.nonce()),
        );
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST)
            .header("dpop", proof);
        match token {
            Some(token) => builder.header(header::AUTHORIZATION, format!("DPoP {token}")),
            None => builder,
        }
    }

    async fn enroll(&self, device: &TestDevice, code: &str) -> TestResponse {
        let body = json!({ "code": code, "name": "test device" }).to_string();
        let request = self
            .signed(device, None, &Method::POST, "/v1/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    async fn mint(&self, device: &TestDevice) -> TestResponse {
        let request =
            self.signed(device, None, &Method::POST, "/v1/token").body(Body::empty()).unwrap();
        self.send(request).await
    }

    /// Enrolls a fresh device with `code` and mints its first token.
    async fn login_with(&self, code: &str) -> Client {
        let device = TestDevice::generate();
        let enrolled = self.enroll(&device, code).await;
        assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.json());
        let enrolled = enrolled.json();
        let minted = self.mint(&device).await;
        assert_eq!(minted.status, StatusCode::OK, "{}", minted.json());
        let actor = ActorId::from(hex::decode(enrolled["actor"].as_str().unwrap()).unwrap());
        Client {
            device,
            token: minted.json()["access_token"].as_str().unwrap().to_owned(),
            actor,
            device_id: enrolled["device"].as_str().unwrap().to_owned(),
        }
    }

    /// Enrolls a fresh device of a demo officer (`o-1`…, `supervisor`, `admin`).
    async fn login(&self, who: &str) -> Client {
        self.login_with(&self.code(who)).await
    }

    async fn refresh(&self, client: &mut Client) {
        let minted = self.mint(&client.device).await;
        assert_eq!(minted.status, StatusCode::OK, "{}", minted.json());
        client.token = minted.json()["access_token"].as_str().unwrap().to_owned();
    }

    async fn call(
        &self,
        client: &Client,
        method: Method,
        uri: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> TestResponse {
        let builder = self.signed(&client.device, Some(&client.token), &method, uri);
        let request = match body {
            Some((content_type, bytes)) => {
                builder.header(header::CONTENT_TYPE, content_type).body(Body::from(bytes))
            }
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    async fn post_sync(&self, client: &Client, body: Vec<u8>) -> TestResponse {
        self.call(client, Method::POST, "/v1/sync", Some((CONTENT_TYPE, body))).await
    }

    /// A sync whose body is sent with `Content-Encoding: encoding`.
    async fn post_sync_encoded(
        &self,
        client: &Client,
        encoding: &str,
        body: Vec<u8>,
    ) -> TestResponse {
        let request = self
            .signed(&client.device, Some(&client.token), &Method::POST, "/v1/sync")
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header(header::CONTENT_ENCODING, encoding)
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    /// Sends a sync that must succeed and returns the decoded answer.
    async fn sync(&self, client: &Client, request: &SyncRequest) -> SyncResponse {
        let response = self.post_sync(client, request.encode()).await;
        assert_eq!(response.status, StatusCode::OK, "{}", String::from_utf8_lossy(&response.body));
        SyncResponse::decode(&response.body).expect("a valid sync response")
    }

    async fn get(&self, client: &Client, uri: &str) -> TestResponse {
        self.call(client, Method::GET, uri, None).await
    }

    async fn post_json(&self, client: &Client, uri: &str, body: &Value) -> TestResponse {
        let bytes = body.to_string().into_bytes();
        self.call(client, Method::POST, uri, Some(("application/json", bytes))).await
    }

    fn change_rows(&self) -> i64 {
        self.state.store().change_rows()
    }

    /// The finding codes the review queue lists for a document.
    async fn queue_findings(&self, supervisor: &Client, id: DocumentId) -> Vec<Value> {
        let response = self.get(supervisor, "/v1/review/queue").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.json());
        let queue = response.json();
        let item = queue
            .as_array()
            .expect("a list")
            .iter()
            .find(|item| item["id"] == id.to_string())
            .unwrap_or_else(|| panic!("{id} is not in the queue: {queue}"))
            .clone();
        item["findings"].as_array().expect("finding codes").clone()
    }

    fn audit_rows(&self) -> usize {
        self.state.store().read(|tx| registry::list_audit(tx)).unwrap().len()
    }
}

fn request_for(cursor: u64, docs: Vec<DocUpload>) -> SyncRequest {
    SyncRequest { cursor, docs }
}

fn accepted_heads(response: &SyncResponse, index: usize) -> (Vec<[u8; 32]>, u32) {
    match &response.results[index].outcome {
        DocOutcome::Accepted { heads, stored } => (heads.clone(), *stored),
        DocOutcome::Rejected { code, message, .. } => panic!("rejected: {code}: {message}"),
        DocOutcome::Resync { .. } => panic!("the server asked for a resync"),
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

/// An inspection of the entrusted matter in Chengguan, written by `client`.
fn chengguan_inspection(client: &Client, id: DocumentId) -> AutoCommit {
    inspection_in(&client.actor, id, ENTRUSTED, CHENGGUAN)
}

// ---- sync and documents -----------------------------------------------------------------------

#[tokio::test]
async fn random_bytes_are_malformed_and_store_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;

    let response = api.post_sync(&officer, b"\x8f\x00not a sync message at all".to_vec()).await;

    response.check_error(StatusCode::BAD_REQUEST, "malformed_change");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_valid_change_with_trailing_garbage_is_malformed_and_stores_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(1);
    let mut doc = chengguan_inspection(&officer, id);
    let mut doc_upload = upload(id, &mut doc, &[]);
    doc_upload.changes[0].extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);

    let response = api.post_sync(&officer, request_for(0, vec![doc_upload]).encode()).await;

    response.check_error(StatusCode::BAD_REQUEST, "malformed_change");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_change_whose_deps_are_missing_is_refused_and_stores_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(2);
    let mut doc = chengguan_inspection(&officer, id);
    let created = doc.get_heads();
    set_outcome(&mut doc, "case_lead");
    // Only the second change, claiming no acknowledged heads: its dependency is nowhere.
    let mut second_only = upload(id, &mut doc, &created);
    second_only.base_heads.clear();

    let response = api.post_sync(&officer, request_for(0, vec![second_only]).encode()).await;

    response.check_error(StatusCode::CONFLICT, "missing_deps");
    let message = response.json()["error"]["message"].to_string();
    assert!(message.contains(&created[0].to_string()), "{message}");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn an_upload_claiming_heads_the_server_does_not_know_gets_a_resync_and_stores_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(2);
    let mut doc = chengguan_inspection(&officer, id);
    let created = doc.get_heads();
    set_outcome(&mut doc, "case_lead");

    let response = api
        .post_sync(&officer, request_for(0, vec![upload(id, &mut doc, &created)]).encode())
        .await;

    assert_eq!(response.status, StatusCode::OK);
    let answer = SyncResponse::decode(&response.body).expect("a sync answer");
    assert_eq!(answer.results[0].outcome, DocOutcome::Resync { heads: Vec::new() });
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;

    let response = api.post_sync(&officer, vec![0; MAX_BODY_BYTES + 1]).await;

    response.check_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

#[tokio::test]
async fn a_gzipped_upload_is_merged_as_the_same_upload_sent_plain() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(6);
    let mut doc = chengguan_inspection(&officer, id);
    let body = request_for(0, vec![upload(id, &mut doc, &[])]).encode();

    let response = api.post_sync_encoded(&officer, body::GZIP, body::gzip(&body)).await;

    assert_eq!(response.status, StatusCode::OK, "{}", String::from_utf8_lossy(&response.body));
    let answer = SyncResponse::decode(&response.body).expect("a sync answer");
    let (heads, stored) = accepted_heads(&answer, 0);
    assert_eq!(heads, wire_heads(&mut doc));
    assert!(stored > 0);
    assert_eq!(api.change_rows(), i64::from(stored));
}

#[tokio::test]
async fn a_gzip_bomb_is_too_large_and_other_encodings_are_unsupported_and_store_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(7);
    let mut doc = chengguan_inspection(&officer, id);
    let mut bomb = request_for(0, vec![upload(id, &mut doc, &[])]).encode();
    bomb.resize(MAX_BODY_BYTES + 1, 0);
    let bomb = body::gzip(&bomb);
    assert!(bomb.len() < 64 * 1024, "{} bytes on the wire", bomb.len());

    let too_large = api.post_sync_encoded(&officer, body::GZIP, bomb).await;
    let truncated = api.post_sync_encoded(&officer, body::GZIP, body::gzip(b"sync")[..12].to_vec());
    let brotli = api.post_sync_encoded(&officer, "br", b"sync".to_vec());

    too_large.check_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    truncated.await.check_error(StatusCode::BAD_REQUEST, "malformed_change");
    brotli.await.check_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn too_many_changes_in_one_sync_are_refused() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let doc_upload = DocUpload {
        doc_id: doc_id(3),
        base_heads: vec![],
        heads: vec![],
        changes: vec![vec![0]; 2_001],
    };

    let response = api.post_sync(&officer, request_for(0, vec![doc_upload]).encode()).await;

    response.check_error(StatusCode::UNPROCESSABLE_ENTITY, "batch_too_large");
}

#[tokio::test]
async fn the_same_document_twice_in_one_sync_is_malformed() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(4);
    let mut doc = chengguan_inspection(&officer, id);
    let doc_upload = upload(id, &mut doc, &[]);

    let response = api
        .post_sync(&officer, request_for(0, vec![doc_upload.clone(), doc_upload]).encode())
        .await;

    response.check_error(StatusCode::BAD_REQUEST, "malformed_change");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_replayed_upload_answers_the_same_heads_and_stores_nothing_twice() {
    // Arrange
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(5);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "rectification_order");
    let body = request_for(0, vec![upload(id, &mut doc, &[])]).encode();

    // Act
    let first = api.sync(&officer, &SyncRequest::decode(&body).unwrap()).await;
    let rows_after_first = api.change_rows();
    let replay = api.post_sync(&officer, body).await;

    // Assert
    assert_eq!(replay.status, StatusCode::OK);
    let replay = SyncResponse::decode(&replay.body).unwrap();
    assert_eq!(accepted_heads(&first, 0), (wire_heads(&mut doc), 2));
    assert_eq!(accepted_heads(&replay, 0), (wire_heads(&mut doc), 0));
    assert_eq!(rows_after_first, 2);
    assert_eq!(api.change_rows(), 2);
    assert_eq!((first.cursor, replay.cursor), (2, 2));
    assert!(first.updates.is_empty() && replay.updates.is_empty());
}

#[tokio::test]
async fn a_second_device_receives_the_first_devices_changes() {
    // Arrange: officer A creates the record and syncs; officer B of the same township forks it
    // before A's next edit.
    let api = TestApi::new();
    let officer_a = api.login("o-1").await;
    let officer_b = api.login("o-2").await;
    let id = doc_id(6);
    let mut device_a = chengguan_inspection(&officer_a, id);
    let created = device_a.get_heads();
    let mut device_b = device_a.fork().with_actor(officer_b.actor.clone());
    let first_sync =
        api.sync(&officer_a, &request_for(0, vec![upload(id, &mut device_a, &[])])).await;
    set_outcome(&mut device_a, "case_lead");
    let second = request_for(first_sync.cursor, vec![upload(id, &mut device_a, &created)]);
    api.sync(&officer_a, &second).await;
    set_outcome(&mut device_b, "referral");

    // Act: B uploads its own edit with cursor 0.
    let response =
        api.sync(&officer_b, &request_for(0, vec![upload(id, &mut device_b, &created)])).await;

    // Assert: B gets both of A's changes, not its own, and converges with the server.
    assert_eq!(response.updates.len(), 1);
    assert_eq!(response.updates[0].doc_id, id);
    let received = changes_in(&response.updates[0].changes).expect("the server sends valid chunks");
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
    let officer = api.login("o-1").await;
    let id = doc_id(7);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "referral");
    api.sync(&officer, &request_for(0, vec![upload(id, &mut doc, &[])])).await;

    let view = api.get(&officer, &format!("/v1/docs/{id}")).await;

    assert_eq!(view.status, StatusCode::OK);
    let heads = doc.get_heads();
    let device_view = serde_json::to_value(DocumentView::build(id, &heads, &doc)).unwrap();
    assert_eq!(view.json(), device_view);
}

#[tokio::test]
async fn documents_are_listed_with_their_projections_and_attributed_history() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(8);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "referral");
    api.sync(&officer, &request_for(0, vec![upload(id, &mut doc, &[])])).await;

    let list = api.get(&officer, "/v1/docs").await;
    let history = api.get(&officer, &format!("/v1/docs/{id}/history")).await;

    assert_eq!((list.status, history.status), (StatusCode::OK, StatusCode::OK));
    let list = list.json();
    assert_eq!(list[0]["id"], id.to_string());
    assert_eq!(list[0]["kind"], "inspection");
    assert_eq!(list[0]["status"], "open");
    assert_eq!(list[0]["matter"], ENTRUSTED);
    assert_eq!(list[0]["township"], CHENGGUAN);
    assert_eq!(list[0]["heads"][0], doc.get_heads()[0].to_string());
    let history = history.json();
    let history = history.as_array().expect("an array");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["feed_seq"], 1);
    assert_eq!(history[0]["actor"], officer.actor.to_hex_string());
    assert_eq!(history[0]["message"], "create");
    assert_eq!(history[0]["device"], officer.device_id);
    assert_eq!(history[0]["officer"], "o-1");
    assert_eq!(history[0]["certificate"], "C-0001");
    assert_eq!(history[1]["deps"][0], history[0]["hash"]);
    assert_eq!(history[1]["seq"], 2);
}

#[tokio::test]
async fn document_reads_refuse_bad_and_unknown_ids() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let unknown: DocumentId = doc_id(9);

    let bad = api.get(&officer, "/v1/docs/not-a-uuid").await;
    let missing = api.get(&officer, &format!("/v1/docs/{unknown}")).await;
    let missing_history = api.get(&officer, &format!("/v1/docs/{unknown}/history")).await;

    bad.check_error(StatusCode::BAD_REQUEST, "invalid_document_id");
    // An officer cannot tell an unknown document from one of another township.
    missing.check_error(StatusCode::NOT_FOUND, "not_found");
    missing_history.check_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json_errors_with_a_nonce() {
    let api = TestApi::new();
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();

    let health = api.send(get("/healthz")).await;
    let missing = api.send(get("/v1/nothing-here")).await;
    let method = api.send(get("/v1/sync")).await;
    let nonce = api.send(get("/v1/nonce")).await;

    assert_eq!((health.status, health.json()), (StatusCode::OK, json!({ "status": "ok" })));
    missing.check_error(StatusCode::NOT_FOUND, "not_found");
    method.check_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(nonce.status, StatusCode::OK);
    assert_eq!(nonce.json()["nonce"], nonce.headers[DPOP_NONCE].to_str().unwrap());
    for response in [&health, &missing, &method, &nonce] {
        let value = response.headers[DPOP_NONCE].to_str().unwrap();
        assert!(api.state.auth().check_nonce(value), "{value}");
    }
}

#[tokio::test]
async fn an_empty_sync_returns_the_feed_after_the_cursor() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(10);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "referral");
    api.sync(&officer, &request_for(0, vec![upload(id, &mut doc, &[])])).await;

    let everything = api.sync(&officer, &request_for(0, vec![])).await;
    let after_first = api.sync(&officer, &request_for(1, vec![])).await;
    let nothing = api.sync(&officer, &request_for(2, vec![])).await;

    // From the start, the document comes whole, as the upload that created it left it; after
    // its first change, the rest comes change by change.
    let mut whole = AutoCommit::load(&everything.updates[0].changes[0]).expect("a saved document");
    assert_eq!(everything.updates[0].changes.len(), 1);
    assert_eq!(whole.get_changes(&[]).len(), 2);
    assert_eq!(after_first.updates[0].changes.len(), 1);
    assert!(nothing.updates.is_empty());
    for response in [&everything, &after_first, &nothing] {
        assert_eq!((response.cursor, response.more), (2, false));
        assert!(response.results.is_empty());
    }
    assert_eq!(whole.get_heads(), doc.get_heads());
    let mut edit = doc.get_changes(&[])[1].clone();
    assert_eq!(after_first.updates[0].changes[0], edit.bytes().into_owned());
}

#[tokio::test]
async fn a_version_1_device_gets_a_whole_upload_change_by_change_in_a_version_1_answer() {
    // Arrange: a record uploaded whole, as one document chunk.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(13);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "referral");
    api.sync(&officer, &request_for(0, vec![document_chunk_upload(id, &mut doc)])).await;
    let mut version_1 = request_for(0, vec![]).encode();
    version_1[3] = 1;

    // Act
    let old = api.post_sync(&officer, version_1).await;
    let new = api.sync(&officer, &request_for(0, vec![])).await;

    // Assert: version 1 gets change chunks (type 1 or 2, never 0) in a version 1 answer.
    let (old, version) = SyncResponse::decode_versioned(&old.body).expect("a sync answer");
    assert_eq!(version, 1);
    let chunks = &old.updates[0].changes;
    let sent: Vec<Vec<u8>> =
        doc.get_changes(&[]).iter_mut().map(|change| change.bytes().into_owned()).collect();
    assert_eq!(chunks, &sent);
    // Version 2 gets the document whole.
    assert_eq!(new.updates[0].changes.len(), 1);
    assert_eq!(new.updates[0].changes[0][8], 0);
    assert_eq!((old.cursor, new.cursor), (2, 2));
}

#[tokio::test]
async fn a_panic_in_blocking_work_is_an_internal_error() {
    let result: Result<(), ApiError> = run_blocking(|| panic!("automerge blew up")).await;

    let err = result.expect_err("the panic is caught");
    assert_eq!((err.status(), err.code()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
}

// ---- enrollment and tokens --------------------------------------------------------------------

#[tokio::test]
async fn enrollment_answers_the_officer_actor_and_signed_master_data() {
    let api = TestApi::new();
    let device = TestDevice::generate();

    let enrolled = api.enroll(&device, &api.code("o-1")).await;

    assert_eq!(enrolled.status, StatusCode::OK);
    let body = enrolled.json();
    assert_eq!(
        (&body["officer"], &body["officer_name"], &body["role"], &body["township"]),
        (&json!("o-1"), &json!("李明"), &json!("officer"), &json!(CHENGGUAN))
    );
    assert_eq!(body["actor"].as_str().unwrap().len(), 32);
    assert_eq!(body["server_key"]["kty"], "OKP");
    let master = &body["master_data_json"];
    assert_eq!(master["certificate"]["cert_no"], "C-0001");
    assert_eq!(master["scope"][0]["matter"], ENTRUSTED);
    assert_eq!(master["scope"][0]["agreement"], "e-1");
    let issued = master["issued_at"].as_i64().unwrap();
    assert_eq!(master["valid_until"].as_i64().unwrap() - issued, 7 * 24 * 3600 * 1000);
    let jwt = body["master_data"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("master-data+jwt"));
    let devices = api.state.store().read(|tx| devices::list_devices(tx)).unwrap();
    assert_eq!((devices.len(), devices[0].jkt.as_str()), (1, device.jkt().as_str()));
}

#[tokio::test]
async fn an_enrollment_code_is_single_use_and_expires() {
    let api = TestApi::new();
    let code = api.code("o-1");
    let first = TestDevice::generate();
    api.enroll(&first, &code).await;

    let reused = api.enroll(&TestDevice::generate(), &code).await;
    let unknown = api.enroll(&TestDevice::generate(), "AAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    let expired_code = "EXPIREDEXPIREDEXPIREDEXPIR";
    api.state
        .store()
        .write(|tx| {
            let change = Author { who: SYSTEM, now: now_millis() };
            let hash = enrollment_code_hash(expired_code);
            devices::insert_enrollment_code(tx, &change, &hash, "o-2", now_millis() - 1)
        })
        .unwrap();
    let expired = api.enroll(&TestDevice::generate(), expired_code).await;
    let same_key_again = api.enroll(&first, &api.code("o-2")).await;

    reused.check_error(StatusCode::BAD_REQUEST, "invalid_enrollment_code");
    unknown.check_error(StatusCode::BAD_REQUEST, "invalid_enrollment_code");
    expired.check_error(StatusCode::BAD_REQUEST, "invalid_enrollment_code");
    same_key_again.check_error(StatusCode::CONFLICT, "device_already_enrolled");
}

#[tokio::test]
async fn proofs_without_nonce_replayed_or_with_bearer_tokens_are_refused() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let htu = format!("http://{HOST}/v1/docs");
    let request = |proof: String, scheme: &str| {
        Request::get("/v1/docs")
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, format!("{scheme} {}", officer.token))
            .header("dpop", proof)
            .body(Body::empty())
            .unwrap()
    };

    let no_nonce = api
        .send(request(officer.device.proof("GET", &htu, Some(&officer.token), None), "DPoP"))
        .await;
    let stale = api
        .send(request(
            officer.device.proof(
                "GET",
                &htu,
                Some(&officer.token),
                Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ),
            "DPoP",
        ))
        .await;
    let proof = officer.device.proof("GET", &htu, Some(&officer.token), Some(&api.nonce()));
    let first = api.send(request(proof.clone(), "DPoP")).await;
    let replayed = api.send(request(proof, "DPoP")).await;
    let fresh = officer.device.proof("GET", &htu, Some(&officer.token), Some(&api.nonce()));
    let bearer = api.send(request(fresh, "Bearer")).await;
    let stolen =
        TestDevice::generate().proof("GET", &htu, Some(&officer.token), Some(&api.nonce()));
    let other_key = api.send(request(stolen, "DPoP")).await;
    let no_token = api.send(Request::get("/v1/docs").body(Body::empty()).unwrap()).await;

    no_nonce.check_error(StatusCode::UNAUTHORIZED, "use_dpop_nonce");
    assert!(no_nonce.headers.contains_key(DPOP_NONCE));
    assert_eq!(no_nonce.headers[header::WWW_AUTHENTICATE], r#"DPoP error="use_dpop_nonce""#);
    stale.check_error(StatusCode::UNAUTHORIZED, "use_dpop_nonce");
    assert_eq!(first.status, StatusCode::OK);
    replayed.check_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");
    bearer.check_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");
    other_key.check_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");
    no_token.check_error(StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn tokens_are_refused_for_revoked_suspended_and_expired_certificates_and_revoked_devices() {
    // Arrange: the admin revokes C-0001, suspends C-0002, revokes o-3's device, and registers
    // an officer whose only certificate ended in 2020.
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let officer_1 = TestDevice::generate();
    api.enroll(&officer_1, &api.code("o-1")).await;
    let officer_2 = TestDevice::generate();
    api.enroll(&officer_2, &api.code("o-2")).await;
    let officer_3 = api.login("o-3").await;
    for (uri, expected) in [
        ("/v1/admin/certificates/C-0001/revoke", StatusCode::OK),
        ("/v1/admin/certificates/C-0002/suspend", StatusCode::OK),
        (&format!("/v1/admin/devices/{}/revoke", officer_3.device_id), StatusCode::OK),
    ] {
        assert_eq!(api.post_json(&admin, uri, &json!({})).await.status, expected, "{uri}");
    }
    let created = api
        .post_json(
            &admin,
            "/v1/admin/officers",
            &json!({"id": "o-9", "name": "周老", "township": CHENGGUAN, "role": "officer"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let certificate = json!({
        "cert_no": "C-0009", "officer": "o-9", "issuer": "县人民政府", "sectors": ["work_safety"],
        "territory": CHENGGUAN, "valid_from": "2019-01-01", "valid_to": "2020-12-31",
    });
    assert_eq!(
        api.post_json(&admin, "/v1/admin/certificates", &certificate).await.status,
        StatusCode::CREATED
    );
    let code = api.post_json(&admin, "/v1/admin/enroll-codes", &json!({"officer": "o-9"})).await;
    assert_eq!(code.status, StatusCode::CREATED);
    let officer_9 = TestDevice::generate();
    let enrolled = api.enroll(&officer_9, code.json()["code"].as_str().unwrap()).await;
    assert_eq!(enrolled.status, StatusCode::OK);

    // Act
    let revoked = api.mint(&officer_1).await;
    let suspended = api.mint(&officer_2).await;
    let device_revoked = api.mint(&officer_3.device).await;
    let expired = api.mint(&officer_9).await;
    let unknown = api.mint(&TestDevice::generate()).await;

    // Assert
    revoked.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    suspended.check_error(StatusCode::FORBIDDEN, "certificate_suspended");
    device_revoked.check_error(StatusCode::UNAUTHORIZED, "device_revoked");
    expired.check_error(StatusCode::FORBIDDEN, "certificate_expired");
    unknown.check_error(StatusCode::UNAUTHORIZED, "device_revoked");
    // A still-valid token of the revoked device is refused too.
    api.get(&officer_3, "/v1/docs").await.check_error(StatusCode::UNAUTHORIZED, "device_revoked");
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request_with_a_still_valid_token() {
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let mut officer = api.login("o-1").await;
    assert_eq!(api.get(&officer, "/v1/docs").await.status, StatusCode::OK);

    api.post_json(&admin, "/v1/admin/certificates/C-0001/revoke", &json!({})).await;
    let after_revoke = api.get(&officer, "/v1/docs").await;
    let sync_after_revoke = api.post_sync(&officer, request_for(0, vec![]).encode()).await;
    api.post_json(&admin, "/v1/admin/certificates/C-0001/reinstate", &json!({})).await;
    let after_reinstate = api.get(&officer, "/v1/docs").await;
    api.refresh(&mut officer).await;
    let with_new_token = api.get(&officer, "/v1/docs").await;

    after_revoke.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    assert_eq!(
        after_revoke.headers[header::WWW_AUTHENTICATE],
        r#"DPoP error="certificate_revoked""#
    );
    sync_after_revoke.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    after_reinstate.check_error(StatusCode::UNAUTHORIZED, "token_revoked");
    assert_eq!(with_new_token.status, StatusCode::OK);
}

// ---- authorization of documents ---------------------------------------------------------------

#[tokio::test]
async fn changes_by_an_actor_of_another_device_are_foreign_and_store_nothing() {
    let api = TestApi::new();
    let officer_1 = api.login("o-1").await;
    let officer_2 = api.login("o-2").await;
    let unregistered = inspection_in(&actor(9), doc_id(20), ENTRUSTED, CHENGGUAN);
    let others = inspection_in(&officer_2.actor, doc_id(21), ENTRUSTED, CHENGGUAN);
    let mut own = chengguan_inspection(&officer_1, doc_id(22));

    for mut doc in [unregistered, others] {
        let docs = vec![upload(doc_id(20), &mut doc, &[]), upload(doc_id(22), &mut own, &[])];
        let response = api.post_sync(&officer_1, request_for(0, docs).encode()).await;
        response.check_error(StatusCode::FORBIDDEN, "foreign_actor");
    }

    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_new_document_uploaded_as_one_chunk_is_stored_change_by_change() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(23);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "referral");
    set_outcome(&mut doc, "rectification_order");
    let changes = doc.get_changes(&[]);

    let answer =
        api.sync(&officer, &request_for(0, vec![document_chunk_upload(id, &mut doc)])).await;
    let history = api.get(&officer, &format!("/v1/docs/{id}/history")).await.json();

    assert_eq!(accepted_heads(&answer, 0), (wire_heads(&mut doc), 3));
    assert_eq!(api.change_rows(), 3);
    let history = history.as_array().expect("an array");
    let hashes: Vec<String> = changes.iter().map(|change| change.hash().to_string()).collect();
    let stored: Vec<String> =
        history.iter().map(|row| row["hash"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stored, hashes);
    for row in history {
        assert_eq!(row["device"], officer.device_id);
        assert_eq!(row["officer"], "o-1");
        assert_eq!(row["actor"], officer.actor.to_hex_string());
    }
    // The same changes again as change chunks are known, and stored nothing twice.
    let replay = api.sync(&officer, &request_for(0, vec![upload(id, &mut doc, &[])])).await;
    assert_eq!(accepted_heads(&replay, 0).1, 0);
    assert_eq!(api.change_rows(), 3);
}

#[tokio::test]
async fn a_document_chunk_with_a_change_by_a_foreign_actor_stores_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(24);
    let mut doc = chengguan_inspection(&officer, id);
    let mut other = doc.fork().with_actor(actor(9));
    set_outcome(&mut other, "referral");
    doc.merge(&mut other).unwrap();

    let response = api
        .post_sync(&officer, request_for(0, vec![document_chunk_upload(id, &mut doc)]).encode())
        .await;

    response.check_error(StatusCode::FORBIDDEN, "foreign_actor");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_document_chunk_of_two_histories_is_a_foreign_root_and_stores_nothing() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(26);
    let mut doc = chengguan_inspection(&officer, id);
    // A second, unrelated history in the same chunk: the premerge declines it and the writer
    // answers as it does for the same changes sent as change chunks.
    let mut stranger = inspection_in(&actor(9), id, ENTRUSTED, CHENGGUAN);
    doc.merge(&mut stranger).unwrap();

    let response = api
        .post_sync(&officer, request_for(0, vec![document_chunk_upload(id, &mut doc)]).encode())
        .await;

    response.check_error(StatusCode::CONFLICT, "foreign_root");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_document_chunk_counts_its_changes_against_the_per_sync_limit() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(27);
    let mut doc = chengguan_inspection(&officer, id);
    let created = doc.get_changes(&[]).len();
    for edit in 0..=(2_000 - created) {
        set_outcome(&mut doc, &format!("outcome {edit}"));
    }
    assert_eq!(doc.get_changes(&[]).len(), 2_001);

    let response = api
        .post_sync(&officer, request_for(0, vec![document_chunk_upload(id, &mut doc)]).encode())
        .await;

    response.check_error(StatusCode::UNPROCESSABLE_ENTITY, "batch_too_large");
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_document_chunk_with_base_heads_or_other_chunks_is_malformed() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(25);
    let mut doc = chengguan_inspection(&officer, id);
    let whole = document_chunk_upload(id, &mut doc);
    let with_base = DocUpload { base_heads: vec![doc.get_heads()[0].0], ..whole.clone() };
    let mut with_change = whole.clone();
    with_change.changes.push(first_change(&mut doc).raw_bytes().to_vec());

    for bad in [with_base, with_change] {
        let response = api.post_sync(&officer, request_for(0, vec![bad]).encode()).await;
        response.check_error(StatusCode::BAD_REQUEST, "malformed_change");
    }
    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn creating_outside_the_entrusted_scope_or_township_is_out_of_scope() {
    let api = TestApi::new();
    let chengguan = api.login("o-1").await;
    let hexi = api.login("o-3").await;

    for (client, matter, township) in [
        (&chengguan, NOT_ENTRUSTED, CHENGGUAN),
        (&chengguan, ENTRUSTED, HEXI),
        (&chengguan, ENTRUSTED, ""),
        // Hexi holds no entrustment at all.
        (&hexi, ENTRUSTED, HEXI),
    ] {
        let id = doc_id(30);
        let mut doc = inspection_in(&client.actor, id, matter, township);
        let response =
            api.post_sync(client, request_for(0, vec![upload(id, &mut doc, &[])]).encode()).await;
        response.check_error(StatusCode::FORBIDDEN, "out_of_scope");
    }

    assert_eq!(api.change_rows(), 0);
}

#[tokio::test]
async fn a_suspended_entrustment_stops_new_records() {
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let officer = api.login("o-1").await;
    let suspended = api.post_json(&admin, "/v1/admin/entrustments/e-1/suspend", &json!({})).await;
    assert_eq!(
        (suspended.status, &suspended.json()["status"]),
        (StatusCode::OK, &json!("suspended"))
    );

    let id = doc_id(31);
    let mut doc = chengguan_inspection(&officer, id);
    let response =
        api.post_sync(&officer, request_for(0, vec![upload(id, &mut doc, &[])]).encode()).await;

    response.check_error(StatusCode::FORBIDDEN, "out_of_scope");
}

#[tokio::test]
async fn editing_the_township_field_does_not_move_authorization() {
    // Arrange: o-1 creates a Chengguan record.
    let api = TestApi::new();
    let chengguan = api.login("o-1").await;
    let hexi = api.login("o-3").await;
    let id = doc_id(40);
    let mut doc = chengguan_inspection(&chengguan, id);
    let created = doc.get_heads();
    api.sync(&chengguan, &request_for(0, vec![upload(id, &mut doc, &[])])).await;

    // Act: o-3 (Hexi) rewrites the township field to its own and uploads; o-1 does the same.
    let mut hexi_copy = doc.fork().with_actor(hexi.actor.clone());
    set_field(&mut hexi_copy, "township", HEXI).unwrap();
    hexi_copy.commit();
    let hexi_upload = api
        .post_sync(&hexi, request_for(0, vec![upload(id, &mut hexi_copy, &created)]).encode())
        .await;
    set_field(&mut doc, "township", HEXI).unwrap();
    doc.commit();
    let moved = api.sync(&chengguan, &request_for(0, vec![upload(id, &mut doc, &created)])).await;

    // Assert: Hexi's upload is refused; o-1's edit is stored, but the document stays
    // Chengguan's: invisible to Hexi, listed under Chengguan.
    hexi_upload.check_error(StatusCode::FORBIDDEN, "out_of_scope");
    assert_eq!(accepted_heads(&moved, 0).1, 1);
    api.get(&hexi, &format!("/v1/docs/{id}")).await.check_error(StatusCode::NOT_FOUND, "not_found");
    api.get(&hexi, &format!("/v1/docs/{id}/history"))
        .await
        .check_error(StatusCode::NOT_FOUND, "not_found");
    assert!(api.sync(&hexi, &request_for(0, vec![])).await.updates.is_empty());
    let list = api.get(&chengguan, "/v1/docs").await.json();
    assert_eq!(list[0]["township"], CHENGGUAN);
    assert_eq!(api.get(&chengguan, &format!("/v1/docs/{id}")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_feed_of_another_township_never_carries_a_townships_documents() {
    let api = TestApi::new();
    let chengguan = api.login("o-1").await;
    let hexi = api.login("o-3").await;
    let supervisor = api.login("supervisor").await;
    for byte in 50..53 {
        let id = doc_id(byte);
        let mut doc = chengguan_inspection(&chengguan, id);
        set_outcome(&mut doc, "referral");
        api.sync(&chengguan, &request_for(0, vec![upload(id, &mut doc, &[])])).await;
    }

    let hexi_feed = api.sync(&hexi, &request_for(0, vec![])).await;
    let hexi_list = api.get(&hexi, "/v1/docs").await.json();
    let supervisor_feed = api.sync(&supervisor, &request_for(0, vec![])).await;
    let supervisor_list = api.get(&supervisor, "/v1/docs").await.json();

    assert!(hexi_feed.updates.is_empty());
    assert_eq!(hexi_feed.cursor, 6);
    assert_eq!(hexi_list, json!([]));
    assert_eq!(supervisor_feed.updates.len(), 3);
    assert_eq!(supervisor_list.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn supervisors_read_but_upload_nothing() {
    let api = TestApi::new();
    let supervisor = api.login("supervisor").await;
    let id = doc_id(60);
    let mut doc = inspection_in(&supervisor.actor, id, ENTRUSTED, CHENGGUAN);

    let response =
        api.post_sync(&supervisor, request_for(0, vec![upload(id, &mut doc, &[])]).encode()).await;

    response.check_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(api.change_rows(), 0);
}

// ---- admin API --------------------------------------------------------------------------------

#[tokio::test]
async fn admin_endpoints_need_role_admin() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;

    let officer_list = api.get(&officer, "/v1/admin/officers").await;
    let supervisor_create =
        api.post_json(&supervisor, "/v1/admin/enroll-codes", &json!({"officer": "o-1"})).await;
    let anonymous = api.send(Request::get("/v1/admin/audit").body(Body::empty()).unwrap()).await;

    officer_list.check_error(StatusCode::FORBIDDEN, "forbidden");
    supervisor_create.check_error(StatusCode::FORBIDDEN, "forbidden");
    anonymous.check_error(StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn registry_changes_are_audited_with_their_author() {
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let before = api.audit_rows();

    let agency = api
        .post_json(
            &admin,
            "/v1/admin/agencies",
            &json!({"id": "t-beishan", "name": "北山镇", "code": "北山", "kind": "township"}),
        )
        .await;
    let revoked = api.post_json(&admin, "/v1/admin/certificates/C-0003/revoke", &json!({})).await;
    let audit = api.get(&admin, "/v1/admin/audit").await.json();

    assert_eq!(agency.status, StatusCode::CREATED);
    assert_eq!(agency.json()["name"], "北山镇");
    assert_eq!(
        (revoked.json()["status"].as_str(), revoked.json()["rev"].as_i64()),
        (Some("revoked"), Some(2))
    );
    let audit = audit.as_array().unwrap();
    assert_eq!(audit.len(), before + 2);
    let created = &audit[before];
    assert_eq!(
        (
            &created["actor_officer"],
            &created["action"],
            &created["object_kind"],
            &created["object_id"]
        ),
        (&json!("admin"), &json!("create"), &json!("agency"), &json!("t-beishan"))
    );
    let revocation = &audit[before + 1];
    assert_eq!(
        (&revocation["action"], &revocation["object_id"]),
        (&json!("revoke"), &json!("C-0003"))
    );
    assert_eq!((&revocation["before"]["rev"], &revocation["after"]["rev"]), (&json!(1), &json!(2)));
    // The seed and the enrollments were audited too.
    assert!(audit.iter().any(|entry| entry["actor_officer"] == SYSTEM));
    assert!(
        audit.iter().any(|entry| entry["action"] == "enroll" && entry["actor_officer"] == "admin")
    );
}

#[tokio::test]
async fn coercion_and_detention_cannot_be_entrusted() {
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let before = api.audit_rows();

    for action in ["coerce", "detain"] {
        let entrustment = json!({
            "entrusting_agency": "d-yingji", "township": HEXI, "legal_basis": "条例",
            "valid_from": "2026-01-01", "valid_to": "2028-12-31", "status": "active",
            "items": [{"matter": ENTRUSTED, "actions": ["inspect", action]}],
        });
        let response = api.post_json(&admin, "/v1/admin/entrustments", &entrustment).await;
        response.check_error(StatusCode::UNPROCESSABLE_ENTITY, "not_entrustable");
    }

    assert_eq!(api.audit_rows(), before);
}

#[tokio::test]
async fn admin_writes_refuse_duplicates_unknown_references_and_bad_bodies() {
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let entrustment = json!({
        "id": "e-2", "entrusting_agency": "d-yingji", "township": HEXI, "legal_basis": "条例",
        "valid_from": "2026-01-01", "valid_to": "2028-12-31", "status": "active",
        "items": [{"matter": NOT_ENTRUSTED, "actions": ["inspect"]}],
    });

    let created = api.post_json(&admin, "/v1/admin/entrustments", &entrustment).await;
    let duplicate = api.post_json(&admin, "/v1/admin/entrustments", &entrustment).await;
    let unknown_officer =
        api.post_json(&admin, "/v1/admin/enroll-codes", &json!({"officer": "o-404"})).await;
    let unknown_township = api
        .post_json(
            &admin,
            "/v1/admin/officers",
            &json!({"name": "某", "township": "t-404", "role": "officer"}),
        )
        .await;
    let malformed = api
        .call(&admin, Method::POST, "/v1/admin/matters", Some(("application/json", b"{".to_vec())))
        .await;
    let bad_role =
        api.post_json(&admin, "/v1/admin/officers", &json!({"name": "某", "role": "king"})).await;
    let unknown_certificate =
        api.post_json(&admin, "/v1/admin/certificates/C-404/revoke", &json!({})).await;
    let list = api.get(&admin, "/v1/admin/entrustments").await.json();

    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["valid_to"], "2028-12-31T23:59:59Z");
    duplicate.check_error(StatusCode::CONFLICT, "already_exists");
    unknown_officer.check_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference");
    unknown_township.check_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference");
    malformed.check_error(StatusCode::BAD_REQUEST, "malformed_json");
    bad_role.check_error(StatusCode::BAD_REQUEST, "malformed_json");
    unknown_certificate.check_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_restart_on_a_seeded_directory_seeds_nothing_new() {
    let api = TestApi::new();
    let audit = api.audit_rows();
    let demo = std::fs::read(api.dir.path().join(bootstrap::DEMO_FILE)).unwrap();

    bootstrap::prepare(&api.state, api.dir.path(), true).unwrap();

    assert_eq!(api.audit_rows(), audit);
    assert_eq!(std::fs::read(api.dir.path().join(bootstrap::DEMO_FILE)).unwrap(), demo);
}
