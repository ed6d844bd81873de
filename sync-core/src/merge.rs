//! Merging uploaded changes into a document, and reading back where concurrent edits collided.
//!
//! The server calls [`parse_upload_within`] and [`merge_changes`] on every upload: each chunk
//! is parsed strictly on its own, a new document's single document chunk is loaded strictly
//! (never `load_incremental`, which applies a corrupt prefix), known
//! changes are skipped so replays are harmless, and a batch whose dependencies are incomplete is
//! refused whole rather than queued silently (AUTOMERGE.md P6, P8). All new changes of a
//! document are applied in one call, because every call costs O(document) (P14).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};

use automerge::{
    ActorId, Automerge, AutomergeError, Change, ChangeHash, LoadOptions, ObjId, ObjType,
    OnPartialLoad, ROOT, ReadDoc, TextEncoding, Value, VerificationMode,
};
use serde::Serialize;

use crate::error::MergeError;
use crate::ids::DocumentId;
use crate::json::{scalar_json, value_json};
use crate::protocol::DocUpload;

/// What one upload may make the server inflate and hold (SECURITY.md §c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Operations in one change.
    pub max_ops_per_change: usize,
    /// Bytes of all changes of one upload after decompression.
    pub max_inflated_bytes: usize,
}

impl Default for UploadLimits {
    /// 100,000 operations per change and 64 MiB inflated per upload: far above what an
    /// officer's edits produce, far below what would strain the server's memory.
    fn default() -> Self {
        Self { max_ops_per_change: 100_000, max_inflated_bytes: 64 * 1024 * 1024 }
    }
}

/// Parses every chunk as exactly one change within the default limits; any failure refuses
/// the whole upload.
pub fn parse_changes(doc_id: DocumentId, chunks: &[Vec<u8>]) -> Result<Vec<Change>, MergeError> {
    let limits = UploadLimits::default();
    let mut inflated_budget = limits.max_inflated_bytes;
    parse_changes_within(doc_id, chunks, limits, &mut inflated_budget)
}

/// Parses one document's upload within the default limits: its change chunks, or the one
/// document chunk a device sends for a document the server never acknowledged
/// ([`parse_upload_within`]).
pub fn parse_upload(upload: &DocUpload) -> Result<Vec<Change>, MergeError> {
    let limits = UploadLimits::default();
    let mut inflated_budget = limits.max_inflated_bytes;
    let mut change_allowance = usize::MAX;
    parse_upload_within(upload, limits, &mut inflated_budget, &mut change_allowance)
        .map(ParsedUpload::into_changes)
}

/// One document's upload, parsed.
#[derive(Debug)]
pub enum ParsedUpload {
    /// Change chunks, in causal order, each parsed and checked on its own.
    Changes(Vec<Change>),
    /// One document chunk, loaded strictly.
    Document(Box<LoadedDocument>),
}

/// A document chunk loaded strictly: exactly its changes applied to an empty document (UTF-8
/// text indices), so a caller creating the document may take it instead of applying them a
/// second time.
#[derive(Debug)]
pub struct LoadedDocument {
    /// The document.
    pub doc: Automerge,
    /// What each of its changes is, in causal order, read from the change graph
    /// (`get_changes_meta`). Listing the changes themselves (`get_changes`) encodes every
    /// operation again: that was a third of the server's request threads in a first sync.
    pub facts: Vec<ChangeFacts>,
}

/// What the change log records of one change besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFacts {
    /// The change hash.
    pub hash: ChangeHash,
    /// Its author.
    pub actor: ActorId,
    /// The author's sequence number of it.
    pub seq: u64,
    /// The changes it depends on.
    pub deps: Vec<ChangeHash>,
    /// The time the device stamped on it, seconds since the Unix epoch.
    pub timestamp: i64,
    /// Its commit message.
    pub message: Option<String>,
}

impl ChangeFacts {
    /// The facts of a parsed change.
    pub fn of(change: &Change) -> Self {
        Self {
            hash: change.hash(),
            actor: change.actor_id().clone(),
            seq: change.seq(),
            deps: change.deps().to_vec(),
            timestamp: change.timestamp(),
            message: change.message().map(str::to_owned),
        }
    }
}

impl ParsedUpload {
    /// What each uploaded change is, in causal order; a document chunk's as it was read.
    pub fn facts(&self) -> Cow<'_, [ChangeFacts]> {
        match self {
            Self::Changes(changes) => Cow::Owned(changes.iter().map(ChangeFacts::of).collect()),
            Self::Document(loaded) => Cow::Borrowed(&loaded.facts),
        }
    }

    /// The hashes of the uploaded changes, in causal order.
    pub fn hashes(&self) -> Vec<ChangeHash> {
        match self {
            Self::Changes(changes) => changes.iter().map(Change::hash).collect(),
            Self::Document(loaded) => loaded.facts.iter().map(|change| change.hash).collect(),
        }
    }

    /// The number of uploaded changes.
    pub fn len(&self) -> usize {
        match self {
            Self::Changes(changes) => changes.len(),
            Self::Document(loaded) => loaded.facts.len(),
        }
    }

    /// Whether the upload holds no change.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The uploaded changes themselves, in causal order; for a document chunk they are listed
    /// from the loaded document (`get_changes`, which encodes every operation again).
    pub fn into_changes(self) -> Vec<Change> {
        match self {
            Self::Changes(changes) => changes,
            Self::Document(loaded) => loaded.doc.get_changes(&[]),
        }
    }

    /// The uploaded changes themselves, listed in place ([`Self::into_changes`]) for callers
    /// that judge an upload change by change; the upload holds change chunks from then on.
    pub fn listed(&mut self) -> &[Change] {
        if let Self::Document(loaded) = self {
            *self = Self::Changes(loaded.doc.get_changes(&[]));
        }
        match self {
            Self::Changes(changes) => changes,
            Self::Document(_) => unreachable!("a document chunk was listed just above"),
        }
    }
}

