//! One measured sync: every device syncs at once, on its own thread and its own connection,
//! and the server's copy of every document is then checked against the device's heads.
//!
//! A device syncs as `fieldcase sync` does (sync-core's `SyncRound`), with two differences
//! that keep the bench a measure of the server: a request carries at most 2,000 changes (the
//! server's batch limit), and changes of documents the device does not hold (the rest of the
//! township's feed) are counted and dropped rather than applied, so that client work on the
//! same machine stays small and memory stays bounded at 10,000 documents.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sync_core::ids::DocumentId;
use sync_core::protocol::DocUpload;
use sync_core::replica::SyncRound;

use crate::client::Traffic;
use crate::commands::bench::fleet::{Admin, Device};

/// Changes one sync request may carry (docs/sync.md: more is refused with `batch_too_large`).
pub(crate) const MAX_CHANGES_PER_REQUEST: usize = 2_000;

/// The document uploads of one request, as the floor replays them.
pub(crate) type Batch = Vec<DocUpload>;

/// What one concurrent sync of every device measured.
#[derive(Debug, Default)]
pub(crate) struct SyncRun {
    /// From the first request to the moment the last device had every document acknowledged.
    pub(crate) confirmed: Duration,
    /// From the first request to the end of the last device's rounds (the feed drained too).
    pub(crate) drained: Duration,
    /// HTTP requests, retries and token requests included.
    pub(crate) requests: u64,
    /// Body bytes up and down.
    pub(crate) traffic: Traffic,
    /// Changes the server newly stored.
    pub(crate) uploaded: usize,
    /// Changes received for documents the devices hold and newly applied.
    pub(crate) downloaded: usize,
    /// Chunks received for documents the devices do not hold, counted and dropped.
    pub(crate) foreign: usize,
    /// Per device, every upload in order, when recorded for the floor.
    pub(crate) batches: Vec<Vec<Batch>>,
}

/// What one device's rounds measured.
struct DeviceRun {
    confirmed_at: Instant,
    drained_at: Instant,
    uploaded: usize,
    downloaded: usize,
    foreign: usize,
    batches: Vec<Batch>,
}

/// Every device syncs at once until it has nothing pending and the server nothing more to
/// send; the clock starts when they are released together.
///
/// # Errors
/// The first device's failure: a transport or API error, a rejected document, an answer that
/// does not apply, or a round that makes no progress.
pub(crate) fn sync_all(devices: &mut [Device], record: bool) -> Result<SyncRun> {
    let before: Vec<_> = devices.iter().map(|device| device.session.sent()).collect();
    let start = Barrier::new(devices.len() + 1);
    let (started, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter_mut()
            .map(|device| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    sync_device(device, record)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let results: Vec<Result<DeviceRun>> = handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a device panicked")))
            })
            .collect();
        (started, results)
    });
    let mut run = SyncRun::default();
    for (result, device) in results.into_iter().zip(devices.iter()) {
        let device_run = result.with_context(|| format!("device {}", device.index))?;
        run.confirmed =
            run.confirmed.max(device_run.confirmed_at.saturating_duration_since(started));
        run.drained = run.drained.max(device_run.drained_at.saturating_duration_since(started));
        run.uploaded += device_run.uploaded;
        run.downloaded += device_run.downloaded;
        run.foreign += device_run.foreign;
        run.batches.push(device_run.batches);
    }
    for (device, before) in devices.iter().zip(before) {
        let after = device.session.sent();
        run.requests += after.requests - before.requests;
        run.traffic.bytes_up += after.traffic.bytes_up - before.traffic.bytes_up;
        run.traffic.bytes_down += after.traffic.bytes_down - before.traffic.bytes_down;
    }
    Ok(run)
}

