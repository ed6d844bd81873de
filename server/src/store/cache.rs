//! A bounded, least-recently-used cache of loaded documents in front of the store.
//!
//! Loading a document costs a snapshot load plus the changes after it (tens of milliseconds for
//! a large one), so hot documents stay in memory; the bound keeps memory independent of how
//! many documents are stored. Every entry equals what the store would load at that moment: the
//! writer takes a document out while it merges and puts it back only after its transaction
//! commits, so a failed merge or commit leaves nothing stale behind.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use lru::LruCache;
use sync_core::ids::DocumentId;

use crate::store::lock;

/// Loaded documents, shared between the writer and the readers.
///
/// Readers get an `Arc` and build views without holding the lock; the writer gets the document
/// itself to merge into (a clone only if a reader still holds the `Arc`).
pub(crate) struct DocumentCache {
    // A std `Mutex`: every critical section is a few map operations, never IO or `.await`.
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    documents: LruCache<DocumentId, Arc<Automerge>>,
    // Invariant: incremented on every writer `put`, so a reader that loaded a document from the
    // store can tell whether the writer may have cached a newer state since it started.
    generation: u64,
}

impl DocumentCache {
    /// An empty cache holding at most `capacity` documents.
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Self { inner: Mutex::new(CacheInner { documents: LruCache::new(capacity), generation: 0 }) }
    }

    /// The cached document, marked as recently used.
    pub(crate) fn get(&self, doc_id: DocumentId) -> Option<Arc<Automerge>> {
        lock(&self.inner).documents.get(&doc_id).cloned()
    }

    /// The generation to pass to [`Self::insert_loaded`]; read it before loading from the store.
    pub(crate) fn generation(&self) -> u64 {
        lock(&self.inner).generation
    }

    /// Removes the document for the writer to merge into.
    pub(crate) fn take(&self, doc_id: DocumentId) -> Option<Automerge> {
        let shared = lock(&self.inner).documents.pop(&doc_id)?;
        Some(Arc::unwrap_or_clone(shared))
    }

    /// Removes the document, for the writer to merge a copy made elsewhere.
    pub(crate) fn remove(&self, doc_id: DocumentId) {
        lock(&self.inner).documents.pop(&doc_id);
    }

    /// Caches the document the writer has just committed, replacing any older entry.
    pub(crate) fn put(&self, doc_id: DocumentId, doc: Automerge) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        inner.documents.put(doc_id, Arc::new(doc));
    }

    /// Caches a document a reader loaded from the store, unless the writer cached a document
    /// since `generation` was read (the loaded state may then be older) or the document is
    /// already cached; returns the document to use either way.
    pub(crate) fn insert_loaded(
        &self,
        doc_id: DocumentId,
        doc: Automerge,
        generation: u64,
    ) -> Arc<Automerge> {
        let mut inner = lock(&self.inner);
        if let Some(cached) = inner.documents.get(&doc_id) {
            return Arc::clone(cached);
        }
        let doc = Arc::new(doc);
        if inner.generation == generation {
            inner.documents.put(doc_id, Arc::clone(&doc));
        }
        doc
    }
}
