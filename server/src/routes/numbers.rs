//! Document numbers (文书编号, DOMAIN.md §3): `POST /v1/numbers/lease` leases a block of serials
//! to an officer's device, `GET /v1/numbers/blocks/{id}/reconciliation` accounts for every
//! serial of a block.
//!
//! The device consumes its block offline, in order, storing its pointer before it renders a
//! number; the server never sees a number until a case file carrying it syncs. Duplicates and
//! numbers outside a lease are findings of the record (`number_used_twice`,
//! `number_outside_block`), judged at every merge (`store::findings`), and reconciliation reads
//! the numbers projected then.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Datelike as _;
use serde::{Deserialize, Serialize};
use sync_core::numbers::{NumberBlock, reconcile};
use utoipa::ToSchema;

use crate::auth::keys::random_bytes;
use crate::auth::{Caller, now_millis};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::registry::Role;
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::numbers::{self, LeaseRequest};

/// Serials leased when the request names no count.
const DEFAULT_COUNT: i64 = 20;

/// The largest block one lease hands out (DOMAIN.md §3: blocks of 20 to 50), so a lost device
/// leaves at most this many serials to void.
const MAX_COUNT: i64 = 50;

/// The rendering template of a block (GB/T 9704-2012 §7.2.5: year in 〔〕, no 第, no padding).
const TEMPLATE: &str = "{代字}罚〔{年}〕{N}号";

/// The number routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/numbers/lease", post(lease_block))
        .route("/v1/numbers/blocks/{id}/reconciliation", get(reconcile_block))
}

/// `POST /v1/numbers/lease`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    /// The kind of document the serials number, a snake_case code of at most 64 characters.
    #[schema(example = "penalty_decision")]
    doc_type: String,
    /// Serials to lease, 1 to 50; 20 when absent.
    #[schema(minimum = 1, maximum = 50)]
    count: Option<i64>,
}

/// Every serial of a block, accounted for (`sync_core::numbers::Reconciliation`).
#[derive(Debug, Serialize, ToSchema)]
struct ReconciliationAnswer {
    /// The block (`sync_core::numbers::NumberBlock`).
    #[schema(value_type = Object)]
    block: NumberBlock,
    /// Serials used exactly once.
    used: Vec<i64>,
    /// Serials voided.
    void: Vec<i64>,
    /// Serials neither used nor voided.
    unused: Vec<i64>,
    /// Serials used more than once, each with the ids of the documents that carry it.
    #[schema(value_type = std::collections::HashMap<String, Vec<String>>)]
    duplicates: BTreeMap<i64, Vec<String>>,
    /// Serials reported that lie outside the block.
    outside: Vec<i64>,
}

/// Leases the next serials of the caller's number space to the calling device.
#[utoipa::path(
    post,
    path = "/v1/numbers/lease",
    tag = "numbers",
    request_body = LeaseBody,
    responses(
        (status = 201, description = "The leased block (`sync_core::numbers::NumberBlock`)", body = Object),
        (status = 400, description = "`malformed_json`: bad `doc_type` or `count`", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden` for a non-officer, `out_of_scope` without a \
            township, or the certificate is not valid now", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn lease_block(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<LeaseBody>,
) -> Result<(StatusCode, Json<NumberBlock>), ApiError> {
    caller.require(Role::Officer)?;
    let count = body.count.unwrap_or(DEFAULT_COUNT);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(ApiError::MalformedJson(format!("count {count} is outside 1 to {MAX_COUNT}")));
    }
    let valid_doc_type = !body.doc_type.is_empty()
        && body.doc_type.len() <= 64
        && body.doc_type.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_doc_type {
        return Err(ApiError::MalformedJson(format!(
            "doc_type must be a snake_case code of at most 64 characters, got {:?}",
            body.doc_type
        )));
    }
    let Some(township) = caller.township.clone() else {
        return Err(ApiError::OutOfScope("the officer belongs to no township".to_owned()));
    };
    let now = now_millis();
    let year = chrono::DateTime::from_timestamp_millis(now)
        .expect("the server clock is within chrono's range")
        .year();
    let request = LeaseRequest {
        id: format!("nb-{}", hex::encode(random_bytes::<8>())),
        township,
        doc_type: body.doc_type,
        count,
        year,
        template: TEMPLATE.to_owned(),
        device: caller.device.clone(),
        officer: caller.officer.clone(),
        now,
    };
    let store = state.store().clone();
    let block =
        run_blocking(move || Ok(store.write(move |tx| numbers::lease(tx, &request))?)).await?;
    tracing::info!(
        device = %caller.device,
        block = %block.id,
        first = block.first,
        last = block.last,
        "leased a number block"
    );
    Ok((StatusCode::CREATED, Json(block)))
}

/// Accounts for every serial of a block: used, void, unused, used twice, and reported
/// outside it. Supervisors and admins see every block, an officer only the blocks of their
/// devices; any other block is `not_found`, so ids cannot be probed.
#[utoipa::path(
    get,
    path = "/v1/numbers/blocks/{id}/reconciliation",
    tag = "numbers",
    params(("id" = String, Path, description = "The block id, `nb-…`")),
    responses(
        (status = 200, description = "Every serial of the block, accounted for", body = ReconciliationAnswer),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 404, description = "No such block, or one the caller may not see", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn reconcile_block(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ReconciliationAnswer>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::NotFound)?;
    let store = state.store().clone();
    let (found, uses) = run_blocking(move || {
        Ok(store.read(|tx| {
            let Some(found) = numbers::block(tx, &id)? else { return Ok(None) };
            let uses = numbers::uses(tx, &id)?;
            Ok(Some((found, uses)))
        })?)
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    let (block, holder) = found;
    let allowed = match caller.role {
        Role::Supervisor | Role::Admin => true,
        Role::Officer => holder.as_deref() == Some(caller.officer.as_str()),
    };
    if !allowed {
        return Err(ApiError::NotFound);
    }
    let reconciliation = reconcile(&block, &uses);
    Ok(Json(ReconciliationAnswer {
        block,
        used: reconciliation.used,
        void: reconciliation.void,
        unused: reconciliation.unused,
        duplicates: reconciliation.duplicates,
        outside: reconciliation.outside,
    }))
}
