//! DPoP proofs (RFC 9449 §4.3), checked the way DPOP.md lists it, and the `jti` replay cache.
//!
//! The raw header JSON is checked before jsonwebtoken sees the proof: the typed `Jwk` drops
//! private members such as `d`, and `from_ec_components` accepts x and y of any split, so both
//! are refused here (DPOP.md pitfalls 6 and 7). The thumbprint is computed only after the
//! signature verified (pitfall 8); `iat` arithmetic saturates (pitfall 12); the replay cache
//! is keyed on `jti`, never on the proof string (pitfall 10).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::lock;

/// `typ` of a DPoP proof.
pub(crate) const PROOF_TYPE: &str = "dpop+jwt";

/// Oldest accepted `iat`, in seconds before now.
const MAX_AGE_SECONDS: u64 = 300;

/// Newest accepted `iat`, in seconds after now (device clocks run ahead).
const MAX_AHEAD_SECONDS: u64 = 60;

/// JWK members that only a private key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What the request the proof comes with looks like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProofTarget<'a> {
    /// The request method.
    pub(crate) htm: &'a str,
    /// `http://{Host}{path}`.
    pub(crate) htu: &'a str,
    /// The access token the request carries, whose hash the proof must hold in `ath`.
    pub(crate) access_token: Option<&'a str>,
}

/// A proof whose signature, key, method, URI, time and `ath` checked out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof's key.
    pub(crate) jkt: String,
    /// The public JWK `{"kty","crv","x","y"}`.
    pub(crate) jwk: Value,
    /// The proof's unique id, for the replay cache.
    pub(crate) jti: String,
    /// The server nonce the proof carries, still to be checked.
    pub(crate) nonce: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    typ: Option<String>,
    alg: String,
    jwk: Map<String, Value>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct ProofClaims {
    htm: String,
    htu: String,
    iat: u64,
    jti: String,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Checks everything about a proof but its nonce and its `jti`'s novelty.
///
/// # Errors
/// A reason, for the `invalid_dpop_proof` message.
pub(crate) fn verify_proof(
    proof: &str,
    target: &ProofTarget<'_>,
    now: u64,
) -> Result<VerifiedProof, String> {
    let header_part = proof.split('.').next().unwrap_or_default();
    let raw = URL_SAFE_NO_PAD.decode(header_part).map_err(|_| "the header is not base64url")?;
    let header: RawHeader =
        serde_json::from_slice(&raw).map_err(|err| format!("the header does not parse: {err}"))?;
    if header.typ.as_deref() != Some(PROOF_TYPE) {
        return Err("typ is not dpop+jwt".to_owned());
    }
    if header.alg != "ES256" {
        return Err("alg must be ES256".to_owned());
    }
    if header.crit.is_some() {
        return Err("crit is not supported".to_owned());
    }
    if PRIVATE_MEMBERS.iter().any(|member| header.jwk.contains_key(*member)) {
        return Err("the jwk holds private key members".to_owned());
    }
    let member = |name: &str| {
        header.jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("jwk.{name} is missing"))
    };
    if member("kty")? != "EC" || member("crv")? != "P-256" {
        return Err("the jwk is not an EC P-256 key".to_owned());
    }
    let (x, y) = (member("x")?, member("y")?);
    if x.len() != 43 || y.len() != 43 {
        return Err("jwk x and y must be 32 bytes each".to_owned());
    }
    let key = DecodingKey::from_ec_components(x, y).map_err(|err| format!("jwk: {err}"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|err| format!("the proof does not verify: {err}"))?
        .claims;
    if claims.htm != target.htm {
        return Err(format!("htm {} does not match {}", claims.htm, target.htm));
    }
    if claims.htu != target.htu {
        return Err(format!("htu {} does not match {}", claims.htu, target.htu));
    }
    if claims.iat.saturating_add(MAX_AGE_SECONDS) < now
        || claims.iat > now.saturating_add(MAX_AHEAD_SECONDS)
    {
        return Err("iat is outside the accepted window".to_owned());
    }
    if !(16..=64).contains(&claims.jti.len()) {
        return Err("jti must be 16 to 64 characters".to_owned());
    }
    match (target.access_token, &claims.ath) {
        (Some(token), Some(ath)) if *ath == sha256_b64(token.as_bytes()) => {}
        (None, None) => {}
        (Some(_), _) => return Err("ath does not match the access token".to_owned()),
        (None, Some(_)) => return Err("ath on a request without an access token".to_owned()),
    }
    Ok(VerifiedProof {
        // x and y decoded and the signature verified: they are canonical base64url here.
        jkt: thumbprint(x, y),
        jwk: serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
        jti: claims.jti,
        nonce: claims.nonce,
    })
}

/// RFC 7638 thumbprint of a P-256 key.
pub(crate) fn thumbprint(x: &str, y: &str) -> String {
    sha256_b64(format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes())
}

/// base64url(SHA-256(bytes)), the form of `ath` and thumbprints.
pub(crate) fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// Seconds a `jti` is remembered: a proof needs a nonce at most this old, so a replay after
/// that fails on its nonce.
const REPLAY_WINDOW_SECONDS: u64 = 300;

/// Why the replay cache refused a `jti`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// Seen within the window.
    Replayed,
    /// The cache holds its maximum of unexpired ids; retry shortly.
    Full,
}

