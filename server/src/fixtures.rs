//! Test fixtures: record documents written the way a device writes them, and their changes.

use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::protocol::DocUpload;
use sync_core::records::{InspectionRecord, Party, Site, create_document};
use tempfile::TempDir;

use crate::store::{DATABASE_FILE, Store};

/// A store in a fresh temporary directory, kept alive by the returned guard.
pub(crate) fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let store = Store::open(&dir.path().join(DATABASE_FILE)).expect("opening the store");
    (dir, store)
}

/// A document id made from one repeated byte.
pub(crate) fn doc_id(byte: u8) -> DocumentId {
    DocumentId::from_bytes([byte; 16])
}

/// An actor id made from one repeated byte, as if registered to one device.
pub(crate) fn actor(byte: u8) -> ActorId {
    ActorId::from([byte; 16])
}

/// A new inspection record created on the device whose actor is `actor`, as one change.
pub(crate) fn new_inspection(actor: &ActorId, doc_id: DocumentId) -> AutoCommit {
    let party = Party {
        kind: "legal".to_owned(),
        name: "镇南五金店".to_owned(),
        id_number: "91110000MA01234567".to_owned(),
    };
    let site =
        Site { name: "五金店".to_owned(), address: "镇南路 8 号".to_owned(), gnss: None };
    let record = InspectionRecord::new(doc_id.to_string(), "M1".to_owned(), party, site, 0);
    create_document(actor, &record, 1_700_000_000_000).expect("creating the record")
}

/// Sets the inspection outcome and commits it as one change.
pub(crate) fn set_outcome(doc: &mut AutoCommit, outcome: &str) {
    set_field(doc, "outcome", outcome).expect("outcome is a text field");
    doc.commit();
}

/// Change chunks as a device puts them on the wire.
pub(crate) fn chunks(changes: &mut [Change]) -> Vec<Vec<u8>> {
    changes.iter_mut().map(|change| change.bytes().into_owned()).collect()
}

/// The upload of a document's changes after `since`.
pub(crate) fn upload(doc_id: DocumentId, doc: &mut AutoCommit, since: &[ChangeHash]) -> DocUpload {
    DocUpload {
        doc_id,
        base_heads: since.iter().map(|hash| hash.0).collect(),
        heads: doc.get_heads().iter().map(|hash| hash.0).collect(),
        changes: chunks(&mut doc.get_changes(since)),
    }
}
