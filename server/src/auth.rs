//! Who is calling: DPoP proofs, access tokens and the live registry check, as the extractors
//! [`Caller`] (every protected route) and [`ProofOfPossession`] (enrollment and token minting).
//!
//! The check order is SECURITY.md §a steps 1 to 4, fail fast, nothing written before it ends:
//! 1. `Authorization: DPoP <token>` (a `Bearer` token is a downgrade: `invalid_dpop_proof`);
//! 2. the access token (`token::TokenKey::verify_access`);
//! 3. exactly one `DPoP` proof for this method and `http://{Host}{path}`, with `ath`, signed
//!    by the key the token is bound to, carrying a nonce this server issued in the last five
//!    minutes, with a `jti` not seen before (`dpop`, `nonce`);
//! 4. the registry, read live on every request: device active and still holding that key,
//!    certificate active, inside its dates and at the `rev` the token was minted at.
//!
//! Every response carries a fresh `DPoP-Nonce` ([`add_dpop_nonce`]), so a device always holds
//! a nonce and needs no extra round trip.

pub(crate) mod dpop;
pub(crate) mod keys;
pub(crate) mod nonce;
pub(crate) mod token;

use axum::extract::{FromRequestParts, OriginalUri, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

use crate::auth::dpop::{ProofTarget, ReplayCache, ReplayError, VerifiedProof};
use crate::auth::keys::KeyFiles;
use crate::auth::nonce::NonceKey;
use crate::auth::token::{TokenError, TokenKey};
use crate::error::ApiError;
use crate::registry::{Certificate, CertificateStatus, DeviceStatus, Role};
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::{Visibility, devices, registry};

/// The header a proof travels in.
pub(crate) const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The header carrying the server's current nonce.
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Proof ids remembered at most; at about 200 bytes each this bounds the cache near 40 MB.
const REPLAY_CAPACITY: usize = 200_000;

/// The server's key material and the proof replay cache.
pub(crate) struct Auth {
    tokens: TokenKey,
    nonces: NonceKey,
    replay: ReplayCache,
}

impl Auth {
    /// Wraps loaded key material.
    pub(crate) fn new(files: &KeyFiles) -> anyhow::Result<Self> {
        Ok(Self {
            tokens: TokenKey::from_pkcs8(&files.token_pkcs8)?,
            nonces: NonceKey::new(&files.nonce_key),
            replay: ReplayCache::new(REPLAY_CAPACITY),
        })
    }

    /// The token signing key.
    pub(crate) fn tokens(&self) -> &TokenKey {
        &self.tokens
    }

    /// The nonce to hand out now.
    pub(crate) fn fresh_nonce(&self) -> String {
        self.nonces.issue(now_seconds())
    }

    /// Whether the nonce is one this server issued and still accepts.
    #[cfg(test)]
    pub(crate) fn check_nonce(&self, nonce: &str) -> bool {
        self.nonces.is_valid(nonce, now_seconds())
    }

    /// Checks the request's one DPoP proof: for this method and URI, with `ath` of
    /// `access_token`, by the key `bound_jkt` when given, with a valid nonce and an unseen
    /// `jti` (recorded only when everything else passed).
    pub(crate) fn check_proof(
        &self,
        parts: &Parts,
        access_token: Option<&str>,
        bound_jkt: Option<&str>,
        now: u64,
    ) -> Result<VerifiedProof, ApiError> {
        let mut values = parts.headers.get_all(DPOP).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ApiError::InvalidDpopProof(
                "the request needs exactly one DPoP header".to_owned(),
            ));
        };
        let proof = value
            .to_str()
            .map_err(|_| ApiError::InvalidDpopProof("the DPoP header is not ASCII".to_owned()))?;
        let htu = request_htu(parts)?;
        let target = ProofTarget { htm: parts.method.as_str(), htu: &htu, access_token };
        let verified = dpop::verify_proof(proof, &target, now).map_err(|reason| {
            tracing::info!(%reason, "refused a DPoP proof");
            ApiError::InvalidDpopProof(reason)
        })?;
        if bound_jkt.is_some_and(|jkt| jkt != verified.jkt) {
            return Err(ApiError::InvalidDpopProof(
                "the proof is not signed by the key the token is bound to".to_owned(),
            ));
        }
        if !verified.nonce.as_deref().is_some_and(|nonce| self.nonces.is_valid(nonce, now)) {
            return Err(ApiError::UseDpopNonce);
        }
        self.replay.insert(&verified.jti, now).map_err(|err| match err {
            ReplayError::Replayed => {
                ApiError::InvalidDpopProof("the proof was already used".to_owned())
            }
            ReplayError::Full => ApiError::ReplayCacheFull,
        })?;
        Ok(verified)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_seconds() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `http://{Host}{path}`: the URI a proof must name, without query or fragment.
fn request_htu(parts: &Parts) -> Result<String, ApiError> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(ToString::to_string))
        .ok_or_else(|| ApiError::InvalidDpopProof("the request has no Host".to_owned()))?;
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path().to_owned(), |original| original.path().to_owned());
    Ok(format!("http://{host}{path}"))
}

