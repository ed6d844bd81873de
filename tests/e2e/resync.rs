//! A resync that costs what changed and never loses data (docs/sync.md): idempotent replays,
//! the upload limits, the size of a resync with nothing to say, and eviction of documents that
//! left the officer's scope (SECURITY.md B-23, B-26, B-27, B-29, B-31..B-33).

use automerge::ScalarValue;
use automerge::transaction::Transactable as _;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use serde_json::{Value, json};
use sync_core::edit::{TextEdit, edit_text};
use sync_core::protocol::{DocUpload, SyncRequest, SyncResponse};

use crate::harness::{
    Device, Enrolled, HandMade, TestServer, assert_error, audit, document_count, history_len,
    idempotency_key, rows, upload, upload_with_key,
};

/// A demo server, an officer of the first township with a record of the entrusted matter by
/// its own actor, the other officer of that township, and a supervisor.
struct Fixture {
    server: TestServer,
    officer: Enrolled,
    colleague: Enrolled,
    supervisor: cli::auth::Session,
}

impl Fixture {
    fn new() -> Self {
        let server = TestServer::spawn_demo();
        let demo = server.demo().clone();
        let officer = server.enroll(&demo.officers[0].code);
        let colleague = server.enroll(&demo.officers[1].code);
        let supervisor = server.supervisor();
        Self { server, officer, colleague, supervisor }
    }

    /// A new record of the first township by `enrolled`'s actor.
    fn record_by(&self, enrolled: &Enrolled) -> HandMade {
        let demo = self.server.demo();
        HandMade::inspection(&enrolled.actor(), &demo.officers[0].township, &demo.entrusted)
    }

    /// The number of stored changes of `record`.
    fn history_len(&mut self, record: &HandMade) -> usize {
        history_len(&mut self.supervisor, &record.id.to_string())
    }
}

/// Asserts a 200 answer.
#[track_caller]
fn assert_ok(response: &cli::client::RawResponse) {
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
}

#[test]
fn an_upload_replayed_with_its_idempotency_key_gets_the_stored_answer_byte_for_byte() {
    // B-31
    // Arrange
    let mut fixture = Fixture::new();
    let mut record = fixture.record_by(&fixture.officer);
    record.set("outcome", "rectification_order");
    let body = record.upload(&[]);
    let key = idempotency_key(&body);
    let first = upload_with_key(&mut fixture.officer.session, &body, &key);
    assert_ok(&first);
    // The feed moves on: a fresh answer would now carry the colleague's record too.
    let mut other = fixture.record_by(&fixture.colleague);
    assert_ok(&upload(&mut fixture.colleague.session, other.upload(&[])));

    // Act
    let replay = upload_with_key(&mut fixture.officer.session, &body, &key);

    // Assert
    assert_ok(&replay);
    assert!(replay.body == first.body, "the replay must get the stored answer byte for byte");
    assert_eq!(fixture.history_len(&record), 2);
    assert_eq!(document_count(&mut fixture.supervisor), 2);
}

#[test]
fn the_same_idempotency_key_with_another_body_is_a_conflict_and_stores_nothing() {
    // B-32
    // Arrange
    let mut fixture = Fixture::new();
    let mut first = fixture.record_by(&fixture.officer);
    let mut second = fixture.record_by(&fixture.officer);
    let first_body = first.upload(&[]);
    let key = idempotency_key(&first_body);
    assert_ok(&upload_with_key(&mut fixture.officer.session, &first_body, &key));

    // Act
    let conflict = upload_with_key(&mut fixture.officer.session, &second.upload(&[]), &key);

    // Assert
    assert_error(&conflict, 409, "idempotency_conflict");
    assert_eq!(document_count(&mut fixture.supervisor), 1);
    assert!(fixture.supervisor.get_json(&format!("/v1/docs/{}", second.id)).is_err());
}

