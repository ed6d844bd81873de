//! In-process tests of issue 4 (docs/sync.md): idempotent sync answers, resumable evidence
//! blobs and who may read them, `evidence_pending`, and eviction after an officer moves.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, SyncRequest, SyncResponse};
use sync_core::records::{Evidence, InspectionRecord, Party, Site, create_document};

use crate::fixtures::{doc_id, set_outcome, upload};
use crate::routes::blobs::MAX_CHUNK_BYTES;
use crate::routes::sync::IDEMPOTENCY_KEY;
use crate::store::idempotency;
use crate::tests::{
    CHENGGUAN, Client, ENTRUSTED, HEXI, TestApi, TestResponse, chengguan_inspection, request_for,
};

/// Sends a sync body with an `Idempotency-Key`.
async fn post_sync_keyed(api: &TestApi, client: &Client, key: &str, body: Vec<u8>) -> TestResponse {
    let request = api
        .signed(&client.device, Some(&client.token), &Method::POST, "/v1/sync")
        .header(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(IDEMPOTENCY_KEY, key)
        .body(Body::from(body))
        .unwrap();
    api.send(request).await
}

/// Sends one blob chunk.
async fn put_chunk(
    api: &TestApi,
    client: &Client,
    sha256: &str,
    offset: usize,
    total: usize,
    chunk: &[u8],
) -> TestResponse {
    let uri = format!("/v1/blobs/{sha256}");
    let request = api
        .signed(&client.device, Some(&client.token), &Method::PUT, &uri)
        .header("upload-offset", offset.to_string())
        .header("upload-length", total.to_string())
        .body(Body::from(chunk.to_vec()))
        .unwrap();
    api.send(request).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn idempotency_rows(api: &TestApi) -> i64 {
    api.state
        .store()
        .read(|tx| Ok(tx.query_row("SELECT COUNT(*) FROM idempotency", [], |row| row.get(0))?))
        .unwrap()
}

fn blob_rows(api: &TestApi) -> i64 {
    api.state
        .store()
        .read(|tx| Ok(tx.query_row("SELECT COUNT(*) FROM blobs", [], |row| row.get(0))?))
        .unwrap()
}

/// An inspection in Chengguan whose evidence lists a photo with this SHA-256.
fn inspection_with_photo(client: &Client, id: DocumentId, sha256: &str) -> automerge::AutoCommit {
    let party = Party {
        kind: "legal".to_owned(),
        name: "镇南五金店".to_owned(),
        id_number: "91110000MA01234567".to_owned(),
    };
    let site =
        Site { name: "五金店".to_owned(), address: "镇南路 8 号".to_owned(), gnss: None };
    let mut record = InspectionRecord::new(id.to_string(), ENTRUSTED.to_owned(), party, site, 0);
    CHENGGUAN.clone_into(&mut record.township);
    record.evidence.push(Evidence {
        id: "ev-1".to_owned(),
        kind: "photo".to_owned(),
        sha256: sha256.to_owned(),
        size: 11,
        media_type: "image/jpeg".to_owned(),
        captured_at: 1_700_000_000_000,
        captured_by: "o-1".to_owned(),
        note: String::new(),
        removed: None,
    });
    create_document(&client.actor, &record, 1_700_000_000_000).expect("creating the record")
}

// ---- idempotency -------------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_key_returns_the_identical_answer_and_stores_nothing() {
    // Arrange
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(40);
    let mut doc = chengguan_inspection(&officer, id);
    set_outcome(&mut doc, "referral");
    let body = request_for(0, vec![upload(id, &mut doc, &[])]).encode();
    let first = post_sync_keyed(&api, &officer, "key-1", body.clone()).await;
    let rows = (api.change_rows(), idempotency_rows(&api));
    // Another device's change in between would change a fresh answer's feed and cursor.
    let other = api.login("o-2").await;
    let other_id = doc_id(41);
    let mut other_doc = chengguan_inspection(&other, other_id);
    api.sync(&other, &request_for(0, vec![upload(other_id, &mut other_doc, &[])])).await;

    // Act
    let replay = post_sync_keyed(&api, &officer, "key-1", body).await;

    // Assert
    assert_eq!(first.status, StatusCode::OK, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.body, first.body);
    assert_eq!(rows, (2, 1));
    assert_eq!((api.change_rows(), idempotency_rows(&api)), (3, 1));
    let answer = SyncResponse::decode(&replay.body).unwrap();
    assert_eq!(answer.cursor, 2);
}

#[tokio::test]
async fn a_key_reused_with_another_body_conflicts_and_a_malformed_key_is_refused() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(42);
    let mut doc = chengguan_inspection(&officer, id);
    let first_body = request_for(0, vec![upload(id, &mut doc, &[])]).encode();
    let created = doc.get_heads();
    set_outcome(&mut doc, "referral");
    let second_body = request_for(1, vec![upload(id, &mut doc, &created)]).encode();
    assert_eq!(post_sync_keyed(&api, &officer, "same", first_body).await.status, StatusCode::OK);

    let conflict = post_sync_keyed(&api, &officer, "same", second_body.clone()).await;
    let malformed = post_sync_keyed(&api, &officer, "not a key!", second_body.clone()).await;
    let too_long = post_sync_keyed(&api, &officer, &"k".repeat(129), second_body).await;

    conflict.check_error(StatusCode::CONFLICT, "idempotency_conflict");
    malformed.check_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    too_long.check_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    assert_eq!(api.change_rows(), 1);
}