/// Parses one document's upload into its changes, spending `inflated_budget` on their sizes
/// and `change_allowance` (both shared by all documents of one request) on their number.
///
/// The chunks are change chunks ([`parse_changes_within`]), or exactly one uncompressed
/// document chunk when `base_heads` is empty: a device uploads a document the server never
/// acknowledged whole, which is a fraction of its change chunks' size (docs/sync.md). The
/// document chunk yields exactly the changes its change chunks would have, each held to the
/// same limits, so everything after parsing is the same.
///
/// # Errors
/// [`MergeError::MalformedChange`] for a document chunk next to other chunks, with base
/// heads, with a deflated column, or that does not load strictly;
/// [`MergeError::TooManyChanges`] when the changes exceed `change_allowance`; the limits'
/// errors as for change chunks.
pub fn parse_upload_within(
    upload: &DocUpload,
    limits: UploadLimits,
    inflated_budget: &mut usize,
    change_allowance: &mut usize,
) -> Result<ParsedUpload, MergeError> {
    let doc_id = upload.doc_id;
    let document_chunk = upload.changes.iter().position(|chunk| is_document_chunk(chunk));
    let parsed = match document_chunk {
        None => ParsedUpload::Changes(parse_changes_within(
            doc_id,
            &upload.changes,
            limits,
            inflated_budget,
        )?),
        Some(index) if upload.changes.len() > 1 || !upload.base_heads.is_empty() => {
            return Err(MergeError::MalformedChange {
                doc: doc_id.to_string(),
                index,
                reason: "a document chunk must be the only chunk of an upload without base \
                         heads"
                    .to_owned(),
            });
        }
        Some(_) => ParsedUpload::Document(Box::new(parse_document_chunk(
            doc_id,
            &upload.changes[0],
            limits,
            inflated_budget,
            *change_allowance,
        )?)),
    };
    *change_allowance =
        change_allowance.checked_sub(parsed.len()).ok_or_else(|| MergeError::TooManyChanges {
            doc: doc_id.to_string(),
            changes: parsed.len(),
            limit: *change_allowance,
        })?;
    Ok(parsed)
}

/// Parses every chunk as exactly one change, spending `inflated_budget` (shared by all
/// documents of one upload) on the changes' decompressed sizes.
///
/// A compressed chunk is inflated into a bounded sink before automerge parses it, so a
/// deflate bomb costs at most the budget in memory rather than whatever it inflates to.
pub fn parse_changes_within(
    doc_id: DocumentId,
    chunks: &[Vec<u8>],
    limits: UploadLimits,
    inflated_budget: &mut usize,
) -> Result<Vec<Change>, MergeError> {
    let mut changes = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.iter().enumerate() {
        let malformed =
            |reason: String| MergeError::MalformedChange { doc: doc_id.to_string(), index, reason };
        let inflate_limit = || MergeError::InflateLimit {
            doc: doc_id.to_string(),
            index,
            limit: limits.max_inflated_bytes,
        };
        if let Some(compressed) = compressed_body(chunk) {
            inflated_len_within(compressed, *inflated_budget)
                .map_err(|_| malformed("invalid deflate stream".to_owned()))?
                .ok_or_else(inflate_limit)?;
        }
        let change =
            Change::try_from(chunk.as_slice()).map_err(|err| malformed(err.to_string()))?;
        spend(doc_id, index, &change, limits, inflated_budget)?;
        changes.push(change);
    }
    Ok(changes)
}

/// Holds one parsed change to the limits: its raw bytes come off `inflated_budget`, and it
/// may hold at most `max_ops_per_change` operations.
fn spend(
    doc_id: DocumentId,
    index: usize,
    change: &Change,
    limits: UploadLimits,
    inflated_budget: &mut usize,
) -> Result<(), MergeError> {
    *inflated_budget = inflated_budget.checked_sub(change.raw_bytes().len()).ok_or_else(|| {
        MergeError::InflateLimit {
            doc: doc_id.to_string(),
            index,
            limit: limits.max_inflated_bytes,
        }
    })?;
    if change.len() > limits.max_ops_per_change {
        return Err(MergeError::TooManyOps {
            doc: doc_id.to_string(),
            index,
            ops: change.len(),
            limit: limits.max_ops_per_change,
        });
    }
    Ok(())
}

