//! Tests of the replica store: persistence, atomic rounds, actor and blobs.

use automerge::ROOT;
use automerge::transaction::CommitOptions;
use sync_core::edit::{TextEdit, edit_text};
use sync_core::records::{InspectionRecord, Party, Site, create_document};

use super::*;

fn inspection(store: &ReplicaStore, id_byte: u8) -> DeviceDoc {
    let doc_id = DocumentId::from_bytes([id_byte; 16]);
    let party = Party {
        kind: "natural".to_owned(),
        name: "张三".to_owned(),
        id_number: "110101199001011234".to_owned(),
    };
    let site = Site { name: "五金店".to_owned(), address: String::new(), gnss: None };
    let record = InspectionRecord::new(doc_id.to_string(), "M1".to_owned(), party, site, 0);
    let doc = create_document(store.actor(), &record, 0).expect("create");
    DeviceDoc::new(doc_id, doc)
}

fn findings(device_doc: &DeviceDoc) -> String {
    let (_, text_id) =
        automerge::ReadDoc::get(device_doc.doc(), ROOT, "findings").unwrap().unwrap();
    automerge::ReadDoc::text(device_doc.doc(), &text_id).unwrap()
}

#[test]
fn actor_is_stable_across_opens() {
    let home = tempfile::tempdir().unwrap();
    let first = ReplicaStore::open(home.path()).unwrap().actor().clone();
    let second = ReplicaStore::open(home.path()).unwrap().actor().clone();
    assert_eq!(first, second);
    assert_eq!(first.to_bytes().len(), 16);
    let other_home = tempfile::tempdir().unwrap();
    assert_ne!(ReplicaStore::open(other_home.path()).unwrap().actor(), &first);
}

#[test]
fn a_saved_document_loads_with_its_pending_state_and_the_device_actor() {
    let home = tempfile::tempdir().unwrap();
    let store = ReplicaStore::open(home.path()).unwrap();
    let mut device_doc = inspection(&store, 1);
    let doc_id = device_doc.id();
    store.save(&mut device_doc, 5).unwrap();
    drop(store);

    let store = ReplicaStore::open(home.path()).unwrap();
    let mut loaded = store.load(doc_id).unwrap();
    assert!(loaded.has_pending());
    assert_eq!(loaded.heads(), device_doc.heads());
    assert_eq!(loaded.pending().len(), 1);
    assert_eq!(store.load_pending().unwrap().len(), 1);
    let summaries = store.summaries().unwrap();
    assert_eq!(
        summaries,
        vec![DocSummary {
            id: doc_id,
            kind: Some("inspection".to_owned()),
            pending: true,
            updated_at: Some(5),
        }]
    );

    // An edit after loading is written by this device's actor in UTF-8 indices.
    edit_text(loaded.doc_mut(), "findings", TextEdit::Append, "消防通道").unwrap();
    edit_text(loaded.doc_mut(), "findings", TextEdit::Append, " 🚒").unwrap();
    loaded.doc_mut().commit_with(CommitOptions::default().with_time(1));
    assert_eq!(findings(&loaded), "消防通道 🚒");
    assert!(loaded.pending().iter().all(|change| change.actor_id() == store.actor()));
}

#[test]
fn unknown_documents_are_reported_as_such() {
    let home = tempfile::tempdir().unwrap();
    let store = ReplicaStore::open(home.path()).unwrap();
    let doc_id = DocumentId::from_bytes([9; 16]);
    assert!(matches!(store.load(doc_id), Err(StoreError::UnknownDocument(id)) if id == doc_id));
    assert!(store.find(doc_id).unwrap().is_none());
}

#[test]
fn a_round_stores_documents_and_cursor_together() {
    let home = tempfile::tempdir().unwrap();
    let mut store = ReplicaStore::open(home.path()).unwrap();
    let mut kept = inspection(&store, 1);
    let mut evicted = inspection(&store, 2);
    store.save(&mut kept, 1).unwrap();
    store.save(&mut evicted, 1).unwrap();
    assert_eq!(store.cursor().unwrap(), 0);
    assert_eq!(store.last_sync().unwrap(), None);

    store.commit_round([&mut kept], &[evicted.id()], 7, 99).unwrap();

    drop(store);
    let store = ReplicaStore::open(home.path()).unwrap();
    assert_eq!(store.cursor().unwrap(), 7);
    assert_eq!(store.last_sync().unwrap(), Some(99));
    let ids: Vec<_> = store.summaries().unwrap().into_iter().map(|doc| doc.id).collect();
    assert_eq!(ids, vec![kept.id()]);
}

