//! The enrolled devices of a benchmark and the admin that enrolls them.
//!
//! Every device is enrolled for real: the admin registers an officer in the township with an
//! active certificate and issues a one-time code, and the device enrolls its own fresh P-256
//! key with it, so that it has its own server-allocated actor, its own access token and its own
//! DPoP proofs. The admin session also reads back what the server holds (`GET /v1/docs`, which
//! carries every document's heads) to verify a scenario.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context as _, Result};
use automerge::ActorId;
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sync_core::ids::DocumentId;
use sync_core::records::OfficerPresent;
use sync_core::replica::DeviceDoc;

use crate::auth::{DeviceKey, Session};
use crate::client::paths::{self, Registry};
use crate::client::{Client, ClientError, RawResponse};

/// The registry the devices are enrolled in.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    /// The township of every officer and document.
    pub(crate) township: String,
    /// The enforcement sector of the certificates; it must include the matter's sector.
    pub(crate) sector: String,
}

/// An admin device's session on the server under test.
pub(crate) struct Admin {
    session: Session,
}

impl Admin {
    /// Enrolls a fresh admin device key with a one-time admin code.
    pub(crate) fn enroll(server_url: &str, code: &str) -> Result<Self> {
        let mut session = Session::new(Client::new(server_url), DeviceKey::generate());
        let answer = session
            .enroll(code, Some("fieldcase bench admin"))
            .with_context(|| format!("enrolling the bench's admin device with {server_url}"))?;
        anyhow::ensure!(
            answer["role"] == "admin",
            "the admin code enrolled a device of role {}, not admin",
            answer["role"]
        );
        Ok(Self { session })
    }

    /// The session of an admin device already enrolled with `fieldcase enroll` in `home`.
    pub(crate) fn open(server_url: &str, home: &Path) -> Result<Self> {
        let session = Session::open(Client::new(server_url), home)
            .with_context(|| format!("opening the admin device in {}", home.display()))?;
        Ok(Self { session })
    }

    /// Enrolls `count` devices, each with its own officer (`bench-<seed>-<fleet>-<n>`, reused
    /// when it exists already), certificate and key, and mints each device's first access
    /// token, so that the measured syncs do not.
    pub(crate) fn enroll_devices(
        &mut self,
        server_url: &str,
        registration: &Registration,
        fleet: &str,
        seed: u64,
        count: usize,
    ) -> Result<Vec<Device>> {
        let today = Utc::now().date_naive();
        let valid_from = (today - Duration::days(1)).to_string();
        let valid_to = (today + Duration::days(365)).to_string();
        let mut enrolled = Vec::with_capacity(count);
        for index in 0..count {
            let officer = format!("bench-{seed}-{fleet}-{index:03}");
            let cert_no = format!("BENCH-{seed}-{fleet}-{index:03}");
            self.create(
                Registry::Officers,
                &json!({
                    "id": officer,
                    "name": format!("bench officer {fleet} {index}"),
                    "township": registration.township,
                    "role": "officer",
                }),
            )?;
            self.create(
                Registry::Certificates,
                &json!({
                    "cert_no": cert_no,
                    "officer": officer,
                    "issuer": "fieldcase bench",
                    "sectors": [registration.sector],
                    "territory": registration.township,
                    "valid_from": valid_from,
                    "valid_to": valid_to,
                }),
            )?;
            let issued = self
                .session
                .post_json(&paths::registry(Registry::EnrollCodes), &json!({"officer": officer}))
                .with_context(|| format!("issuing an enrollment code for {officer}"))?;
            let code = issued["code"].as_str().context("the enrollment code answer has no code")?;

            let mut session = Session::new(Client::new(server_url), DeviceKey::generate());
            let answer = session
                .enroll(code, Some(&format!("bench device {fleet} {index}")))
                .with_context(|| format!("enrolling bench device {index}"))?;
            let actor = answer["actor"]
                .as_str()
                .and_then(|actor| hex::decode(actor).ok())
                .context("the enrollment answer has no hex actor")?;
            session
                .access_token()
                .with_context(|| format!("minting a token for device {index}"))?;
            enrolled.push((session, ActorId::from(actor), OfficerPresent { officer, cert_no }));
        }
        let officers: Vec<OfficerPresent> =
            enrolled.iter().map(|(_, _, officer)| officer.clone()).collect();
        Ok(enrolled
            .into_iter()
            .enumerate()
            .map(|(index, (session, actor, officer))| Device {
                index,
                session,
                actor,
                officers: [officer, officers[(index + 1) % officers.len()].clone()],
                docs: BTreeMap::new(),
                order: Vec::new(),
                edits: Vec::new(),
                pending_changes: HashMap::new(),
                cursor: 0,
            })
            .collect())
    }

