//! The durable store: the append-only change log and the document table in one SQLite file,
//! with a bounded cache of loaded documents in front of it. The only module that contains SQL.
//!
//! One writer connection, used from `spawn_blocking` behind a std `Mutex`, serialises every
//! merge: it takes the touched documents out of the cache, merges, writes everything in one
//! transaction and puts the documents back only after `COMMIT`, so a change is acknowledged
//! only once it is durable and a failed request leaves both the database and the cache as they
//! were. Readers use a small pool of read-only connections and never wait for the writer (WAL).

mod cache;
mod changes;
pub(crate) mod devices;
mod documents;
pub(crate) mod registry;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use automerge::{ActorId, Automerge, Change, ChangeHash};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use sync_core::error::MergeError;
use sync_core::ids::DocumentId;
use sync_core::merge::merge_changes;

use crate::store::cache::DocumentCache;
pub(crate) use crate::store::changes::{Feed, HistoryEntry};
pub(crate) use crate::store::documents::{DocumentSummary, StoredScope};
use crate::store::documents::{DocumentWrite, Projection, Snapshot};

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
    /// May the caller create this document? Called with the merged, not yet written, document.
    fn check_created(&self, doc_id: DocumentId, merged: &Automerge) -> Result<(), Refusal>;
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
    fn sql(&self) -> (bool, Option<&str>) {
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
    /// The changes, each parsed strictly on its own.
    pub(crate) changes: Vec<Change>,
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
}

/// The change log and documents of one server, shared by every request.
///
/// Shared behind an `Arc`. Every method but [`Store::open`] (called once at startup) blocks on
/// SQLite or Automerge work and must run in `spawn_blocking`, never on an async worker thread.
pub struct Store {
    path: PathBuf,
    // A std `Mutex`: it is only locked on blocking threads and never across `.await`.
    writer: Mutex<Connection>,
    idle_readers: Mutex<Vec<Connection>>,
    cache: DocumentCache,
}

