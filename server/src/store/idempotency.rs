//! SQL on stored sync answers: per device and `Idempotency-Key`, the request's SHA-256 and the
//! answer's bytes, so that a retried identical request gets the same answer, byte for byte,
//! without being processed again (SECURITY.md B-31, B-32).

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;

/// 24 hours: how long an answer is kept for a retry; a device retries within minutes.
pub(crate) const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// The stored answer to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    /// SHA-256 of the request body the answer is for.
    pub(crate) request_sha256: [u8; 32],
    /// The HTTP status of the answer.
    pub(crate) status: u16,
    /// The answer's body.
    pub(crate) response: Vec<u8>,
}

/// The answer stored for this device and key, if any.
pub(crate) fn find(
    connection: &Connection,
    device: &str,
    key: &str,
) -> Result<Option<StoredAnswer>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT request_sha256, status, response FROM idempotency \
             WHERE device = ?1 AND key = ?2",
        )?
        .query_row(params![device, key], |row| {
            Ok(StoredAnswer {
                request_sha256: row.get(0)?,
                status: row.get(1)?,
                response: row.get(2)?,
            })
        })
        .optional()?)
}

/// Stores the answer to a key, and forgets answers older than [`RETENTION_MS`].
pub(crate) fn insert(
    connection: &Connection,
    device: &str,
    key: &str,
    answer: &StoredAnswer,
    now_ms: i64,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO idempotency \
             (device, key, request_sha256, status, response, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            device,
            key,
            answer.request_sha256,
            answer.status,
            answer.response,
            now_ms
        ])?;
    connection
        .prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute([now_ms - RETENTION_MS])?;
    Ok(())
}
