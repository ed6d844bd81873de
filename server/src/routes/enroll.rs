//! `POST /v1/enroll`: a device presents a one-time code and proves possession of its new key;
//! the server binds device, key and officer, allocates the device's Automerge actor and hands
//! back the officer's master data.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sync_core::scope::MasterData;
use utoipa::ToSchema;

use crate::auth::keys::random_bytes;
use crate::auth::{ProofOfPossession, now_millis, now_seconds};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::routes::run_blocking;
use crate::routes::token::master_data;
use crate::state::AppState;
use crate::store::devices::{self, Enrollment};
use crate::store::registry;

/// How long a code an admin issues stays usable: 72 hours.
pub(crate) const ADMIN_CODE_LIFETIME_MS: i64 = 72 * 3600 * 1000;

/// How long the bootstrap and demo codes stay usable: 30 days.
pub(crate) const BOOTSTRAP_CODE_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;

/// RFC 4648 base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The enrollment route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/enroll", post(enroll_device))
}

/// The enrollment request body.
#[derive(Debug, Deserialize, ToSchema)]
struct EnrollRequest {
    /// The one-time code an admin issued; spaces, dashes and case are ignored.
    code: String,
    /// A name for the device, shown to admins.
    name: Option<String>,
}

/// The enrollment answer: who the device now acts for, and what to verify the server with.
#[derive(Debug, Serialize, ToSchema)]
struct EnrollAnswer {
    /// The new device's id.
    device: String,
    /// The officer the code was issued for.
    officer: String,
    /// The officer's name.
    officer_name: String,
    /// `officer`, `supervisor` or `admin`.
    role: &'static str,
    /// The officer's township, if any.
    township: Option<String>,
    /// The device's Automerge actor, 32 hex digits.
    actor: String,
    /// The server's Ed25519 public key as a JWK, to verify master data offline.
    #[schema(value_type = Object)]
    server_key: Value,
    /// The master data as a compact JWS signed by the server.
    master_data: String,
    /// The same master data in clear (`sync_core::scope::MasterData`).
    #[schema(value_type = Object)]
    master_data_json: MasterData,
}

/// Enrolls the device whose key signed the proof, consuming the code.
#[utoipa::path(
    post,
    path = "/v1/enroll",
    tag = "auth",
    security(("dpop_proof" = [])),
    request_body = EnrollRequest,
    responses(
        (status = 200, description = "The device is enrolled", body = EnrollAnswer),
        (status = 400, description = "The code is unknown, used or expired, or the body does \
            not parse", body = ErrorBody),
        (status = 401, description = "The DPoP proof is missing, bad or replayed", body = ErrorBody),
        (status = 409, description = "The device key is already enrolled", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn enroll_device(
    State(state): State<AppState>,
    ProofOfPossession(proof): ProofOfPossession,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollAnswer>, ApiError> {
    let now_ms = now_millis();
    let enrollment = Enrollment {
        code_hash: enrollment_code_hash(&request.code),
        device_id: format!("dev-{}", hex::encode(random_bytes::<8>())),
        jkt: proof.jkt,
        jwk: proof.jwk,
        name: request.name,
        actor: random_bytes::<16>(),
        now: now_ms,
    };
    let actor = hex::encode(enrollment.actor);
    let store = state.store().clone();
    let (device, standing) = run_blocking(move || {
        Ok(store.write(move |tx| {
            let (device, officer) = devices::enroll_device(tx, &enrollment)?;
            let standing = registry::standing(tx, &officer.id, now_ms)?
                .ok_or_else(|| registry::not_found("officer", &officer.id))?;
            Ok((device, standing))
        })?)
    })
    .await?;
    tracing::info!(device = %device.id, officer = %device.officer, "enrolled a device");
    let master = master_data(&standing, standing.certificate.as_ref(), now_ms);
    let tokens = state.auth().tokens();
    Ok(Json(EnrollAnswer {
        device: device.id,
        officer: standing.officer.id,
        officer_name: standing.officer.name,
        role: standing.officer.role.as_str(),
        township: standing.officer.township,
        actor,
        server_key: tokens.public_jwk(),
        master_data: tokens.sign_master_data(&master, now_seconds()),
        master_data_json: master,
    }))
}

/// A new one-time code: 128 random bits as 26 base32 characters.
pub(crate) fn new_enrollment_code() -> String {
    let bytes = random_bytes::<16>();
    let mut code = String::with_capacity(26);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            code.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        code.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    code
}

/// The stored form of a code: SHA-256 (hex) of the code without spaces or dashes, upper case.
pub(crate) fn enrollment_code_hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|character| !character.is_whitespace() && *character != '-')
        .map(|character| character.to_ascii_uppercase())
        .collect();
    hex::encode(Sha256::digest(normalized.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_26_base32_characters_and_hash_the_same_however_typed() {
        let code = new_enrollment_code();
        assert_eq!(code.len(), 26);
        assert!(code.bytes().all(|byte| BASE32.contains(&byte)));
        assert_ne!(code, new_enrollment_code());
        let typed = format!(" {}-{} ", &code[..13].to_lowercase(), &code[13..]);
        assert_eq!(enrollment_code_hash(&typed), enrollment_code_hash(&code));
    }
}
