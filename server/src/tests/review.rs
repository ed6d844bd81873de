//! In-process tests of the supervisor review (docs/review.md): the queue and its filters,
//! resolving a conflict with a server-authored change, returning a record with a comment that
//! reaches the device through the feed, approving it, sealing it (`record_locked` into
//! quarantine), sealing a signed inspection the same way, granting a filing request, the
//! history's diff of each change, and the role check.

use std::collections::BTreeMap;

use automerge::transaction::Transactable as _;
use automerge::{ActorId, AutoCommit, Change, ObjType, ROOT, ReadDoc};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::protocol::{DocOutcome, SyncResponse};
use sync_core::records::{CaseFile, Party, Procedure, SERVER_ACTOR, create_document};
use sync_core::replica::changes_in;

use crate::fixtures::{doc_id, upload};
use crate::tests::{CHENGGUAN, Client, ENTRUSTED, TestApi, chengguan_inspection, request_for};

/// Sets a field on a device's copy and commits it as one change.
fn edit(doc: &mut AutoCommit, path: &str, value: &str) {
    set_field(doc, path, value).expect("a field of the record");
    doc.commit();
}

/// Applies the feed of an answer to a device's copy of one document.
fn apply_feed(doc: &mut AutoCommit, response: &SyncResponse, id: DocumentId) -> Vec<Change> {
    let received: Vec<Change> = changes_in(
        response
            .updates
            .iter()
            .filter(|update| update.doc_id == id)
            .flat_map(|update| update.changes.iter()),
    )
    .expect("chunks");
    doc.apply_changes(received.clone()).expect("applying the feed");
    received
}

async fn queue(api: &TestApi, supervisor: &Client, query: &str) -> Vec<Value> {
    let response = api.get(supervisor, &format!("/v1/review/queue{query}")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.json());
    response.json().as_array().expect("a list").clone()
}

async fn review(
    api: &TestApi,
    supervisor: &Client,
    id: DocumentId,
    action: &str,
    body: &Value,
) -> Value {
    let response = api.post_json(supervisor, &format!("/v1/review/{id}/{action}"), body).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.json());
    response.json()
}

fn server_hex() -> String {
    ActorId::from(SERVER_ACTOR).to_hex_string()
}

#[tokio::test]
async fn a_conflict_is_queued_resolved_by_a_server_change_and_reaches_the_devices() {
    // Arrange: two officers edit the site's name concurrently.
    let api = TestApi::new();
    let officer_a = api.login("o-1").await;
    let officer_b = api.login("o-2").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(40);
    let mut device_a = chengguan_inspection(&officer_a, id);
    let created = device_a.get_heads();
    let mut device_b = device_a.fork().with_actor(officer_b.actor.clone());
    api.sync(&officer_a, &request_for(0, vec![upload(id, &mut device_a, &[])])).await;
    edit(&mut device_a, "site.name", "五金店 (A)");
    edit(&mut device_b, "site.name", "五金店 (B)");
    let (a_edit, b_edit) = (device_a.get_heads()[0], device_b.get_heads()[0]);
    api.sync(&officer_a, &request_for(0, vec![upload(id, &mut device_a, &created)])).await;
    let b_round =
        api.sync(&officer_b, &request_for(0, vec![upload(id, &mut device_b, &created)])).await;
    apply_feed(&mut device_b, &b_round, id);

    // Act 1: the queue shows the conflict.
    let conflicted = queue(&api, &supervisor, "?conflicts=true").await;
    assert_eq!(conflicted.len(), 1, "{conflicted:?}");
    assert_eq!(conflicted[0]["id"], id.to_string());
    assert_eq!(conflicted[0]["conflicts"], 1);
    assert_eq!(conflicted[0]["review_state"], "pending");
    let shown = api.get(&supervisor, &format!("/v1/review/{id}")).await.json();
    let values = shown["conflicts"][0]["values"].as_array().unwrap().clone();
    let mut officers: Vec<_> = values.iter().map(|value| value["officer"].clone()).collect();
    officers.sort_by_key(ToString::to_string);
    assert_eq!(officers, [json!("o-1"), json!("o-2")]);
    assert!(values.iter().all(|value| value["device"].is_string()), "{values:?}");
    // Each value carries the device time of the change that wrote it and that change's
    // server receipt time from the history.
    let history = shown["history"].as_array().unwrap();
    for (device, edit) in [(&device_a, a_edit), (&device_b, b_edit)] {
        let actor = device.get_actor().to_hex_string();
        let value = values.iter().find(|value| value["actor"] == actor).expect("a value");
        let change = device.get_change_by_hash(&edit).expect("the edit");
        assert_eq!(value["device_time"], change.timestamp() * 1000, "{value:?}");
        let entry = history.iter().find(|entry| entry["hash"] == edit.to_string()).unwrap();
        assert!(value["received_at"].is_i64(), "{value:?}");
        assert_eq!(value["received_at"], entry["received_at"], "{value:?}");
    }

    // Act 2: the supervisor resolves it.
    let view =
        review(&api, &supervisor, id, "resolve", &json!({"path": "site.name", "value": "五金店"}))
            .await;

    // Assert: no conflict left, the resolution is a server change attributed to the supervisor,
    // and it reaches a device through the feed.
    assert_eq!(view["conflicts"], json!([]));
    assert_eq!(view["record"]["site"]["name"], "五金店");
    let last = view["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], server_hex());
    assert_eq!(last["officer"], "s-1");
    assert_eq!(last["device"], Value::Null);
    assert_eq!(last["message"], "resolve site.name");
    assert!(queue(&api, &supervisor, "?conflicts=true").await.is_empty());
    let pulled = api.sync(&officer_b, &request_for(b_round.cursor, Vec::new())).await;
    let received = apply_feed(&mut device_b, &pulled, id);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].actor_id().to_bytes(), SERVER_ACTOR);
    let (name, _) =
        device_b.get(device_b.get(ROOT, "site").unwrap().unwrap().1, "name").unwrap().unwrap();
    assert_eq!(name.as_str(), Some("五金店"));
}