/// One device's rounds: upload up to [`MAX_CHANGES_PER_REQUEST`] changes per request, apply
/// the answer, repeat while anything is pending or the server has more.
fn sync_device(device: &mut Device, record: bool) -> Result<DeviceRun> {
    // Set when an answer leaves nothing pending: even a device with nothing to upload is
    // confirmed only by the server's answer.
    let mut confirmed_at = None;
    let mut run = DeviceRun {
        confirmed_at: Instant::now(),
        drained_at: Instant::now(),
        uploaded: 0,
        downloaded: 0,
        foreign: 0,
        batches: Vec::new(),
    };
    loop {
        let chosen: BTreeSet<DocumentId> = device.next_batch(MAX_CHANGES_PER_REQUEST);
        let round = SyncRound::plan(
            device.cursor,
            device.docs.values_mut().filter(|device_doc| chosen.contains(&device_doc.id())),
        );
        if record && !round.is_empty() {
            run.batches.push(round.request().docs.clone());
        }
        let (mut response, _) =
            device.session.sync(round.request()).context("syncing with the server")?;
        let (own, foreign): (Vec<_>, Vec<_>) = std::mem::take(&mut response.updates)
            .into_iter()
            .partition(|update| device.docs.contains_key(&update.doc_id));
        run.foreign += foreign.iter().map(|update| update.changes.len()).sum::<usize>();
        response.updates = own;

        let previous_cursor = device.cursor;
        let outcome = round
            .apply(response, &mut device.docs, &device.actor)
            .context("applying the server's answer")?;
        if let Some((doc_id, code, message)) = outcome.rejected.first() {
            bail!("the server refused document {doc_id}: {message} ({code})");
        }
        let mut acknowledged = 0;
        for doc_id in &chosen {
            let device_doc = device.docs.get_mut(doc_id).expect("chosen documents are held");
            if !device_doc.has_pending() {
                device.pending_changes.remove(doc_id);
                acknowledged += 1;
            }
        }
        run.uploaded += outcome.uploaded;
        run.downloaded += outcome.downloaded;
        device.cursor = outcome.cursor;

        let pending = !device.pending_changes.is_empty();
        if !pending && confirmed_at.is_none() {
            confirmed_at = Some(Instant::now());
        }
        if !outcome.more && !pending {
            break;
        }
        if acknowledged == 0 && device.cursor == previous_cursor && outcome.uploaded == 0 {
            bail!("a sync round made no progress (cursor {})", device.cursor);
        }
    }
    run.drained_at = Instant::now();
    run.confirmed_at = confirmed_at.unwrap_or(run.drained_at);
    Ok(run)
}

/// Whether the server holds every document of every device at the device's heads.
#[derive(Debug, Default)]
pub(crate) struct Verification {
    /// Documents that match.
    pub(crate) matched: usize,
    /// Documents missing on the server or at other heads, with what differs.
    pub(crate) failures: Vec<String>,
    /// Time the check took.
    pub(crate) took: Duration,
}

impl Verification {
    /// Every document matched.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks every document of every device against the server's listing (`GET /v1/docs`,
/// which carries each document's heads); a sample would not do.
///
/// # Errors
/// Only when the listing cannot be read.
pub(crate) fn verify(admin: &mut Admin, devices: &mut [Device]) -> Result<Verification> {
    let started = Instant::now();
    let server_heads = admin.server_heads()?;
    let mut verification = Verification::default();
    for device in devices.iter_mut() {
        for (doc_id, device_doc) in &mut device.docs {
            let mut heads: Vec<String> =
                device_doc.heads().iter().map(ToString::to_string).collect();
            heads.sort_unstable();
            let pending = device_doc.has_pending();
            match server_heads.get(&doc_id.to_string()) {
                Some(stored) if *stored == heads && !pending => {
                    verification.matched += 1;
                }
                Some(stored) => verification.failures.push(format!(
                    "document {doc_id} of device {}: server heads {stored:?}, device heads \
                     {heads:?}",
                    device.index
                )),
                None => verification.failures.push(format!(
                    "document {doc_id} of device {} is not on the server",
                    device.index
                )),
            }
        }
    }
    verification.took = started.elapsed();
    Ok(verification)
}
