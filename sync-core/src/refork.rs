//! Re-authoring edits under a new actor: a device restored from a backup re-forks its records.
//!
//! A device restored from yesterday's backup continues its old actor's sequence numbers, which
//! the server already holds with other content (the changes the device made after the backup,
//! uploaded before it was lost), so every upload is refused as `duplicate_seq` (SECURITY.md §a,
//! B-29). The way out is a new actor: the document becomes a fork at the heads the server
//! acknowledged, and the edits made since are replayed onto it as new changes by the new actor
//! ([`crate::replica::DeviceDoc::refork`]). The replay reads the edits as patches (`diff` from the
//! acknowledged heads to the current ones) and applies each one, creating the objects the edits
//! created and mapping their ids, so the re-forked record reads exactly as before.

use std::collections::HashMap;

use automerge::marks::ExpandMark;
use automerge::transaction::Transactable;
use automerge::{
    AutoCommit, AutomergeError, ObjId, ObjType, Patch, PatchAction, Prop, ReadDoc, Value,
};

/// Applies `patches`, computed on another document that shares `doc`'s history up to the
/// patches' starting point, to `doc` as new operations by `doc`'s actor; the caller commits.
///
/// Objects the patches create get new ids in `doc`; later patches naming them are mapped. A
/// `Conflict` patch has nothing to replay: concurrency cannot be re-authored, and the winning
/// value it reports arrives as a `PutMap`/`PutSeq` of its own.
///
/// # Errors
/// What automerge says when a patch does not fit `doc` (a patch sequence from another history).
pub(crate) fn replay_patches(
    doc: &mut AutoCommit,
    patches: &[Patch],
) -> Result<(), AutomergeError> {
    let mut created: HashMap<ObjId, ObjId> = HashMap::new();
    for patch in patches {
        let obj = created.get(&patch.obj).cloned().unwrap_or_else(|| patch.obj.clone());
        match &patch.action {
            PatchAction::PutMap { key, value: (value, id), .. } => match value {
                Value::Object(kind) => {
                    let new_id = doc.put_object(&obj, key.as_str(), *kind)?;
                    created.insert(id.clone(), new_id);
                }
                Value::Scalar(scalar) => doc.put(&obj, key.as_str(), scalar.as_ref().clone())?,
            },
            PatchAction::PutSeq { index, value: (value, id), .. } => match value {
                Value::Object(kind) => {
                    let new_id = doc.put_object(&obj, *index, *kind)?;
                    created.insert(id.clone(), new_id);
                }
                Value::Scalar(scalar) => doc.put(&obj, *index, scalar.as_ref().clone())?,
            },
            PatchAction::Insert { index, values } => {
                for (offset, (value, id, _conflict)) in values.iter().enumerate() {
                    let at = index + offset;
                    match value {
                        Value::Object(kind) => {
                            let new_id = doc.insert_object(&obj, at, *kind)?;
                            created.insert(id.clone(), new_id);
                        }
                        Value::Scalar(scalar) => doc.insert(&obj, at, scalar.as_ref().clone())?,
                    }
                }
            }
            PatchAction::SpliceText { index, value, .. } => {
                doc.splice_text(&obj, *index, 0, &value.make_string())?;
            }
            PatchAction::DeleteMap { key } => doc.delete(&obj, key.as_str())?,
            PatchAction::DeleteSeq { index, length } => {
                let length =
                    isize::try_from(*length).map_err(|_| AutomergeError::InvalidIndex(*length))?;
                if matches!(doc.object_type(&obj), Ok(ObjType::Text)) {
                    doc.splice_text(&obj, *index, length, "")?;
                } else {
                    doc.splice(&obj, *index, length, std::iter::empty::<automerge::ScalarValue>())?;
                }
            }
            PatchAction::Increment { prop, value } => match prop {
                Prop::Map(key) => doc.increment(&obj, key.as_str(), *value)?,
                Prop::Seq(index) => doc.increment(&obj, *index, *value)?,
            },
            PatchAction::Mark { marks } => {
                for mark in marks {
                    doc.mark(&obj, mark.clone(), ExpandMark::None)?;
                }
            }
            PatchAction::Conflict { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit, ChangeHash, ROOT, ReadDoc, ScalarValue};

    use crate::ids::DocumentId;
    use crate::records::new_document;
    use crate::replica::DeviceDoc;

    fn old_actor() -> ActorId {
        ActorId::from([1u8; 16])
    }

    fn new_actor() -> ActorId {
        ActorId::from([7u8; 16])
    }

    /// A document as the server acknowledged it: a text, a list of maps, a nested map, a
    /// counter and a few keys; returned with its heads.
    fn synced_base() -> (AutoCommit, Vec<ChangeHash>) {
        let mut doc = new_document(&old_actor());
        let findings = doc.put_object(ROOT, "findings", automerge::ObjType::Text).unwrap();
        doc.splice_text(&findings, 0, 0, "现场检查：café ☕ 正常").unwrap();
        let evidence = doc.put_object(ROOT, "evidence", automerge::ObjType::List).unwrap();
        let item = doc.insert_object(&evidence, 0, automerge::ObjType::Map).unwrap();
        doc.put(&item, "id", "ev-1").unwrap();
        doc.put(ROOT, "outcome", "none").unwrap();
        doc.put(ROOT, "obsolete", "remove me").unwrap();
        doc.put(ROOT, "visits", ScalarValue::counter(1)).unwrap();
        let tags = doc.put_object(ROOT, "tags", automerge::ObjType::List).unwrap();
        for (index, tag) in ["a", "b", "c", "d"].into_iter().enumerate() {
            doc.insert(&tags, index, tag).unwrap();
        }
        doc.commit();
        let heads = doc.get_heads();
        (doc, heads)
    }

    /// Offline edits after the acknowledged heads, in several changes.
    fn edit_offline(doc: &mut AutoCommit) {
        let findings = doc.get(ROOT, "findings").unwrap().unwrap().1;
        // Non-ASCII text: insert inside multi-byte text, delete across it, append an emoji.
        let at = "现场检查：".len();
        doc.splice_text(&findings, at, 0, "甲乙").unwrap();
        doc.commit();
        let cafe = "现场检查：甲乙".len();
        doc.splice_text(&findings, cafe, "café ".len() as isize, "").unwrap();
        let end = doc.text(&findings).unwrap().len();
        doc.splice_text(&findings, end, 0, " 🚒 完").unwrap();
        doc.commit();
        // List inserts, with a nested object holding a text and a map of its own.
        let evidence = doc.get(ROOT, "evidence").unwrap().unwrap().1;
        let item = doc.insert_object(&evidence, 1, automerge::ObjType::Map).unwrap();
        doc.put(&item, "id", "ev-2").unwrap();
        let note = doc.put_object(&item, "note", automerge::ObjType::Text).unwrap();
        doc.splice_text(&note, 0, 0, "照片：北墙 ✓").unwrap();
        let removed = doc.put_object(&item, "removed", automerge::ObjType::Map).unwrap();
        doc.put(&removed, "reason", "重复").unwrap();
        let first = doc.get(&evidence, 0).unwrap().unwrap().1;
        doc.put(&first, "note", "第一张").unwrap();
        doc.commit();
        // Map deletes, a scalar overwrite, a counter increment, list deletes and a set.
        doc.delete(ROOT, "obsolete").unwrap();
        doc.put(ROOT, "outcome", "rectification_order").unwrap();
        doc.increment(ROOT, "visits", 2).unwrap();
        let tags = doc.get(ROOT, "tags").unwrap().unwrap().1;
        doc.delete(&tags, 1).unwrap();
        doc.delete(&tags, 1).unwrap();
        doc.put(&tags, 0, "A").unwrap();
        doc.insert(&tags, 2, "e").unwrap();
        let nested = doc.put_object(ROOT, "site", automerge::ObjType::Map).unwrap();
        let gnss = doc.put_object(&nested, "gnss", automerge::ObjType::List).unwrap();
        doc.insert(&gnss, 0, 30.5).unwrap();
        doc.insert(&gnss, 1, 114.25).unwrap();
        doc.commit();
    }

    fn restored(doc: &mut AutoCommit, synced: Vec<ChangeHash>) -> DeviceDoc {
        let id = DocumentId::from_bytes([3; 16]);
        DeviceDoc::load(id, &doc.save(), synced, &old_actor()).unwrap()
    }

    #[test]
    fn a_refork_replays_every_edit_under_the_new_actor_and_reads_the_same() {
        let (mut doc, synced) = synced_base();
        edit_offline(&mut doc);
        let mut device_doc = restored(&mut doc, synced.clone());
        let before = device_doc.view().record;
        let pending: Vec<ChangeHash> = device_doc.pending().iter().map(|c| c.hash()).collect();
        assert_eq!(pending.len(), 4);

        let refused = device_doc.refork(&new_actor()).unwrap();

        let refused: Vec<ChangeHash> = refused.iter().map(automerge::Change::hash).collect();
        assert_eq!(refused, pending, "every refused change is handed back");
        assert_eq!(device_doc.view().record, before);
        assert_eq!(
            device_doc.view().record["findings"],
            "现场检查：甲乙☕ 正常 🚒 完",
            "UTF-8 indices replayed on UTF-8 indices"
        );
        assert_eq!(device_doc.synced_heads(), synced.as_slice());
        let new_changes = device_doc.pending();
        assert!(!new_changes.is_empty());
        assert!(new_changes.iter().all(|change| change.actor_id() == &new_actor()));
        assert!(new_changes.iter().all(|change| !refused.contains(&change.hash())));
        // Later edits carry the new actor too.
        device_doc.doc_mut().put(ROOT, "outcome", "case_lead").unwrap();
        device_doc.doc_mut().commit();
        assert!(device_doc.pending().iter().all(|change| change.actor_id() == &new_actor()));
    }

    #[test]
    fn a_refork_of_a_document_never_synced_rebuilds_it_from_nothing() {
        let mut doc = new_document(&old_actor());
        let text = doc.put_object(ROOT, "findings", automerge::ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, "新记录 é").unwrap();
        doc.commit();
        let mut device_doc = restored(&mut doc, Vec::new());
        let before = device_doc.view().record;
        assert_eq!(device_doc.refork(&new_actor()).unwrap().len(), 1);
        assert_eq!(device_doc.view().record, before);
        assert!(device_doc.pending().iter().all(|change| change.actor_id() == &new_actor()));
    }

    #[test]
    fn a_refork_with_nothing_pending_only_changes_the_actor() {
        let (mut doc, synced) = synced_base();
        let mut device_doc = restored(&mut doc, synced.clone());
        assert!(device_doc.refork(&new_actor()).unwrap().is_empty());
        assert!(!device_doc.has_pending());
        assert_eq!(device_doc.heads(), synced);
        device_doc.doc_mut().put(ROOT, "outcome", "x").unwrap();
        device_doc.doc_mut().commit();
        assert_eq!(device_doc.pending()[0].actor_id(), &new_actor());
    }

    #[test]
    fn changes_the_server_already_stores_are_acknowledged_not_replayed() {
        let (mut doc, synced) = synced_base();
        doc.put(ROOT, "outcome", "uploaded before the loss").unwrap();
        doc.commit();
        let stored: HashSet<ChangeHash> = doc.get_heads().into_iter().collect();
        doc.put(ROOT, "obsolete", "after the restore").unwrap();
        doc.commit();
        let mut device_doc = restored(&mut doc, synced);
        assert_eq!(device_doc.acknowledge_stored(&stored), 1);
        assert_eq!(device_doc.synced_heads(), &stored.iter().copied().collect::<Vec<_>>()[..]);
        let refused = device_doc.refork(&new_actor()).unwrap();
        assert_eq!(refused.len(), 1);
        let pending = device_doc.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].actor_id(), &new_actor());
        assert_eq!(device_doc.view().record["outcome"], "uploaded before the loss");
        assert_eq!(device_doc.view().record["obsolete"], "after the restore");
    }
}
