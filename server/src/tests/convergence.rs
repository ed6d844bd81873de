//! The convergence property of issue 4 (SECURITY.md §d D-1) through the real sync handler:
//! three to five enrolled devices of one township edit shared records offline and sync them
//! with `POST /v1/sync` while the network loses answers and delivers requests twice, out of
//! order or at the same time, the server restarts from its data directory and devices reload
//! their records from storage. Once every device has synced until nothing moves, every device
//! shows the server's view of every record, and the server's change log holds every change it
//! ever acknowledged, each exactly once.
//!
//! The devices are `sync_core::replica` state machines driven as the CLI drives them (one
//! `SyncRound` per round trip, the CLI's `Idempotency-Key` on uploads); the server is
//! `router(state)` on a store in a temporary directory, reopened from its files alone at every
//! restart, keys and registry included, so that tokens minted before a restart stay valid.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use automerge::{AutoCommit, Change, ChangeHash, ROOT};
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use proptest::prelude::*;
use serde_json::{Value, json};
use sync_core::edit::{TextEdit, edit_text, set_field};
use sync_core::ids::DocumentId;
use sync_core::merge::parse_upload;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, SyncRequest, SyncResponse};
use sync_core::records::{CaseFile, Evidence, Party, Procedure, create_document};
use sync_core::replica::{DeviceDoc, RoundOutcome, SyncRound};
use sync_core::view::DocumentView;

use crate::auth::dpop::sha256_b64;
use crate::fixtures::{doc_id, open_demo_state};
use crate::routes::sync::IDEMPOTENCY_KEY;
use crate::store::DATABASE_FILE;
use crate::store::check::check_database;
use crate::tests::{CHENGGUAN, Client, ENTRUSTED, TestApi, chengguan_inspection};

/// Steps in one program: enough for every fault to meet every other, few enough that the
/// property stays well under a minute in a debug build.
const MAX_STEPS: usize = 30;

/// Passes over every device before the township must be quiet. One pass carries every pending
/// change to the server and a second every stored change to every device; the rest is margin
/// that a livelock would still exhaust.
const MAX_PASSES: usize = 6;

/// Commits one offline burst of text edits may make: half the store's snapshot interval
/// (`SNAPSHOT_INTERVAL`, 64 changes), so that longer programs pass it and a restart loads a
/// document from a later snapshot plus the changes after it.
const MAX_BURST: usize = 32;

/// Index of the inspection record in [`Township::records`].
const INSPECTION: usize = 0;
/// Index of the case file in [`Township::records`].
const CASE: usize = 1;

const TEXTS: [&str; 5] = ["a", "消防", "🚒", "x y", "é"];
const OUTCOMES: [&str; 3] = ["rectification_order", "case_lead", "referral"];
const LEGAL_BASES: [&str; 3] = ["《安全生产法》第九十九条", "《消防法》第六十条", "第二十八条"];
const EVENT_KINDS: [&str; 4] = ["investigate", "note", "file", "terminate"];

/// The finding the server adds for evidence whose bytes it lacks; devices never upload the
/// bytes here, and a device's own view has no such finding.
const EVIDENCE_PENDING: &str = "evidence_pending";

/// Device time written into records: the property is about merging, not clocks.
const DEVICE_TIME_MS: i64 = 1_700_000_000_000;

