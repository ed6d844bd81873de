//! The state every request handler shares.

use std::sync::Arc;

use crate::store::Store;

/// What handlers share: the store (and, as issues land, the registry and the key material).
///
/// Cloned per request by axum, so it holds only `Arc`s: a clone is a reference-count bump.
#[derive(Clone)]
pub struct AppState {
    store: Arc<Store>,
}

impl AppState {
    /// Wraps an opened store.
    pub fn new(store: Store) -> Self {
        Self { store: Arc::new(store) }
    }

    /// The store, to move into `spawn_blocking`.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }
}
