//! Evidence blobs (docs/sync.md): uploaded by `fieldcase sync`, resumable, verified against
//! their hash, readable within the scope of a record that names them, and never deleted
//! (SECURITY.md B-36, B-40).

use cli::auth::Session;
use cli::client::RawResponse;
use serde_json::{Value, json};
use sync_core::records::Evidence;

use crate::harness::{
    Device, HandMade, TestServer, assert_error, send_with_headers, sha256_hex, upload,
};

/// `len` bytes that stand for a photo: deterministic per `seed` and not compressible.
fn photo(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// `GET /v1/blobs/{sha256}/upload`: how much of the blob the server holds.
#[track_caller]
fn blob_status(session: &mut Session, sha256: &str) -> Value {
    session
        .get_json(&format!("/v1/blobs/{sha256}/upload"))
        .unwrap_or_else(|err| panic!("the upload status of {sha256}: {err}"))
}

/// `PUT /v1/blobs/{sha256}` of one chunk that starts at `offset` of a blob of `total` bytes.
#[track_caller]
fn put_chunk(
    session: &mut Session,
    sha256: &str,
    offset: usize,
    total: usize,
    chunk: &[u8],
) -> RawResponse {
    let offset = offset.to_string();
    let total = total.to_string();
    send_with_headers(
        session,
        "PUT",
        &format!("/v1/blobs/{sha256}"),
        &[
            ("content-type", "application/octet-stream"),
            ("upload-offset", &offset),
            ("upload-length", &total),
        ],
        chunk,
    )
    .expect("the server answers")
}

/// `GET /v1/blobs/{sha256}`: the bytes, or an error answer.
#[track_caller]
fn get_blob(session: &mut Session, sha256: &str) -> RawResponse {
    session
        .send("GET", &format!("/v1/blobs/{sha256}"), None, Vec::new())
        .expect("the server answers")
}

/// Asserts a 200 answer carrying exactly `bytes` as `application/octet-stream`.
#[track_caller]
fn assert_blob(response: &RawResponse, bytes: &[u8]) {
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/octet-stream"));
    assert!(response.body == bytes, "the downloaded bytes differ from the evidence");
}

/// The JSON body of an answer with `status`.
#[track_caller]
fn json_answer(response: &RawResponse, status: u16) -> Value {
    let body = String::from_utf8_lossy(&response.body);
    assert_eq!(response.status, status, "{body}");
    serde_json::from_slice(&response.body).unwrap_or_else(|err| panic!("JSON {body:?}: {err}"))
}

/// The evidence item of a record, as a device would capture it, for bytes of `sha256`.
fn evidence_item(sha256: &str, size: usize, captured_by: &str) -> Evidence {
    Evidence {
        id: "e-1".to_owned(),
        kind: "photo".to_owned(),
        sha256: sha256.to_owned(),
        size: i64::try_from(size).expect("small"),
        media_type: "image/jpeg".to_owned(),
        captured_at: 1_767_000_000_000,
        captured_by: captured_by.to_owned(),
        note: String::new(),
        removed: None,
    }
}

/// The `blob_errors` of `sync --json` says that nothing failed (a count or a list).
#[track_caller]
fn assert_no_blob_errors(report: &Value) {
    let errors = &report["blob_errors"];
    assert!(*errors == json!(0) || *errors == json!([]), "blob errors: {report}");
}

#[test]
fn evidence_added_on_a_device_is_uploaded_by_sync_and_readable_in_its_township_only() {
    // Arrange: more than one 1 MiB chunk of evidence on a record of the first township.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let mut colleague = server.enroll(&demo.officers[1].code);
    let mut outsider = server.enroll(&demo.officers[2].code);
    let mut supervisor = server.supervisor();
    let mut admin = server.admin();
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    let bytes = photo(1_500_000, 1);
    let file = device.write_file("photo.jpg", &bytes);
    let added = device.json(&["evidence", "add", &doc, "--file", &file, "--kind", "photo"]);
    let sha256 = added["sha256"].as_str().expect("evidence add prints the sha256").to_owned();
    assert_eq!(sha256, sha256_hex(&bytes));
    assert_eq!(device.json(&["status"])["pending_blobs"], 1);

    // Act
    let synced = device.json(&["sync"]);

    // Assert
    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(synced["blobs_uploaded"], 1, "{synced}");
    assert_eq!(synced["blob_bytes_up"], bytes.len(), "{synced}");
    assert_no_blob_errors(&synced);
    assert_eq!(device.json(&["status"])["pending_blobs"], 0);
    assert_blob(&get_blob(&mut supervisor, &sha256), &bytes);
    assert_blob(&get_blob(&mut admin, &sha256), &bytes);
    assert_blob(&get_blob(&mut colleague.session, &sha256), &bytes);
    assert_error(&get_blob(&mut outsider.session, &sha256), 404, "not_found");
    let again = device.json(&["sync"]);
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["blob_bytes_up"], 0, "{again}");
}

