//! Starts a real server on a random port with its own data dir, and drives real devices.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr as _;

use automerge::transaction::Transactable as _;
use automerge::{ActorId, AutoCommit, ChangeHash, ROOT};
use cli::auth::{DeviceKey, Session};
use cli::client::{Client, RawResponse};
use serde_json::Value;
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, DocUpload, SyncRequest};
use sync_core::records::{Evidence, InspectionRecord, Party, Site, create_document};
use tempfile::TempDir;

use crate::jose::TestKey;

/// The path of a workspace binary next to the test executable (`target/<profile>/<name>`).
///
/// Cargo only sets `CARGO_BIN_EXE_*` for a binary's own package, so the binaries are found by
/// location; `cargo build --workspace --bins` must have run first.
pub(crate) fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins && cargo test --workspace`",
        path.display()
    );
    path
}

/// One demo officer and its one-time enrollment code.
#[derive(Debug, Clone)]
pub(crate) struct DemoOfficer {
    /// Registry id (`o-1`, ...).
    pub(crate) officer: String,
    /// The officer's township.
    pub(crate) township: String,
    /// The one-time enrollment code.
    pub(crate) code: String,
}

/// What `fieldcase-server --demo` seeded, as it wrote it to `<data-dir>/demo.json`.
#[derive(Debug, Clone)]
pub(crate) struct Demo {
    /// Enrollment code of the admin.
    pub(crate) admin_code: String,
    /// Enrollment code of the supervisor.
    pub(crate) supervisor_code: String,
    /// Three officers: two of `townships[0]`, one of `townships[1]`.
    pub(crate) officers: Vec<DemoOfficer>,
    /// A matter entrusted to `townships[0]`.
    pub(crate) entrusted: String,
    /// A matter entrusted to no township.
    pub(crate) not_entrusted: String,
    /// Township ids.
    pub(crate) townships: Vec<String>,
    /// County department ids.
    #[allow(dead_code)]
    pub(crate) departments: Vec<String>,
}

impl Demo {
    fn parse(json: &Value) -> Self {
        let text = |value: &Value| value.as_str().expect("demo.json holds strings").to_owned();
        let list = |value: &Value| {
            value.as_array().expect("demo.json lists").iter().map(text).collect::<Vec<_>>()
        };
        let officers = json["codes"]["officers"]
            .as_array()
            .expect("demo officers")
            .iter()
            .map(|officer| DemoOfficer {
                officer: text(&officer["officer"]),
                township: text(&officer["township"]),
                code: text(&officer["code"]),
            })
            .collect::<Vec<_>>();
        assert_eq!(officers.len(), 3, "the demo seeds three officers: {json}");
        Self {
            admin_code: text(&json["codes"]["admin"]),
            supervisor_code: text(&json["codes"]["supervisor"]),
            officers,
            entrusted: text(&json["matters"]["entrusted"]),
            not_entrusted: text(&json["matters"]["not_entrusted"]),
            townships: list(&json["townships"]),
            departments: list(&json["departments"]),
        }
    }
}

/// A `fieldcase-server` process with a fresh data dir; killed on drop.
pub(crate) struct TestServer {
    /// `None` while stopped.
    child: Option<Child>,
    url: String,
    data_dir: TempDir,
    demo: Option<Demo>,
    /// Extra flags, passed again on every restart.
    args: Vec<String>,
}

impl TestServer {
    /// Starts the server on port 0 and waits for its `listening on ADDR` line.
    pub(crate) fn spawn() -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let (child, url) = start(data_dir.path(), false, &[]);
        Self { child: Some(child), url, data_dir, demo: None, args: Vec::new() }
    }

    /// Starts the server with `--demo` and reads the seeded registry from `demo.json`.
    pub(crate) fn spawn_demo() -> Self {
        Self::spawn_demo_with(&[])
    }

    /// [`Self::spawn_demo`] with extra server flags (`--max-db-size`, ...), which every
    /// [`Self::restart`] passes again.
    pub(crate) fn spawn_demo_with(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let (child, url) = start(data_dir.path(), true, &args);
        let demo_json = std::fs::read(data_dir.path().join("demo.json"))
            .expect("--demo writes demo.json before the listening line");
        let demo = Demo::parse(&serde_json::from_slice(&demo_json).expect("demo.json is JSON"));
        Self { child: Some(child), url, data_dir, demo: Some(demo), args }
    }

    /// The demo registry; panics for a server started without `--demo`.
    pub(crate) fn demo(&self) -> &Demo {
        self.demo.as_ref().expect("a server started with spawn_demo")
    }

    /// Stops the server with SIGKILL (`Child::kill` on Unix), as a crash or a power cut would:
    /// no shutdown code runs. Its data dir stays for [`Self::restart`].
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data dir (on a new port), killing it first if it
    /// runs.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let (child, url) = start(self.data_dir.path(), self.demo.is_some(), &self.args);
        self.child = Some(child);
        self.url = url;
    }

    /// [`Self::restart`] with other extra flags, kept for later restarts.
    pub(crate) fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart();
    }

    /// Runs `fieldcase-server check --data-dir DIR` on this server's data dir.
    #[track_caller]
    pub(crate) fn check(&self) -> CheckOutcome {
        let output = Command::new(bin_path("fieldcase-server"))
            .arg("check")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .output()
            .expect("run fieldcase-server check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report = serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!(
                "check printed no JSON report ({err}): {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        CheckOutcome { success: output.status.success(), report }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The server's data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// A typed client for requests no device command makes.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// A fresh device key enrolled with `code`: its session, key and enrollment answer.
    #[track_caller]
    pub(crate) fn enroll(&self, code: &str) -> Enrolled {
        let key = TestKey::generate();
        let device_key = DeviceKey::from_pkcs8_der(key.pkcs8()).expect("a P-256 PKCS#8 key");
        let mut session = Session::new(self.client(), device_key);
        let answer = session.enroll(code, None).expect("enrollment with a fresh code succeeds");
        Enrolled { session, answer, key, url: self.url.clone() }
    }

    /// A supervisor session (it reads every document), enrolled with the demo's code.
    #[track_caller]
    pub(crate) fn supervisor(&self) -> Session {
        self.enroll(&self.demo().supervisor_code).session
    }

    /// An admin session, enrolled with the demo's code.
    #[track_caller]
    pub(crate) fn admin(&self) -> Session {
        self.enroll(&self.demo().admin_code).session
    }
}

/// What `fieldcase-server check` said about a data dir.
#[derive(Debug)]
pub(crate) struct CheckOutcome {
    /// It exited with status 0.
    pub(crate) success: bool,
    /// `{"integrity", "documents", "changes", "mismatches"}`.
    pub(crate) report: Value,
}

impl CheckOutcome {
    /// Asserts a clean report: exit 0, `integrity` ok, no mismatches.
    #[track_caller]
    pub(crate) fn assert_clean(&self) {
        assert!(self.success, "check exited non-zero: {}", self.report);
        assert_eq!(self.report["integrity"], "ok", "{}", self.report);
        assert_eq!(self.report["mismatches"], serde_json::json!([]), "{}", self.report);
    }
}

/// Starts `fieldcase-server` on port 0 in `data_dir`; returns it with its base URL.
fn start(data_dir: &Path, demo: bool, args: &[String]) -> (Child, String) {
    let stderr =
        if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
    let mut command = Command::new(bin_path("fieldcase-server"));
    command.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
    if demo {
        command.arg("--demo");
    }
    command.args(args);
    let mut child =
        command.stdout(Stdio::piped()).stderr(stderr).spawn().expect("start fieldcase-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first_line = String::new();
    BufReader::new(stdout).read_line(&mut first_line).expect("read the listening line");
    let address = first_line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .to_owned();
    (child, format!("http://{address}"))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A device key enrolled by the test itself, without the `fieldcase` binary.
pub(crate) struct Enrolled {
    /// The authenticated session of the key.
    pub(crate) session: Session,
    /// The enrollment answer (`device`, `officer`, `actor`, `server_key`, ...).
    pub(crate) answer: Value,
    /// The same key, for hand-made proofs.
    pub(crate) key: TestKey,
    url: String,
}

impl Enrolled {
    /// The server-allocated actor (32 hex) of the device.
    pub(crate) fn actor(&self) -> String {
        actor_of(&self.answer)
    }

    /// `htu` for `path`: the base URL and the path.
    pub(crate) fn htu(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A well-formed proof of this key for `htm path`, with a fresh server nonce.
    pub(crate) fn proof(&self, htm: &str, path: &str, token: Option<&str>) -> String {
        let nonce = fresh_nonce(&self.session_client());
        self.key.proof(htm, &self.htu(path), token, Some(&nonce))
    }

    /// A plain client of the same server.
    pub(crate) fn session_client(&self) -> Client {
        Client::new(&self.url)
    }

    /// The same key talking to `server` at its current URL (after a restart).
    pub(crate) fn reconnect(&mut self, server: &TestServer) {
        self.url = server.url().to_owned();
        self.session = session_at(&self.url, self.key.pkcs8());
    }
}

/// A fresh in-memory session of the device key `pkcs8` with the server at `url`.
pub(crate) fn session_at(url: &str, pkcs8: &[u8]) -> Session {
    Session::new(Client::new(url), DeviceKey::from_pkcs8_der(pkcs8).expect("a P-256 PKCS#8 key"))
}

/// An authenticated request with `headers` besides the credentials (`Idempotency-Key`,
/// `Upload-Offset`, ...), which `Session::send` does not take: the session's token and a proof
/// by its key with a fresh nonce, retried once on `use_dpop_nonce`.
pub(crate) fn send_with_headers(
    session: &mut Session,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse, cli::client::ClientError> {
    let token = session.access_token()?;
    let authorization = format!("DPoP {token}");
    let htu = session.client().url(path);
    let mut nonce = session.client().nonce()?;
    let mut retried = false;
    loop {
        let proof = session.key().proof(method, &htu, Some(&token), Some(&nonce));
        let mut all_headers = vec![("authorization", authorization.as_str()), ("dpop", &proof)];
        all_headers.extend_from_slice(headers);
        let response = session.client().request_raw(method, path, &all_headers, body.to_vec())?;
        if response.status == 401
            && !retried
            && response.error_code().as_deref() == Some("use_dpop_nonce")
            && let Some(fresh) = response.header("dpop-nonce")
        {
            nonce = fresh.to_owned();
            retried = true;
            continue;
        }
        return Ok(response);
    }
}

/// The `Idempotency-Key` a device puts on `body`: base64url(SHA-256(body)).
pub(crate) fn idempotency_key(body: &[u8]) -> String {
    crate::jose::b64_sha256(body)
}

/// `POST /v1/sync` of `body` with `Idempotency-Key: key`; returns the raw answer.
#[track_caller]
pub(crate) fn upload_with_key(session: &mut Session, body: &[u8], key: &str) -> RawResponse {
    send_with_headers(
        session,
        "POST",
        "/v1/sync",
        &[("content-type", CONTENT_TYPE), ("accept", CONTENT_TYPE), ("idempotency-key", key)],
        body,
    )
    .expect("the server answers")
}

/// Hex SHA-256, as evidence items name their blobs.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    digest.iter().fold(String::new(), |mut out, byte| {
        write!(out, "{byte:02x}").expect("write to string");
        out
    })
}

/// A fresh nonce from `GET /v1/nonce`.
#[track_caller]
pub(crate) fn fresh_nonce(client: &Client) -> String {
    let response = client.request_raw("GET", "/v1/nonce", &[], Vec::new()).expect("GET /v1/nonce");
    assert_eq!(response.status, 200);
    let body: Value = serde_json::from_slice(&response.body).expect("nonce JSON");
    body["nonce"].as_str().expect("a nonce").to_owned()
}

/// A field device: the real `fieldcase` binary with its own home directory.
pub(crate) struct Device {
    home: TempDir,
    server: String,
}

impl Device {
    /// A fresh device pointed at `server`.
    pub(crate) fn new(server: &TestServer) -> Self {
        Self { home: tempfile::tempdir().expect("temp home"), server: server.url().to_owned() }
    }

    /// A fresh device enrolled with `code` (`fieldcase enroll --code`), and its enroll answer.
    #[track_caller]
    pub(crate) fn enrolled(server: &TestServer, code: &str) -> (Self, Value) {
        let device = Self::new(server);
        let answer = device.enroll(code);
        (device, answer)
    }

    /// The same device (same home, same replica) talking to the server at its current URL.
    pub(crate) fn pointed_at(self, server: &TestServer) -> Self {
        Self { home: self.home, server: server.url().to_owned() }
    }

    /// The device's home directory (key, replica, credentials).
    pub(crate) fn home(&self) -> &Path {
        self.home.path()
    }

    /// Enrolls the device with a one-time code; returns `{"device","officer","role","township","actor"}`.
    #[track_caller]
    pub(crate) fn enroll(&self, code: &str) -> Value {
        self.json(&["enroll", "--code", code])
    }

    /// A session with this device's key and credentials, as the device itself would talk.
    #[track_caller]
    pub(crate) fn session(&self) -> Session {
        Session::open(Client::new(&self.server), self.home()).expect("the device is enrolled")
    }

    /// Runs `fieldcase --json ARGS` and returns the raw output.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new(bin_path("fieldcase"))
            .arg("--home")
            .arg(self.home.path())
            .args(["--server", &self.server, "--json"])
            .args(args)
            .output()
            .expect("run fieldcase")
    }

    /// Runs a command that must succeed and parses its JSON output.
    #[track_caller]
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "fieldcase {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{args:?} printed {stdout:?}: {err}"))
    }

    /// Runs a command that must fail and returns the `error.code` it printed.
    #[track_caller]
    pub(crate) fn error_code(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "fieldcase {args:?} should fail: {stdout}");
        let error: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{args:?} printed {stdout:?}: {err}"));
        error["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{args:?} printed no error code: {error}"))
            .to_owned()
    }

    /// Opens an inspection of `matter` with the CLI, with `other_officer` present besides the
    /// device's own officer; returns its id.
    #[track_caller]
    pub(crate) fn new_inspection(&self, matter: &str, other_officer: &str) -> String {
        let created = self.json(&[
            "inspection",
            "new",
            "--matter",
            matter,
            "--party-name",
            "张三五金店",
            "--party-id",
            "91330100MA2KXXXX1Q",
            "--site",
            "镇南路 8 号仓库",
            "--officer",
            other_officer,
        ]);
        created["id"].as_str().expect("new --json prints the id").to_owned()
    }

    /// Writes a file into the device's home, as a camera would.
    pub(crate) fn write_file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, bytes).expect("write evidence file");
        path.to_str().expect("utf-8 temp path").to_owned()
    }
}

/// The number of documents `session` may list (`GET /v1/docs`).
#[track_caller]
pub(crate) fn document_count(session: &mut Session) -> usize {
    session.get_json("/v1/docs").expect("document list").as_array().expect("array").len()
}

/// The number of stored changes of a document, as `session` reads them.
#[track_caller]
pub(crate) fn history_len(session: &mut Session, doc_id: &str) -> usize {
    session
        .get_json(&format!("/v1/docs/{doc_id}/history"))
        .expect("history")
        .as_array()
        .expect("array")
        .len()
}

/// A record built in the test, as a device with `actor` would create it.
pub(crate) struct HandMade {
    /// The document id.
    pub(crate) id: DocumentId,
    /// The document, for further edits.
    pub(crate) doc: AutoCommit,
}

impl HandMade {
    /// A new inspection record of `matter` in `township`, written by `actor` (32 hex).
    pub(crate) fn inspection(actor: &str, township: &str, matter: &str) -> Self {
        Self::inspection_with_evidence(actor, township, matter, Vec::new())
    }

    /// [`Self::inspection`] created with `evidence` items already in it.
    pub(crate) fn inspection_with_evidence(
        actor: &str,
        township: &str,
        matter: &str,
        evidence: Vec<Evidence>,
    ) -> Self {
        let id = DocumentId::from_bytes(crate::jose::random_bytes::<16>());
        let party = Party {
            kind: "legal".to_owned(),
            name: "张三五金店".to_owned(),
            id_number: "91330100MA2KXXXX1Q".to_owned(),
        };
        let site = Site { name: "镇南路 8 号仓库".to_owned(), ..Site::default() };
        let now_ms = i64::try_from(crate::jose::now()).expect("seconds fit i64") * 1000;
        let mut record =
            InspectionRecord::new(id.to_string(), matter.to_owned(), party, site, now_ms);
        record.township = township.to_owned();
        record.evidence = evidence;
        let actor = ActorId::from_str(actor).expect("actor ids are hex");
        let doc = create_document(&actor, &record, now_ms).expect("create the document");
        Self { id, doc }
    }

    /// Sets a field as one more change (same actor).
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        self.doc.put(ROOT, key, value).expect("set a field");
        self.doc.commit();
    }

    /// Continues the document as another actor would (after receiving it).
    pub(crate) fn fork_as(&mut self, actor: &str) -> Self {
        let doc = self.doc.fork().with_actor(ActorId::from_str(actor).expect("hex actor"));
        Self { id: self.id, doc }
    }

    /// The current heads.
    pub(crate) fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The sync body uploading every change after `base` (empty: the whole document).
    pub(crate) fn upload(&mut self, base: &[ChangeHash]) -> Vec<u8> {
        SyncRequest { cursor: 0, docs: vec![self.doc_upload(base)] }.encode()
    }

    /// This document's part of a sync request: every change after `base`.
    pub(crate) fn doc_upload(&mut self, base: &[ChangeHash]) -> DocUpload {
        let changes: Vec<Vec<u8>> = self
            .doc
            .get_changes(base)
            .into_iter()
            .map(|mut change| change.bytes().into_owned())
            .collect();
        DocUpload {
            doc_id: self.id,
            base_heads: base.iter().map(|hash| hash.0).collect(),
            heads: self.heads().iter().map(|hash| hash.0).collect(),
            changes,
        }
    }

    /// The sync body uploading exactly `changes` on top of `base`.
    pub(crate) fn upload_changes(&mut self, base: &[ChangeHash], changes: Vec<Vec<u8>>) -> Vec<u8> {
        SyncRequest {
            cursor: 0,
            docs: vec![DocUpload {
                doc_id: self.id,
                base_heads: base.iter().map(|hash| hash.0).collect(),
                heads: self.heads().iter().map(|hash| hash.0).collect(),
                changes,
            }],
        }
        .encode()
    }

    /// Each change of the document, oldest first, as wire chunks.
    pub(crate) fn chunks(&mut self) -> Vec<Vec<u8>> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|mut change| change.bytes().into_owned())
            .collect()
    }
}

/// `POST /v1/sync` through an authenticated session; returns the raw answer.
#[track_caller]
pub(crate) fn upload(session: &mut Session, body: Vec<u8>) -> RawResponse {
    session.send("POST", "/v1/sync", Some(CONTENT_TYPE), body).expect("the server answers")
}

/// Asserts an error answer: status, `error.code` and a human message.
#[track_caller]
pub(crate) fn assert_error(response: &RawResponse, status: u16, code: &str) {
    // A binary sync answer where an error was expected is shown cut short.
    let body: String = String::from_utf8_lossy(&response.body).chars().take(500).collect();
    assert_eq!(response.status, status, "expected {status} {code}, got {body}");
    let error: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|err| panic!("a JSON error body, got {body:?}: {err}"));
    assert_eq!(error["error"]["code"], code, "{error}");
    assert!(error["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
}

/// The hex actor of an enrollment answer.
#[track_caller]
pub(crate) fn actor_of(enrolled: &Value) -> String {
    enrolled["actor"].as_str().expect("the enroll answer holds the actor").to_owned()
}

/// The rows of an admin listing (a JSON array, or an object holding one).
#[track_caller]
pub(crate) fn rows(listing: &Value) -> Vec<Value> {
    match listing {
        Value::Array(rows) => rows.clone(),
        Value::Object(fields) => fields
            .values()
            .find_map(Value::as_array)
            .cloned()
            .unwrap_or_else(|| panic!("no rows in {listing}")),
        other => panic!("not a listing: {other}"),
    }
}

/// The certificate number of `officer`, read through the admin API.
#[track_caller]
pub(crate) fn certificate_of(admin: &mut Session, officer: &str) -> String {
    let listing = admin.get_json("/v1/admin/certificates").expect("certificate list");
    rows(&listing)
        .iter()
        .find(|row| row["officer"] == officer)
        .and_then(|row| row["cert_no"].as_str())
        .unwrap_or_else(|| panic!("no certificate of {officer} in {listing}"))
        .to_owned()
}

/// `POST /v1/admin/{path}` with an empty JSON object; must succeed.
#[track_caller]
pub(crate) fn admin_post(admin: &mut Session, path: &str) -> Value {
    admin.post_json(&format!("/v1/admin/{path}"), &serde_json::json!({})).unwrap_or_else(|err| {
        panic!("POST /v1/admin/{path} failed: {err}");
    })
}

/// The audit rows, read through the admin API.
#[track_caller]
pub(crate) fn audit(admin: &mut Session) -> Vec<Value> {
    rows(&admin.get_json("/v1/admin/audit").expect("audit list"))
}
