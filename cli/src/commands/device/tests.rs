//! Tests of the device commands, offline and against a small in-test sync server.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use clap::Parser;
use sync_core::merge::parse_upload;
use sync_core::protocol::{DocOutcome, DocResult, DocUpdate, SyncRequest, SyncResponse};

use super::*;
use crate::client::idempotency_key;
use crate::commands::enroll::{EnrollArgs, enroll};
use crate::test_server::{BlobServer, TestResponse, authenticated_server, identity_server};

/// A command line of device commands, parsed the way `fieldcase` parses them.
#[derive(Parser)]
enum TestCommand {
    Enroll(EnrollArgs),
    InspectionNew(InspectionNewArgs),
    CaseNew(CaseNewArgs),
    Edit(EditArgs),
    EvidenceAdd(EvidenceAddArgs),
    EvidenceRemove(EvidenceRemoveArgs),
    EvidenceGet(EvidenceGetArgs),
    Event(EventArgs),
    Show(ShowArgs),
    List,
    Status,
    Sync,
}

struct Device {
    home: tempfile::TempDir,
    settings: Settings,
}

impl Device {
    /// A device enrolled as officer `o1` with a server that refuses every sync.
    fn new() -> Self {
        Self::with_server(&identity_server(|_| (500, b"no sync in this test".to_vec())))
    }

    /// A device enrolled as officer `o1` with `server`.
    fn with_server(server: &str) -> Self {
        let device = Self::unenrolled(server);
        device.run("enroll --code o1 --name tablet").unwrap();
        device
    }

    fn unenrolled(server: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let settings =
            Settings { home: home.path().to_owned(), server: server.to_owned(), json: true };
        Self { home, settings }
    }

    /// Runs a command and returns its JSON output.
    fn run(&self, line: &str) -> Result<Value> {
        let words = std::iter::once("test").chain(line.split_whitespace());
        let settings = &self.settings;
        let output = match TestCommand::try_parse_from(words)? {
            TestCommand::Enroll(args) => enroll(settings, &args),
            TestCommand::InspectionNew(args) => inspection_new(settings, args),
            TestCommand::CaseNew(args) => case_new(settings, args),
            TestCommand::Edit(args) => edit(settings, &args),
            TestCommand::EvidenceAdd(args) => evidence_add(settings, args),
            TestCommand::EvidenceRemove(args) => evidence_remove(settings, &args),
            TestCommand::EvidenceGet(args) => evidence_get(settings, &args),
            TestCommand::Event(args) => event(settings, args),
            TestCommand::Show(args) => show(settings, &args),
            TestCommand::List => list(settings),
            TestCommand::Status => status(settings),
            TestCommand::Sync => sync(settings),
        }?;
        Ok(serde_json::from_str(output.json())?)
    }

    fn new_inspection(&self) -> String {
        let created = self
            .run(
                "inspection-new --matter M1 --party-name 张三 --party-id 110101 \
                 --site 五金店 --officer o1 --officer o2",
            )
            .unwrap();
        created["id"].as_str().unwrap().to_owned()
    }
}

#[track_caller]
fn check_refused(device: &Device, line: &str, expected_code: &str) {
    let error = device.run(line).unwrap_err();
    assert_eq!(crate::commands::error_code(&error), expected_code, "{error:#}");
}

#[test]
fn enrollment_gives_the_device_its_identity_and_actor() {
    // Arrange
    let device = Device::unenrolled(&identity_server(|_| (500, Vec::new())));
    let before = device.run("status").unwrap();

    // Act
    let enrolled = device.run("enroll --code o1").unwrap();
    let doc = device.new_inspection();

    // Assert
    assert_eq!(before["device"], Value::Null);
    assert_eq!(
        enrolled,
        json!({"device": "dev-1", "officer": "o1", "role": "officer", "township": "t-1",
            "actor": format!("{:032x}", 1)})
    );
    let status = device.run("status").unwrap();
    assert_eq!(status["device"], "dev-1");
    assert_eq!(status["officer"], "o1");
    assert_eq!(status["role"], "officer");
    assert_eq!(status["township"], "t-1");
    assert_eq!(status["actor"], enrolled["actor"]);
    assert!(device.home.path().join(crate::auth::DEVICE_KEY_FILE).exists());
    let shown = device.run(&format!("show {doc}")).unwrap();
    assert_eq!(shown["record"]["township"], "t-1");
    assert_eq!(
        shown["record"]["officers"],
        json!([{"officer": "o1", "cert_no": "C-o1"}, {"officer": "o2", "cert_no": ""}])
    );
    check_refused(&device, "enroll --code o2", "already_enrolled");
}