impl Store {
    /// Opens the database at `path`, creating and migrating it as needed.
    ///
    /// # Errors
    /// Fails when the file cannot be opened or written, when WAL mode is refused, or when a
    /// newer build has migrated the schema past what this build knows.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = schema::open_writer(path)?;
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            idle_readers: Mutex::new(Vec::new()),
            cache: DocumentCache::new(CACHE_CAPACITY),
        })
    }

    /// Merges every upload and stores the new changes, all or nothing.
    ///
    /// Each document comes from the cache, else from the store, else starts empty; its new
    /// changes are merged in one call. Only when every document merged are the changes and
    /// the document rows written, in one transaction; only after it commits do the documents
    /// go back into the cache. On any error nothing is written, and the documents this call
    /// took out of the cache are dropped, to be reloaded from the untouched store.
    ///
    /// # Errors
    /// [`StoreError::Merge`] when a document refuses its changes, [`StoreError::DuplicateChange`]
    /// when a change is stored under another document, [`StoreError::Sqlite`] when the commit
    /// fails (a full disk among others).
    pub(crate) fn merge_uploads(
        &self,
        uploads: Vec<DocumentUpload>,
        received_at: i64,
        policy: &dyn UploadPolicy,
    ) -> Result<Vec<MergedDocument>, StoreError> {
        let mut writer = lock(&self.writer);
        let mut working: Vec<WorkingDocument> = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let stored = documents::stored_scope(&writer, upload.doc_id)?;
            if let Some(stored) = &stored {
                policy.check_existing(upload.doc_id, stored)?;
            }
            // The same document twice merges into the copy already taken, never into a second
            // copy loaded from the store (which would lack the first upload's changes).
            let position = match working.iter().position(|item| item.doc_id == upload.doc_id) {
                Some(position) => position,
                None => {
                    let doc = match self.cache.take(upload.doc_id) {
                        Some(doc) => doc,
                        None => documents::load(&writer, upload.doc_id)?
                            .unwrap_or_else(documents::empty_document),
                    };
                    working.push(WorkingDocument::new(upload.doc_id, doc, stored.is_none()));
                    working.len() - 1
                }
            };
            let item = &mut working[position];
            let new_changes = merge_changes(&mut item.doc, upload.doc_id, upload.changes)?;
            item.new_changes.extend(new_changes);
        }

        // Every check before the first write: actors of every new change, then the scope of
        // every document this upload creates.
        for item in &working {
            for change in &item.new_changes {
                policy.check_actor(change.actor_id())?;
            }
            if item.created && !item.new_changes.is_empty() {
                policy.check_created(item.doc_id, &item.doc)?;
            }
        }

        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for item in &mut working {
            item.write(&tx, received_at, policy.attribution())?;
        }
        tx.commit()?;

        // Still under the writer lock: a later merge must find these documents in the cache
        // or load them from the committed store, never find an older copy put back late.
        Ok(working.into_iter().map(|item| item.into_merged(&self.cache)).collect())
    }

    /// The feed after `cursor` without the changes in `skip`, up to about `byte_budget` bytes
    /// of changes, read in one read transaction.
    pub(crate) fn feed_after(
        &self,
        cursor: u64,
        skip: &HashSet<ChangeHash>,
        byte_budget: usize,
        visibility: &Visibility,
    ) -> Result<Feed, StoreError> {
        let (all, township) = visibility.sql();
        self.read(|tx| changes::feed_after(tx, cursor, skip, byte_budget, all, township))
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

    /// Runs `write` in one immediate transaction on the writer connection and commits it.
    pub(crate) fn write<T>(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = write(&tx)?;
        tx.commit()?;
        Ok(value)
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

/// A document taken out of the cache for one merge.
struct WorkingDocument {
    doc_id: DocumentId,
    doc: Automerge,
    new_changes: Vec<Change>,
    // The document had no row before this merge: this upload creates it.
    created: bool,
}

impl WorkingDocument {
    fn new(doc_id: DocumentId, doc: Automerge, created: bool) -> Self {
        Self { doc_id, doc, new_changes: Vec::new(), created }
    }

    /// Appends the new changes and updates the document's row, inside the caller's transaction.
    fn write(
        &mut self,
        tx: &Transaction<'_>,
        received_at: i64,
        attribution: &Attribution,
    ) -> Result<(), StoreError> {
        if self.new_changes.is_empty() {
            return Ok(());
        }
        let previous_snapshot_seq = documents::snapshot_seq(tx, self.doc_id)?;
        let mut feed_seq = 0;
        for change in &mut self.new_changes {
            feed_seq = changes::insert(tx, self.doc_id, change, received_at, attribution)?;
        }
        let snapshot_due = match previous_snapshot_seq {
            // A new document gets its first snapshot at once.
            None => true,
            Some(snapshot_seq) => {
                changes::count_after(tx, self.doc_id, snapshot_seq)? >= SNAPSHOT_INTERVAL
            }
        };
        let snapshot = snapshot_due.then(|| Snapshot { bytes: self.doc.save(), feed_seq });
        documents::upsert(
            tx,
            DocumentWrite {
                doc_id: self.doc_id,
                projection: &Projection::of(&self.doc),
                heads: &self.doc.get_heads(),
                snapshot,
                feed_seq,
                added: i64::try_from(self.new_changes.len()).expect("a batch is far below 2^63"),
                now: received_at,
            },
        )
    }

    /// The merge outcome; the document goes back into the cache if it exists in the store.
    fn into_merged(self, cache: &DocumentCache) -> MergedDocument {
        let heads = self.doc.get_heads();
        let merged = MergedDocument { doc_id: self.doc_id, heads, stored: self.new_changes.len() };
        // An empty document is not stored (an upload of no changes for an unknown id), and
        // caching it would make the unknown document look like an existing one.
        if !merged.heads.is_empty() {
            cache.put(self.doc_id, self.doc);
        }
        merged
    }
}

/// A policy that allows every upload, for tests of the merge itself.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Unchecked(pub(crate) Attribution);

#[cfg(test)]
impl UploadPolicy for Unchecked {
    fn attribution(&self) -> &Attribution {
        &self.0
    }
    fn check_existing(&self, _: DocumentId, _: &StoredScope) -> Result<(), Refusal> {
        Ok(())
    }
    fn check_created(&self, _: DocumentId, _: &Automerge) -> Result<(), Refusal> {
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
