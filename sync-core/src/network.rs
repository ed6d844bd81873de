//! An in-memory server and replicas, for deterministic protocol and convergence tests.
//!
//! `MemoryServer` answers sync requests with the same rules as `fieldcase-server` (strict
//! parse, one merge per document, a feed of changes after the cursor) but keeps everything in
//! memory, so protocol tests need no sockets and no SQLite.

use std::collections::{BTreeMap, HashSet};

use automerge::{ActorId, Automerge, ChangeHash, ROOT};
use autosurgeon::{hydrate, reconcile};
use proptest::prelude::*;

use crate::edit::{TextEdit, edit_text, set_field};
use crate::error::MergeError;
use crate::ids::DocumentId;
use crate::merge::{merge_changes, parse_upload};
use crate::protocol::{DocOutcome, DocResult, DocUpdate, SyncRequest, SyncResponse};
use crate::records::{CaseFile, InspectionRecord, Party, Procedure, Site, create_document};
use crate::replica::{DeviceDoc, SyncRound};
use crate::view::DocumentView;

#[derive(Default)]
struct MemoryServer {
    docs: BTreeMap<DocumentId, Automerge>,
    feed: Vec<(DocumentId, ChangeHash, Vec<u8>)>,
}

impl MemoryServer {
    fn handle(&mut self, request: &SyncRequest) -> SyncResponse {
        self.try_handle(request).expect("merge")
    }

    /// Answers a request, or refuses all of it, storing nothing, as the real server does.
    fn try_handle(&mut self, request: &SyncRequest) -> Result<SyncResponse, MergeError> {
        let (docs, feed) = (self.docs.clone(), self.feed.len());
        let answer = self.answer(request);
        if answer.is_err() {
            self.docs = docs;
            self.feed.truncate(feed);
        }
        answer
    }

    fn answer(&mut self, request: &SyncRequest) -> Result<SyncResponse, MergeError> {
        let mut results = Vec::new();
        let mut uploaded = HashSet::new();
        for upload in &request.docs {
            let doc = self.docs.entry(upload.doc_id).or_default();
            let unknown = upload
                .base_heads
                .iter()
                .any(|hash| doc.get_change_meta_by_hash(&ChangeHash(*hash)).is_none());
            if unknown {
                let heads = doc.get_heads().iter().map(|hash| hash.0).collect();
                results.push(DocResult {
                    doc_id: upload.doc_id,
                    outcome: DocOutcome::Resync { heads },
                });
                continue;
            }
            let changes = parse_upload(upload).expect("test uploads parse");
            uploaded.extend(changes.iter().map(automerge::Change::hash));
            let mut new_changes = merge_changes(doc, upload.doc_id, changes)?;
            let stored = u32::try_from(new_changes.len()).expect("small");
            for change in &mut new_changes {
                self.feed.push((upload.doc_id, change.hash(), change.bytes().into_owned()));
            }
            let heads = doc.get_heads().iter().map(|hash| hash.0).collect();
            results.push(DocResult {
                doc_id: upload.doc_id,
                outcome: DocOutcome::Accepted { heads, stored },
            });
        }
        // A cursor past the end of the feed comes from before a restore: send everything.
        let cursor = usize::try_from(request.cursor).expect("small");
        let cursor = if cursor > self.feed.len() { 0 } else { cursor };
        let mut updates: BTreeMap<DocumentId, Vec<Vec<u8>>> = BTreeMap::new();
        for (doc_id, hash, bytes) in &self.feed[cursor..] {
            if !uploaded.contains(hash) {
                updates.entry(*doc_id).or_default().push(bytes.clone());
            }
        }
        Ok(SyncResponse {
            cursor: self.feed.len() as u64,
            more: false,
            results,
            updates: updates
                .into_iter()
                .map(|(doc_id, changes)| DocUpdate { doc_id, changes })
                .collect(),
            evict: Vec::new(),
        })
    }

