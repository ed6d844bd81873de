//! The typed blocking HTTP client of the fieldcase server: the only code that knows its URLs.
//!
//! The agent is configured so that 4xx and 5xx answers come back as responses: the server's
//! JSON error `{"error":{"code","message"}}` becomes [`ClientError::Api`] with its stable code,
//! so callers branch on codes rather than on status lines, while a server that cannot be
//! reached is [`ClientError::Transport`]. The client counts the bytes each sync moves
//! ([`Traffic`]), which `fieldcase sync --json` and `fieldcase bench` report.

use std::time::Duration;

use serde::Deserialize;
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, SyncRequest, SyncResponse};
use thiserror::Error;
use ureq::Agent;
use ureq::http::Response;

/// 256 MiB: far above one page of a catch-up, low enough that a broken server cannot exhaust
/// the device's memory.
const SYNC_RESPONSE_LIMIT: u64 = 256 * 1024 * 1024;

/// 16 MiB: far above the largest document view or listing.
const JSON_RESPONSE_LIMIT: u64 = 16 * 1024 * 1024;

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

/// An answer of any status, as [`Client::sync_raw`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The body, decompressed.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body of a 2xx answer; any other status becomes the matching [`ClientError`].
    pub fn into_body(self) -> Result<Vec<u8>, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(ErrorBody { error }) => {
                ClientError::Api { status: self.status, code: error.code, message: error.message }
            }
            Err(_) => ClientError::InvalidResponse {
                status: self.status,
                reason: format!("not a fieldcase error: {:?}", preview(&self.body)),
            },
        })
    }
}

/// The server's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
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
            self.agent.get(self.url("/healthz")).call().map_err(ClientError::Transport)?;
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
        self.get_json(&format!("/v1/docs/{doc_id}"))
    }

    /// Every stored change of a document, in feed order (`GET /v1/docs/{id}/history`).
    pub fn history(&self, doc_id: DocumentId) -> Result<serde_json::Value, ClientError> {
        self.get_json(&format!("/v1/docs/{doc_id}/history"))
    }

    /// The documents the server lists for this client (`GET /v1/docs`).
    pub fn documents(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json("/v1/docs")
    }

    fn post_sync(&self, body: Vec<u8>) -> Result<(RawResponse, u64), ClientError> {
        let response = self
            .agent
            .post(self.url("/v1/sync"))
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
        let (raw, _) = read(response, JSON_RESPONSE_LIMIT)?;
        let status = raw.status;
        serde_json::from_slice(&raw.into_body()?)
            .map_err(|error| ClientError::InvalidResponse { status, reason: error.to_string() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server_url)
    }
}

/// Reads a whole response of at most `limit` bytes; returns it with its size on the wire.
fn read(mut response: Response<ureq::Body>, limit: u64) -> Result<(RawResponse, u64), ClientError> {
    let status = response.status().as_u16();
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
    Ok((RawResponse { status, body }, wire_length))
}

fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(BODY_PREVIEW_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(status: u16, body: &str, expected_code: Option<&str>) {
        let raw = RawResponse { status, body: body.as_bytes().to_vec() };
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