#[test]
fn an_idempotency_key_belongs_to_one_device_and_another_device_may_use_it_for_its_own_body() {
    // Arrange
    let mut fixture = Fixture::new();
    let mut mine = fixture.record_by(&fixture.officer);
    let mut theirs = fixture.record_by(&fixture.colleague);
    let key = "the-same-key_1";
    assert_ok(&upload_with_key(&mut fixture.officer.session, &mine.upload(&[]), key));

    // Act
    let response = upload_with_key(&mut fixture.colleague.session, &theirs.upload(&[]), key);

    // Assert
    assert_ok(&response);
    assert_eq!(document_count(&mut fixture.supervisor), 2);
    assert_eq!(fixture.history_len(&theirs), 1);
}

#[test]
fn a_malformed_idempotency_key_is_refused_and_stores_nothing() {
    // Arrange
    let mut fixture = Fixture::new();
    let mut record = fixture.record_by(&fixture.officer);
    let body = record.upload(&[]);
    let too_long = "k".repeat(129);

    for key in ["two words", "semi;colon", "ключ", too_long.as_str()] {
        // Act
        let response = upload_with_key(&mut fixture.officer.session, &body, key);

        // Assert
        assert_error(&response, 400, "invalid_idempotency_key");
        assert_eq!(document_count(&mut fixture.supervisor), 0, "key {key:?}");
    }
}

#[test]
fn the_same_actor_and_seq_with_other_content_is_a_duplicate_seq_and_the_stored_change_stays() {
    // B-29: a device restored from a backup writes a second change numbered like one it had
    // already uploaded.
    // Arrange
    let mut fixture = Fixture::new();
    let actor = fixture.officer.actor();
    let mut record = fixture.record_by(&fixture.officer);
    assert_ok(&upload(&mut fixture.officer.session, record.upload(&[])));
    let base = record.heads();
    let mut uploaded = record.fork_as(&actor);
    uploaded.set("outcome", "rectification_order");
    let mut restored = record.fork_as(&actor);
    restored.set("outcome", "case_lead");
    assert_ok(&upload(&mut fixture.officer.session, uploaded.upload(&base)));

    // Act
    let response = upload(&mut fixture.officer.session, restored.upload(&base));

    // Assert
    assert_error(&response, 409, "duplicate_seq");
    assert_eq!(fixture.history_len(&record), 2);
    let view = fixture.supervisor.get_json(&format!("/v1/docs/{}", record.id)).expect("view");
    assert_eq!(view["record"]["outcome"], "rectification_order");
}

#[test]
fn a_new_root_change_for_an_existing_document_is_a_foreign_root() {
    // B-33: a second history started under the id of a stored document.
    // Arrange
    let mut fixture = Fixture::new();
    let mut record = fixture.record_by(&fixture.officer);
    assert_ok(&upload(&mut fixture.officer.session, record.upload(&[])));
    let mut impostor = fixture.record_by(&fixture.colleague);
    impostor.id = record.id;

    // Act
    let response = upload(&mut fixture.colleague.session, impostor.upload(&[]));

    // Assert
    assert_error(&response, 409, "foreign_root");
    assert_eq!(fixture.history_len(&record), 1);
    let view = fixture.supervisor.get_json(&format!("/v1/docs/{}", record.id)).expect("view");
    let heads: Vec<String> = record.heads().iter().map(ToString::to_string).collect();
    assert_eq!(view["heads"], json!(heads));
}

#[test]
fn an_upload_of_2001_changes_is_batch_too_large_and_2000_are_accepted() {
    // B-26
    // Arrange: a record of 2,001 changes (creation and 2,000 edits).
    let mut fixture = Fixture::new();
    let mut record = fixture.record_by(&fixture.officer);
    for edit in 0..2000 {
        record.set("outcome", &format!("edit {edit}"));
    }
    let changes = record.doc.get_changes(&[]);
    assert_eq!(changes.len(), 2001);
    let first_2000 = SyncRequest {
        cursor: 0,
        docs: vec![DocUpload {
            doc_id: record.id,
            base_heads: Vec::new(),
            heads: vec![changes[1999].hash().0],
            changes: changes[..2000].iter().map(|change| change.raw_bytes().to_vec()).collect(),
        }],
    }
    .encode();

    // Act
    let too_many = upload(&mut fixture.officer.session, record.upload(&[]));
    let at_the_limit = upload(&mut fixture.officer.session, first_2000);

    // Assert
    assert_error(&too_many, 422, "batch_too_large");
    assert_ok(&at_the_limit);
    assert_eq!(fixture.history_len(&record), 2000);
}