/// One step of a random program: an offline edit, a sync, a network fault or a restart.
#[derive(Debug, Clone)]
enum Step {
    /// Inserts text at the start or end of the record's text field (findings, facts), as
    /// `commits` changes in a row.
    EditText { device: usize, record: usize, at: TextEdit, text: &'static str, commits: usize },
    /// Sets a scalar field (outcome, legal basis); devices that set it concurrently conflict.
    SetScalar { device: usize, record: usize, value: usize },
    /// Appends an evidence item to the record.
    AddEvidence { device: usize, record: usize },
    /// Appends a timeline event to the case file.
    AppendEvent { device: usize, kind: &'static str },
    /// A round trip that goes through.
    Sync { device: usize },
    /// A round whose request the server handles but whose answer never reaches the device.
    AnswerLost { device: usize },
    /// A round whose request the network delivers twice, one copy after the other or both at
    /// once, with the CLI's `Idempotency-Key` or without one; the device applies one of the two
    /// answers.
    Duplicated { device: usize, keyed: bool, concurrent: bool, apply_second: bool },
    /// Two devices plan their rounds and the later request reaches the server first.
    Reordered { first: usize, second: usize },
    /// Two devices' requests reach the server at the same time, so that the writer may commit
    /// both in one group.
    Concurrent { first: usize, second: usize },
    /// The server stops and starts again on its data directory.
    Restart,
    /// The device stores every record and loads it again, as the CLI does between commands.
    DeviceRestart { device: usize },
}

/// A number of devices and a program for them.
fn program() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (3..=5usize).prop_flat_map(|devices| {
        (Just(devices), prop::collection::vec(step(devices), 1..=MAX_STEPS))
    })
}

fn step(devices: usize) -> impl Strategy<Value = Step> {
    let device = 0..devices;
    let record = prop_oneof![Just(INSPECTION), Just(CASE)];
    let at = prop_oneof![Just(TextEdit::Prepend), Just(TextEdit::Append)];
    prop_oneof![
        3 => (
            device.clone(),
            record.clone(),
            at,
            prop::sample::select(TEXTS.as_slice()),
            1..=MAX_BURST,
        )
            .prop_map(|(device, record, at, text, commits)| Step::EditText {
                device,
                record,
                at,
                text,
                commits,
            }),
        2 => (device.clone(), record.clone(), 0..OUTCOMES.len())
            .prop_map(|(device, record, value)| Step::SetScalar { device, record, value }),
        1 => (device.clone(), record)
            .prop_map(|(device, record)| Step::AddEvidence { device, record }),
        1 => (device.clone(), prop::sample::select(EVENT_KINDS.as_slice()))
            .prop_map(|(device, kind)| Step::AppendEvent { device, kind }),
        3 => device.clone().prop_map(|device| Step::Sync { device }),
        1 => device.clone().prop_map(|device| Step::AnswerLost { device }),
        1 => device.clone().prop_map(|device| Step::DeviceRestart { device }),
        1 => (device, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(device, keyed, concurrent, apply_second)| Step::Duplicated {
                device,
                keyed,
                concurrent,
                apply_second,
            }
        ),
        1 => two_devices(devices)
            .prop_map(|(first, second)| Step::Reordered { first, second }),
        1 => two_devices(devices)
            .prop_map(|(first, second)| Step::Concurrent { first, second }),
        1 => Just(Step::Restart),
    ]
}

/// Two different devices.
fn two_devices(devices: usize) -> impl Strategy<Value = (usize, usize)> {
    (0..devices, 1..devices).prop_map(move |(first, offset)| (first, (first + offset) % devices))
}

/// One enrolled device: its key, token and actor, and its replica of every record it holds.
struct FieldDevice {
    client: Client,
    officer: &'static str,
    cursor: u64,
    docs: BTreeMap<DocumentId, DeviceDoc>,
}

/// The server, a supervisor and the devices of Chengguan, with everything the server has
/// acknowledged.
struct Township {
    // Invariant: `Some` except inside `restart`, between stopping the server and starting it.
    api: Option<TestApi>,
    supervisor: Client,
    devices: Vec<FieldDevice>,
    records: [DocumentId; 2],
    // Invariant: every change hash, and every head, of every upload the server answered
    // `Accepted`, whether or not the answer reached the device.
    acknowledged: BTreeMap<DocumentId, BTreeSet<ChangeHash>>,
}

impl Township {
    /// Starts a demo server on a fresh data directory and enrolls `devices` devices for the
    /// two officers of Chengguan; the first device creates an inspection and a case file, and
    /// every device receives them by sync.
    async fn enroll(devices: usize) -> Self {
        let dir = tempfile::tempdir().expect("creating a data directory");
        let api = TestApi { state: open_demo_state(dir.path()), dir };
        let admin = api.login("admin").await;
        let supervisor = api.login("supervisor").await;
        let mut field_devices = Vec::with_capacity(devices);
        for number in 0..devices {
            // Both officers of Chengguan carry several devices, each with its own actor.
            let officer = if number % 2 == 0 { "o-1" } else { "o-2" };
            let issued = api
                .post_json(&admin, "/v1/admin/enroll-codes", &json!({ "officer": officer }))
                .await;
            assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.json());
            let client = api.login_with(issued.json()["code"].as_str().expect("a code")).await;
            field_devices.push(FieldDevice { client, officer, cursor: 0, docs: BTreeMap::new() });
        }
        let records = [doc_id(1), doc_id(2)];
        let creator = &mut field_devices[0];
        let inspection = chengguan_inspection(&creator.client, records[INSPECTION]);
        let case_file = chengguan_case(&creator.client, records[CASE]);
        for (doc_id, doc) in records.into_iter().zip([inspection, case_file]) {
            creator.docs.insert(doc_id, DeviceDoc::new(doc_id, doc));
        }
        let mut township = Self {
            api: Some(api),
            supervisor,
            devices: field_devices,
            records,
            acknowledged: BTreeMap::new(),
        };
        for device in 0..devices {
            township.sync(device).await;
        }
        township
    }

