//! The durable store: the append-only change log and the document table in one SQLite file,
//! with a bounded cache of loaded documents in front of it. The only module that contains SQL.
//!
//! One writer thread (`writer`) owns the write connection and commits every job that waits in
//! one transaction, a savepoint per job: it takes the touched documents out of the cache,
//! merges, writes, and puts the documents back only after `COMMIT`, so a change is
//! acknowledged only once it is durable and a failed job leaves both the database and the
//! cache as they were. Readers use a small pool of read-only connections and never wait for
//! the writer (WAL).

pub(crate) mod blobs;
mod cache;
pub(crate) mod changes;
pub mod check;
pub(crate) mod creations;
pub(crate) mod deadlines;
pub(crate) mod device_documents;
pub(crate) mod devices;
pub(crate) mod documents;
pub(crate) mod findings;
pub(crate) mod idempotency;
pub(crate) mod numbers;
pub(crate) mod public;
pub(crate) mod quarantine;
pub(crate) mod quarterly;
pub(crate) mod registry;
pub(crate) mod reports;
pub(crate) mod review;
pub(crate) mod review_flags;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use rusqlite::{Connection, Transaction};
use sync_core::error::MergeError;
use sync_core::ids::DocumentId;
use sync_core::merge::{ChangeFacts, LoadedDocument, ParsedUpload, merge_changes};
use sync_core::records::Record;
use tokio::sync::oneshot;

use crate::store::cache::DocumentCache;
pub(crate) use crate::store::changes::HistoryEntry;
pub(crate) use crate::store::documents::{DocumentSummary, StoredScope};
use crate::store::documents::{DocumentWrite, Projection, Snapshot};
use crate::store::writer::{Reply, Work, WriteJob};
pub(crate) use crate::store::writer::{Weight, WriteContext};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "fieldcase.sqlite";

/// Documents kept loaded; at a few megabytes for a large record, this bounds the cache to
/// roughly a gigabyte in the worst case and far less in practice.
const CACHE_CAPACITY: NonZeroUsize = NonZeroUsize::new(512).expect("non-zero");

/// Idle reader connections kept open between requests; more are opened under load.
const IDLE_READERS: usize = 8;

/// Changes accumulated after a document's snapshot before a fresh one is written: a load then
/// replays at most this many changes, while a sync that adds a few changes does not rewrite
/// the whole document.
pub(crate) const SNAPSHOT_INTERVAL: i64 = 64;

/// 64 MiB: the stored change bytes one document may reach (SECURITY.md B-27); a larger
/// record is a bug or an attack, and every load of it would cost that much.
pub(crate) const MAX_DOCUMENT_BYTES: i64 = 64 * 1024 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (including a full disk or a lock that could not be taken).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The uploaded changes cannot be merged into the document; nothing was written.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// An uploaded change is already stored under another document.
    #[error("change {hash} is already stored for another document")]
    DuplicateChange {
        /// Hex hash of the change.
        hash: String,
    },
    /// A change the log cannot represent.
    #[error("change {hash} cannot be stored: {reason}")]
    Unstorable {
        /// Hex hash of the change.
        hash: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Stored bytes of a document do not load; the change log needs inspection.
    #[error("stored data of document {doc_id} does not load: {reason}")]
    Corrupt {
        /// The document.
        doc_id: DocumentId,
        /// What failed.
        reason: String,
    },
    /// The database was migrated by a newer build of the server.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    NewerSchema {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The request is refused for a reason the client can act on; nothing was written.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A file of the store could not be written or a thread not started.
    #[error("io: {0}")]
    Io(String),
    /// A write job panicked; the writer rolled it back.
    #[error("a write job panicked; nothing of it was stored")]
    JobPanicked,
    /// The writer thread is gone (it only stops when the store is dropped).
    #[error("the store's writer has stopped")]
    WriterStopped,
    /// SQLite did not accept a pragma the store depends on.
    #[error("sqlite refused {pragma}: it answered {actual}")]
    Pragma {
        /// The pragma and the value asked for.
        pragma: &'static str,
        /// What SQLite reported instead.
        actual: String,
    },
}

/// Why the store refused a request the client can correct; each maps to one API error code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// An object with that id already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// A referenced object does not exist.
    #[error("{0}")]
    UnknownReference(String),
    /// The object named in the path does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The same idempotency key was used with another body.
    #[error("idempotency key {0:?} was used with another body; nothing was stored")]
    IdempotencyConflict(String),
    /// The document would pass its quota of stored change bytes.
    #[error("{0}")]
    DocumentQuota(String),
    /// The enrollment code is unknown, used or expired.
    #[error("the enrollment code is unknown, already used or expired")]
    InvalidEnrollmentCode,
    /// The device key is already enrolled.
    #[error("this device key is already enrolled")]
    DeviceAlreadyEnrolled,
    /// A new change carries an actor not registered to the uploading device.
    #[error("{0}")]
    ForeignActor(String),
    /// The document is outside the caller's township or scope.
    #[error("{0}")]
    OutOfScope(String),
    /// A server-authored edit names a path, value or event the record cannot take.
    #[error("{0}")]
    InvalidEdit(String),
    /// The quarterly report was already submitted.
    #[error("{0}")]
    AlreadySubmitted(String),
    /// The quarterly report must be submitted before it is acknowledged.
    #[error("{0}")]
    NotSubmitted(String),
    /// The quarterly report was already acknowledged.
    #[error("{0}")]
    AlreadyAcknowledged(String),
}

