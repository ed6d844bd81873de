//! D-2, small enough for CI: five devices edit shared records and upload while the server is
//! killed with SIGKILL again and again, at moments a seeded nemesis picks, and restarted on the
//! same data dir. No acknowledged upload is lost, none is stored twice, nothing appears that
//! was never sent, `fieldcase-server check` finds the data dir sound, and once the server stays
//! up every device converges on the server's view (SECURITY.md §d D-2, B-41).
//!
//! The devices are session-driven replicas: sync-core's `DeviceDoc` and `SyncRound`, the code
//! the `fieldcase` device runs, with edits made by `sync_core::edit` as `fieldcase edit` makes
//! them, so that the test sees every request it sends (Jepsen's invoke, ok and info) and
//! retries exactly the same body with the same `Idempotency-Key`. A real `fieldcase` device
//! edits offline meanwhile and joins the convergence at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Condvar, Mutex};

use automerge::transaction::CommitOptions;
use automerge::{ActorId, ChangeHash};
use cli::auth::Session;
use serde_json::{Value, json};
use sync_core::edit::{TextEdit, edit_text, set_field};
use sync_core::ids::DocumentId;
use sync_core::protocol::{CONTENT_TYPE, DocOutcome, SyncResponse};
use sync_core::replica::{DeviceDoc, SyncRound};

use crate::harness::{
    Device, Enrolled, HandMade, TestServer, document_count, idempotency_key, send_with_headers,
    session_at,
};

/// Devices uploading at once.
const DEVICES: usize = 5;
/// Records of the township created before the nemesis starts; every device edits them.
const SHARED_RECORDS: usize = 3;
/// SIGKILLs of the server during the run.
const KILLS: usize = 50;
/// After each restart the nemesis kills again once between 1 and this many sync requests have
/// been answered; the other devices are then anywhere in their requests.
const MAX_PROGRESS_BETWEEN_KILLS: u64 = 8;
/// The nemesis seed; `FIELDCASE_CRASH_SEED=<u64>` replays another.
const SEED: u64 = 0x0d2c_5eed_2026_0004;
/// Edits each device makes at least; a device stops once the nemesis is done and it made them.
const MIN_STEPS: usize = 6;
/// Edits after which a device stops even if the nemesis is not done, so that a stuck run fails
/// on the kill count instead of hanging.
const MAX_STEPS: usize = 400;
/// Attempts of one request before the test gives up on it.
const ATTEMPTS: usize = 200;
/// Rounds of one sync run before the test gives up on it.
const MAX_ROUNDS: usize = 20;
/// Passes of "every device syncs until quiet" before the test gives up on convergence.
const MAX_PASSES: usize = 5;

/// Where the server listens now; every restart bumps the generation.
struct Endpoint {
    generation: u64,
    url: String,
    /// The nemesis is done: the server of this generation stays up.
    calm: bool,
    /// The main thread gave up (it panicked): nobody will restart the server.
    abandoned: bool,
}

/// The endpoint, shared by the main thread (which restarts the server) and the devices.
struct Shared {
    endpoint: Mutex<Endpoint>,
    restarted: Condvar,
}

impl Shared {
    fn new(url: &str) -> Self {
        let endpoint =
            Endpoint { generation: 0, url: url.to_owned(), calm: false, abandoned: false };
        Self { endpoint: Mutex::new(endpoint), restarted: Condvar::new() }
    }

    /// An endpoint no nemesis restarts: a device that loses its server fails instead of
    /// waiting for another.
    fn settled(url: &str) -> Self {
        let endpoint = Endpoint { generation: 0, url: url.to_owned(), calm: true, abandoned: true };
        Self { endpoint: Mutex::new(endpoint), restarted: Condvar::new() }
    }

    fn current(&self) -> (u64, String) {
        let endpoint = self.endpoint.lock().expect("endpoint lock");
        (endpoint.generation, endpoint.url.clone())
    }

