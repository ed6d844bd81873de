//! D-2, small enough for CI: the server is killed with SIGKILL again and again while devices
//! upload, and restarted on the same data dir. No acknowledged upload is lost, none is stored
//! twice, nothing appears that was never sent, and `fieldcase-server check` finds the data dir
//! sound (SECURITY.md §d D-2, B-41).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Condvar, Mutex};

use cli::auth::Session;
use serde_json::json;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, SyncResponse};

use crate::harness::{
    HandMade, TestServer, document_count, idempotency_key, send_with_headers, session_at,
};

/// Devices uploading at once.
const UPLOADERS: usize = 3;
/// Records each device creates; each travels in two uploads (creation, then an edit on top).
const RECORDS_PER_UPLOADER: usize = 10;
/// Uploads of all devices together.
const UPLOADS: usize = UPLOADERS * RECORDS_PER_UPLOADER * 2;
/// SIGKILLs of the server during the run.
const KILLS: usize = 10;
/// Attempts of one upload before the test gives up on it.
const ATTEMPTS: usize = 200;

/// Where the server listens now; every restart bumps the generation.
struct Endpoint {
    generation: u64,
    url: String,
    /// The main thread gave up (it panicked): nobody will restart the server.
    abandoned: bool,
}

/// The endpoint, shared by the main thread (which restarts the server) and the uploaders.
struct Shared {
    endpoint: Mutex<Endpoint>,
    restarted: Condvar,
}

impl Shared {
    fn current(&self) -> (u64, String) {
        let endpoint = self.endpoint.lock().expect("endpoint lock");
        (endpoint.generation, endpoint.url.clone())
    }

    /// Blocks until the server of a generation after `generation` listens; `None` once the
    /// main thread gave up.
    fn newer_than(&self, generation: u64) -> Option<(u64, String)> {
        let endpoint = self
            .restarted
            .wait_while(self.endpoint.lock().expect("endpoint lock"), |endpoint| {
                endpoint.generation <= generation && !endpoint.abandoned
            })
            .expect("endpoint lock");
        (!endpoint.abandoned).then(|| (endpoint.generation, endpoint.url.clone()))
    }

    fn publish(&self, url: &str) {
        let mut endpoint = self.endpoint.lock().expect("endpoint lock");
        endpoint.generation += 1;
        url.clone_into(&mut endpoint.url);
        self.restarted.notify_all();
    }
}

/// Wakes every waiting uploader for good when dropped, also while the main thread unwinds, so
/// that a failing test fails instead of hanging on threads that wait for a restart.
struct Abandon<'a>(&'a Shared);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let mut endpoint =
            self.0.endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        endpoint.abandoned = true;
        self.0.restarted.notify_all();
    }
}

/// What an uploader tells the main thread.
enum Event {
    /// One upload answered 200: the document and the heads the server acknowledged.
    Acknowledged { doc: String, heads: Vec<String> },
    /// The uploader is done: every record it sent, and every answer that was not 200.
    Finished { records: Vec<HandMade>, unexpected: Vec<String> },
}

/// One device uploading through restarts.
struct Uploader<'a> {
    shared: &'a Shared,
    pkcs8: Vec<u8>,
    generation: u64,
    session: Session,
}

impl<'a> Uploader<'a> {
    fn new(shared: &'a Shared, pkcs8: Vec<u8>) -> Self {
        let (generation, url) = shared.current();
        let session = session_at(&url, &pkcs8);
        Self { shared, pkcs8, generation, session }
    }

