//! The typed blocking HTTP client of the fieldcase server: the only code that knows its URLs.
//!
//! The agent is configured so that 4xx and 5xx answers come back as responses: the server's
//! JSON error `{"error":{"code","message"}}` becomes [`ClientError::Api`] with its stable code,
//! so callers branch on codes rather than on status lines, while a server that cannot be
//! reached is [`ClientError::Transport`]. The client counts the bytes each sync moves
//! ([`Traffic`]), which `fieldcase sync --json` and `fieldcase bench` report.
//!
//! The [`paths`] module spells every API path; [`Client::request_raw`] sends any request with
//! caller-supplied headers, which is what `crate::auth::Session` builds its authenticated calls
//! (DPoP proof, access token) on. The client itself adds no credentials.
//!
//! docs/sync.md fixes two more wire details here: the `Idempotency-Key` of a sync upload
//! ([`idempotency_key`]) and the answer of the evidence blob endpoints ([`BlobStatus`]).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, SyncRequest, SyncResponse};
use thiserror::Error;
use ureq::Agent;
use ureq::http::Response;

/// 256 MiB: far above one page of a catch-up, low enough that a broken server cannot exhaust
/// the device's memory.
pub(crate) const SYNC_RESPONSE_LIMIT: u64 = 256 * 1024 * 1024;

/// 16 MiB: far above the largest document view or listing.
const JSON_RESPONSE_LIMIT: u64 = 16 * 1024 * 1024;

/// 1 GiB: the largest evidence blob the server stores (docs/sync.md), so the largest download.
pub const BLOB_RESPONSE_LIMIT: u64 = 1024 * 1024 * 1024;

/// The header that makes a sync upload idempotent (docs/sync.md).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header of a blob chunk that says where in the blob the chunk starts.
pub const UPLOAD_OFFSET: &str = "upload-offset";

/// The header of a blob chunk that gives the blob's full size.
pub const UPLOAD_LENGTH: &str = "upload-length";

/// The media type of blob bytes.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// 10 s: a server on the same network answers a connection at once; a device without signal
/// should learn so quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// 300 s: a whole call, long enough for a first sync of thousands of changes on a slow link.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How many characters of an unreadable body an error quotes.
const BODY_PREVIEW_CHARS: usize = 200;

/// A failed call to the server.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server refused the request with its JSON error.
    #[error("the server refused the request: {message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's stable snake_case code.
        code: String,
        /// The server's human sentence.
        message: String,
        /// The actor the refusal names (`duplicate_seq`: whose sequence number is taken).
        actor: Option<String>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server")]
    Transport(#[source] ureq::Error),
    /// The server answered something that is not the fieldcase API.
    #[error("the server answered HTTP {status} with an unreadable body: {reason}")]
    InvalidResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong with the body.
        reason: String,
    },
}

impl ClientError {
    /// The stable snake_case code `--json` reports: the server's own code for a refusal.
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code,
            Self::Transport(_) => "server_unreachable",
            Self::InvalidResponse { .. } => "invalid_response",
        }
    }
}

/// Bytes a call moved.
///
/// `bytes_up` is the request body sent; `bytes_down` is the response body as it crossed the
/// wire when the server declared its length (before any transparent decompression), else
/// the body as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Request body bytes sent.
    pub bytes_up: u64,
    /// Response body bytes received.
    pub bytes_down: u64,
}

/// An answer of any status, as [`Client::sync_raw`] and [`Client::request_raw`] return it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The response headers, names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, decompressed.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive), if present and readable text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The server's stable error code when the body is a fieldcase JSON error.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(&self.body).ok().map(|body| body.error.code)
    }

    /// The body of a 2xx answer parsed as JSON; any other status becomes the matching
    /// [`ClientError`].
    pub fn into_json(self) -> Result<serde_json::Value, ClientError> {
        let status = self.status;
        serde_json::from_slice(&self.into_body()?)
            .map_err(|error| ClientError::InvalidResponse { status, reason: error.to_string() })
    }

    /// The body of a 2xx answer; any other status becomes the matching [`ClientError`].
    pub fn into_body(self) -> Result<Vec<u8>, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(ErrorBody { error, actor }) => ClientError::Api {
                status: self.status,
                code: error.code,
                message: error.message,
                actor,
            },
            Err(_) => ClientError::InvalidResponse {
                status: self.status,
                reason: format!("not a fieldcase error: {:?}", preview(&self.body)),
            },
        })
    }
}