    fn api(&self) -> &TestApi {
        self.api.as_ref().expect("the server runs between restarts")
    }

    /// Runs the step numbered `number` of a program.
    async fn run(&mut self, step: &Step, number: usize) {
        match *step {
            Step::EditText { device, record, at, text, commits } => {
                let path = if record == INSPECTION { "findings" } else { "facts" };
                let doc = self.doc_mut(device, record);
                for _ in 0..commits {
                    edit_text(doc, path, at, text).expect("the record has this text field");
                    doc.commit();
                }
            }
            Step::SetScalar { device, record, value } => {
                let (path, value) = if record == INSPECTION {
                    ("outcome", OUTCOMES[value])
                } else {
                    ("legal_basis", LEGAL_BASES[value])
                };
                let doc = self.doc_mut(device, record);
                set_field(doc, path, value).expect("the record has this string field");
                doc.commit();
            }
            Step::AddEvidence { device, record } => {
                let captured_by = self.devices[device].client.actor.to_hex_string();
                let doc = self.doc_mut(device, record);
                let mut evidence: Vec<Evidence> =
                    autosurgeon::hydrate_prop(&*doc, ROOT, "evidence").expect("an evidence list");
                evidence.push(Evidence {
                    id: format!("ev-{captured_by}-{number}"),
                    kind: "photo".to_owned(),
                    sha256: format!("{number:064x}"),
                    size: 1_024,
                    media_type: "image/jpeg".to_owned(),
                    captured_at: DEVICE_TIME_MS,
                    captured_by,
                    note: "消防通道堵塞".to_owned(),
                    removed: None,
                });
                autosurgeon::reconcile_prop(doc, ROOT, "evidence", &evidence)
                    .expect("writing the evidence list");
                doc.commit();
            }
            Step::AppendEvent { device, kind } => {
                let field_device = &self.devices[device];
                let actor = field_device.client.actor.to_hex_string();
                let officer = field_device.officer.to_owned();
                let doc = self.doc_mut(device, CASE);
                let mut case_file: CaseFile = autosurgeon::hydrate(&*doc).expect("a case file");
                let event_id = format!("{actor}-{number}");
                let fields = BTreeMap::new();
                case_file.append_event(
                    event_id,
                    kind.to_owned(),
                    officer,
                    actor,
                    DEVICE_TIME_MS,
                    fields,
                );
                autosurgeon::reconcile(doc, &case_file).expect("writing the case file");
                doc.commit();
            }
            Step::Sync { device } => {
                self.sync(device).await;
            }
            Step::AnswerLost { device } => {
                let round = self.plan(device);
                self.deliver(device, round.request(), true).await;
                // The round is dropped with its answer: the device keeps its pending changes
                // and its cursor, and sends them again in a later round.
            }
            Step::Duplicated { device, keyed, concurrent, apply_second } => {
                let round = self.plan(device);
                let request = round.request();
                let (first, second) = if concurrent {
                    tokio::join!(
                        self.send(device, request, keyed),
                        self.send(device, request, keyed)
                    )
                } else {
                    let first = self.send(device, request, keyed).await;
                    (first, self.send(device, request, keyed).await)
                };
                self.record_acknowledged(request, &first);
                self.record_acknowledged(request, &second);
                if keyed && !round.is_empty() {
                    assert_eq!(first, second, "a retried key gets the stored answer");
                }
                self.apply(device, round, if apply_second { second } else { first });
            }
            Step::Reordered { first, second } => {
                let first_round = self.plan(first);
                let second_round = self.plan(second);
                let second_answer = self.deliver(second, second_round.request(), true).await;
                let first_answer = self.deliver(first, first_round.request(), true).await;
                self.apply(second, second_round, second_answer);
                self.apply(first, first_round, first_answer);
            }
            Step::Concurrent { first, second } => {
                let first_round = self.plan(first);
                let second_round = self.plan(second);
                let (first_answer, second_answer) = tokio::join!(
                    self.send(first, first_round.request(), true),
                    self.send(second, second_round.request(), true)
                );
                self.record_acknowledged(first_round.request(), &first_answer);
                self.record_acknowledged(second_round.request(), &second_answer);
                self.apply(first, first_round, first_answer);
                self.apply(second, second_round, second_answer);
            }
            Step::Restart => self.restart(),
            Step::DeviceRestart { device } => {
                let field_device = &mut self.devices[device];
                let actor = &field_device.client.actor;
                for device_doc in field_device.docs.values_mut() {
                    let bytes = device_doc.save();
                    let synced_heads = device_doc.synced_heads().to_vec();
                    *device_doc = DeviceDoc::load(device_doc.id(), &bytes, synced_heads, actor)
                        .expect("a stored record loads");
                }
            }
        }
    }

