//! fieldcase-server: the server that field devices resync their offline edits to.
//!
//! # How a sync flows through the server
//!
//! 1. `POST /v1/sync` (`routes::sync`) receives a binary [`sync_core::protocol::SyncRequest`]:
//!    the device's feed cursor and, per document it changed, the changes since the heads the
//!    server last acknowledged.
//! 2. Every change is parsed strictly on its own, then each document's new changes are merged
//!    in one call on the single writer ([`store::Store`]), which takes the document from a
//!    bounded cache or loads it from its snapshot and later changes.
//! 3. Only when every document merged are the changes appended to the change log and the
//!    document rows updated, in one savepoint of the writer thread's group transaction
//!    (`store::writer`); the answer follows the group's commit.
//! 4. The answer carries the server's heads per document and every change after the device's
//!    cursor that it did not just upload, with the new cursor.
//!
//! Readers (`GET /v1/docs/…`) see the same merged view a device prints with
//! `fieldcase show --json`. Every error answers `{"error": {"code", "message"}}`
//! ([`error::ApiError`]).
//!
//! # Who may do what
//!
//! Every route but health, nonce, enrollment and token minting needs an access token bound to
//! an enrolled device key and a DPoP proof (`auth`); the registry (`registry`, SQL in
//! `store::registry`) is read live on every request. Officers see and write the documents of
//! their township within their entrustment scope; supervisors read everything; admins keep the
//! registry (`/v1/admin`). A fresh data directory gets an admin and a one-time code
//! (`bootstrap`).

mod auth;
mod blob_files;
pub mod bootstrap;
pub mod config;
pub mod error;
#[cfg(test)]
mod fixtures;
mod registry;
mod routes;
pub mod state;
pub mod store;
#[cfg(test)]
mod tests;

use std::future::Future;

use axum::Router;
use axum::middleware::map_response_with_state;
use tokio::net::TcpListener;

use crate::state::AppState;

/// The whole HTTP API with its state attached; unknown paths and wrong methods answer JSON
/// errors like every other failure, and every response carries a fresh `DPoP-Nonce`.
pub fn router(state: AppState) -> Router {
    routes::router()
        .fallback(routes::reject_unknown_route)
        .method_not_allowed_fallback(routes::reject_method)
        .layer(map_response_with_state(state.clone(), auth::add_dpop_nonce))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// The caller binds the listener (so it knows the port before serving) and owns the shutdown
/// signal (so tests can stop the server without signals).
///
/// # Errors
/// Fails only when accepting connections fails irrecoverably.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