#[test]
fn an_interrupted_upload_resumes_from_what_the_server_holds_and_stores_the_blob_once() {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut officer = server.enroll(&demo.officers[0].code);
    let mut supervisor = server.supervisor();
    let bytes = photo(300_000, 2);
    let sha256 = sha256_hex(&bytes);
    let (first, rest) = bytes.split_at(100_000);
    let empty = json_answer(
        &officer
            .session
            .send("GET", &format!("/v1/blobs/{sha256}/upload"), None, Vec::new())
            .unwrap(),
        200,
    );
    assert_eq!(empty["sha256"], sha256.as_str());
    assert_eq!((&empty["complete"], &empty["received"]), (&json!(false), &json!(0)), "{empty}");
    assert!(empty["size"].is_null(), "{empty}");

    // Act: the first chunk, then the device loses signal and later asks where to go on. (The
    // refused and the redundant chunk are kept tiny: the server may answer them unread.)
    let started = put_chunk(&mut officer.session, &sha256, 0, bytes.len(), first);
    let held = blob_status(&mut officer.session, &sha256);
    let wrong_offset = put_chunk(&mut officer.session, &sha256, 0, bytes.len(), &first[..16]);
    let finished = put_chunk(&mut officer.session, &sha256, first.len(), bytes.len(), rest);
    let again = put_chunk(&mut officer.session, &sha256, 0, bytes.len(), &[]);

    // Assert
    let started = json_answer(&started, 202);
    assert_eq!((&started["complete"], &started["received"]), (&json!(false), &json!(100_000)));
    assert_eq!((&held["complete"], &held["received"]), (&json!(false), &json!(100_000)), "{held}");
    assert_error(&wrong_offset, 409, "upload_offset_mismatch");
    assert_eq!(wrong_offset.header("upload-offset"), Some("100000"));
    let mismatch: Value = serde_json::from_slice(&wrong_offset.body).expect("JSON error");
    assert_eq!(mismatch["received"], 100_000, "{mismatch}");
    let finished = json_answer(&finished, 201);
    assert_eq!(finished["sha256"], sha256.as_str());
    assert_eq!((&finished["complete"], &finished["size"]), (&json!(true), &json!(300_000)));
    let again = json_answer(&again, 200);
    assert_eq!(again["complete"], true, "{again}");
    let stored = blob_status(&mut officer.session, &sha256);
    assert_eq!((&stored["complete"], &stored["size"]), (&json!(true), &json!(300_000)), "{stored}");
    assert_blob(&get_blob(&mut supervisor, &sha256), &bytes);
    let unreferenced = get_blob(&mut officer.session, &sha256);
    assert_error(&unreferenced, 404, "not_found");
    let path = server.data_dir().join("blobs").join(&sha256[..2]).join(&sha256);
    assert_eq!(std::fs::read(&path).expect("the blob file").len(), bytes.len());
    assert_eq!(files_named(&server.data_dir().join("blobs"), &sha256), 1);
}

#[test]
fn a_sync_resumes_an_evidence_upload_from_what_the_server_already_holds() {
    // Arrange: the first MiB of the photo reached the server before the signal went.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let mut supervisor = server.supervisor();
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    let bytes = photo(1_800_000, 7);
    let sha256 = sha256_hex(&bytes);
    let file = device.write_file("photo.jpg", &bytes);
    device.json(&["evidence", "add", &doc, "--file", &file, "--kind", "photo"]);
    let held = 1024 * 1024;
    let mut session = device.session();
    let first = put_chunk(&mut session, &sha256, 0, bytes.len(), &bytes[..held]);
    assert_eq!(json_answer(&first, 202)["received"], held);

    // Act
    let synced = device.json(&["sync"]);

    // Assert
    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(synced["blobs_uploaded"], 1, "{synced}");
    assert_eq!(synced["blob_bytes_up"], bytes.len() - held, "only the rest is sent: {synced}");
    assert_blob(&get_blob(&mut supervisor, &sha256), &bytes);
}

