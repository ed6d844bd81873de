//! The versioned binary sync messages exchanged on `POST /v1/sync`.
//!
//! One request carries everything a device has to say (its feed cursor and, per document it
//! changed, the heads the server last acknowledged, its current heads and the changes since);
//! one response carries everything the server has to say back. That makes a typical resync one
//! round trip whose size is what changed, not what exists.
//!
//! Framing: 4 magic bytes `FCS` + version byte, then a postcard body. Changes travel as a list
//! of individual change chunks (never one concatenated blob) so that the server can parse each
//! one strictly with `Change::try_from`; a document the server never acknowledged travels as
//! one uncompressed document chunk instead, which the server takes apart into the same changes
//! (`merge::parse_upload_within`).

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::ids::DocumentId;

/// The protocol version this build speaks. Version 2 lets a feed page send a document whole
/// ([`DocUpdate`]); the body layout is that of version 1.
pub const PROTOCOL_VERSION: u8 = 2;

/// The oldest version still answered: a version 1 device gets its feed change by change, and
/// its answers in version 1, so devices and the server need not be upgraded together.
pub const OLDEST_VERSION: u8 = 1;

/// Media type of sync request and response bodies.
pub const CONTENT_TYPE: &str = "application/vnd.fieldcase.sync";

const MAGIC: &[u8; 3] = b"FCS";

/// A change hash on the wire.
pub type Hash = [u8; 32];

/// What a device sends in one sync round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The server feed sequence up to which this device has applied every change in its scope.
    pub cursor: u64,
    /// One entry per document with changes the server has not acknowledged.
    pub docs: Vec<DocUpload>,
}

/// The changes one device uploads for one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocUpload {
    /// The document.
    pub doc_id: DocumentId,
    /// The heads the server last acknowledged for this document (empty for a new document).
    pub base_heads: Vec<Hash>,
    /// The device's heads after the uploaded changes.
    pub heads: Vec<Hash>,
    /// Each change as one chunk, in causal order; or, with empty `base_heads`, exactly one
    /// uncompressed document chunk holding every change of the document.
    #[serde(with = "chunks")]
    pub changes: Vec<Vec<u8>>,
}

/// What the server answers to one [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncResponse {
    /// The feed sequence the device has reached once it applied `updates`.
    pub cursor: u64,
    /// More changes are waiting: send another request with the new cursor.
    pub more: bool,
    /// One result per uploaded document, in upload order.
    pub results: Vec<DocResult>,
    /// Changes the device lacks, grouped by document.
    pub updates: Vec<DocUpdate>,
    /// Documents that left this device's scope.
    pub evict: Vec<DocumentId>,
}

/// The server's verdict on one uploaded document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocResult {
    /// The document.
    pub doc_id: DocumentId,
    /// Accepted (with the server's heads) or rejected (with a reason).
    pub outcome: DocOutcome,
}

/// Accepted or rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocOutcome {
    /// Every uploaded change is durably stored.
    Accepted {
        /// The server's heads after the merge.
        heads: Vec<Hash>,
        /// How many of the uploaded changes were new to the server.
        stored: u32,
    },
    /// The server does not know the heads the device claims it acknowledged (the device or the
    /// server was restored from a backup). Nothing was merged; the device uploads, in its next
    /// round, the changes after the heads it shares with the server, instead of a whole history.
    Resync {
        /// The server's current heads for the document (empty if it has none).
        heads: Vec<Hash>,
    },
    /// Nothing of this document's upload was merged.
    Rejected {
        /// Stable snake_case code.
        code: String,
        /// Human sentence.
        message: String,
        /// The changes are kept on the server for review (not merged, not lost): the device
        /// may treat them as delivered.
        quarantined: bool,
    },
}

/// Changes for one document that the device does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocUpdate {
    /// The document.
    pub doc_id: DocumentId,
    /// Chunks in causal order: change chunks, except that from version 2 on a page reaching
    /// the document's first change may start with the whole document as the upload that
    /// created it left it (a saved document chunk holding every change of that upload).
    #[serde(with = "chunks")]
    pub changes: Vec<Vec<u8>>,
}

impl SyncRequest {
    /// Frames the request for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encode(self, PROTOCOL_VERSION)
    }

    /// Parses a request body; never panics on hostile bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes).map(|(request, _)| request)
    }

    /// [`Self::decode`], with the version the device wrote, which its answer is written in.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(Self, u8), DecodeError> {
        decode(bytes)
    }

    /// Number of change chunks in the request.
    pub fn change_count(&self) -> usize {
        self.docs.iter().map(|doc| doc.changes.len()).sum()
    }
}

