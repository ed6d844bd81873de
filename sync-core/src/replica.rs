//! The device side of sync: what is pending, what to send, how to apply the answer.
//!
//! A device holds each record as a [`DeviceDoc`]: the Automerge document plus the heads the
//! server has acknowledged (`synced_heads`). Everything after those heads is pending. A
//! [`SyncRound`] turns the pending changes of every document into one [`SyncRequest`] and
//! applies the [`SyncResponse`]: it merges the changes the device lacked (one apply call per
//! document) and moves `synced_heads` over everything the server now holds. The caller persists
//! the touched documents and the new cursor in one transaction, so an interrupted sync resumes
//! from the last acknowledged state and re-sends, harmlessly, whatever was not acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::transaction::CommitOptions;
use automerge::{ActorId, AutoCommit, Change, ChangeHash, ReadDoc, TextEncoding};
use automerge::{LoadOptions, OnPartialLoad, SaveOptions, VerificationMode};

use crate::error::ReplicaError;
use crate::ids::DocumentId;
use crate::merge::{
    DOCUMENT_CHUNK_OPS_PER_UPLOAD, document_chunk_heads, heads_after, is_document_chunk,
};
use crate::protocol::{DocOutcome, DocUpload, Hash, SyncRequest, SyncResponse};
use crate::records::{RecordKind, new_document};
use crate::refork::replay_patches;
use crate::view::DocumentView;

/// One record document on a device.
pub struct DeviceDoc {
    id: DocumentId,
    doc: AutoCommit,
    // Invariant: every change these heads cover is stored on the server.
    synced_heads: Vec<ChangeHash>,
}

impl DeviceDoc {
    /// Wraps a document created on this device; nothing of it is on the server yet.
    pub fn new(id: DocumentId, doc: AutoCommit) -> Self {
        Self { id, doc, synced_heads: Vec::new() }
    }

    /// Loads a stored document and sets this device's actor and UTF-8 text indices again,
    /// both of which `load` resets (AUTOMERGE.md P1, P5).
    pub fn load(
        id: DocumentId,
        bytes: &[u8],
        synced_heads: Vec<ChangeHash>,
        actor: &ActorId,
    ) -> Result<Self, ReplicaError> {
        let doc = load_strictly(bytes)?.with_actor(actor.clone());
        Ok(Self { id, doc, synced_heads })
    }

    /// The document id.
    pub fn id(&self) -> DocumentId {
        self.id
    }

    /// The document, to read.
    pub fn doc(&self) -> &AutoCommit {
        &self.doc
    }

    /// The document, to edit; the caller commits.
    pub fn doc_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// The heads the server has acknowledged.
    pub fn synced_heads(&self) -> &[ChangeHash] {
        &self.synced_heads
    }

    /// The document's current heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The record kind, if the document is a record.
    pub fn kind(&self) -> Option<RecordKind> {
        RecordKind::of(&self.doc).ok()
    }

    /// The whole document, compressed, for local storage.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes the server has not acknowledged.
    pub fn pending(&mut self) -> Vec<Change> {
        self.doc.get_changes(&self.synced_heads)
    }

    /// Whether anything is pending.
    pub fn has_pending(&mut self) -> bool {
        let mut heads = self.doc.get_heads();
        heads.sort();
        let mut synced = self.synced_heads.clone();
        synced.sort();
        // The synced set is always a causally closed subset of the document, so equal heads
        // mean equal sets and any difference means something is pending.
        heads != synced
    }

    /// The merged view, as `show --json` prints it.
    pub fn view(&mut self) -> DocumentView {
        let heads = self.doc.get_heads();
        DocumentView::build(self.id, &heads, &self.doc)
    }

    /// Makes the pending changes the server already stores (`stored`, hashes the server listed)
    /// acknowledged, and returns how many joined; the others stay pending.
    ///
    /// The server's changes are causally closed, so the acknowledged set stays closed. A device
    /// restored from a backup calls this before [`Self::refork`], so that edits it had
    /// uploaded before the backup was lost are not replayed a second time.
    pub fn acknowledge_stored(&mut self, stored: &HashSet<ChangeHash>) -> usize {
        let held: Vec<Change> = self
            .doc
            .get_changes(&self.synced_heads)
            .into_iter()
            .filter(|change| stored.contains(&change.hash()))
            .collect();
        self.synced_heads = heads_after(&self.synced_heads, &held);
        held.len()
    }

