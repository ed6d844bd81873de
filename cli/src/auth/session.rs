//! The authenticated session of an enrolled device: access tokens, nonces and retries.
//!
//! Every request carries `Authorization: DPoP <token>` and a fresh proof signed with the last
//! `DPoP-Nonce` the server sent (every server answer carries one, so a device that keeps the
//! last one needs no extra round trip). A 401 `use_dpop_nonce` is retried once with the new
//! nonce; a 401 `token_expired` or `token_revoked` drops the token, mints a new one and retries
//! once. A session opened on a home keeps the token and the nonce in `<home>/session.json`
//! (mode 0600), so the next command reuses them.
//!
//! A sync upload travels gzipped and carries an `Idempotency-Key` derived from its uncompressed
//! body, so that a body retried after
//! a lost answer gets the stored answer; the evidence blob calls ([`Session::blob_status`],
//! [`Session::put_blob_chunk`], [`Session::get_blob`]) follow docs/sync.md.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sync_core::body;
use sync_core::protocol::{CONTENT_TYPE, SyncRequest, SyncResponse};

use crate::auth::{AuthError, DeviceKey, write_private};
use crate::client::{
    BLOB_RESPONSE_LIMIT, BlobStatus, Client, ClientError, IDEMPOTENCY_KEY, OCTET_STREAM,
    RawResponse, SYNC_RESPONSE_LIMIT, Traffic, UPLOAD_LENGTH, UPLOAD_OFFSET, idempotency_key,
    paths,
};

/// File name of the session cache under the home.
pub const SESSION_FILE: &str = "session.json";

/// 30 s: a cached token is not used this close to its expiry, so that it cannot expire on
/// the way to the server.
const TOKEN_MARGIN_SECS: u64 = 30;

/// The media type of every JSON request and answer.
const JSON: &str = "application/json";

/// The master data a token answer carried: the snapshot the device checks offline.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterDataUpdate {
    /// The signed snapshot (`master-data+jwt`), when the server sent one.
    pub jwt: Option<String>,
    /// The snapshot as JSON (`sync_core::scope::MasterData`).
    pub data: serde_json::Value,
}

/// What a session keeps between commands.
#[derive(Clone, Default, Serialize, Deserialize)]
struct SessionCache {
    /// The server the token and nonce came from; another server's are not used.
    server: String,
    access_token: Option<String>,
    /// Unix seconds.
    expires_at: u64,
    nonce: Option<String>,
}

/// A [`Client`] that authenticates every call with the device key.
pub struct Session {
    client: Client,
    key: DeviceKey,
    /// Where the cache is persisted; `None` for an in-memory session.
    cache_path: Option<PathBuf>,
    cache: SessionCache,
    master_data: Option<MasterDataUpdate>,
    /// Every HTTP request this session sent, retries and token requests included, and their
    /// body bytes: what `fieldcase bench` reports.
    sent: Sent,
}

/// What a session has sent and received since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// HTTP requests, each retry and each token or nonce request counted.
    pub requests: u64,
    /// Body bytes up and down.
    pub traffic: Traffic,
}