const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// The type byte of an Automerge chunk (after the magic and the checksum), if it has one.
fn chunk_type(chunk: &[u8]) -> Option<u8> {
    chunk.strip_prefix(CHUNK_MAGIC.as_slice())?.get(4).copied()
}

/// Whether `chunk` claims to be a document chunk (type 0).
pub(crate) fn is_document_chunk(chunk: &[u8]) -> bool {
    chunk_type(chunk) == Some(DOCUMENT_CHUNK)
}

const DOCUMENT_CHUNK: u8 = 0;

/// The deflate bit of a column spec (the Automerge binary format).
const DEFLATE_BIT: u64 = 0x08;
/// The change-metadata actor column of a document chunk: one row per change.
const CHANGE_ACTOR_COLUMN: u64 = 0x01;
/// What one operation of a document chunk costs the upload's inflated budget: about what
/// automerge holds in memory for a loaded operation. With the default 64 MiB budget, one
/// upload's document chunks hold at most a million operations; a device keeps its document
/// chunks under [`DOCUMENT_CHUNK_OPS_PER_UPLOAD`] and sends any further new document as change
/// chunks.
pub const DOCUMENT_CHUNK_OP_BYTES: usize = 64;

/// The operations a device puts in the document chunks of one upload: half of what the
/// default budget allows them ([`DOCUMENT_CHUNK_OP_BYTES`]), the other half left for the
/// upload's change bytes.
pub const DOCUMENT_CHUNK_OPS_PER_UPLOAD: usize = 512 * 1024;

/// The op action column of a document chunk: one row per operation.
const OP_ACTION_COLUMN: u64 = 0x42;

/// Loads a document chunk strictly and returns it with what each of its changes is, each held
/// to the limit of operations per change.
///
/// Before anything is loaded, the chunk's header is read: a deflated column is refused, so
/// nothing is ever inflated and B-23's bound holds without a budget check here, and the
/// number of changes and operations is read from the run lengths of two columns, so that a
/// chunk claiming more changes than `change_allowance`, or more operations than its changes
/// may hold, is refused before automerge builds anything in memory.
fn parse_document_chunk(
    doc_id: DocumentId,
    chunk: &[u8],
    limits: UploadLimits,
    inflated_budget: &mut usize,
    change_allowance: usize,
) -> Result<LoadedDocument, MergeError> {
    let malformed =
        |reason: String| MergeError::MalformedChange { doc: doc_id.to_string(), index: 0, reason };
    let counts = DocumentChunkHeader::read(chunk).map_err(|reason| malformed(reason.to_owned()))?;
    if counts.changes > change_allowance {
        return Err(MergeError::TooManyChanges {
            doc: doc_id.to_string(),
            changes: counts.changes,
            limit: change_allowance,
        });
    }
    let ops_allowed = counts.changes.saturating_mul(limits.max_ops_per_change);
    if counts.ops > ops_allowed {
        return Err(MergeError::TooManyOps {
            doc: doc_id.to_string(),
            index: 0,
            ops: counts.ops,
            limit: limits.max_ops_per_change,
        });
    }
    // Run-length columns can claim many operations in few bytes, and loading builds every
    // one of them: each claimed operation comes off the upload's inflated budget at what
    // automerge holds for it, before anything is loaded.
    *inflated_budget = inflated_budget
        .checked_sub(counts.ops.saturating_mul(DOCUMENT_CHUNK_OP_BYTES))
        .ok_or_else(|| MergeError::InflateLimit {
            doc: doc_id.to_string(),
            index: 0,
            limit: limits.max_inflated_bytes,
        })?;
    // Strict: a partial load is an error (never `load_incremental`, which keeps a good
    // prefix), and the heads are verified against the changes rebuilt from the columns.
    let options = LoadOptions::new()
        .on_partial_load(OnPartialLoad::Error)
        .verification_mode(VerificationMode::Check)
        .text_encoding(TextEncoding::Utf8CodeUnit);
    let doc =
        Automerge::load_with_options(chunk, options).map_err(|err| malformed(err.to_string()))?;
    if !doc.get_missing_deps(&[]).is_empty() {
        return Err(malformed("the document chunk lacks dependencies".to_owned()));
    }
    let metadata = doc.get_changes_meta(&[]);
    if metadata.len() != counts.changes {
        return Err(malformed(format!(
            "the document chunk declares {} changes and holds {}",
            counts.changes,
            metadata.len()
        )));
    }
    // Each change's operations are held to the limit a change chunk is held to; their bytes
    // were paid for above, per operation.
    let mut facts = Vec::with_capacity(metadata.len());
    for (index, meta) in metadata.into_iter().enumerate() {
        let ops = (meta.max_op + 1).saturating_sub(meta.start_op);
        let ops = usize::try_from(ops).unwrap_or(usize::MAX);
        if ops > limits.max_ops_per_change {
            return Err(MergeError::TooManyOps {
                doc: doc_id.to_string(),
                index,
                ops,
                limit: limits.max_ops_per_change,
            });
        }
        facts.push(ChangeFacts {
            hash: meta.hash,
            actor: meta.actor.into_owned(),
            seq: meta.seq,
            deps: meta.deps,
            timestamp: meta.timestamp,
            message: meta.message.map(Cow::into_owned),
        });
    }
    Ok(LoadedDocument { doc, facts })
}

