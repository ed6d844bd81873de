//! The typed record documents and the parts they share.
//!
//! Each record is one Automerge document whose root map is reconciled from and hydrated into
//! the structs below with autosurgeon. A document is created once (on the device that opens the
//! record) and every other replica receives it by sync: two replicas that reconciled the same
//! struct into empty documents would hold two unrelated histories (AUTOMERGE.md P11).

mod case_file;
mod inspection;
mod procedure;

use automerge::{ActorId, AutoCommit, ROOT, TextEncoding, transaction::CommitOptions};
use autosurgeon::{Hydrate, Reconcile, hydrate, hydrate_prop, reconcile};
use serde::{Deserialize, Serialize};

use crate::error::{EditError, ReplicaError};
pub use crate::records::case_file::{CaseFile, IssuedDocument, PASSING_ON, Penalty, TimelineEvent};
pub use crate::records::inspection::{ChecklistItem, Gnss, InspectionRecord, Signature, Site};
pub use crate::records::procedure::{
    CaseState, Procedure, ProcedureFold, SERVER_AUTHORED, TransitionIssue,
};

/// The schema version written by this build; readers accept this and every older version.
pub const SCHEMA_VERSION: i64 = 1;

/// Which kind of record a document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// 检查记录: an on-site inspection.
    Inspection,
    /// 案卷: an enforcement case file.
    Case,
}

impl RecordKind {
    /// The value stored in the document's `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inspection => "inspection",
            Self::Case => "case",
        }
    }

    /// Reads the value stored in the document's `kind` field.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "inspection" => Some(Self::Inspection),
            "case" => Some(Self::Case),
            _ => None,
        }
    }

    /// Reads the kind of a record document.
    pub fn of(doc: &impl autosurgeon::ReadDoc) -> Result<Self, EditError> {
        let kind: Option<String> = hydrate_prop(doc, ROOT, "kind")
            .map_err(|err| EditError::NotARecord(err.to_string()))?;
        kind.as_deref()
            .and_then(Self::parse)
            .ok_or_else(|| EditError::NotARecord(format!("unknown kind {kind:?}")))
    }
}

/// A party (当事人): the person or organisation inspected or penalised.
#[derive(Debug, Clone, PartialEq, Default, Reconcile, Hydrate, Serialize)]
pub struct Party {
    /// `natural`, `legal`, `other_org` or `individual_business`.
    pub kind: String,
    /// Full name.
    pub name: String,
    /// 身份证 or 统一社会信用代码: the de-duplication key across agencies.
    pub id_number: String,
}

impl Party {
    /// Whether the party is an organisation (which raises the on-site fine ceiling).
    pub fn is_organisation(&self) -> bool {
        matches!(self.kind.as_str(), "legal" | "other_org")
    }
}

/// An officer present at an act, with the certificate number shown to the party.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize)]
pub struct OfficerPresent {
    /// Registry id of the officer.
    #[key]
    pub officer: String,
    /// Certificate number shown (出示证件); empty until the device knows it.
    pub cert_no: String,
}

/// One evidence item (证据). The bytes travel separately as a content-addressed blob.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize)]
pub struct Evidence {
    /// Id minted on the device; concurrent additions stay separate items.
    #[key]
    pub id: String,
    /// One of the legal evidence classes (photo, document, audio, video, testimony, …).
    pub kind: String,
    /// Hex SHA-256 of the bytes taken at capture.
    pub sha256: String,
    /// Size of the bytes.
    pub size: i64,
    /// Media type of the bytes.
    pub media_type: String,
    /// Device time of capture, milliseconds since the Unix epoch.
    pub captured_at: i64,
    /// Officer or device that captured it.
    pub captured_by: String,
    /// Free-text note.
    pub note: String,
    /// Set when the item is withdrawn: the item and its bytes stay, the removal is an event.
    pub removed: Option<Removal>,
}

