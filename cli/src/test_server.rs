//! A tiny in-test HTTP server, and a fake fieldcase identity server built on it, for the
//! tests of the session and of the device commands.
//!
//! One request per connection (`connection: close`), handled in order on one thread, so a test
//! sees exactly the requests its client made. The fake identity server checks what a device
//! must send (nonce, proof claims, `ath`, the `DPoP` scheme) without verifying signatures,
//! which the proof unit tests cover.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde_json::{Value, json};
use sync_core::protocol::SyncRequest;

use crate::auth::access_token_hash;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub(crate) struct TestRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Lowercase names.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl TestRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
    }

    /// The claims of the request's DPoP proof, unverified.
    pub(crate) fn proof_claims(&self) -> Option<Value> {
        let payload = self.header("dpop")?.split('.').nth(1)?;
        serde_json::from_slice(&BASE64URL.decode(payload).ok()?).ok()
    }
}

/// One answer.
pub(crate) struct TestResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl TestResponse {
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self { status, headers: Vec::new(), body: body.to_string().into_bytes() }
    }

    pub(crate) fn error(status: u16, code: &str) -> Self {
        Self::json(status, &json!({"error": {"code": code, "message": code.replace('_', " ")}}))
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// Serves `answer` on a loopback port; returns the base URL.
pub(crate) fn serve(
    mut answer: impl FnMut(&TestRequest) -> TestResponse + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut words = request_line.split_whitespace();
            let method = words.next().unwrap_or_default().to_owned();
            let path = words.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let length = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .map_or(0, |(_, value)| value.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let response = answer(&TestRequest { method, path, headers, body });
            let mut head = format!(
                "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                response.status,
                response.body.len()
            );
            for (name, value) in &response.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&response.body).unwrap();
        }
    });
    format!("http://{address}")
}

/// The master data the fake server hands out: matter `M1` with every entrustable action,
/// `M2` (at enrollment only) with `inspect` only, a certificate covering `work_safety`, valid
/// for a long time.
pub(crate) fn master_data(officer: &str, with_m2: bool) -> Value {
    let far = 4_102_444_800_000_i64; // 2100-01-01
    let item = |matter: &str, actions: Value| {
        json!({
            "matter": matter, "sector": "work_safety", "actions": actions,
            "agreement": "e-1", "entrusting_agency": "d-1", "valid_from": 0, "valid_to": far,
        })
    };
    let all = item(
        "M1",
        json!([
            "inspect",
            "order_rectify",
            "summary_penalty",
            "general_penalty",
            "evidence_preserve"
        ]),
    );
    json!({
        "officer": officer,
        "officer_name": "李明",
        "role": "officer",
        "township": "t-1",
        "certificate": {
            "cert_no": format!("C-{officer}"), "status": "active", "valid_from": 0,
            "valid_to": far, "sectors": ["work_safety"],
        },
        "scope": if with_m2 {
            json!([all, item("M2", json!(["inspect"]))])
        } else {
            json!([all])
        },
        "issued_at": 0,
        "valid_until": far,
    })
}

/// A fake fieldcase server with the identity endpoints of docs/identity.md: every answer
/// carries a `DPoP-Nonce`, a proof with another nonce gets 401 `use_dpop_nonce`, an enroll
/// code names the officer, tokens are `t-N`; `/v1/sync` requests that pass the checks go to
/// `answer`. Returns the base URL.
pub(crate) fn identity_server(
    mut answer: impl FnMut(SyncRequest) -> (u16, Vec<u8>) + Send + 'static,
) -> String {
    let state = Arc::new(Mutex::new((0_u32, 0_u32))); // (enrollments, tokens)
    serve(move |request| {
        let mut state = state.lock().unwrap();
        let nonce = "nonce-1";
        let response = (|| {
            if request.path == "/v1/nonce" {
                return TestResponse::json(200, &json!({"nonce": nonce}));
            }
            let Some(claims) = request.proof_claims() else {
                return TestResponse::error(401, "invalid_dpop_proof");
            };
            if claims["nonce"] != nonce {
                return TestResponse::error(401, "use_dpop_nonce");
            }
            if claims["htm"] != request.method.as_str()
                || !claims["htu"].as_str().unwrap_or_default().ends_with(&request.path)
            {
                return TestResponse::error(401, "invalid_dpop_proof");
            }
            match request.path.as_str() {
                "/v1/enroll" => {
                    state.0 += 1;
                    let body: Value = serde_json::from_slice(&request.body).unwrap();
                    let officer = body["code"].as_str().unwrap();
                    TestResponse::json(
                        200,
                        &json!({
                            "device": format!("dev-{}", state.0),
                            "officer": officer,
                            "officer_name": "李明",
                            "role": "officer",
                            "township": "t-1",
                            "actor": format!("{:032x}", state.0),
                            "server_key": {"kty": "OKP", "crv": "Ed25519", "x": "k", "kid": "k"},
                            "master_data": "a.b.c",
                            "master_data_json": master_data(officer, true),
                        }),
                    )
                }
                "/v1/token" => {
                    state.1 += 1;
                    TestResponse::json(
                        200,
                        &json!({
                            "access_token": format!("t-{}", state.1),
                            "token_type": "DPoP",
                            "expires_in": 600,
                            "master_data": "a.b.c",
                            "master_data_json": master_data("o1", false),
                        }),
                    )
                }
                "/v1/sync" => {
                    let token = request
                        .header("authorization")
                        .and_then(|value| value.strip_prefix("DPoP "))
                        .unwrap_or_default();
                    if claims["ath"] != access_token_hash(token) {
                        return TestResponse::error(401, "invalid_dpop_proof");
                    }
                    let (status, body) = answer(SyncRequest::decode(&request.body).unwrap());
                    TestResponse { status, headers: Vec::new(), body }
                }
                _ => TestResponse::error(404, "not_found"),
            }
        })();
        response.with_header("DPoP-Nonce", nonce)
    })
}
