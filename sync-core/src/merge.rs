//! Merging uploaded changes into a document, and reading back where concurrent edits collided.
//!
//! The server calls [`parse_changes`] and [`merge_changes`] on every upload: each chunk is
//! parsed strictly on its own (never `load_incremental`, which applies a corrupt prefix), known
//! changes are skipped so replays are harmless, and a batch whose dependencies are incomplete is
//! refused whole rather than queued silently (AUTOMERGE.md P6, P8). All new changes of a
//! document are applied in one call, because every call costs O(document) (P14).

use std::collections::{BTreeSet, HashSet};

use automerge::{
    Automerge, AutomergeError, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value,
};
use serde::Serialize;

use crate::error::MergeError;
use crate::ids::DocumentId;
use crate::json::{scalar_json, value_json};

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
        *inflated_budget =
            inflated_budget.checked_sub(change.raw_bytes().len()).ok_or_else(inflate_limit)?;
        if change.len() > limits.max_ops_per_change {
            return Err(MergeError::TooManyOps {
                doc: doc_id.to_string(),
                index,
                ops: change.len(),
                limit: limits.max_ops_per_change,
            });
        }
        changes.push(change);
    }
    Ok(changes)
}

/// The deflate stream of a compressed change chunk (magic, checksum, type 2, LEB128 length),
/// or `None` for any other chunk, which automerge parses without inflating.
fn compressed_body(chunk: &[u8]) -> Option<&[u8]> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    const COMPRESSED_CHANGE: u8 = 2;
    let rest = chunk.strip_prefix(MAGIC.as_slice())?;
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
}
