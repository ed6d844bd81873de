//! SQL on stored sync answers: per device and `Idempotency-Key`, the request's SHA-256 and the
//! answer's bytes, so that a retried identical request gets the same answer, byte for byte,
//! without being processed again (SECURITY.md B-31, B-32).
//!
//! An answer that carries a feed page stores the page as its [`FeedBounds`]: the writer
//! commits the acknowledgements and the bounds together, and the page (up to 8 MiB) is read
//! from the append-only log afterwards on a pooled reader, the same bytes every time
//! (docs/sync.md "Idempotency").

use std::collections::HashSet;

use automerge::ChangeHash;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;
use crate::store::changes::{self, Feed};

/// 24 hours: how long an answer is kept for a retry; a device retries within minutes.
pub(crate) const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// The stored answer to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    /// SHA-256 of the request body the answer is for.
    pub(crate) request_sha256: [u8; 32],
    /// The HTTP status of the answer.
    pub(crate) status: u16,
    /// The answer's body; without its feed page when `feed` is set.
    pub(crate) response: Vec<u8>,
    /// The bounds the answer's feed page is read from, if it has one.
    pub(crate) feed: Option<FeedBounds>,
}

/// Everything that fixes one feed page (`changes::feed_until`): read again with the same
/// bounds on any later snapshot, the page is the same, byte for byte, because the rows up to
/// `last_feed_seq` committed with the answer and never change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedBounds {
    /// The device's cursor.
    pub(crate) cursor: u64,
    /// The last feed sequence of the writer's snapshot when the answer was made.
    pub(crate) last_feed_seq: u64,
    /// The caller sees every document.
    pub(crate) all: bool,
    /// Else the township whose documents it sees.
    pub(crate) township: Option<String>,
    /// The changes the request uploaded, left out of the page, in hash order.
    pub(crate) skip: Vec<ChangeHash>,
    /// The device reads documents sent whole (protocol version 2).
    pub(crate) whole_documents: bool,
}

impl FeedBounds {
    /// Reads the page these bounds fix, on any snapshot that holds `last_feed_seq`.
    pub(crate) fn read(
        &self,
        connection: &Connection,
        byte_budget: usize,
    ) -> Result<Feed, StoreError> {
        let skip: HashSet<ChangeHash> = self.skip.iter().copied().collect();
        changes::feed_until(
            connection,
            self.cursor,
            self.last_feed_seq,
            &skip,
            byte_budget,
            self.all,
            self.township.as_deref(),
            self.whole_documents,
        )
    }

    /// The stored form: cursor, last feed sequence (8 bytes little-endian each), flags (1
    /// byte: bit 0 `all`, bit 1 `whole_documents`, which bounds stored before it leave 0),
    /// township length (4 bytes, `u32::MAX` for none) and bytes, then the hashes.
    fn encode(&self) -> Vec<u8> {
        let township = self.township.as_deref().map(str::as_bytes);
        let mut bytes =
            Vec::with_capacity(21 + township.map_or(0, <[u8]>::len) + 32 * self.skip.len());
        bytes.extend_from_slice(&self.cursor.to_le_bytes());
        bytes.extend_from_slice(&self.last_feed_seq.to_le_bytes());
        bytes.push(u8::from(self.all) | u8::from(self.whole_documents) << 1);
        match township {
            Some(township) => {
                let length = u32::try_from(township.len()).expect("a township name is short");
                bytes.extend_from_slice(&length.to_le_bytes());
                bytes.extend_from_slice(township);
            }
            None => bytes.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        bytes.extend(self.skip.iter().flat_map(|hash| hash.0));
        bytes
    }

    /// Reads the stored form back; `None` when it is not one.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let (cursor, rest) = bytes.split_first_chunk::<8>()?;
        let (last_feed_seq, rest) = rest.split_first_chunk::<8>()?;
        let (&flags, rest) = rest.split_first()?;
        if flags > 3 {
            return None;
        }
        let (length, rest) = rest.split_first_chunk::<4>()?;
        let (township, rest) = match u32::from_le_bytes(*length) {
            u32::MAX => (None, rest),
            length => {
                let (township, rest) = rest.split_at_checked(usize::try_from(length).ok()?)?;
                (Some(String::from_utf8(township.to_vec()).ok()?), rest)
            }
        };
        if !rest.len().is_multiple_of(32) {
            return None;
        }
        let skip = rest
            .chunks_exact(32)
            .map(|chunk| ChangeHash(chunk.try_into().expect("chunks are 32 bytes")))
            .collect();
        Some(Self {
            cursor: u64::from_le_bytes(*cursor),
            last_feed_seq: u64::from_le_bytes(*last_feed_seq),
            all: flags & 1 != 0,
            township,
            skip,
            whole_documents: flags & 2 != 0,
        })
    }
}

/// The answer stored for this device and key, if any.
pub(crate) fn find(
    connection: &Connection,
    device: &str,
    key: &str,
) -> Result<Option<StoredAnswer>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT request_sha256, status, response, feed FROM idempotency \
             WHERE device = ?1 AND key = ?2",
        )?
        .query_row(params![device, key], |row| {
            let feed = match row.get_ref(3)?.as_blob_or_null()? {
                None => None,
                Some(bytes) => Some(FeedBounds::decode(bytes).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        Type::Blob,
                        "not the stored bounds of a feed page".into(),
                    )
                })?),
            };
            Ok(StoredAnswer {
                request_sha256: row.get(0)?,
                status: row.get(1)?,
                response: row.get(2)?,
                feed,
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
             (device, key, request_sha256, status, response, feed, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            device,
            key,
            answer.request_sha256,
            answer.status,
            answer.response,
            answer.feed.as_ref().map(FeedBounds::encode),
            now_ms
        ])?;
    connection
        .prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute([now_ms - RETENTION_MS])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_bounds_round_trip() {
        for township in [None, Some(String::new()), Some("Nordhausen".to_owned())] {
            for whole_documents in [false, true] {
                let bounds = FeedBounds {
                    cursor: 7,
                    last_feed_seq: u64::MAX - 1,
                    all: township.is_none(),
                    township: township.clone(),
                    skip: vec![ChangeHash([1; 32]), ChangeHash([2; 32])],
                    whole_documents,
                };
                assert_eq!(FeedBounds::decode(&bounds.encode()), Some(bounds));
            }
        }
        assert_eq!(FeedBounds::decode(&[0; 20]), None);
        let mut flags_past_both = [0; 20];
        flags_past_both[16] = 4;
        flags_past_both[17..].fill(0xff);
        assert_eq!(FeedBounds::decode(&flags_past_both), None);
    }
}