/// The `Idempotency-Key` of a sync body: base64url(SHA-256(body)), 43 characters of
/// `[A-Za-z0-9_-]`, so that a retried identical body reuses its key (docs/sync.md).
pub fn idempotency_key(body: &[u8]) -> String {
    BASE64URL.encode(Sha256::digest(body))
}

/// How much of an evidence blob the server holds, as `GET /v1/blobs/{sha256}/upload` and
/// every `PUT /v1/blobs/{sha256}` answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlobStatus {
    /// The server holds the whole blob, hash verified.
    pub complete: bool,
    /// Bytes the server holds: of an unfinished upload, or the whole size once complete.
    pub received: u64,
    /// The blob's full size, when the server knows it.
    pub size: Option<u64>,
}

impl BlobStatus {
    /// Reads a blob answer; a complete blob without `received` has received its whole size.
    pub fn from_json(status: u16, answer: &serde_json::Value) -> Result<Self, ClientError> {
        let invalid =
            |reason: &str| ClientError::InvalidResponse { status, reason: reason.to_owned() };
        let complete = answer["complete"]
            .as_bool()
            .ok_or_else(|| invalid("the blob answer has no \"complete\" boolean"))?;
        let size = answer["size"].as_u64();
        let received = match answer["received"].as_u64() {
            Some(received) => received,
            None if complete => {
                size.ok_or_else(|| invalid("a complete blob answer has no \"size\""))?
            }
            None => return Err(invalid("an incomplete blob answer has no \"received\" count")),
        };
        Ok(Self { complete, received, size })
    }
}

/// The server's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
    // Named by `duplicate_seq`, beside the error object like `received` of a blob refusal.
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The URL paths of the server's API; nothing outside this module spells one.
pub mod paths {
    use std::fmt::Write as _;

    /// `GET`: liveness, public.
    pub const HEALTH: &str = "/healthz";
    /// `GET`: a fresh DPoP nonce, public.
    pub const NONCE: &str = "/v1/nonce";
    /// `POST`: enrolls a device key with a one-time code.
    pub const ENROLL: &str = "/v1/enroll";
    /// `POST`: mints a DPoP-bound access token for an enrolled device key.
    pub const TOKEN: &str = "/v1/token";
    /// `POST`: a fresh Automerge actor for the calling device (after a restore from a backup).
    pub const ACTORS: &str = "/v1/actors";
    /// `POST`: one binary sync round trip.
    pub const SYNC: &str = "/v1/sync";
    /// `GET`: the documents visible to the caller.
    pub const DOCUMENTS: &str = "/v1/docs";
    /// `GET`: Prometheus text metrics of the server process, when the server offers them
    /// (`fieldcase bench` against a server it did not start reads its CPU and memory there).
    pub const METRICS: &str = "/metrics";

    /// `GET`: the merged view of one document.
    pub fn document(doc_id: impl std::fmt::Display) -> String {
        format!("/v1/docs/{doc_id}")
    }

    /// `GET`: every stored change of one document.
    pub fn history(doc_id: impl std::fmt::Display) -> String {
        format!("/v1/docs/{doc_id}/history")
    }

    /// `GET` the bytes, `PUT` a chunk: one evidence blob, named by its hex SHA-256.
    pub fn blob(sha256: &str) -> String {
        format!("/v1/blobs/{}", encode_segment(sha256))
    }

    /// `GET`: how much of a blob the server holds.
    pub fn blob_upload(sha256: &str) -> String {
        format!("/v1/blobs/{}/upload", encode_segment(sha256))
    }

    /// `GET`: the supervisor's review queue, with the filters as query parameters (values
    /// percent-encoded; an empty list asks for every record).
    pub fn review_queue(filters: &[(&str, &str)]) -> String {
        let mut path = "/v1/review/queue".to_owned();
        for (index, (name, value)) in filters.iter().enumerate() {
            let separator = if index == 0 { '?' } else { '&' };
            let _ = write!(path, "{separator}{}={}", encode_segment(name), encode_segment(value));
        }
        path
    }

    /// `GET`: one record as a supervisor reviews it.
    pub fn review(doc_id: impl std::fmt::Display) -> String {
        format!("/v1/review/{doc_id}")
    }

