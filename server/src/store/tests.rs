//! Unit tests of the store: the append-only log, document loading and the snapshot policy.

use automerge::{AutoCommit, ChangeHash, ROOT};
use axum::http::StatusCode;
use rusqlite::Connection;
use sync_core::edit::{TextEdit, edit_text};
use sync_core::error::MergeError;
use sync_core::ids::DocumentId;
use sync_core::json::value_json;
use sync_core::merge::parse_changes;

use crate::error::ApiError;
use crate::fixtures::{actor, chunks, doc_id, new_inspection, set_outcome, temp_store};
use crate::store::{
    DocumentUpload, SNAPSHOT_INTERVAL, Store, StoreError, Unchecked, Visibility, changes,
    documents, lock,
};

const NOW: i64 = 1_700_000_000_000;

/// The device's changes after `since`, as the server parses them from the wire.
fn parsed(doc_id: DocumentId, doc: &mut AutoCommit, since: &[ChangeHash]) -> DocumentUpload {
    let wire = chunks(&mut doc.get_changes(since));
    DocumentUpload { doc_id, changes: parse_changes(doc_id, &wire).expect("device changes parse") }
}

/// Uploads everything after `since` and returns the device's heads.
fn sync(
    store: &Store,
    doc_id: DocumentId,
    doc: &mut AutoCommit,
    since: &[ChangeHash],
) -> Vec<ChangeHash> {
    let merged = store
        .merge_uploads(vec![parsed(doc_id, doc, since)], NOW, &Unchecked::default())
        .expect("merge");
    assert_eq!(merged[0].heads, doc.get_heads());
    doc.get_heads()
}

fn snapshot_seq(store: &Store, doc_id: DocumentId) -> i64 {
    store
        .read(|tx| documents::snapshot_seq(tx, doc_id))
        .expect("reading the document row")
        .expect("the document is stored")
}

fn feed_seq_of(store: &Store, hash: ChangeHash) -> i64 {
    store.read(|tx| changes::feed_seq_of(tx, hash)).expect("reading").expect("the change is stored")
}

#[test]
fn the_change_log_refuses_update_and_delete() {
    let (dir, store) = temp_store();
    let id = doc_id(1);
    let mut doc = new_inspection(&actor(1), id);
    sync(&store, id, &mut doc, &[]);

    let connection = Connection::open(dir.path().join(crate::store::DATABASE_FILE)).unwrap();
    let update = connection.execute("UPDATE changes SET seq = seq + 1", []);
    let delete = connection.execute("DELETE FROM changes", []);

    for result in [update, delete] {
        let err = result.expect_err("the change log is append-only");
        assert!(err.to_string().contains("changes is append-only"), "{err}");
    }
    assert_eq!(store.change_rows(), 1);
}

#[test]
fn a_document_reloads_identically_from_its_snapshot_and_later_changes() {
    // Arrange: a snapshot at creation, then three changes after it.
    let (dir, store) = temp_store();
    let id = doc_id(2);
    let mut doc = new_inspection(&actor(1), id);
    let mut heads = sync(&store, id, &mut doc, &[]);
    let creation = heads[0];
    for outcome in ["rectification_order", "case_lead", "referral"] {
        set_outcome(&mut doc, outcome);
        heads = sync(&store, id, &mut doc, &heads);
    }
    assert_eq!(snapshot_seq(&store, id), feed_seq_of(&store, creation));
    drop(store);

    // Act: a cold store loads the document from the file.
    let reopened = Store::open(&dir.path().join(crate::store::DATABASE_FILE)).unwrap();
    let loaded = reopened.document(id).unwrap().expect("the document is stored");

    // Assert
    assert_eq!(loaded.get_heads(), doc.get_heads());
    assert_eq!(value_json(&*loaded, &ROOT), value_json(&doc, &ROOT));
    assert_eq!(loaded.get_changes(&[]).len(), 4);
    assert_eq!(reopened.change_rows(), 4);
}

#[test]
fn a_snapshot_is_written_at_creation_and_once_enough_changes_accumulated() {
    let (_dir, store) = temp_store();
    let id = doc_id(3);
    let mut doc = new_inspection(&actor(1), id);
    let heads = sync(&store, id, &mut doc, &[]);
    let first_snapshot = snapshot_seq(&store, id);
    assert_eq!(first_snapshot, 1);

    // One short of the interval: the snapshot stays.
    for n in 1..SNAPSHOT_INTERVAL {
        set_outcome(&mut doc, &format!("outcome {n}"));
    }
    let heads = sync(&store, id, &mut doc, &heads);
    assert_eq!(snapshot_seq(&store, id), first_snapshot);

    // The change that reaches the interval writes a fresh snapshot covering it.
    set_outcome(&mut doc, "final");
    sync(&store, id, &mut doc, &heads);
    assert_eq!(snapshot_seq(&store, id), feed_seq_of(&store, doc.get_heads()[0]));
    assert_eq!(snapshot_seq(&store, id), 1 + SNAPSHOT_INTERVAL);
}