#[test]
fn a_20_mib_evidence_upload_interrupted_halfway_is_finished_by_sync_and_reads_back_whole() {
    // Arrange: a 20 MiB video on the device; its first 10 MiB reached the server in chunks
    // before the signal went.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let mut supervisor = server.supervisor();
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    let bytes = photo(20 * 1024 * 1024, 9);
    let sha256 = sha256_hex(&bytes);
    let file = device.write_file("video.mp4", &bytes);
    let added = device.json(&["evidence", "add", &doc, "--file", &file, "--kind", "video"]);
    assert_eq!(added["sha256"], sha256.as_str());
    let (half, chunk) = (10 * 1024 * 1024, 2 * 1024 * 1024);
    let mut session = device.session();
    for offset in (0..half).step_by(chunk) {
        let sent = put_chunk(&mut session, &sha256, offset, bytes.len(), &bytes[offset..][..chunk]);
        assert_eq!(json_answer(&sent, 202)["received"], offset + chunk);
    }
    let held = blob_status(&mut session, &sha256);
    assert_eq!((&held["complete"], &held["received"]), (&json!(false), &json!(half)), "{held}");

    // Act
    let synced = device.json(&["sync"]);

    // Assert
    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(synced["blobs_uploaded"], 1, "{synced}");
    assert_eq!(synced["blob_bytes_up"], bytes.len() - half, "only the second half: {synced}");
    assert_no_blob_errors(&synced);
    assert_blob(&get_blob(&mut supervisor, &sha256), &bytes);
    let view = supervisor.get_json(&format!("/v1/docs/{doc}")).expect("the server view");
    let findings = view["findings"].as_array().expect("findings");
    assert!(!findings.iter().any(|finding| finding["code"] == "evidence_pending"), "{view}");
}

/// How many files under `dir` (recursively) are called `name`.
fn files_named(dir: &std::path::Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("dir entry").path())
        .map(|path| {
            if path.is_dir() {
                files_named(&path, name)
            } else {
                usize::from(path.file_name().is_some_and(|file| file == name))
            }
        })
        .sum()
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_hash_is_refused_and_nothing_is_kept() {
    // B-40: once in one chunk, once completed by a second chunk.
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut officer = server.enroll(&demo.officers[0].code);
    let mut supervisor = server.supervisor();
    let genuine = photo(200_000, 3);
    let forged = photo(200_000, 4);
    let sha256 = sha256_hex(&genuine);

    // Act
    let whole = put_chunk(&mut officer.session, &sha256, 0, forged.len(), &forged);
    let status_after_whole = blob_status(&mut officer.session, &sha256);
    let first = put_chunk(&mut officer.session, &sha256, 0, forged.len(), &forged[..50_000]);
    let last = put_chunk(&mut officer.session, &sha256, 50_000, forged.len(), &forged[50_000..]);
    let status_after_chunks = blob_status(&mut officer.session, &sha256);
    let read = get_blob(&mut supervisor, &sha256);

    // Assert
    assert_error(&whole, 400, "blob_hash_mismatch");
    assert_eq!(json_answer(&first, 202)["received"], 50_000);
    assert_error(&last, 400, "blob_hash_mismatch");
    for status in [status_after_whole, status_after_chunks] {
        assert_eq!(
            (&status["complete"], &status["received"]),
            (&json!(false), &json!(0)),
            "{status}"
        );
    }
    assert_error(&read, 404, "not_found");

    // Act + Assert: the genuine bytes are still welcome.
    let genuine_upload = put_chunk(&mut officer.session, &sha256, 0, genuine.len(), &genuine);
    assert_eq!(json_answer(&genuine_upload, 201)["complete"], true);
    assert_blob(&get_blob(&mut supervisor, &sha256), &genuine);
}

#[test]
fn an_unknown_blob_is_not_found_and_a_malformed_blob_id_is_refused() {
    // Arrange
    let server = TestServer::spawn_demo();
    let mut supervisor = server.supervisor();
    let unknown = sha256_hex(b"never uploaded");

    // Act
    let read = get_blob(&mut supervisor, &unknown);
    let malformed_status =
        supervisor.send("GET", "/v1/blobs/not-a-sha256/upload", None, Vec::new()).unwrap();
    let malformed_read = get_blob(&mut supervisor, "not-a-sha256");

    // Assert
    assert_error(&read, 404, "not_found");
    assert_error(&malformed_status, 400, "invalid_blob_id");
    assert_error(&malformed_read, 400, "invalid_blob_id");
}

