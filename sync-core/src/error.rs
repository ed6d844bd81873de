//! Error types of sync-core, one enum per concern; rule violations are findings, not errors.

use thiserror::Error;

/// An identifier that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    /// Not a UUID.
    #[error("invalid document id {0:?}")]
    Document(String),
    /// Empty, too long or containing spaces.
    #[error("invalid device id {0:?}")]
    Device(String),
    /// Empty, too long or containing spaces.
    #[error("invalid officer id {0:?}")]
    Officer(String),
    /// Empty, too long or containing spaces.
    #[error("invalid certificate number {0:?}")]
    Certificate(String),
}

/// A sync message that cannot be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The body does not start with the fieldcase sync magic bytes.
    #[error("not a fieldcase sync message (bad magic bytes)")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported sync protocol version {0}")]
    UnsupportedVersion(u8),
    /// The body is truncated or otherwise not a valid message.
    #[error("malformed sync message: {0}")]
    Malformed(String),
}

/// Why an upload of changes to one document was refused; nothing of it is applied.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MergeError {
    /// A chunk is not one valid, checksummed Automerge change.
    #[error("change {index} of document {doc} is malformed: {reason}")]
    MalformedChange {
        /// The document the chunk was uploaded for.
        doc: String,
        /// Position of the chunk in the upload.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A compressed change inflates past what one upload may hold (a deflate bomb).
    #[error("change {index} of document {doc} inflates past the upload's limit of {limit} bytes")]
    InflateLimit {
        /// The document the chunk was uploaded for.
        doc: String,
        /// Position of the chunk in the upload.
        index: usize,
        /// The limit, in bytes, for the whole upload.
        limit: usize,
    },
    /// A change holds more operations than one change may.
    #[error(
        "change {index} of document {doc} holds {ops} operations; at most {limit} are accepted"
    )]
    TooManyOps {
        /// The document the chunk was uploaded for.
        doc: String,
        /// Position of the chunk in the upload.
        index: usize,
        /// Operations in the change.
        ops: usize,
        /// The limit.
        limit: usize,
    },
    /// A document chunk holds more changes than the request may still carry (SECURITY.md
    /// B-26): the per-sync limit counts changes, not chunks.
    #[error("document {doc} carries {changes} changes; at most {limit} more fit in this sync")]
    TooManyChanges {
        /// The document concerned.
        doc: String,
        /// Changes in its upload.
        changes: usize,
        /// Changes the request could still carry.
        limit: usize,
    },
    /// Changes depend on changes neither stored nor uploaded.
    #[error("document {doc} has changes with missing dependencies: {}", missing.join(", "))]
    MissingDeps {
        /// The document concerned.
        doc: String,
        /// Hex hashes of the missing dependencies.
        missing: Vec<String>,
    },
    /// An (actor, seq) pair already stored with other content.
    #[error("document {doc} already holds seq {seq} of actor {actor} with other content")]
    DuplicateSeq {
        /// The document concerned.
        doc: String,
        /// Hex actor id.
        actor: String,
        /// The sequence number used twice.
        seq: u64,
    },
    /// A change with no dependencies for a document that already exists: a second, unrelated history.
    #[error(
        "document {doc} already exists; a change with no dependencies would start a second history"
    )]
    ForeignRoot {
        /// The document concerned.
        doc: String,
    },
    /// Automerge refused the changes for another reason.
    #[error("document {doc} refused the changes: {reason}")]
    Refused {
        /// The document concerned.
        doc: String,
        /// What automerge said.
        reason: String,
    },
}

/// A local edit that cannot be made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EditError {
    /// The path names no field of the record.
    #[error("no field at path {0:?}")]
    NoSuchPath(String),
    /// The value does not fit the field's type.
    #[error("field {path:?} holds {expected}; {value:?} does not fit")]
    WrongType {
        /// The field path.
        path: String,
        /// The type the field holds.
        expected: &'static str,
        /// The offered value.
        value: String,
    },
    /// Append or prepend on a field that is not text.
    #[error("field {0:?} is not a text field")]
    NotText(String),
    /// The document is not a fieldcase record.
    #[error("document is not a fieldcase record: {0}")]
    NotARecord(String),
    /// The document refused the operation.
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for EditError {
    fn from(error: automerge::AutomergeError) -> Self {
        Self::Automerge(error.to_string())
    }
}

/// A device-side replica operation that failed.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// Stored or received bytes are not a valid document or change.
    #[error("invalid document data: {0}")]
    Corrupt(String),
    /// The server sent changes whose dependencies the device does not hold.
    #[error("document {0} is missing changes the server should have sent")]
    Incomplete(String),
    /// Writing the typed record into the document failed.
    #[error("cannot write record: {0}")]
    Reconcile(String),
}