/// The attributed withdrawal of an evidence item.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize)]
pub struct Removal {
    /// Device time, milliseconds since the Unix epoch.
    pub at: i64,
    /// Officer or device that withdrew it.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Creates a new record document with the given actor, committed as one change.
///
/// `now_ms` is the device time of creation; sync-core never reads the clock.
pub fn create_document<T: Reconcile>(
    actor: &ActorId,
    record: &T,
    now_ms: i64,
) -> Result<AutoCommit, ReplicaError> {
    let mut doc = new_document(actor);
    reconcile(&mut doc, record).map_err(|err| ReplicaError::Reconcile(err.to_string()))?;
    doc.commit_with(CommitOptions::default().with_message("create").with_time(now_ms / 1000));
    Ok(doc)
}

/// An empty document with the device's actor and UTF-8 text indices (AUTOMERGE.md P1).
pub fn new_document(actor: &ActorId) -> AutoCommit {
    AutoCommit::new_with_encoding(TextEncoding::Utf8CodeUnit).with_actor(actor.clone())
}

/// Withdraws an evidence item: the item and its bytes stay, and the withdrawal (who, when,
/// why) becomes part of the record's history. Evidence is never deleted from a record.
///
/// # Errors
/// [`EditError::NoSuchPath`] when the record holds no evidence item with that id, or when it
/// was already withdrawn.
pub fn withdraw_evidence(
    doc: &mut AutoCommit,
    evidence_id: &str,
    removal: Removal,
) -> Result<(), EditError> {
    let invalid = |err: autosurgeon::HydrateError| EditError::NotARecord(err.to_string());
    let mut evidence: Vec<Evidence> = hydrate_prop(&*doc, ROOT, "evidence").map_err(invalid)?;
    let item = evidence
        .iter_mut()
        .find(|item| item.id == evidence_id && item.removed.is_none())
        .ok_or_else(|| EditError::NoSuchPath(format!("evidence {evidence_id}")))?;
    item.removed = Some(removal);
    autosurgeon::reconcile_prop(doc, ROOT, "evidence", &evidence)
        .map_err(|err| EditError::Automerge(err.to_string()))
}

/// The actor of the server: the only writer of server-authored events (filing, decisions,
/// closing, archiving).
///
/// A fixed, well-known id keeps the case fold identical on every replica. It cannot be forged
/// from a device: the server refuses any new change whose actor is not registered to the
/// uploading device, and no device is ever registered with this actor.
pub const SERVER_ACTOR: [u8; 16] = *b"fieldcase:server";

/// The hex form of [`SERVER_ACTOR`], as timeline events carry it.
pub fn server_actor_hex() -> String {
    ActorId::from(SERVER_ACTOR).to_hex_string()
}

/// Replaces each event's self-declared `actor` with the actor that really wrote it, read
/// from the document's operations: who inserted the event and who set its kind. Where the two
/// differ, the one that is not the server wins, so a device can neither claim nor borrow a
/// server-authored event.
fn attribute_timeline(doc: &impl autosurgeon::ReadDoc, case_file: &mut CaseFile) {
    fn actor_of(id: &automerge::ObjId) -> Option<String> {
        match id {
            automerge::ObjId::Id(_, actor, _) => Some(actor.to_hex_string()),
            automerge::ObjId::Root => None,
        }
    }
    let Ok(Some((_, list))) = doc.get(&ROOT, "timeline") else { return };
    let server = server_actor_hex();
    for (index, event) in case_file.timeline.iter_mut().enumerate() {
        let Ok(Some((_, item))) = doc.get(&list, index) else { continue };
        let inserted_by = actor_of(&item);
        let kind_by = doc.get(&item, "kind").ok().flatten().and_then(|(_, id)| actor_of(&id));
        let author = match (inserted_by, kind_by) {
            (Some(inserted), Some(kind)) if kind == server => inserted,
            (_, Some(kind)) => kind,
            (Some(inserted), None) => inserted,
            (None, None) => continue,
        };
        event.actor = author;
    }
}

/// Either record, hydrated.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An inspection record.
    Inspection(Box<InspectionRecord>),
    /// A case file.
    Case(Box<CaseFile>),
}

