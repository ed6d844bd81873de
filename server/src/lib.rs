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
//!    document rows updated, in one SQLite transaction; the answer follows the commit.
//! 4. The answer carries the server's heads per document and every change after the device's
//!    cursor that it did not just upload, with the new cursor.
//!
//! Readers (`GET /v1/docs/…`) see the same merged view a device prints with
//! `fieldcase show --json`. Every error answers `{"error": {"code", "message"}}`
//! ([`error::ApiError`]).

pub mod config;
pub mod error;
#[cfg(test)]
mod fixtures;
mod routes;
pub mod state;
pub mod store;
#[cfg(test)]
mod tests;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

use crate::state::AppState;

/// The whole HTTP API with its state attached; unknown paths and wrong methods answer JSON
/// errors like every other failure.
pub fn router(state: AppState) -> Router {
    routes::router()
        .fallback(routes::reject_unknown_route)
        .method_not_allowed_fallback(routes::reject_method)
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
