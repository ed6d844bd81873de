//! In-process tests of upload-only mode (DESIGN.md §7 item 4, SECURITY.md B-18) and of the
//! `clock_suspect` flag (B-38): after a certificate is withdrawn, the access token minted
//! before uploads and reads nothing; edits made before the withdrawal are merged and flagged
//! `needs_review`, edits building on what the server received after it are quarantined, new
//! records are quarantined; device times outside a change's bounds are flagged.

use automerge::transaction::CommitOptions;
use automerge::{AutoCommit, ChangeHash};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::protocol::{DocOutcome, SyncResponse};

use crate::auth::now_millis;
use crate::fixtures::{doc_id, upload};
use crate::store::{quarantine, registry};
use crate::tests::{
    Client, TestApi, accepted_heads, chengguan_inspection, request_for, wire_heads,
};

/// Sets a field on a device's copy as one change stamped `seconds`; returns the change.
fn edit_at(doc: &mut AutoCommit, path: &str, value: &str, seconds: i64) -> ChangeHash {
    set_field(doc, path, value).expect("a field of the record");
    doc.commit_with(CommitOptions::default().with_time(seconds)).expect("a change")
}

/// Sets a field as one change stamped now, as a device with a good clock does.
fn edit(doc: &mut AutoCommit, path: &str, value: &str) -> ChangeHash {
    edit_at(doc, path, value, now_millis() / 1000)
}

/// A certificate action by the admin, which must succeed.
async fn certificate(api: &TestApi, admin: &Client, cert_no: &str, action: &str) {
    let uri = format!("/v1/admin/certificates/{cert_no}/{action}");
    let response = api.post_json(admin, &uri, &json!({})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.json());
}

/// The review view of a document.
async fn review_view(api: &TestApi, supervisor: &Client, id: DocumentId) -> Value {
    let response = api.get(supervisor, &format!("/v1/review/{id}")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.json());
    response.json()
}

/// The hashes of the changes flagged with `code` in a review view.
fn flagged(view: &Value, code: &str) -> Vec<String> {
    view["review_flags"]
        .as_array()
        .expect("review_flags")
        .iter()
        .filter(|flag| flag["code"] == code)
        .map(|flag| flag["hash"].as_str().expect("a hash").to_owned())
        .collect()
}

/// The code and quarantine mark of a rejected result.
#[track_caller]
fn rejection(answer: &SyncResponse, index: usize) -> (String, bool) {
    match &answer.results[index].outcome {
        DocOutcome::Rejected { code, quarantined, .. } => (code.clone(), *quarantined),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn edits_made_before_revocation_are_merged_flagged_needs_review_and_get_no_feed() {
    // Arrange: the officer's record is on the server, a colleague's record is in the feed,
    // and the officer edits offline before the certificate is revoked.
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let officer = api.login("o-1").await;
    let colleague = api.login("o-2").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(60);
    let mut device = chengguan_inspection(&officer, id);
    let created = device.get_heads();
    let first = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;
    let other = doc_id(61);
    let mut colleague_doc = chengguan_inspection(&colleague, other);
    api.sync(&colleague, &request_for(0, vec![upload(other, &mut colleague_doc, &[])])).await;
    let offline_edit = edit(&mut device, "outcome", "case_lead");
    certificate(&api, &admin, "C-0001", "revoke").await;

    // Act: the device uploads with the token it still holds, then tries to read.
    let answer = api
        .sync(&officer, &request_for(first.cursor, vec![upload(id, &mut device, &created)]))
        .await;
    let pull = api.post_sync(&officer, request_for(first.cursor, vec![]).encode()).await;
    let read = api.get(&officer, &format!("/v1/docs/{id}")).await;
    let mint = api.mint(&officer.device).await;

    // Assert: merged, with no feed, no eviction and the cursor where it was.
    let (heads, stored) = accepted_heads(&answer, 0);
    assert_eq!((heads, stored), (wire_heads(&mut device), 1));
    assert!(answer.updates.is_empty() && answer.evict.is_empty() && !answer.more);
    assert_eq!(answer.cursor, first.cursor);
    pull.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    read.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    mint.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    // The supervisor sees the edit, flagged, in the view and in the queue.
    let view = review_view(&api, &supervisor, id).await;
    assert_eq!(view["record"]["outcome"], "case_lead");
    assert_eq!(flagged(&view, "needs_review"), vec![offline_edit.to_string()], "{view}");
    let flags = view["review_flags"].as_array().expect("review_flags");
    let flag = flags.iter().find(|flag| flag["code"] == "needs_review").expect("a flag");
    let detail = flag["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("C-0001") && detail.contains("revoked"), "{detail}");
    let findings = view["findings"].as_array().expect("findings");
    assert!(findings.iter().any(|finding| finding["code"] == "needs_review"), "{view}");
    assert!(&api.queue_findings(&supervisor, id).await.contains(&json!("needs_review")));
    assert!(view["quarantined"].as_array().expect("quarantined").is_empty());
}

#[tokio::test]
async fn an_edit_on_a_change_received_after_revocation_is_quarantined_and_so_are_its_successors() {
    // Arrange: the record is on the server; the certificate is revoked; a change the server
    // receives after that reaches the device (as a tampered device or a copied change would).
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(62);
    let mut device = chengguan_inspection(&officer, id);
    let created = device.get_heads();
    api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;
    certificate(&api, &admin, "C-0001", "revoke").await;
    let withdrawal = api
        .state
        .store()
        .read(|tx| registry::certificate_withdrawal(tx, "C-0001"))
        .unwrap()
        .expect("the revocation is audited");
    let mut elsewhere = device.fork();
    edit(&mut elsewhere, "site.name", "五金店（东门）");
    let after_revocation = elsewhere.get_changes(&created);
    api.state.store().merge_unchecked(vec![(id, after_revocation)], withdrawal.at + 1).unwrap();
    device.merge(&mut elsewhere).unwrap();
    let base = device.get_heads();
    let late_edit = edit(&mut device, "outcome", "case_lead");
    let rows_before = api.change_rows();

    // Act
    let answer = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &base)])).await;
    let next_edit = edit(&mut device, "outcome", "closed");
    let next =
        api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[late_edit])])).await;

    // Assert: neither merged, both kept in quarantine and shown to the supervisor.
    assert_eq!(rejection(&answer, 0), ("certificate_revoked".to_owned(), true));
    assert_eq!(rejection(&next, 0), ("certificate_revoked".to_owned(), true));
    assert!(answer.updates.is_empty() && next.updates.is_empty());
    assert_eq!(api.change_rows(), rows_before);
    let view = review_view(&api, &supervisor, id).await;
    assert_eq!(view["record"]["outcome"], "none");
    let quarantined = view["quarantined"].as_array().expect("quarantined");
    let hashes: Vec<&str> =
        quarantined.iter().map(|change| change["hash"].as_str().unwrap()).collect();
    assert_eq!(hashes, vec![late_edit.to_string(), next_edit.to_string()], "{view}");
    assert!(quarantined.iter().all(|change| change["officer"] == "o-1"
        && change["device"] == officer.device_id.as_str()
        && change["reason"].as_str().unwrap_or_default().starts_with("certificate_revoked")));
    assert!(flagged(&view, "needs_review").is_empty());
}