/// Why a certificate does not allow acting now, if it does not.
pub(crate) fn certificate_refusal(certificate: &Certificate, now_ms: i64) -> Option<ApiError> {
    let cert_no = certificate.cert_no.clone();
    match certificate.status {
        CertificateStatus::Revoked => Some(ApiError::CertificateRevoked(cert_no)),
        CertificateStatus::Suspended => Some(ApiError::CertificateSuspended(cert_no)),
        CertificateStatus::Expired => Some(ApiError::CertificateExpired(cert_no)),
        CertificateStatus::Active if !certificate.is_valid_at(now_ms) => {
            Some(ApiError::CertificateExpired(cert_no))
        }
        CertificateStatus::Active => None,
    }
}

/// An authenticated caller who supervises: role supervisor or admin (the review, the reports).
/// An officer gets 403 `forbidden`.
pub(crate) struct Supervisor(pub(crate) Caller);

impl FromRequestParts<AppState> for Supervisor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.role {
            Role::Supervisor | Role::Admin => Ok(Self(caller)),
            Role::Officer => Err(ApiError::Forbidden(
                "this is for supervisors and admins; role officer may not use it".to_owned(),
            )),
        }
    }
}

/// A request signed by a device key, without an access token: enrollment and token minting.
pub(crate) struct ProofOfPossession(pub(crate) VerifiedProof);

impl FromRequestParts<AppState> for ProofOfPossession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(state.auth().check_proof(parts, None, None, now_seconds())?))
    }
}

/// The authenticated caller of a protected route, as the registry says now.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Officer id.
    pub(crate) officer: String,
    /// Role, from the registry.
    pub(crate) role: Role,
    /// The calling device.
    pub(crate) device: String,
    /// The officer's township (agency), from the registry.
    pub(crate) township: Option<String>,
    /// The certificate the token was minted under, checked valid now.
    pub(crate) certificate: Option<Certificate>,
    /// Its `rev`, equal to the token's (in upload-only mode, the revision before the
    /// certificate was withdrawn).
    pub(crate) cert_rev: i64,
    /// Upload-only mode (DESIGN.md §7 item 4, SECURITY.md B-18): the certificate was suspended
    /// or revoked at this server time (ms) after the still-valid token was minted. Only
    /// [`SyncCaller`] lets such a caller through, to upload what was made before; every other
    /// route refuses it with the certificate's refusal.
    pub(crate) upload_only: Option<i64>,
}

impl Caller {
    /// Refuses with `forbidden` unless the caller has `role`.
    pub(crate) fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this needs role {}", role.as_str())))
        }
    }

    /// Which documents the caller may read: officers their township's, others all.
    pub(crate) fn visibility(&self) -> Visibility {
        match self.role {
            Role::Officer => Visibility::Township(self.township.clone()),
            Role::Supervisor | Role::Admin => Visibility::All,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, false).await
    }
}

/// The caller of `POST /v1/sync`: a [`Caller`] that may also be in upload-only mode, when the
/// officer's certificate was suspended or revoked after the access token was minted.
///
/// The sync route alone takes it, and answers such a caller without a feed (SECURITY.md B-18):
/// what the device made before the withdrawal is accepted and flagged for review, what it
/// made after goes to quarantine.
pub(crate) struct SyncCaller(pub(crate) Caller);

impl FromRequestParts<AppState> for SyncCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(authenticate(parts, state, true).await?))
    }
}