/// What the header and two columns of an uncompressed document chunk say it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DocumentChunkHeader {
    changes: usize,
    ops: usize,
}

impl DocumentChunkHeader {
    /// Reads the chunk header (magic, checksum, type 0, length), the actors, heads and column
    /// metadata, refuses any deflated column, and counts the rows of the change actor column
    /// and the op action column.
    fn read(chunk: &[u8]) -> Result<Self, &'static str> {
        let (_, mut body) = document_chunk_parts(chunk)?;
        let change_columns = body.columns()?;
        let op_columns = body.columns()?;
        if change_columns.iter().chain(&op_columns).any(|&(spec, _)| spec & DEFLATE_BIT != 0) {
            return Err("the document chunk has a deflated column");
        }
        let changes = body.rows_of(&change_columns, CHANGE_ACTOR_COLUMN)?;
        let ops = body.rows_of(&op_columns, OP_ACTION_COLUMN)?;
        Ok(Self { changes, ops })
    }
}

/// Splits a document chunk into its heads (32 bytes each) and the rest of its body, from its
/// header (magic, checksum, type 0, length) and actors.
fn document_chunk_parts(chunk: &[u8]) -> Result<(&[u8], Reader<'_>), &'static str> {
    let mut input = Reader(chunk);
    if input.take(4)? != CHUNK_MAGIC {
        return Err("not an Automerge chunk");
    }
    input.take(4)?;
    if input.take(1)? != [DOCUMENT_CHUNK] {
        return Err("not a document chunk");
    }
    let length = input.length()?;
    let mut body = Reader(input.take(length)?);
    if !input.0.is_empty() {
        return Err("bytes after the document chunk");
    }
    for _ in 0..body.uleb()? {
        let actor_len = body.length()?;
        body.take(actor_len)?;
    }
    let heads = body.length()?;
    let heads = body.take(heads.checked_mul(32).ok_or("too many heads")?)?;
    Ok((heads, body))
}

/// The heads a document chunk claims, read from its header without loading it.
pub(crate) fn document_chunk_heads(chunk: &[u8]) -> Result<Vec<ChangeHash>, &'static str> {
    let (heads, _) = document_chunk_parts(chunk)?;
    Ok(heads
        .chunks_exact(32)
        .map(|head| ChangeHash(head.try_into().expect("chunks are 32 bytes")))
        .collect())
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("the document chunk is truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn uleb(&mut self) -> Result<u64, &'static str> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("an overlong LEB128 number")
    }

    fn sleb(&mut self) -> Result<i64, &'static str> {
        let mut value: i64 = 0;
        let mut shift = 0;
        loop {
            let byte = self.take(1)?[0];
            if shift >= 64 {
                return Err("an overlong LEB128 number");
            }
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1_i64 << shift;
                }
                return Ok(value);
            }
        }
    }

    fn length(&mut self) -> Result<usize, &'static str> {
        usize::try_from(self.uleb()?).map_err(|_| "a length past the address space")
    }

    /// Column metadata: a count, then (spec, length) pairs.
    fn columns(&mut self) -> Result<Vec<(u64, usize)>, &'static str> {
        let count = self.length()?;
        // Each pair takes at least two bytes: a count past that is a lie, not an allocation.
        if count > self.0.len() / 2 {
            return Err("more columns than bytes");
        }
        (0..count).map(|_| Ok((self.uleb()?, self.length()?))).collect()
    }

    /// Consumes the data of `columns` (which follows the metadata in order) and counts the
    /// rows of the run-length-encoded unsigned column `wanted`; 0 when it is absent and every
    /// column is empty.
    fn rows_of(&mut self, columns: &[(u64, usize)], wanted: u64) -> Result<usize, &'static str> {
        let mut rows = None;
        let mut any_data = false;
        for &(spec, len) in columns {
            let data = self.take(len)?;
            any_data |= len > 0;
            if spec == wanted {
                rows = Some(rle_rows(data)?);
            }
        }
        match rows {
            Some(rows) => Ok(rows),
            None if !any_data => Ok(0),
            None => Err("the document chunk lacks a required column"),
        }
    }
}

/// The number of rows of an RLE column of unsigned LEB128 values: runs of one repeated value
/// (positive count), literal runs (negative count) and null runs (zero, then the count).
fn rle_rows(column: &[u8]) -> Result<usize, &'static str> {
    let mut input = Reader(column);
    let mut rows: usize = 0;
    while !input.0.is_empty() {
        let count = input.sleb()?;
        let run = match count {
            0 => input.length()?,
            n if n > 0 => {
                input.uleb()?;
                usize::try_from(n).map_err(|_| "a run past the address space")?
            }
            n => {
                let n = usize::try_from(n.unsigned_abs())
                    .map_err(|_| "a run past the address space")?;
                for _ in 0..n {
                    input.uleb()?;
                }
                n
            }
        };
        rows = rows.checked_add(run).ok_or("too many rows")?;
    }
    Ok(rows)
}

