//! Hand-made JOSE objects for hostile requests: device keys, DPoP proofs and access tokens.
//!
//! The tests build every proof and token themselves with jsonwebtoken and aws-lc-rs rather
//! than through `cli::auth`, so that a header or claim can be bent one way at a time. Where a
//! case needs a token the server itself would have signed (a string `exp`, a foreign `aud`),
//! the test signs with the server's own Ed25519 key read from its data dir, so that only the
//! bent claim is wrong.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// base64url without padding, as JOSE writes it.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url(SHA-256(data)): `ath` and thumbprints.
pub(crate) fn b64_sha256(data: &[u8]) -> String {
    b64(&Sha256::digest(data))
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// `n` random bytes.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    bytes
}

/// A fresh `jti` (22 characters).
pub(crate) fn random_jti() -> String {
    b64(&random_bytes::<16>())
}

/// The JSON of one part (0 header, 1 claims) of a compact JWS.
pub(crate) fn part(jws: &str, index: usize) -> Value {
    let encoded = jws.split('.').nth(index).expect("a compact JWS has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).expect("base64url part"))
        .expect("JSON part")
}

/// A compact JWS of `header` and `claims` whose signature `sign` makes from the signing input.
pub(crate) fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input =
        format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// An ECDSA P-256 device key held by the test.
pub(crate) struct TestKey {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
}

impl TestKey {
    /// A fresh key, enrolled nowhere.
    pub(crate) fn generate() -> Self {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("generate a P-256 key");
        Self::from_pkcs8(document.as_ref())
    }

    /// The key stored as PKCS#8 DER (as `cli::auth::DeviceKey::pkcs8_der` gives it).
    pub(crate) fn from_pkcs8(pkcs8: &[u8]) -> Self {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .expect("a P-256 PKCS#8 key");
        Self { pkcs8: pkcs8.to_vec(), pair }
    }

    /// PKCS#8 DER, for `cli::auth::DeviceKey::from_pkcs8_der`.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK `{"kty":"EC","crv":"P-256","x","y"}`.
    pub(crate) fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
    }

    /// The RFC 7638 thumbprint (jkt).
    pub(crate) fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        b64_sha256(canonical.as_bytes())
    }

    /// An ES256 signature (r‖s) of `input`.
    pub(crate) fn sign_raw(&self, input: &[u8]) -> Vec<u8> {
        self.pair.sign(&SystemRandom::new(), input).expect("ES256 signature").as_ref().to_vec()
    }

    /// A JWS of any header and claims, signed ES256 by this key.
    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        jws(header, claims, |input| self.sign_raw(input))
    }

    /// The header of a well-formed proof by this key.
    pub(crate) fn proof_header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
    }

    /// A well-formed proof, built with jsonwebtoken.
    pub(crate) fn proof(
        &self,
        htm: &str,
        htu: &str,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".to_owned());
        header.jwk = Some(serde_json::from_value(self.jwk()).expect("a JWK jsonwebtoken reads"));
        let claims = proof_claims(htm, htu, token, nonce);
        encode(&header, &claims, &EncodingKey::from_ec_der(&self.pkcs8)).expect("sign a proof")
    }
}

/// The claims of a well-formed proof.
pub(crate) fn proof_claims(
    htm: &str,
    htu: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> Value {
    let mut claims = json!({"htm": htm, "htu": htu, "iat": now(), "jti": random_jti()});
    if let Some(token) = token {
        claims["ath"] = json!(b64_sha256(token.as_bytes()));
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    claims
}

/// The server's own secrets, read from its data dir: what an attacker must never hold, and
/// what a test uses to sign tokens whose only fault is the one under test.
pub(crate) struct ServerKeys {
    token_pkcs8: Vec<u8>,
    token_pair: Ed25519KeyPair,
    nonce_key: Vec<u8>,
}

impl ServerKeys {
    /// Reads `token-key.der` and `nonce-key.bin`.
    pub(crate) fn read(data_dir: &Path) -> Self {
        let token_pkcs8 = std::fs::read(data_dir.join("token-key.der")).expect("token-key.der");
        let token_pair = Ed25519KeyPair::from_pkcs8(&token_pkcs8).expect("an Ed25519 PKCS#8 key");
        let nonce_key = std::fs::read(data_dir.join("nonce-key.bin")).expect("nonce-key.bin");
        Self { token_pkcs8, token_pair, nonce_key }
    }

    /// The raw Ed25519 public key.
    pub(crate) fn public_key(&self) -> Vec<u8> {
        self.token_pair.public_key().as_ref().to_vec()
    }

    /// A JWS of any header and claims, signed by the server's token key.
    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        jws(header, claims, |input| self.token_pair.sign(input).as_ref().to_vec())
    }

    /// A token signed with jsonwebtoken by the server's key, with a typed header.
    pub(crate) fn encode(&self, header: &Header, claims: &Value) -> String {
        encode(header, claims, &EncodingKey::from_ed_der(&self.token_pkcs8)).expect("sign a token")
    }

    /// A correctly MACed nonce for the Unix time `ts` (seconds).
    pub(crate) fn nonce_at(&self, ts: u64) -> String {
        let ts_bytes = ts.to_be_bytes();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.nonce_key), &ts_bytes);
        let mut nonce = ts_bytes.to_vec();
        nonce.extend_from_slice(&tag.as_ref()[..16]);
        b64(&nonce)
    }
}
