//! Hostile tokens and proofs are refused with the exact status and code, and store nothing.
//!
//! One test per case of SECURITY.md §c B-01..B-18 that applies to our design
//! (docs/identity.md). Every hostile request is a `POST /v1/sync` that carries a valid new
//! record of the officer's own township and entrusted matter, written by the officer's own
//! actor: had the server let the request through, the record would be stored. So each test
//! also checks, through a supervisor, that nothing was stored.

use std::net::TcpListener;

use aws_lc_rs::encoding::AsBigEndian as _;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use cli::auth::Session;
use cli::client::{ClientError, RawResponse};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sync_core::edit::set_field;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, SyncRequest, SyncResponse};

use crate::harness::{
    Device, Enrolled, HandMade, TestServer, actor_of, admin_post, assert_error, certificate_of,
    document_count, fresh_nonce, history_len, upload,
};
use crate::jose::{
    ServerKeys, TestKey, b64, b64_sha256, now, part, proof_claims, random_bytes, random_jti,
};

/// A demo server, an enrolled officer with a record ready to upload, and a supervisor.
struct Fixture {
    server: TestServer,
    /// Officer `officers[0]` of the first township, enrolled with a key the test holds.
    officer: Enrolled,
    supervisor: Session,
    record: HandMade,
    /// The sync body uploading `record`.
    body: Vec<u8>,
    keys: ServerKeys,
}

impl Fixture {
    fn new() -> Self {
        let server = TestServer::spawn_demo();
        let demo = server.demo().clone();
        let officer = server.enroll(&demo.officers[0].code);
        let supervisor = server.supervisor();
        let mut record =
            HandMade::inspection(&officer.actor(), &demo.officers[0].township, &demo.entrusted);
        let body = record.upload(&[]);
        let keys = ServerKeys::read(server.data_dir());
        Self { server, officer, supervisor, record, body, keys }
    }

    /// A genuine access token of the officer.
    fn token(&mut self) -> String {
        self.officer.session.access_token().expect("an access token")
    }

    /// A genuine proof for `POST /v1/sync` bound to `token`.
    fn proof(&self, token: &str) -> String {
        self.officer.proof("POST", "/v1/sync", Some(token))
    }

    /// `POST /v1/sync` of the record with exactly these `Authorization` and `DPoP` headers.
    fn post_sync(&self, authorization: Option<&str>, dpop: Option<&str>) -> RawResponse {
        let mut headers = vec![("content-type", CONTENT_TYPE)];
        headers.extend(authorization.map(|value| ("authorization", value)));
        headers.extend(dpop.map(|value| ("dpop", value)));
        self.server
            .client()
            .request_raw("POST", "/v1/sync", &headers, self.body.clone())
            .expect("the server answers")
    }

    /// `POST /v1/sync` with `Authorization: DPoP <token>` and `DPoP: <proof>`.
    fn upload_with(&self, token: &str, proof: &str) -> RawResponse {
        self.post_sync(Some(&format!("DPoP {token}")), Some(proof))
    }

    /// Uploads with `token` and a genuine proof bound to it.
    fn upload_with_token(&self, token: &str) -> RawResponse {
        self.upload_with(token, &self.proof(token))
    }

    /// `POST /v1/sync` that uploads nothing and reads the feed, with `token` and a genuine
    /// proof bound to it.
    fn pull_with_token(&self, token: &str) -> RawResponse {
        let authorization = format!("DPoP {token}");
        let proof = self.proof(token);
        let headers = [
            ("content-type", CONTENT_TYPE),
            ("authorization", authorization.as_str()),
            ("dpop", proof.as_str()),
        ];
        let pull = SyncRequest { cursor: 0, docs: Vec::new() }.encode();
        self.server
            .client()
            .request_raw("POST", "/v1/sync", &headers, pull)
            .expect("the server answers")
    }

    /// The genuine token with its header and claims bent by `edit`, re-signed by the server's
    /// own key, so that the bent part is the only fault.
    fn resigned(&mut self, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let token = self.token();
        let (mut header, mut claims) = (part(&token, 0), part(&token, 1));
        edit(&mut header, &mut claims);
        self.keys.sign(&header, &claims)
    }

    /// `GET /v1/docs` with `token` and a proof of the officer's key carrying `nonce`.
    fn list_with(&self, token: &str, nonce: &str) -> RawResponse {
        let proof =
            self.officer.key.proof("GET", &self.officer.htu("/v1/docs"), Some(token), Some(nonce));
        let authorization = format!("DPoP {token}");
        self.server
            .client()
            .request_raw(
                "GET",
                "/v1/docs",
                &[("authorization", &authorization), ("dpop", &proof)],
                Vec::new(),
            )
            .expect("the server answers")
    }