#[test]
fn record_commands_and_sync_need_enrollment() {
    let device = Device::unenrolled("http://127.0.0.1:1");

    check_refused(
        &device,
        "inspection-new --matter M1 --party-name 张三 --party-id 1 --site 店",
        "not_enrolled",
    );
    check_refused(&device, "case-new --matter M1 --party-name 张三 --party-id 1", "not_enrolled");
    check_refused(&device, "sync", "not_enrolled");
    assert_eq!(device.run("list").unwrap(), json!([]));
}

#[test]
fn actions_outside_the_offline_scope_are_refused_and_store_nothing() {
    let device = Device::new();

    check_refused(
        &device,
        "inspection-new --matter M3 --party-name 张三 --party-id 1 --site 店",
        "out_of_scope",
    );
    check_refused(
        &device,
        "case-new --matter M2 --procedure general --party-name 张三 --party-id 1",
        "out_of_scope",
    );
    assert_eq!(device.run("list").unwrap(), json!([]));

    // The same commands within scope store their record.
    device.run("inspection-new --matter M2 --party-name 张三 --party-id 1 --site 店").unwrap();
    device.run("case-new --matter M1 --procedure summary --party-name 张三 --party-id 1").unwrap();
    assert_eq!(device.run("list").unwrap().as_array().unwrap().len(), 2);
}

#[test]
fn a_sync_replaces_the_master_data_with_the_token_answers() {
    let device = Device::with_server(&relay_server());
    let inspect_m2 = "inspection-new --matter M2 --party-name 张三 --party-id 1 --site 店";
    device.run(inspect_m2).unwrap();

    device.run("sync").unwrap();

    // The token answer's master data no longer entrusts M2.
    check_refused(&device, inspect_m2, "out_of_scope");
}

#[test]
fn an_inspection_is_created_edited_and_shown_offline() {
    let device = Device::new();
    let doc = device.new_inspection();

    let edited = device
        .run(&format!(
            "edit {doc} --set site.name=新五金店 --append findings=消防通道堵塞 \
             --prepend findings=【复查】 --set outcome=rectification_order"
        ))
        .unwrap();
    let shown = device.run(&format!("show {doc}")).unwrap();

    assert_eq!(edited, json!({"id": doc, "changed": true}));
    assert_eq!(shown["id"], doc);
    assert_eq!(shown["kind"], "inspection");
    assert_eq!(shown["record"]["site"]["name"], "新五金店");
    assert_eq!(shown["record"]["findings"], "【复查】消防通道堵塞");
    assert_eq!(shown["record"]["outcome"], "rectification_order");
    assert_eq!(shown["record"]["officers"][1]["officer"], "o2");
    assert_eq!(shown["findings"], json!([]));
    assert_eq!(shown["heads"].as_array().unwrap().len(), 1);
}

#[test]
fn a_failed_edit_stores_nothing() {
    let device = Device::new();
    let doc = device.new_inspection();
    let before = device.run(&format!("show {doc}")).unwrap();

    let error = device
        .run(&format!("edit {doc} --set site.name=changed --set started_at=soon"))
        .unwrap_err();

    assert_eq!(crate::commands::error_code(&error), "invalid_edit");
    assert_eq!(device.run(&format!("show {doc}")).unwrap(), before);
}