    fn doc_mut(&mut self, device: usize, record: usize) -> &mut AutoCommit {
        let doc_id = self.records[record];
        self.devices[device]
            .docs
            .get_mut(&doc_id)
            .expect("every device received every record before the program")
            .doc_mut()
    }

    fn plan(&mut self, device: usize) -> SyncRound {
        let field_device = &mut self.devices[device];
        SyncRound::plan(field_device.cursor, field_device.docs.values_mut())
    }

    /// Sends one round's request and records what the answer acknowledges.
    async fn deliver(&mut self, device: usize, request: &SyncRequest, keyed: bool) -> SyncResponse {
        let answer = self.send(device, request, keyed).await;
        self.record_acknowledged(request, &answer);
        answer
    }

    /// Sends one round's request as the CLI sends it, with `Idempotency-Key:
    /// base64url(SHA-256(body))` when `keyed` and the request uploads changes.
    async fn send(&self, device: usize, request: &SyncRequest, keyed: bool) -> SyncResponse {
        let body = request.encode();
        let api = self.api();
        let client = &self.devices[device].client;
        let mut builder = api
            .signed(&client.device, Some(&client.token), &Method::POST, "/v1/sync")
            .header(header::CONTENT_TYPE, CONTENT_TYPE);
        if keyed && !request.docs.is_empty() {
            // The digest of a proof's `ath` is the CLI's key: base64url of the body's SHA-256.
            builder = builder.header(IDEMPOTENCY_KEY, sha256_b64(&body));
        }
        let response = api.send(builder.body(Body::from(body)).expect("a valid request")).await;
        assert_eq!(response.status, StatusCode::OK, "{}", String::from_utf8_lossy(&response.body));
        SyncResponse::decode(&response.body).expect("a sync answer")
    }

    fn record_acknowledged(&mut self, request: &SyncRequest, answer: &SyncResponse) {
        assert_eq!(answer.results.len(), request.docs.len(), "one result per uploaded document");
        for (upload, result) in request.docs.iter().zip(&answer.results) {
            assert_eq!(result.doc_id, upload.doc_id, "results come in upload order");
            // Every device stays in its township and scope, and the server never lost what it
            // acknowledged, so no upload is refused and no device is asked to resync.
            let DocOutcome::Accepted { heads, .. } = &result.outcome else {
                panic!("the upload of {} was not accepted: {:?}", upload.doc_id, result.outcome);
            };
            let acknowledged = self.acknowledged.entry(upload.doc_id).or_default();
            // Change chunks, or a new document's one document chunk, as the server parses them.
            for change in parse_upload(upload).expect("an uploaded change") {
                acknowledged.insert(change.hash());
            }
            acknowledged.extend(heads.iter().map(|hash| ChangeHash(*hash)));
        }
    }

    fn apply(&mut self, device: usize, round: SyncRound, answer: SyncResponse) -> RoundOutcome {
        let field_device = &mut self.devices[device];
        let outcome = round
            .apply(answer, &mut field_device.docs, &field_device.client.actor)
            .expect("the answer applies");
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        assert!(outcome.evicted.is_empty(), "{:?}", outcome.evicted);
        // An answer is never older than the request it answers, so no cursor moves back.
        assert!(outcome.cursor >= field_device.cursor, "the cursor moved back");
        field_device.cursor = outcome.cursor;
        outcome
    }

    /// One round trip that goes through; returns whether it moved anything.
    async fn sync(&mut self, device: usize) -> bool {
        let round = self.plan(device);
        let uploads = !round.is_empty();
        let answer = self.deliver(device, round.request(), true).await;
        let outcome = self.apply(device, round, answer);
        uploads || outcome.downloaded > 0 || outcome.more
    }

    /// Stops the server and starts it again on the same data directory: nothing survives but
    /// the files, so every document comes back from SQLite alone.
    fn restart(&mut self) {
        let TestApi { dir, state } = self.api.take().expect("the server runs");
        // Every request has finished, so this is the last handle on the store: dropping it
        // joins the writer thread and closes the database, as a stopped process would.
        assert_eq!(Arc::strong_count(state.store()), 1, "a request still holds the store");
        drop(state);
        self.api = Some(TestApi { state: open_demo_state(dir.path()), dir });
    }

    /// Syncs every device in turn until a whole pass moves nothing.
    async fn sync_until_quiet(&mut self) {
        for _ in 0..MAX_PASSES {
            let mut moved = false;
            for device in 0..self.devices.len() {
                moved |= self.sync(device).await;
            }
            if !moved {
                return;
            }
        }
        panic!("the devices still sync after {MAX_PASSES} passes");
    }