/// A raw deflate stream (RFC 1951, one block with the fixed Huffman codes) of `len` zero bytes:
/// a literal 0, then back-references of length 258 at distance 1, 13 bits each.
fn deflated_zeros(len: usize) -> Vec<u8> {
    /// Writes bits LSB first into bytes, as deflate packs them.
    #[derive(Default)]
    struct Bits {
        bytes: Vec<u8>,
        current: u8,
        filled: u8,
    }
    impl Bits {
        fn bit(&mut self, bit: u32) {
            self.current |= u8::from(bit & 1 == 1) << self.filled;
            self.filled += 1;
            if self.filled == 8 {
                self.bytes.push(self.current);
                (self.current, self.filled) = (0, 0);
            }
        }
        /// A header field or extra bits: least significant bit first.
        fn value(&mut self, value: u32, count: u32) {
            (0..count).for_each(|index| self.bit(value >> index));
        }
        /// A Huffman code: most significant bit first.
        fn code(&mut self, code: u32, count: u32) {
            (0..count).rev().for_each(|index| self.bit(code >> index));
        }
        fn finish(mut self) -> Vec<u8> {
            if self.filled > 0 {
                self.bytes.push(self.current);
            }
            self.bytes
        }
    }

    let mut bits = Bits::default();
    bits.value(1, 1); // BFINAL
    bits.value(1, 2); // BTYPE 01: fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    for _ in 0..(len - 1) / 258 {
        bits.code(0xc5, 8); // length code 285: 258 bytes
        bits.code(0, 5); // distance code 0: distance 1
    }
    for _ in 0..(len - 1) % 258 {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block
    bits.finish()
}

/// A compressed change chunk (magic, checksum, type 2, LEB128 length) whose deflate body
/// inflates to `len` zero bytes.
fn deflate_bomb(len: usize) -> Vec<u8> {
    let body = deflated_zeros(len);
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut length = body.len();
    loop {
        let byte = u8::try_from(length & 0x7f).expect("seven bits");
        length >>= 7;
        if length == 0 {
            chunk.push(byte);
            break;
        }
        chunk.push(byte | 0x80);
    }
    chunk.extend_from_slice(&body);
    chunk
}

#[test]
fn a_change_chunk_that_inflates_past_the_limit_is_refused_as_inflate_limit() {
    // B-23: about 700 KiB on the wire, 100 MiB once inflated.
    // Arrange
    let mut fixture = Fixture::new();
    let record = fixture.record_by(&fixture.officer);
    let bomb = deflate_bomb(100 * 1024 * 1024);
    assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
    let body = SyncRequest {
        cursor: 0,
        docs: vec![DocUpload {
            doc_id: record.id,
            base_heads: Vec::new(),
            heads: Vec::new(),
            changes: vec![bomb],
        }],
    }
    .encode();

    // Act
    let response = upload(&mut fixture.officer.session, body);

    // Assert
    assert_error(&response, 413, "inflate_limit");
    assert_eq!(document_count(&mut fixture.supervisor), 0);
}