#[tokio::test]
async fn the_same_key_from_another_device_is_another_request() {
    let api = TestApi::new();
    let first = api.login("o-1").await;
    let second = api.login("o-2").await;
    let body = request_for(0, Vec::new()).encode();

    let a = post_sync_keyed(&api, &first, "shared", body.clone()).await;
    let b = post_sync_keyed(&api, &second, "shared", body).await;

    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(idempotency_rows(&api), 2);
    assert!(
        api.state
            .store()
            .read(|tx| idempotency::find(tx, &second.device_id, "shared"))
            .unwrap()
            .is_some()
    );
}

// ---- evidence blobs ----------------------------------------------------------------------------

#[tokio::test]
async fn a_blob_uploads_in_two_chunks_with_a_resume_and_is_stored_once() {
    // Arrange
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let bytes = b"\xff\xd8 a photo of a blocked fire exit".to_vec();
    let sha256 = sha256_hex(&bytes);
    let (head, tail) = bytes.split_at(10);

    // Act: the first chunk, a status query, a resume from a wrong offset, the last chunk,
    // then the same upload again.
    let first = put_chunk(&api, &officer, &sha256, 0, bytes.len(), head).await;
    let status = api.get(&officer, &format!("/v1/blobs/{sha256}/upload")).await;
    let misplaced = put_chunk(&api, &officer, &sha256, 0, bytes.len(), head).await;
    let last = put_chunk(&api, &officer, &sha256, 10, bytes.len(), tail).await;
    let done = api.get(&officer, &format!("/v1/blobs/{sha256}/upload")).await;
    let again = put_chunk(&api, &officer, &sha256, 0, bytes.len(), &bytes).await;

    // Assert
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json());
    assert_eq!(first.json(), json!({"sha256": sha256, "complete": false, "received": 10}));
    assert_eq!(
        status.json(),
        json!({"sha256": sha256, "complete": false, "received": 10, "size": null})
    );
    misplaced.check_error(StatusCode::CONFLICT, "upload_offset_mismatch");
    assert_eq!(misplaced.json()["received"], 10);
    assert_eq!(misplaced.headers["upload-offset"], "10");
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.json());
    let size = bytes.len();
    let complete = json!({"sha256": sha256, "complete": true, "received": size, "size": size});
    assert_eq!(last.json(), complete);
    assert_eq!(done.json(), complete);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), complete);
    assert_eq!(blob_rows(&api), 1);
    let stored = api.state.blob_files().path(&sha256);
    assert_eq!(std::fs::read(stored).unwrap(), bytes);
}

#[tokio::test]
async fn a_blob_whose_bytes_do_not_match_its_hash_is_discarded() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let claimed = sha256_hex(b"the real photo");

    let mismatch = put_chunk(&api, &officer, &claimed, 0, 9, b"forgeries").await;
    let status = api.get(&officer, &format!("/v1/blobs/{claimed}/upload")).await;

    mismatch.check_error(StatusCode::BAD_REQUEST, "blob_hash_mismatch");
    assert_eq!(status.json()["received"], 0);
    assert_eq!(status.json()["complete"], false);
    assert_eq!(blob_rows(&api), 0);
}

#[tokio::test]
async fn blob_uploads_refuse_bad_ids_sizes_and_headers() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let sha256 = sha256_hex(b"x");

    let bad_id = put_chunk(&api, &officer, "ABC", 0, 1, b"x").await;
    let too_large = put_chunk(&api, &officer, &sha256, 0, (1 << 30) + 1, b"x").await;
    let past_end = put_chunk(&api, &officer, &sha256, 0, 1, b"xy").await;
    let oversized = vec![0; MAX_CHUNK_BYTES + 1];
    let chunk_too_large = put_chunk(&api, &officer, &sha256, 0, 1 << 24, &oversized).await;
    let uri = format!("/v1/blobs/{sha256}");
    let no_headers = api
        .send(
            api.signed(&officer.device, Some(&officer.token), &Method::PUT, &uri)
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;

    bad_id.check_error(StatusCode::BAD_REQUEST, "invalid_blob_id");
    too_large.check_error(StatusCode::PAYLOAD_TOO_LARGE, "blob_too_large");
    past_end.check_error(StatusCode::BAD_REQUEST, "malformed_upload");
    chunk_too_large.check_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    no_headers.check_error(StatusCode::BAD_REQUEST, "malformed_upload");
}

