//! Unit tests of the store: the append-only log, document loading, the snapshot policy, the
//! document quota, group commit and the consistency check.

use std::collections::HashSet;

use automerge::{ActorId, AutoCommit, Automerge, Change, ChangeHash, ROOT};
use axum::http::StatusCode;
use rusqlite::Connection;
use sync_core::edit::{TextEdit, edit_text};
use sync_core::error::MergeError;
use sync_core::ids::DocumentId;
use sync_core::json::value_json;
use sync_core::merge::{ParsedUpload, UploadLimits, parse_changes, parse_upload_within};
use sync_core::records::Record;

use crate::error::ApiError;
use crate::fixtures::{
    actor, chunks, doc_id, document_chunk_upload, new_inspection, set_outcome, temp_store,
};
use crate::store::check::check_database;
use crate::store::{
    Attribution, BYTES_PER_PREMERGED, DATABASE_FILE, DocumentUpload, MAX_DOCUMENT_BYTES,
    OPS_PER_PREMERGED, Places, Premerged, Refusal, SNAPSHOT_INTERVAL, Size, Store, StoreError,
    StoreOptions, StoredScope, Unchecked, UploadPolicy, Visibility, Weight, changes, documents,
    merge_uploads_in, new_to,
};

const NOW: i64 = 1_700_000_000_000;

/// The device's changes after `since`, as the server parses them from the wire.
fn parsed(doc_id: DocumentId, doc: &mut AutoCommit, since: &[ChangeHash]) -> DocumentUpload {
    let wire = chunks(&mut doc.get_changes(since));
    let changes = parse_changes(doc_id, &wire).expect("device changes parse");
    DocumentUpload { doc_id, changes: ParsedUpload::Changes(changes), premerged: None }
}

/// Uploads everything after `since` and returns the device's heads.
fn sync(
    store: &Store,
    doc_id: DocumentId,
    doc: &mut AutoCommit,
    since: &[ChangeHash],
) -> Vec<ChangeHash> {
    let merged = store
        .merge_uploads(vec![parsed(doc_id, doc, since)], NOW, Unchecked::default())
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

    let connection = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
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
    let reopened = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
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
    let result = store.merge_uploads(uploads, NOW, Unchecked::default());

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
        store.merge_uploads(vec![parsed(doc_id(7), &mut doc, &[])], NOW, Unchecked::default());

    assert!(matches!(result, Err(StoreError::DuplicateChange { .. })), "{result:?}");
    assert_eq!(store.change_rows(), 1);
    assert!(store.document(doc_id(7)).unwrap().is_none());
}

#[test]
fn an_upload_of_no_changes_for_an_unknown_document_creates_nothing() {
    let (_dir, store) = temp_store();

    let merged = store
        .merge_uploads(
            vec![DocumentUpload {
                doc_id: doc_id(8),
                changes: ParsedUpload::Changes(Vec::new()),
                premerged: None,
            }],
            NOW,
            Unchecked::default(),
        )
        .unwrap();

    assert_eq!(merged[0].stored, 0);
    assert!(merged[0].heads.is_empty());
    assert!(store.document(doc_id(8)).unwrap().is_none());
    assert!(store.list_documents(&Visibility::All).unwrap().is_empty());
}

#[test]
fn a_full_database_refuses_the_upload_with_storage_full_keeps_reading_and_recovers() {
    // Arrange: a store whose quota is below its current size may not grow, and the record
    // carries 64 KiB of findings that do not compress (SECURITY.md D-3, the max_page_count
    // technique of SQLite's tkt2920.test).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let stored = doc_id(10);
    let mut stored_doc = new_inspection(&actor(1), stored);
    {
        let store = Store::open(&path).unwrap();
        sync(&store, stored, &mut stored_doc, &[]);
    }
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
    let full = Store::open_with(&path, StoreOptions { max_db_size: Some(1) }).unwrap();

    // Act
    let result = full.merge_uploads(vec![parsed(id, &mut doc, &[])], NOW, Unchecked::default());

    // Assert: 507, nothing stored, reads go on; a restart with a larger quota recovers.
    let err = ApiError::from(result.expect_err("the database is full"));
    assert_eq!((err.status(), err.code()), (StatusCode::INSUFFICIENT_STORAGE, "storage_full"));
    assert_eq!(full.change_rows(), 1);
    assert!(full.document(id).unwrap().is_none());
    assert_eq!(full.document(stored).unwrap().unwrap().get_heads(), stored_doc.get_heads());
    drop(full);
    let raised = Store::open_with(&path, StoreOptions { max_db_size: Some(1 << 30) }).unwrap();
    sync(&raised, id, &mut doc, &[]);
    assert_eq!(raised.change_rows(), 3);
}