    /// A review action on one record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ReviewAction {
        /// Sets a conflicting field with a server-authored change.
        Resolve,
        /// Approves the record at its current heads (seals it).
        Approve,
        /// Returns the record to its officer with a comment.
        Return,
        /// Grants a device's request event (filing, decision, closing).
        Grant,
    }

    impl ReviewAction {
        fn segment(self) -> &'static str {
            match self {
                Self::Resolve => "resolve",
                Self::Approve => "approve",
                Self::Return => "return",
                Self::Grant => "grant",
            }
        }
    }

    /// `POST`: `/v1/review/{id}/{action}`.
    pub fn review_action(doc_id: impl std::fmt::Display, action: ReviewAction) -> String {
        format!("/v1/review/{doc_id}/{}", action.segment())
    }

    /// `GET`: a supervision report (`overdue`, `alerts`, `assessment`), with its query
    /// parameters (values percent-encoded).
    pub fn report(report: &str, query: &[(&str, &str)]) -> String {
        let mut path = format!("/v1/reports/{}", encode_segment(report));
        for (index, (name, value)) in query.iter().enumerate() {
            let separator = if index == 0 { '?' } else { '&' };
            let _ = write!(path, "{separator}{}={}", encode_segment(name), encode_segment(value));
        }
        path
    }

    /// `POST`: generates a quarterly case report.
    pub const QUARTERLY_REPORTS: &str = "/v1/reports/quarterly";

    /// `GET`: a stored quarterly case report, with its query parameters; `POST` with `step`
    /// `submit` or `acknowledge` records that step.
    pub fn quarterly_report(id: &str, step: Option<&str>, query: &[(&str, &str)]) -> String {
        let mut path = format!("/v1/reports/quarterly/{}", encode_segment(id));
        if let Some(step) = step {
            let _ = write!(path, "/{}", encode_segment(step));
        }
        for (index, (name, value)) in query.iter().enumerate() {
            let separator = if index == 0 { '?' } else { '&' };
            let _ = write!(path, "{separator}{}={}", encode_segment(name), encode_segment(value));
        }
        path
    }

    /// `POST`: leases a block of document numbers to the calling officer's device.
    pub const NUMBERS_LEASE: &str = "/v1/numbers/lease";

    /// `GET`: how every serial of a leased number block is accounted for.
    pub fn number_reconciliation(block_id: &str) -> String {
        format!("/v1/numbers/blocks/{}/reconciliation", encode_segment(block_id))
    }

    /// A collection of the admin registry API.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Registry {
        /// Agencies: departments, townships, the justice bureau.
        Agencies,
        /// Enforcement matters (执法事项).
        Matters,
        /// Entrustment agreements and their scope items.
        Entrustments,
        /// Officers.
        Officers,
        /// Enforcement certificates.
        Certificates,
        /// Enrolled devices.
        Devices,
        /// One-time enrollment codes.
        EnrollCodes,
        /// The registry audit log.
        Audit,
    }

    impl Registry {
        fn segment(self) -> &'static str {
            match self {
                Self::Agencies => "agencies",
                Self::Matters => "matters",
                Self::Entrustments => "entrustments",
                Self::Officers => "officers",
                Self::Certificates => "certificates",
                Self::Devices => "devices",
                Self::EnrollCodes => "enroll-codes",
                Self::Audit => "audit",
            }
        }
    }

    /// A state change of one registry object.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RegistryAction {
        /// Suspends an entrustment or a certificate.
        Suspend,
        /// Revokes an entrustment, a certificate or a device.
        Revoke,
        /// Activates an entrustment.
        Activate,
        /// Reinstates a suspended certificate.
        Reinstate,
    }

    impl RegistryAction {
        fn segment(self) -> &'static str {
            match self {
                Self::Suspend => "suspend",
                Self::Revoke => "revoke",
                Self::Activate => "activate",
                Self::Reinstate => "reinstate",
            }
        }
    }

    /// `GET` lists, `POST` creates: `/v1/admin/{collection}`.
    pub fn registry(collection: Registry) -> String {
        format!("/v1/admin/{}", collection.segment())
    }

    /// `POST`: `/v1/admin/{collection}/{id}/{action}`, the id percent-encoded.
    pub fn registry_action(collection: Registry, id: &str, action: RegistryAction) -> String {
        format!("/v1/admin/{}/{}/{}", collection.segment(), encode_segment(id), action.segment())
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    fn encode_segment(text: &str) -> String {
        let mut encoded = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                encoded.push(char::from(byte));
            } else {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
        encoded
    }
}

/// A client of one fieldcase server. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    agent: Agent,
    // Invariant: no trailing slash, so that paths starting with `/` join cleanly.
    server_url: String,
}