    fn view(&self, doc_id: DocumentId) -> DocumentView {
        let doc = &self.docs[&doc_id];
        DocumentView::build(doc_id, &doc.get_heads(), doc)
    }
}

struct Device {
    actor: ActorId,
    cursor: u64,
    docs: BTreeMap<DocumentId, DeviceDoc>,
}

impl Device {
    fn new(number: u8) -> Self {
        Self { actor: ActorId::from([number; 16]), cursor: 0, docs: BTreeMap::new() }
    }

    fn sync(&mut self, server: &mut MemoryServer) {
        let round = SyncRound::plan(self.cursor, self.docs.values_mut());
        let wire_request = SyncRequest::decode(&round.request().encode()).expect("round trip");
        let response =
            SyncResponse::decode(&server.handle(&wire_request).encode()).expect("round trip");
        let outcome = round.apply(response, &mut self.docs, &self.actor).expect("apply");
        assert!(outcome.rejected.is_empty());
        self.cursor = outcome.cursor;
    }

    /// A round whose request reaches the server but whose answer is lost on the way back.
    fn sync_answer_lost(&mut self, server: &mut MemoryServer) {
        let round = SyncRound::plan(self.cursor, self.docs.values_mut());
        server.handle(round.request());
    }

    /// A round whose request the network delivers twice; the device sees the second answer.
    fn sync_request_duplicated(&mut self, server: &mut MemoryServer) {
        let round = SyncRound::plan(self.cursor, self.docs.values_mut());
        server.handle(round.request());
        let response = server.handle(round.request());
        let outcome = round.apply(response, &mut self.docs, &self.actor).expect("apply");
        self.cursor = outcome.cursor;
    }

    fn doc(&mut self, doc_id: DocumentId) -> &mut DeviceDoc {
        self.docs.get_mut(&doc_id).expect("device holds the document")
    }
}

fn party() -> Party {
    Party {
        kind: "natural".to_owned(),
        name: "张三".to_owned(),
        id_number: "110101199001011234".to_owned(),
    }
}

fn new_inspection(device: &mut Device, id_byte: u8) -> DocumentId {
    let doc_id = DocumentId::from_bytes([id_byte; 16]);
    let site =
        Site { name: "五金店".to_owned(), address: "镇南路 8 号".to_owned(), gnss: None };
    let record = InspectionRecord::new(doc_id.to_string(), "M1".to_owned(), party(), site, 0);
    let doc = create_document(&device.actor, &record, 0).expect("create");
    device.docs.insert(doc_id, DeviceDoc::new(doc_id, doc));
    doc_id
}

fn new_case(device: &mut Device, id_byte: u8) -> DocumentId {
    let doc_id = DocumentId::from_bytes([id_byte; 16]);
    let record = CaseFile::new(doc_id.to_string(), Procedure::General, "M1".to_owned(), party());
    let doc = create_document(&device.actor, &record, 0).expect("create");
    device.docs.insert(doc_id, DeviceDoc::new(doc_id, doc));
    doc_id
}

#[test]
fn two_devices_merge_concurrent_edits_through_the_server() {
    let mut server = MemoryServer::default();
    let mut a = Device::new(1);
    let mut b = Device::new(2);
    let doc_id = new_inspection(&mut a, 9);
    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "现场检查。").unwrap();
    a.doc(doc_id).doc_mut().commit();
    a.sync(&mut server);
    b.sync(&mut server);

    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Prepend, "甲：").unwrap();
    set_field(a.doc(doc_id).doc_mut(), "outcome", "rectification_order").unwrap();
    a.doc(doc_id).doc_mut().commit();
    edit_text(b.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "乙 🚒").unwrap();
    set_field(b.doc(doc_id).doc_mut(), "outcome", "case_lead").unwrap();
    b.doc(doc_id).doc_mut().commit();
    a.sync(&mut server);
    b.sync(&mut server);
    a.sync(&mut server);

    let view = server.view(doc_id);
    assert_eq!(a.doc(doc_id).view(), view);
    assert_eq!(b.doc(doc_id).view(), view);
    assert_eq!(view.record["findings"], "甲：现场检查。乙 🚒");
    assert_eq!(view.conflicts.len(), 1);
    assert_eq!(view.conflicts[0].path, "outcome");
    assert!(!a.doc(doc_id).has_pending());
    assert!(!b.doc(doc_id).has_pending());
    assert_eq!(a.doc(doc_id).synced_heads().len(), 2);
}

