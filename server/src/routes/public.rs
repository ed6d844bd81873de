//! Public disclosure (执法公开), no token needed: officers and their certificates, active
//! entrustment agreements and their scope, matters with legal basis and penalty standards,
//! complaint channels (Administrative Penalty Law Art. 20 ¶2, Art. 34, Art. 75).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::now_millis;
use crate::error::{ApiError, ErrorBody};
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
#[utoipa::path(
    get,
    path = "/v1/public/officers",
    tag = "public",
    security(()),
    responses(
        (status = 200, description = "Officers who may enforce now, with their certificates (`PublicOfficer`)", body = Vec<Object>),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_officers(
    State(state): State<AppState>,
) -> Result<Json<Vec<PublicOfficer>>, ApiError> {
    let store = state.store().clone();
    let now = now_millis();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::officers(tx, now))?)).await?))
}

/// Active entrustment agreements and what they entrust.
#[utoipa::path(
    get,
    path = "/v1/public/entrustments",
    tag = "public",
    security(()),
    responses(
        (status = 200, description = "Active entrustment agreements and their items (`PublicEntrustment`)", body = Vec<Object>),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_entrustments(
    State(state): State<AppState>,
) -> Result<Json<Vec<PublicEntrustment>>, ApiError> {
    let store = state.store().clone();
    let now = now_millis();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::entrustments(tx, now))?)).await?))
}

/// Matters with their legal basis and penalty standards.
#[utoipa::path(
    get,
    path = "/v1/public/matters",
    tag = "public",
    security(()),
    responses(
        (status = 200, description = "Matters with legal basis and penalty standards (`PublicMatter`)", body = Vec<Object>),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_matters(State(state): State<AppState>) -> Result<Json<Vec<PublicMatter>>, ApiError> {
    let store = state.store().clone();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::matters(tx))?)).await?))
}

/// Where to complain.
#[utoipa::path(
    get,
    path = "/v1/public/complaints",
    tag = "public",
    security(()),
    responses(
        (status = 200, description = "Where to complain (`ComplaintChannel`)", body = Vec<Object>),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_complaint_channels(
    State(state): State<AppState>,
) -> Result<Json<Vec<ComplaintChannel>>, ApiError> {
    let store = state.store().clone();
    Ok(Json(run_blocking(move || Ok(store.read(|tx| public::complaint_channels(tx))?)).await?))
}