    /// Sends `body` with its `Idempotency-Key` until the server answers other than 503 busy;
    /// after a transport failure it retries the same body and key, once a restarted server
    /// listens if the server it talked to is gone.
    fn deliver(&mut self, body: &[u8]) -> Result<SyncResponse, String> {
        let key = idempotency_key(body);
        let headers =
            [("content-type", CONTENT_TYPE), ("accept", CONTENT_TYPE), ("idempotency-key", &key)];
        let mut last_failure = String::new();
        for _ in 0..ATTEMPTS {
            match send_with_headers(&mut self.session, "POST", "/v1/sync", &headers, body) {
                Ok(response) if response.status == 200 => {
                    return SyncResponse::decode(&response.body)
                        .map_err(|err| format!("an unreadable 200 answer: {err}"));
                }
                Ok(response) if response.status == 503 => {
                    last_failure = "503 busy".to_owned();
                }
                Ok(response) => {
                    return Err(format!(
                        "HTTP {}: {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                Err(err) => {
                    last_failure = format!("{err:?}");
                    if self.session.client().health().is_err() {
                        let Some((generation, url)) = self.shared.newer_than(self.generation)
                        else {
                            return Err(format!("the test gave up; last: {last_failure}"));
                        };
                        self.generation = generation;
                        self.session = session_at(&url, &self.pkcs8);
                    }
                }
            }
        }
        Err(format!("no answer after {ATTEMPTS} attempts, last: {last_failure}"))
    }

    /// Uploads `body` for `record`; reports the acknowledged heads, or the failure.
    fn upload(
        &mut self,
        record: &HandMade,
        body: &[u8],
        events: &Sender<Event>,
        unexpected: &mut Vec<String>,
    ) {
        let outcome = self.deliver(body).and_then(|response| {
            match response.results.iter().find(|result| result.doc_id == record.id) {
                Some(result) => match &result.outcome {
                    DocOutcome::Accepted { heads, .. } => Ok(heads
                        .iter()
                        .map(|hash| automerge::ChangeHash(*hash).to_string())
                        .collect()),
                    DocOutcome::Rejected { code, message, .. } => Err(format!("{code}: {message}")),
                    DocOutcome::Resync { .. } => Err("the server asked for a resync".to_owned()),
                },
                None => Err("no result for the uploaded record".to_owned()),
            }
        });
        match outcome {
            Ok(heads) => {
                let acknowledged = Event::Acknowledged { doc: record.id.to_string(), heads };
                events.send(acknowledged).expect("the main thread listens");
            }
            Err(failure) => unexpected.push(format!("{}: {failure}", record.id)),
        }
    }
}

/// Creates `RECORDS_PER_UPLOADER` records, each uploaded as its creation and then an edit.
fn upload_records(
    shared: &Shared,
    pkcs8: Vec<u8>,
    actor: &str,
    township: &str,
    matter: &str,
    events: &Sender<Event>,
) {
    let mut uploader = Uploader::new(shared, pkcs8);
    let mut records = Vec::new();
    let mut unexpected = Vec::new();
    for index in 0..RECORDS_PER_UPLOADER {
        let mut record = HandMade::inspection(actor, township, matter);
        let creation = record.upload(&[]);
        uploader.upload(&record, &creation, events, &mut unexpected);
        let base = record.heads();
        record.set("outcome", &format!("rectification_order {index}"));
        let edit = record.upload(&base);
        uploader.upload(&record, &edit, events, &mut unexpected);
        records.push(record);
    }
    events.send(Event::Finished { records, unexpected }).expect("the main thread listens");
}

#[test]
fn uploads_acknowledged_before_repeated_sigkills_survive_once_and_the_data_dir_checks_clean() {
    // Arrange: three devices (two of one officer, one of the other officer of the township).
    let mut server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let mut admin = server.admin();
    let second_code = admin
        .post_json("/v1/admin/enroll-codes", &json!({"officer": demo.officers[0].officer}))
        .expect("an admin issues a second code")["code"]
        .as_str()
        .expect("the code")
        .to_owned();
    let devices = [
        server.enroll(&demo.officers[0].code),
        server.enroll(&demo.officers[1].code),
        server.enroll(&second_code),
    ];
    let mut supervisor = server.enroll(&demo.supervisor_code);
    let township = demo.officers[0].township.clone();
    let shared = Shared {
        endpoint: Mutex::new(Endpoint {
            generation: 0,
            url: server.url().to_owned(),
            abandoned: false,
        }),
        restarted: Condvar::new(),
    };
    let (events, received) = channel();

    // Act: the uploaders run while the main thread kills the server each time another
    // `UPLOADS / (KILLS + 2)` uploads have been acknowledged, so every kill finds requests in
    // flight and the last uploads reach a server that stays up.
    let mut acknowledged: Vec<(String, Vec<String>)> = Vec::new();
    let mut records = Vec::new();
    let mut unexpected = Vec::new();
    let mut kills = 0;
    std::thread::scope(|scope| {
        for device in &devices {
            let (shared, events, township) = (&shared, events.clone(), township.as_str());
            let (pkcs8, actor, matter) =
                (device.key.pkcs8().to_vec(), device.actor(), demo.entrusted.as_str());
            scope.spawn(move || {
                upload_records(shared, pkcs8, &actor, township, matter, &events);
            });
        }
        // Only the uploaders send from here on: should they all stop early, `recv` fails.
        drop(events);
        let _abandon = Abandon(&shared);
        let mut finished = 0;
        while finished < UPLOADERS {
            match received.recv().expect("uploaders report until they finish") {
                Event::Acknowledged { doc, heads } => {
                    acknowledged.push((doc, heads));
                    if kills < KILLS && acknowledged.len() >= (kills + 1) * UPLOADS / (KILLS + 2) {
                        server.restart();
                        kills += 1;
                        shared.publish(server.url());
                    }
                }
                Event::Finished { records: sent, unexpected: failures } => {
                    finished += 1;
                    records.extend(sent);
                    unexpected.extend(failures);
                }
            }
        }
    });
    server.stop();
    let check = server.check();

    // Assert
    assert_eq!(kills, KILLS);
    assert!(unexpected.is_empty(), "uploads not acknowledged: {unexpected:#?}");
    assert_eq!(acknowledged.len(), UPLOADS);
    check.assert_clean();
    assert_eq!(check.report["documents"], records.len(), "{}", check.report);
    assert_eq!(check.report["changes"], UPLOADS, "{}", check.report);
    server.restart();
    supervisor.reconnect(&server);
    let session = &mut supervisor.session;
    assert_eq!(document_count(session), records.len(), "nothing that was never sent");
    let mut stored_hashes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &mut records {
        let doc = record.id.to_string();
        let history = session.get_json(&format!("/v1/docs/{doc}/history")).expect("history");
        let hashes: BTreeSet<String> = history
            .as_array()
            .expect("history entries")
            .iter()
            .map(|entry| entry["hash"].as_str().expect("a hash").to_owned())
            .collect();
        let sent: BTreeSet<String> =
            record.doc.get_changes(&[]).iter().map(|change| change.hash().to_string()).collect();
        assert_eq!(hashes, sent, "{doc}: stored changes differ from those sent");
        assert_eq!(history.as_array().map(Vec::len), Some(2), "{doc} stored once: {history}");
        let view = session.get_json(&format!("/v1/docs/{doc}")).expect("the merged view");
        let mut heads: Vec<String> = record.heads().iter().map(ToString::to_string).collect();
        heads.sort();
        assert_eq!(view["heads"], json!(heads), "{doc}");
        stored_hashes.insert(doc, hashes);
    }
    for (doc, heads) in &acknowledged {
        let stored = stored_hashes.get(doc).unwrap_or_else(|| panic!("acknowledged {doc} lost"));
        assert!(heads.iter().all(|head| stored.contains(head)), "{doc}: acknowledged {heads:?}");
    }
}