/// The deflate stream of a compressed change chunk (magic, checksum, type 2, LEB128 length),
/// or `None` for any other chunk, which automerge parses without inflating.
fn compressed_body(chunk: &[u8]) -> Option<&[u8]> {
    const COMPRESSED_CHANGE: u8 = 2;
    let rest = chunk.strip_prefix(CHUNK_MAGIC.as_slice())?;
    let (&chunk_type, rest) = rest.get(4..)?.split_first()?;
    if chunk_type != COMPRESSED_CHANGE {
        return None;
    }
    let mut length: u64 = 0;
    for (position, &byte) in rest.iter().enumerate().take(10) {
        length |= u64::from(byte & 0x7f) << (7 * position);
        if byte & 0x80 == 0 {
            let body = &rest[position + 1..];
            let length = usize::try_from(length).ok()?;
            return body.get(..length);
        }
    }
    None
}

/// Inflates `compressed` into a counting sink; `Ok(None)` once it passes `limit` bytes.
fn inflated_len_within(compressed: &[u8], limit: usize) -> std::io::Result<Option<usize>> {
    use std::io::Read;
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let decoder = flate2::read::DeflateDecoder::new(compressed);
    let inflated = std::io::copy(&mut decoder.take(limit.saturating_add(1)), &mut std::io::sink())?;
    Ok((inflated <= limit).then(|| usize::try_from(inflated).expect("at most the limit")))
}

/// Applies the changes `doc` lacks in one call and returns them; nothing is applied on error.
///
/// # Errors
/// [`MergeError::ForeignRoot`] when a change with no dependencies would start a second history,
/// [`MergeError::MissingDeps`] when a dependency is neither in `doc` nor in the batch,
/// [`MergeError::DuplicateSeq`] when an (actor, seq) pair is already used by another change.
pub fn merge_changes(
    doc: &mut Automerge,
    doc_id: DocumentId,
    changes: Vec<Change>,
) -> Result<Vec<Change>, MergeError> {
    let mut seen = HashSet::new();
    let new_changes: Vec<Change> = changes
        .into_iter()
        .filter(|change| {
            doc.get_change_meta_by_hash(&change.hash()).is_none() && seen.insert(change.hash())
        })
        .collect();
    if new_changes.is_empty() {
        return Ok(new_changes);
    }
    let mut roots = new_changes.iter().filter(|change| change.deps().is_empty()).count();
    if !doc.get_heads().is_empty() {
        roots += 1;
    }
    if roots > 1 {
        return Err(MergeError::ForeignRoot { doc: doc_id.to_string() });
    }
    let missing: BTreeSet<String> = new_changes
        .iter()
        .flat_map(|change| change.deps())
        .filter(|dep| !seen.contains(*dep) && doc.get_change_meta_by_hash(dep).is_none())
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::MissingDeps {
            doc: doc_id.to_string(),
            missing: missing.into_iter().collect(),
        });
    }
    doc.apply_changes(new_changes.iter().cloned()).map_err(|err| match err {
        AutomergeError::DuplicateSeqNumber(seq, actor) => {
            MergeError::DuplicateSeq { doc: doc_id.to_string(), actor: actor.to_hex_string(), seq }
        }
        other => MergeError::Refused { doc: doc_id.to_string(), reason: other.to_string() },
    })?;
    Ok(new_changes)
}

/// The heads of a causally closed set of changes after `added` joined the set headed by `old`.
///
/// A change is a head unless another change in the set depends on it, and only the added
/// changes can depend on the old heads. `added` must not contain changes already in the set.
pub fn heads_after(old: &[ChangeHash], added: &[Change]) -> Vec<ChangeHash> {
    let mut heads: BTreeSet<ChangeHash> = old.iter().copied().collect();
    heads.extend(added.iter().map(Change::hash));
    for change in added {
        for dep in change.deps() {
            heads.remove(dep);
        }
    }
    heads.into_iter().collect()
}

/// What the server recorded about a stored change, for causal time bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedChange {
    /// The device that uploaded it (`None` for server-authored changes).
    pub device: Option<String>,
    /// Server receipt time, ms.
    pub received_at: i64,
    /// Its dependencies.
    pub deps: Vec<ChangeHash>,
}

/// The earliest time a change with dependencies `deps`, uploaded by `device`, can have been
/// made: the latest server receipt time among its ancestors written elsewhere, since the device
/// could only build on those after downloading them (SECURITY.md §a). Device clocks are
/// asserted, not trusted; this bound is not.
///
/// `lookup` answers for stored changes and for the upload's own (not yet stored) changes. The
/// walk descends through the device's own changes and stops at the first change from elsewhere
/// on each path: a change's ancestors were all received before it.
pub fn causal_not_before(
    deps: &[ChangeHash],
    device: &str,
    lookup: impl Fn(&ChangeHash) -> Option<ReceivedChange>,
) -> i64 {
    let mut not_before = i64::MIN;
    let mut seen = HashSet::new();
    let mut stack: Vec<ChangeHash> = deps.to_vec();
    while let Some(hash) = stack.pop() {
        if !seen.insert(hash) {
            continue;
        }
        let Some(change) = lookup(&hash) else { continue };
        if change.device.as_deref() == Some(device) {
            stack.extend(change.deps);
        } else {
            not_before = not_before.max(change.received_at);
        }
    }
    not_before
}

