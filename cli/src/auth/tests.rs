//! Tests of the device key, its proofs, and the session's token and nonce handling.

use std::fs;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use crate::auth::*;
use crate::client::Client;
use crate::test_server::{TestResponse, serve};

/// RFC 9449 §6.1: the example key's coordinates and thumbprint.
const RFC_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";
const RFC_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

#[test]
fn thumbprint_and_ath_match_the_rfc_known_answers() {
    assert_eq!(jwk_thumbprint(RFC_X, RFC_Y), RFC_JKT);
    // RFC 9449 §7.1.
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn a_proof_verifies_with_the_key_in_its_header_and_carries_the_claims() {
    let key = DeviceKey::generate();

    let proof = key.proof("POST", "http://127.0.0.1:8080/v1/sync", Some("token"), Some("n-1"));

    let header = decode_header(&proof).unwrap();
    assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = header.jwk.expect("the proof carries its public key");
    assert_eq!(
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).unwrap(),
        key.thumbprint()
    );
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims =
        decode::<Value>(&proof, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).unwrap().claims;
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], "http://127.0.0.1:8080/v1/sync");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["ath"], access_token_hash("token"));
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(jsonwebtoken::get_current_timestamp()) < 60);
    let jti = claims["jti"].as_str().unwrap();
    assert!((16..=64).contains(&jti.len()));

    // Without a token or nonce the claims are absent, and every proof has a fresh jti.
    let bare = key.proof("POST", "http://h/v1/token", None, None);
    let bare_claims =
        decode::<Value>(&bare, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).unwrap().claims;
    assert!(bare_claims.get("ath").is_none());
    assert!(bare_claims.get("nonce").is_none());
    assert_ne!(bare_claims["jti"], claims["jti"]);
}

#[test]
fn the_public_jwk_has_exactly_the_public_members() {
    let key = DeviceKey::generate();
    let jwk = key.public_jwk();
    let mut members: Vec<&str> = jwk.as_object().unwrap().keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["crv", "kty", "x", "y"]);
    assert_eq!(jwk["x"].as_str().unwrap().len(), 43);
    assert_eq!(jwk["y"].as_str().unwrap().len(), 43);
    assert_eq!(
        key.thumbprint(),
        jwk_thumbprint(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
    );
}

#[test]
fn a_saved_key_loads_back_and_is_private_to_its_owner() {
    let home = tempfile::tempdir().unwrap();
    assert!(DeviceKey::load(home.path()).unwrap().is_none());
    let key = DeviceKey::generate();

    key.save(home.path()).unwrap();
    let loaded = DeviceKey::load(home.path()).unwrap().unwrap();

    assert_eq!(loaded.pkcs8_der(), key.pkcs8_der());
    assert_eq!(loaded.thumbprint(), key.thumbprint());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(home.path().join(DEVICE_KEY_FILE)).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    assert!(matches!(DeviceKey::from_pkcs8_der(b"not a key"), Err(AuthError::InvalidKey(_))));
    assert!(!format!("{key:?}").contains("pkcs8"));
}

/// What a fake server saw: method, path, proof nonce, bearer token.
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A server that accepts only nonce `fresh` (its `/v1/nonce` hands out `stale`), and refuses
/// the first authenticated call with `first_refusal`.
fn strict_server(first_refusal: &'static str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let mut tokens = 0;
    let mut refused = false;
    let url = serve(move |request| {
        let claims = request.proof_claims().unwrap_or_default();
        let nonce = claims["nonce"].as_str().unwrap_or_default().to_owned();
        let token = request.header("authorization").unwrap_or_default().to_owned();
        log.lock().unwrap().push((
            request.method.clone(),
            request.path.clone(),
            nonce.clone(),
            token.clone(),
        ));
        let response = match request.path.as_str() {
            "/v1/nonce" => TestResponse::json(200, &serde_json::json!({"nonce": "stale"})),
            _ if nonce != "fresh" => TestResponse::error(401, "use_dpop_nonce"),
            "/v1/token" => {
                tokens += 1;
                TestResponse::json(
                    200,
                    &serde_json::json!({"access_token": format!("t-{tokens}"), "expires_in": 600,
                        "master_data_json": {"valid_until": tokens}}),
                )
            }
            _ if !refused => {
                refused = true;
                TestResponse::error(401, first_refusal)
            }
            _ => TestResponse::json(200, &serde_json::json!({"ok": token})),
        };
        if request.path == "/v1/nonce" {
            response
        } else {
            response.with_header("DPoP-Nonce", "fresh")
        }
    });
    (url, seen)
}