#[test]
fn evidence_is_stored_as_a_blob_and_listed_in_the_record() {
    let device = Device::new();
    let doc = device.new_inspection();
    let photo = device.home.path().join("photo.JPG");
    fs::write(&photo, b"abc").unwrap();

    let added = device
        .run(&format!("evidence-add {doc} --file {} --kind photo --note 门口", photo.display()))
        .unwrap();
    let shown = device.run(&format!("show {doc}")).unwrap();

    let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(added["sha256"], sha256);
    assert_eq!(added["size"], 3);
    let item = &shown["record"]["evidence"][0];
    assert_eq!(item["id"], added["evidence"]);
    assert_eq!(item["sha256"], sha256);
    assert_eq!(item["media_type"], "image/jpeg");
    assert_eq!(item["note"], "门口");
    assert_eq!(item["kind"], "photo");
    assert!(device.home.path().join("blobs").join(sha256).exists());
}

#[test]
fn events_derive_the_case_state_and_a_device_can_only_request_filing() {
    let device = Device::new();
    let inspection = device.new_inspection();
    let case = device
        .run(&format!(
            "case-new --matter M1 --party-name 甲公司 --party-id 91X --party-kind legal \
             --from-inspection {inspection} --officer o1"
        ))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let requested =
        device.run(&format!("event {case} request_file --officer o1 --set reason=线索")).unwrap();
    // Filing (立案) is server-authored: the device's own `file` event does not move the case.
    let filed = device.run(&format!("event {case} file")).unwrap();
    let refused = device.run(&format!("event {inspection} file")).unwrap_err();
    let shown = device.run(&format!("show {case}")).unwrap();

    assert_eq!(shown["record"]["name_agency"], "d-1", "the entrusting department of M1");
    assert_eq!(requested["state"], "lead");
    assert_eq!(filed["state"], "lead");
    assert_eq!(crate::commands::error_code(&refused), "not_a_case");
    assert_eq!(shown["state"], "lead");
    let codes: Vec<&str> =
        shown["findings"].as_array().unwrap().iter().filter_map(|f| f["code"].as_str()).collect();
    assert!(codes.contains(&"unauthorised_transition"), "{codes:?}");
    assert_eq!(shown["record"]["inspections"], json!([inspection]));
    assert_eq!(shown["record"]["parties"][0]["kind"], "legal");
    assert_eq!(shown["record"]["timeline"][0]["fields"]["reason"], "线索");
    assert_eq!(shown["record"]["timeline"][1]["prev"], requested["event"]);
}

#[test]
fn issue_document_takes_the_stored_numbers_in_order_and_void_records_the_serial() {
    // Arrange: a case file and a two-number block, stored as `numbers lease` stores it.
    let device = Device::new();
    let case = device
        .run("case-new --matter M1 --party-name 李四 --party-id 110101 --officer o1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    check_refused(
        &device,
        &format!("event {case} issue_document --doc-type onsite"),
        "no_number_block",
    );
    let block = NumberBlock {
        id: "nb-1".to_owned(),
        name_agency: "d-yingji".to_owned(),
        agency_code: "应急".to_owned(),
        doc_type: "onsite".to_owned(),
        year: 2026,
        first: 7,
        last: 8,
        device: "dev-1".to_owned(),
        template: "{代字}罚〔{年}〕{N}号".to_owned(),
    };
    ReplicaStore::open(device.home.path()).unwrap().store_number_block(&block).unwrap();

    // Act
    let voided = device
        .run(&format!("event {case} issue_document --doc-type onsite --void 打印错误"))
        .unwrap();
    let issued = device.run(&format!("event {case} issue_document --doc-type onsite")).unwrap();
    let used_up =
        device.run(&format!("event {case} issue_document --doc-type onsite")).unwrap_err();
    let shown = device.run(&format!("show {case}")).unwrap();

    // Assert
    assert_eq!((voided["serial"].as_i64(), voided["void"].as_bool()), (Some(7), Some(true)));
    assert_eq!(issued["number"], "应急罚〔2026〕8号");
    assert_eq!(crate::commands::error_code(&used_up), "no_number_block");
    let documents = shown["record"]["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 1, "a void number issues no document: {documents:?}");
    assert_eq!(documents[0]["number"], "应急罚〔2026〕8号");
    assert_eq!(
        (documents[0]["block"].as_str(), documents[0]["serial"].as_i64()),
        (Some("nb-1"), Some(8))
    );
    let timeline = shown["record"]["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["kind"], "void_number");
    assert_eq!(timeline[0]["fields"]["serial"], "7");
    assert_eq!(timeline[0]["fields"]["reason"], "打印错误");
    assert_eq!(timeline[1]["kind"], "issue_document");
    assert_eq!(timeline[1]["fields"]["number"], "应急罚〔2026〕8号");
}

#[test]
fn list_shows_every_document_with_status_and_pending_state() {
    let device = Device::new();
    let doc = device.new_inspection();

    let listed = device.run("list").unwrap();
    let unknown = device.run(&format!("show {}", DocumentId::from_bytes([3; 16]))).unwrap_err();

    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], doc);
    assert_eq!(listed[0]["kind"], "inspection");
    assert_eq!(listed[0]["status"], "open");
    assert_eq!(listed[0]["pending"], true);
    assert!(listed[0]["updated_at"].is_i64());
    assert_eq!(crate::commands::error_code(&unknown), "unknown_document");
}

