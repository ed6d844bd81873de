//! The state every request handler shares.

use std::path::Path;
use std::sync::Arc;

use crate::auth::Auth;
use crate::auth::keys::KeyFiles;
use crate::store::Store;

/// What handlers share: the store (registry included) and the server's key material.
///
/// Cloned per request by axum, so it holds only `Arc`s: a clone is a reference-count bump.
#[derive(Clone)]
pub struct AppState {
    store: Arc<Store>,
    auth: Arc<Auth>,
}

impl AppState {
    /// Wraps an opened store, with the keys of `data_dir` (created there on first start).
    ///
    /// # Errors
    /// Fails when a key file cannot be read, written or parsed.
    pub fn new(store: Store, data_dir: &Path) -> anyhow::Result<Self> {
        let files = KeyFiles::load_or_create(data_dir)?;
        Ok(Self { store: Arc::new(store), auth: Arc::new(Auth::new(&files)?) })
    }

    /// A state with keys that live only in memory.
    #[cfg(test)]
    pub(crate) fn with_generated_keys(store: Store) -> Self {
        let auth = Auth::new(&KeyFiles::generate()).expect("fresh keys load");
        Self { store: Arc::new(store), auth: Arc::new(auth) }
    }

    /// The store, to move into `spawn_blocking`.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Keys, nonces and the proof replay cache.
    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }
}