/// A field whose value was written concurrently by more than one writer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConflict {
    /// Dotted path of the field, list positions as numbers (`party.name`, `evidence.1.note`).
    pub path: String,
    /// Every value that is kept, the winner first.
    pub values: Vec<ConflictValue>,
}

/// One of the concurrent values of a field and who wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictValue {
    /// The value.
    pub value: serde_json::Value,
    /// Hex actor id of the writer.
    pub actor: String,
    /// The officer the actor belongs to, where the reader knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub officer: Option<String>,
}

/// Walks the document and reports every field with more than one concurrent value.
///
/// Text objects are not walked: concurrent text edits merge character-wise and never conflict.
pub fn field_conflicts(doc: &impl ReadDoc) -> Vec<FieldConflict> {
    let mut conflicts = Vec::new();
    walk(doc, &ROOT, "", &mut conflicts);
    conflicts
}

fn walk(doc: &impl ReadDoc, obj: &ObjId, path: &str, out: &mut Vec<FieldConflict>) {
    let props: Vec<automerge::Prop> = match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => doc.keys(obj).map(automerge::Prop::from).collect(),
        Ok(ObjType::List) => (0..doc.length(obj)).map(automerge::Prop::from).collect(),
        Ok(ObjType::Text) | Err(_) => return,
    };
    for prop in props {
        let child_path = match (&prop, path.is_empty()) {
            (automerge::Prop::Map(key), true) => key.clone(),
            (automerge::Prop::Map(key), false) => format!("{path}.{key}"),
            (automerge::Prop::Seq(index), true) => index.to_string(),
            (automerge::Prop::Seq(index), false) => format!("{path}.{index}"),
        };
        let Ok(values) = doc.get_all(obj, prop) else { continue };
        if values.len() > 1 {
            // Automerge returns the values in op order, the winner last; report the winner first.
            let values = values
                .iter()
                .rev()
                .map(|(value, id)| ConflictValue {
                    value: match value {
                        Value::Scalar(scalar) => scalar_json(scalar),
                        Value::Object(_) => value_json(doc, id),
                    },
                    actor: match id {
                        ObjId::Id(_, actor, _) => actor.to_hex_string(),
                        ObjId::Root => String::new(),
                    },
                    officer: None,
                })
                .collect();
            out.push(FieldConflict { path: child_path.clone(), values });
        }
        if let Some((Value::Object(_), child)) = values.last() {
            walk(doc, child, &child_path, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit};

    use super::*;

    fn doc_id() -> DocumentId {
        DocumentId::from_bytes([5; 16])
    }

    fn base() -> AutoCommit {
        let mut doc = AutoCommit::new().with_actor(ActorId::from([1u8; 16]));
        doc.put(ROOT, "status", "open").unwrap();
        doc.commit();
        doc
    }

    #[test]
    fn concurrent_scalar_writes_are_reported_with_their_writers() {
        let mut a = base();
        let mut b = a.fork().with_actor(ActorId::from([2u8; 16]));
        a.put(ROOT, "status", "from a").unwrap();
        b.put(ROOT, "status", "from b").unwrap();
        a.merge(&mut b).unwrap();
        let conflicts = field_conflicts(&a);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].path, "status");
        let mut actors: Vec<_> = conflicts[0].values.iter().map(|v| v.actor.clone()).collect();
        actors.sort();
        assert_eq!(actors, vec!["01".repeat(16), "02".repeat(16)]);
        let winner = a.get(ROOT, "status").unwrap().unwrap().0;
        assert_eq!(conflicts[0].values[0].value, serde_json::json!(winner.into_string().unwrap()));
    }

    #[test]
    fn merge_refuses_missing_deps_and_foreign_roots_and_skips_known_changes() {
        let mut device = base();
        device.put(ROOT, "status", "closed").unwrap();
        device.commit();
        let changes = device.get_changes(&[]);
        let mut server = Automerge::new();

        let only_second = vec![changes[1].clone()];
        assert!(matches!(
            merge_changes(&mut server, doc_id(), only_second),
            Err(MergeError::MissingDeps { .. })
        ));
        assert!(server.get_heads().is_empty());

        assert_eq!(merge_changes(&mut server, doc_id(), changes.clone()).unwrap().len(), 2);
        assert!(merge_changes(&mut server, doc_id(), changes).unwrap().is_empty());

        let mut stranger = AutoCommit::new();
        stranger.put(ROOT, "status", "other history").unwrap();
        let foreign = stranger.get_changes(&[]);
        assert!(matches!(
            merge_changes(&mut server, doc_id(), foreign),
            Err(MergeError::ForeignRoot { .. })
        ));
    }

    #[test]
    fn the_causal_bound_is_the_latest_receipt_of_what_the_device_built_on() {
        let hash = |n: u8| ChangeHash([n; 32]);
        let stored = |device: &str, received_at: i64, deps: &[u8]| ReceivedChange {
            device: Some(device.to_owned()),
            received_at,
            deps: deps.iter().map(|&n| hash(n)).collect(),
        };
        // 1 (other, t=10) <- 2 (device, t=20) <- 3 (other, t=30) <- 4 (device, t=40); 5 (other, t=50) unrelated.
        let log = std::collections::HashMap::from([
            (hash(1), stored("other", 10, &[])),
            (hash(2), stored("me", 20, &[1])),
            (hash(3), stored("other", 30, &[2])),
            (hash(4), stored("me", 40, &[3])),
            (hash(5), stored("other", 50, &[])),
        ]);
        let lookup = |h: &ChangeHash| log.get(h).cloned();
        assert_eq!(causal_not_before(&[hash(4)], "me", lookup), 30);
        assert_eq!(causal_not_before(&[hash(2)], "me", lookup), 10);
        assert_eq!(causal_not_before(&[hash(2), hash(5)], "me", lookup), 50);
        assert_eq!(causal_not_before(&[], "me", lookup), i64::MIN);
    }

    #[test]
    fn heads_after_follows_dependencies() {
        let mut doc = base();
        let first = doc.get_heads();
        doc.put(ROOT, "status", "x").unwrap();
        doc.commit();
        let added = doc.get_changes(&first);
        assert_eq!(heads_after(&first, &added), doc.get_heads());
        assert_eq!(heads_after(&[], &doc.get_changes(&[])), doc.get_heads());
    }

    #[test]
    fn limits_refuse_deflate_bombs_and_huge_changes() {
        let mut doc = AutoCommit::new().with_actor(ActorId::from([1u8; 16]));
        let text = doc.put_object(ROOT, "findings", ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, &"消防".repeat(5_000)).unwrap();
        doc.commit();
        let chunk = doc.get_changes(&[])[0].clone().bytes().into_owned();
        assert!(compressed_body(&chunk).is_some(), "a large change travels compressed");
        let parse = |max_ops_per_change, max_inflated_bytes| {
            let limits = UploadLimits { max_ops_per_change, max_inflated_bytes };
            let mut budget = max_inflated_bytes;
            parse_changes_within(doc_id(), std::slice::from_ref(&chunk), limits, &mut budget)
        };
        assert!(parse(100_000, 1 << 20).is_ok());
        assert!(matches!(parse(100_000, 4_096), Err(MergeError::InflateLimit { .. })));
        assert!(matches!(parse(10, 1 << 20), Err(MergeError::TooManyOps { .. })));
    }

    #[test]
    fn strict_parse_refuses_garbage_and_trailing_bytes() {
        let mut doc = base();
        let mut chunk = doc.get_changes(&[])[0].raw_bytes().to_vec();
        assert!(parse_changes(doc_id(), std::slice::from_ref(&chunk)).is_ok());
        chunk.push(0);
        assert!(parse_changes(doc_id(), &[chunk]).is_err());
        assert!(parse_changes(doc_id(), &[vec![1, 2, 3]]).is_err());
    }

    /// A new document as a device uploads it: one uncompressed document chunk.
    fn document_upload(doc: &mut AutoCommit) -> DocUpload {
        DocUpload {
            doc_id: doc_id(),
            base_heads: Vec::new(),
            heads: doc.get_heads().iter().map(|hash| hash.0).collect(),
            changes: vec![doc.save_nocompress()],
        }
    }

    /// A document of several changes by one actor, with text long enough that `save()`
    /// deflates some of its columns.
    fn several_changes() -> AutoCommit {
        let mut doc = base();
        let text = doc.put_object(ROOT, "findings", ObjType::Text).unwrap();
        doc.commit();
        for round in 0..20 {
            doc.splice_text(&text, 0, 0, &format!("finding {round}; ")).unwrap();
            doc.put(ROOT, "status", format!("status {round}")).unwrap();
            doc.commit();
        }
        doc
    }

    fn malformed(result: &Result<Vec<Change>, MergeError>) -> bool {
        matches!(result, Err(MergeError::MalformedChange { .. }))
    }

    #[test]
    fn a_document_chunk_yields_the_changes_of_its_change_chunks() {
        let mut doc = several_changes();
        let expected: Vec<ChangeHash> = doc.get_changes(&[]).iter().map(Change::hash).collect();
        let upload = document_upload(&mut doc);
        let header = DocumentChunkHeader::read(&upload.changes[0]).unwrap();
        assert_eq!(header.changes, expected.len());
        let ops: usize = doc.get_changes(&[]).iter().map(Change::len).sum();
        assert_eq!(header.ops, ops);

        let parsed = parse_upload(&upload).unwrap();
        assert_eq!(parsed.iter().map(Change::hash).collect::<Vec<_>>(), expected);
        // The same bytes the change chunks carry, so the change log stores the same rows.
        let chunks: Vec<Vec<u8>> =
            doc.get_changes(&[]).iter().map(|change| change.raw_bytes().to_vec()).collect();
        let from_chunks = parse_changes(doc_id(), &chunks).unwrap();
        for (a, b) in parsed.iter().zip(&from_chunks) {
            assert_eq!(a.raw_bytes(), b.raw_bytes());
        }
        // Each op costs what loading it holds of the inflate budget, each change one of the
        // allowance; the facts are those of the changes, read without listing them.
        let limits = UploadLimits::default();
        let (mut budget, mut allowance) = (limits.max_inflated_bytes, 100);
        let ParsedUpload::Document(loaded) =
            parse_upload_within(&upload, limits, &mut budget, &mut allowance).unwrap()
        else {
            panic!("a document chunk loads a document");
        };
        let mut applied = Automerge::new_with_encoding(TextEncoding::Utf8CodeUnit);
        applied.apply_changes(from_chunks.clone()).unwrap();
        assert_eq!(loaded.doc.save(), applied.save(), "the loaded document is the applied one");
        let facts: Vec<ChangeFacts> = from_chunks.iter().map(ChangeFacts::of).collect();
        assert_eq!(loaded.facts, facts);
        assert_eq!(limits.max_inflated_bytes - budget, ops * DOCUMENT_CHUNK_OP_BYTES);
        assert_eq!(allowance, 100 - expected.len());
    }

    #[test]
    fn a_document_chunk_with_a_deflated_column_is_refused() {
        let mut doc = several_changes();
        let compressed = doc.save();
        assert_eq!(
            DocumentChunkHeader::read(&compressed),
            Err("the document chunk has a deflated column"),
            "save() deflates the long columns"
        );
        let upload = DocUpload { changes: vec![compressed], ..document_upload(&mut doc) };
        assert!(malformed(&parse_upload(&upload)));
    }

    #[test]
    fn a_document_chunk_only_comes_alone_and_without_base_heads() {
        let mut doc = several_changes();
        let upload = document_upload(&mut doc);
        let first = doc.get_changes(&[])[0].raw_bytes().to_vec();

        let mut with_change = upload.clone();
        with_change.changes.push(first.clone());
        assert!(malformed(&parse_upload(&with_change)));
        let mut after_change = upload.clone();
        after_change.changes.insert(0, first);
        assert!(malformed(&parse_upload(&after_change)));
        let twice = DocUpload { changes: vec![upload.changes[0].clone(); 2], ..upload.clone() };
        assert!(malformed(&parse_upload(&twice)));
        let with_base = DocUpload { base_heads: vec![doc.get_heads()[0].0], ..upload.clone() };
        assert!(malformed(&parse_upload(&with_base)));
        assert!(parse_upload(&upload).is_ok());
    }

    #[test]
    fn a_truncated_or_corrupted_document_chunk_is_refused() {
        let mut doc = several_changes();
        let upload = document_upload(&mut doc);
        let chunk = &upload.changes[0];
        let with = |changes: Vec<u8>| DocUpload { changes: vec![changes], ..upload.clone() };
        for cut in [chunk.len() - 1, chunk.len() / 2, 12, 6] {
            assert!(malformed(&parse_upload(&with(chunk[..cut].to_vec()))), "cut at {cut}");
        }
        let mut trailing = chunk.clone();
        trailing.push(0);
        assert!(malformed(&parse_upload(&with(trailing))));
        // Every single-byte corruption after the header is refused, never half loaded.
        let mut refused = 0;
        for position in (12..chunk.len()).step_by(7) {
            let mut corrupted = chunk.clone();
            corrupted[position] ^= 0x55;
            match parse_upload(&with(corrupted)) {
                Err(_) => refused += 1,
                Ok(changes) => {
                    panic!("a corruption at {position} loaded {} changes", changes.len())
                }
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn a_document_chunk_is_held_to_the_per_change_and_per_sync_limits() {
        let mut doc = several_changes();
        let upload = document_upload(&mut doc);
        let changes = doc.get_changes(&[]).len();
        let largest = doc.get_changes(&[]).iter().map(Change::len).max().unwrap();
        let parse = |max_ops_per_change, max_inflated_bytes, allowance| {
            let limits = UploadLimits { max_ops_per_change, max_inflated_bytes };
            let (mut budget, mut allowance) = (max_inflated_bytes, allowance);
            parse_upload_within(&upload, limits, &mut budget, &mut allowance)
        };
        assert!(parse(largest, 1 << 20, changes).is_ok());
        assert!(matches!(parse(largest - 1, 1 << 20, changes), Err(MergeError::TooManyOps { .. })));
        // Fewer ops per change than the whole chunk's average: refused before loading.
        assert!(matches!(parse(1, 1 << 20, changes), Err(MergeError::TooManyOps { .. })));
        assert!(matches!(
            parse(largest, 1 << 20, changes - 1),
            Err(MergeError::TooManyChanges { .. })
        ));
        assert!(matches!(parse(largest, 200, changes), Err(MergeError::InflateLimit { .. })));
        // Each claimed operation costs the budget what loading it holds; the changes are not
        // listed, so their bytes cost nothing more.
        let ops: usize = doc.get_changes(&[]).iter().map(Change::len).sum();
        let needed = ops * DOCUMENT_CHUNK_OP_BYTES;
        assert!(parse(largest, needed, changes).is_ok());
        assert!(matches!(
            parse(largest, needed - 1, changes),
            Err(MergeError::InflateLimit { .. })
        ));
    }

    #[test]
    fn run_lengths_count_repeated_literal_and_null_runs() {
        // 3 × value 7, a literal run of 2 values, 4 nulls.
        assert_eq!(rle_rows(&[3, 7, 0x7e, 1, 2, 0, 4]), Ok(9));
        assert!(rle_rows(&[0x7e, 1]).is_err());
    }
}