#[test]
fn an_upload_that_would_pass_the_document_quota_is_refused_and_stores_nothing() {
    // Arrange: a stored document whose change bytes stand just below the quota.
    let (dir, store) = temp_store();
    let id = doc_id(11);
    let mut doc = new_inspection(&actor(1), id);
    let heads = sync(&store, id, &mut doc, &[]);
    let connection = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    connection
        .execute("UPDATE documents SET change_bytes = ?1", [MAX_DOCUMENT_BYTES - 10])
        .unwrap();
    set_outcome(&mut doc, "case_lead");

    // Act
    let result = store.merge_uploads(vec![parsed(id, &mut doc, &heads)], NOW, Unchecked::default());

    // Assert
    let err = result.expect_err("the quota is reached");
    assert!(matches!(err, StoreError::Refused(Refusal::DocumentQuota(_))), "{err:?}");
    let err = ApiError::from(err);
    assert_eq!((err.status(), err.code()), (StatusCode::UNPROCESSABLE_ENTITY, "document_quota"));
    assert_eq!(store.change_rows(), 1);
    assert_eq!(store.document(id).unwrap().unwrap().get_heads(), heads);
}

#[test]
fn stored_change_bytes_are_counted_per_document() {
    let (_dir, store) = temp_store();
    let id = doc_id(12);
    let mut doc = new_inspection(&actor(1), id);
    let heads = sync(&store, id, &mut doc, &[]);
    set_outcome(&mut doc, "referral");
    sync(&store, id, &mut doc, &heads);

    let counted = store.read(|tx| documents::change_bytes(tx, id)).unwrap();

    let stored: usize = doc.get_changes(&[]).iter_mut().map(|change| change.bytes().len()).sum();
    assert_eq!(counted, i64::try_from(stored).unwrap());
}

/// Queues a job that holds the writer until the returned sender is sent to, so that the jobs
/// queued meanwhile wait behind it; the receiver gets that job's answer.
fn hold_writer(
    store: &Store,
) -> (std::sync::mpsc::Sender<()>, tokio::sync::oneshot::Receiver<Result<(), StoreError>>) {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let held = store
        .enqueue(Weight::Light, move |_| {
            gate.recv().expect("the test releases the writer");
            Ok(())
        })
        .unwrap();
    (release, held)
}

#[test]
fn concurrent_uploads_commit_as_one_group_and_a_failing_job_leaves_the_others_stored() {
    // Arrange: a job holds the writer until five uploads (one of them an orphan change) wait
    // behind it, so that the writer drains them into one group.
    let (_dir, store) = temp_store();
    let (release, held) = hold_writer(&store);
    let mut waiting = Vec::new();
    let mut expected_heads = Vec::new();
    for byte in 20..24 {
        let id = doc_id(byte);
        let mut doc = new_inspection(&actor(byte), id);
        set_outcome(&mut doc, "referral");
        let upload = parsed(id, &mut doc, &[]);
        expected_heads.push((id, doc.get_heads()));
        waiting.push(
            store
                .enqueue(Weight::Light, move |context| {
                    merge_uploads_in(context, vec![upload], NOW, &Unchecked::default())
                })
                .unwrap(),
        );
    }
    let orphan_id = doc_id(30);
    let mut orphan = new_inspection(&actor(30), orphan_id);
    let creation = orphan.get_heads();
    set_outcome(&mut orphan, "referral");
    let orphan_upload = parsed(orphan_id, &mut orphan, &creation);
    let failing = store
        .enqueue(Weight::Light, move |context| {
            merge_uploads_in(context, vec![orphan_upload], NOW, &Unchecked::default())
        })
        .unwrap();

    // Act
    release.send(()).unwrap();

    // Assert: every good upload is acknowledged with its heads and stored; the orphan alone
    // is refused.
    held.blocking_recv().unwrap().unwrap();
    for (answer, (id, heads)) in waiting.into_iter().zip(expected_heads) {
        let merged = answer.blocking_recv().unwrap().expect("a good upload is acknowledged");
        assert_eq!((merged[0].doc_id, &merged[0].heads, merged[0].stored), (id, &heads, 2));
        assert_eq!(store.document(id).unwrap().expect("stored").get_heads(), heads);
    }
    let refused = failing.blocking_recv().unwrap().expect_err("the orphan is refused");
    assert!(matches!(refused, StoreError::Merge(MergeError::MissingDeps { .. })), "{refused:?}");
    assert!(store.document(orphan_id).unwrap().is_none());
    assert_eq!(store.change_rows(), 8);
}