impl fmt::Debug for Session {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The access token stays out of logs and error messages.
        formatter
            .debug_struct("Session")
            .field("server", &self.client.server_url())
            .field("key", &self.key)
            .field("has_token", &self.cache.access_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// An in-memory session: nothing is read from or written to disk.
    pub fn new(client: Client, key: DeviceKey) -> Self {
        let cache =
            SessionCache { server: client.server_url().to_owned(), ..SessionCache::default() };
        Self { client, key, cache_path: None, cache, master_data: None, sent: Sent::default() }
    }

    /// The session of the device whose home is `home`: its key, and the token and nonce the
    /// last command left, if they came from the same server.
    ///
    /// # Errors
    /// [`AuthError::NoKey`] when the device has no key (it never enrolled).
    pub fn open(client: Client, home: &Path) -> Result<Self, AuthError> {
        let key = DeviceKey::load(home)?.ok_or_else(|| AuthError::NoKey(home.to_owned()))?;
        let cache_path = home.join(SESSION_FILE);
        let mut session = Self::new(client, key);
        // A missing or unreadable cache only costs a token request.
        if let Ok(bytes) = fs::read(&cache_path)
            && let Ok(cache) = serde_json::from_slice::<SessionCache>(&bytes)
            && cache.server == session.cache.server
        {
            session.cache = cache;
        }
        session.cache_path = Some(cache_path);
        Ok(session)
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The device key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// Every request this session has sent and the body bytes they moved.
    pub fn sent(&self) -> Sent {
        self.sent
    }

    /// The master data of the last token minted by this session, if any.
    pub fn master_data(&self) -> Option<&MasterDataUpdate> {
        self.master_data.as_ref()
    }

    /// Enrolls the device key with a one-time code (`POST /v1/enroll`); returns the server's
    /// JSON answer as it is.
    pub fn enroll(
        &mut self,
        code: &str,
        name: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut body = json!({"code": code});
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        let body = serde_json::to_vec(&body).expect("a JSON value serialises");
        self.call_with_key("POST", paths::ENROLL, Some(JSON), &body)?.into_json()
    }

    /// An access token: the cached one until 30 s before its expiry, else a new one from
    /// `POST /v1/token`.
    pub fn access_token(&mut self) -> Result<String, ClientError> {
        let now = now_secs();
        if let Some(token) = &self.cache.access_token
            && now.saturating_add(TOKEN_MARGIN_SECS) < self.cache.expires_at
        {
            return Ok(token.clone());
        }
        let answer = self.call_with_key("POST", paths::TOKEN, None, &[])?.into_json()?;
        let token =
            answer["access_token"].as_str().ok_or_else(|| ClientError::InvalidResponse {
                status: 200,
                reason: "the token answer has no \"access_token\" string".to_owned(),
            })?;
        let expires_in = answer["expires_in"].as_u64().unwrap_or(0);
        if let Some(data) = answer.get("master_data_json").filter(|data| !data.is_null()) {
            let jwt = answer["master_data"].as_str().map(str::to_owned);
            self.master_data = Some(MasterDataUpdate { jwt, data: data.clone() });
        }
        self.cache.access_token = Some(token.to_owned());
        self.cache.expires_at = now.saturating_add(expires_in);
        self.persist();
        Ok(token.to_owned())
    }

    /// The last `DPoP-Nonce` the server sent, else a fresh one from `GET /v1/nonce`.
    pub fn nonce(&mut self) -> Result<String, ClientError> {
        if let Some(nonce) = &self.cache.nonce {
            return Ok(nonce.clone());
        }
        self.sent.requests += 1;
        let nonce = self.client.nonce()?;
        self.cache.nonce = Some(nonce.clone());
        self.persist();
        Ok(nonce)
    }

    /// Sends an authenticated request and returns the answer whatever its status, after the
    /// retries the module describes.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the body is taken by value like Client::request_raw's; retries resend a copy"
    )]
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<RawResponse, ClientError> {
        let mut headers = vec![("accept", JSON)];
        headers.extend(content_type.map(|content_type| ("content-type", content_type)));
        Ok(self.send_counted(method, path, &headers, &body, SYNC_RESPONSE_LIMIT)?.0)
    }

    /// One authenticated sync round trip (`POST /v1/sync`).
    ///
    /// A request that uploads changes carries `Idempotency-Key: base64url(SHA-256(body))`, so
    /// that the same body sent again (after an answer lost on the way) gets the stored answer
    /// and stores nothing twice. A request that only downloads carries none: it stores nothing,
    /// and a stored answer would hide every change that reached the server since.
    pub fn sync(&mut self, request: &SyncRequest) -> Result<(SyncResponse, Traffic), ClientError> {
        let encoded = request.encode();
        let key = idempotency_key(&encoded);
        let mut headers = vec![("accept", CONTENT_TYPE), ("content-type", CONTENT_TYPE)];
        // An upload travels gzipped (DESIGN.md §5); a pull-only request is a few bytes.
        let body = if request.docs.is_empty() {
            encoded
        } else {
            headers.push((IDEMPOTENCY_KEY, key.as_str()));
            headers.push(("content-encoding", body::GZIP));
            body::gzip(&encoded)
        };
        let bytes_up = body.len() as u64;
        let (raw, bytes_down) =
            self.send_counted("POST", paths::SYNC, &headers, &body, SYNC_RESPONSE_LIMIT)?;
        let status = raw.status;
        let body = raw.into_body()?;
        let response = SyncResponse::decode(&body)
            .map_err(|error| ClientError::InvalidResponse { status, reason: error.to_string() })?;
        Ok((response, Traffic { bytes_up, bytes_down }))
    }

    /// An authenticated `GET` of JSON; a refusal becomes [`ClientError::Api`].
    pub fn get_json(&mut self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.send("GET", path, None, Vec::new())?.into_json()
    }

