//! `GET /v1/nonce` and `POST /v1/token`: a device proves possession of its enrolled key and
//! gets a ten-minute access token bound to it, with fresh signed master data.
//!
//! The device key plays the part of a refresh token (DESIGN.md §7): every minting re-reads
//! device, officer and certificate from the registry.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sync_core::scope::{CertificateSnapshot, MasterData};
use utoipa::ToSchema;

use crate::auth::token::{
    AccessClaims, Confirmation, ISSUER, TOKEN_AUDIENCE, TOKEN_LIFETIME_SECONDS,
};
use crate::auth::{DPOP_NONCE, ProofOfPossession, certificate_refusal, now_millis, now_seconds};
use crate::error::{ApiError, ErrorBody};
use crate::registry::{Certificate, DeviceStatus, Role};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::devices;
use crate::store::registry::{self, Standing, text_of};

/// How long master data lets a device act offline before it must sync again.
const MASTER_DATA_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// The nonce and token routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/nonce", get(get_nonce)).route("/v1/token", post(issue_token))
}

/// The answer of `GET /v1/nonce`.
#[derive(Debug, Serialize, ToSchema)]
struct NonceAnswer {
    /// The server nonce the next DPoP proofs must carry (RFC 9449 §8); also in `DPoP-Nonce`.
    nonce: String,
}

/// The answer of `POST /v1/token` (RFC 9449 §5).
#[derive(Debug, Serialize, ToSchema)]
struct TokenAnswer {
    /// The signed access token, bound to the proof's key; send as `Authorization: DPoP …`.
    access_token: String,
    /// Always `DPoP`: the token is useless without a proof signed by the same key.
    #[schema(example = "DPoP")]
    token_type: &'static str,
    /// Seconds until the token expires; never past the officer's certificate.
    expires_in: u64,
    /// The master data as a compact JWS signed by the server, for the device to verify offline.
    master_data: String,
    /// The same master data in clear (`sync_core::scope::MasterData`).
    #[schema(value_type = Object)]
    master_data_json: MasterData,
}

/// Hands out the current nonce, in the body and in `DPoP-Nonce`.
#[utoipa::path(
    get,
    path = "/v1/nonce",
    tag = "auth",
    security(()),
    responses((
        status = 200,
        description = "A fresh server nonce",
        body = NonceAnswer,
        headers(("DPoP-Nonce" = String, description = "The same nonce")),
    ))
)]
async fn get_nonce(State(state): State<AppState>) -> impl IntoResponse {
    let nonce = state.auth().fresh_nonce();
    (
        [(DPOP_NONCE, nonce.clone()), (header::CACHE_CONTROL, "no-store".to_owned())],
        Json(NonceAnswer { nonce }),
    )
}

/// Mints an access token for the enrolled device whose key signed the proof.
#[utoipa::path(
    post,
    path = "/v1/token",
    tag = "auth",
    security(("dpop_proof" = [])),
    responses(
        (status = 200, description = "An access token bound to the device key", body = TokenAnswer),
        (status = 401, description = "Bad or replayed proof, unknown or revoked device, or a \
            nonce is needed (`use_dpop_nonce`, with `DPoP-Nonce`)", body = ErrorBody),
        (status = 403, description = "The officer's certificate is revoked, suspended or \
            expired", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn issue_token(
    State(state): State<AppState>,
    ProofOfPossession(proof): ProofOfPossession,
) -> Result<Json<TokenAnswer>, ApiError> {
    let now = now_seconds();
    let now_ms = now_millis();
    let store = state.store().clone();
    let jkt = proof.jkt.clone();
    let found = run_blocking(move || {
        Ok(store.read(|tx| {
            let Some(device) = devices::device_by_jkt(tx, &jkt)? else { return Ok(None) };
            let standing = registry::standing(tx, &device.officer, now_ms)?;
            Ok(standing.map(|standing| (device, standing)))
        })?)
    })
    .await?;
    let (device, standing) = found
        .filter(|(device, _)| device.status == DeviceStatus::Active)
        .ok_or(ApiError::DeviceRevoked)?;
    let certificate = if standing.officer.role == Role::Officer {
        let certificate = standing.certificate.as_ref().ok_or_else(|| {
            ApiError::CertificateExpired(format!("(none held by {})", standing.officer.id))
        })?;
        if let Some(refusal) = certificate_refusal(certificate, now_ms) {
            return Err(refusal);
        }
        Some(certificate)
    } else {
        standing.certificate.as_ref().filter(|certificate| certificate.is_valid_at(now_ms))
    };

    let mut exp = now + TOKEN_LIFETIME_SECONDS;
    if let Some(certificate) = certificate {
        exp = exp.min(u64::try_from(certificate.valid_to / 1000).unwrap_or(0));
    }
    let mut scope: Vec<String> =
        standing.officer.township.iter().map(|township| format!("township:{township}")).collect();
    for item in &standing.scope {
        let entry = format!("matter:{}", item.matter);
        if !scope.contains(&entry) {
            scope.push(entry);
        }
    }
    let claims = AccessClaims {
        iss: ISSUER.to_owned(),
        aud: TOKEN_AUDIENCE.to_owned(),
        sub: standing.officer.id.clone(),
        device: device.id.clone(),
        cert_no: certificate.map(|certificate| certificate.cert_no.clone()),
        cert_rev: certificate.map_or(0, |certificate| certificate.rev),
        role: standing.officer.role.as_str().to_owned(),
        scope,
        cnf: Confirmation { jkt: device.jkt },
        iat: now,
        nbf: now,
        exp,
        jti: hex::encode(crate::auth::keys::random_bytes::<16>()),
    };
    let master = master_data(&standing, certificate, now_ms);
    let tokens = state.auth().tokens();
    Ok(Json(TokenAnswer {
        access_token: tokens.sign_access(&claims),
        token_type: "DPoP",
        expires_in: exp.saturating_sub(now),
        master_data: tokens.sign_master_data(&master, now),
        master_data_json: master,
    }))
}

/// The snapshot a device acts on offline: certificate, township and scope, valid for seven
/// days but never past the certificate's end.
pub(crate) fn master_data(
    standing: &Standing,
    certificate: Option<&Certificate>,
    now_ms: i64,
) -> MasterData {
    let mut valid_until = now_ms + MASTER_DATA_LIFETIME_MS;
    if let Some(certificate) = certificate {
        valid_until = valid_until.min(certificate.valid_to);
    }
    MasterData {
        officer: standing.officer.id.clone(),
        officer_name: standing.officer.name.clone(),
        role: standing.officer.role.as_str().to_owned(),
        township: standing.officer.township.clone().unwrap_or_default(),
        certificate: certificate.map(|certificate| CertificateSnapshot {
            cert_no: certificate.cert_no.clone(),
            status: text_of(&certificate.status).unwrap_or_default(),
            valid_from: certificate.valid_from,
            valid_to: certificate.valid_to,
            sectors: certificate.sectors.clone(),
        }),
        scope: standing.scope.clone(),
        issued_at: now_ms,
        valid_until,
    }
}
