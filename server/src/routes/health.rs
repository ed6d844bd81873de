//! `GET /healthz`: the liveness probe.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The health route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(get_health))
}

/// The liveness answer.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`: a server that answers at all is alive.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Answers `{"status":"ok"}` while the server accepts requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "The server accepts requests", body = Health))
)]
async fn get_health() -> Json<Health> {
    Json(Health { status: "ok" })
}