    /// An authenticated `POST` of JSON, answered with JSON; a refusal becomes
    /// [`ClientError::Api`].
    pub fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(body).expect("a JSON value serialises");
        self.send("POST", path, Some(JSON), body)?.into_json()
    }

    /// How much of an evidence blob the server holds (`GET /v1/blobs/{sha256}/upload`).
    pub fn blob_status(&mut self, sha256: &str) -> Result<BlobStatus, ClientError> {
        let raw = self.send("GET", &paths::blob_upload(sha256), None, Vec::new())?;
        let status = raw.status;
        BlobStatus::from_json(status, &raw.into_json()?)
    }

    /// Sends the chunk of an evidence blob that starts at `offset` (`PUT /v1/blobs/{sha256}`
    /// with `Upload-Offset` and `Upload-Length: total`); returns what the server holds after it.
    ///
    /// An offset other than the server's answers [`ClientError::Api`] with code
    /// `upload_offset_mismatch`: read [`Self::blob_status`] again and continue from there.
    pub fn put_blob_chunk(
        &mut self,
        sha256: &str,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<BlobStatus, ClientError> {
        let offset = offset.to_string();
        let total = total.to_string();
        let headers = [
            ("accept", JSON),
            ("content-type", OCTET_STREAM),
            (UPLOAD_OFFSET, offset.as_str()),
            (UPLOAD_LENGTH, total.as_str()),
        ];
        let (raw, _) =
            self.send_counted("PUT", &paths::blob(sha256), &headers, bytes, SYNC_RESPONSE_LIMIT)?;
        let status = raw.status;
        BlobStatus::from_json(status, &raw.into_json()?)
    }

    /// The bytes of an evidence blob (`GET /v1/blobs/{sha256}`), at most 1 GiB; the caller
    /// verifies their hash.
    pub fn get_blob(&mut self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        let headers = [("accept", OCTET_STREAM)];
        let (raw, _) =
            self.send_counted("GET", &paths::blob(sha256), &headers, &[], BLOB_RESPONSE_LIMIT)?;
        raw.into_body()
    }

    /// Sends an authenticated request with `headers` (besides the credentials) and an answer
    /// of at most `limit` bytes.
    fn send_counted(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
    ) -> Result<(RawResponse, u64), ClientError> {
        let htu = self.client.htu(path);
        let mut nonce_retried = false;
        let mut token_reminted = false;
        loop {
            let token = self.access_token()?;
            let nonce = self.nonce()?;
            let proof = self.key.proof(method, &htu, Some(&token), Some(&nonce));
            let authorization = format!("DPoP {token}");
            let mut all_headers = vec![("authorization", authorization.as_str()), ("dpop", &proof)];
            all_headers.extend_from_slice(headers);
            let (raw, wire_length) = self.exchange(method, path, &all_headers, body, limit)?;
            if raw.status == 401 {
                match raw.error_code().as_deref() {
                    Some("use_dpop_nonce") if !nonce_retried => {
                        nonce_retried = true;
                        continue;
                    }
                    Some("token_expired" | "token_revoked") if !token_reminted => {
                        token_reminted = true;
                        self.cache.access_token = None;
                        self.persist();
                        continue;
                    }
                    _ => {}
                }
            }
            return Ok((raw, wire_length));
        }
    }

    /// A request authenticated by the key alone (enroll, token): a proof without `ath`,
    /// retried once on `use_dpop_nonce`.
    fn call_with_key(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<RawResponse, ClientError> {
        let htu = self.client.htu(path);
        let mut nonce_retried = false;
        loop {
            let nonce = self.nonce()?;
            let proof = self.key.proof(method, &htu, None, Some(&nonce));
            let mut headers = vec![("dpop", proof.as_str()), ("accept", JSON)];
            headers.extend(content_type.map(|content_type| ("content-type", content_type)));
            let (raw, _) = self.exchange(method, path, &headers, body, SYNC_RESPONSE_LIMIT)?;
            if raw.status == 401
                && !nonce_retried
                && raw.error_code().as_deref() == Some("use_dpop_nonce")
            {
                nonce_retried = true;
                continue;
            }
            return Ok(raw);
        }
    }

    /// Sends one request and remembers the nonce its answer carries.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
    ) -> Result<(RawResponse, u64), ClientError> {
        self.sent.requests += 1;
        self.sent.traffic.bytes_up += body.len() as u64;
        let (raw, wire_length) = self.client.request_limited(method, path, headers, body, limit)?;
        self.sent.traffic.bytes_down += wire_length;
        match raw.header("dpop-nonce") {
            Some(nonce) if self.cache.nonce.as_deref() != Some(nonce) => {
                self.cache.nonce = Some(nonce.to_owned());
                self.persist();
            }
            Some(_) => {}
            // A nonce refusal without a new nonce: ask for one before the retry.
            None if raw.error_code().as_deref() == Some("use_dpop_nonce") => {
                self.cache.nonce = None;
            }
            None => {}
        }
        Ok((raw, wire_length))
    }

    /// Writes the cache to the home; a failure only costs a token request next time, so it
    /// is not an error of the call that caused it.
    fn persist(&self) {
        if let Some(path) = &self.cache_path {
            let bytes = serde_json::to_vec(&self.cache).expect("the cache serialises");
            let _ = write_private(path, &bytes);
        }
    }
}

/// Unix time in seconds.
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}