#[test]
fn a_failing_job_without_a_savepoint_undoes_only_itself_whatever_the_weights() {
    // Arrange: behind a held job wait, in order, a merge sent alone (first of its
    // transaction, so without a savepoint) that fails after writing, two good light merges, a
    // good merge sent alone (it starts a transaction of its own), a failing light merge
    // (inside a savepoint, after a job sent alone) and a last good light merge.
    let (_dir, store) = temp_store();
    let (release, held) = hold_writer(&store);
    let orphan = |byte| {
        let id = doc_id(byte);
        let mut doc = new_inspection(&actor(byte), id);
        let creation = doc.get_heads();
        set_outcome(&mut doc, "referral");
        (id, parsed(id, &mut doc, &creation))
    };
    let good = |byte| {
        let id = doc_id(byte);
        let mut doc = new_inspection(&actor(byte), id);
        set_outcome(&mut doc, "referral");
        let upload = parsed(id, &mut doc, &[]);
        (id, doc.get_heads(), upload)
    };
    let merge = |weight, upload| {
        store
            .enqueue(weight, move |context| {
                merge_uploads_in(context, vec![upload], NOW, &Unchecked::default())
            })
            .unwrap()
    };
    // The first fails after writing: a good merge, then an error.
    let (first_failed, _, first_upload) = good(40);
    let failing_first = store
        .enqueue(Weight::Alone, move |context| {
            merge_uploads_in(context, vec![first_upload], NOW, &Unchecked::default())?;
            Err::<(), _>(StoreError::JobPanicked)
        })
        .unwrap();
    let mut waiting = Vec::new();
    for (byte, weight) in [(41, Weight::Light), (42, Weight::Light), (43, Weight::Alone)] {
        let (id, heads, upload) = good(byte);
        waiting.push((id, heads, merge(weight, upload)));
    }
    let (second_orphan, second_upload) = orphan(44);
    let failing_later = merge(Weight::Light, second_upload);
    let (id, heads, upload) = good(45);
    waiting.push((id, heads, merge(Weight::Light, upload)));

    // Act
    release.send(()).unwrap();

    // Assert: every good merge is stored; each orphan alone is refused.
    held.blocking_recv().unwrap().unwrap();
    let failed = failing_first.blocking_recv().unwrap().expect_err("the first job failed");
    assert!(matches!(failed, StoreError::JobPanicked), "{failed:?}");
    let refused = failing_later.blocking_recv().unwrap().expect_err("the orphan is refused");
    assert!(matches!(refused, StoreError::Merge(MergeError::MissingDeps { .. })));
    for (id, heads, answer) in waiting {
        answer.blocking_recv().unwrap().expect("a good upload is acknowledged");
        assert_eq!(store.document(id).unwrap().expect("stored").get_heads(), heads);
    }
    for id in [first_failed, second_orphan] {
        assert!(store.document(id).unwrap().is_none());
    }
    assert_eq!(store.change_rows(), 8);
}