#[test]
fn assignments_split_at_the_first_equals_sign() {
    assert_eq!(parse_assignment("a.b=x=y"), Ok(("a.b".to_owned(), "x=y".to_owned())));
    assert_eq!(parse_assignment("a="), Ok(("a".to_owned(), String::new())));
    assert!(parse_assignment("=x").is_err());
    assert!(parse_assignment("nothing").is_err());
    assert!(parse_event_kind("close_investigation").is_ok());
    assert!(parse_event_kind("Decide!").is_err());
}

/// A server that accepts every upload and relays it to everyone else, like the real one
/// without its checks: a feed of changes, the cursor an index into it.
fn relay_server() -> String {
    identity_server(relay())
}

/// The sync answers of [`relay_server`].
fn relay() -> impl FnMut(SyncRequest) -> (u16, Vec<u8>) + Send + 'static {
    let mut feed: Vec<(DocumentId, Vec<u8>)> = Vec::new();
    move |request| {
        let mut results = Vec::new();
        let mut uploaded = HashSet::new();
        for upload in request.docs {
            // A new document arrives as one document chunk: relay its changes, as the real
            // server stores and feeds them.
            let changes = parse_upload(&upload).expect("the device's upload parses");
            let stored = u32::try_from(changes.len()).unwrap();
            for change in changes {
                let change = change.raw_bytes().to_vec();
                uploaded.insert(change.clone());
                feed.push((upload.doc_id, change));
            }
            let outcome = DocOutcome::Accepted { heads: upload.heads, stored };
            results.push(DocResult { doc_id: upload.doc_id, outcome });
        }
        let mut updates: BTreeMap<DocumentId, Vec<Vec<u8>>> = BTreeMap::new();
        for (doc_id, change) in &feed[usize::try_from(request.cursor).unwrap()..] {
            if !uploaded.contains(change) {
                updates.entry(*doc_id).or_default().push(change.clone());
            }
        }
        let response = SyncResponse {
            cursor: feed.len() as u64,
            more: false,
            results,
            updates: updates
                .into_iter()
                .map(|(doc_id, changes)| DocUpdate { doc_id, changes })
                .collect(),
            evict: Vec::new(),
        };
        (200, response.encode())
    }
}