/// Who uploads changes: written on every change row they add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attribution {
    /// The uploading device.
    pub(crate) device: Option<String>,
    /// Its officer.
    pub(crate) officer: Option<String>,
    /// The officer's certificate at upload time.
    pub(crate) certificate: Option<String>,
}

/// The authorization of one upload, checked by the writer before anything is written.
///
/// The checks run under the writer lock, so the stored state they read cannot change before
/// the transaction that follows them.
pub(crate) trait UploadPolicy {
    /// Who uploads, recorded on every new change.
    fn attribution(&self) -> &Attribution;
    /// May the caller change this existing document? Decided on the document's stored row
    /// (fixed at its first upload), never on the uploaded content; called before merging.
    fn check_existing(&self, doc_id: DocumentId, stored: &StoredScope) -> Result<(), Refusal>;
    /// May the caller create this document? Called with the record hydrated from the merged,
    /// not yet written, document (or why it is not a record), hydrated once per merge.
    fn check_created(
        &self,
        doc_id: DocumentId,
        merged: Result<&Record, &str>,
    ) -> Result<(), Refusal>;
    /// May the caller upload a change by this actor (a change the server does not hold)?
    fn check_actor(&self, actor: &ActorId) -> Result<(), Refusal>;
}

/// Which documents a reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Every document (supervisors, admins).
    All,
    /// Only the documents whose stored township is this one; `None` sees nothing.
    Township(Option<String>),
}

impl Visibility {
    /// Whether a document stored with `township` is visible.
    pub(crate) fn sees(&self, township: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Township(mine) => mine.is_some() && mine.as_deref() == township,
        }
    }

    /// The SQL parameters: (sees everything, township to match).
    pub(crate) fn sql(&self) -> (bool, Option<&str>) {
        match self {
            Self::All => (true, None),
            Self::Township(township) => (false, township.as_deref()),
        }
    }
}

/// One document's uploaded changes, parsed.
pub(crate) struct DocumentUpload {
    /// The document.
    pub(crate) doc_id: DocumentId,
    /// The change chunks, each parsed strictly on its own, or the document chunk, loaded.
    pub(crate) changes: ParsedUpload,
    /// The changes merged ahead of the writer, into an empty document for an upload that
    /// claims to create the document or into the stored document's current state; used only if
    /// the store still holds what the merge started from.
    pub(crate) premerged: Option<Premerged>,
}

/// An upload merged, projected and (for a new document) saved on the thread that parsed it
/// rather than on the writer: a new document's changes merged into an empty document (or its
/// loaded document chunk, which is that merge), or a stored document's new changes merged into
/// a copy of its current state.
///
/// Such a merge depends on nothing but the state it started from, so when the writer finds
/// the store still at that state (no row for a new document, the same heads for a stored one)
/// it takes this result instead of merging again: the same changes, the same checks (actors,
/// scope, quota) and the same writes follow. The merge, the projection and the save were most
/// of the writer's time in a first sync, and the merge and projection of stored documents half
/// of it in a resync (BENCHMARKS.md); the request threads run in parallel while the writer is
/// one.
pub(crate) struct Premerged {
    // The heads of the stored document the merge started from; empty for a new document.
    base: Vec<ChangeHash>,
    // The change chunks merged here; `None` when the upload's loaded document chunk is the
    // merge, which the writer takes from the upload.
    merged: Option<(Automerge, NewChanges)>,
    // A new document saved (`Automerge::save`): its first snapshot, and its creation
    // (`store::creations`), which stores the bytes of the changes of a document chunk.
    saved: Option<Vec<u8>>,
    projection: Projection,
    // Counts the document against [`MAX_PREMERGED`] until the writer takes it.
    _slot: PremergedSlot,
}

/// The new changes of one document, and what the change log stores of each.
#[derive(Default)]
struct NewChanges {
    facts: Vec<ChangeFacts>,
    // The stored bytes of each change (`Change::bytes`), or none for a change of a document
    // chunk, whose creation holds it.
    bytes: Vec<Vec<u8>>,
}

impl NewChanges {
    /// Changes that `merge_changes` applied, with their encoded bytes.
    fn extend(&mut self, changes: Vec<Change>) {
        for mut change in changes {
            self.facts.push(ChangeFacts::of(&change));
            self.bytes.push(change.bytes().into_owned());
        }
    }

