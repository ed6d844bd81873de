//! Offline edits on several devices merge on the server without loss.

use serde_json::{Value, json};

use crate::harness::{Device, TestServer, actor_of, sha256_hex};

/// Opens an inspection of the demo's entrusted matter on an enrolled device, with
/// `other_officer` present besides the device's own officer.
fn new_inspection(server: &TestServer, device: &Device, other_officer: &str) -> String {
    device.new_inspection(&server.demo().entrusted, other_officer)
}

/// Two devices of the two officers of the demo's first township, enrolled with their codes.
fn two_enrolled_devices(server: &TestServer) -> ((Device, Value), (Device, Value)) {
    let officers = &server.demo().officers;
    (Device::enrolled(server, &officers[0].code), Device::enrolled(server, &officers[1].code))
}

#[test]
fn two_devices_offline_edits_merge_without_loss() {
    // Arrange: device A opens an inspection and syncs; device B syncs and receives it.
    let server = TestServer::spawn_demo();
    let ((a, enrolled_a), (b, enrolled_b)) = two_enrolled_devices(&server);
    let mut supervisor = server.supervisor();
    let doc = new_inspection(&server, &a, enrolled_b["officer"].as_str().unwrap());
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
    let view_server = supervisor.get_json(&format!("/v1/docs/{doc}")).expect("server view");
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
    assert_eq!((&actor_a, &actor_b), (&actor_of(&enrolled_a), &actor_of(&enrolled_b)));
    assert_eq!(values, vec![("东仓库".to_owned(), actor_a), ("西仓库 🏭".to_owned(), actor_b)]);
    assert_eq!(record["site"]["name"], site["values"][0]["value"]);
}

#[test]
fn a_resync_with_nothing_changed_moves_nothing() {
    // Arrange
    let server = TestServer::spawn_demo();
    let ((a, _), (_, enrolled_b)) = two_enrolled_devices(&server);
    let mut supervisor = server.supervisor();
    let doc = new_inspection(&server, &a, enrolled_b["officer"].as_str().unwrap());
    a.json(&["sync"]);

    // Act
    let again = a.json(&["sync"]);

    // Assert
    assert_eq!(again["requests"], 1);
    assert_eq!(again["uploaded"], 0);
    assert_eq!(again["downloaded"], 0);
    let status: Value = a.json(&["status"]);
    assert_eq!(status["pending_documents"], 0);
    assert_eq!(
        a.json(&["show", &doc]),
        supervisor.get_json(&format!("/v1/docs/{doc}")).expect("server view")
    );
}

#[test]
fn edits_made_while_the_server_is_down_sync_later() {
    // Arrange: an enrolled device records offline while its server is down.
    let mut server = TestServer::spawn_demo();
    let ((a, _), (_, enrolled_b)) = two_enrolled_devices(&server);
    let doc = new_inspection(&server, &a, enrolled_b["officer"].as_str().unwrap());
    server.stop();
    let failed = a.run(&["sync"]);
    assert!(!failed.status.success());
    let error: Value = serde_json::from_slice(&failed.stdout).expect("error JSON on stdout");
    assert_eq!(error["error"]["code"], "server_unreachable");

    // Act: the same server (same data dir, same registry) comes back on another port.
    server.restart();
    let a = a.pointed_at(&server);
    let synced = a.json(&["sync"]);

    // Assert
    assert_eq!(synced["uploaded"], 1);
    let mut supervisor = server.supervisor();
    assert_eq!(
        a.json(&["show", &doc]),
        supervisor.get_json(&format!("/v1/docs/{doc}")).expect("server view")
    );
}
