//! The bytes of evidence blobs on disk, content-addressed under `<data-dir>/blobs`.
//!
//! A blob is stored once, at `blobs/<first two hex digits>/<sha256>`, and never deleted. An
//! upload in progress is one temporary file per SHA-256, `blobs/uploads/<sha256>.part`, that
//! chunks are appended to (each fsynced, so the `received` count a resuming device is told
//! survives a crash). When the last byte arrives the whole file is hashed: a mismatch
//! discards it; a match is fsynced, renamed into place and the directory fsynced, so nothing
//! half-written is ever at a blob's path. The `blobs` row (SQL, `store::blobs`) is written only
//! after the rename: a blob is complete when its row exists.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use crate::store::lock;

/// 1 GiB: the largest blob accepted; a video of an inspection fits, a disk image does not.
pub(crate) const MAX_BLOB_BYTES: u64 = 1024 * 1024 * 1024;

/// Bytes read at a time when hashing or serving a blob.
const READ_CHUNK: usize = 256 * 1024;

/// Per-SHA-256 locks, so that two uploads of the same blob never write one file at once.
type UploadLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// The blob directory of one data directory.
pub(crate) struct BlobFiles {
    root: PathBuf,
    locks: UploadLocks,
}

/// How a finished upload ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    /// The bytes hash to the blob's id and are in place.
    Stored,
    /// The bytes hash to something else (hex); they were discarded.
    Mismatch(String),
}

/// Holds the upload lock of one SHA-256 until dropped.
pub(crate) struct UploadLock {
    locks: UploadLocks,
    sha256: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        let mut locks = lock(&self.locks);
        drop(self.guard.take());
        // Only the map still holds the mutex: nobody waits for it, so it can go.
        if locks.get(&self.sha256).is_some_and(|entry| Arc::strong_count(entry) == 1) {
            locks.remove(&self.sha256);
        }
    }
}

impl BlobFiles {
    /// The blob store under `root` (created on first write).
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root, locks: Arc::default() }
    }

    /// Where a stored blob lives.
    pub(crate) fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    fn partial_path(&self, sha256: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{sha256}.part"))
    }

    /// Waits until no other upload of this blob is running, and holds it off until dropped.
    pub(crate) async fn lock_upload(&self, sha256: &str) -> UploadLock {
        let mutex = Arc::clone(lock(&self.locks).entry(sha256.to_owned()).or_default());
        let guard = mutex.lock_owned().await;
        UploadLock { locks: Arc::clone(&self.locks), sha256: sha256.to_owned(), guard: Some(guard) }
    }

    /// Bytes of an unfinished upload held for this blob; 0 if none.
    pub(crate) fn received(&self, sha256: &str) -> io::Result<u64> {
        match fs::metadata(self.partial_path(sha256)) {
            Ok(metadata) => Ok(metadata.len()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// Appends a chunk that starts at `offset` (the caller checked it against
    /// [`Self::received`] under the upload lock) and makes it durable; returns the bytes held.
    ///
    /// A failed write (a full disk) truncates the file back to `offset`.
    pub(crate) fn append(&self, sha256: &str, offset: u64, chunk: &[u8]) -> io::Result<u64> {
        let path = self.partial_path(sha256);
        let parent = path.parent().expect("the partial path has a parent");
        if !parent.is_dir() {
            fs::create_dir_all(parent)?;
            sync_dir(&self.root)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.write_all(chunk).and_then(|()| file.sync_data());
        if let Err(err) = written {
            let _ = file.set_len(offset).and_then(|()| file.sync_data());
            return Err(err);
        }
        Ok(file.metadata()?.len())
    }

    /// Hashes the finished upload and, when it matches, moves it into place durably.
    pub(crate) fn finish(&self, sha256: &str) -> io::Result<Finished> {
        let partial = self.partial_path(sha256);
        let actual = hash_file(&partial)?;
        if actual != sha256 {
            fs::remove_file(&partial)?;
            return Ok(Finished::Mismatch(actual));
        }
        File::open(&partial)?.sync_all()?;
        let target = self.path(sha256);
        let directory = target.parent().expect("a blob path has a parent");
        if !directory.is_dir() {
            fs::create_dir_all(directory)?;
            sync_dir(&self.root)?;
        }
        fs::rename(&partial, &target)?;
        sync_dir(directory)?;
        sync_dir(partial.parent().expect("the partial path has a parent"))?;
        Ok(Finished::Stored)
    }

    /// Opens a stored blob for reading.
    pub(crate) fn open(&self, sha256: &str) -> io::Result<File> {
        File::open(self.path(sha256))
    }
}

/// Reads the next piece of a blob being served; an empty vector at the end.
pub(crate) fn read_piece(file: &mut File) -> io::Result<Vec<u8>> {
    let mut piece = vec![0; READ_CHUNK];
    let read = file.read(&mut piece)?;
    piece.truncate(read);
    Ok(piece)
}

/// Whether `text` is a SHA-256 in lowercase hex, the only spelling of a blob id.
pub(crate) fn is_blob_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether an IO error means the disk (or a quota on it) is full.
pub(crate) fn is_storage_full(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let piece = read_piece(&mut file)?;
        if piece.is_empty() {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&piece);
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}
