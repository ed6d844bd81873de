//! Public disclosure (执法公开), no token needed: officers and their certificates, active
//! entrustment agreements and their scope, matters with legal basis and penalty standards,
//! complaint channels (Administrative Penalty Law Art. 20 ¶2, Art. 34, Art. 75).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::now_millis;
use crate::error::ApiError;
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::public::{
    self, ComplaintChannel, PublicEntrustment, PublicMatter, PublicOfficer,
};

/// The public routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/public/officers", get(list_officers))
        .route("/v1/public/entrustments", get(list_entrustments))
        .route("/v1/public/matters", get(list_matters))
        .route("/v1/public/complaints", get(list_complaint_channels))
}

/// Officers who may enforce now, with their certificates.
async fn list_officers(
    State(state): State<AppState>,
) -> Result<Json<Vec<PublicOfficer>>, ApiError> {
    let store = state.store().clone();
    let now = now_millis();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::officers(tx, now))?)).await?))
}

/// Active entrustment agreements and what they entrust.
async fn list_entrustments(
    State(state): State<AppState>,
) -> Result<Json<Vec<PublicEntrustment>>, ApiError> {
    let store = state.store().clone();
    let now = now_millis();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::entrustments(tx, now))?)).await?))
}

/// Matters with their legal basis and penalty standards.
async fn list_matters(State(state): State<AppState>) -> Result<Json<Vec<PublicMatter>>, ApiError> {
    let store = state.store().clone();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::matters(tx))?)).await?))
}

/// Where to complain.
async fn list_complaint_channels(
    State(state): State<AppState>,
) -> Result<Json<Vec<ComplaintChannel>>, ApiError> {
    let store = state.store().clone();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::complaint_channels(tx))?)).await?))
}