#[test]
fn a_blob_larger_than_1_gib_is_refused_as_blob_too_large() {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut officer = server.enroll(&demo.officers[0].code);
    let sha256 = sha256_hex(b"a long video");
    let too_large = 1024 * 1024 * 1024 + 1;

    // Act
    let response = put_chunk(&mut officer.session, &sha256, 0, too_large, b"the first bytes");

    // Assert
    assert_error(&response, 413, "blob_too_large");
    let status = blob_status(&mut officer.session, &sha256);
    assert_eq!((&status["complete"], &status["received"]), (&json!(false), &json!(0)), "{status}");
}

#[test]
fn a_record_shows_evidence_pending_until_its_blob_is_uploaded() {
    // Arrange: a record naming a photo whose bytes have not reached the server.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut officer = server.enroll(&demo.officers[0].code);
    let mut supervisor = server.supervisor();
    let bytes = photo(50_000, 5);
    let sha256 = sha256_hex(&bytes);
    let mut record = HandMade::inspection_with_evidence(
        &officer.actor(),
        &demo.officers[0].township,
        &demo.entrusted,
        vec![evidence_item(&sha256, bytes.len(), &officer.actor())],
    );
    let created = upload(&mut officer.session, record.upload(&[]));
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let path = format!("/v1/docs/{}", record.id);
    let before = supervisor.get_json(&path).expect("the server view");

    // Act
    let uploaded = put_chunk(&mut officer.session, &sha256, 0, bytes.len(), &bytes);

    // Assert
    let pending: Vec<&Value> = before["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|finding| finding["code"] == "evidence_pending")
        .collect();
    assert_eq!(pending.len(), 1, "{before}");
    assert_eq!(pending[0]["severity"], "info");
    assert_eq!(pending[0]["path"], "evidence.0");
    assert_eq!(json_answer(&uploaded, 201)["complete"], true);
    let after = supervisor.get_json(&path).expect("the server view");
    assert!(
        !after["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["code"] == "evidence_pending"),
        "{after}"
    );
    assert_blob(&get_blob(&mut officer.session, &sha256), &bytes);
}

#[test]
fn withdrawn_evidence_keeps_its_item_and_bytes_and_the_history_names_who_withdrew_it() {
    // B-36
    // Arrange: a synced record with one photo.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let mut colleague = server.enroll(&demo.officers[1].code);
    let mut supervisor = server.supervisor();
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    let bytes = photo(80_000, 6);
    let file = device.write_file("photo.jpg", &bytes);
    let added = device.json(&["evidence", "add", &doc, "--file", &file, "--kind", "photo"]);
    let evidence_id = added["evidence"].as_str().expect("evidence add prints the item id");
    assert_eq!(device.json(&["sync"])["ok"], true);

    // Act
    let reason = "拍错了当事人 (wrong party)";
    device.json(&["evidence", "remove", &doc, evidence_id, "--reason", reason]);
    let synced = device.json(&["sync"]);

    // Assert
    assert_eq!((&synced["ok"], &synced["uploaded"]), (&json!(true), &json!(1)), "{synced}");
    let view = supervisor.get_json(&format!("/v1/docs/{doc}")).expect("the server view");
    let items = view["record"]["evidence"].as_array().expect("evidence list");
    assert_eq!(items.len(), 1, "the item stays: {view}");
    assert_eq!(items[0]["id"], evidence_id);
    assert_eq!(items[0]["sha256"], sha256_hex(&bytes).as_str());
    let removed = &items[0]["removed"];
    assert_eq!(removed["reason"], reason, "{view}");
    assert!(removed["by"].as_str().is_some_and(|by| !by.is_empty()), "{removed}");
    assert!(removed["at"].is_i64(), "{removed}");
    assert_blob(&get_blob(&mut supervisor, &sha256_hex(&bytes)), &bytes);
    assert_blob(&get_blob(&mut colleague.session, &sha256_hex(&bytes)), &bytes);
    let heads = view["heads"].as_array().expect("heads");
    assert_eq!(heads.len(), 1, "the withdrawal is the one head: {view}");
    let history = supervisor.get_json(&format!("/v1/docs/{doc}/history")).expect("history");
    let withdrawal = history
        .as_array()
        .expect("history entries")
        .iter()
        .find(|entry| entry["hash"] == heads[0])
        .unwrap_or_else(|| panic!("the withdrawal is not in the history: {history}"));
    assert_eq!(withdrawal["device"], enrolled["device"], "{withdrawal}");
    assert_eq!(withdrawal["officer"], enrolled["officer"], "{withdrawal}");
    assert!(withdrawal["certificate"].is_string(), "{withdrawal}");
    assert_eq!(withdrawal["actor"], enrolled["actor"], "{withdrawal}");
}