#[test]
fn two_devices_converge_through_the_server() {
    // Arrange
    let server = relay_server();
    let device_a = Device::with_server(&server);
    let device_b = Device::with_server(&server);
    let doc = device_a.new_inspection();
    device_a.run(&format!("edit {doc} --append findings=现场检查。")).unwrap();

    // Act: A uploads, B receives, both edit concurrently, both resync.
    let first = device_a.run("sync").unwrap();
    let received = device_b.run("sync").unwrap();
    device_a.run(&format!("edit {doc} --prepend findings=甲： --set outcome=case_lead")).unwrap();
    device_b.run(&format!("edit {doc} --append findings=乙 --set outcome=referral")).unwrap();
    device_a.run("sync").unwrap();
    device_b.run("sync").unwrap();
    let last = device_a.run("sync").unwrap();

    // Assert
    assert_eq!(first["ok"], true);
    assert_eq!(first["requests"], 1);
    assert_eq!(first["uploaded"], 2);
    assert_eq!(first["downloaded"], 0);
    assert_eq!(first["cursor"], 2);
    assert!(first["bytes_up"].as_u64().unwrap() > 0);
    assert_eq!(received["downloaded"], 2);
    assert_eq!(last["uploaded"], 0);
    assert_eq!(last["cursor"], 4);
    let view_a = device_a.run(&format!("show {doc}")).unwrap();
    let view_b = device_b.run(&format!("show {doc}")).unwrap();
    assert_eq!(view_a, view_b);
    assert_eq!(view_a["record"]["findings"], "甲：现场检查。乙");
    assert_eq!(view_a["conflicts"][0]["path"], "outcome");
    for device in [&device_a, &device_b] {
        let status = device.run("status").unwrap();
        assert_eq!(status["pending_documents"], 0);
        assert_eq!(status["documents"], 1);
        assert_eq!(status["cursor"], 4);
        assert!(status["last_sync"].is_i64());
    }
}

#[test]
fn a_refused_upload_stays_pending_and_is_not_resent_in_the_same_run() {
    let mut rounds = 0;
    let server = identity_server(move |request| {
        rounds += 1;
        let results = request
            .docs
            .iter()
            .map(|upload| DocResult {
                doc_id: upload.doc_id,
                outcome: DocOutcome::Rejected {
                    code: "out_of_scope".to_owned(),
                    message: "not your township".to_owned(),
                    quarantined: false,
                },
            })
            .collect();
        // The first answer pages: the second request must not carry the refused document.
        let response =
            SyncResponse { cursor: rounds, more: rounds == 1, results, ..SyncResponse::default() };
        assert!(rounds == 1 || request.docs.is_empty(), "round {rounds} re-sent {request:?}");
        (200, response.encode())
    });
    let device = Device::with_server(&server);
    let doc = device.new_inspection();

    let report = device.run("sync").unwrap();

    assert_eq!(report["ok"], false);
    assert_eq!(report["requests"], 2);
    assert_eq!(report["cursor"], 2);
    assert_eq!(
        report["rejected"],
        json!([{"id": doc, "code": "out_of_scope", "message": "not your township"}])
    );
    assert_eq!(device.run("list").unwrap()[0]["pending"], true);
}

#[test]
fn a_refused_request_fails_with_the_server_code_and_keeps_the_cursor() {
    let server = identity_server(|_| {
        let body = r#"{"error":{"code":"certificate_revoked","message":"revoked"}}"#;
        (403, body.as_bytes().to_vec())
    });
    let device = Device::with_server(&server);
    device.new_inspection();

    let error = device.run("sync").unwrap_err();

    assert_eq!(crate::commands::error_code(&error), "certificate_revoked");
    let status = device.run("status").unwrap();
    assert_eq!(status["cursor"], 0);
    assert_eq!(status["pending_documents"], 1);
    assert_eq!(status["last_sync"], Value::Null);
}

/// The `Idempotency-Key` (if any) and body of each sync request, in order.
type SeenSyncs = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A server with the blob endpoints of `blobs` and the sync answers of `sync`; records the
/// `Idempotency-Key` and body of every sync request.
fn blob_server(
    blobs: &Arc<Mutex<BlobServer>>,
    mut sync: impl FnMut(SyncRequest) -> (u16, Vec<u8>) + Send + 'static,
) -> (String, SeenSyncs) {
    let blobs = Arc::clone(blobs);
    let syncs = SeenSyncs::default();
    let seen = Arc::clone(&syncs);
    let url = authenticated_server(move |request| {
        if let Some(answer) = blobs.lock().unwrap().answer(request) {
            return answer;
        }
        assert_eq!(request.path, "/v1/sync");
        let key = request.header("idempotency-key").map(str::to_owned);
        seen.lock().unwrap().push((key, request.body.clone()));
        let (status, body) = sync(SyncRequest::decode(&request.body).unwrap());
        TestResponse { status, headers: Vec::new(), body }
    });
    (url, syncs)
}