impl SyncResponse {
    /// Frames the response for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encode(self, PROTOCOL_VERSION)
    }

    /// Frames the response in the version of the request it answers.
    pub fn encode_as(&self, version: u8) -> Vec<u8> {
        encode(self, version)
    }

    /// Parses a response body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes).map(|(response, _)| response)
    }

    /// [`Self::decode`], with the version it was written in.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(Self, u8), DecodeError> {
        decode(bytes)
    }
}

/// Chunks as byte strings, not as sequences of `u8`: postcard writes both as a length and the
/// bytes, so the wire is the same, but a sequence is written and read one byte at a time, which
/// was nearly all of the time spent encoding a feed page.
mod chunks {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub(super) fn serialize<S: Serializer>(chunks: &[Vec<u8>], out: S) -> Result<S::Ok, S::Error> {
        out.collect_seq(chunks.iter().map(|chunk| Bytes::new(chunk)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let chunks = Vec::<ByteBuf>::deserialize(input)?;
        Ok(chunks.into_iter().map(ByteBuf::into_vec).collect())
    }
}

fn encode<T: Serialize>(message: &T, version: u8) -> Vec<u8> {
    // Sized exactly first: an answer carries up to 8 MiB of feed, and a buffer grown by
    // doubling would hold up to 16 MiB, with both copies alive while it grows.
    let size =
        postcard::experimental::serialized_size(message).expect("sizing a message cannot fail");
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + size);
    out.extend_from_slice(MAGIC);
    out.push(version);
    postcard::to_extend(message, out).expect("serialising into a Vec cannot fail")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<(T, u8), DecodeError> {
    let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(DecodeError::BadMagic);
    };
    let Some((&version, body)) = body.split_first() else {
        return Err(DecodeError::Malformed("message ends after the magic bytes".to_owned()));
    };
    if !(OLDEST_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|err| DecodeError::Malformed(err.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!("{} bytes of trailing data", rest.len())));
    }
    Ok((message, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_request() -> SyncRequest {
        SyncRequest {
            cursor: 42,
            docs: vec![DocUpload {
                doc_id: DocumentId::from_bytes([1; 16]),
                base_heads: vec![[2; 32]],
                heads: vec![[3; 32]],
                changes: vec![vec![9, 8, 7]],
            }],
        }
    }

    #[test]
    fn request_round_trips() {
        let request = sample_request();
        assert_eq!(SyncRequest::decode(&request.encode()).unwrap(), request);
    }

    #[test]
    fn both_versions_decode_with_their_version_and_no_other() {
        let request = sample_request();
        let mut bytes = request.encode();
        assert_eq!(SyncRequest::decode_versioned(&bytes), Ok((request.clone(), 2)));
        bytes[3] = 1;
        assert_eq!(SyncRequest::decode_versioned(&bytes), Ok((request, 1)));
        bytes[3] = 0;
        assert_eq!(SyncRequest::decode(&bytes), Err(DecodeError::UnsupportedVersion(0)));
        bytes[3] = 3;
        assert_eq!(SyncRequest::decode(&bytes), Err(DecodeError::UnsupportedVersion(3)));
        let response = SyncResponse::default();
        assert_eq!(SyncResponse::decode_versioned(&response.encode_as(1)), Ok((response, 1)));
    }

    #[test]
    fn hostile_bytes_are_decode_errors() {
        let bytes = sample_request().encode();
        assert_eq!(SyncRequest::decode(b"garbage"), Err(DecodeError::BadMagic));
        assert_eq!(SyncRequest::decode(b"FCS\x09"), Err(DecodeError::UnsupportedVersion(9)));
        for cut in 3..bytes.len() {
            assert!(SyncRequest::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut trailing = bytes;
        trailing.push(0);
        assert!(matches!(SyncRequest::decode(&trailing), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn chunks_are_written_as_postcard_writes_a_sequence_of_bytes() {
        // The same fields with chunks as plain `Vec<Vec<u8>>`, which serde writes as sequences.
        #[derive(Serialize)]
        struct Plain {
            doc_id: DocumentId,
            changes: Vec<Vec<u8>>,
        }
        let update = DocUpdate {
            doc_id: DocumentId::from_bytes([4; 16]),
            changes: vec![vec![1; 300], vec![], vec![7, 8]],
        };
        let plain = Plain { doc_id: update.doc_id, changes: update.changes.clone() };
        let ours = postcard::to_allocvec(&update).unwrap();
        assert_eq!(ours, postcard::to_allocvec(&plain).unwrap());
        assert_eq!(postcard::from_bytes::<DocUpdate>(&ours).unwrap(), update);
    }

    #[test]
    fn an_empty_request_is_a_few_bytes() {
        let request = SyncRequest { cursor: 1_000_000, docs: vec![] };
        assert!(request.encode().len() <= 8);
    }
}
