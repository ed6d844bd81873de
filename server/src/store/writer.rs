//! The writer thread: the one connection that writes, fed by a channel, committing every job
//! that waits into one transaction (group commit).
//!
//! A request that writes sends a job and waits for its answer. The thread takes the first job,
//! drains every other job already waiting, opens one `BEGIN IMMEDIATE` transaction and runs
//! the first job in it, and each later job inside a `SAVEPOINT` of its own: a job that fails
//! rolls back to its savepoint (the first, the whole transaction) and gets its error, the others
//! stay. One `COMMIT` (one fsync with `synchronous=FULL`) makes the group durable, and only then
//! does any job of the group get its answer.
//!
//! A savepoint is not free: SQLite copies every page its job changes into the sub-journal
//! before changing it. A sync merge changes random pages of the change log's indexes, so for
//! it that copy costs more than the fsync a shared commit saves (measured: scenario C 18.9 s
//! grouped, 17.0 s one merge per transaction). Such a job is sent [`Weight::Alone`]: it always
//! runs first in a transaction of its own, and the group before it commits first.
//!
//! Documents follow the same discipline as the rows: a job takes the documents it merges into
//! from the group (when an earlier job of the group changed them), else from the cache, else
//! loads them from the writer connection, and stages what it merged. Staged documents join the
//! group only when their job succeeds, and go back into the cache only after `COMMIT`; a
//! failed job or a failed commit drops them, so the cache never holds an uncommitted state.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use automerge::Automerge;
use rusqlite::{Connection, ErrorCode, ffi};
use sync_core::ids::DocumentId;
use tokio::sync::oneshot;

use crate::store::cache::DocumentCache;
use crate::store::{StoreError, documents};

/// Jobs run in one group at most; bounds the latency a long queue adds to its first job.
const MAX_GROUP: usize = 256;

/// Attempts to begin a transaction while another connection (a `check`, an operator's shell)
/// holds the write lock; each waits for the connection's busy timeout.
const BEGIN_ATTEMPTS: u32 = 3;

/// What a job sees while it runs: the connection inside its savepoint and the documents.
pub(crate) struct WriteContext<'a> {
    connection: &'a Connection,
    cache: &'a DocumentCache,
    // Documents changed by earlier jobs of this group, not yet committed.
    group: &'a HashMap<DocumentId, Automerge>,
    // Documents this job merged; they join the group only if the job succeeds.
    staged: Vec<(DocumentId, Automerge)>,
}

impl WriteContext<'_> {
    /// The writer connection, inside this job's savepoint.
    pub(crate) fn connection(&self) -> &Connection {
        self.connection
    }

    /// The current state of a document to merge into: the group's copy, else the cached one
    /// (taken out of the cache), else loaded from the connection; `None` when unknown.
    pub(crate) fn take_document(
        &mut self,
        doc_id: DocumentId,
    ) -> Result<Option<Automerge>, StoreError> {
        // The group's copy is cloned, not taken: if this job fails, the next one still needs
        // the state the earlier jobs wrote.
        if let Some(doc) = self.group.get(&doc_id) {
            return Ok(Some(doc.clone()));
        }
        if let Some(doc) = self.cache.take(doc_id) {
            return Ok(Some(doc));
        }
        documents::load(self.connection, doc_id)
    }

    /// Drops the cache's copy of a document this job merges from a copy of its own (a premerge,
    /// `store::Premerged`), as [`Self::take_document`] takes it out: during the job the cache
    /// holds at most the committed state (a reader may load it again), and after `COMMIT` the
    /// merged one.
    pub(crate) fn drop_cached(&mut self, doc_id: DocumentId) {
        self.cache.remove(doc_id);
    }

    /// Hands a merged document back; it reaches the cache once the group commits.
    pub(crate) fn stage_document(&mut self, doc_id: DocumentId, doc: Automerge) {
        self.staged.push((doc_id, doc));
    }
}

/// How a job that ran ended, for the group.
pub(crate) struct Outcome {
    /// `None` when the job succeeded; else the SQLite error behind its failure, if any.
    failure: Option<Option<ffi::Error>>,
    /// Sends the job's answer once the group's fate is known: `None` when the group committed,
    /// else the error that undid it.
    answer: Box<dyn FnOnce(Option<StoreError>) + Send>,
}

/// Whether a job may share its transaction with others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weight {
    /// A few rows: it joins the group, inside a savepoint when it is not the first.
    Light,
    /// Many pages (a sync merge): a transaction of its own, so it never needs a savepoint.
    Alone,
}

/// A unit of work for the writer thread.
pub(crate) trait WriteJob: Send {
    /// Runs the work inside its transaction (and savepoint, if not the first).
    fn run(self: Box<Self>, context: &mut WriteContext<'_>) -> Outcome;
    /// Answers a job that could not run.
    fn reject(self: Box<Self>, err: StoreError);
    /// Whether it may share a transaction.
    fn weight(&self) -> Weight;
}

/// Where a job's answer goes.
pub(crate) enum Reply<T> {
    /// An async handler awaiting it.
    Async(oneshot::Sender<Result<T, StoreError>>),
    /// A blocking caller (startup, tests, code already on a blocking thread).
    Blocking(SyncSender<Result<T, StoreError>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, StoreError>) {
        // A caller that stopped waiting (a dropped request) needs no answer.
        let _ = match self {
            Self::Async(sender) => sender.send(result).map_err(drop),
            Self::Blocking(sender) => sender.send(result).map_err(drop),
        };
    }
}

/// A closure and where its answer goes.
pub(crate) struct Work<F, T> {
    work: F,
    reply: Reply<T>,
    weight: Weight,
}

impl<F, T> Work<F, T> {
    pub(crate) fn new(work: F, reply: Reply<T>, weight: Weight) -> Self {
        Self { work, reply, weight }
    }
}

impl<F, T> WriteJob for Work<F, T>
where
    F: FnOnce(&mut WriteContext<'_>) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, context: &mut WriteContext<'_>) -> Outcome {
        let Self { work, reply, .. } = *self;
        let result = work(context);
        let failure = match &result {
            Ok(_) => None,
            Err(StoreError::Sqlite(err)) => Some(err.sqlite_error().copied()),
            Err(_) => Some(None),
        };
        let answer = Box::new(move |undone: Option<StoreError>| {
            reply.send(match (result, undone) {
                (Ok(_), Some(err)) => Err(err),
                (result, _) => result,
            });
        });
        Outcome { failure, answer }
    }