fn calls(seen: &Seen) -> Vec<(String, String, String, String)> {
    seen.lock().unwrap().clone()
}

#[track_caller]
fn call(method: &str, path: &str, nonce: &str, token: &str) -> (String, String, String, String) {
    (method.to_owned(), path.to_owned(), nonce.to_owned(), token.to_owned())
}

#[test]
fn a_session_retries_once_with_a_new_nonce_and_once_with_a_new_token() {
    // Arrange
    let (url, seen) = strict_server("token_expired");
    let mut session = Session::new(Client::new(&url), DeviceKey::generate());

    // Act
    let answer = session.get_json("/v1/docs").unwrap();

    // Assert
    assert_eq!(answer["ok"], "DPoP t-2");
    assert_eq!(
        calls(&seen),
        [
            call("GET", "/v1/nonce", "", ""),
            call("POST", "/v1/token", "stale", ""),
            call("POST", "/v1/token", "fresh", ""),
            call("GET", "/v1/docs", "fresh", "DPoP t-1"),
            call("POST", "/v1/token", "fresh", ""),
            call("GET", "/v1/docs", "fresh", "DPoP t-2"),
        ]
    );
    assert_eq!(session.master_data().unwrap().data["valid_until"], 2);
    assert_eq!(session.nonce().unwrap(), "fresh");
}

#[test]
fn a_second_nonce_refusal_is_returned_not_retried() {
    let (url, seen) = strict_server("use_dpop_nonce");
    let mut session = Session::new(Client::new(&url), DeviceKey::generate());
    session.access_token().unwrap();
    seen.lock().unwrap().clear();

    // The first refusal is retried; the server then answers.
    session.get_json("/v1/docs").unwrap();
    assert_eq!(calls(&seen).len(), 2);

    // A server that keeps refusing gets its refusal back after one retry.
    let requests = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&requests);
    let url = serve(move |request| {
        *counter.lock().unwrap() += 1;
        if request.path == "/v1/nonce" {
            return TestResponse::json(200, &serde_json::json!({"nonce": "x"}));
        }
        TestResponse::error(401, "use_dpop_nonce").with_header("DPoP-Nonce", "x")
    });
    let mut session = Session::new(Client::new(&url), DeviceKey::generate());
    let error = session.access_token().unwrap_err();
    assert_eq!(error.code(), "use_dpop_nonce");
    assert_eq!(*requests.lock().unwrap(), 3);
}

#[test]
fn a_session_opened_on_a_home_reuses_the_cached_token_and_nonce() {
    let home = tempfile::tempdir().unwrap();
    let (url, seen) = strict_server("token_revoked");
    assert!(matches!(Session::open(Client::new(&url), home.path()), Err(AuthError::NoKey(_))));
    DeviceKey::generate().save(home.path()).unwrap();
    let mut first = Session::open(Client::new(&url), home.path()).unwrap();
    let token = first.access_token().unwrap();
    drop(first);
    seen.lock().unwrap().clear();

    let mut second = Session::open(Client::new(&url), home.path()).unwrap();

    assert_eq!(second.access_token().unwrap(), token);
    assert_eq!(second.nonce().unwrap(), "fresh");
    assert!(calls(&seen).is_empty());
    // Another server's token is not reused.
    let (other_url, other_seen) = strict_server("token_revoked");
    let mut elsewhere = Session::open(Client::new(&other_url), home.path()).unwrap();
    elsewhere.access_token().unwrap();
    assert_eq!(calls(&other_seen)[0].1, "/v1/nonce");
}