    fn calm(&self) -> bool {
        self.endpoint.lock().expect("endpoint lock").calm
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

    fn publish(&self, url: &str, calm: bool) {
        let mut endpoint = self.endpoint.lock().expect("endpoint lock");
        endpoint.generation += 1;
        endpoint.calm = calm;
        url.clone_into(&mut endpoint.url);
        self.restarted.notify_all();
    }
}

/// Wakes every waiting device for good when dropped, also while the main thread unwinds, so
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

/// The seeded nemesis: how many answers to let pass before the next kill.
struct Nemesis(u64);

impl Nemesis {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// 1..=`MAX_PROGRESS_BETWEEN_KILLS` (xorshift64).
    fn answers_to_wait(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + self.0 % MAX_PROGRESS_BETWEEN_KILLS
    }
}

/// What a device tells the main thread.
enum Event {
    /// A sync request was answered: the progress the nemesis counts.
    Answered,
    /// The device stopped editing; the main thread takes its replica back.
    Finished(Box<Replica>),
}

/// One device: its key and actor, its documents as sync-core keeps them, and what it saw.
struct Replica {
    /// `device N`, for messages.
    name: String,
    /// N: which shared record the device edits first.
    index: usize,
    pkcs8: Vec<u8>,
    actor: ActorId,
    generation: u64,
    session: Session,
    docs: BTreeMap<DocumentId, DeviceDoc>,
    cursor: u64,
    /// Every change this device wrote, by document: each is sent sooner or later.
    written: BTreeMap<DocumentId, BTreeSet<ChangeHash>>,
    /// What the server acknowledged (Jepsen's ok): the uploaded changes and the heads it
    /// answered, by document.
    acknowledged: Vec<(DocumentId, BTreeSet<ChangeHash>)>,
    /// Requests that got no answer (Jepsen's info: outcome unknown), retried.
    interrupted: usize,
    /// The first thing that went wrong other than a killed server.
    failure: Option<String>,
}

impl Replica {
    fn new(enrolled: &Enrolled, shared: &Shared, index: usize) -> Self {
        let (generation, url) = shared.current();
        let pkcs8 = enrolled.key.pkcs8().to_vec();
        Self {
            name: format!("device {index}"),
            index,
            session: session_at(&url, &pkcs8),
            pkcs8,
            actor: ActorId::from_str(&enrolled.actor()).expect("a hex actor"),
            generation,
            docs: BTreeMap::new(),
            cursor: 0,
            written: BTreeMap::new(),
            acknowledged: Vec::new(),
            interrupted: 0,
            failure: None,
        }
    }

    /// Opens a new inspection record, as `fieldcase inspection new` would.
    fn create(&mut self, township: &str, matter: &str) -> DocumentId {
        let mut record = HandMade::inspection(&self.actor.to_hex_string(), township, matter);
        let hashes = record.doc.get_changes(&[]).iter().map(automerge::Change::hash).collect();
        self.written.insert(record.id, hashes);
        self.docs.insert(record.id, DeviceDoc::new(record.id, record.doc));
        record.id
    }

    /// One edit of a held record as one change, as `fieldcase edit` makes it: text appended
    /// to the findings, or the site name set (which other devices set too: a conflict).
    fn edit(&mut self, doc_id: DocumentId, step: usize) -> Result<(), String> {
        let name = &self.name;
        let device_doc = self.docs.get_mut(&doc_id).ok_or_else(|| format!("{doc_id} not held"))?;
        let doc = device_doc.doc_mut();
        let edited = if step % 4 == 1 {
            set_field(doc, "site.name", &format!("现场 {name} {step}"))
        } else {
            edit_text(doc, "findings", TextEdit::Append, &format!("〔{name} {step}〕"))
        };
        edited.map_err(|err| format!("{name} cannot edit {doc_id}: {err}"))?;
        let now_ms = i64::try_from(crate::jose::now()).expect("seconds fit i64") * 1000;
        doc.commit_with(CommitOptions::default().with_message("edit".to_owned()).with_time(now_ms));
        let change = doc.get_last_local_change().ok_or("the edit made no change")?;
        self.written.entry(doc_id).or_default().insert(change.hash());
        Ok(())
    }

