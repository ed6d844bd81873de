//! Document numbers end to end (DOMAIN.md §3): two devices lease blocks, number documents
//! while the server is down, sync without a collision; a reused number is a finding in the
//! supervisor's queue; reconciliation accounts for every serial as used, void or unused.

use std::collections::BTreeSet;
use std::str::FromStr as _;

use automerge::ActorId;
use serde_json::{Value, json};
use sync_core::ids::DocumentId;
use sync_core::protocol::SyncRequest;
use sync_core::records::{CaseFile, IssuedDocument, Party, Procedure, create_document};

use crate::harness::{Demo, Device, TestServer, actor_of, upload};

const DOC_TYPE: &str = "onsite_decision";

fn new_case(device: &Device, demo: &Demo, other_officer: &str) -> String {
    device.json(&[
        "case",
        "new",
        "--matter",
        &demo.entrusted,
        "--party-name",
        "李四",
        "--party-id",
        "110101199001011234",
        "--officer",
        other_officer,
    ])["id"]
        .as_str()
        .expect("the case id")
        .to_owned()
}

fn issue(device: &Device, case: &str, void: Option<&str>) -> Value {
    let mut args = vec!["event", case, "issue_document", "--doc-type", DOC_TYPE];
    if let Some(reason) = void {
        args.extend(["--void", reason]);
    }
    device.json(&args)
}

fn queue_findings(supervisor: &Device, doc: &str) -> Vec<Value> {
    let queue = supervisor.json(&["review", "queue"]);
    let item = queue
        .as_array()
        .expect("the queue is a list")
        .iter()
        .find(|item| item["id"] == doc)
        .unwrap_or_else(|| panic!("{doc} is in the queue: {queue}"));
    item["findings"].as_array().expect("finding codes").clone()
}

#[test]
fn two_devices_number_offline_without_collision_and_reconciliation_accounts_for_every_number() {
    // Arrange: two officers of one township lease blocks of the same number space.
    let mut server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (a, _) = Device::enrolled(&server, &demo.officers[0].code);
    let (b, b_enrolled) = Device::enrolled(&server, &demo.officers[1].code);
    let (supervisor, _) = Device::enrolled(&server, &demo.supervisor_code);
    let block_a = a.json(&["numbers", "lease", "--doc-type", DOC_TYPE, "--count", "5"]);
    let block_b = b.json(&["numbers", "lease", "--doc-type", DOC_TYPE, "--count", "5"]);
    let case_a = new_case(&a, &demo, &demo.officers[1].officer);
    let case_b = new_case(&b, &demo, &demo.officers[0].officer);

    // Act: the server is down while both devices number their documents.
    server.stop();
    let mut numbers = Vec::new();
    for (device, case) in [(&a, &case_a), (&b, &case_b), (&a, &case_a), (&b, &case_b)] {
        numbers.push(issue(device, case, None)["number"].as_str().expect("a number").to_owned());
    }
    let voided = issue(&a, &case_a, Some("打印错误，已作废"));
    let no_block = a.error_code(&["event", &case_a, "issue_document", "--doc-type", "notice"]);
    let listed = a.json(&["numbers", "list"]);
    server.restart();
    let (a, b, supervisor) =
        (a.pointed_at(&server), b.pointed_at(&server), supervisor.pointed_at(&server));
    a.json(&["sync"]);
    b.json(&["sync"]);

    // Assert: no collision, and each block accounted for serial by serial.
    assert_eq!((block_a["first"].as_i64(), block_b["first"].as_i64()), (Some(1), Some(6)));
    assert_eq!(numbers.iter().collect::<BTreeSet<_>>().len(), 4, "{numbers:?}");
    assert_eq!((voided["serial"].as_i64(), voided["void"].as_bool()), (Some(3), Some(true)));
    assert_eq!(no_block, "no_number_block");
    assert_eq!(listed[0]["remaining"], 2, "{listed}");
    for case in [&case_a, &case_b] {
        let findings = queue_findings(&supervisor, case);
        assert!(!findings.contains(&json!("number_used_twice")), "{case}: {findings:?}");
        assert!(!findings.contains(&json!("number_outside_block")), "{case}: {findings:?}");
    }
    let block_a_id = block_a["id"].as_str().expect("a block id");
    let reconciled = supervisor.json(&["numbers", "reconcile", block_a_id]);
    assert_eq!(reconciled["used"], json!([1, 2]), "{reconciled}");
    assert_eq!(reconciled["void"], json!([3]));
    assert_eq!(reconciled["unused"], json!([4, 5]));
    assert_eq!(reconciled["duplicates"], json!({}));
    let by_holder = a.json(&["numbers", "reconcile", block_a_id]);
    assert_eq!(by_holder, reconciled);
    let reconciled_b =
        supervisor.json(&["numbers", "reconcile", block_b["id"].as_str().expect("a block id")]);
    assert_eq!(reconciled_b["used"], json!([6, 7]), "{reconciled_b}");
    assert_eq!(reconciled_b["unused"], json!([8, 9, 10]));

    // Act: a case file (made outside the CLI, which never reuses a number) prints A's first
    // number again.
    let party = Party {
        kind: "natural".to_owned(),
        name: "王五".to_owned(),
        id_number: "110101199202021234".to_owned(),
    };
    let reused_id = DocumentId::from_bytes(crate::jose::random_bytes::<16>());
    let mut reused =
        CaseFile::new(reused_id.to_string(), Procedure::Summary, demo.entrusted.clone(), party);
    reused.township.clone_from(&demo.townships[0]);
    reused.documents.push(IssuedDocument {
        number: numbers[0].clone(),
        doc_type: DOC_TYPE.to_owned(),
        block: block_a_id.to_owned(),
        serial: 1,
        issued_at: 1_780_000_000_000,
    });
    let actor = ActorId::from_str(&actor_of(&b_enrolled)).expect("a hex actor");
    let mut doc = create_document(&actor, &reused, 1_780_000_000_000).expect("a document");
    let changes = doc.get_changes(&[]).into_iter().map(|mut change| change.bytes().into_owned());
    let body = SyncRequest {
        cursor: 0,
        docs: vec![sync_core::protocol::DocUpload {
            doc_id: reused_id,
            base_heads: Vec::new(),
            heads: doc.get_heads().iter().map(|hash| hash.0).collect(),
            changes: changes.collect(),
        }],
    };
    let answer = upload(&mut b.session(), body.encode());

    // Assert: both holders of the number are in the queue with the finding.
    assert_eq!(answer.status, 200);
    let flagged = supervisor.json(&["review", "queue", "--finding", "number_used_twice"]);
    let flagged: BTreeSet<&str> = flagged
        .as_array()
        .expect("the queue is a list")
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    let reused_id = reused_id.to_string();
    assert_eq!(flagged, BTreeSet::from([case_a.as_str(), reused_id.as_str()]));
    let reconciled = supervisor.json(&["numbers", "reconcile", block_a_id]);
    assert_eq!(reconciled["duplicates"]["1"].as_array().map(Vec::len), Some(2), "{reconciled}");
    assert_eq!(reconciled["used"], json!([2]));
}