#[test]
fn a_panicking_job_answers_an_error_and_the_writer_goes_on() {
    let (_dir, store) = temp_store();

    let result = store.write_job(|_| -> Result<(), StoreError> { panic!("a bug in a job") });
    let id = doc_id(13);
    let mut doc = new_inspection(&actor(1), id);
    sync(&store, id, &mut doc, &[]);

    let err = ApiError::from(result.expect_err("the job panicked"));
    assert_eq!((err.status(), err.code()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    assert_eq!(store.change_rows(), 1);
}

#[test]
fn the_check_passes_on_a_healthy_store_and_reports_tampered_heads_and_snapshots() {
    // Arrange: two documents with a snapshot at creation and later changes.
    let (dir, store) = temp_store();
    let path = dir.path().join(DATABASE_FILE);
    let (id_a, id_b) = (doc_id(14), doc_id(15));
    for (id, byte) in [(id_a, 1), (id_b, 2)] {
        let mut doc = new_inspection(&actor(byte), id);
        let heads = sync(&store, id, &mut doc, &[]);
        set_outcome(&mut doc, "referral");
        sync(&store, id, &mut doc, &heads);
    }
    drop(store);
    let healthy = check_database(&path).unwrap();

    // Act: tamper with A's heads and with B's snapshot, which then claims to cover B's
    // last change.
    let connection = Connection::open(&path).unwrap();
    connection
        .execute("UPDATE documents SET heads = zeroblob(32) WHERE id = ?1", [id_a.as_bytes()])
        .unwrap();
    connection
        .execute(
            "UPDATE documents SET snapshot_seq = (SELECT MAX(feed_seq) FROM changes) \
             WHERE id = ?1",
            [id_b.as_bytes()],
        )
        .unwrap();
    drop(connection);
    let tampered = check_database(&path).unwrap();

    // Assert
    assert!(healthy.passed(), "{healthy:?}");
    assert_eq!((healthy.integrity.as_str(), healthy.documents, healthy.changes), ("ok", 2, 4));
    assert!(!tampered.passed());
    let problems: Vec<(String, &str)> = tampered
        .mismatches
        .iter()
        .map(|mismatch| (mismatch.doc.clone(), mismatch.problem.as_str()))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, id_a.to_string());
    assert!(problems[0].1.contains("documents.heads"), "{problems:?}");
    assert_eq!(problems[1].0, id_b.to_string());
    assert!(problems[1].1.contains("snapshot"), "{problems:?}");
}

#[test]
fn the_check_runs_beside_an_open_store() {
    let (dir, store) = temp_store();
    let id = doc_id(16);
    let mut doc = new_inspection(&actor(1), id);
    sync(&store, id, &mut doc, &[]);

    let report = check_database(&dir.path().join(DATABASE_FILE)).unwrap();

    assert!(report.passed(), "{report:?}");
    assert_eq!((report.documents, report.changes), (1, 1));
}

#[test]
fn a_database_locked_from_outside_answers_busy_with_retry_after_and_stores_nothing() {
    // Arrange: another process holds the write lock (B-43).
    let (dir, store) = temp_store();
    let outsider = Connection::open(dir.path().join(DATABASE_FILE)).expect("a second connection");
    outsider.execute_batch("BEGIN IMMEDIATE").expect("taking the write lock");
    let id = doc_id(3);
    let mut doc = new_inspection(&actor(3), id);

    // Act
    let refused = store
        .merge_uploads(vec![parsed(id, &mut doc, &[])], NOW, Unchecked::default())
        .expect_err("the database is locked");
    outsider.execute_batch("ROLLBACK").expect("releasing the lock");

    // Assert: 503 busy with Retry-After, nothing stored, and the next attempt succeeds.
    let response = axum::response::IntoResponse::into_response(ApiError::from(refused));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
    assert!(store.read(|tx| documents::stored_scope(tx, id)).expect("reading").is_none());
    sync(&store, id, &mut doc, &[]);
}

#[test]
fn eviction_reads_held_documents_only_after_the_visibility_changed() {
    use crate::store::device_documents::{all_visible, evict, record};
    let (_dir, store) = temp_store();
    let id = doc_id(40);
    let mut doc = new_inspection(&actor(40), id);
    sync(&store, id, &mut doc, &[]);
    let township = store
        .read(|tx| documents::stored_scope(tx, id))
        .expect("read")
        .and_then(|scope| scope.township)
        .expect("the record has a township");
    let evictions = store
        .write(move |connection| {
            let home = Some(township.as_str());
            record(connection, "d-1", [id], false, home)?;
            let unmarked = all_visible(connection, "d-1", false, home)?;
            let at_home = evict(connection, "d-1", false, home)?;
            let marked = all_visible(connection, "d-1", false, home)?;
            // The officer moved: the held record is evicted once, and the new visibility marked.
            let moved = evict(connection, "d-1", false, Some("elsewhere"))?;
            let again = evict(connection, "d-1", false, Some("elsewhere"))?;
            let marked_elsewhere = all_visible(connection, "d-1", false, Some("elsewhere"))?;
            // A record delivered under another visibility than the mark's removes the mark.
            record(connection, "d-1", [id], false, home)?;
            let still_marked = all_visible(connection, "d-1", false, Some("elsewhere"))?;
            Ok((unmarked, at_home, marked, moved, again, marked_elsewhere, still_marked))
        })
        .expect("write");
    assert_eq!(evictions, (false, vec![], true, vec![id], vec![], true, false));
}

#[test]
fn a_feed_page_read_again_from_its_bounds_is_the_same_after_later_commits() {
    use crate::store::idempotency::FeedBounds;
    let (_dir, store) = temp_store();
    let (first, second) = (doc_id(41), doc_id(42));
    let mut doc = new_inspection(&actor(41), first);
    sync(&store, first, &mut doc, &[]);
    let bounds = FeedBounds {
        cursor: 0,
        last_feed_seq: store.read(|tx| changes::last_feed_seq(tx)).expect("read"),
        all: true,
        township: None,
        skip: Vec::new(),
        whole_documents: true,
    };
    let page = |bounds: &FeedBounds| {
        let bounds = bounds.clone();
        store.read(move |tx| bounds.read(tx, 8 << 20)).expect("read")
    };
    let before = page(&bounds);

    let mut other = new_inspection(&actor(42), second);
    sync(&store, second, &mut other, &[]);

    assert_eq!(page(&bounds), before);
    assert!(before.updates.iter().all(|update| update.doc_id == first));
    let now = store
        .read(|tx| changes::feed_after(tx, 0, &HashSet::new(), 8 << 20, true, None, true))
        .expect("read");
    assert!(now.updates.iter().any(|update| update.doc_id == second));
}

#[test]
fn a_created_document_is_fed_whole_from_before_its_first_change_and_by_change_after() {
    // Arrange: a document created by one upload, then edited by another.
    let (_dir, store) = temp_store();
    let id = doc_id(43);
    let mut doc = new_inspection(&actor(43), id);
    set_outcome(&mut doc, "referral");
    let created = sync(&store, id, &mut doc, &[]);
    let creation: Vec<ChangeHash> =
        doc.get_changes(&[]).iter().map(|change| change.hash()).collect();
    set_outcome(&mut doc, "case_lead");
    sync(&store, id, &mut doc, &created);
    let mut edit = doc.get_changes(&created)[0].clone();
    let feed = |cursor: u64, skip: HashSet<ChangeHash>, budget: usize| {
        store
            .read(move |tx| changes::feed_after(tx, cursor, &skip, budget, true, None, true))
            .expect("read")
    };
    let is_document = |chunk: &Vec<u8>| chunk[8] == 0;

    // Act
    let everything = feed(0, HashSet::new(), 8 << 20);
    let after_first = feed(1, HashSet::new(), 8 << 20);
    let own_round = feed(0, creation.iter().copied().collect(), 8 << 20);
    let tight = feed(0, HashSet::new(), 1);

    // Assert: from before its first change, the document as created, then the edit.
    let sent = &everything.updates[0].changes;
    assert_eq!(creation.len(), 2);
    assert_eq!(sent.len(), 2);
    let mut whole = AutoCommit::load(&sent[0]).expect("a saved document");
    assert_eq!(whole.get_heads(), created);
    assert_eq!(sent[1], edit.bytes().into_owned());
    // From after its first change, change by change.
    let sent = &after_first.updates[0].changes;
    assert_eq!(sent.len(), 2);
    assert!(!sent.iter().any(is_document));
    // Not sent back to the round that uploaded it.
    assert_eq!(own_round.updates[0].changes, vec![edit.bytes().into_owned()]);
    // A page always holds something: the whole document alone, past a budget of one byte,
    // and the next page starts after every change it holds.
    assert_eq!(tight.updates[0].changes.len(), 1);
    assert!(is_document(&tight.updates[0].changes[0]));
    assert_eq!((tight.cursor, tight.more), (2, true));
}

/// A new document's upload as a device sends it: one uncompressed document chunk, premerged as
/// a sync premerges it.
fn whole(doc_id: DocumentId, doc: &mut AutoCommit) -> DocumentUpload {
    let upload = document_chunk_upload(doc_id, doc);
    let limits = UploadLimits::default();
    let (mut budget, mut allowance) = (limits.max_inflated_bytes, usize::MAX);
    let changes = parse_upload_within(&upload, limits, &mut budget, &mut allowance)
        .expect("the document chunk parses");
    let premerged = Premerged::of(doc_id, &changes);
    assert!(premerged.is_some(), "a new document premerges");
    DocumentUpload { doc_id, changes, premerged }
}

#[test]
fn a_document_chunk_is_logged_by_its_creation_and_reloads_checks_and_feeds_whole() {
    // Arrange: a record of two changes uploaded as one document chunk, then edited.
    let (dir, store) = temp_store();
    let id = doc_id(44);
    let mut doc = new_inspection(&actor(44), id);
    set_outcome(&mut doc, "referral");
    let created = doc.get_heads();
    let merged = store.merge_uploads(vec![whole(id, &mut doc)], NOW, Unchecked::default()).unwrap();
    assert_eq!((merged[0].stored, merged[0].heads.clone()), (2, created.clone()));
    set_outcome(&mut doc, "case_lead");
    sync(&store, id, &mut doc, &created);

    // Act
    let logged: Vec<i64> = store
        .read(|tx| {
            let mut statement = tx
                .prepare("SELECT length(bytes) FROM changes WHERE doc_id = ?1 ORDER BY feed_seq")?;
            let rows = statement.query_map([id.as_bytes()], |row| row.get(0))?;
            Ok(rows.collect::<Result<Vec<i64>, _>>()?)
        })
        .unwrap();
    let inside = store
        .read(|tx| changes::feed_after(tx, 1, &HashSet::new(), 8 << 20, true, None, true))
        .unwrap();
    let (counted, creation) = store
        .read(|tx| {
            let creation: i64 = tx.query_row(
                "SELECT length(bytes) FROM creations WHERE doc_id = ?1",
                [id.as_bytes()],
                |row| row.get(0),
            )?;
            Ok((documents::change_bytes(tx, id)?, creation))
        })
        .unwrap();
    drop(store);
    let reopened = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
    let report = check_database(&dir.path().join(DATABASE_FILE)).unwrap();

    // Assert: the chunk's changes are logged without bytes, which its creation holds.
    assert_eq!(logged.len(), 3);
    assert_eq!(&logged[..2], [0, 0]);
    assert!(logged[2] > 0);
    // Its quota counts the creation for them.
    assert_eq!(counted, creation + logged[2]);
    // A cursor inside the creation still gets the document whole, then the edit.
    let sent = &inside.updates[0].changes;
    assert_eq!(sent.len(), 2);
    assert_eq!(AutoCommit::load(&sent[0]).unwrap().get_heads(), created);
    // The document reloads from its snapshot and later change, and checks against the log.
    assert_eq!(reopened.document(id).unwrap().unwrap().get_heads(), doc.get_heads());
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.changes, 3);
}

