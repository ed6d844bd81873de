//! D-3 / B-42, the fast variant: an operator quota on the database (`--max-db-size`) stands in
//! for a full disk. A full database answers 507 `storage_full`, acknowledges nothing, keeps
//! serving reads, and takes the same upload once the quota is raised.

use automerge::ScalarValue;
use automerge::transaction::Transactable as _;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

use crate::harness::{HandMade, TestServer, assert_error, document_count, upload};

/// 1 MiB: the seeded demo registry takes about 150 KiB of it.
const SMALL_QUOTA: &str = "1048576";
/// 64 MiB: room for everything the test uploads.
const LARGE_QUOTA: &str = "67108864";
/// Uploads tried before the test gives up on filling the database.
const MAX_UPLOADS: usize = 64;

/// A record of the first township carrying 64 KiB of photo-like bytes.
fn bulky_record(server: &TestServer, actor: &str) -> HandMade {
    let demo = server.demo();
    let mut record = HandMade::inspection(actor, &demo.officers[0].township, &demo.entrusted);
    let mut bytes = vec![0u8; 64 * 1024];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    record.doc.put(automerge::ROOT, "scan", ScalarValue::Bytes(bytes)).expect("put bytes");
    record.doc.commit();
    record
}

#[test]
fn a_full_database_answers_507_keeps_serving_reads_and_takes_the_upload_once_the_quota_is_raised() {
    // Arrange: every credential is minted before the database fills.
    let mut server = TestServer::spawn_demo_with(&["--max-db-size", SMALL_QUOTA]);
    let demo = server.demo().clone();
    let mut officer = server.enroll(&demo.officers[0].code);
    let mut supervisor = server.enroll(&demo.supervisor_code);
    officer.session.access_token().expect("the officer's token");
    assert_eq!(document_count(&mut supervisor.session), 0);

    // Act: bulky records until one is refused.
    let mut stored = Vec::new();
    let mut refused = None;
    for _ in 0..MAX_UPLOADS {
        let mut record = bulky_record(&server, &officer.actor());
        let body = record.upload(&[]);
        let response = upload(&mut officer.session, body.clone());
        if response.status == 200 {
            stored.push(record.id.to_string());
        } else {
            refused = Some((record.id.to_string(), body, response));
            break;
        }
    }

    // Assert
    let (refused_doc, body, response) =
        refused.unwrap_or_else(|| panic!("{MAX_UPLOADS} uploads never filled the database"));
    assert_error(&response, 507, "storage_full");
    assert!(!stored.is_empty(), "the quota leaves room for some records");
    assert_eq!(document_count(&mut supervisor.session), stored.len());
    for doc in &stored {
        let view = supervisor.session.get_json(&format!("/v1/docs/{doc}"));
        assert!(view.is_ok(), "{doc} is still readable: {view:?}");
    }
    let missing =
        supervisor.session.send("GET", &format!("/v1/docs/{refused_doc}"), None, Vec::new());
    assert_eq!(missing.expect("the server answers").status, 404, "nothing was acknowledged");

    // Act: the operator raises the quota.
    server.restart_with(&["--max-db-size", LARGE_QUOTA]);
    officer.reconnect(&server);
    supervisor.reconnect(&server);
    let retried = upload(&mut officer.session, body);

    // Assert
    assert_eq!(retried.status, 200, "{}", String::from_utf8_lossy(&retried.body));
    assert_eq!(document_count(&mut supervisor.session), stored.len() + 1);
    assert!(supervisor.session.get_json(&format!("/v1/docs/{refused_doc}")).is_ok());
    server.check().assert_clean();
}