    /// An authenticated `GET`, answered whatever its status (scenario `R` times the reports).
    pub(crate) fn get(&mut self, path: &str) -> Result<RawResponse, ClientError> {
        self.session.send("GET", path, None, Vec::new())
    }

    /// Every document the server holds, with its heads as hex strings, sorted.
    pub(crate) fn server_heads(&mut self) -> Result<HashMap<String, Vec<String>>> {
        let listing =
            self.session.get_json(paths::DOCUMENTS).context("listing the server's documents")?;
        let items = listing.as_array().context("the document list is not an array")?;
        let mut heads = HashMap::with_capacity(items.len());
        for item in items {
            let id = item["id"].as_str().context("a listed document has no id")?;
            let mut doc_heads: Vec<String> = item["heads"]
                .as_array()
                .context("a listed document has no heads")?
                .iter()
                .filter_map(|hash| hash.as_str().map(str::to_owned))
                .collect();
            doc_heads.sort_unstable();
            heads.insert(id.to_owned(), doc_heads);
        }
        Ok(heads)
    }

    /// Creates a registry row; one that exists already (a rerun against the same server) is
    /// kept.
    fn create(&mut self, collection: Registry, body: &Value) -> Result<()> {
        match self.session.post_json(&paths::registry(collection), body) {
            Ok(_) => Ok(()),
            Err(ClientError::Api { code, .. }) if code == "already_exists" => Ok(()),
            Err(error) => Err(error).context(format!("registering {body}")),
        }
    }
}

/// One enrolled device and the documents it holds in memory.
pub(crate) struct Device {
    /// Its position in the fleet, which names its documents in the workload.
    pub(crate) index: usize,
    /// Its own key, token and nonce.
    pub(crate) session: Session,
    /// The actor the server allocated to it.
    pub(crate) actor: ActorId,
    /// The officers present in its case files: its own officer, then its neighbour's.
    pub(crate) officers: [OfficerPresent; 2],
    /// Its documents, by id.
    pub(crate) docs: BTreeMap<DocumentId, DeviceDoc>,
    /// Document ids by workload index.
    pub(crate) order: Vec<DocumentId>,
    /// Edits made so far to each document, by workload index.
    pub(crate) edits: Vec<usize>,
    /// Changes not yet acknowledged, per document that has any.
    // Invariant: holds exactly the documents whose `has_pending()` is true, with the number of
    // commits made since their last acknowledgement.
    pub(crate) pending_changes: HashMap<DocumentId, usize>,
    /// The feed cursor of the last answer.
    pub(crate) cursor: u64,
}

impl Device {
    /// Documents to upload in the next request: pending documents, in id order, up to
    /// `max_changes` changes in all (at least one document when any is pending).
    pub(crate) fn next_batch(&self, max_changes: usize) -> BTreeSet<DocumentId> {
        let mut pending: Vec<(&DocumentId, &usize)> = self.pending_changes.iter().collect();
        pending.sort_unstable();
        let mut chosen = BTreeSet::new();
        let mut total = 0;
        for (doc_id, count) in pending {
            if !chosen.is_empty() && total + count > max_changes {
                break;
            }
            total += count;
            chosen.insert(*doc_id);
        }
        chosen
    }
}
