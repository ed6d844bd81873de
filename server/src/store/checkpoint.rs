//! WAL checkpoints on a thread of their own, so that the writer only writes.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that pushes the WAL past 1,000
//! pages: the writer copied the WAL back into the database file and fsynced it while every
//! request behind it waited (a tenth of the writer's time in scenario C). Here the writer turns
//! that off and nudges this thread after each commit; the thread runs a `PASSIVE` checkpoint
//! (which never blocks the writer or a reader) at most once per [`INTERVAL`], so a page that
//! many commits change is copied once per interval rather than once per commit.
//! Durability is unchanged: a commit is durable in the WAL (`synchronous=FULL`) before the
//! checkpoint copies it.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::{StoreError, schema};

/// The least time between two checkpoints.
const INTERVAL: Duration = Duration::from_millis(250);

/// Tells the checkpoint thread that a transaction committed; ends it when dropped.
pub(crate) struct Nudge(SyncSender<()>);

impl Nudge {
    /// After a commit: never blocks; nudges that arrive while one is pending coalesce.
    pub(crate) fn committed(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the thread on its own connection to the database at `path`.
///
/// # Errors
/// When the connection cannot be opened or the thread cannot be started.
pub(crate) fn start(path: &Path) -> Result<(Nudge, JoinHandle<()>), StoreError> {
    let connection = schema::open_checkpointer(path)?;
    let (sender, nudges) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("fieldcase-checkpoint".to_owned())
        .spawn(move || run(&connection, &nudges))
        .map_err(|err| StoreError::Io(err.to_string()))?;
    Ok((Nudge(sender), thread))
}

/// Checkpoints after each nudge, at most once per [`INTERVAL`], until the writer is gone.
fn run(connection: &Connection, nudges: &Receiver<()>) {
    let mut pending = false;
    loop {
        if !pending && nudges.recv().is_err() {
            return;
        }
        if let Err(err) = checkpoint(connection) {
            tracing::warn!(error = %err, "a WAL checkpoint failed; the next nudge retries it");
        }
        pending = false;
        let until = Instant::now() + INTERVAL;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match nudges.recv_timeout(left) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// One `PASSIVE` checkpoint: copies what it can without waiting for anyone.
fn checkpoint(connection: &Connection) -> rusqlite::Result<()> {
    // The answer (busy, WAL frames, frames copied) needs no action: what is left is copied next
    // time.
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::fixtures::temp_store;
    use crate::store::Store;

    fn database_bytes(store: &Store) -> u64 {
        std::fs::metadata(store.path()).expect("the database file").len()
    }

    #[test]
    fn the_checkpoint_thread_copies_committed_pages_into_the_database_file() {
        // Arrange: the writer never checkpoints, so right after opening, the migrations' pages
        // are in the WAL only.
        let (_dir, store) = temp_store();
        let before = database_bytes(&store);

        // Act: a commit nudges the checkpoint thread.
        store
            .write(|connection| {
                connection.execute_batch("CREATE TABLE scratch (value BLOB)")?;
                let value = vec![7_u8; 256 * 1024];
                connection.execute("INSERT INTO scratch (value) VALUES (?1)", [value])?;
                Ok(())
            })
            .unwrap();

        // Assert
        let deadline = Instant::now() + Duration::from_secs(10);
        while database_bytes(&store) < before + 256 * 1024 {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