    /// The changes of a loaded document chunk, whose bytes its creation holds.
    fn of_document(facts: Vec<ChangeFacts>) -> Self {
        let bytes = vec![Vec::new(); facts.len()];
        Self { facts, bytes }
    }

    fn len(&self) -> usize {
        self.facts.len()
    }

    fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }
}

/// Places for documents merged ahead of the writer and not taken by it yet: each holds a
/// document in memory while its request waits for the writer (50 devices uploading at once
/// held about 5,000, some 100 MB, in scenario C). Past them, the writer merges as before.
const MAX_PREMERGED: usize = 1024;

/// Operations one place holds. A record of the bench's workload has about 1,200.
const OPS_PER_PREMERGED: usize = 4096;

/// Change bytes one place holds, for the operations that hold long strings or bytes. A record
/// of the bench's workload has about 3.5 KB.
const BYTES_PER_PREMERGED: usize = 64 * 1024;

/// The places taken by documents merged ahead of the writer.
static PREMERGED: Places = Places::new(MAX_PREMERGED);

/// What a premerged document holds in memory, as the places count it: a document takes as
/// many places as its operations or its change bytes need, so that the places bound memory and
/// not only documents, a stored document of any size included.
#[derive(Debug, Clone, Copy)]
struct Size {
    ops: usize,
    bytes: usize,
}

impl Size {
    fn places(self) -> usize {
        self.ops.div_ceil(OPS_PER_PREMERGED).max(self.bytes.div_ceil(BYTES_PER_PREMERGED)).max(1)
    }
}

/// A bounded number of places, taken and given back without a lock.
struct Places {
    taken: AtomicUsize,
    max: usize,
}

impl Places {
    const fn new(max: usize) -> Self {
        Self { taken: AtomicUsize::new(0), max }
    }

    /// The places a document of `size` needs, if that many are free.
    fn take(&'static self, size: Size) -> Option<PremergedSlot> {
        let places = size.places();
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                taken.checked_add(places).filter(|&wanted| wanted <= self.max)
            })
            .ok()
            .map(|_| PremergedSlot { places, of: self })
    }
}

/// The places one premerged document holds, given back when dropped.
struct PremergedSlot {
    places: usize,
    of: &'static Places,
}

impl Drop for PremergedSlot {
    fn drop(&mut self) {
        self.of.taken.fetch_sub(self.places, Ordering::AcqRel);
    }
}

/// The operations and raw bytes of change chunks.
fn size_of_changes(changes: &[Change]) -> Size {
    Size {
        ops: changes.iter().map(Change::len).sum(),
        bytes: changes.iter().map(|change| change.raw_bytes().len()).sum(),
    }
}

/// The operations of a document.
fn ops_of(doc: &Automerge) -> usize {
    usize::try_from(doc.stats().num_ops).unwrap_or(usize::MAX)
}

impl Premerged {
    /// Merges change chunks into an empty document, or takes a loaded document chunk as that
    /// merge, which it is (`merge::parse_upload_within`), so its changes are not applied a
    /// second time; then projects and saves the document.
    ///
    /// `None` when the merge fails or [`merge_changes`] would refuse the document chunk's
    /// changes (more than one root, an (actor, seq) pair twice), so that the writer merges
    /// them and answers its own error, or when the places ([`MAX_PREMERGED`]) it needs are
    /// taken.
    pub(crate) fn of(doc_id: DocumentId, upload: &ParsedUpload) -> Option<Self> {
        match upload {
            ParsedUpload::Changes(changes) => {
                let slot = PREMERGED.take(size_of_changes(changes))?;
                let mut doc = documents::empty_document();
                let new_changes = merged_into(&mut doc, doc_id, changes.clone())?;
                let projection = Projection::of(&doc);
                let saved = Some(doc.save());
                let merged = Some((doc, new_changes));
                Some(Self { base: Vec::new(), merged, saved, projection, _slot: slot })
            }
            ParsedUpload::Document(loaded) => {
                let facts = &loaded.facts;
                let roots = facts.iter().filter(|change| change.deps.is_empty()).count();
                let mut seqs = HashSet::new();
                let unique_seqs =
                    facts.iter().all(|change| seqs.insert((&change.actor, change.seq)));
                if roots != 1 || !unique_seqs {
                    return None;
                }
                // Its bytes are bounded by the request's body, its operations by its header.
                let slot = PREMERGED.take(Size { ops: ops_of(&loaded.doc), bytes: 0 })?;
                let projection = Projection::of(&loaded.doc);
                let saved = Some(loaded.doc.save());
                Some(Self { base: Vec::new(), merged: None, saved, projection, _slot: slot })
            }
        }
    }