#[test]
fn a_server_restored_from_a_backup_gets_what_it_lost_without_a_whole_history() {
    let mut server = MemoryServer::default();
    let mut a = Device::new(1);
    let doc_id = new_inspection(&mut a, 4);
    a.sync(&mut server);
    let backup = server.docs[&doc_id].clone();
    let backup_feed = server.feed.len();
    for word in ["一", "二", "三"] {
        edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, word).unwrap();
        a.doc(doc_id).doc_mut().commit();
        a.sync(&mut server);
    }
    // The server loses everything after the backup; the device made one more edit offline.
    server.docs.insert(doc_id, backup);
    server.feed.truncate(backup_feed);
    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "四").unwrap();
    a.doc(doc_id).doc_mut().commit();

    let round = SyncRound::plan(a.cursor, a.docs.values_mut());
    let response = server.handle(round.request());
    assert!(matches!(response.results[0].outcome, DocOutcome::Resync { .. }));
    let outcome = round.apply(response, &mut a.docs, &a.actor).expect("apply");
    assert!(outcome.more);
    let retry = SyncRound::plan(a.cursor, a.docs.values_mut());
    assert_eq!(retry.request().docs[0].changes.len(), 4, "the lost changes and the new one only");
    a.sync(&mut server);
    assert_eq!(a.doc(doc_id).view(), server.view(doc_id));
    assert!(!a.doc(doc_id).has_pending());
}

#[test]
fn a_resync_with_nothing_changed_uploads_nothing_and_downloads_nothing() {
    let mut server = MemoryServer::default();
    let mut a = Device::new(1);
    new_case(&mut a, 3);
    a.sync(&mut server);
    let round = SyncRound::plan(a.cursor, a.docs.values_mut());
    assert!(round.is_empty());
    let response = server.handle(round.request());
    assert!(response.updates.is_empty());
    assert!(round.request().encode().len() < 8);
}