#[test]
fn a_document_whose_changes_would_pass_64_mib_is_refused_with_document_quota() {
    // B-27: eight uploads of 7.5 MiB of photo-like bytes fill 60 MiB; the ninth would pass the
    // 64 MiB a document may hold. Each change travels uncompressed (its raw bytes), well under
    // the 8 MiB body limit.
    // Arrange
    let mut fixture = Fixture::new();
    let mut record = fixture.record_by(&fixture.officer);
    assert_ok(&upload(&mut fixture.officer.session, record.upload(&[])));
    let mut cursor = 0;
    let mut bulky_upload = |record: &mut HandMade, session: &mut cli::auth::Session| {
        // From the last cursor, so that the answer does not carry the earlier scans back.
        let response = upload(session, scan_upload(record, 7 * 1024 * 1024 + 512 * 1024, cursor));
        if response.status == 200 {
            cursor = SyncResponse::decode(&response.body).expect("a sync answer").cursor;
        }
        response
    };
    for _ in 0..8 {
        assert_ok(&bulky_upload(&mut record, &mut fixture.officer.session));
    }
    let heads_before = listed_heads(&mut fixture.supervisor, &record);

    // Act
    let response = bulky_upload(&mut record, &mut fixture.officer.session);

    // Assert
    assert_error(&response, 422, "document_quota");
    assert_eq!(fixture.history_len(&record), 9);
    assert_eq!(listed_heads(&mut fixture.supervisor, &record), heads_before);
}

/// Adds `len` random bytes (a scan) to `record` as one change and returns the sync body that
/// uploads it uncompressed (automerge would try to deflate it, in vain and slowly).
fn scan_upload(record: &mut HandMade, len: usize, cursor: u64) -> Vec<u8> {
    let base = record.heads();
    let mut bytes = vec![0u8; len];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    record.doc.put(automerge::ROOT, "scan", ScalarValue::Bytes(bytes)).expect("put bytes");
    record.doc.commit();
    let change = record.doc.get_last_local_change().expect("the scan change");
    SyncRequest {
        cursor,
        docs: vec![DocUpload {
            doc_id: record.id,
            base_heads: base.iter().map(|hash| hash.0).collect(),
            heads: record.heads().iter().map(|hash| hash.0).collect(),
            changes: vec![change.raw_bytes().to_vec()],
        }],
    }
    .encode()
}

/// The heads of `record` in the document list (which, unlike the view, leaves out the bytes).
#[track_caller]
fn listed_heads(session: &mut cli::auth::Session, record: &HandMade) -> Value {
    let listing = session.get_json("/v1/docs").expect("document list");
    rows(&listing)
        .into_iter()
        .find(|row| row["id"] == record.id.to_string().as_str())
        .map(|row| row["heads"].clone())
        .unwrap_or_else(|| panic!("{} is not listed", record.id))
}

/// Uploads `count` new records of the first township as `enrolled`, in one request.
fn upload_records(fixture_server: &TestServer, enrolled: &mut Enrolled, count: usize) {
    let demo = fixture_server.demo();
    let docs = (0..count)
        .map(|_| {
            HandMade::inspection(&enrolled.actor(), &demo.officers[0].township, &demo.entrusted)
                .doc_upload(&[])
        })
        .collect();
    let response = upload(&mut enrolled.session, SyncRequest { cursor: 0, docs }.encode());
    assert_ok(&response);
}

#[test]
fn a_resync_with_nothing_changed_is_one_request_whose_size_does_not_grow_with_documents_held() {
    // Arrange: the device holds one record of its township, then twenty.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let mut colleague = server.enroll(&demo.officers[1].code);
    upload_records(&server, &mut colleague, 1);
    assert_eq!(device.json(&["sync"])["downloaded"], 1);

    // Act
    let holding_one = device.json(&["sync"]);
    upload_records(&server, &mut colleague, 19);
    let caught_up = device.json(&["sync"]);
    let holding_twenty = device.json(&["sync"]);

    // Assert
    assert_eq!(caught_up["downloaded"], 19, "{caught_up}");
    assert_eq!(device.json(&["list"]).as_array().expect("list").len(), 20);
    for report in [&holding_one, &holding_twenty] {
        assert_eq!(report["requests"], 1, "{report}");
        assert_eq!((&report["uploaded"], &report["downloaded"]), (&json!(0), &json!(0)));
    }
    let bytes = |report: &Value, field: &str| report[field].as_u64().expect("a byte count");
    // The cursor grows with the feed; a varint of it may take a byte or two more.
    assert!(
        bytes(&holding_twenty, "bytes_down") <= bytes(&holding_one, "bytes_down") + 2,
        "{holding_one} vs {holding_twenty}"
    );
    assert!(
        bytes(&holding_twenty, "bytes_up") <= bytes(&holding_one, "bytes_up") + 2,
        "{holding_one} vs {holding_twenty}"
    );
}

