//! The floor of `fieldcase bench --floor`: the uploads of a scenario replayed in-process into
//! the server's own store, with no HTTP, no authentication and no feed.
//!
//! Each device's uploads go in the same batches and order as over HTTP, one thread per device,
//! at most [`UPLOADS_IN_WORK`] batches parsed, premerged and merged at once as the server allows
//! (`routes::sync::UPLOADS`), so that the writer sees the same concurrency; each batch is parsed
//! as the server parses an upload (change chunks, or a new document's document chunk, whose loaded
//! document is taken as its merge) and merged and committed with `synchronous=FULL` by
//! `server::store::Store::merge_unchecked_parsed`. That is what this machine can do at best for
//! the same changes and the same durability.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use server::store::{DATABASE_FILE, Store};
use sync_core::merge::{UploadLimits, parse_upload_within};

use crate::commands::bench::scenario::Batch;

/// Batches in work at once: the server's `routes::sync::UPLOADS`. Fifty devices' batches all
/// at once would hold more premerged documents than the store takes ahead of the writer
/// (`store::Premerged`), and the rest would merge on the writer: a slower floor than the
/// server's own path (scenario C's floor was 16.8 s against 14.7 s over HTTP).
const UPLOADS_IN_WORK: usize = 4;

/// An in-process store on a temporary directory, kept across the scenarios of one server.
pub(crate) struct Floor {
    store: Store,
    // Held so that the directory outlives the store; declared after it, so dropped after it.
    _data_dir: tempfile::TempDir,
}

impl Floor {
    /// A fresh store.
    pub(crate) fn open() -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("fieldcase-bench-floor-")
            .tempdir()
            .context("creating the floor's data directory")?;
        let store = Store::open(&data_dir.path().join(DATABASE_FILE))
            .context("opening the floor's store")?;
        Ok(Self { store, _data_dir: data_dir })
    }

    /// Replays every device's uploads at once; returns the time from the start to the last
    /// commit and the number of changes stored.
    ///
    /// # Errors
    /// A change that does not parse or merge, or a write that fails.
    pub(crate) fn replay(&self, batches: &[Vec<Batch>]) -> Result<(Duration, usize)> {
        let start = Barrier::new(batches.len() + 1);
        let (give, take) = std::sync::mpsc::sync_channel(UPLOADS_IN_WORK);
        for _ in 0..UPLOADS_IN_WORK {
            give.send(()).expect("the channel has room for every turn");
        }
        let turns = Turns { give, take: Mutex::new(take) };
        let (started, results) = std::thread::scope(|scope| {
            let handles: Vec<_> = batches
                .iter()
                .map(|device_batches| {
                    let (start, turns) = (&start, &turns);
                    scope.spawn(move || {
                        start.wait();
                        let stored = self.replay_device(device_batches, turns);
                        (stored, Instant::now())
                    })
                })
                .collect();
            start.wait();
            let started = Instant::now();
            let results: Vec<_> = handles
                .into_iter()
                .map(|handle| handle.join().expect("a floor thread panicked"))
                .collect();
            (started, results)
        });
        let mut took = Duration::ZERO;
        let mut stored = 0;
        for (result, finished_at) in results {
            stored += result?;
            took = took.max(finished_at.saturating_duration_since(started));
        }
        Ok((took, stored))
    }

    fn replay_device(&self, batches: &[Batch], turns: &Turns) -> Result<usize> {
        let mut stored = 0;
        for batch in batches {
            let _turn = turns.take();
            let uploads = batch
                .iter()
                .map(|upload| {
                    let limits = UploadLimits::default();
                    let (mut inflated, mut allowance) = (limits.max_inflated_bytes, usize::MAX);
                    let parsed =
                        parse_upload_within(upload, limits, &mut inflated, &mut allowance)?;
                    Ok((upload.doc_id, parsed))
                })
                .collect::<Result<Vec<_>>>()?;
            let received_at = chrono::Utc::now().timestamp_millis();
            stored += self
                .store
                .merge_unchecked_parsed(uploads, received_at)
                .context("merging into the floor's store")?;
        }
        Ok(stored)
    }
}

/// Turns to work on a batch, as tokens in a bounded channel.
struct Turns {
    give: SyncSender<()>,
    take: Mutex<Receiver<()>>,
}

impl Turns {
    /// Waits for a turn; it ends when the returned guard drops.
    fn take(&self) -> Turn<'_> {
        self.take
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv()
            .expect("the turns outlive the replay");
        Turn(self)
    }
}

/// One batch's turn.
struct Turn<'a>(&'a Turns);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let _ = self.0.give.send(());
    }
}
