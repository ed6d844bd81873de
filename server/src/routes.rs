//! The HTTP routes, one module per area, and what every route shares.

mod actors;
mod admin;
pub(crate) mod blobs;
mod documents;
pub(crate) mod enroll;
mod health;
mod numbers;
pub(crate) mod openapi;
mod public;
mod quarterly;
mod reports;
mod review;
pub(crate) mod sync;
pub(crate) mod token;

use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the API, before the state is attached.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(public::router())
        .merge(token::router())
        .merge(enroll::router())
        .merge(actors::router())
        .merge(sync::router())
        .merge(blobs::router())
        .merge(documents::router())
        .merge(review::router())
        .merge(reports::router())
        .merge(quarterly::router())
        .merge(numbers::router())
        .merge(admin::router())
        .merge(openapi::router())
}

/// Answers a path no route matches.
pub(crate) async fn reject_unknown_route() -> ApiError {
    ApiError::NotFound
}

/// Answers a known path requested with a method it does not accept.
pub(crate) async fn reject_method() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Runs blocking work (SQLite, Automerge) off the async workers; a panic becomes `internal`.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await?
}