#[test]
fn a_catch_up_past_8_mib_comes_in_pages_and_the_device_receives_every_change() {
    // Arrange: the colleague's record holds two scans of 5 MiB, more than one page.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let mut colleague = server.enroll(&demo.officers[1].code);
    let mut record =
        HandMade::inspection(&colleague.actor(), &demo.officers[0].township, &demo.entrusted);
    let mut answer = upload(&mut colleague.session, record.upload(&[]));
    for _ in 0..2 {
        assert_ok(&answer);
        let cursor = SyncResponse::decode(&answer.body).expect("a sync answer").cursor;
        answer = upload(&mut colleague.session, scan_upload(&mut record, 5 * 1024 * 1024, cursor));
    }
    assert_ok(&answer);

    // Act
    let caught_up = device.json(&["sync"]);
    let again = device.json(&["sync"]);

    // Assert
    assert_eq!(caught_up["ok"], true, "{caught_up}");
    assert!(caught_up["requests"].as_u64().is_some_and(|requests| requests >= 2), "{caught_up}");
    assert_eq!(caught_up["downloaded"], 3, "{caught_up}");
    let shown = device.json(&["show", &record.id.to_string()]);
    let mut heads: Vec<String> = record.heads().iter().map(ToString::to_string).collect();
    heads.sort();
    assert_eq!(shown["heads"], json!(heads));
    assert_eq!((&again["requests"], &again["downloaded"]), (&json!(1), &json!(0)), "{again}");
}

#[test]
fn after_an_officer_moves_to_another_township_the_device_evicts_the_old_townships_records() {
    // Arrange: the device holds its own record and the colleague's, nothing pending.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let mut colleague = server.enroll(&demo.officers[1].code);
    let mut admin = server.admin();
    let mut supervisor = server.supervisor();
    device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    upload_records(&server, &mut colleague, 1);
    assert_eq!(device.json(&["sync"])["ok"], true);
    let listed = device.json(&["list"]);
    assert_eq!(listed.as_array().expect("list").len(), 2, "{listed}");
    let officer = enrolled["officer"].as_str().expect("the officer id").to_owned();

    // Act
    let moved = admin
        .post_json(
            &format!("/v1/admin/officers/{officer}/move"),
            &json!({"township": demo.townships[1]}),
        )
        .expect("the admin moves the officer");
    let synced = device.json(&["sync"]);

    // Assert
    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(device.json(&["list"]), json!([]), "{moved}");
    assert_eq!(device.json(&["status"])["documents"], 0);
    assert_eq!(document_count(&mut supervisor), 2, "the server forgets nothing");
    assert_eq!(document_count(&mut colleague.session), 2);
    let entries = audit(&mut admin);
    assert!(
        entries.iter().any(|entry| entry["object_id"] == officer.as_str()
            && entry["action"].as_str().is_some_and(|action| action.contains("move"))),
        "no audit entry for moving {officer}: {entries:?}"
    );
}

