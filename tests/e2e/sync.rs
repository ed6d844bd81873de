//! Offline edits on several devices merge on the server without loss.

use serde_json::{Value, json};

use sync_core::ids::DocumentId;

use crate::harness::{Device, TestServer};

fn doc_id(text: &str) -> DocumentId {
    DocumentId::parse(text).expect("devices print UUIDs")
}

fn new_inspection(device: &Device) -> String {
    let created = device.json(&[
        "inspection",
        "new",
        "--matter",
        "AJ-001",
        "--party-name",
        "张三五金店",
        "--party-id",
        "91330100MA2KXXXX1Q",
        "--site",
        "镇南路 8 号仓库",
        "--officer",
        "officer-1",
        "--officer",
        "officer-2",
    ]);
    created["id"].as_str().expect("new --json prints the id").to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    digest.iter().fold(String::new(), |mut out, byte| {
        write!(out, "{byte:02x}").expect("write to string");
        out
    })
}

#[test]
fn two_devices_offline_edits_merge_without_loss() {
    // Arrange: device A opens an inspection and syncs; device B syncs and receives it.
    let server = TestServer::spawn();
    let a = Device::new(&server);
    let b = Device::new(&server);
    let doc = new_inspection(&a);
    a.json(&["edit", &doc, "--append", "findings=现场检查：消防通道被货物堵塞。"]);
    let first = a.json(&["sync"]);
    assert_eq!(first["ok"], true);
    assert_eq!(first["uploaded"], 2);
    let received = b.json(&["sync"]);
    assert_eq!(received["downloaded"], 2);
    let listed = b.json(&["list"]);
    assert!(
        listed.as_array().expect("list is an array").iter().any(|item| item["id"] == doc.as_str())
    );

    // Act: both edit offline, then A, B, A resync.
    let photo_a = b"\xff\xd8 photo taken by A".to_vec();
    let photo_b = "照片 B 🚒".as_bytes().to_vec();
    a.json(&["edit", &doc, "--prepend", "findings=【甲】"]);
    b.json(&["edit", &doc, "--append", "findings=【乙补充：已责令清理 🚒】"]);
    a.json(&[
        "evidence",
        "add",
        &doc,
        "--file",
        &a.write_file("a.jpg", &photo_a),
        "--kind",
        "photo",
    ]);
    b.json(&[
        "evidence",
        "add",
        &doc,
        "--file",
        &b.write_file("b.jpg", &photo_b),
        "--kind",
        "photo",
    ]);
    a.json(&["edit", &doc, "--set", "site.name=东仓库"]);
    b.json(&["edit", &doc, "--set", "site.name=西仓库 🏭"]);
    for device in [&a, &b, &a] {
        let synced = device.json(&["sync"]);
        assert_eq!(synced["ok"], true, "{synced}");
        assert_eq!(synced["rejected"], json!([]));
    }

    // Assert: one merged record everywhere, nothing lost.
    let view_a = a.json(&["show", &doc]);
    let view_b = b.json(&["show", &doc]);
    let view_server = server.client().document(doc_id(&doc)).expect("server view");
    assert_eq!(view_a, view_b);
    assert_eq!(view_a, view_server);
    let record = &view_a["record"];
    assert_eq!(record["findings"], "【甲】现场检查：消防通道被货物堵塞。【乙补充：已责令清理 🚒】");
    assert_eq!(record["party"]["name"], "张三五金店");
    let mut hashes: Vec<&str> = record["evidence"]
        .as_array()
        .expect("evidence list")
        .iter()
        .map(|item| item["sha256"].as_str().unwrap())
        .collect();
    hashes.sort_unstable();
    let mut expected = vec![sha256_hex(&photo_a), sha256_hex(&photo_b)];
    expected.sort();
    assert_eq!(hashes, expected);

    let conflicts = view_a["conflicts"].as_array().expect("conflicts list");
    let site = conflicts
        .iter()
        .find(|conflict| conflict["path"] == "site.name")
        .expect("site.name conflict");
    let mut values: Vec<(String, String)> = site["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|value| {
            (
                value["value"].as_str().unwrap().to_owned(),
                value["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    values.sort();
    let actor_a = a.json(&["status"])["actor"].as_str().unwrap().to_owned();
    let actor_b = b.json(&["status"])["actor"].as_str().unwrap().to_owned();
    assert_eq!(values, vec![("东仓库".to_owned(), actor_a), ("西仓库 🏭".to_owned(), actor_b)]);
    assert_eq!(record["site"]["name"], site["values"][0]["value"]);
}

#[test]
fn a_resync_with_nothing_changed_moves_nothing() {
    let server = TestServer::spawn();
    let a = Device::new(&server);
    let doc = new_inspection(&a);
    a.json(&["sync"]);

    let again = a.json(&["sync"]);

    assert_eq!(again["requests"], 1);
    assert_eq!(again["uploaded"], 0);
    assert_eq!(again["downloaded"], 0);
    let status: Value = a.json(&["status"]);
    assert_eq!(status["pending_documents"], 0);
    assert_eq!(
        a.json(&["show", &doc]),
        server.client().document(doc_id(&doc)).expect("server view")
    );
}

#[test]
fn edits_made_while_the_server_is_down_sync_later() {
    let server = TestServer::spawn();
    let a = Device::new(&server);
    let doc = new_inspection(&a);
    drop(server);

    let failed = a.run(&["sync"]);
    assert!(!failed.status.success());
    let error: Value = serde_json::from_slice(&failed.stdout).expect("error JSON on stdout");
    assert!(error["error"]["code"].is_string());

    let server = TestServer::spawn();
    let a = a.pointed_at(&server);
    assert_eq!(a.json(&["sync"])["uploaded"], 1);
    assert_eq!(
        a.json(&["show", &doc]),
        server.client().document(doc_id(&doc)).expect("server view")
    );
}
