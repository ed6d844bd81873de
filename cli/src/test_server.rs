//! A tiny in-test HTTP server, and a fake fieldcase identity server built on it, for the
//! tests of the session and of the device commands.
//!
//! One request per connection (`connection: close`), handled in order on one thread, so a test
//! sees exactly the requests its client made. The fake identity server checks what a device
//! must send (nonce, proof claims, `ath`, the `DPoP` scheme) without verifying signatures,
//! which the proof unit tests cover. [`BlobServer`] answers the evidence blob endpoints of
//! docs/sync.md from memory.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
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
            // As the real server does: a gzipped upload is answered as the body it encodes.
            if headers.iter().any(|(name, value)| name == "content-encoding" && value == "gzip") {
                body = sync_core::body::gunzip_within(&body, 64 << 20).unwrap();
            }
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
    authenticated_server(move |request| {
        if request.path != "/v1/sync" {
            return TestResponse::error(404, "not_found");
        }
        let (status, body) = answer(SyncRequest::decode(&request.body).unwrap());
        TestResponse { status, headers: Vec::new(), body }
    })
}

/// [`identity_server`], with every authenticated request that passes the checks (nonce,
/// proof, `ath`) going to `answer`, whatever its path.
pub(crate) fn authenticated_server(
    mut answer: impl FnMut(&TestRequest) -> TestResponse + Send + 'static,
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
                _ => {
                    let token = request
                        .header("authorization")
                        .and_then(|value| value.strip_prefix("DPoP "))
                        .unwrap_or_default();
                    if claims["ath"] != access_token_hash(token) {
                        return TestResponse::error(401, "invalid_dpop_proof");
                    }
                    answer(request)
                }
            }
        })();
        response.with_header("DPoP-Nonce", nonce)
    })
}

/// The evidence blob endpoints of docs/sync.md, in memory: resumable uploads checked against
/// the offset, verified by SHA-256 when complete, and downloads of complete blobs.
#[derive(Debug, Default)]
pub(crate) struct BlobServer {
    /// Bytes of unfinished uploads, by sha256.
    pub(crate) partial: BTreeMap<String, Vec<u8>>,
    /// Complete blobs, by sha256.
    pub(crate) complete: BTreeMap<String, Vec<u8>>,
    /// Every chunk received: sha256, `Upload-Offset`, chunk length.
    pub(crate) chunks: Vec<(String, u64, usize)>,
    /// Blobs whose every chunk is refused with this status and code.
    pub(crate) refuse: BTreeMap<String, (u16, String)>,
    /// The next status answer reports 0 bytes received, as if another upload had not started
    /// yet; the chunk sent from there then meets an offset mismatch.
    pub(crate) stale_status_once: bool,
}

impl BlobServer {
    /// The answer to a blob request; `None` for any other path.
    pub(crate) fn answer(&mut self, request: &TestRequest) -> Option<TestResponse> {
        let rest = request.path.strip_prefix("/v1/blobs/")?;
        Some(match (request.method.as_str(), rest.strip_suffix("/upload")) {
            ("GET", Some(sha256)) => self.status(sha256),
            ("PUT", None) => self.put(rest, request),
            ("GET", None) => match self.complete.get(rest) {
                Some(bytes) => {
                    TestResponse { status: 200, headers: Vec::new(), body: bytes.clone() }
                }
                None => TestResponse::error(404, "not_found"),
            },
            _ => TestResponse::error(405, "method_not_allowed"),
        })
    }

    fn status(&mut self, sha256: &str) -> TestResponse {
        if let Some(bytes) = self.complete.get(sha256) {
            let size = bytes.len();
            return TestResponse::json(
                200,
                &json!({"sha256": sha256, "complete": true, "received": size, "size": size}),
            );
        }
        let mut received = self.partial.get(sha256).map_or(0, Vec::len);
        if std::mem::take(&mut self.stale_status_once) {
            received = 0;
        }
        TestResponse::json(
            200,
            &json!({"sha256": sha256, "complete": false, "received": received, "size": null}),
        )
    }

    fn put(&mut self, sha256: &str, request: &TestRequest) -> TestResponse {
        let header = |name: &str| request.header(name).unwrap().parse::<u64>().unwrap();
        let (offset, total) = (header("upload-offset"), header("upload-length"));
        self.chunks.push((sha256.to_owned(), offset, request.body.len()));
        if let Some((status, code)) = self.refuse.get(sha256) {
            return TestResponse::error(*status, code);
        }
        if let Some(bytes) = self.complete.get(sha256) {
            return TestResponse::json(
                200,
                &json!({"sha256": sha256, "size": bytes.len(), "complete": true}),
            );
        }
        let partial = self.partial.entry(sha256.to_owned()).or_default();
        let received = partial.len() as u64;
        if offset != received {
            return TestResponse::json(
                409,
                &json!({"error": {"code": "upload_offset_mismatch", "message": "offset"},
                    "received": received}),
            )
            .with_header("Upload-Offset", &received.to_string());
        }
        partial.extend_from_slice(&request.body);
        if (partial.len() as u64) < total {
            return TestResponse::json(
                202,
                &json!({"sha256": sha256, "complete": false, "received": partial.len()}),
            );
        }
        let bytes = self.partial.remove(sha256).unwrap();
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return TestResponse::error(400, "blob_hash_mismatch");
        }
        let size = bytes.len();
        self.complete.insert(sha256.to_owned(), bytes);
        TestResponse::json(201, &json!({"sha256": sha256, "size": size, "complete": true}))
    }
}