#[test]
fn after_a_move_pending_edits_of_the_old_township_are_quarantined_and_every_record_is_evicted() {
    // Edits the officer made while still allowed are neither merged into a document the
    // officer may no longer write nor lost: the server keeps them in quarantine for review,
    // and the device, having delivered them, evicts the record like the others.
    // Arrange: two synced records, then an edit of one of them that is not synced yet.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let mut admin = server.admin();
    let mut supervisor = server.supervisor();
    let clean = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    let edited = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    assert_eq!(device.json(&["sync"])["ok"], true);
    device.json(&["edit", &edited, "--append", "findings=现场复查。"]);
    let officer = enrolled["officer"].as_str().expect("the officer id").to_owned();
    admin
        .post_json(
            &format!("/v1/admin/officers/{officer}/move"),
            &json!({"township": demo.townships[1]}),
        )
        .expect("the admin moves the officer");

    // Act
    let synced = device.run(&["sync"]);

    // Assert
    let report: Value = serde_json::from_slice(&synced.stdout).expect("sync --json output");
    assert_eq!(report["ok"], false, "{report}");
    let rejected = report["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 1, "{report}");
    assert_eq!(rejected[0]["id"], edited.as_str());
    assert_eq!(rejected[0]["code"], "out_of_scope");
    assert_eq!(device.json(&["list"]), json!([]), "both records are evicted");
    let view = supervisor.get_json(&format!("/v1/docs/{edited}")).expect("supervisor view");
    assert!(
        !view["record"]["findings"].as_str().unwrap_or_default().contains("现场复查"),
        "a quarantined edit is not merged: {view}"
    );
    assert!(
        !rows_mention(&device.json(&["list"]), &clean),
        "{clean} has nothing pending and is evicted"
    );
}

fn rows_mention(listed: &Value, doc: &str) -> bool {
    listed.as_array().is_some_and(|rows| rows.iter().any(|row| row["id"] == doc))
}

/// Documents the device holds in the 500-document resync test.
const HELD: usize = 500;

#[test]
fn a_device_holding_500_documents_resyncs_a_tenth_changed_in_one_request_and_nothing_in_100_bytes_each()
 {
    // Arrange: a colleague uploads 500 records of the township in one request (500 `inspection
    // new` processes would cost seconds of fsyncs), and the device receives them in one sync.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let mut colleague = server.enroll(&demo.officers[1].code);
    let mut supervisor = server.supervisor();
    let township = &demo.officers[0].township;
    let mut records: Vec<HandMade> = (0..HELD)
        .map(|_| HandMade::inspection(&colleague.actor(), township, &demo.entrusted))
        .collect();
    let docs = records.iter_mut().map(|record| record.doc_upload(&[])).collect();
    assert_ok(&upload(&mut colleague.session, SyncRequest { cursor: 0, docs }.encode()));
    let received = device.json(&["sync"]);
    assert_eq!((&received["ok"], &received["downloaded"]), (&json!(true), &json!(HELD)));
    // A tenth changes: half of it by the colleague (uploaded), half on the device (pending).
    let tenth = HELD / 10;
    let mut edits = Vec::new();
    for record in &mut records[..tenth / 2] {
        let base = record.heads();
        edit_text(&mut record.doc, "findings", TextEdit::Append, "复查：已整改。").expect("edit");
        record.doc.commit();
        edits.push(record.doc_upload(&base));
    }
    assert_ok(&upload(&mut colleague.session, SyncRequest { cursor: 0, docs: edits }.encode()));
    for record in &records[tenth / 2..tenth] {
        device.json(&["edit", &record.id.to_string(), "--append", "findings=现场检查。"]);
    }
    assert_eq!(device.json(&["status"])["pending_documents"], tenth / 2);

    // Act
    let changed = device.json(&["sync"]);
    let unchanged = device.json(&["sync"]);

    // Assert
    assert_eq!(changed["ok"], true, "{changed}");
    assert_eq!(changed["requests"], 1, "one request for a tenth changed: {changed}");
    let moved = (&changed["uploaded"], &changed["downloaded"]);
    assert_eq!(moved, (&json!(tenth / 2), &json!(tenth / 2)), "{changed}");
    assert_eq!(unchanged["requests"], 1, "{unchanged}");
    assert_eq!((&unchanged["uploaded"], &unchanged["downloaded"]), (&json!(0), &json!(0)));
    let bytes = |field: &str| unchanged[field].as_u64().expect("a byte count");
    assert!(
        bytes("bytes_up") + bytes("bytes_down") <= 100 * HELD as u64,
        "a resync with nothing changed costs at most 100 bytes per document held: {unchanged}"
    );
    assert_eq!(device.json(&["list"]).as_array().expect("list").len(), HELD);
    for record in [&records[0], &records[tenth - 1], &records[HELD - 1]] {
        let doc = record.id.to_string();
        let view = supervisor.get_json(&format!("/v1/docs/{doc}")).expect("server view");
        assert_eq!(device.json(&["show", &doc]), view, "{doc}");
    }
}