#[test]
fn a_device_restored_from_a_backup_reforks_under_a_new_actor_and_converges_losing_nothing() {
    let mut server = MemoryServer::default();
    let mut a = Device::new(1);
    let mut b = Device::new(2);
    let doc_id = new_inspection(&mut a, 6);
    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "备份前。").unwrap();
    a.doc(doc_id).doc_mut().commit();
    a.sync(&mut server);
    b.sync(&mut server);

    // The backup: the document's bytes, its acknowledged heads and the cursor. One edit is
    // still pending in it; the device uploads it after the backup.
    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "已上传。").unwrap();
    a.doc(doc_id).doc_mut().commit();
    let backup = (a.doc(doc_id).save(), a.doc(doc_id).synced_heads().to_vec(), a.cursor);
    a.sync(&mut server);

    // After the backup the officer writes more and syncs; so does a colleague.
    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "备份后 🚒。").unwrap();
    set_field(a.doc(doc_id).doc_mut(), "outcome", "rectification_order").unwrap();
    a.doc(doc_id).doc_mut().commit();
    a.sync(&mut server);
    edit_text(b.doc(doc_id).doc_mut(), "findings", TextEdit::Prepend, "乙：").unwrap();
    b.doc(doc_id).doc_mut().commit();
    b.sync(&mut server);

    // The phone dies; the replica comes back from the backup, and the officer edits offline.
    let (bytes, synced, cursor) = backup;
    let restored = DeviceDoc::load(doc_id, &bytes, synced, &a.actor).expect("load");
    a.docs.insert(doc_id, restored);
    a.cursor = cursor;
    edit_text(a.doc(doc_id).doc_mut(), "findings", TextEdit::Append, "恢复后。").unwrap();
    set_field(a.doc(doc_id).doc_mut(), "site.name", "五金店（新址）").unwrap();
    a.doc(doc_id).doc_mut().commit();

    let round = SyncRound::plan(a.cursor, a.docs.values_mut());
    let refusal = server.try_handle(round.request()).expect_err("the old actor is spent");
    let old_actor = a.actor.to_hex_string();
    assert!(
        matches!(&refusal, MergeError::DuplicateSeq { actor, .. } if *actor == old_actor),
        "{refusal:?}"
    );

    // Recovery: a new actor; what the server stores of the pending changes is acknowledged,
    // the rest is re-forked and kept.
    a.actor = ActorId::from([11; 16]);
    let stored: HashSet<ChangeHash> =
        server.docs[&doc_id].get_changes(&[]).iter().map(automerge::Change::hash).collect();
    assert_eq!(a.doc(doc_id).acknowledge_stored(&stored), 1, "the edit uploaded after the backup");
    let before = a.doc(doc_id).view().record;
    let new_actor = a.actor.clone();
    let refused = a.doc(doc_id).refork(&new_actor).expect("refork");
    assert_eq!(refused.len(), 1);
    assert_eq!(a.doc(doc_id).view().record, before);

    a.sync(&mut server);
    b.sync(&mut server);
    a.sync(&mut server);
    let view = server.view(doc_id);
    assert_eq!(a.doc(doc_id).view(), view);
    assert_eq!(b.doc(doc_id).view(), view);
    // Both appends were made at the same place concurrently; their order is the merge's.
    let findings = view.record["findings"].as_str().expect("text");
    assert!(findings.starts_with("乙：备份前。已上传。"), "{findings}");
    assert!(findings.contains("备份后 🚒。") && findings.contains("恢复后。"), "{findings}");
    assert_eq!(findings.matches("已上传").count(), 1, "nothing replayed twice: {findings}");
    assert_eq!(view.record["outcome"], "rectification_order");
    assert_eq!(view.record["site"]["name"], "五金店（新址）");
    assert!(!a.doc(doc_id).has_pending());
    // The refused change itself never reaches the server; its edits did, by the new actor.
    assert!(server.docs[&doc_id].get_change_meta_by_hash(&refused[0].hash()).is_none());
}