    /// Merges `new`, changes `stored` lacks ([`new_to`]), into a copy of `stored`, a stored
    /// document's current state holding `stored_bytes` of changes, and projects the result; the
    /// shared `stored` is let go before the merge, so that the writer finds it unshared if it
    /// merges the document itself.
    ///
    /// `None` when the merge fails (the writer answers that) or when the places
    /// ([`MAX_PREMERGED`]) this document needs are taken.
    fn onto(
        doc_id: DocumentId,
        stored: Arc<Automerge>,
        stored_bytes: usize,
        new: Vec<Change>,
    ) -> Option<Self> {
        let added = size_of_changes(&new);
        let size = Size {
            ops: ops_of(&stored).saturating_add(added.ops),
            bytes: stored_bytes.saturating_add(added.bytes),
        };
        let slot = PREMERGED.take(size)?;
        let base = stored.get_heads();
        let mut doc = Automerge::clone(&stored);
        drop(stored);
        let new_changes = merged_into(&mut doc, doc_id, new)?;
        let projection = Projection::of(&doc);
        Some(Self { base, merged: Some((doc, new_changes)), saved: None, projection, _slot: slot })
    }

    /// Whether the store is still where this merge started: no document for a new one, the
    /// same heads (so the same changes, so the same state) for a stored one.
    fn starts_from(
        &self,
        connection: &Connection,
        doc_id: DocumentId,
        stored: bool,
    ) -> Result<bool, StoreError> {
        Ok(if stored {
            !self.base.is_empty() && documents::heads(connection, doc_id)? == self.base
        } else {
            self.base.is_empty()
        })
    }

    /// The document as the writer takes it when the store is where this merge started: this
    /// merge, its changes and, for a new document, its creation.
    fn into_working(
        self,
        doc_id: DocumentId,
        upload: ParsedUpload,
    ) -> Result<WorkingDocument, StoreError> {
        let created = self.base.is_empty();
        let (doc, new_changes, holds_change_bytes) = match (self.merged, upload) {
            (Some((doc, new_changes)), _) => (doc, new_changes, false),
            (None, ParsedUpload::Document(loaded)) => {
                let LoadedDocument { doc, facts } = *loaded;
                (doc, NewChanges::of_document(facts), true)
            }
            // Not built this way (`Self::of`); merged as if nothing had been premerged.
            (None, ParsedUpload::Changes(changes)) => {
                let mut doc = documents::empty_document();
                let mut new_changes = NewChanges::default();
                new_changes.extend(merge_changes(&mut doc, doc_id, changes)?);
                let mut item = WorkingDocument::new(doc_id, doc, true);
                item.new_changes = new_changes;
                return Ok(item);
            }
        };
        let covered = new_changes.len();
        let mut item = WorkingDocument::new(doc_id, doc, created);
        item.new_changes = new_changes;
        item.projection = Some(self.projection);
        item.saved =
            self.saved.map(|bytes| SavedCreation { bytes, changes: covered, holds_change_bytes });
        item.premerged = true;
        Ok(item)
    }
}

/// The uploaded changes `stored` lacks, when there are any and each depends only on changes
/// stored or uploaded: what merging them into `stored` would apply. `None` for a replay or a
/// gap, before anything is copied for them.
fn new_to(stored: &Automerge, changes: &[Change]) -> Option<Vec<Change>> {
    let held = |hash: &ChangeHash| stored.get_change_meta_by_hash(hash).is_some();
    let new: Vec<Change> = changes.iter().filter(|change| !held(&change.hash())).cloned().collect();
    let uploaded: HashSet<ChangeHash> = new.iter().map(Change::hash).collect();
    let dependencies_known =
        new.iter().flat_map(Change::deps).all(|dep| uploaded.contains(dep) || held(dep));
    (!new.is_empty() && dependencies_known).then_some(new)
}

/// Merges `changes` into `doc`; `None` when the merge fails or nothing is new.
fn merged_into(
    doc: &mut Automerge,
    doc_id: DocumentId,
    changes: Vec<Change>,
) -> Option<NewChanges> {
    let applied = merge_changes(doc, doc_id, changes).ok()?;
    if applied.is_empty() {
        return None;
    }
    let mut new_changes = NewChanges::default();
    new_changes.extend(applied);
    Some(new_changes)
}

/// What a merge did to one document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MergedDocument {
    /// The document.
    pub(crate) doc_id: DocumentId,
    /// The server's heads after the merge.
    pub(crate) heads: Vec<ChangeHash>,
    /// How many uploaded changes were new and are now stored.
    pub(crate) stored: usize,
    /// Whether the writer took the merge made ahead of it (`Premerged`).
    pub(crate) premerged: bool,
}

/// How to open the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    /// An operator quota on the database file, in bytes (SQLite `max_page_count` on the
    /// writer): writes past it fail with `storage_full` while reads go on.
    pub max_db_size: Option<u64>,
}

