//! The state every request handler shares.

use std::path::Path;
use std::sync::Arc;

use crate::auth::Auth;
use crate::auth::keys::KeyFiles;
use crate::blob_files::BlobFiles;
use crate::store::Store;

/// The directory of evidence blobs inside the data directory.
pub const BLOBS_DIR: &str = "blobs";

/// What handlers share: the store (registry included), the blob files and the server's key
/// material.
///
/// Cloned per request by axum, so it holds only `Arc`s: a clone is a reference-count bump.
#[derive(Clone)]
pub struct AppState {
    store: Arc<Store>,
    blob_files: Arc<BlobFiles>,
    auth: Arc<Auth>,
}

impl AppState {
    /// Wraps an opened store, with the keys of `data_dir` (created there on first start).
    ///
    /// # Errors
    /// Fails when a key file cannot be read, written or parsed.
    pub fn new(store: Store, data_dir: &Path) -> anyhow::Result<Self> {
        let files = KeyFiles::load_or_create(data_dir)?;
        Ok(Self {
            store: Arc::new(store),
            blob_files: Arc::new(BlobFiles::new(data_dir.join(BLOBS_DIR))),
            auth: Arc::new(Auth::new(&files)?),
        })
    }

    /// A state with keys that live only in memory.
    #[cfg(test)]
    pub(crate) fn with_generated_keys(store: Store) -> Self {
        let auth = Auth::new(&KeyFiles::generate()).expect("fresh keys load");
        let data_dir = store.path().parent().expect("the database is in a directory").to_owned();
        Self {
            store: Arc::new(store),
            blob_files: Arc::new(BlobFiles::new(data_dir.join(BLOBS_DIR))),
            auth: Arc::new(auth),
        }
    }

    /// The store, to move into `spawn_blocking`.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The evidence blob files, to move into `spawn_blocking`.
    pub(crate) fn blob_files(&self) -> &Arc<BlobFiles> {
        &self.blob_files
    }

    /// Keys, nonces and the proof replay cache.
    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }
}
