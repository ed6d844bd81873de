//! `POST /v1/actors`: a device whose replica was restored from a backup asks for a fresh
//! Automerge actor, because its old actor's next sequence numbers are already stored on the
//! server with other content (SECURITY.md §a, B-29: a reused actor is `duplicate_seq`).
//!
//! The new actor is registered to the calling device and its officer, audited, and answered
//! 201 `{"actor": "<32 hex>"}`. The device's earlier actors stay registered: the changes stored
//! under them stay attributable, and the device may still relay them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::keys::random_bytes;
use crate::auth::{Caller, now_millis};
use crate::error::{ApiError, ErrorBody};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::devices::{self, NewActor};

/// The actor route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/actors", post(allocate_actor))
}

/// The new actor.
#[derive(Debug, Serialize, ToSchema)]
struct ActorAnswer {
    /// The fresh Automerge actor, 32 hex digits, registered to the calling device.
    actor: String,
}

/// Allocates a fresh random actor to the calling device.
#[utoipa::path(
    post,
    path = "/v1/actors",
    tag = "devices",
    responses(
        (status = 201, description = "A fresh actor for the calling device", body = ActorAnswer),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "The certificate is not valid now", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn allocate_actor(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Json<ActorAnswer>), ApiError> {
    let new_actor = NewActor {
        actor: random_bytes::<16>(),
        device: caller.device.clone(),
        officer: caller.officer.clone(),
        now: now_millis(),
    };
    let actor = hex::encode(new_actor.actor);
    let store = state.store().clone();
    run_blocking(move || Ok(store.write(move |tx| devices::allocate_actor(tx, &new_actor))?))
        .await?;
    tracing::info!(device = %caller.device, officer = %caller.officer, %actor, "allocated an actor");
    Ok((StatusCode::CREATED, Json(ActorAnswer { actor })))
}