#[test]
fn a_document_chunk_for_a_stored_document_is_merged_change_by_change() {
    // Arrange: the record is stored; its device uploads it whole again (a lost answer).
    let (_dir, store) = temp_store();
    let id = doc_id(45);
    let mut doc = new_inspection(&actor(45), id);
    set_outcome(&mut doc, "referral");
    store.merge_uploads(vec![whole(id, &mut doc)], NOW, Unchecked::default()).unwrap();

    // Act
    let again = store.merge_uploads(vec![whole(id, &mut doc)], NOW, Unchecked::default()).unwrap();

    // Assert: nothing new, nothing logged twice.
    assert_eq!((again[0].stored, again[0].heads.clone()), (0, doc.get_heads()));
    assert_eq!(store.read(|tx| changes::count(tx)).unwrap(), 2);
}

/// The device's changes after `since`, premerged onto the stored document as a sync
/// premerges them.
fn premerged(
    store: &Store,
    doc_id: DocumentId,
    doc: &mut AutoCommit,
    since: &[ChangeHash],
) -> DocumentUpload {
    let mut upload = parsed(doc_id, doc, since);
    upload.premerged = store.premerge_stored(&upload, &Unchecked::default());
    assert!(upload.premerged.is_some(), "a stored document's new changes premerge");
    upload
}