    /// Sends `body` until the server answers other than 503 busy; after a transport failure
    /// it retries the same body and key, once a restarted server listens if the server it
    /// talked to is gone. A pull-only body carries no key, as on the device.
    fn deliver(
        &mut self,
        body: &[u8],
        uploads: bool,
        shared: &Shared,
        events: &Sender<Event>,
    ) -> Result<SyncResponse, String> {
        let key = idempotency_key(body);
        let mut headers = vec![("content-type", CONTENT_TYPE), ("accept", CONTENT_TYPE)];
        if uploads {
            headers.push(("idempotency-key", &key));
        }
        let mut last_failure = String::new();
        for _ in 0..ATTEMPTS {
            match send_with_headers(&mut self.session, "POST", "/v1/sync", &headers, body) {
                Ok(response) if response.status == 200 => {
                    // The main thread may be gone already; then nobody counts.
                    let _ = events.send(Event::Answered);
                    return SyncResponse::decode(&response.body)
                        .map_err(|err| format!("an unreadable 200 answer: {err}"));
                }
                Ok(response) if response.status == 503 => "503 busy".clone_into(&mut last_failure),
                Ok(response) => {
                    return Err(format!(
                        "HTTP {}: {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                Err(err) => {
                    self.interrupted += 1;
                    last_failure = format!("{err:?}");
                    if self.session.client().health().is_err() {
                        let Some((generation, url)) = shared.newer_than(self.generation) else {
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

    /// Sync rounds until nothing is pending and the server has nothing more; returns the
    /// changes uploaded and downloaded.
    fn sync(&mut self, shared: &Shared, events: &Sender<Event>) -> Result<(usize, usize), String> {
        let (mut uploaded, mut downloaded) = (0, 0);
        for _ in 0..MAX_ROUNDS {
            let mut pending: BTreeMap<DocumentId, BTreeSet<ChangeHash>> = BTreeMap::new();
            for (doc_id, device_doc) in &mut self.docs {
                let changes = device_doc.pending();
                if !changes.is_empty() {
                    pending.insert(*doc_id, changes.iter().map(automerge::Change::hash).collect());
                }
            }
            let round = SyncRound::plan(self.cursor, self.docs.values_mut());
            let body = round.request().encode();
            let response = self.deliver(&body, !round.is_empty(), shared, events)?;
            for result in &response.results {
                match &result.outcome {
                    DocOutcome::Accepted { heads, .. } => {
                        let mut hashes = pending.remove(&result.doc_id).unwrap_or_default();
                        hashes.extend(heads.iter().map(|hash| ChangeHash(*hash)));
                        self.acknowledged.push((result.doc_id, hashes));
                    }
                    DocOutcome::Resync { .. } => {}
                    DocOutcome::Rejected { code, message, .. } => {
                        return Err(format!("{} refused: {code}: {message}", result.doc_id));
                    }
                }
            }
            let outcome = round
                .apply(response, &mut self.docs, &self.actor)
                .map_err(|err| format!("cannot apply the answer: {err}"))?;
            self.cursor = outcome.cursor;
            uploaded += outcome.uploaded;
            downloaded += outcome.downloaded;
            if !outcome.more && !self.docs.values_mut().any(DeviceDoc::has_pending) {
                return Ok((uploaded, downloaded));
            }
        }
        Err(format!("{}: still not in sync after {MAX_ROUNDS} rounds", self.name))
    }

    /// Edits the shared records and opens records of its own, syncing after every edit,
    /// until the nemesis is done and at least `MIN_STEPS` edits are made.
    fn run(
        &mut self,
        shared_docs: &[DocumentId],
        township: &Township,
        shared: &Shared,
        events: &Sender<Event>,
    ) {
        for step in 0..MAX_STEPS {
            if step >= MIN_STEPS && shared.calm() {
                return;
            }
            let edited = if step % 4 == 3 {
                self.create(&township.id, &township.matter);
                Ok(())
            } else {
                self.edit(shared_docs[(self.index + step) % shared_docs.len()], step)
            };
            if let Err(failure) = edited.and_then(|()| self.sync(shared, events).map(|_| ())) {
                self.failure = Some(failure);
                return;
            }
        }
    }

    /// The device's view of `doc_id`, as `show --json` prints it.
    fn view(&mut self, doc_id: DocumentId) -> Value {
        let device_doc = self.docs.get_mut(&doc_id).unwrap_or_else(|| {
            panic!("{} does not hold {doc_id}", self.name);
        });
        serde_json::to_value(device_doc.view()).expect("a view serializes")
    }
}

/// The township every record is made in, and the matter entrusted to it.
struct Township {
    id: String,
    matter: String,
}

#[test]
fn five_devices_editing_shared_records_through_repeated_sigkills_lose_nothing_and_converge() {
    // Arrange: five devices of the two officers of one township, a real `fieldcase` device of
    // the same township, and shared records every device holds.
    let mut server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let seed = std::env::var("FIELDCASE_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(SEED);
    let mut admin = server.admin();
    let mut code_of = |officer: &str| {
        admin.post_json("/v1/admin/enroll-codes", &json!({"officer": officer})).expect("a code")
            ["code"]
            .as_str()
            .expect("the code")
            .to_owned()
    };
    let (first, second) = (demo.officers[0].officer.clone(), demo.officers[1].officer.clone());
    let codes = [
        demo.officers[0].code.clone(),
        demo.officers[1].code.clone(),
        code_of(&first),
        code_of(&second),
        code_of(&first),
    ];
    let observer_code = code_of(&second);
    let enrolled: Vec<Enrolled> = codes.iter().map(|code| server.enroll(code)).collect();
    let mut supervisor = server.enroll(&demo.supervisor_code);
    let records = Township { id: demo.officers[0].township.clone(), matter: demo.entrusted };
    let shared = Shared::new(server.url());
    let (events, received) = channel();
    let mut replicas: Vec<Replica> = enrolled
        .iter()
        .enumerate()
        .map(|(index, device)| Replica::new(device, &shared, index))
        .collect();
    let shared_docs: Vec<DocumentId> =
        (0..SHARED_RECORDS).map(|_| replicas[0].create(&records.id, &records.matter)).collect();
    for replica in &mut replicas {
        replica.sync(&shared, &events).expect("the shared records reach every device");
    }
    let (observer, _) = Device::enrolled(&server, &observer_code);
    assert_eq!(observer.json(&["sync"])["downloaded"], SHARED_RECORDS);
    let mut observer_edits: BTreeMap<DocumentId, usize> = BTreeMap::new();
    for (index, doc_id) in shared_docs.iter().enumerate() {
        let doc = doc_id.to_string();
        observer.json(&["edit", &doc, "--append", &format!("findings=〔离线 {index}〕")]);
        observer.json(&["edit", &doc, "--set", "site.name=离线现场"]);
        observer_edits.insert(*doc_id, 2);
    }

    // Act: the devices edit and sync while the main thread kills and restarts the server
    // whenever the seeded number of sync requests has been answered since the last restart.
    let mut kills = 0;
    let mut finished = Vec::new();
    std::thread::scope(|scope| {
        for mut replica in replicas.drain(..) {
            let (shared, events, shared_docs, records) =
                (&shared, events.clone(), shared_docs.as_slice(), &records);
            scope.spawn(move || {
                replica.run(shared_docs, records, shared, &events);
                let _ = events.send(Event::Finished(Box::new(replica)));
            });
        }
        // Only the devices send from here on: should they all stop early, `recv` fails.
        drop(events);
        let _abandon = Abandon(&shared);
        let mut nemesis = Nemesis::new(seed);
        let (mut seen, mut wait) = (0, nemesis.answers_to_wait());
        while finished.len() < DEVICES {
            match received.recv().expect("devices report until they finish") {
                Event::Answered if kills < KILLS => {
                    seen += 1;
                    if seen >= wait {
                        server.restart();
                        kills += 1;
                        shared.publish(server.url(), kills == KILLS);
                        (seen, wait) = (0, nemesis.answers_to_wait());
                    }
                }
                Event::Answered => {}
                Event::Finished(replica) => finished.push(*replica),
            }
        }
    });
    let mut replicas = finished;
    server.stop();
    let after_the_nemesis = server.check();

    // Assert: the nemesis ran, no device saw anything but killed servers, every acknowledged
    // change survived, and the data dir checks clean.
    let context = format!("seed {seed}");
    assert_eq!(kills, KILLS, "{context}");
    for replica in &replicas {
        assert_eq!(replica.failure, None, "{}, {context}", replica.name);
    }
    let interrupted: usize = replicas.iter().map(|replica| replica.interrupted).sum();
    assert!(interrupted >= KILLS, "every kill cuts off some device: {interrupted}, {context}");
    after_the_nemesis.assert_clean();
    server.restart();
    supervisor.reconnect(&server);
    let mut stored: BTreeMap<DocumentId, Vec<String>> = BTreeMap::new();
    for replica in &replicas {
        for (doc_id, hashes) in &replica.acknowledged {
            let history = stored
                .entry(*doc_id)
                .or_insert_with(|| history_hashes(&mut supervisor.session, *doc_id));
            for hash in hashes {
                assert!(
                    history.contains(&hash.to_string()),
                    "{} acknowledged {hash} of {doc_id}, which is lost; {context}",
                    replica.name
                );
            }
        }
    }

    // Act: the server stays up; every device, the real one too, syncs until a whole pass is
    // quiet.
    let observer = observer.pointed_at(&server);
    let mut quiet = false;
    for _ in 0..MAX_PASSES {
        let mut moved = 0;
        let (pass_events, _) = channel();
        let settled = Shared::settled(server.url());
        for replica in &mut replicas {
            replica.session = session_at(server.url(), &replica.pkcs8);
            let (uploaded, downloaded) = replica
                .sync(&settled, &pass_events)
                .unwrap_or_else(|failure| panic!("{}: {failure}", replica.name));
            moved += uploaded + downloaded;
        }
        let synced = observer.json(&["sync"]);
        assert_eq!(synced["ok"], true, "{synced}");
        moved += usize::try_from(
            synced["uploaded"].as_u64().unwrap() + synced["downloaded"].as_u64().unwrap(),
        )
        .expect("a count");
        if moved == 0 {
            quiet = true;
            break;
        }
    }

    // Assert: one view everywhere, and the history holds each change written exactly once.
    assert!(quiet, "no quiet pass after {MAX_PASSES}; {context}");
    let mut written: BTreeMap<DocumentId, BTreeSet<ChangeHash>> = BTreeMap::new();
    for replica in &replicas {
        for (doc_id, hashes) in &replica.written {
            written.entry(*doc_id).or_default().extend(hashes.iter().copied());
        }
    }
    assert_eq!(
        document_count(&mut supervisor.session),
        written.len(),
        "nothing that was never sent"
    );
    let mut total_changes = 0;
    for (doc_id, hashes) in &written {
        let doc = doc_id.to_string();
        let history = history_hashes(&mut supervisor.session, *doc_id);
        let distinct: BTreeSet<&String> = history.iter().collect();
        assert_eq!(distinct.len(), history.len(), "{doc} has a change stored twice");
        let expected = hashes.len() + observer_edits.get(doc_id).copied().unwrap_or(0);
        assert_eq!(history.len(), expected, "{doc}: the changes sent, each stored once; {context}");
        assert!(hashes.iter().all(|hash| distinct.contains(&hash.to_string())), "{doc}");
        total_changes += history.len();
        let view = supervisor.session.get_json(&format!("/v1/docs/{doc}")).expect("server view");
        for replica in &mut replicas {
            assert_eq!(replica.view(*doc_id), view, "{} differs on {doc}", replica.name);
        }
        assert_eq!(observer.json(&["show", &doc]), view, "the real device differs on {doc}");
    }
    let findings = supervisor
        .session
        .get_json(&format!("/v1/docs/{}", shared_docs[0]))
        .expect("view")["record"]["findings"]
        .as_str()
        .expect("findings text")
        .to_owned();
    assert!(findings.contains("〔离线 0〕"), "the offline edit merged: {findings}");
    server.stop();
    let check = server.check();
    check.assert_clean();
    assert_eq!(check.report["documents"], written.len(), "{}", check.report);
    assert_eq!(check.report["changes"], total_changes, "{}", check.report);
}

/// The hashes of a document's stored history, in feed order.
#[track_caller]
fn history_hashes(session: &mut Session, doc_id: DocumentId) -> Vec<String> {
    session
        .get_json(&format!("/v1/docs/{doc_id}/history"))
        .expect("history")
        .as_array()
        .expect("history entries")
        .iter()
        .map(|entry| entry["hash"].as_str().expect("a hash").to_owned())
        .collect()
}