/// The change log and documents of one server, shared by every request.
///
/// Shared behind an `Arc`. Every method but [`Store::open`] (called once at startup) and
/// [`Store::submit`] blocks on SQLite or Automerge work and must run in `spawn_blocking`,
/// never on an async worker thread.
pub struct Store {
    path: PathBuf,
    // Invariant: `Some` until drop, which closes it so that the writer thread ends.
    jobs: Option<Sender<Box<dyn WriteJob>>>,
    writer: Option<JoinHandle<()>>,
    idle_readers: Mutex<Vec<Connection>>,
    cache: Arc<DocumentCache>,
}

impl Store {
    /// Opens the database at `path`, creating and migrating it as needed.
    ///
    /// # Errors
    /// Fails when the file cannot be opened or written, when WAL mode is refused, or when a
    /// newer build has migrated the schema past what this build knows.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens the database at `path` with `options`, and starts the writer thread.
    ///
    /// # Errors
    /// As [`Store::open`], and when the thread cannot be started.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let connection = schema::open_writer(path, options.max_db_size)?;
        let cache = Arc::new(DocumentCache::new(CACHE_CAPACITY));
        let (sender, receiver) = mpsc::channel::<Box<dyn WriteJob>>();
        let writer_cache = Arc::clone(&cache);
        let writer = std::thread::Builder::new()
            .name("fieldcase-writer".to_owned())
            .spawn(move || writer::run(connection, &receiver, &writer_cache))
            .map_err(|err| StoreError::Io(err.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            jobs: Some(sender),
            writer: Some(writer),
            idle_readers: Mutex::new(Vec::new()),
            cache,
        })
    }

    /// The database file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` as one job of the writer's next group and awaits its answer, which comes
    /// only after the group committed.
    pub(crate) async fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut WriteContext<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit_weighted(Weight::Light, work).await
    }

    /// [`Self::submit`] for a job of the given weight: a merge of many changes goes
    /// [`Weight::Alone`] (see `writer`).
    pub(crate) async fn submit_weighted<T: Send + 'static>(
        &self,
        weight: Weight,
        work: impl FnOnce(&mut WriteContext<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // A dropped reply means the job panicked; the writer rolled it back.
        self.enqueue(weight, work)?.await.map_err(|_| StoreError::JobPanicked)?
    }

    /// Queues `work` for the writer and returns where its answer will arrive.
    pub(crate) fn enqueue<T: Send + 'static>(
        &self,
        weight: Weight,
        work: impl FnOnce(&mut WriteContext<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (sender, receiver) = oneshot::channel();
        self.send(Box::new(Work::new(work, Reply::Async(sender), weight)))?;
        Ok(receiver)
    }

    /// Runs `work` as one job of the writer, blocking until the group it joined committed.
    pub(crate) fn write_job<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut WriteContext<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_job_weighted(Weight::Light, work)
    }

    /// [`Self::write_job`] for a job of the given weight.
    pub(crate) fn write_job_weighted<T: Send + 'static>(
        &self,
        weight: Weight,
        work: impl FnOnce(&mut WriteContext<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.send(Box::new(Work::new(work, Reply::Blocking(sender), weight)))?;
        receiver.recv().map_err(|_| StoreError::JobPanicked)?
    }

    /// Runs `write` on the writer connection inside one committed transaction.
    pub(crate) fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_job(move |context| write(context.connection()))
    }

    fn send(&self, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().ok_or(StoreError::WriterStopped)?;
        jobs.send(job).map_err(|_| StoreError::WriterStopped)
    }

    /// Merges every upload and stores the new changes, all or nothing (one writer job).
    ///
    /// # Errors
    /// As [`merge_uploads_in`].
    #[cfg(test)]
    pub(crate) fn merge_uploads(
        &self,
        uploads: Vec<DocumentUpload>,
        received_at: i64,
        policy: impl UploadPolicy + Send + 'static,
    ) -> Result<Vec<MergedDocument>, StoreError> {
        self.write_job(move |context| merge_uploads_in(context, uploads, received_at, &policy))
    }

    /// Merges uploaded changes and commits them with no authorization and no attribution, as
    /// one writer job, all or nothing; returns how many changes were new.
    ///
    /// This is the in-process floor `fieldcase bench --floor` measures a sync against: the
    /// same merge and the same durable group commit, with no HTTP, no authentication and no
    /// feed. Nothing else should call it, since it skips every check a sync makes.
    ///
    /// # Errors
    /// As [`merge_uploads_in`].
    pub fn merge_unchecked(
        &self,
        uploads: Vec<(DocumentId, Vec<Change>)>,
        received_at: i64,
    ) -> Result<usize, StoreError> {
        let uploads = uploads
            .into_iter()
            .map(|(doc_id, changes)| (doc_id, ParsedUpload::Changes(changes)))
            .collect();
        self.merge_unchecked_parsed(uploads, received_at)
    }

    /// [`Self::merge_unchecked`] for uploads as `merge::parse_upload_within` parsed them: a
    /// document loaded from a document chunk is taken as the document's merge, as a sync
    /// takes it (`Premerged::of`), so the floor does the work a sync does.
    ///
    /// # Errors
    /// As [`merge_uploads_in`].
    pub fn merge_unchecked_parsed(
        &self,
        uploads: Vec<(DocumentId, ParsedUpload)>,
        received_at: i64,
    ) -> Result<usize, StoreError> {
        let uploads: Vec<DocumentUpload> = uploads
            .into_iter()
            .map(|(doc_id, changes)| {
                let mut upload = DocumentUpload { doc_id, changes, premerged: None };
                upload.premerged = match &upload.changes {
                    ParsedUpload::Document(_) => Premerged::of(doc_id, &upload.changes),
                    ParsedUpload::Changes(_) => {
                        self.premerge_stored(&upload, &Unchecked::default())
                    }
                };
                upload
            })
            .collect();
        let merged = self.write_job_weighted(Weight::Alone, move |context| {
            merge_uploads_in(context, uploads, received_at, &Unchecked::default())
        })?;
        Ok(merged.iter().map(|doc| doc.stored).sum())
    }

    /// A stored document's upload merged ahead of the writer onto the document's current state
    /// (`Premerged::onto`), when `policy` lets the caller change the document (checked before
    /// it is loaded) and upload each new change's actor, and the upload is neither a replay nor
    /// a gap ([`new_to`]).
    ///
    /// `None` also when a read fails: the writer then merges as always and answers any error.
    pub(crate) fn premerge_stored(
        &self,
        upload: &DocumentUpload,
        policy: &dyn UploadPolicy,
    ) -> Option<Premerged> {
        let doc_id = upload.doc_id;
        let ParsedUpload::Changes(changes) = &upload.changes else { return None };
        let (scope, stored_bytes) = self
            .read(|tx| {
                let Some(scope) = documents::stored_scope(tx, doc_id)? else { return Ok(None) };
                Ok(Some((scope, documents::change_bytes(tx, doc_id)?)))
            })
            .ok()??;
        policy.check_existing(doc_id, &scope).ok()?;
        let stored = self.document(doc_id).ok()??;
        let new = new_to(&stored, changes)?;
        if new.iter().any(|change| policy.check_actor(change.actor_id()).is_err()) {
            return None;
        }
        let stored_bytes = usize::try_from(stored_bytes).unwrap_or(usize::MAX);
        Premerged::onto(doc_id, stored, stored_bytes, new)
    }

    /// The current state of a document, from the cache or loaded from the store.
    pub(crate) fn document(
        &self,
        doc_id: DocumentId,
    ) -> Result<Option<Arc<Automerge>>, StoreError> {
        if let Some(doc) = self.cache.get(doc_id) {
            return Ok(Some(doc));
        }
        let generation = self.cache.generation();
        let Some(doc) = self.read(|tx| documents::load(tx, doc_id))? else { return Ok(None) };
        Ok(Some(self.cache.insert_loaded(doc_id, doc, generation)))
    }

    /// Every visible document with its projected fields.
    pub(crate) fn list_documents(
        &self,
        visibility: &Visibility,
    ) -> Result<Vec<DocumentSummary>, StoreError> {
        let (all, township) = visibility.sql();
        self.read(|tx| documents::list(tx, all, township))
    }

    /// The stored township and matter of a document, or `None` when it is unknown.
    pub(crate) fn stored_scope(
        &self,
        doc_id: DocumentId,
    ) -> Result<Option<StoredScope>, StoreError> {
        self.read(|tx| documents::stored_scope(tx, doc_id))
    }

    /// A document's changes in feed order, or `None` for an unknown document.
    pub(crate) fn history(
        &self,
        doc_id: DocumentId,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        self.read(|tx| {
            if !documents::exists(tx, doc_id)? {
                return Ok(None);
            }
            Ok(Some(changes::history(tx, doc_id)?))
        })
    }

    /// Number of rows in the change log.
    #[cfg(test)]
    pub(crate) fn change_rows(&self) -> i64 {
        self.read(|tx| changes::count(tx)).expect("counting changes")
    }

    /// Runs `read` in one read transaction on a pooled read-only connection.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.idle_readers).pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => schema::open_reader(&self.path)?,
        };
        let result = connection.transaction().map_err(StoreError::from).and_then(|tx| {
            let value = read(&tx)?;
            tx.commit()?;
            Ok(value)
        });
        let mut idle_readers = lock(&self.idle_readers);
        if idle_readers.len() < IDLE_READERS {
            idle_readers.push(connection);
        }
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel ends the writer thread once it has answered every job; joining
        // it closes the write connection before a reopen of the same file.
        self.jobs = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