#[tokio::test]
async fn a_returned_record_carries_the_comment_comes_back_changed_and_is_approved() {
    // Arrange
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(41);
    let mut device = chengguan_inspection(&officer, id);
    let first = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;

    // Act 1: returned with a comment, which reaches the device.
    let view = review(&api, &supervisor, id, "return", &json!({"comment": "补充现场照片"})).await;
    assert_eq!(view["review"]["state"], "returned");
    assert_eq!(view["review"]["comments"][0]["text"], "补充现场照片");
    assert_eq!(view["review"]["comments"][0]["by"], "s-1");
    let pulled = api.sync(&officer, &request_for(first.cursor, Vec::new())).await;
    apply_feed(&mut device, &pulled, id);
    let device_view = sync_core::view::DocumentView::build(id, &device.get_heads(), &device);
    assert_eq!(device_view.record["review"]["state"], "returned");
    assert_eq!(device_view.record["review"]["comments"][0]["text"], "补充现场照片");
    let returned = queue(&api, &supervisor, "?state=returned").await;
    assert_eq!((returned.len(), &returned[0]["resubmitted"]), (1, &json!(false)));

    // Act 2: the officer fixes it and syncs.
    let before = device.get_heads();
    edit(&mut device, "outcome", "rectification_order");
    api.sync(&officer, &request_for(pulled.cursor, vec![upload(id, &mut device, &before)])).await;

    // Assert: back in the queue, marked resubmitted; then approved.
    let resubmitted = queue(&api, &supervisor, "?resubmitted=true").await;
    assert_eq!(resubmitted.len(), 1, "{resubmitted:?}");
    assert_eq!(resubmitted[0]["review_state"], "returned");
    let approved = review(&api, &supervisor, id, "approve", &json!({})).await;
    assert_eq!(approved["review"]["state"], "approved");
    assert_eq!(approved["review"]["heads"].as_array().unwrap().len(), 1);
    let listed = queue(&api, &supervisor, "?state=approved").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["changed_since_approval"], false);
    assert!(queue(&api, &supervisor, "?changed_since_approval=true").await.is_empty());
}

#[tokio::test]
async fn an_edit_to_an_approved_record_is_quarantined_as_record_locked() {
    // Arrange: an approved record.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(42);
    let mut device = chengguan_inspection(&officer, id);
    let created = device.get_heads();
    let first = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;
    review(&api, &supervisor, id, "approve", &json!({})).await;
    let rows_before = api.change_rows();

    // Act: the device edits offline and syncs.
    edit(&mut device, "outcome", "case_lead");
    let answer = api
        .sync(&officer, &request_for(first.cursor, vec![upload(id, &mut device, &created)]))
        .await;

    // Assert
    match &answer.results[0].outcome {
        DocOutcome::Rejected { code, quarantined, .. } => {
            assert_eq!((code.as_str(), *quarantined), ("record_locked", true));
        }
        other => panic!("expected record_locked, got {other:?}"),
    }
    assert_eq!(api.change_rows(), rows_before);
    let view = api.get(&supervisor, &format!("/v1/review/{id}")).await.json();
    let quarantined = view["quarantined"].as_array().unwrap();
    assert_eq!(quarantined.len(), 1, "{view}");
    assert_eq!(quarantined[0]["officer"], "o-1");
    assert_eq!(quarantined[0]["device"], officer.device_id);
    assert_eq!(view["record"]["outcome"], "none");
    assert_eq!(view["review"]["state"], "approved");
}