#[test]
fn a_failed_round_stores_neither_documents_nor_cursor() {
    // Arrange: a document with an edit that a round would store, and a fault injected
    // into the cursor write, which comes after the document writes.
    let home = tempfile::tempdir().unwrap();
    let mut store = ReplicaStore::open(home.path()).unwrap();
    let mut device_doc = inspection(&store, 1);
    store.save(&mut device_doc, 1).unwrap();
    edit_text(device_doc.doc_mut(), "findings", TextEdit::Append, "新").unwrap();
    device_doc.doc_mut().commit();
    Connection::open(home.path().join("replica.sqlite"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER fail_cursor BEFORE INSERT ON meta WHEN NEW.key = 'cursor'
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
        )
        .unwrap();

    // Act
    let result = store.commit_round([&mut device_doc], &[], 3, 2);

    // Assert
    assert!(matches!(result, Err(StoreError::Sqlite(_))), "{result:?}");
    assert_eq!(store.cursor().unwrap(), 0);
    let stored = store.load(device_doc.id()).unwrap();
    assert_eq!(findings(&stored), "");
    assert_eq!(store.summaries().unwrap()[0].updated_at, Some(1));
}

#[test]
fn imported_blobs_are_named_by_their_hash_and_pending() {
    let home = tempfile::tempdir().unwrap();
    let store = ReplicaStore::open(home.path()).unwrap();
    let source = home.path().join("photo.jpg");
    fs::write(&source, b"abc").unwrap();

    let blob = store.import_blob(&source).unwrap();
    let again = store.import_blob(&source).unwrap();

    assert_eq!(blob.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(blob.size, 3);
    assert_eq!(again, blob);
    assert_eq!(fs::read(home.path().join("blobs").join(&blob.sha256)).unwrap(), b"abc");
    assert_eq!(store.counts().unwrap().pending_blobs, 1);
    let leftovers = fs::read_dir(home.path().join("blobs")).unwrap().count();
    assert_eq!(leftovers, 1);
    assert!(matches!(
        store.import_blob(&home.path().join("missing.jpg")),
        Err(StoreError::Io { .. })
    ));
}

#[test]
fn an_uploaded_blob_is_no_longer_pending_and_keeps_its_bytes() {
    let home = tempfile::tempdir().unwrap();
    let store = ReplicaStore::open(home.path()).unwrap();
    let first = home.path().join("a.jpg");
    let second = home.path().join("b.jpg");
    fs::write(&first, b"first").unwrap();
    fs::write(&second, b"second").unwrap();
    let first = store.import_blob(&first).unwrap();
    let second = store.import_blob(&second).unwrap();

    assert_eq!(store.pending_blobs().unwrap(), [first.clone(), second.clone()]);
    store.mark_blob_uploaded(&first.sha256).unwrap();

    assert_eq!(store.pending_blobs().unwrap(), [second]);
    assert_eq!(store.counts().unwrap().pending_blobs, 1);
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut store.open_blob(&first.sha256).unwrap().unwrap(), &mut bytes)
        .unwrap();
    assert_eq!(bytes, b"first");
    assert!(store.open_blob(&"0".repeat(64)).unwrap().is_none());
    assert!(store.open_blob("../replica.sqlite").unwrap().is_none());
}

#[test]
fn enrollment_replaces_the_actor_and_stores_identity_and_master_data() {
    let home = tempfile::tempdir().unwrap();
    let mut store = ReplicaStore::open(home.path()).unwrap();
    assert_eq!(store.enrollment().unwrap(), None);
    assert_eq!(store.master_data().unwrap(), None);
    let enrollment = Enrollment {
        device: "dev-1".to_owned(),
        officer: "o-1".to_owned(),
        officer_name: "李明".to_owned(),
        role: "officer".to_owned(),
        township: Some("t-1".to_owned()),
        actor: "0123456789abcdef0123456789abcdef".to_owned(),
        server_key: serde_json::json!({"kty": "OKP"}),
    };
    let master_data = crate::test_server::master_data("o-1", true);

    store.enroll(&enrollment, &master_data, Some("a.b.c")).unwrap();
    let mut device_doc = inspection(&store, 1);
    store.save(&mut device_doc, 1).unwrap();
    drop(store);

    let store = ReplicaStore::open(home.path()).unwrap();
    assert_eq!(store.actor().to_hex_string(), enrollment.actor);
    assert_eq!(store.enrollment().unwrap(), Some(enrollment));
    assert_eq!(store.master_data().unwrap().unwrap().township, "t-1");
    let mut loaded = store.load(device_doc.id()).unwrap();
    assert!(loaded.pending().iter().all(|change| change.actor_id() == store.actor()));
}

#[test]
fn a_refork_stores_the_new_actor_and_keeps_the_refused_changes_append_only() {
    let home = tempfile::tempdir().unwrap();
    let mut store = ReplicaStore::open(home.path()).unwrap();
    let mut device_doc = inspection(&store, 4);
    let doc_id = device_doc.id();
    edit_text(device_doc.doc_mut(), "findings", TextEdit::Append, "恢复后 é").unwrap();
    device_doc.doc_mut().commit();
    let before = device_doc.view().record;
    let new_actor = ActorId::from([9u8; 16]);
    let refused = device_doc.refork(&new_actor).unwrap();
    assert_eq!(refused.len(), 2);
    store
        .store_refork(&new_actor, [(&mut device_doc, refused.as_slice())], "duplicate_seq", 7)
        .unwrap();
    assert_eq!(store.actor(), &new_actor);
    assert_eq!(store.refused_count().unwrap(), 2);
    assert!(store.db.execute("DELETE FROM refused_changes", []).is_err(), "append-only");
    assert!(store.db.execute("UPDATE refused_changes SET reason = 'x'", []).is_err());
    drop(store);

    let store = ReplicaStore::open(home.path()).unwrap();
    assert_eq!(store.actor(), &new_actor, "the new actor survives a reopen");
    assert_eq!(store.refused_count().unwrap(), 2);
    let mut loaded = store.load(doc_id).unwrap();
    assert_eq!(loaded.view().record, before);
    assert!(loaded.pending().iter().all(|change| change.actor_id() == &new_actor));
    let (bytes, reason): (Vec<u8>, String) = store
        .db
        .query_row("SELECT bytes, reason FROM refused_changes ORDER BY rowid LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(Change::try_from(bytes.as_slice()).unwrap().hash(), refused[0].hash());
    assert_eq!(reason, "duplicate_seq");
}

fn number_block(id: &str, doc_type: &str, first: i64, last: i64) -> NumberBlock {
    NumberBlock {
        id: id.to_owned(),
        name_agency: "d-yingji".to_owned(),
        agency_code: "应急".to_owned(),
        doc_type: doc_type.to_owned(),
        year: 2026,
        first,
        last,
        device: "dev-1".to_owned(),
        template: "{代字}罚〔{年}〕{N}号".to_owned(),
    }
}

#[test]
fn a_taken_number_is_stored_before_it_is_used_and_never_handed_out_again() {
    let home = tempfile::tempdir().unwrap();
    {
        let store = ReplicaStore::open(home.path()).unwrap();
        store.store_number_block(&number_block("nb-a", "onsite_decision", 21, 23)).unwrap();
    }
    // A process that takes a number and dies before writing the document it was for.
    {
        let mut store = ReplicaStore::open(home.path()).unwrap();
        let (block, serial) = store.take_number("onsite_decision").unwrap().unwrap();
        assert_eq!((block.id.as_str(), serial), ("nb-a", 21));
    }
    let mut store = ReplicaStore::open(home.path()).unwrap();
    let cursors = store.number_blocks().unwrap();
    assert_eq!((cursors.len(), cursors[0].next, cursors[0].remaining()), (1, 22, 2));
    let serials: Vec<Option<i64>> = (0..3)
        .map(|_| store.take_number("onsite_decision").unwrap().map(|(_, serial)| serial))
        .collect();
    assert_eq!(serials, vec![Some(22), Some(23), None]);
}

#[test]
fn numbers_come_from_the_oldest_block_of_the_type_with_numbers_left() {
    let home = tempfile::tempdir().unwrap();
    let mut store = ReplicaStore::open(home.path()).unwrap();
    assert_eq!(store.take_number("onsite_decision").unwrap(), None);
    store.store_number_block(&number_block("nb-a", "onsite_decision", 1, 1)).unwrap();
    store.store_number_block(&number_block("nb-n", "notice", 1, 5)).unwrap();
    store.store_number_block(&number_block("nb-b", "onsite_decision", 41, 42)).unwrap();
    let taken: Vec<(String, i64)> = (0..4)
        .filter_map(|_| store.take_number("onsite_decision").unwrap())
        .map(|(block, serial)| (block.id, serial))
        .collect();
    let expected = [("nb-a", 1), ("nb-b", 41), ("nb-b", 42)];
    assert_eq!(taken, expected.map(|(id, serial)| (id.to_owned(), serial)));
    assert_eq!(store.number_blocks().unwrap()[1].next, 1, "the notice block is untouched");
}