/// Merges every upload and writes the new changes, inside the caller's writer job.
///
/// Each document is the premerge made for it when the store is still where that started
/// (`Premerged`), else comes from the group, the cache, the store or starts empty and has its
/// new changes merged in one call. Every check (scope, actors, quota) runs before the first write;
/// any error leaves the job's writes to be rolled back (its savepoint, or its transaction when
/// it is the first of one), and the documents it took are dropped, to be reloaded from the
/// untouched store. The merged documents are staged for the cache, which they reach only after
/// `COMMIT`.
///
/// # Errors
/// [`StoreError::Merge`] when a document refuses its changes, [`StoreError::DuplicateChange`]
/// when a change is stored under another document, [`StoreError::Refused`] for a policy or
/// quota refusal, [`StoreError::Sqlite`] when a write fails (a full disk among others).
pub(crate) fn merge_uploads_in(
    context: &mut WriteContext<'_>,
    uploads: Vec<DocumentUpload>,
    received_at: i64,
    policy: &dyn UploadPolicy,
) -> Result<Vec<MergedDocument>, StoreError> {
    let mut working: Vec<WorkingDocument> = Vec::with_capacity(uploads.len());
    for mut upload in uploads {
        let stored = documents::stored_scope(context.connection(), upload.doc_id)?;
        if let Some(stored) = &stored {
            policy.check_existing(upload.doc_id, stored)?;
        }
        // The same document twice merges into the copy already taken, never into a second
        // copy loaded from the store (which would lack the first upload's changes).
        let position = match working.iter().position(|item| item.doc_id == upload.doc_id) {
            Some(position) => position,
            None => {
                // The store holds no other state of the document than the one the premerge
                // started from, in an earlier job of the group or in the cache.
                if let Some(premerged) = upload.premerged.take()
                    && premerged.starts_from(
                        context.connection(),
                        upload.doc_id,
                        stored.is_some(),
                    )?
                {
                    // Out of the cache, as a document the writer merges itself: the cache holds
                    // the merged state only once the group commits.
                    context.drop_cached(upload.doc_id);
                    working.push(premerged.into_working(upload.doc_id, upload.changes)?);
                    continue;
                }
                let doc =
                    context.take_document(upload.doc_id)?.unwrap_or_else(documents::empty_document);
                working.push(WorkingDocument::new(upload.doc_id, doc, stored.is_none()));
                working.len() - 1
            }
        };
        let item = &mut working[position];
        let applied = merge_changes(&mut item.doc, upload.doc_id, upload.changes.into_changes())?;
        item.new_changes.extend(applied);
    }

    // Every check before the first write: actors of every new change, the scope of every
    // document this upload creates, and every document's quota. The record is hydrated here,
    // once per document, for the scope check and for the projections the write makes.
    for item in &mut working {
        for change in &item.new_changes.facts {
            policy.check_actor(&change.actor)?;
        }
        if item.new_changes.is_empty() {
            continue;
        }
        let projection = item.projection.take().unwrap_or_else(|| Projection::of(&item.doc));
        if item.created {
            policy.check_created(item.doc_id, projection.hydrated())?;
        }
        item.projection = Some(projection);
        item.check_quota(context.connection())?;
    }

    for item in &mut working {
        item.write(context.connection(), received_at, policy.attribution())?;
    }
    Ok(working.into_iter().map(|item| item.into_merged(context)).collect())
}