    /// Re-forks the document under `new_actor` after the server refused its pending changes
    /// (`duplicate_seq`: the old actor's sequence numbers are taken, as after a restore from a
    /// backup), and returns the refused changes for the caller to keep.
    ///
    /// The document becomes a fork at the acknowledged heads, with UTF-8 text indices (the
    /// fork keeps the document's encoding, which [`Self::load`] and `new_document` set) and
    /// `new_actor`; the edits of the refused changes are replayed onto it as one new change,
    /// so the record reads exactly as before and `synced_heads` stay as they were. Edits that
    /// were concurrent with acknowledged ones are replayed after them: a field the two wrote
    /// differently is no longer a conflict but the refused edit's value.
    ///
    /// # Errors
    /// [`ReplicaError::Corrupt`] when the acknowledged heads are not in the document or a patch
    /// does not replay; the document is then unchanged.
    pub fn refork(&mut self, new_actor: &ActorId) -> Result<Vec<Change>, ReplicaError> {
        let corrupt = |err: automerge::AutomergeError| ReplicaError::Corrupt(err.to_string());
        let old_heads = self.doc.get_heads();
        let refused = self.doc.get_changes(&self.synced_heads);
        let mut fork = self.doc.fork_at(&self.synced_heads).map_err(corrupt)?;
        fork.set_actor(new_actor.clone());
        if !refused.is_empty() {
            let patches = self.doc.diff(&self.synced_heads, &old_heads);
            replay_patches(&mut fork, &patches).map_err(corrupt)?;
            // Device time is asserted, never trusted: the replay carries the latest time the
            // refused changes asserted, and no clock is read here.
            let time = refused.iter().map(Change::timestamp).max().unwrap_or_default();
            let message = format!("re-authored {} refused change(s)", refused.len());
            fork.commit_with(CommitOptions::default().with_message(message).with_time(time));
        }
        self.doc = fork;
        Ok(refused)
    }

    /// Whether the device holds every head of a whole document (its header says which).
    fn holds_heads_of(&mut self, document_chunk: &[u8]) -> bool {
        document_chunk_heads(document_chunk).is_ok_and(|heads| {
            heads.iter().all(|head| self.doc.get_change_meta_by_hash(head).is_some())
        })
    }

    /// Merges changes received from the server in one call and returns those that were new.
    fn apply_remote(&mut self, changes: Vec<Change>) -> Result<Vec<Change>, ReplicaError> {
        let new_changes: Vec<Change> = changes
            .into_iter()
            .filter(|change| self.doc.get_change_meta_by_hash(&change.hash()).is_none())
            .collect();
        if new_changes.is_empty() {
            return Ok(new_changes);
        }
        self.doc
            .apply_changes(new_changes.iter().cloned())
            .map_err(|err| ReplicaError::Corrupt(err.to_string()))?;
        if !self.doc.get_missing_deps(&[]).is_empty() {
            return Err(ReplicaError::Incomplete(self.id.to_string()));
        }
        Ok(new_changes)
    }
}

/// One sync round trip: the request built from pending changes, and how to apply the answer.
pub struct SyncRound {
    request: SyncRequest,
    uploaded: HashMap<DocumentId, Uploaded>,
}

/// What a round sent of one document, to acknowledge when the server accepts it.
#[derive(Debug)]
enum Uploaded {
    /// Its pending changes, as change chunks (none for a document the round did not upload).
    Changes(Vec<Change>),
    /// The whole document, as one document chunk: everything up to these heads. Listing its
    /// changes would re-encode every operation (`get_changes`), a third of a device's work in a
    /// first sync, for an acknowledgement the heads already give.
    Through(Vec<ChangeHash>),
}

impl Default for Uploaded {
    fn default() -> Self {
        Self::Changes(Vec::new())
    }
}