    fn reject(self: Box<Self>, err: StoreError) {
        self.reply.send(Err(err));
    }

    fn weight(&self) -> Weight {
        self.weight
    }
}

/// Runs jobs until every sender is gone, then closes the connection.
pub(crate) fn run(
    connection: Connection,
    jobs: &Receiver<Box<dyn WriteJob>>,
    cache: &Arc<DocumentCache>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = VecDeque::from([first]);
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push_back(job),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            run_group(&connection, cache, &mut batch);
        }
    }
    // The store is gone: close the write connection before the thread ends, so a reopen of
    // the same file after `Store::drop` finds it closed.
    drop(connection);
}

/// Runs jobs from the front of `batch` in one transaction and commits them; leaves in `batch`
/// the jobs that did not run because the transaction ended early.
fn run_group(
    connection: &Connection,
    cache: &DocumentCache,
    batch: &mut VecDeque<Box<dyn WriteJob>>,
) {
    if let Err(err) = begin(connection) {
        tracing::warn!(error = %err, jobs = batch.len(), "the writer could not begin a transaction");
        for job in batch.drain(..) {
            job.reject(replicate(&err));
        }
        return;
    }
    let mut group: HashMap<DocumentId, Automerge> = HashMap::new();
    let mut answers: Vec<Box<dyn FnOnce(Option<StoreError>) + Send>> = Vec::new();
    let mut first = true;
    while let Some(job) = batch.pop_front() {
        let alone = job.weight() == Weight::Alone;
        if !first && alone {
            // It starts the next transaction; this one commits without it.
            batch.push_front(job);
            break;
        }
        // The first job is the only one in the transaction so far: rolling the transaction
        // back undoes it and nothing else, so it needs no savepoint.
        if !first && let Err(err) = connection.execute_batch("SAVEPOINT job") {
            job.reject(StoreError::Sqlite(err));
            break;
        }
        let mut context = WriteContext { connection, cache, group: &group, staged: Vec::new() };
        let ran = catch_unwind(AssertUnwindSafe(|| job.run(&mut context)));
        let staged = std::mem::take(&mut context.staged);
        let failure = match ran {
            Ok(Outcome { failure, answer }) => {
                answers.push(answer);
                failure
            }
            Err(_) => {
                // The job's reply was dropped while unwinding: its caller sees `internal`.
                tracing::error!("a write job panicked; its savepoint is rolled back");
                Some(None)
            }
        };
        let closed = match (failure, std::mem::replace(&mut first, false)) {
            (None, true) => {
                group.extend(staged);
                Ok(())
            }
            (None, false) => connection.execute_batch("RELEASE job").map(|()| group.extend(staged)),
            (Some(_), true) => {
                // Nothing else is in the transaction: end it and answer the job with its own
                // error; the jobs still waiting begin a new one.
                if !connection.is_autocommit() {
                    let _ = connection.execute_batch("ROLLBACK");
                }
                for answer in answers {
                    answer(None);
                }
                return;
            }
            (Some(_), false) => connection.execute_batch("ROLLBACK TO job; RELEASE job"),
        };
        if closed.is_err() || connection.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk can do that): the earlier
            // jobs of the group are undone as well.
            let code = failure.flatten().unwrap_or(ffi::Error::new(ffi::SQLITE_ABORT));
            let err = rusqlite::Error::SqliteFailure(
                code,
                Some("the transaction was rolled back".to_owned()),
            );
            tracing::warn!(error = %err, "the group's transaction ended early");
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            for answer in answers {
                answer(Some(replicate(&err)));
            }
            return;
        }
        if alone {
            break;
        }
    }
    match connection.execute_batch("COMMIT") {
        Ok(()) => {
            // Only now may readers find the new states in the cache.
            for (doc_id, doc) in group {
                if !doc.get_heads().is_empty() {
                    cache.put(doc_id, doc);
                }
            }
            for answer in answers {
                answer(None);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, jobs = answers.len(), "the group's commit failed");
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            for answer in answers {
                answer(Some(replicate(&err)));
            }
        }
    }
}

/// `BEGIN IMMEDIATE`, retried while another connection holds the write lock.
fn begin(connection: &Connection) -> Result<(), rusqlite::Error> {
    let mut attempt = 1;
    loop {
        match connection.execute_batch("BEGIN IMMEDIATE") {
            Err(err) if is_busy(&err) && attempt < BEGIN_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// The same SQLite failure again, for each job of a group it undid.
fn replicate(err: &rusqlite::Error) -> StoreError {
    let code = err.sqlite_error().copied().unwrap_or(ffi::Error::new(ffi::SQLITE_ERROR));
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, Some(err.to_string())))
}