/// A document taken out of the cache for one merge.
struct WorkingDocument {
    doc_id: DocumentId,
    doc: Automerge,
    new_changes: NewChanges,
    // The document had no row before this merge: this upload creates it.
    created: bool,
    // The projection of the merged document, made once by the checks and used by the write.
    projection: Option<Projection>,
    // The document as its premerge saved it, holding the first changes of `new_changes`: its
    // creation (`store::creations`) once written.
    saved: Option<SavedCreation>,
    // The merge was made ahead of the writer (`Premerged`).
    premerged: bool,
}

/// A created document saved once, and how many of its first new changes that holds.
struct SavedCreation {
    bytes: Vec<u8>,
    changes: usize,
    // Its changes came in a document chunk and are logged without bytes: these hold them.
    holds_change_bytes: bool,
}

impl WorkingDocument {
    fn new(doc_id: DocumentId, doc: Automerge, created: bool) -> Self {
        Self {
            doc_id,
            doc,
            new_changes: NewChanges::default(),
            created,
            projection: None,
            saved: None,
            premerged: false,
        }
    }

    /// What the new changes add to the document's stored change bytes: their own, or for a
    /// document chunk's changes, logged without bytes, those of the creation that holds them.
    fn added_bytes(&self) -> usize {
        let own: usize = self.new_changes.bytes.iter().map(Vec::len).sum();
        let held = self.saved.as_ref().filter(|saved| saved.holds_change_bytes);
        own + held.map_or(0, |saved| saved.bytes.len())
    }