impl Device {
    /// Adds a file of `bytes` as evidence of `doc`; returns the `evidence add` output.
    fn add_evidence(&self, doc: &str, name: &str, bytes: &[u8]) -> Value {
        let file = self.home.path().join(name);
        fs::write(&file, bytes).unwrap();
        self.run(&format!("evidence-add {doc} --file {} --kind photo", file.display())).unwrap()
    }
}

/// `len` bytes that differ from chunk to chunk, so a chunk sent at the wrong offset shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|index| u8::try_from(index % 251).unwrap()).collect()
}

#[test]
fn a_blob_upload_resumes_from_what_the_server_received() {
    // Arrange: the server holds the first 1.5 MiB of a 2.5 MiB blob from an interrupted sync.
    let blobs = Arc::new(Mutex::new(BlobServer::default()));
    let (server, _) = blob_server(&blobs, relay());
    let device = Device::with_server(&server);
    let doc = device.new_inspection();
    let bytes = pattern(2_621_440 + 7);
    let added = device.add_evidence(&doc, "video.mp4", &bytes);
    let sha256 = added["sha256"].as_str().unwrap().to_owned();
    let held = 1_572_864;
    blobs.lock().unwrap().partial.insert(sha256.clone(), bytes[..held].to_vec());

    // Act
    let report = device.run("sync").unwrap();

    // Assert
    let blobs = blobs.lock().unwrap();
    let mib = 1_048_576;
    assert_eq!(
        blobs.chunks,
        [(sha256.clone(), held as u64, mib), (sha256.clone(), (held + mib) as u64, 7)]
    );
    assert_eq!(blobs.complete[&sha256], bytes);
    assert_eq!(report["ok"], true);
    assert_eq!(report["blobs_uploaded"], 1);
    assert_eq!(report["blob_bytes_up"], bytes.len() - held);
    assert_eq!(report["blob_errors"], json!([]));
    assert_eq!(report["uploaded"], 2);
    assert_eq!(report["requests"], 1);
    let status = device.run("status").unwrap();
    assert_eq!(status["pending_blobs"], 0);
    assert_eq!(status["pending_documents"], 0);
    // The bytes stay on the device, and the next sync uploads nothing.
    assert!(device.home.path().join("blobs").join(&sha256).exists());
    drop(blobs);
    assert_eq!(device.run("sync").unwrap()["blobs_uploaded"], 0);
}

#[test]
fn an_offset_mismatch_rereads_the_status_and_continues() {
    let blobs = Arc::new(Mutex::new(BlobServer::default()));
    let (server, _) = blob_server(&blobs, relay());
    let device = Device::with_server(&server);
    let doc = device.new_inspection();
    let bytes = pattern(1_048_576 + 10);
    let sha256 =
        device.add_evidence(&doc, "photo.jpg", &bytes)["sha256"].as_str().unwrap().to_owned();
    {
        let mut blobs = blobs.lock().unwrap();
        blobs.partial.insert(sha256.clone(), bytes[..1_048_576].to_vec());
        blobs.stale_status_once = true;
    }

    let report = device.run("sync").unwrap();

    let blobs = blobs.lock().unwrap();
    let offsets: Vec<u64> = blobs.chunks.iter().map(|(_, offset, _)| *offset).collect();
    assert_eq!(offsets, [0, 1_048_576]);
    assert_eq!(blobs.complete[&sha256], bytes);
    assert_eq!(report["ok"], true);
    assert_eq!(report["blobs_uploaded"], 1);
}