#[tokio::test]
async fn a_blob_is_readable_through_a_visible_document_and_pending_until_uploaded() {
    // Arrange: o-1 records a photo in Chengguan before its bytes reach the server.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let outsider = api.login("o-3").await;
    let supervisor = api.login("supervisor").await;
    let bytes = b"photo bytes".to_vec();
    let sha256 = sha256_hex(&bytes);
    let unreferenced = sha256_hex(b"another photo");
    let id = doc_id(43);
    let mut doc = inspection_with_photo(&officer, id, &sha256);
    api.sync(&officer, &request_for(0, vec![upload(id, &mut doc, &[])])).await;
    let pending = api.get(&officer, &format!("/v1/docs/{id}")).await.json();
    let before_upload = api.get(&officer, &format!("/v1/blobs/{sha256}")).await;
    assert_eq!(
        put_chunk(&api, &officer, &sha256, 0, bytes.len(), &bytes).await.status,
        StatusCode::CREATED
    );
    let other = b"another photo";
    assert_eq!(
        put_chunk(&api, &officer, &unreferenced, 0, other.len(), other).await.status,
        StatusCode::CREATED
    );

    // Act
    let own = api.get(&officer, &format!("/v1/blobs/{sha256}")).await;
    let outside = api.get(&outsider, &format!("/v1/blobs/{sha256}")).await;
    let supervised = api.get(&supervisor, &format!("/v1/blobs/{sha256}")).await;
    let not_referenced = api.get(&officer, &format!("/v1/blobs/{unreferenced}")).await;
    let received = api.get(&officer, &format!("/v1/docs/{id}")).await.json();

    // Assert
    let codes = |view: &serde_json::Value| -> Vec<(String, String)> {
        view["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|finding| finding["code"] == "evidence_pending")
            .map(|finding| {
                (
                    finding["severity"].as_str().unwrap().to_owned(),
                    finding["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(codes(&pending), vec![("info".to_owned(), "evidence.0".to_owned())]);
    assert!(codes(&received).is_empty(), "{received}");
    before_upload.check_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.headers["content-type"], "application/octet-stream");
    assert_eq!(own.body.as_ref(), bytes.as_slice());
    outside.check_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!((supervised.status, supervised.body.as_ref()), (StatusCode::OK, bytes.as_slice()));
    not_referenced.check_error(StatusCode::NOT_FOUND, "not_found");
}

// ---- eviction ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_moved_officers_device_evicts_the_old_townships_documents_once() {
    // Arrange: o-1's device holds a Chengguan record; the admin moves o-1 to Hexi.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let admin = api.login("admin").await;
    let id = doc_id(44);
    let mut doc = chengguan_inspection(&officer, id);
    let first = api.sync(&officer, &request_for(0, vec![upload(id, &mut doc, &[])])).await;
    let audit_before = api.audit_rows();
    let before_move = api.sync(&officer, &request_for(first.cursor, Vec::new())).await;

    // Act
    let moved =
        api.post_json(&admin, "/v1/admin/officers/o-1/move", &json!({ "township": HEXI })).await;
    let after_move = api.sync(&officer, &request_for(first.cursor, Vec::new())).await;
    let later = api.sync(&officer, &request_for(after_move.cursor, Vec::new())).await;

    // Assert
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.json());
    assert_eq!(moved.json()["township"], HEXI);
    assert_eq!(api.audit_rows(), audit_before + 1);
    assert!(before_move.evict.is_empty());
    assert_eq!(after_move.evict, vec![id]);
    assert!(later.evict.is_empty());
    let read = api.get(&officer, &format!("/v1/docs/{id}")).await;
    read.check_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn moving_refuses_unknown_officers_and_townships() {
    let api = TestApi::new();
    let admin = api.login("admin").await;

    let unknown_officer =
        api.post_json(&admin, "/v1/admin/officers/o-9/move", &json!({ "township": HEXI })).await;
    let unknown_township =
        api.post_json(&admin, "/v1/admin/officers/o-1/move", &json!({ "township": "t-x" })).await;

    unknown_officer.check_error(StatusCode::NOT_FOUND, "not_found");
    unknown_township.check_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference");
}

#[tokio::test]
async fn a_sync_request_without_a_key_is_processed_normally() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;

    let answer = api.sync(&officer, &SyncRequest { cursor: 0, docs: Vec::new() }).await;

    assert_eq!((answer.cursor, answer.evict.len()), (0, 0));
    assert_eq!(idempotency_rows(&api), 0);
}
