//! In-process tests of document numbers (DOMAIN.md §3): leases continue their number space
//! without overlap, reconciliation accounts for every serial of a block, and a reused number
//! or one outside any lease is a finding in the review queue.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::json;
use sync_core::ids::DocumentId;
use sync_core::numbers::NumberBlock;
use sync_core::records::{CaseFile, IssuedDocument, Party, Procedure, create_document};

use crate::fixtures::{doc_id, upload};
use crate::tests::{CHENGGUAN, Client, ENTRUSTED, TestApi, request_for};

async fn lease(api: &TestApi, officer: &Client, count: i64) -> NumberBlock {
    let response = api
        .post_json(
            officer,
            "/v1/numbers/lease",
            &json!({"doc_type": "onsite_decision", "count": count}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.json());
    serde_json::from_value(response.json()).expect("a number block")
}

fn issued(block: &NumberBlock, serial: i64) -> IssuedDocument {
    IssuedDocument {
        number: block.render(serial),
        doc_type: block.doc_type.clone(),
        block: block.id.clone(),
        serial,
        issued_at: 1_700_000_000_000,
    }
}

/// Uploads a Chengguan case file holding `documents` and voiding `voided` serials of `block`.
async fn upload_case(
    api: &TestApi,
    officer: &Client,
    id: DocumentId,
    documents: Vec<IssuedDocument>,
    voided: &[(&NumberBlock, i64)],
) {
    let party = Party {
        kind: "natural".to_owned(),
        name: "张三".to_owned(),
        id_number: "110101199001011234".to_owned(),
    };
    let mut case_file =
        CaseFile::new(id.to_string(), Procedure::Summary, ENTRUSTED.to_owned(), party);
    CHENGGUAN.clone_into(&mut case_file.township);
    case_file.documents = documents;
    for (index, (block, serial)) in voided.iter().enumerate() {
        let fields = BTreeMap::from([
            ("block".to_owned(), block.id.clone()),
            ("serial".to_owned(), serial.to_string()),
            ("reason".to_owned(), "打印错误".to_owned()),
        ]);
        case_file.append_event(
            format!("void-{index}"),
            "void_number".to_owned(),
            "o-1".to_owned(),
            officer.actor.to_hex_string(),
            1_700_000_000_000,
            fields,
        );
    }
    let mut device = create_document(&officer.actor, &case_file, 1_700_000_000_000).unwrap();
    api.sync(officer, &request_for(0, vec![upload(id, &mut device, &[])])).await;
}

#[tokio::test]
async fn leases_continue_the_number_space_without_overlap_for_two_devices() {
    let api = TestApi::new();
    let first_officer = api.login("o-1").await;
    let second_officer = api.login("o-2").await;
    let audited = api.audit_rows();

    let first = lease(&api, &first_officer, 20).await;
    let second = lease(&api, &second_officer, 50).await;
    let default = api
        .post_json(&first_officer, "/v1/numbers/lease", &json!({"doc_type": "onsite_decision"}))
        .await;

    assert_eq!((first.first, first.last), (1, 20));
    assert_eq!((second.first, second.last), (21, 70));
    let default: NumberBlock = serde_json::from_value(default.json()).unwrap();
    assert_eq!((default.first, default.last), (71, 90));
    assert_eq!((first.name_agency.as_str(), first.agency_code.as_str()), ("d-yingji", "应急"));
    assert_eq!(first.device, first_officer.device_id);
    assert_eq!(second.device, second_officer.device_id);
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(first.render(7), format!("应急罚〔{year}〕7号"));
    assert_eq!(api.audit_rows(), audited + 3, "every lease is audited");
    // Another document type is another number space.
    let other = api
        .post_json(&first_officer, "/v1/numbers/lease", &json!({"doc_type": "notice", "count": 5}))
        .await;
    assert_eq!(other.json()["first"], 1);
}

#[tokio::test]
async fn leases_refuse_bad_counts_and_callers_that_are_not_officers() {
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let supervisor = api.login("supervisor").await;
    for body in [
        json!({"doc_type": "onsite_decision", "count": 51}),
        json!({"doc_type": "onsite_decision", "count": 0}),
        json!({"doc_type": ""}),
        json!({"doc_type": "onsite_decision", "colour": "red"}),
    ] {
        api.post_json(&officer, "/v1/numbers/lease", &body)
            .await
            .check_error(StatusCode::BAD_REQUEST, "malformed_json");
    }
    api.post_json(&supervisor, "/v1/numbers/lease", &json!({"doc_type": "onsite_decision"}))
        .await
        .check_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn reconciliation_accounts_for_every_number_of_a_block() {
    // Arrange
    let api = TestApi::new();
    let officer = api.login("o-1").await;
    let other_township = api.login("o-3").await;
    let supervisor = api.login("supervisor").await;
    let block = lease(&api, &officer, 6).await;
    upload_case(&api, &officer, doc_id(61), vec![issued(&block, 1), issued(&block, 2)], &[]).await;
    upload_case(&api, &officer, doc_id(62), vec![issued(&block, 4)], &[(&block, 3)]).await;

    // Act
    let uri = format!("/v1/numbers/blocks/{}/reconciliation", block.id);
    let by_supervisor = api.get(&supervisor, &uri).await;
    let by_holder = api.get(&officer, &uri).await;

    // Assert
    assert_eq!(by_supervisor.status, StatusCode::OK, "{}", by_supervisor.json());
    let reconciliation = by_supervisor.json();
    assert_eq!(reconciliation["used"], json!([1, 2, 4]), "{reconciliation}");
    assert_eq!(reconciliation["void"], json!([3]));
    assert_eq!(reconciliation["unused"], json!([5, 6]));
    assert_eq!(reconciliation["duplicates"], json!({}));
    assert_eq!(reconciliation["outside"], json!([]));
    assert_eq!(reconciliation["block"]["id"], block.id.as_str());
    assert_eq!(by_holder.json(), reconciliation);
    api.get(&other_township, &uri).await.check_error(StatusCode::NOT_FOUND, "not_found");
    api.get(&supervisor, "/v1/numbers/blocks/nb-unknown/reconciliation")
        .await
        .check_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_reused_number_is_number_used_twice_in_the_queue_and_a_foreign_one_outside_block() {
    // Arrange
    let api = TestApi::new();
    let first_officer = api.login("o-1").await;
    let second_officer = api.login("o-2").await;
    let supervisor = api.login("supervisor").await;
    let block = lease(&api, &first_officer, 5).await;
    let (first_case, second_case, forged_case) = (doc_id(71), doc_id(72), doc_id(73));
    upload_case(&api, &first_officer, first_case, vec![issued(&block, 1)], &[]).await;
    let first_before = &api.queue_findings(&supervisor, first_case).await;

    // Act: another device prints the same number; a third names a block never leased.
    upload_case(&api, &second_officer, second_case, vec![issued(&block, 1)], &[]).await;
    let mut forged_block = block.clone();
    "nb-forged".clone_into(&mut forged_block.id);
    upload_case(&api, &second_officer, forged_case, vec![issued(&forged_block, 2)], &[]).await;

    // Assert
    let twice = json!("number_used_twice");
    let outside = json!("number_outside_block");
    assert!(!first_before.contains(&twice) && !first_before.contains(&outside), "{first_before:?}");
    let second = &api.queue_findings(&supervisor, second_case).await;
    assert!(second.contains(&twice) && !second.contains(&outside), "{second:?}");
    let first = &api.queue_findings(&supervisor, first_case).await;
    assert!(first.contains(&twice), "the first user is flagged too: {first:?}");
    let forged = &api.queue_findings(&supervisor, forged_case).await;
    assert!(forged.contains(&outside), "{forged:?}");
    let reconciliation = api
        .get(&supervisor, &format!("/v1/numbers/blocks/{}/reconciliation", block.id))
        .await
        .json();
    let holders = vec![first_case.to_string(), second_case.to_string()];
    assert_eq!(reconciliation["duplicates"], json!({ "1": holders }), "{reconciliation}");
    assert_eq!(reconciliation["unused"], json!([2, 3, 4, 5]));
}