    #[track_caller]
    fn assert_nothing_stored(&mut self) {
        assert_eq!(document_count(&mut self.supervisor), 0, "nothing may be stored");
    }
}

/// Asserts an authentication refusal: status, code, and for a 401 the
/// `WWW-Authenticate: DPoP error="<code>"` challenge; every answer carries a `DPoP-Nonce`.
#[track_caller]
fn assert_refused(response: &RawResponse, status: u16, code: &str) {
    assert_error(response, status, code);
    if status == 401 {
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("DPoP") && challenge.contains(&format!("error=\"{code}\"")),
            "WWW-Authenticate of a {code} refusal: {challenge:?}"
        );
    }
    assert!(response.header("dpop-nonce").is_some(), "every answer carries a DPoP-Nonce");
}

/// The status and code of a refused session call.
#[track_caller]
fn api_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_request_with_a_valid_token_and_proof_is_accepted() {
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();

    // Act
    let response = fixture.upload_with_token(&token);

    // Assert
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert!(response.header("dpop-nonce").is_some());
    assert_eq!(document_count(&mut fixture.supervisor), 1);
    // The test's own signing with the server's keys is sound: an unchanged token re-signed by
    // the server's key and a nonce MACed now by the server's nonce key are accepted, so the
    // bent copies of the other tests fail for their one bent part.
    let resigned = fixture.resigned(|_, _| {});
    let nonce = fixture.keys.nonce_at(now());
    let listed = fixture.list_with(&resigned, &nonce);
    assert_eq!(listed.status, 200, "{}", String::from_utf8_lossy(&listed.body));
    let id = fixture.record.id.to_string();
    assert_eq!(history_len(&mut fixture.supervisor, &id), 1);
}

#[test]
fn an_access_token_is_bound_to_the_device_key_and_signed_by_the_published_server_key() {
    // Arrange
    let mut fixture = Fixture::new();

    // Act
    let token = fixture.token();

    // Assert
    let (header, claims) = (part(&token, 0), part(&token, 1));
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let server_key = &fixture.officer.answer["server_key"];
    assert_eq!(server_key["x"], b64(&fixture.keys.public_key()));
    let kid = &b64_sha256(&fixture.keys.public_key())[..16];
    assert_eq!(header["kid"], kid);
    assert_eq!(server_key["kid"], kid);
    assert_eq!(claims["cnf"]["jkt"], fixture.officer.key.thumbprint());
    assert_eq!(claims["iss"], "fieldcase");
    assert_eq!(claims["aud"], "fieldcase-sync");
    assert_eq!(claims["sub"], fixture.officer.answer["officer"]);
    assert_eq!(claims["device"], fixture.officer.answer["device"]);
    let expires = claims["exp"].as_u64().expect("numeric exp");
    assert!(expires <= now() + 600 + 5, "exp = min(now + 600, valid_to)");
    let demo = fixture.server.demo().clone();
    let scope: Vec<&str> =
        claims["scope"].as_array().expect("scope").iter().filter_map(Value::as_str).collect();
    assert!(
        scope.contains(&format!("township:{}", demo.officers[0].township).as_str()),
        "{scope:?}"
    );
    assert!(scope.contains(&format!("matter:{}", demo.entrusted).as_str()), "{scope:?}");
}

#[test]
fn an_access_token_with_alg_none_and_no_signature_is_an_invalid_token() {
    // B-01
    // Arrange
    let mut fixture = Fixture::new();
    let genuine = fixture.token();
    let mut header = part(&genuine, 0);
    header["alg"] = json!("none");
    let claims = part(&genuine, 1);
    let unsigned =
        format!("{}.{}.", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));

    // Act
    let response = fixture.upload_with_token(&unsigned);

    // Assert
    assert_refused(&response, 401, "invalid_token");
    fixture.assert_nothing_stored();
}