/// What a round changed on the device.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    /// The cursor to store with the documents.
    pub cursor: u64,
    /// The server has more to send: run another round.
    pub more: bool,
    /// Changes the server newly stored from this device.
    pub uploaded: usize,
    /// Changes received that the device did not hold.
    pub downloaded: usize,
    /// Uploads the server refused: document, code, message.
    pub rejected: Vec<(DocumentId, String, String)>,
    /// Documents whose bytes or synced heads changed and must be stored.
    pub touched: BTreeSet<DocumentId>,
    /// Documents that left the device's scope and have nothing pending: delete them.
    pub evicted: Vec<DocumentId>,
}

impl SyncRound {
    /// Builds the request: every document with pending changes, and the cursor.
    ///
    /// A document the server never acknowledged goes as one uncompressed document chunk
    /// (`merge::parse_upload_within` takes it apart again); any other as its pending change
    /// chunks. Either way the round remembers the pending changes, which is what the
    /// acknowledgement and the per-sync change count are about.
    pub fn plan<'a>(cursor: u64, docs: impl IntoIterator<Item = &'a mut DeviceDoc>) -> Self {
        let mut uploads = Vec::new();
        let mut uploaded = HashMap::new();
        let mut document_chunk_ops = 0;
        for device_doc in docs {
            if !device_doc.has_pending() {
                continue;
            }
            let heads = device_doc.doc.get_heads();
            if device_doc.synced_heads.is_empty() {
                // Nothing of it is acknowledged, so every operation is pending. The server
                // charges a document chunk's operations to the upload's budget
                // (`merge::DOCUMENT_CHUNK_OP_BYTES`); past this round's share, new documents
                // go as change chunks, which it charges by their bytes.
                let ops = usize::try_from(device_doc.doc.stats().num_ops).unwrap_or(usize::MAX);
                if document_chunk_ops + ops <= DOCUMENT_CHUNK_OPS_PER_UPLOAD {
                    document_chunk_ops += ops;
                    // One document chunk, a fraction of its change chunks' size. Its columns
                    // stay uncompressed (the body is gzipped anyway), which lets the server
                    // refuse deflated columns and bound its work before loading it.
                    let chunk = device_doc
                        .doc
                        .save_with_options(SaveOptions { deflate: false, retain_orphans: false });
                    uploads.push(DocUpload {
                        doc_id: device_doc.id,
                        base_heads: Vec::new(),
                        heads: heads.iter().map(|hash| hash.0).collect(),
                        changes: vec![chunk],
                    });
                    uploaded.insert(device_doc.id, Uploaded::Through(heads));
                    continue;
                }
            }
            let mut pending = device_doc.pending();
            uploads.push(DocUpload {
                doc_id: device_doc.id,
                base_heads: device_doc.synced_heads.iter().map(|hash| hash.0).collect(),
                heads: heads.iter().map(|hash| hash.0).collect(),
                changes: pending.iter_mut().map(|change| change.bytes().into_owned()).collect(),
            });
            uploaded.insert(device_doc.id, Uploaded::Changes(pending));
        }
        Self { request: SyncRequest { cursor, docs: uploads }, uploaded }
    }

    /// The request to send.
    pub fn request(&self) -> &SyncRequest {
        &self.request
    }

    /// Whether there is nothing to upload (the round may still download).
    pub fn is_empty(&self) -> bool {
        self.request.docs.is_empty()
    }

    /// Documents the response updates, so the caller can load them before [`Self::apply`].
    pub fn documents_in(response: &SyncResponse) -> impl Iterator<Item = DocumentId> + '_ {
        response.updates.iter().map(|update| update.doc_id).chain(response.evict.iter().copied())
    }

    /// Applies the server's answer to `docs`, which must hold every uploaded document and
    /// every document of the response that the device already has; new documents are created.
    pub fn apply(
        mut self,
        response: SyncResponse,
        docs: &mut BTreeMap<DocumentId, DeviceDoc>,
        actor: &ActorId,
    ) -> Result<RoundOutcome, ReplicaError> {
        let mut outcome = RoundOutcome {
            cursor: response.cursor,
            more: response.more,
            ..RoundOutcome::default()
        };
        let mut acknowledged: HashMap<DocumentId, Uploaded> = HashMap::new();
        for result in response.results {
            let uploaded = self.uploaded.remove(&result.doc_id).unwrap_or_default();
            match result.outcome {
                DocOutcome::Accepted { stored, .. } => {
                    outcome.uploaded += stored as usize;
                    acknowledged.insert(result.doc_id, uploaded);
                }
                DocOutcome::Resync { heads } => {
                    // Keep as acknowledged only the server's heads this device also holds: the
                    // next round then uploads exactly the changes the server may lack.
                    if let Some(device_doc) = docs.get_mut(&result.doc_id) {
                        let shared: Vec<ChangeHash> = hashes_from_wire(&heads)
                            .into_iter()
                            .filter(|hash| device_doc.doc.get_change_meta_by_hash(hash).is_some())
                            .collect();
                        device_doc.synced_heads = shared;
                        outcome.touched.insert(result.doc_id);
                        outcome.more = true;
                    }
                }
                DocOutcome::Rejected { code, message, quarantined } => {
                    // Quarantined changes are held by the server for review: delivered, so
                    // nothing of them stays pending and the document may be evicted.
                    if quarantined {
                        acknowledged.insert(result.doc_id, uploaded);
                    }
                    outcome.rejected.push((result.doc_id, code, message));
                }
            }
        }
        let mut received: HashMap<DocumentId, Vec<Change>> = HashMap::new();
        for update in response.updates {
            let mut chunks = update.changes.into_iter().peekable();
            // A document the device lacks may come whole, as the upload that created it left
            // it: loaded, not applied change by change.
            if !docs.contains_key(&update.doc_id)
                && let Some(whole) = chunks.next_if(|bytes| is_document_chunk(bytes))
            {
                let mut device_doc = DeviceDoc::load(update.doc_id, &whole, Vec::new(), actor)?;
                device_doc.synced_heads = device_doc.doc.get_heads();
                let changes = device_doc.doc.stats().num_changes;
                outcome.downloaded += usize::try_from(changes).unwrap_or(usize::MAX);
                outcome.touched.insert(update.doc_id);
                docs.insert(update.doc_id, device_doc);
            }
            // A whole document whose heads the device holds brings nothing: its own upload of
            // an earlier round, coming back on a later page, is not loaded to find that out.
            let mut held = docs.get_mut(&update.doc_id);
            let changes = changes_in(chunks.filter(|bytes| {
                !(is_document_chunk(bytes)
                    && held.as_mut().is_some_and(|held| held.holds_heads_of(bytes)))
            }))?;
            if changes.is_empty() {
                continue;
            }
            let device_doc = docs
                .entry(update.doc_id)
                .or_insert_with(|| DeviceDoc::new(update.doc_id, new_document(actor)));
            let new_changes = device_doc.apply_remote(changes)?;
            outcome.downloaded += new_changes.len();
            received.entry(update.doc_id).or_default().extend(new_changes);
        }
        let ids: BTreeSet<DocumentId> =
            acknowledged.keys().chain(received.keys()).copied().collect();
        for id in ids {
            let Some(device_doc) = docs.get_mut(&id) else { continue };
            let (base, mut added) = match acknowledged.remove(&id).unwrap_or_default() {
                Uploaded::Through(heads) => (heads, Vec::new()),
                Uploaded::Changes(changes) => (device_doc.synced_heads.clone(), changes),
            };
            added.extend(received.remove(&id).unwrap_or_default());
            device_doc.synced_heads = heads_after(&base, &added);
            outcome.touched.insert(id);
        }
        for id in response.evict {
            if docs.get_mut(&id).is_some_and(|device_doc| device_doc.pending().is_empty()) {
                outcome.evicted.push(id);
            }
        }
        Ok(outcome)
    }
}