#[test]
fn a_stored_documents_upload_premerged_onto_its_state_is_written_as_the_writer_merges() {
    // Arrange: a stored record, edited on its device and merged onto its stored state ahead
    // of the writer, up to a fresh snapshot; a second store merges the same edits on its
    // writer.
    let (dir, store) = temp_store();
    let (_writer_dir, writer_merged) = temp_store();
    let id = doc_id(46);
    let mut doc = new_inspection(&actor(46), id);
    let created = sync(&store, id, &mut doc, &[]);
    sync(&writer_merged, id, &mut doc, &[]);
    for n in 0..SNAPSHOT_INTERVAL {
        set_outcome(&mut doc, &format!("outcome {n}"));
    }
    let upload = premerged(&store, id, &mut doc, &created);

    // Act
    let merged = store.merge_uploads(vec![upload], NOW, Unchecked::default()).unwrap();

    // Assert: the writer took the premerge, and stored what its own merge stores; the
    // document reads back the same from the snapshot the premerge wrote, after a restart.
    assert!(merged[0].premerged);
    let stored = usize::try_from(SNAPSHOT_INTERVAL).unwrap();
    assert_eq!((merged[0].stored, merged[0].heads.clone()), (stored, doc.get_heads()));
    sync(&writer_merged, id, &mut doc, &created);
    assert_eq!(
        store.list_documents(&Visibility::All).unwrap(),
        writer_merged.list_documents(&Visibility::All).unwrap()
    );
    assert_eq!(snapshot_seq(&store, id), 1 + SNAPSHOT_INTERVAL);
    drop(store);
    let reopened = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
    let loaded = reopened.document(id).unwrap().unwrap();
    assert_eq!(value_json(&*loaded, &ROOT), value_json(&doc, &ROOT));
    assert_eq!(reopened.change_rows(), 1 + SNAPSHOT_INTERVAL);
    assert!(check_database(&dir.path().join(DATABASE_FILE)).unwrap().passed());
}