    /// Refuses the upload when the document's stored change bytes would pass the quota.
    fn check_quota(&self, connection: &Connection) -> Result<(), StoreError> {
        let added = self.added_bytes();
        if added == 0 {
            return Ok(());
        }
        let stored = documents::change_bytes(connection, self.doc_id)?;
        let total = stored.saturating_add(i64::try_from(added).unwrap_or(i64::MAX));
        if total > MAX_DOCUMENT_BYTES {
            return Err(Refusal::DocumentQuota(format!(
                "document {} would hold {total} bytes of changes; at most {MAX_DOCUMENT_BYTES} \
                 are accepted; nothing was stored",
                self.doc_id
            ))
            .into());
        }
        Ok(())
    }

    /// Appends the new changes, updates the document's row and projects its evidence blobs,
    /// inside the caller's job.
    fn write(
        &mut self,
        connection: &Connection,
        received_at: i64,
        attribution: &Attribution,
    ) -> Result<(), StoreError> {
        if self.new_changes.is_empty() {
            return Ok(());
        }
        let previous_snapshot_seq = documents::snapshot_seq(connection, self.doc_id)?;
        let feed_seq = changes::insert_all(
            connection,
            self.doc_id,
            &self.new_changes.facts,
            &self.new_changes.bytes,
            received_at,
            attribution,
        )?;
        let added_bytes = self.added_bytes();
        let added = i64::try_from(self.new_changes.len()).expect("a batch is far below 2^63");
        // One writer appending them in order: the new changes took consecutive sequences.
        let first_feed_seq = feed_seq - added + 1;
        let snapshot_due = match previous_snapshot_seq {
            // A new document gets its first snapshot at once.
            None => true,
            Some(snapshot_seq) => {
                changes::count_after(connection, self.doc_id, snapshot_seq)? >= SNAPSHOT_INTERVAL
            }
        };
        let mut snapshot = None;
        // A created document is saved whole once, by its premerge or here, and the feed may
        // send that in place of the changes it holds (`store::creations`).
        match self.saved.take() {
            Some(saved) => {
                let covered = i64::try_from(saved.changes).expect("a batch is far below 2^63");
                let last = first_feed_seq + covered - 1;
                creations::insert(connection, self.doc_id, first_feed_seq, last, &saved.bytes)?;
                if covered == added {
                    snapshot = Some(Snapshot { bytes: saved.bytes, feed_seq });
                }
            }
            None if self.created => {
                let bytes = self.doc.save();
                creations::insert(connection, self.doc_id, first_feed_seq, feed_seq, &bytes)?;
                snapshot = Some(Snapshot { bytes, feed_seq });
            }
            None => {}
        }
        if snapshot_due && snapshot.is_none() {
            snapshot = Some(Snapshot { bytes: self.doc.save(), feed_seq });
        }
        // Made by the checks; a caller that skipped them still gets a correct projection.
        let projection = self.projection.take().unwrap_or_else(|| Projection::of(&self.doc));
        documents::upsert(
            connection,
            DocumentWrite {
                doc_id: self.doc_id,
                projection: &projection,
                heads: &self.doc.get_heads(),
                snapshot,
                feed_seq,
                added,
                added_bytes: i64::try_from(added_bytes).expect("an upload is far below 2^63"),
                now: received_at,
            },
        )?;
        findings::project(connection, self.doc_id, projection.record(), received_at)?;
        deadlines::project(connection, self.doc_id, projection.record())?;
        blobs::link_document(connection, self.doc_id, projection.evidence())
    }

    /// The merge outcome; the document is staged for the cache if it exists in the store.
    fn into_merged(self, context: &mut WriteContext<'_>) -> MergedDocument {
        let heads = self.doc.get_heads();
        let merged = MergedDocument {
            doc_id: self.doc_id,
            heads,
            stored: self.new_changes.len(),
            premerged: self.premerged,
        };
        // An empty document is not stored (an upload of no changes for an unknown id), and
        // caching it would make the unknown document look like an existing one.
        if !merged.heads.is_empty() {
            context.stage_document(self.doc_id, self.doc);
        }
        merged
    }
}

/// A policy that allows every upload, for tests of the merge itself and the bench floor
/// ([`Store::merge_unchecked`]).
#[derive(Default)]
pub(crate) struct Unchecked(pub(crate) Attribution);

impl UploadPolicy for Unchecked {
    fn attribution(&self) -> &Attribution {
        &self.0
    }
    fn check_existing(&self, _: DocumentId, _: &StoredScope) -> Result<(), Refusal> {
        Ok(())
    }
    fn check_created(&self, _: DocumentId, _: Result<&Record, &str>) -> Result<(), Refusal> {
        Ok(())
    }
    fn check_actor(&self, _: &ActorId) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Locks a store mutex, recovering it if a panic poisoned it.
///
/// Recovering is sound here: a panic inside a merge unwinds through the open transaction,
/// which rolls back on drop, and drops the documents it took out of the cache, so neither the
/// connection nor the cache is left half-updated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