impl Record {
    /// Hydrates whichever record the document holds.
    pub fn hydrate(doc: &impl autosurgeon::ReadDoc) -> Result<Self, EditError> {
        let invalid = |err: autosurgeon::HydrateError| EditError::NotARecord(err.to_string());
        Ok(match RecordKind::of(doc)? {
            RecordKind::Inspection => Self::Inspection(Box::new(hydrate(doc).map_err(invalid)?)),
            RecordKind::Case => {
                let mut case_file: CaseFile = hydrate(doc).map_err(invalid)?;
                attribute_timeline(doc, &mut case_file);
                Self::Case(Box::new(case_file))
            }
        })
    }

    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Inspection(_) => RecordKind::Inspection,
            Self::Case(_) => RecordKind::Case,
        }
    }

    /// The matter code (执法事项).
    pub fn matter(&self) -> &str {
        match self {
            Self::Inspection(record) => &record.matter,
            Self::Case(record) => &record.matter,
        }
    }

    /// The handling township.
    pub fn township(&self) -> &str {
        match self {
            Self::Inspection(record) => &record.township,
            Self::Case(record) => &record.township,
        }
    }

    /// The first party's id number, the key for duplicate-enforcement checks.
    pub fn party_key(&self) -> Option<&str> {
        let party = match self {
            Self::Inspection(record) => Some(&record.party),
            Self::Case(record) => record.parties.first(),
        };
        party.map(|party| party.id_number.as_str()).filter(|key| !key.is_empty())
    }

    /// The officers present, for the two-officer rule.
    pub fn officers(&self) -> &[OfficerPresent] {
        match self {
            Self::Inspection(record) => &record.officers,
            Self::Case(record) => &record.officers,
        }
    }

    /// The evidence list.
    pub fn evidence(&self) -> &[Evidence] {
        match self {
            Self::Inspection(record) => &record.evidence,
            Self::Case(record) => &record.evidence,
        }
    }

    /// When the record's agency was handling the party, for duplicate-enforcement alerts:
    /// an inspection from its start to its end, a case from its first event to the event that
    /// ends its handling (see [`CaseFile::handling_window`]); `None` as the end while it runs.
    pub fn handling_window(&self) -> (i64, Option<i64>) {
        match self {
            Self::Inspection(record) => (record.started_at, record.ended_at),
            Self::Case(record) => record.handling_window(),
        }
    }

    /// A one-word status for lists and SQL projections.
    pub fn status(&self) -> String {
        match self {
            Self::Inspection(record) => {
                if record.ended_at.is_some() { "closed" } else { "open" }.to_owned()
            }
            Self::Case(record) => record.fold().state.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::{ActorId, ReadDoc};

    use super::*;

    #[test]
    fn timeline_authors_come_from_the_operations_not_the_declared_actor() {
        let device = ActorId::from([7u8; 16]);
        let mut case_file = CaseFile::new(
            "c".to_owned(),
            Procedure::General,
            "AJ-001".to_owned(),
            Party::default(),
        );
        // A device forging the server's actor in the event's own field.
        case_file.append_event(
            "e1".to_owned(),
            "file".to_owned(),
            "o-1".to_owned(),
            server_actor_hex(),
            0,
            std::collections::BTreeMap::new(),
        );
        let doc = create_document(&device, &case_file, 0).unwrap();
        let Record::Case(hydrated) = Record::hydrate(&doc).unwrap() else { panic!("a case") };
        assert_eq!(hydrated.timeline[0].actor, device.to_hex_string());
        assert_eq!(hydrated.fold().state, CaseState::Lead);

        let server_doc = create_document(&ActorId::from(SERVER_ACTOR), &case_file, 0).unwrap();
        let Record::Case(by_server) = Record::hydrate(&server_doc).unwrap() else {
            panic!("a case")
        };
        assert_eq!(by_server.fold().state, CaseState::Filed);
    }

    #[test]
    fn withdrawn_evidence_stays_in_the_record_and_its_history() {
        let party = Party::default();
        let mut record =
            InspectionRecord::new("i".to_owned(), "AJ-001".to_owned(), party, Site::default(), 0);
        record.evidence.push(Evidence {
            id: "ev-1".to_owned(),
            kind: "photo".to_owned(),
            sha256: "ab".repeat(32),
            size: 1,
            media_type: "image/jpeg".to_owned(),
            captured_at: 0,
            captured_by: "o-1".to_owned(),
            note: String::new(),
            removed: None,
        });
        let mut doc = create_document(&ActorId::from([1u8; 16]), &record, 0).unwrap();
        let before = doc.get_heads();
        let removal = Removal { at: 5, by: "o-1".to_owned(), reason: "blurred".to_owned() };
        withdraw_evidence(&mut doc, "ev-1", removal.clone()).unwrap();
        doc.commit();

        let now: Vec<Evidence> = hydrate_prop(&doc, ROOT, "evidence").unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].removed, Some(removal.clone()));
        let (_, list) = doc.get(ROOT, "evidence").unwrap().unwrap();
        let (_, item) = doc.get_at(&list, 0, &before).unwrap().unwrap();
        assert!(doc.get_at(&item, "removed", &before).unwrap().unwrap().0.is_null());
        assert!(withdraw_evidence(&mut doc, "ev-1", removal).is_err(), "withdrawn twice");
    }
}