/// The `jti` values seen in the last five minutes, bounded in memory.
///
/// When full of unexpired ids it refuses new proofs rather than forgetting one, since
/// forgetting would let that proof be replayed.
pub(crate) struct ReplayCache {
    // A std `Mutex`: each critical section is a few collection operations, never `.await`.
    inner: Mutex<ReplayInner>,
    capacity: usize,
}

struct ReplayInner {
    seen: HashSet<String>,
    // Invariant: the ids in `seen`, oldest first, with the time they were first seen.
    order: VecDeque<(u64, String)>,
}

impl ReplayCache {
    /// An empty cache of at most `capacity` ids.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(ReplayInner { seen: HashSet::new(), order: VecDeque::new() }),
            capacity,
        }
    }

    /// Records `jti`, refusing it if it was seen within the window.
    pub(crate) fn insert(&self, jti: &str, now: u64) -> Result<(), ReplayError> {
        let mut inner = lock(&self.inner);
        while let Some((seen_at, _)) = inner.order.front() {
            if seen_at.saturating_add(REPLAY_WINDOW_SECONDS) >= now {
                break;
            }
            let (_, old) = inner.order.pop_front().expect("front exists");
            inner.seen.remove(&old);
        }
        if inner.seen.contains(jti) {
            return Err(ReplayError::Replayed);
        }
        if inner.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        inner.seen.insert(jti.to_owned());
        inner.order.push_back((now, jti.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, get_current_timestamp};
    use serde_json::json;

    use super::*;
    use crate::fixtures::TestDevice;

    const HTU: &str = "http://fieldcase.test/v1/sync";

    fn target(access_token: Option<&str>) -> ProofTarget<'_> {
        ProofTarget { htm: "POST", htu: HTU, access_token }
    }

    #[track_caller]
    fn check_refused(proof: &str, target: &ProofTarget<'_>, now: u64, reason: &str) {
        match verify_proof(proof, target, now) {
            Ok(_) => panic!("accepted; expected a refusal containing {reason:?}"),
            Err(actual) => assert!(actual.contains(reason), "{actual:?} lacks {reason:?}"),
        }
    }

    fn good_claims(now: u64) -> Value {
        json!({ "htm": "POST", "htu": HTU, "iat": now, "jti": "0123456789abcdef0123", "nonce": "n" })
    }

    #[test]
    fn a_signed_proof_verifies_with_the_aws_lc_backend() {
        let device = TestDevice::generate();
        let now = get_current_timestamp();
        let proof = device.proof("POST", HTU, Some("token"), Some("n"));

        let verified = verify_proof(&proof, &target(Some("token")), now).expect("valid");

        assert_eq!(verified.jkt, device.jkt());
        assert_eq!(verified.nonce.as_deref(), Some("n"));
        assert_eq!(verified.jwk["kty"], "EC");
    }

    #[test]
    fn the_rfc_9449_thumbprint_and_ath_known_answers() {
        // RFC 9449 §6.1 and §7.1.
        assert_eq!(
            thumbprint(
                "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"
            ),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
        assert_eq!(
            sha256_b64(b"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn wrong_method_uri_ath_and_iat_are_refused() {
        let device = TestDevice::generate();
        let now = get_current_timestamp();
        let proof = device.proof("POST", HTU, Some("token"), Some("n"));
        check_refused(&proof, &ProofTarget { htm: "GET", ..target(Some("token")) }, now, "htm");
        let other_uri =
            ProofTarget { htu: "http://fieldcase.test/v1/docs", ..target(Some("token")) };
        check_refused(&proof, &other_uri, now, "htu");
        check_refused(&proof, &target(Some("other token")), now, "ath");
        check_refused(&proof, &target(None), now, "ath");
        let without_ath = device.proof("POST", HTU, None, Some("n"));
        check_refused(&without_ath, &target(Some("token")), now, "ath");
        check_refused(&proof, &target(Some("token")), now + 301, "iat");
        check_refused(&proof, &target(Some("token")), now - 61, "iat");

        let mut claims = good_claims(now);
        claims["iat"] = json!(u64::MAX);
        check_refused(&device.proof_with(&device.header(), &claims), &target(None), now, "iat");
        claims["iat"] = json!(now);
        claims["jti"] = json!("short");
        check_refused(&device.proof_with(&device.header(), &claims), &target(None), now, "jti");
    }

    #[test]
    fn forged_headers_and_keys_are_refused() {
        let device = TestDevice::generate();
        let now = get_current_timestamp();
        let claims = good_claims(now);

        let mut jwt_typ = device.header();
        jwt_typ.typ = Some("JWT".to_owned());
        check_refused(&device.proof_with(&jwt_typ, &claims), &target(None), now, "typ");

        let mut crit = device.header();
        crit.crit = Some(vec!["nonce".to_owned()]);
        check_refused(&device.proof_with(&crit, &claims), &target(None), now, "crit");

        // Signed by another key than the one in the header.
        let other = TestDevice::generate();
        check_refused(&other.proof_with(&device.header(), &claims), &target(None), now, "verify");

        // HS256 keyed with anything.
        let mut hs256 = Header::new(Algorithm::HS256);
        hs256.typ = Some(PROOF_TYPE.to_owned());
        hs256.jwk = device.header().jwk;
        let token = jsonwebtoken::encode(&hs256, &claims, &EncodingKey::from_secret(b"k")).unwrap();
        check_refused(&token, &target(None), now, "alg");

        // alg none.
        let header = device.raw_header_json();
        let mut none = header.clone();
        none["alg"] = json!("none");
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(none.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        check_refused(&unsigned, &target(None), now, "alg");

        // A jwk carrying a private member, with a valid signature.
        let mut with_d = header.clone();
        with_d["jwk"]["d"] = json!("c2VjcmV0");
        check_refused(&device.sign_raw(&with_d, &claims), &target(None), now, "private");

        // x and y re-split 33 + 31 bytes: the same key, another thumbprint.
        let x = URL_SAFE_NO_PAD.decode(header["jwk"]["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(header["jwk"]["y"].as_str().unwrap()).unwrap();
        let mut resplit = header.clone();
        resplit["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode([&x[..], &y[..1]].concat()));
        resplit["jwk"]["y"] = json!(URL_SAFE_NO_PAD.encode(&y[1..]));
        check_refused(&device.sign_raw(&resplit, &claims), &target(None), now, "32 bytes");

        // Not an EC key.
        let mut rsa = header;
        rsa["jwk"] = json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB" });
        check_refused(&device.sign_raw(&rsa, &claims), &target(None), now, "EC P-256");
    }

    #[test]
    fn a_jti_is_refused_the_second_time_within_the_window() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.insert("a", 1_000), Ok(()));
        assert_eq!(cache.insert("a", 1_100), Err(ReplayError::Replayed));
        assert_eq!(cache.insert("b", 1_100), Ok(()));
        assert_eq!(cache.insert("c", 1_100), Err(ReplayError::Full));
        // "a" expires, making room.
        assert_eq!(cache.insert("c", 1_301), Ok(()));
        assert_eq!(cache.insert("a", 1_302), Err(ReplayError::Full));
        assert_eq!(cache.insert("b", 1_302), Err(ReplayError::Replayed));
    }
}