#[test]
fn a_failed_blob_upload_still_syncs_the_changes_and_reports_it() {
    // Arrange: three blobs; the server refuses one, the device lost another's bytes.
    let blobs = Arc::new(Mutex::new(BlobServer::default()));
    let (server, syncs) = blob_server(&blobs, relay());
    let device = Device::with_server(&server);
    let doc = device.new_inspection();
    let refused =
        device.add_evidence(&doc, "a.jpg", b"refused")["sha256"].as_str().unwrap().to_owned();
    let lost = device.add_evidence(&doc, "b.jpg", b"lost")["sha256"].as_str().unwrap().to_owned();
    let fine = device.add_evidence(&doc, "c.jpg", b"fine")["sha256"].as_str().unwrap().to_owned();
    blobs.lock().unwrap().refuse.insert(refused.clone(), (507, "storage_full".to_owned()));
    fs::remove_file(device.home.path().join("blobs").join(&lost)).unwrap();

    // Act
    let report = device.run("sync").unwrap();

    // Assert
    assert_eq!(report["ok"], false);
    assert_eq!(report["uploaded"], 4);
    assert_eq!(report["rejected"], json!([]));
    assert_eq!(report["blobs_uploaded"], 1);
    // Only the bytes the server took count.
    assert_eq!(report["blob_bytes_up"], 4);
    let errors = report["blob_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["sha256"], refused.as_str());
    assert_eq!(errors[0]["code"], "storage_full");
    assert_eq!(errors[1]["sha256"], lost.as_str());
    assert_eq!(errors[1]["code"], "blob_missing");
    assert!(errors.iter().all(|error| error["message"].as_str().unwrap().contains("blob")));
    assert_eq!(blobs.lock().unwrap().complete[&fine], b"fine");
    assert_eq!(syncs.lock().unwrap().len(), 1);
    let status = device.run("status").unwrap();
    assert_eq!(status["pending_documents"], 0);
    assert_eq!(status["pending_blobs"], 2);

    // Once the server takes the refused blob, the next sync uploads it and reports only the
    // lost one.
    blobs.lock().unwrap().refuse.clear();
    let again = device.run("sync").unwrap();
    assert_eq!(again["blobs_uploaded"], 1);
    assert_eq!(again["blob_errors"][0]["code"], "blob_missing");
    assert_eq!(again["blob_errors"].as_array().unwrap().len(), 1);
}

#[test]
fn an_upload_carries_a_stable_idempotency_key_and_a_download_none() {
    // Arrange: a server that refuses every upload, so the same changes are sent again.
    let blobs = Arc::new(Mutex::new(BlobServer::default()));
    let (server, syncs) = blob_server(&blobs, |request| {
        let results = request
            .docs
            .iter()
            .map(|upload| DocResult {
                doc_id: upload.doc_id,
                outcome: DocOutcome::Rejected {
                    code: "busy".to_owned(),
                    message: "x".to_owned(),
                    quarantined: false,
                },
            })
            .collect();
        (200, SyncResponse { results, ..SyncResponse::default() }.encode())
    });
    let device = Device::with_server(&server);

    // Act
    device.run("sync").unwrap();
    let doc = device.new_inspection();
    device.run("sync").unwrap();
    device.run("sync").unwrap();
    device.run(&format!("edit {doc} --append findings=x")).unwrap();
    device.run("sync").unwrap();

    // Assert
    let syncs = syncs.lock().unwrap();
    let keys: Vec<Option<&str>> = syncs.iter().map(|(key, _)| key.as_deref()).collect();
    assert_eq!(keys[0], None, "a download-only request carries no key");
    assert_eq!(keys[1], Some(idempotency_key(&syncs[1].1).as_str()));
    assert_eq!(syncs[1].1, syncs[2].1);
    assert_eq!(keys[1], keys[2]);
    assert_ne!(keys[3], keys[1]);
    assert_eq!(keys[3], Some(idempotency_key(&syncs[3].1).as_str()));
}

#[test]
fn removed_evidence_stays_in_the_record_marked_removed() {
    let device = Device::new();
    let doc = device.new_inspection();
    let added = device.add_evidence(&doc, "photo.jpg", b"abc");
    let evidence = added["evidence"].as_str().unwrap();

    let removed =
        device.run(&format!("evidence-remove {doc} {evidence} --reason 拍错对象")).unwrap();
    let shown = device.run(&format!("show {doc}")).unwrap();

    assert_eq!(removed, json!({"id": doc, "evidence": evidence, "removed": true}));
    let items = shown["record"]["evidence"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], evidence);
    assert_eq!(items[0]["sha256"], added["sha256"]);
    assert_eq!(items[0]["removed"]["by"], "o1");
    assert_eq!(items[0]["removed"]["reason"], "拍错对象");
    assert!(items[0]["removed"]["at"].as_i64().unwrap() > 0);
    let sha256 = added["sha256"].as_str().unwrap();
    assert!(device.home.path().join("blobs").join(sha256).exists());
    assert_eq!(device.run("list").unwrap()[0]["pending"], true);
    check_refused(
        &device,
        &format!("evidence-remove {doc} {evidence} --reason again"),
        "already_removed",
    );
    check_refused(&device, &format!("evidence-remove {doc} nope --reason x"), "unknown_evidence");
    let other = DocumentId::from_bytes([3; 16]);
    check_refused(
        &device,
        &format!("evidence-remove {other} {evidence} --reason x"),
        "unknown_document",
    );
}