#[test]
fn a_premerge_from_a_state_the_store_has_left_is_not_taken() {
    // Arrange: two devices hold the record. The first one's edit is premerged onto the stored
    // state; the second one's concurrent edit is merged before it reaches the writer.
    let (_dir, store) = temp_store();
    let id = doc_id(47);
    let mut first = new_inspection(&actor(47), id);
    let created = sync(&store, id, &mut first, &[]);
    let mut second = first.fork().with_actor(actor(48));
    set_outcome(&mut first, "referral");
    let stale = premerged(&store, id, &mut first, &created);
    set_outcome(&mut second, "case_lead");
    sync(&store, id, &mut second, &created);

    // Act
    let merged = store.merge_uploads(vec![stale], NOW, Unchecked::default()).unwrap();

    // Assert: the writer merged the edit onto the state it found, keeping both edits.
    first.merge(&mut second).unwrap();
    assert!(!merged[0].premerged);
    assert_eq!((merged[0].stored, merged[0].heads.clone()), (1, first.get_heads()));
    let stored = store.document(id).unwrap().unwrap();
    assert_eq!(value_json(&*stored, &ROOT), value_json(&first, &ROOT));
    assert_eq!(store.read(|tx| documents::heads(tx, id)).unwrap(), first.get_heads());
}