/// The changes a [`DocUpdate`](crate::protocol::DocUpdate)'s chunks hold: its change chunks,
/// and every change of a whole document (which a device that holds part of it already,
/// restored from a backup with its cursor starting over, applies as changes).
///
/// # Errors
/// [`ReplicaError::Corrupt`] when a chunk does not parse.
pub fn changes_in<B: AsRef<[u8]>>(
    chunks: impl IntoIterator<Item = B>,
) -> Result<Vec<Change>, ReplicaError> {
    let mut changes = Vec::new();
    for chunk in chunks {
        let bytes = chunk.as_ref();
        if is_document_chunk(bytes) {
            changes.extend(load_strictly(bytes)?.get_changes(&[]));
        } else {
            changes.push(
                Change::try_from(bytes).map_err(|err| ReplicaError::Corrupt(err.to_string()))?,
            );
        }
    }
    Ok(changes)
}

/// Loads saved bytes whole, heads checked, with UTF-8 text indices (which `load` resets,
/// AUTOMERGE.md P5); the actor is still to set (P1).
fn load_strictly(bytes: &[u8]) -> Result<AutoCommit, ReplicaError> {
    let options = LoadOptions::new()
        .on_partial_load(OnPartialLoad::Error)
        .verification_mode(VerificationMode::Check)
        .text_encoding(TextEncoding::Utf8CodeUnit);
    AutoCommit::load_with_options(bytes, options)
        .map_err(|err| ReplicaError::Corrupt(err.to_string()))
}

