//! The first phase of `fieldcase sync`: uploading the evidence blobs the server lacks.
//!
//! Each pending blob of the replica goes up in 1 MiB chunks (docs/sync.md): the device asks
//! how much of it the server holds (`received`), sends the rest from there, and marks the blob
//! uploaded in the replica once the server answers `complete`. A `409 upload_offset_mismatch`
//! (another attempt moved the server's offset) re-reads the status and continues from it.
//!
//! A blob that fails does not stop the sync: records matter more than photos, and the server
//! flags an evidence item whose bytes it lacks (`evidence_pending`), so the failure is reported
//! ([`BlobFailure`]) and the change rounds run anyway. Only an unreachable server stops the
//! remaining uploads, since every one of them would fail the same way.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::auth::Session;
use crate::client::ClientError;
use crate::commands::{CommandError, error_code};
use crate::replica_store::{BlobRef, ReplicaStore};

/// 1 MiB: the size of one uploaded chunk, so that a broken connection costs at most this much.
pub const CHUNK_SIZE: u64 = 1024 * 1024;

/// How often one blob's upload re-reads the server's offset after a mismatch before it gives
/// up: a mismatch means another upload of the same blob is running, which should finish soon.
const OFFSET_RETRIES: u32 = 3;

/// What the blob phase of a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobUploads {
    /// Blobs that stopped being pending: the server now holds them whole.
    pub uploaded: usize,
    /// Bytes of the chunks the server took; a refused chunk does not count.
    pub bytes_up: u64,
    /// Blobs that could not be uploaded; they stay pending.
    pub errors: Vec<BlobFailure>,
}

/// One blob that could not be uploaded, as `sync --json` lists it in `blob_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobFailure {
    /// The blob's hex SHA-256.
    pub sha256: String,
    /// The stable code: the server's, or `blob_missing` when the device lost the bytes.
    pub code: String,
    /// A lowercase sentence.
    pub message: String,
}

/// Uploads every pending blob of `store`; `on_progress(done, total)` sees the bytes the server
/// holds so far over the bytes of every pending blob.
///
/// # Errors
/// Only when the replica cannot list its pending blobs; each blob's failure is in
/// [`BlobUploads::errors`].
pub fn upload_blobs(
    store: &ReplicaStore,
    session: &mut Session,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<BlobUploads> {
    let pending = store.pending_blobs().context("listing the evidence blobs to upload")?;
    let total = pending.iter().map(|blob| blob.size).sum();
    let mut uploads = BlobUploads::default();
    let mut done_before = 0;
    for blob in &pending {
        let mut progress = |offset: u64| on_progress(done_before + offset.min(blob.size), total);
        let result = upload_blob(store, session, blob, &mut uploads.bytes_up, &mut progress);
        done_before += blob.size;
        match result {
            Ok(()) => uploads.uploaded += 1,
            Err(error) => {
                let code = error_code(&error).to_owned();
                let unreachable = code == "server_unreachable";
                let message = format!("{error:#}");
                uploads.errors.push(BlobFailure { sha256: blob.sha256.clone(), code, message });
                if unreachable {
                    break;
                }
            }
        }
        on_progress(done_before, total);
    }
    Ok(uploads)
}

/// Uploads one blob from where the server's copy stops, and marks it uploaded.
fn upload_blob(
    store: &ReplicaStore,
    session: &mut Session,
    blob: &BlobRef,
    bytes_up: &mut u64,
    on_progress: &mut impl FnMut(u64),
) -> Result<()> {
    let sha256 = blob.sha256.as_str();
    // The failure names the blob already, so the messages need not repeat its hash.
    let asking = "asking the server how much of the blob it holds";
    let mut status = session.blob_status(sha256).context(asking)?;
    // A blob the server holds whole (uploaded by an earlier, interrupted sync or by another
    // device) needs no local bytes.
    if !status.complete {
        let mut file = store.open_blob(sha256)?.ok_or_else(|| {
            CommandError::new(
                "blob_missing",
                "the device no longer holds the bytes of this evidence blob",
            )
        })?;
        let mut mismatches = 0;
        let mut offset = status.received;
        loop {
            on_progress(offset);
            if offset > blob.size {
                bail!(CommandError::new(
                    "invalid_response",
                    format!("the server holds {offset} bytes of the blob, which has {}", blob.size)
                ));
            }
            let chunk = read_chunk(&mut file, blob, offset)?;
            let sent = session.put_blob_chunk(sha256, offset, blob.size, &chunk);
            match sent {
                Ok(answer) => {
                    *bytes_up += chunk.len() as u64;
                    status = answer;
                    if status.complete {
                        break;
                    }
                    if status.received <= offset {
                        bail!(CommandError::new(
                            "invalid_response",
                            format!("the server took no bytes of the blob at offset {offset}")
                        ));
                    }
                    offset = status.received;
                }
                Err(ClientError::Api { code, .. })
                    if code == "upload_offset_mismatch" && mismatches < OFFSET_RETRIES =>
                {
                    mismatches += 1;
                    status = session.blob_status(sha256).context(asking)?;
                    if status.complete {
                        break;
                    }
                    offset = status.received;
                }
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("uploading the blob from byte {offset} of {}", blob.size)
                    });
                }
            }
        }
    }
    on_progress(blob.size);
    store.mark_blob_uploaded(sha256)?;
    Ok(())
}

/// The chunk of the local blob that starts at `offset`: up to [`CHUNK_SIZE`] bytes.
fn read_chunk(file: &mut File, blob: &BlobRef, offset: u64) -> Result<Vec<u8>> {
    let length = CHUNK_SIZE.min(blob.size - offset);
    let damaged = || {
        CommandError::new(
            "blob_damaged",
            "the device's copy of this evidence blob is shorter than its size",
        )
    };
    file.seek(SeekFrom::Start(offset)).with_context(|| format!("reading blob {}", blob.sha256))?;
    let mut chunk = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    let read = file
        .take(length)
        .read_to_end(&mut chunk)
        .with_context(|| format!("reading blob {}", blob.sha256))?;
    if read as u64 != length {
        bail!(damaged());
    }
    Ok(chunk)
}