/// Adds the officer's signature to a device's copy of an inspection, as one change.
fn sign(doc: &mut AutoCommit, signer: &str) {
    let heads: Vec<String> = doc.get_heads().iter().map(ToString::to_string).collect();
    let (_, signatures) = doc.get(ROOT, "signatures").unwrap().expect("a signatures list");
    let signature = doc.insert_object(&signatures, 0, ObjType::Map).unwrap();
    doc.put(&signature, "id", "sig-1").unwrap();
    doc.put(&signature, "signer", signer).unwrap();
    doc.put(&signature, "role", "officer").unwrap();
    let covered = doc.put_object(&signature, "heads", ObjType::List).unwrap();
    for (index, head) in heads.into_iter().enumerate() {
        doc.insert(&covered, index, head).unwrap();
    }
    doc.put(&signature, "signed_at", 1_700_000_000_000_i64).unwrap();
    doc.commit();
}

#[tokio::test]
async fn an_edit_to_a_signed_inspection_is_quarantined_as_record_locked() {
    // Arrange: an inspection, then its signature in a later sync, which is merged.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(46);
    let mut device = chengguan_inspection(&officer, id);
    let first = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;
    let unsigned = device.get_heads();
    sign(&mut device, "o-1");
    let signed = api
        .sync(&officer, &request_for(first.cursor, vec![upload(id, &mut device, &unsigned)]))
        .await;
    assert!(
        matches!(signed.results[0].outcome, DocOutcome::Accepted { stored: 1, .. }),
        "{:?}",
        signed.results[0].outcome
    );
    let rows_before = api.change_rows();

    // Act: the device edits the signed record and syncs.
    let after_signature = device.get_heads();
    edit(&mut device, "outcome", "case_lead");
    let answer = api
        .sync(
            &officer,
            &request_for(signed.cursor, vec![upload(id, &mut device, &after_signature)]),
        )
        .await;

    // Assert: refused into quarantine, the record as signed.
    match &answer.results[0].outcome {
        DocOutcome::Rejected { code, quarantined, .. } => {
            assert_eq!((code.as_str(), *quarantined), ("record_locked", true));
        }
        other => panic!("expected record_locked, got {other:?}"),
    }
    assert_eq!(api.change_rows(), rows_before);
    let view = api.get(&supervisor, &format!("/v1/review/{id}")).await.json();
    let quarantined = view["quarantined"].as_array().unwrap();
    assert_eq!(quarantined.len(), 1, "{view}");
    assert!(quarantined[0]["reason"].as_str().unwrap().contains("signed"), "{view}");
    assert_eq!(view["record"]["outcome"], "none");
    assert_eq!(view["record"]["signatures"][0]["signer"], "o-1");
}

#[tokio::test]
async fn the_history_shows_what_each_change_did_to_the_record() {
    // Arrange
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(47);
    let mut device = chengguan_inspection(&officer, id);
    let created = device.get_heads();
    let first = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;
    let shown = api.get(&supervisor, &format!("/v1/review/{id}")).await.json();
    let name_before = shown["record"]["site"]["name"].clone();

    // Act
    edit(&mut device, "site.name", "五金店 (改)");
    api.sync(&officer, &request_for(first.cursor, vec![upload(id, &mut device, &created)])).await;
    let view = api.get(&supervisor, &format!("/v1/review/{id}")).await.json();

    // Assert: the edit changed exactly the site's name; the creation shows the record's leaves.
    let history = view["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{view}");
    assert_eq!(
        history[1]["changed"],
        json!([{"path": "site.name", "before": name_before, "after": "五金店 (改)"}])
    );
    let created_leaves = history[0]["changed"].as_array().unwrap();
    assert!(
        created_leaves.iter().any(|leaf| leaf["path"] == "site.name"
            && leaf["before"].is_null()
            && leaf["after"] == name_before),
        "{created_leaves:?}"
    );
}