/// Converts wire hashes to change hashes.
pub fn hashes_from_wire(hashes: &[Hash]) -> Vec<ChangeHash> {
    hashes.iter().map(|hash| ChangeHash(*hash)).collect()
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable as _;
    use automerge::{ObjType, ROOT};

    use super::*;
    use crate::merge::{UploadLimits, parse_upload_within};
    use crate::protocol::{DocResult, DocUpdate};

    /// A document the server never saw: one change inserting `chars` characters.
    fn new_document(seed: u8, chars: usize) -> DeviceDoc {
        let mut doc = AutoCommit::new_with_encoding(TextEncoding::Utf8CodeUnit)
            .with_actor(ActorId::from([seed; 16]));
        let text = doc.put_object(ROOT, "narrative", ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, &"a".repeat(chars)).unwrap();
        doc.commit();
        DeviceDoc::new(DocumentId::from_bytes([seed; 16]), doc)
    }

    #[test]
    fn new_documents_past_the_rounds_document_chunk_share_go_as_change_chunks() {
        // Arrange: six new documents of 90,000 operations; five fit the share.
        let per_document = 90_000;
        let count = DOCUMENT_CHUNK_OPS_PER_UPLOAD / per_document + 1;
        let mut docs: Vec<DeviceDoc> = (1..=count)
            .map(|seed| new_document(u8::try_from(seed).unwrap(), per_document))
            .collect();

        // Act
        let round = SyncRound::plan(0, docs.iter_mut());

        // Assert: the chunk type byte follows the magic and the checksum; 0 is a document.
        let as_document: Vec<bool> =
            round.request().docs.iter().map(|upload| upload.changes[0][8] == 0).collect();
        assert_eq!(as_document, [true, true, true, true, true, false]);
        // The server takes the whole round within its default budget.
        let limits = UploadLimits::default();
        let (mut budget, mut allowance) = (limits.max_inflated_bytes, usize::MAX);
        for upload in &round.request().docs {
            parse_upload_within(upload, limits, &mut budget, &mut allowance).unwrap();
        }
    }

    #[test]
    fn an_accepted_document_chunk_acknowledges_the_heads_it_was_planned_at() {
        // Arrange: a new document goes up whole; the device edits it while the round is out.
        let mut device_doc = new_document(7, 10);
        let round = SyncRound::plan(0, [&mut device_doc]);
        let planned = device_doc.heads();
        let narrative = device_doc.doc.get(ROOT, "narrative").unwrap().unwrap().1;
        device_doc.doc_mut().splice_text(&narrative, 0, 0, "b").unwrap();
        device_doc.doc_mut().commit();
        let id = device_doc.id();
        let accepted = SyncResponse {
            cursor: 1,
            more: false,
            results: vec![DocResult {
                doc_id: id,
                outcome: DocOutcome::Accepted {
                    heads: planned.iter().map(|hash| hash.0).collect(),
                    stored: 1,
                },
            }],
            updates: Vec::new(),
            evict: Vec::new(),
        };
        let mut docs = BTreeMap::from([(id, device_doc)]);

        // Act
        let outcome = round.apply(accepted, &mut docs, &ActorId::from([7; 16])).unwrap();

        // Assert: acknowledged up to the planned heads; only the later edit stays pending.
        let device_doc = docs.get_mut(&id).unwrap();
        assert_eq!((outcome.uploaded, device_doc.synced_heads()), (1, planned.as_slice()));
        let pending = device_doc.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].deps(), planned.as_slice());
    }

    /// An answer carrying `chunks` for document `id`, and nothing else.
    fn feed_of(id: DocumentId, chunks: Vec<Vec<u8>>) -> SyncResponse {
        SyncResponse {
            cursor: 9,
            more: false,
            results: Vec::new(),
            updates: vec![DocUpdate { doc_id: id, changes: chunks }],
            evict: Vec::new(),
        }
    }

    /// Another device's document as the server saved it when created, then one more change.
    fn created_elsewhere() -> (DeviceDoc, Vec<u8>, Vec<u8>) {
        let mut origin = new_document(3, 40);
        let saved = origin.save();
        let narrative = origin.doc.get(ROOT, "narrative").unwrap().unwrap().1;
        origin.doc_mut().splice_text(&narrative, 0, 0, "b").unwrap();
        origin.doc_mut().commit();
        let mut later = origin.pending().pop().unwrap();
        (origin, saved, later.bytes().into_owned())
    }

    #[test]
    fn a_whole_document_the_device_lacks_is_loaded_and_what_follows_applied() {
        // Arrange
        let (mut origin, saved, later) = created_elsewhere();
        let id = origin.id();
        let actor = ActorId::from([9; 16]);
        let mut docs = BTreeMap::new();

        // Act
        let round = SyncRound::plan(0, []);
        let outcome = round.apply(feed_of(id, vec![saved, later]), &mut docs, &actor).unwrap();

        // Assert: both changes held and acknowledged, nothing pending, the device's own actor.
        let device_doc = docs.get_mut(&id).unwrap();
        assert_eq!((outcome.downloaded, outcome.cursor), (2, 9));
        assert!(outcome.touched.contains(&id));
        assert_eq!(device_doc.heads(), origin.heads());
        assert_eq!(device_doc.synced_heads(), origin.heads().as_slice());
        assert!(!device_doc.has_pending());
        assert_eq!(device_doc.doc_mut().get_actor(), &actor);
    }

    #[test]
    fn a_whole_document_the_device_holds_is_not_applied_again() {
        // Arrange: the device holds the whole document already, and then part of it only.
        let (origin, saved, _) = created_elsewhere();
        let id = origin.id();
        let actor = ActorId::from([9; 16]);
        let mut holder = DeviceDoc::load(id, &saved, Vec::new(), &actor).unwrap();
        let held = holder.heads();
        holder.synced_heads = held.clone();
        let mut docs = BTreeMap::from([(id, holder)]);

        // Act
        let outcome =
            SyncRound::plan(0, []).apply(feed_of(id, vec![saved]), &mut docs, &actor).unwrap();

        // Assert: nothing downloaded, nothing touched.
        assert_eq!(outcome.downloaded, 0);
        assert!(outcome.touched.is_empty());
        assert_eq!(docs.get_mut(&id).unwrap().heads(), held);
    }

    #[test]
    fn a_whole_document_a_device_holds_in_part_is_applied_as_its_changes() {
        // Arrange: the device was restored from a backup holding an older copy of a document
        // made of two changes; the server sends the whole document.
        let (mut origin, _, _) = created_elsewhere();
        let id = origin.id();
        let first = origin.doc.get_changes(&[])[0].clone();
        let mut restored = DeviceDoc::new(id, AutoCommit::new());
        restored.doc.apply_changes([first.clone()]).unwrap();
        restored.synced_heads = vec![first.hash()];
        let whole = origin.save();
        let mut docs = BTreeMap::from([(id, restored)]);

        // Act
        let outcome = SyncRound::plan(0, [])
            .apply(feed_of(id, vec![whole]), &mut docs, &ActorId::from([9; 16]))
            .unwrap();

        // Assert: only the missing change was new; the copies converge.
        let device_doc = docs.get_mut(&id).unwrap();
        assert_eq!(outcome.downloaded, 1);
        assert_eq!(device_doc.heads(), origin.heads());
        assert_eq!(device_doc.synced_heads(), origin.heads().as_slice());
    }
}