#[test]
fn an_hs256_token_keyed_with_the_server_public_key_is_an_invalid_token() {
    // B-02: the HMAC key is the server's Ed25519 public key, as published at enrollment.
    // Arrange
    let mut fixture = Fixture::new();
    let genuine = fixture.token();
    let claims = part(&genuine, 1);
    let published_x = fixture.officer.answer["server_key"]["x"]
        .as_str()
        .expect("the enroll answer publishes the server key")
        .to_owned();
    let raw_public_key =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &published_x)
            .expect("base64url x");
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = part(&genuine, 0)["kid"].as_str().map(str::to_owned);
    let forged: Vec<String> = [raw_public_key.as_slice(), published_x.as_bytes()]
        .iter()
        .map(|secret| encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap())
        .collect();

    for token in &forged {
        // Act
        let response = fixture.upload_with_token(token);

        // Assert
        assert_refused(&response, 401, "invalid_token");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_dpop_proof_or_other_server_jwt_presented_as_access_token_is_an_invalid_token() {
    // B-03: a proof (typ dpop+jwt), the server-signed master data (typ master-data+jwt) and a
    // server-signed copy of the genuine token with typ JWT.
    // Arrange
    let mut fixture = Fixture::new();
    let htu = fixture.officer.htu("/v1/sync");
    let nonce = fresh_nonce(&fixture.server.client());
    let proof_as_token = fixture.officer.key.proof("POST", &htu, None, Some(&nonce));
    let master_data = fixture.officer.answer["master_data"]
        .as_str()
        .expect("the enroll answer holds the signed master data")
        .to_owned();
    let plain_jwt = fixture.resigned(|header, _| header["typ"] = json!("JWT"));

    for token in [&proof_as_token, &master_data, &plain_jwt] {
        // Act
        let response = fixture.upload_with_token(token);

        // Assert
        assert_refused(&response, 401, "invalid_token");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_server_signed_token_with_a_string_exp_or_nbf_is_an_invalid_token() {
    // B-04 (GHSA-h395-gr6q-cpjc): correctly signed by the server's key, with string times.
    // Arrange
    let mut fixture = Fixture::new();
    let string_exp = fixture.resigned(|_, claims| claims["exp"] = json!("never"));
    let string_nbf = fixture.resigned(|_, claims| claims["nbf"] = json!("99999999999"));
    let genuine = fixture.token();
    let mut typed_header = Header::new(Algorithm::EdDSA);
    typed_header.typ = Some("at+jwt".to_owned());
    typed_header.kid = part(&genuine, 0)["kid"].as_str().map(str::to_owned);
    let mut claims = part(&genuine, 1);
    claims["exp"] = json!(claims["exp"].to_string());
    let string_exp_by_jsonwebtoken = fixture.keys.encode(&typed_header, &claims);

    for token in [&string_exp, &string_nbf, &string_exp_by_jsonwebtoken] {
        // Act
        let response = fixture.upload_with_token(token);

        // Assert
        assert_refused(&response, 401, "invalid_token");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_token_expired_beyond_the_leeway_is_token_expired() {
    // B-05
    // Arrange
    let mut fixture = Fixture::new();
    let expired = fixture.resigned(|_, claims| {
        claims["iat"] = json!(now() - 900);
        claims["nbf"] = json!(now() - 900);
        claims["exp"] = json!(now() - 120);
    });

    // Act
    let response = fixture.upload_with_token(&expired);

    // Assert
    assert_refused(&response, 401, "token_expired");
    fixture.assert_nothing_stored();
}

#[test]
fn a_token_not_valid_yet_is_an_invalid_token() {
    // B-05
    // Arrange
    let mut fixture = Fixture::new();
    let future = fixture.resigned(|_, claims| {
        claims["nbf"] = json!(now() + 300);
        claims["exp"] = json!(now() + 900);
    });

    // Act
    let response = fixture.upload_with_token(&future);

    // Assert
    assert_refused(&response, 401, "invalid_token");
    fixture.assert_nothing_stored();
}

#[test]
fn a_token_for_another_audience_issuer_or_key_id_or_without_subject_is_an_invalid_token() {
    // B-06
    // Arrange
    let mut fixture = Fixture::new();
    let tokens = [
        fixture.resigned(|_, claims| claims["aud"] = json!("another-api")),
        fixture.resigned(|_, claims| claims["iss"] = json!("https://issuer.example")),
        fixture.resigned(|header, _| header["kid"] = json!("AAAAAAAAAAAAAAAA")),
        fixture.resigned(|_, claims| {
            claims.as_object_mut().unwrap().remove("sub");
        }),
        fixture.resigned(|header, _| header["crit"] = json!(["exp"])),
    ];

    for token in &tokens {
        // Act
        let response = fixture.upload_with_token(token);

        // Assert
        assert_refused(&response, 401, "invalid_token");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn an_access_token_header_with_jku_x5u_or_an_embedded_jwk_is_refused_without_fetching() {
    // B-07: the URLs point at a listener of the test; the server must never connect to it.
    // Arrange
    let mut fixture = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let trap = format!("http://{}/keys.json", listener.local_addr().unwrap());
    let attacker = Ed25519KeyPair::generate().expect("an Ed25519 key");
    let attacker_jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "x": b64(attacker.public_key().as_ref())
    });
    let genuine = fixture.token();
    let mut embedded_header = part(&genuine, 0);
    embedded_header["jwk"] = attacker_jwk;
    let embedded = crate::jose::jws(&embedded_header, &part(&genuine, 1), |input| {
        attacker.sign(input).as_ref().to_vec()
    });
    let tokens = [
        fixture.resigned(|header, _| header["jku"] = json!(trap)),
        fixture.resigned(|header, _| header["x5u"] = json!(trap)),
        embedded,
    ];

    for token in &tokens {
        // Act
        let response = fixture.upload_with_token(token);

        // Assert
        assert_refused(&response, 401, "invalid_token");
    }
    fixture.assert_nothing_stored();
    let connection = listener.accept();
    assert!(
        connection.as_ref().is_err_and(|err| err.kind() == std::io::ErrorKind::WouldBlock),
        "the server fetched a URL from a token header: {connection:?}"
    );
}

#[test]
fn a_valid_token_with_the_bearer_scheme_or_without_a_proof_is_refused() {
    // B-08
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();

    // Act
    let bearer = fixture.post_sync(Some(&format!("Bearer {token}")), Some(&fixture.proof(&token)));
    let no_proof = fixture.post_sync(Some(&format!("DPoP {token}")), None);
    let no_token = fixture.post_sync(None, Some(&fixture.proof(&token)));

    // Assert
    assert_refused(&bearer, 401, "invalid_dpop_proof");
    assert_refused(&no_proof, 401, "invalid_dpop_proof");
    assert_eq!(no_token.status, 401, "no Authorization header at all");
    fixture.assert_nothing_stored();
}

#[test]
fn a_proof_by_another_key_than_the_token_is_bound_to_is_refused() {
    // B-09: the token is stolen to a device with another key.
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let thief = TestKey::generate();
    let htu = fixture.officer.htu("/v1/sync");
    let nonce = fresh_nonce(&fixture.server.client());
    let thief_proof = thief.proof("POST", &htu, Some(&token), Some(&nonce));
    // The victim's public key in the header, signed by the thief's key.
    let nonce = fresh_nonce(&fixture.server.client());
    let borrowed_jwk = thief.sign(
        &fixture.officer.key.proof_header(),
        &proof_claims("POST", &htu, Some(&token), Some(&nonce)),
    );

    for proof in [&thief_proof, &borrowed_jwk] {
        // Act
        let response = fixture.upload_with(&token, proof);

        // Assert
        assert_refused(&response, 401, "invalid_dpop_proof");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_replayed_proof_is_refused_and_the_upload_is_applied_once() {
    // B-10
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let proof = fixture.proof(&token);

    // Act
    let first = fixture.upload_with(&token, &proof);
    let replay = fixture.upload_with(&token, &proof);

    // Assert
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_refused(&replay, 401, "invalid_dpop_proof");
    assert_eq!(document_count(&mut fixture.supervisor), 1);
    let id = fixture.record.id.to_string();
    assert_eq!(history_len(&mut fixture.supervisor, &id), 1);
}

#[test]
fn a_proof_for_another_method_path_or_host_is_refused() {
    // B-11
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let proofs = [
        fixture.officer.proof("GET", "/v1/sync", Some(&token)),
        fixture.officer.proof("POST", "/v1/docs", Some(&token)),
        {
            let nonce = fresh_nonce(&fixture.server.client());
            fixture.officer.key.proof(
                "POST",
                "http://fieldcase.example/v1/sync",
                Some(&token),
                Some(&nonce),
            )
        },
        {
            let nonce = fresh_nonce(&fixture.server.client());
            let htu = format!("{}?cursor=0", fixture.officer.htu("/v1/sync"));
            fixture.officer.key.proof("POST", &htu, Some(&token), Some(&nonce))
        },
    ];

    for proof in &proofs {
        // Act
        let response = fixture.upload_with(&token, proof);

        // Assert
        assert_refused(&response, 401, "invalid_dpop_proof");
    }
    fixture.assert_nothing_stored();

    // A proof for one document's path does not open another's.
    let (x, y) = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002");
    let proof = fixture.officer.proof("GET", &format!("/v1/docs/{x}"), Some(&token));
    let authorization = format!("DPoP {token}");
    let response = fixture
        .server
        .client()
        .request_raw(
            "GET",
            &format!("/v1/docs/{y}"),
            &[("authorization", &authorization), ("dpop", &proof)],
            Vec::new(),
        )
        .expect("the server answers");
    assert_refused(&response, 401, "invalid_dpop_proof");
}

#[test]
fn a_proof_without_a_nonce_or_with_a_stale_or_forged_one_gets_a_fresh_nonce_to_retry_with() {
    // B-12: the stale nonce is correctly MACed by the server's nonce key, 400 s old.
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let htu = fixture.officer.htu("/v1/sync");
    let stale = fixture.keys.nonce_at(now() - 400);
    let forged = b64(&random_bytes::<24>());
    let proofs = [
        fixture.officer.key.proof("POST", &htu, Some(&token), None),
        fixture.officer.key.proof("POST", &htu, Some(&token), Some(&stale)),
        fixture.officer.key.proof("POST", &htu, Some(&token), Some(&forged)),
    ];

    let mut fresh = String::new();
    for proof in &proofs {
        // Act
        let response = fixture.upload_with(&token, proof);

        // Assert
        assert_refused(&response, 401, "use_dpop_nonce");
        fresh = response.header("dpop-nonce").expect("a fresh nonce").to_owned();
        assert_ne!(fresh, stale);
    }
    fixture.assert_nothing_stored();

    // Act: the client retries once with the nonce it was given.
    let retry = fixture
        .upload_with(&token, &fixture.officer.key.proof("POST", &htu, Some(&token), Some(&fresh)));

    // Assert
    assert_eq!(retry.status, 200, "{}", String::from_utf8_lossy(&retry.body));
    assert_eq!(document_count(&mut fixture.supervisor), 1);
}

#[test]
fn a_proof_whose_ath_does_not_match_the_token_is_refused() {
    // B-13
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let other_token = fixture.resigned(|_, claims| claims["jti"] = json!(random_jti()));
    let wrong_ath = fixture.officer.proof("POST", "/v1/sync", Some(&other_token));
    let no_ath = fixture.officer.proof("POST", "/v1/sync", None);

    for proof in [&wrong_ath, &no_ath] {
        // Act
        let response = fixture.upload_with(&token, proof);

        // Assert
        assert_refused(&response, 401, "invalid_dpop_proof");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_proof_with_a_private_jwk_another_algorithm_or_a_malformed_header_is_refused() {
    // B-14, and the header checks of DPOP.md's listing.
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let key = &fixture.officer.key;
    let htu = fixture.officer.htu("/v1/sync");
    let client = fixture.server.client();
    let claims = || proof_claims("POST", &htu, Some(&token), Some(&fresh_nonce(&client)));
    let mut proofs = Vec::new();

    // The jwk carries the private scalar `d`.
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.pkcs8(),
    )
    .unwrap();
    let d = pair.private_key().as_be_bytes().expect("the private scalar");
    let mut header = key.proof_header();
    header["jwk"]["d"] = json!(b64(d.as_ref()));
    proofs.push(key.sign(&header, &claims()));

    // alg HS256, keyed with the public x coordinate.
    let mut header = key.proof_header();
    header["alg"] = json!("HS256");
    let secret = header["jwk"]["x"].as_str().unwrap().to_owned();
    proofs.push(crate::jose::jws(&header, &claims(), |input| {
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        aws_lc_rs::hmac::sign(&mac_key, input).as_ref().to_vec()
    }));

    // A validly signed RS256 proof with an RSA jwk.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa_jwk = json!({
        "kty": "RSA",
        "n": b64(rsa.public_key().modulus().big_endian_without_leading_zero()),
        "e": b64(rsa.public_key().exponent().big_endian_without_leading_zero()),
    });
    let header = json!({"typ": "dpop+jwt", "alg": "RS256", "jwk": rsa_jwk});
    proofs.push(crate::jose::jws(&header, &claims(), |input| {
        let mut signature = vec![0; rsa.public_modulus_len()];
        rsa.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            input,
            &mut signature,
        )
        .unwrap();
        signature
    }));

    // The same key with x and y re-split 33 + 31 bytes (a different thumbprint).
    let point = key.jwk();
    let decode = |text: &Value| {
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            text.as_str().unwrap(),
        )
        .unwrap()
    };
    let mut xy = decode(&point["x"]);
    xy.extend(decode(&point["y"]));
    let mut header = key.proof_header();
    header["jwk"]["x"] = json!(b64(&xy[..33]));
    header["jwk"]["y"] = json!(b64(&xy[33..]));
    proofs.push(key.sign(&header, &claims()));

    // typ JWT; an unknown critical header; a jwk of another curve name.
    let mut header = key.proof_header();
    header["typ"] = json!("JWT");
    proofs.push(key.sign(&header, &claims()));
    let mut header = key.proof_header();
    header["crit"] = json!(["exp"]);
    proofs.push(key.sign(&header, &claims()));
    let mut header = key.proof_header();
    header["jwk"]["crv"] = json!("P-384");
    proofs.push(key.sign(&header, &claims()));

    for proof in &proofs {
        // Act
        let response = fixture.upload_with(&token, proof);

        // Assert
        assert_refused(&response, 401, "invalid_dpop_proof");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_proof_issued_outside_the_time_window_or_with_a_bad_jti_is_refused() {
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let key = &fixture.officer.key;
    let htu = fixture.officer.htu("/v1/sync");
    let client = fixture.server.client();
    let bent = |edit: &dyn Fn(&mut Value)| {
        let mut claims = proof_claims("POST", &htu, Some(&token), Some(&fresh_nonce(&client)));
        edit(&mut claims);
        key.sign(&key.proof_header(), &claims)
    };
    let proofs = [
        bent(&|claims| claims["iat"] = json!(now() - 600)),
        bent(&|claims| claims["iat"] = json!(now() + 600)),
        bent(&|claims| claims["iat"] = json!(u64::MAX)),
        bent(&|claims| claims["jti"] = json!("short")),
        bent(&|claims| {
            claims.as_object_mut().unwrap().remove("jti");
        }),
    ];

    for proof in &proofs {
        // Act
        let response = fixture.upload_with(&token, proof);

        // Assert
        assert_refused(&response, 401, "invalid_dpop_proof");
    }
    fixture.assert_nothing_stored();
}

#[test]
fn a_revoked_or_unknown_device_key_is_device_revoked() {
    // B-15: the device is reported lost; its token is still unexpired.
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let mut admin = fixture.server.admin();
    let device = fixture.officer.answer["device"].as_str().expect("device id").to_owned();
    admin_post(&mut admin, &format!("devices/{device}/revoke"));

    // Act
    let sync = fixture.upload_with_token(&token);
    let mint = fixture
        .server
        .client()
        .request_raw(
            "POST",
            "/v1/token",
            &[("dpop", &fixture.officer.proof("POST", "/v1/token", None))],
            Vec::new(),
        )
        .expect("the server answers");
    let stranger = TestKey::generate();
    let stranger_proof = stranger.proof(
        "POST",
        &fixture.officer.htu("/v1/token"),
        None,
        Some(&fresh_nonce(&fixture.server.client())),
    );
    let unknown = fixture
        .server
        .client()
        .request_raw("POST", "/v1/token", &[("dpop", &stranger_proof)], Vec::new())
        .expect("the server answers");

    // Assert
    assert_refused(&sync, 401, "device_revoked");
    assert_refused(&mint, 401, "device_revoked");
    assert_refused(&unknown, 401, "device_revoked");
    fixture.assert_nothing_stored();
}

#[test]
fn after_certificate_revocation_no_token_is_minted_and_a_live_token_stops_working() {
    // B-16 adapted: our design has no refresh token (the device key mints access tokens on
    // `POST /v1/token`), so the "refresh" that must be refused is minting, with 403
    // certificate_revoked, and the still-unexpired access token must be refused on its next
    // read (the registry is checked live on every request). Uploading with it is upload-only
    // mode, B-18 below; here it reads the feed and a document list.
    // Arrange
    let mut fixture = Fixture::new();
    let token = fixture.token();
    let mut admin = fixture.server.admin();
    let officer = fixture.officer.answer["officer"].as_str().unwrap().to_owned();
    let cert_no = certificate_of(&mut admin, &officer);
    admin_post(&mut admin, &format!("certificates/{cert_no}/revoke"));

    // Act
    let sync = fixture.pull_with_token(&token);
    let list = fixture.list_with(&token, &fresh_nonce(&fixture.server.client()));
    let mint = fixture
        .server
        .client()
        .request_raw(
            "POST",
            "/v1/token",
            &[("dpop", &fixture.officer.proof("POST", "/v1/token", None))],
            Vec::new(),
        )
        .expect("the server answers");

    // Assert
    assert_refused(&sync, 403, "certificate_revoked");
    assert_refused(&list, 403, "certificate_revoked");
    assert_refused(&mint, 403, "certificate_revoked");
    fixture.assert_nothing_stored();
}

#[test]
fn a_suspended_certificate_is_refused_and_after_reinstatement_older_tokens_are_token_revoked() {
    // B-17 adapted: there is no refresh-token family to revoke; the nearest case is a token
    // issued before the certificate changed (each suspend/reinstate bumps `cert_rev`), which
    // must be refused with 401 token_revoked while a newly minted token works.
    // Arrange
    let mut fixture = Fixture::new();
    let old_token = fixture.token();
    let mut admin = fixture.server.admin();
    let officer = fixture.officer.answer["officer"].as_str().unwrap().to_owned();
    let cert_no = certificate_of(&mut admin, &officer);
    admin_post(&mut admin, &format!("certificates/{cert_no}/suspend"));

    // Act + Assert: suspended; the old token reads nothing (uploading with it is upload-only
    // mode, B-18).
    let suspended = fixture.pull_with_token(&old_token);
    assert_refused(&suspended, 403, "certificate_suspended");
    let mint = fixture
        .server
        .client()
        .request_raw(
            "POST",
            "/v1/token",
            &[("dpop", &fixture.officer.proof("POST", "/v1/token", None))],
            Vec::new(),
        )
        .expect("the server answers");
    assert_refused(&mint, 403, "certificate_suspended");
    fixture.assert_nothing_stored();

    // Act + Assert: reinstated; the old token names an old certificate revision.
    admin_post(&mut admin, &format!("certificates/{cert_no}/reinstate"));
    let stale = fixture.upload_with_token(&old_token);
    assert_refused(&stale, 401, "token_revoked");
    fixture.assert_nothing_stored();
    let mint = fixture
        .server
        .client()
        .request_raw(
            "POST",
            "/v1/token",
            &[("dpop", &fixture.officer.proof("POST", "/v1/token", None))],
            Vec::new(),
        )
        .expect("the server answers");
    assert_eq!(mint.status, 200, "{}", String::from_utf8_lossy(&mint.body));
    let minted: Value = serde_json::from_slice(&mint.body).unwrap();
    let new_token = minted["access_token"].as_str().expect("a new token");
    assert_ne!(part(new_token, 1)["cert_rev"], part(&old_token, 1)["cert_rev"]);
    let accepted = fixture.upload_with_token(new_token);
    assert_eq!(accepted.status, 200, "{}", String::from_utf8_lossy(&accepted.body));
    assert_eq!(document_count(&mut fixture.supervisor), 1);
}

#[test]
fn offline_edits_made_before_revocation_are_accepted_for_review_and_later_ones_quarantined() {
    // B-18 (DESIGN.md §7 item 4): the access token a device minted before its certificate was
    // revoked still uploads (upload-only mode) but reads nothing. An edit made offline before
    // the revocation is merged and flagged `needs_review`; an edit that builds on a change the
    // server received after the revocation is quarantined; nothing is dropped, and the device
    // keeps nothing pending.
    // Arrange: the officer's device syncs a record, which leaves it an access token, and edits
    // the record offline; a hand-made record by the same device's actor is on the server too.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    assert_eq!(device.json(&["sync"])["uploaded"], 1);
    let mut hand_made =
        HandMade::inspection(&actor_of(&enrolled), &demo.officers[0].township, &demo.entrusted);
    let mut device_session = device.session();
    let created = upload(&mut device_session, hand_made.upload(&[]));
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    device.json(&["edit", &doc, "--append", "findings=消防通道被堵塞。"]);
    let mut admin = server.admin();
    let cert_no = certificate_of(&mut admin, enrolled["officer"].as_str().unwrap());
    admin_post(&mut admin, &format!("certificates/{cert_no}/revoke"));
    // A colleague edits the hand-made record after the revocation; the change reaches the
    // revoked device's copy (as only a tampered device or a copied change could), which
    // builds on it.
    let mut colleague = server.enroll(&demo.officers[1].code);
    let base = hand_made.heads();
    let mut colleague_copy = hand_made.fork_as(&colleague.actor());
    set_field(&mut colleague_copy.doc, "site.name", "五金店（东门）").expect("a field");
    colleague_copy.doc.commit();
    let colleague_edit = upload(&mut colleague.session, colleague_copy.upload(&base));
    assert_eq!(colleague_edit.status, 200);
    hand_made.doc.merge(&mut colleague_copy.doc).expect("merging the colleague's edit");
    let after_colleague = hand_made.heads();
    set_field(&mut hand_made.doc, "outcome", "case_lead").expect("a field");
    hand_made.doc.commit();
    let late_edit = hand_made.heads()[0];

    // Act: both uploads with the token the device still holds.
    let late = upload(&mut device_session, hand_made.upload(&after_colleague));
    let synced = device.json(&["sync"]);

    // Assert: the edit made before the revocation is stored and flagged for the supervisor.
    assert_eq!(synced["uploaded"], 1, "{synced}");
    let status = device.json(&["status"]);
    assert_eq!(status["pending_documents"], 0, "nothing pending: {status}");
    let mut supervisor = server.supervisor();
    assert_eq!(history_len(&mut supervisor, &doc), 2);
    let view = supervisor.get_json(&format!("/v1/review/{doc}")).expect("the review view");
    assert_eq!(view["record"]["findings"], "消防通道被堵塞。");
    let flags = view["review_flags"].as_array().expect("review_flags");
    let flag = flags.iter().find(|flag| flag["code"] == "needs_review");
    let detail = flag.and_then(|flag| flag["detail"].as_str()).unwrap_or_default();
    assert!(detail.contains(&cert_no), "a needs_review flag naming {cert_no}: {view}");
    let findings = view["findings"].as_array().expect("findings");
    assert!(findings.iter().any(|finding| finding["code"] == "needs_review"), "{view}");
    let queue = supervisor.get_json("/v1/review/queue").expect("the queue");
    let item = queue.as_array().expect("a list").iter().find(|item| item["id"] == doc.as_str());
    let codes = item.map(|item| item["findings"].clone()).unwrap_or_default();
    assert!(codes.as_array().is_some_and(|codes| codes.contains(&json!("needs_review"))));
    // The edit after the colleague's change is quarantined: not merged, shown, delivered.
    assert_eq!(late.status, 200, "{}", String::from_utf8_lossy(&late.body));
    let answer = SyncResponse::decode(&late.body).expect("a sync answer");
    assert!(answer.updates.is_empty(), "upload-only gets no feed");
    match &answer.results[0].outcome {
        DocOutcome::Rejected { code, quarantined, .. } => {
            assert_eq!((code.as_str(), *quarantined), ("certificate_revoked", true));
        }
        other => panic!("expected a quarantine, got {other:?}"),
    }
    let id = hand_made.id.to_string();
    assert_eq!(history_len(&mut supervisor, &id), 2, "the late edit is not merged");
    let view = supervisor.get_json(&format!("/v1/review/{id}")).expect("the review view");
    assert_eq!(view["record"]["outcome"], "none");
    let quarantined = view["quarantined"].as_array().expect("quarantined");
    assert!(
        quarantined.iter().any(|change| change["hash"] == late_edit.to_string().as_str()
            && change["officer"] == enrolled["officer"]),
        "{view}"
    );
    // Reading and minting stay refused.
    assert_eq!(device.error_code(&["sync"]), "certificate_revoked");
    let nonce = fresh_nonce(device_session.client());
    let htu = device_session.client().url("/v1/token");
    let proof = device_session.key().proof("POST", &htu, None, Some(&nonce));
    let mint = server
        .client()
        .request_raw("POST", "/v1/token", &[("dpop", &proof)], Vec::new())
        .expect("the server answers");
    assert_refused(&mint, 403, "certificate_revoked");
}

#[test]
fn an_enrollment_code_works_once_and_a_key_enrolls_once() {
    // Arrange
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let first = server.enroll(&demo.officers[0].code);

    // Act
    let mut reuse = Session::new(server.client(), cli::auth::DeviceKey::generate());
    let reused = reuse.enroll(&demo.officers[0].code, None);
    let mut guess = Session::new(server.client(), cli::auth::DeviceKey::generate());
    let guessed = guess.enroll("AAAAAAAAAAAAAAAAAAAAAAAAAA", None);
    let device_key = cli::auth::DeviceKey::from_pkcs8_der(first.key.pkcs8()).unwrap();
    let mut again = Session::new(server.client(), device_key);
    let twice = again.enroll(&demo.officers[1].code, None);

    // Assert
    assert_eq!(api_error(reused), (400, "invalid_enrollment_code".to_owned()));
    assert_eq!(api_error(guessed), (400, "invalid_enrollment_code".to_owned()));
    assert_eq!(api_error(twice), (409, "device_already_enrolled".to_owned()));
    // The refused code of officers[1] was not consumed by the refusal.
    let second = server.enroll(&demo.officers[1].code);
    assert_ne!(second.actor(), first.actor());
}

#[test]
fn every_answer_carries_a_fresh_dpop_nonce() {
    // Arrange
    let server = TestServer::spawn_demo();
    let client = server.client();

    // Act
    let answers: Vec<RawResponse> = [
        ("GET", "/healthz"),
        ("GET", "/v1/nonce"),
        ("GET", "/v1/no-such-route"),
        ("GET", "/v1/docs"),
        ("POST", "/v1/sync"),
    ]
    .iter()
    .map(|(method, path)| client.request_raw(method, path, &[], Vec::new()).unwrap())
    .collect();

    // Assert
    for answer in &answers {
        assert!(answer.header("dpop-nonce").is_some_and(|nonce| !nonce.is_empty()));
    }
    let body: Value = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(body["nonce"].as_str(), answers[1].header("dpop-nonce"));
    // Without any credentials: 401 with a DPoP challenge (the contract names no single code
    // for "nothing at all", so only the status is fixed here).
    assert_eq!(answers[3].status, 401);
    assert!(answers[3].header("www-authenticate").is_some_and(|value| value.starts_with("DPoP")));
}

#[test]
fn a_fresh_server_writes_a_one_time_admin_code_to_bootstrap_json() {
    // Arrange
    let server = TestServer::spawn();
    let bootstrap: Value = serde_json::from_slice(
        &std::fs::read(server.data_dir().join("bootstrap.json")).expect("bootstrap.json"),
    )
    .expect("bootstrap JSON");
    let code = bootstrap["admin_code"].as_str().expect("an admin code").to_owned();

    // Act
    let mut admin = server.enroll(&code);
    let mut late = Session::new(server.client(), cli::auth::DeviceKey::generate());
    let reused = late.enroll(&code, None);

    // Assert
    assert_eq!(admin.answer["role"], "admin");
    assert!(admin.session.get_json("/v1/admin/audit").is_ok());
    assert_eq!(api_error(reused), (400, "invalid_enrollment_code".to_owned()));
}