#[test]
fn evidence_bytes_come_from_the_device_or_the_server_and_are_checked() {
    // Arrange
    let blobs = Arc::new(Mutex::new(BlobServer::default()));
    let (server, _) = blob_server(&blobs, relay());
    let device = Device::with_server(&server);
    let doc = device.new_inspection();
    let added = device.add_evidence(&doc, "photo.jpg", b"abc");
    let evidence = added["evidence"].as_str().unwrap();
    let sha256 = added["sha256"].as_str().unwrap();
    let out = device.home.path().join("out.jpg");
    let get = format!("evidence-get {doc} {evidence} --out {}", out.display());

    // Act and assert: from the device.
    let local = device.run(&get).unwrap();
    assert_eq!(local["source"], "device");
    assert_eq!(local["size"], 3);
    assert_eq!(fs::read(&out).unwrap(), b"abc");

    // From the server, once the device no longer holds the bytes.
    fs::remove_file(&out).unwrap();
    fs::remove_file(device.home.path().join("blobs").join(sha256)).unwrap();
    blobs.lock().unwrap().complete.insert(sha256.to_owned(), b"abc".to_vec());
    let downloaded = device.run(&get).unwrap();
    assert_eq!(downloaded["source"], "server");
    assert_eq!(downloaded["sha256"], sha256);
    assert_eq!(fs::read(&out).unwrap(), b"abc");

    // Bytes that do not match the hash are not written.
    fs::remove_file(&out).unwrap();
    blobs.lock().unwrap().complete.insert(sha256.to_owned(), b"abd".to_vec());
    check_refused(&device, &get, "blob_hash_mismatch");
    assert!(!out.exists());
    blobs.lock().unwrap().complete.clear();
    check_refused(&device, &get, "not_found");
    check_refused(&device, &format!("evidence-get {doc} nope --out x"), "unknown_evidence");
}

#[test]
fn a_returned_record_shows_the_supervisors_comments_and_a_forged_review_is_ignored() {
    use automerge::transaction::Transactable as _;
    use automerge::{ActorId, AutoCommit, ObjType};

    let mut doc = AutoCommit::new().with_actor(ActorId::from(SERVER_ACTOR));
    let review = doc.put_object(ROOT, "review", ObjType::Map).unwrap();
    doc.put(&review, "state", "returned").unwrap();
    let comments = doc.put_object(&review, "comments", ObjType::List).unwrap();
    let comment = doc.insert_object(&comments, 0, ObjType::Map).unwrap();
    doc.put(&comment, "by", "s-1").unwrap();
    doc.put(&comment, "text", "补充现场照片").unwrap();
    doc.commit();

    let found = server_review(&doc);
    assert_eq!(found["state"], "returned");
    let view = DocumentView::build(DocumentId::from_bytes([3; 16]), &doc.get_heads(), &doc);
    let text = render_view(&view, false);
    assert!(text.contains("review: returned"), "{text}");
    assert!(text.contains("s-1 : 补充现场照片"), "{text}");

    let mut forged = AutoCommit::new().with_actor(ActorId::from([9u8; 16]));
    let review = forged.put_object(ROOT, "review", ObjType::Map).unwrap();
    forged.put(&review, "state", "approved").unwrap();
    assert_eq!(server_review(&forged), Value::Null);
}