#[tokio::test]
async fn a_filing_request_is_granted_with_an_official_case_number() {
    // Arrange: a general-procedure case whose officer requested filing.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(43);
    let party = Party {
        kind: "natural".to_owned(),
        name: "张三".to_owned(),
        id_number: "110101199001011234".to_owned(),
    };
    let mut case_file =
        CaseFile::new(id.to_string(), Procedure::General, ENTRUSTED.to_owned(), party);
    CHENGGUAN.clone_into(&mut case_file.township);
    let fields = BTreeMap::from([("reason".to_owned(), "现场检查发现违法线索".to_owned())]);
    let device_actor = officer.actor.to_hex_string();
    case_file.append_event(
        "ev-1".to_owned(),
        "request_file".to_owned(),
        "o-1".to_owned(),
        device_actor,
        1_700_000_000_000,
        fields,
    );
    let mut device = create_document(&officer.actor, &case_file, 1_700_000_000_000).unwrap();
    api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;

    // Act
    let view = review(&api, &supervisor, id, "grant", &json!({"event": "ev-1"})).await;

    // Assert
    assert_eq!(view["state"], "filed", "{view}");
    let year = chrono::Utc::now().format("%Y").to_string();
    let case_no = format!("{CHENGGUAN}-{year}-1");
    assert_eq!(view["record"]["case_no"], case_no);
    let event = view["record"]["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["kind"], "file");
    assert_eq!(event["prev"], "ev-1");
    assert_eq!(event["officer"], "o-1");
    assert_eq!(event["actor"], server_hex());
    assert_eq!(event["fields"]["case_no"], case_no);
    assert_eq!(event["fields"]["reason"], "现场检查发现违法线索");
    let findings: Vec<_> =
        view["findings"].as_array().unwrap().iter().map(|f| f["code"].clone()).collect();
    assert!(!findings.contains(&json!("unauthorised_transition")), "{findings:?}");
    let again = api
        .post_json(&supervisor, &format!("/v1/review/{id}/grant"), &json!({"event": "ev-1"}))
        .await;
    again.check_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_edit");
    let unknown = api
        .post_json(&supervisor, &format!("/v1/review/{id}/grant"), &json!({"event": "nope"}))
        .await;
    unknown.check_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_edit");
}

#[tokio::test]
async fn the_queue_filters_on_projected_findings_and_refuses_bad_input() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(44);
    let mut device = chengguan_inspection(&officer, id);
    api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;

    // The fixture names no officers: the two-officer rule is broken.
    let listed = queue(&api, &supervisor, "?finding=too_few_officers&township=t-chengguan").await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["findings"].as_array().unwrap().contains(&json!("too_few_officers")));
    assert!(queue(&api, &supervisor, "?township=t-hexi").await.is_empty());
    assert!(queue(&api, &supervisor, "?finding=summary_fine_over_limit").await.is_empty());

    api.get(&supervisor, "/v1/review/queue?state=bogus")
        .await
        .check_error(StatusCode::BAD_REQUEST, "invalid_query");
    api.post_json(
        &supervisor,
        &format!("/v1/review/{id}/resolve"),
        &json!({"path": "nope", "value": "x"}),
    )
    .await
    .check_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_edit");
    api.post_json(
        &supervisor,
        &format!("/v1/review/{id}/resolve"),
        &json!({"path": "review.state", "value": "approved"}),
    )
    .await
    .check_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_edit");
    api.post_json(&supervisor, &format!("/v1/review/{}/approve", doc_id(99)), &json!({}))
        .await
        .check_error(StatusCode::NOT_FOUND, "not_found");
    api.get(&supervisor, &format!("/v1/review/{}", doc_id(99)))
        .await
        .check_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn officers_may_not_review() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let id = doc_id(45);
    let mut device = chengguan_inspection(&officer, id);
    api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;

    api.get(&officer, "/v1/review/queue").await.check_error(StatusCode::FORBIDDEN, "forbidden");
    api.get(&officer, &format!("/v1/review/{id}"))
        .await
        .check_error(StatusCode::FORBIDDEN, "forbidden");
    for action in ["approve", "return", "resolve", "grant"] {
        api.post_json(&officer, &format!("/v1/review/{id}/{action}"), &json!({"comment": "x"}))
            .await
            .check_error(StatusCode::FORBIDDEN, "forbidden");
    }
}