impl Client {
    /// A client of the server at `server_url` (such as `http://127.0.0.1:8080`).
    ///
    /// Nothing is contacted yet; a malformed URL surfaces as [`ClientError::Transport`] on the
    /// first call.
    pub fn new(server_url: &str) -> Self {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("fieldcase/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self { agent, server_url: server_url.trim_end_matches('/').to_owned() }
    }

    /// The server's base URL, for messages.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Checks that the server is up (`GET /healthz`).
    pub fn health(&self) -> Result<(), ClientError> {
        let response =
            self.agent.get(self.url(paths::HEALTH)).call().map_err(ClientError::Transport)?;
        read(response, JSON_RESPONSE_LIMIT)?.0.into_body()?;
        Ok(())
    }

    /// One sync round trip (`POST /v1/sync`): sends the request, decodes the answer.
    pub fn sync(&self, request: &SyncRequest) -> Result<(SyncResponse, Traffic), ClientError> {
        let body = request.encode();
        let bytes_up = body.len() as u64;
        let (raw, bytes_down) = self.post_sync(body)?;
        let status = raw.status;
        let body = raw.into_body()?;
        let response = SyncResponse::decode(&body)
            .map_err(|error| ClientError::InvalidResponse { status, reason: error.to_string() })?;
        Ok((response, Traffic { bytes_up, bytes_down }))
    }

    /// Sends any bytes to `POST /v1/sync` and returns the answer whatever its status, so that
    /// tests can send hostile bodies and inspect the refusal.
    pub fn sync_raw(&self, body: Vec<u8>) -> Result<RawResponse, ClientError> {
        Ok(self.post_sync(body)?.0)
    }

    /// The merged view of one document (`GET /v1/docs/{id}`), as `fieldcase show --json`
    /// prints it.
    pub fn document(&self, doc_id: DocumentId) -> Result<serde_json::Value, ClientError> {
        self.get_json(&paths::document(doc_id))
    }

    /// Every stored change of a document, in feed order (`GET /v1/docs/{id}/history`).
    pub fn history(&self, doc_id: DocumentId) -> Result<serde_json::Value, ClientError> {
        self.get_json(&paths::history(doc_id))
    }

    /// The documents the server lists for this client (`GET /v1/docs`).
    pub fn documents(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json(paths::DOCUMENTS)
    }

    /// A fresh DPoP nonce (`GET /v1/nonce`, public).
    pub fn nonce(&self) -> Result<String, ClientError> {
        let answer = self.get_json(paths::NONCE)?;
        answer["nonce"].as_str().map(str::to_owned).ok_or_else(|| ClientError::InvalidResponse {
            status: 200,
            reason: "the nonce answer has no \"nonce\" string".to_owned(),
        })
    }

    /// Sends any request and returns the answer whatever its status, headers included; the
    /// caller adds authentication headers.
    ///
    /// A `GET`, `HEAD` or `DELETE` with an empty body is sent without one.
    // An owned body keeps the many hostile-request tests short (`body.to_vec()` at each call).
    #[allow(clippy::needless_pass_by_value)]
    pub fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<RawResponse, ClientError> {
        Ok(self.request_limited(method, path, headers, &body, SYNC_RESPONSE_LIMIT)?.0)
    }

    /// Sends any request with an answer of at most `limit` bytes; returns the answer and its
    /// size on the wire.
    pub(crate) fn request_limited(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
    ) -> Result<(RawResponse, u64), ClientError> {
        let bodiless = body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE");
        // A pooled connection the server has already closed (it answered an earlier request
        // without reading its whole body) fails before anything is sent: try once more on a
        // fresh connection. The request is the same, DPoP proof included, so if it did reach
        // the server the proof's jti makes the second copy a refused replay, never a second
        // write.
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            let mut builder = ureq::http::Request::builder().method(method).uri(self.url(path));
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let outcome = if bodiless {
                let request =
                    builder.body(()).map_err(|error| ClientError::Transport(error.into()))?;
                self.agent.run(request)
            } else {
                let request = builder
                    .body(body.to_vec())
                    .map_err(|error| ClientError::Transport(error.into()))?;
                self.agent.run(request)
            };
            match outcome {
                Err(error) if attempts == 1 && is_closed_connection(&error) => {}
                outcome => break outcome.map_err(ClientError::Transport)?,
            }
        };
        read(response, limit)
    }

    fn post_sync(&self, body: Vec<u8>) -> Result<(RawResponse, u64), ClientError> {
        let response = self
            .agent
            .post(self.url(paths::SYNC))
            .header("content-type", CONTENT_TYPE)
            .header("accept", CONTENT_TYPE)
            .send(body)
            .map_err(ClientError::Transport)?;
        read(response, SYNC_RESPONSE_LIMIT)
    }

    fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let response = self
            .agent
            .get(self.url(path))
            .header("accept", "application/json")
            .call()
            .map_err(ClientError::Transport)?;
        read(response, JSON_RESPONSE_LIMIT)?.0.into_json()
    }

    /// The absolute URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server_url)
    }

    /// The DPoP `htu` of a request to `path`: its URL without query (RFC 9449 §4.2).
    pub fn htu(&self, path: &str) -> String {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        self.url(path)
    }
}

/// Reads a whole response of at most `limit` bytes; returns it with its size on the wire.
/// Whether a transport error means the connection was closed under the request.
fn is_closed_connection(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error,
        ureq::Error::Io(io) if matches!(
            io.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        )
    )
}

fn read(mut response: Response<ureq::Body>, limit: u64) -> Result<(RawResponse, u64), ClientError> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            value.to_str().ok().map(|value| (name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    // ureq hides the declared length of a body it decompresses, so read it from the header.
    let declared_length = response
        .headers()
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let body =
        response.body_mut().with_config().limit(limit).read_to_vec().map_err(
            |error| match error {
                ureq::Error::BodyExceedsLimit(_) => ClientError::InvalidResponse {
                    status,
                    reason: format!("the body exceeds {limit} bytes"),
                },
                other => ClientError::Transport(other),
            },
        )?;
    let wire_length = declared_length.unwrap_or(body.len() as u64);
    Ok((RawResponse { status, headers, body }, wire_length))
}

fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(BODY_PREVIEW_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(status: u16, body: &str, expected_code: Option<&str>) {
        let raw = RawResponse { status, body: body.as_bytes().to_vec(), ..RawResponse::default() };
        match (raw.into_body(), expected_code) {
            (Ok(bytes), None) => assert_eq!(bytes, body.as_bytes()),
            (Err(error), Some(code)) => assert_eq!(error.code(), code, "{error}"),
            (result, _) => panic!("unexpected {result:?}"),
        }
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        check(200, "ok", None);
        check(204, "", None);
        check(
            403,
            r#"{"error":{"code":"out_of_scope","message":"not your township"}}"#,
            Some("out_of_scope"),
        );
        check(502, "<html>bad gateway</html>", Some("invalid_response"));
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let raw = RawResponse {
            status: 401,
            headers: vec![("dpop-nonce".to_owned(), "n".to_owned())],
            body: br#"{"error":{"code":"use_dpop_nonce","message":"x"}}"#.to_vec(),
        };
        assert_eq!(raw.header("DPoP-Nonce"), Some("n"));
        assert_eq!(raw.header("www-authenticate"), None);
        assert_eq!(raw.error_code().as_deref(), Some("use_dpop_nonce"));
    }

    #[test]
    fn the_idempotency_key_is_the_body_hash_in_base64url() {
        let key = idempotency_key(b"abc");
        // SHA-256("abc") = ba7816bf…, in base64url without padding.
        assert_eq!(key, "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert_eq!(key, idempotency_key(b"abc"));
        assert_ne!(key, idempotency_key(b"abd"));
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn blob_answers_read_as_a_status() {
        use serde_json::json;
        let check = |answer: serde_json::Value| BlobStatus::from_json(200, &answer);
        assert_eq!(
            check(json!({"sha256": "x", "complete": false, "received": 5, "size": null})).unwrap(),
            BlobStatus { complete: false, received: 5, size: None }
        );
        assert_eq!(
            check(json!({"sha256": "x", "size": 9, "complete": true})).unwrap(),
            BlobStatus { complete: true, received: 9, size: Some(9) }
        );
        assert_eq!(check(json!({"complete": false})).unwrap_err().code(), "invalid_response");
        assert_eq!(check(json!({"received": 1})).unwrap_err().code(), "invalid_response");
        assert_eq!(paths::blob("ab/c"), "/v1/blobs/ab%2Fc");
        assert_eq!(paths::blob_upload("abc"), "/v1/blobs/abc/upload");
    }

    #[test]
    fn registry_paths_encode_their_ids() {
        use crate::client::paths::{Registry, RegistryAction, registry, registry_action};
        assert_eq!(registry(Registry::EnrollCodes), "/v1/admin/enroll-codes");
        assert_eq!(
            registry_action(Registry::Certificates, "C-0001/x y", RegistryAction::Revoke),
            "/v1/admin/certificates/C-0001%2Fx%20y/revoke"
        );
    }

    #[test]
    fn an_unreachable_server_is_a_transport_error() {
        // A port that was just free: nothing listens on it once the listener is dropped.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(&format!("http://{address}/"));
        assert_eq!(client.server_url(), format!("http://{address}"));
        let error = client.health().unwrap_err();
        assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
        assert_eq!(error.code(), "server_unreachable");
    }
}