    /// Asserts that every device shows the server's view of every record and that the
    /// server's log holds every acknowledged change exactly once.
    async fn check_converged(&mut self) {
        for doc_id in self.records {
            let served = self.served_view(doc_id).await;
            let store = Arc::clone(self.api().state.store());
            let doc = store.document(doc_id).expect("reading the store").expect("a stored record");
            let stored_view = DocumentView::build(doc_id, &doc.get_heads(), &*doc);
            assert_eq!(served, serde_json::to_value(&stored_view).expect("a view serialises"));
            for (number, field_device) in self.devices.iter_mut().enumerate() {
                let device_doc = field_device.docs.get_mut(&doc_id).expect("a held record");
                assert!(!device_doc.has_pending(), "device {number} has pending changes");
                assert_eq!(device_doc.view(), stored_view, "device {number} differs on {doc_id}");
            }

            let history = self.history(doc_id).await;
            let logged: BTreeSet<ChangeHash> = history.iter().copied().collect();
            assert_eq!(logged.len(), history.len(), "a change appears twice in the history");
            let acknowledged = &self.acknowledged[&doc_id];
            let lost: Vec<&ChangeHash> = acknowledged.difference(&logged).collect();
            assert!(lost.is_empty(), "acknowledged but not in the log of {doc_id}: {lost:?}");
            let merged: BTreeSet<ChangeHash> =
                doc.get_changes(&[]).iter().map(Change::hash).collect();
            assert_eq!(logged, merged, "the log and the merged document of {doc_id} differ");
        }
        // Every change is in Chengguan, so every quiet device has read the whole feed.
        let change_rows = u64::try_from(self.api().change_rows()).expect("a count");
        for (number, field_device) in self.devices.iter().enumerate() {
            assert_eq!(field_device.cursor, change_rows, "device {number} is behind the feed");
        }
    }

    /// The server's view as a supervisor reads it, without the findings of evidence bytes
    /// that were never uploaded.
    async fn served_view(&self, doc_id: DocumentId) -> Value {
        let response = self.api().get(&self.supervisor, &format!("/v1/docs/{doc_id}")).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.json());
        let mut view = response.json();
        view["findings"]
            .as_array_mut()
            .expect("a findings array")
            .retain(|finding| finding["code"] != EVIDENCE_PENDING);
        view
    }

    /// The change hashes of a document's history, in feed order, as a supervisor reads them.
    async fn history(&self, doc_id: DocumentId) -> Vec<ChangeHash> {
        let uri = format!("/v1/docs/{doc_id}/history");
        let response = self.api().get(&self.supervisor, &uri).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.json());
        response
            .json()
            .as_array()
            .expect("a history array")
            .iter()
            .map(|entry| {
                entry["hash"].as_str().expect("a hash").parse().expect("a hex change hash")
            })
            .collect()
    }
}

/// A general-procedure case file of the entrusted matter in Chengguan, written by `client`.
fn chengguan_case(client: &Client, id: DocumentId) -> AutoCommit {
    let party = Party {
        kind: "natural".to_owned(),
        name: "张三".to_owned(),
        id_number: "110101199001011234".to_owned(),
    };
    let mut case_file =
        CaseFile::new(id.to_string(), Procedure::General, ENTRUSTED.to_owned(), party);
    CHENGGUAN.clone_into(&mut case_file.township);
    create_document(&client.actor, &case_file, DEVICE_TIME_MS).expect("creating the case file")
}

/// Runs a program, syncs every device until quiet and checks convergence, then once more
/// after a restart, and checks the database as `fieldcase-server check` does.
async fn converge(devices: usize, steps: &[Step]) {
    let mut township = Township::enroll(devices).await;
    for (number, step) in steps.iter().enumerate() {
        township.run(step, number).await;
    }
    township.sync_until_quiet().await;
    township.check_converged().await;

    township.restart();
    township.check_converged().await;
    let database = township.api().dir.path().join(DATABASE_FILE);
    let report = check_database(&database).expect("checking the database");
    assert!(report.passed(), "{report:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// SECURITY.md §d D-1: whatever the devices edit, and whatever happens to their rounds
    /// (lost answers; duplicated, reordered and simultaneous requests; server and device
    /// restarts), the devices converge on the server's view and the log keeps every
    /// acknowledged change once.
    #[test]
    fn devices_converge_through_the_server_whatever_the_network_does(
        (devices, steps) in program()
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(converge(devices, &steps));
    }
}