#[test]
fn only_new_changes_whose_dependencies_are_known_are_premerged() {
    // Arrange: a record with two edits; the store holds it up to the first, or only created.
    let mut doc = new_inspection(&actor(50), doc_id(50));
    let created = doc.get_heads();
    set_outcome(&mut doc, "referral");
    let first_edit = doc.get_heads();
    let stored = Automerge::load(&doc.save()).unwrap();
    let created_only = stored.fork_at(&created).unwrap();
    set_outcome(&mut doc, "case_lead");
    let every_change = doc.get_changes(&[]);
    let second_edit = doc.get_changes(&first_edit);
    let hashes = |changes: &[Change]| changes.iter().map(Change::hash).collect::<Vec<_>>();

    // Act
    let replay = new_to(&stored, &every_change[..2]);
    let gap = new_to(&created_only, &second_edit);
    let resent = new_to(&stored, &every_change);

    // Assert
    assert!(replay.is_none(), "nothing new");
    assert!(gap.is_none(), "the first edit is neither stored nor uploaded");
    assert_eq!(resent.as_deref().map(hashes), Some(hashes(&second_edit)));
}

/// Refuses what it is told to, as the sync policy refuses a document of another township or a
/// change by an actor the device does not own.
struct Refusing {
    existing: bool,
    actors: bool,
}

impl UploadPolicy for Refusing {
    fn attribution(&self) -> &Attribution {
        static NONE: Attribution = Attribution { device: None, officer: None, certificate: None };
        &NONE
    }
    fn check_existing(&self, doc_id: DocumentId, _: &StoredScope) -> Result<(), Refusal> {
        match self.existing {
            true => Err(Refusal::OutOfScope(format!("document {doc_id} is elsewhere"))),
            false => Ok(()),
        }
    }
    fn check_created(&self, _: DocumentId, _: Result<&Record, &str>) -> Result<(), Refusal> {
        Ok(())
    }
    fn check_actor(&self, actor: &ActorId) -> Result<(), Refusal> {
        match self.actors {
            true => Err(Refusal::ForeignActor(format!("actor {actor} is not this device's"))),
            false => Ok(()),
        }
    }
}

#[test]
fn a_stored_document_is_premerged_only_for_a_caller_who_may_change_it_by_its_actors() {
    // Arrange
    let (_dir, store) = temp_store();
    let id = doc_id(49);
    let mut doc = new_inspection(&actor(49), id);
    let created = sync(&store, id, &mut doc, &[]);
    set_outcome(&mut doc, "referral");
    let upload = parsed(id, &mut doc, &created);

    // Act
    let elsewhere = store.premerge_stored(&upload, &Refusing { existing: true, actors: false });
    let foreign = store.premerge_stored(&upload, &Refusing { existing: false, actors: true });
    let allowed = store.premerge_stored(&upload, &Refusing { existing: false, actors: false });

    // Assert
    assert!(elsewhere.is_none());
    assert!(foreign.is_none());
    assert!(allowed.is_some());
}

#[test]
fn premerge_places_are_taken_by_operations_and_bytes_and_given_back() {
    static PLACES: Places = Places::new(4);
    let one = Size { ops: 1, bytes: 1 };
    let by_ops = Size { ops: 2 * OPS_PER_PREMERGED + 1, bytes: 0 };
    let by_bytes = Size { ops: 1, bytes: BYTES_PER_PREMERGED + 1 };

    let three = PLACES.take(by_ops).expect("three of four places are free");
    let refused = PLACES.take(by_bytes);
    let last = PLACES.take(one).expect("the fourth place is free");
    let full = PLACES.take(one);
    drop(three);
    let again = PLACES.take(by_bytes);

    assert_eq!((by_ops.places(), by_bytes.places(), one.places()), (3, 2, 1));
    assert!(refused.is_none(), "two places wanted, one free");
    assert!(full.is_none(), "every place taken");
    assert!(again.is_some(), "places given back when dropped");
    drop(last);
}