/// Runs the checks of SECURITY.md §a steps 1 to 4; with `upload_only`, a token minted before its
/// certificate was withdrawn passes as an upload-only caller instead of being refused.
async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
    upload_only: bool,
) -> Result<Caller, ApiError> {
    let now = now_seconds();
    let token = access_token(parts)?.to_owned();
    if !parts.headers.contains_key(DPOP) {
        return Err(ApiError::InvalidDpopProof("the request has no DPoP proof".to_owned()));
    }
    let claims = state.auth().tokens().verify_access(&token).map_err(|err| match err {
        TokenError::Expired => ApiError::TokenExpired,
        TokenError::Invalid(reason) => ApiError::InvalidToken(reason),
    })?;
    state.auth().check_proof(parts, Some(&token), Some(&claims.cnf.jkt), now)?;

    let store = state.store().clone();
    let lookup = claims.clone();
    let (device, officer, certificate, withdrawal) = run_blocking(move || {
        Ok(store.read(|tx| {
            let device = devices::get_device(tx, &lookup.device)?;
            let officer = registry::get_officer(tx, &lookup.sub)?;
            let certificate = match &lookup.cert_no {
                Some(cert_no) => registry::get_certificate(tx, cert_no)?,
                None => None,
            };
            let withdrawal = match &certificate {
                Some(certificate) if upload_only && is_withdrawn(certificate) => {
                    registry::certificate_withdrawal(tx, &certificate.cert_no)?
                }
                _ => None,
            };
            Ok((device, officer, certificate, withdrawal))
        })?)
    })
    .await?;

    let device = device
        .filter(|device| {
            device.status == DeviceStatus::Active
                && device.jkt == claims.cnf.jkt
                && device.officer == claims.sub
        })
        .ok_or(ApiError::DeviceRevoked)?;
    let officer = officer
        .ok_or_else(|| ApiError::InvalidToken("the officer is not registered".to_owned()))?;
    let mut withdrawn_at = None;
    let certificate = match (&claims.cert_no, certificate) {
        (None, _) if officer.role == Role::Officer => return Err(ApiError::TokenRevoked),
        (None, _) => None,
        (Some(_), None) => return Err(ApiError::TokenRevoked),
        (Some(_), Some(certificate)) => {
            if let Some(refusal) = certificate_refusal(&certificate, now_millis()) {
                // Upload-only: an officer's token minted at the revision the certificate had
                // just before its withdrawal, and no later than the withdrawal itself.
                let minted_before = withdrawal.filter(|withdrawal| {
                    officer.role == Role::Officer
                        && certificate.officer == officer.id
                        && claims.cert_rev == withdrawal.rev_before
                        && i64::try_from(claims.iat)
                            .is_ok_and(|iat| iat.saturating_mul(1000) <= withdrawal.at)
                });
                match minted_before {
                    Some(withdrawal) => withdrawn_at = Some(withdrawal.at),
                    None => return Err(refusal),
                }
            } else if certificate.rev != claims.cert_rev || certificate.officer != officer.id {
                return Err(ApiError::TokenRevoked);
            }
            Some(certificate)
        }
    };
    Ok(Caller {
        officer: officer.id,
        role: officer.role,
        device: device.id,
        township: officer.township,
        certificate,
        cert_rev: claims.cert_rev,
        upload_only: withdrawn_at,
    })
}

/// Whether the certificate is suspended or revoked: the states upload-only mode applies to.
fn is_withdrawn(certificate: &Certificate) -> bool {
    matches!(certificate.status, CertificateStatus::Suspended | CertificateStatus::Revoked)
}

/// The token of `Authorization: DPoP <token>`.
fn access_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::InvalidToken("the request carries no access token".to_owned()))?
        .to_str()
        .map_err(|_| ApiError::InvalidToken("the Authorization header is not ASCII".to_owned()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("dpop") && !token.trim().is_empty() {
        Ok(token.trim())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Err(ApiError::InvalidDpopProof(
            "the token is bound to a device key: use the DPoP scheme with a proof".to_owned(),
        ))
    } else {
        Err(ApiError::InvalidToken("the Authorization header is not `DPoP <token>`".to_owned()))
    }
}

/// Adds a fresh `DPoP-Nonce` to every response that does not carry one yet.
pub(crate) async fn add_dpop_nonce(
    State(state): State<AppState>,
    mut response: Response,
) -> Response {
    if !response.headers().contains_key(DPOP_NONCE)
        && let Ok(value) = HeaderValue::from_str(&state.auth().fresh_nonce())
    {
        response.headers_mut().insert(DPOP_NONCE, value);
    }
    response
}