#[test]
fn a_refused_document_leaves_every_document_of_the_request_unstored() {
    // Arrange: document A is stored; the request edits A and uploads an orphan change for B.
    let (_dir, store) = temp_store();
    let (id_a, id_b) = (doc_id(4), doc_id(5));
    let mut doc_a = new_inspection(&actor(1), id_a);
    let stored_heads = sync(&store, id_a, &mut doc_a, &[]);
    set_outcome(&mut doc_a, "case_lead");
    let mut doc_b = new_inspection(&actor(1), id_b);
    let creation_b = doc_b.get_heads();
    set_outcome(&mut doc_b, "referral");
    let uploads =
        vec![parsed(id_a, &mut doc_a, &stored_heads), parsed(id_b, &mut doc_b, &creation_b)];

    // Act
    let result = store.merge_uploads(uploads, NOW, &Unchecked::default());

    // Assert: nothing written, and A reads (and merges) from its stored state.
    assert!(matches!(result, Err(StoreError::Merge(MergeError::MissingDeps { .. }))));
    assert_eq!(store.change_rows(), 1);
    assert_eq!(store.document(id_a).unwrap().unwrap().get_heads(), stored_heads);
    assert!(store.document(id_b).unwrap().is_none());
    sync(&store, id_a, &mut doc_a, &stored_heads);
    assert_eq!(store.change_rows(), 2);
}

#[test]
fn a_change_already_stored_for_another_document_is_refused() {
    let (_dir, store) = temp_store();
    let mut doc = new_inspection(&actor(1), doc_id(6));
    sync(&store, doc_id(6), &mut doc, &[]);

    let result =
        store.merge_uploads(vec![parsed(doc_id(7), &mut doc, &[])], NOW, &Unchecked::default());

    assert!(matches!(result, Err(StoreError::DuplicateChange { .. })), "{result:?}");
    assert_eq!(store.change_rows(), 1);
    assert!(store.document(doc_id(7)).unwrap().is_none());
}

#[test]
fn an_upload_of_no_changes_for_an_unknown_document_creates_nothing() {
    let (_dir, store) = temp_store();

    let merged = store
        .merge_uploads(
            vec![DocumentUpload { doc_id: doc_id(8), changes: Vec::new() }],
            NOW,
            &Unchecked::default(),
        )
        .unwrap();

    assert_eq!(merged[0].stored, 0);
    assert!(merged[0].heads.is_empty());
    assert!(store.document(doc_id(8)).unwrap().is_none());
    assert!(store.list_documents(&Visibility::All).unwrap().is_empty());
}

#[test]
fn a_full_disk_refuses_the_upload_with_storage_full_and_stores_nothing() {
    // Arrange: the database may not grow, and the record carries 64 KiB of findings that do
    // not compress (SECURITY.md D-3, the max_page_count technique of SQLite's tkt2920.test).
    let (_dir, store) = temp_store();
    let id = doc_id(9);
    let mut doc = new_inspection(&actor(1), id);
    let mut state: u32 = 12_345;
    let findings: String = (0..65_536)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + u8::try_from((state >> 16) % 26).expect("below 26"))
        })
        .collect();
    edit_text(&mut doc, "findings", TextEdit::Append, &findings).unwrap();
    doc.commit();
    let page_count: i64 =
        lock(&store.writer).pragma_query_value(None, "page_count", |row| row.get(0)).unwrap();
    lock(&store.writer).pragma_update(None, "max_page_count", page_count).unwrap();

    // Act
    let result = store.merge_uploads(vec![parsed(id, &mut doc, &[])], NOW, &Unchecked::default());

    // Assert: 507, nothing stored; once space is freed the same upload succeeds.
    let err = ApiError::from(result.expect_err("the database is full"));
    assert_eq!((err.status(), err.code()), (StatusCode::INSUFFICIENT_STORAGE, "storage_full"));
    assert_eq!(store.change_rows(), 0);
    assert!(store.document(id).unwrap().is_none());
    lock(&store.writer).pragma_update(None, "max_page_count", 1_073_741_823).unwrap();
    sync(&store, id, &mut doc, &[]);
    assert_eq!(store.change_rows(), 2);
}
