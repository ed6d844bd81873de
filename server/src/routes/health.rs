//! `GET /healthz`: the liveness probe.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

/// The health route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(get_health))
}

/// Answers `{"status":"ok"}` while the server accepts requests.
async fn get_health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