#[tokio::test]
async fn a_record_created_in_upload_only_mode_is_quarantined_and_suspension_is_named() {
    // Arrange: o-1's certificate is revoked, o-2's suspended, after their tokens were minted.
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let revoked = api.login("o-1").await;
    let suspended = api.login("o-2").await;
    let supervisor = api.login("supervisor").await;
    certificate(&api, &admin, "C-0001", "revoke").await;
    certificate(&api, &admin, "C-0002", "suspend").await;
    let (first, second) = (doc_id(63), doc_id(64));
    let mut first_doc = chengguan_inspection(&revoked, first);
    let mut second_doc = chengguan_inspection(&suspended, second);

    // Act
    let from_revoked =
        api.sync(&revoked, &request_for(0, vec![upload(first, &mut first_doc, &[])])).await;
    let from_suspended =
        api.sync(&suspended, &request_for(0, vec![upload(second, &mut second_doc, &[])])).await;

    // Assert: no record, every change kept.
    assert_eq!(rejection(&from_revoked, 0), ("certificate_revoked".to_owned(), true));
    assert_eq!(rejection(&from_suspended, 0), ("certificate_suspended".to_owned(), true));
    assert_eq!(api.change_rows(), 0);
    let listed = api.get(&supervisor, "/v1/docs").await.json();
    assert_eq!(listed, json!([]));
    for id in [first, second] {
        let kept = api.state.store().read(|tx| quarantine::list(tx, id)).unwrap();
        assert_eq!(kept.len(), 1, "{id}");
    }
}

#[tokio::test]
async fn a_token_minted_before_an_earlier_suspension_gets_no_upload_only() {
    // Arrange: the token predates a suspension and a reinstatement, then the revocation.
    let api = TestApi::new();
    let admin = api.login("admin").await;
    let officer = api.login("o-1").await;
    for action in ["suspend", "reinstate", "revoke"] {
        certificate(&api, &admin, "C-0001", action).await;
    }
    let id = doc_id(65);
    let mut device = chengguan_inspection(&officer, id);

    // Act
    let response =
        api.post_sync(&officer, request_for(0, vec![upload(id, &mut device, &[])]).encode()).await;

    // Assert
    response.check_error(StatusCode::FORBIDDEN, "certificate_revoked");
    let kept = api.state.store().read(|tx| quarantine::list(tx, id)).unwrap();
    assert!(kept.is_empty());
}

#[tokio::test]
async fn device_times_outside_the_causal_bounds_are_flagged_clock_suspect_and_merged() {
    // Arrange: a record created with a time before the device's actor existed, then edits
    // stamped at zero, two years ahead, and now.
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    let id = doc_id(66);
    let mut device = chengguan_inspection(&officer, id);
    let create = device.get_heads()[0];
    let at_zero = edit_at(&mut device, "outcome", "case_lead", 0);
    let two_years = 2 * 365 * 24 * 3600;
    let ahead =
        edit_at(&mut device, "site.name", "五金店（东门）", now_millis() / 1000 + two_years);
    let fresh = edit(&mut device, "findings", "现场检查。");

    // Act
    let answer = api.sync(&officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;

    // Assert: every change merged; the three bad clocks flagged, the good one not.
    assert_eq!(accepted_heads(&answer, 0).1, 4);
    let view = review_view(&api, &supervisor, id).await;
    assert_eq!(view["record"]["outcome"], "case_lead");
    assert_eq!(view["record"]["site"]["name"], "五金店（东门）");
    let mut suspects = flagged(&view, "clock_suspect");
    suspects.sort();
    let mut expected = vec![create.to_string(), at_zero.to_string(), ahead.to_string()];
    expected.sort();
    assert_eq!(suspects, expected, "{view}");
    assert!(!suspects.contains(&fresh.to_string()));
    assert!(&api.queue_findings(&supervisor, id).await.contains(&json!("clock_suspect")));
}