/// One step of a random edit program.
#[derive(Debug, Clone)]
enum Step {
    Prepend(usize, String),
    Append(usize, String),
    SetOutcome(usize, String),
    AddEvidence(usize, u8),
    AppendEvent(usize, String),
    Sync(usize),
    SyncAnswerLost(usize),
    SyncDuplicated(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let text = prop::sample::select(vec!["a", "消防", "🚒", "x y", "é"]).prop_map(str::to_owned);
    let kinds = prop::sample::select(vec!["file", "investigate", "note", "terminate"])
        .prop_map(str::to_owned);
    prop_oneof![
        (0..3usize, text.clone()).prop_map(|(d, t)| Step::Prepend(d, t)),
        (0..3usize, text.clone()).prop_map(|(d, t)| Step::Append(d, t)),
        (0..3usize, text).prop_map(|(d, t)| Step::SetOutcome(d, t)),
        (0..3usize, any::<u8>()).prop_map(|(d, n)| Step::AddEvidence(d, n)),
        (0..3usize, kinds).prop_map(|(d, k)| Step::AppendEvent(d, k)),
        (0..3usize).prop_map(Step::Sync),
        (0..3usize).prop_map(Step::SyncAnswerLost),
        (0..3usize).prop_map(Step::SyncDuplicated),
    ]
}

fn run_step(
    devices: &mut [Device],
    server: &mut MemoryServer,
    doc_ids: &[DocumentId],
    step: &Step,
    n: usize,
) {
    let doc_id = doc_ids[n % doc_ids.len()];
    match step {
        Step::Sync(d) => devices[*d].sync(server),
        Step::SyncAnswerLost(d) => devices[*d].sync_answer_lost(server),
        Step::SyncDuplicated(d) => devices[*d].sync_request_duplicated(server),
        Step::Prepend(d, text) | Step::Append(d, text) => {
            let at = if matches!(step, Step::Prepend(..)) {
                TextEdit::Prepend
            } else {
                TextEdit::Append
            };
            let path = if n.is_multiple_of(2) { "findings" } else { "facts" };
            let doc = devices[*d].doc(doc_id).doc_mut();
            edit_text(doc, path, at, text).unwrap();
            doc.commit();
        }
        Step::SetOutcome(d, value) => {
            let path = if n.is_multiple_of(2) { "outcome" } else { "legal_basis" };
            let doc = devices[*d].doc(doc_id).doc_mut();
            set_field(doc, path, value).unwrap();
            doc.commit();
        }
        Step::AddEvidence(d, number) => {
            let doc = devices[*d].doc(doc_id).doc_mut();
            let mut evidence: Vec<crate::records::Evidence> =
                autosurgeon::hydrate_prop(&*doc, ROOT, "evidence").unwrap();
            evidence.push(crate::records::Evidence {
                id: format!("ev-{d}-{number}-{}", evidence.len()),
                kind: "photo".to_owned(),
                sha256: "00".repeat(32),
                size: i64::from(*number),
                media_type: "image/jpeg".to_owned(),
                captured_at: 0,
                captured_by: format!("device-{d}"),
                note: String::new(),
                removed: None,
            });
            autosurgeon::reconcile_prop(doc, ROOT, "evidence", &evidence).unwrap();
            doc.commit();
        }
        Step::AppendEvent(d, kind) => {
            let device = &mut devices[*d];
            let actor = device.actor.to_hex_string();
            let doc = device.doc(doc_ids[1]).doc_mut();
            let mut case_file: CaseFile = hydrate(&*doc).unwrap();
            let id = format!("{actor}-{}", case_file.timeline.len());
            case_file.append_event(id, kind.clone(), "o1".to_owned(), actor, 0, BTreeMap::new());
            reconcile(doc, &case_file).unwrap();
            doc.commit();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any edit program on three devices, synced in any order, with answers lost and requests
    /// duplicated on the way, converges: same heads, same view, every change stored once.
    #[test]
    fn replicas_converge_whatever_the_order(steps in prop::collection::vec(step(), 1..40)) {
        let mut server = MemoryServer::default();
        let mut devices = vec![Device::new(1), Device::new(2), Device::new(3)];
        let doc_ids = vec![new_inspection(&mut devices[0], 10), new_case(&mut devices[0], 11)];
        devices[0].sync(&mut server);
        devices[1].sync(&mut server);
        devices[2].sync(&mut server);
        for (n, step) in steps.iter().enumerate() {
            run_step(&mut devices, &mut server, &doc_ids, step, n);
        }
        for _ in 0..2 {
            for device in &mut devices {
                device.sync(&mut server);
            }
        }
        for doc_id in &doc_ids {
            let server_view = server.view(*doc_id);
            for device in &mut devices {
                prop_assert_eq!(&device.doc(*doc_id).view(), &server_view);
                prop_assert!(!device.doc(*doc_id).has_pending());
            }
            // The feed holds every change exactly once, however often it was uploaded.
            let logged: Vec<_> = server.feed.iter().filter(|(id, ..)| id == doc_id).map(|(_, hash, _)| *hash).collect();
            let unique: HashSet<_> = logged.iter().collect();
            prop_assert_eq!(logged.len(), unique.len());
            prop_assert_eq!(logged.len(), server.docs[doc_id].get_changes(&[]).len());
            // Applying every change a second time changes nothing.
            let doc = server.docs.get_mut(doc_id).unwrap();
            let before = doc.get_heads();
            let again = doc.get_changes(&[]);
            prop_assert!(merge_changes(doc, *doc_id, again).unwrap().is_empty());
            prop_assert_eq!(doc.get_heads(), before);
        }
    }
}
