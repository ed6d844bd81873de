//! A server restored from a backup: devices hand back what it lost, without whole histories.

use std::path::Path;

use crate::harness::{Device, TestServer, actor_of, audit};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

fn replace_dir(dir: &Path, with: &Path) {
    for entry in std::fs::read_dir(dir).expect("read the data dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove a directory");
        } else {
            std::fs::remove_file(&path).expect("remove a file");
        }
    }
    copy_dir(with, dir);
}

#[test]
fn a_server_restored_from_a_backup_gets_back_what_it_lost_from_the_devices() {
    // Arrange: a synced record, a backup of the stopped server, then three more synced edits.
    let mut server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, _) = Device::enrolled(&server, &demo.officers[0].code);
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    device.json(&["edit", &doc, "--append", "findings=第一次检查。"]);
    assert_eq!(device.json(&["sync"])["ok"], true);
    server.stop();
    let backup = tempfile::tempdir().expect("backup dir");
    copy_dir(server.data_dir(), backup.path());
    server.restart();
    let device = device.pointed_at(&server);
    for text in ["复查一。", "复查二。", "复查三。"] {
        device.json(&["edit", &doc, "--append", &format!("findings={text}")]);
        assert_eq!(device.json(&["sync"])["ok"], true);
    }

    // Act: the server comes back from the backup; the device edits once more offline and syncs.
    server.stop();
    replace_dir(server.data_dir(), backup.path());
    server.restart();
    let device = device.pointed_at(&server);
    device.json(&["edit", &doc, "--append", "findings=复查四。"]);
    let synced = device.json(&["sync"]);

    // Assert: one sync run hands back the lost edits and the new one; device and server agree.
    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(
        synced["uploaded"], 4,
        "the three lost changes and the new one, not the whole history: {synced}"
    );
    let mut supervisor = server.supervisor();
    let view = supervisor.get_json(&format!("/v1/docs/{doc}")).expect("server view");
    assert_eq!(view["record"]["findings"], "第一次检查。复查一。复查二。复查三。复查四。");
    assert_eq!(device.json(&["show", &doc]), view);
    server.check().assert_clean();
}

#[test]
fn a_device_restored_from_a_backup_takes_a_new_actor_reforks_and_loses_nothing() {
    // Arrange: a synced record; an edit still pending when the device's home is backed up,
    // uploaded right after; then more edits synced after the backup.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let old_actor = actor_of(&enrolled);
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    device.json(&["edit", &doc, "--append", "findings=第一次检查。"]);
    assert_eq!(device.json(&["sync"])["ok"], true);
    device.json(&["edit", &doc, "--append", "findings=备份时未上传。"]);
    let backup = tempfile::tempdir().expect("backup dir");
    copy_dir(device.home(), backup.path());
    assert_eq!(device.json(&["sync"])["ok"], true);
    device.json(&["edit", &doc, "--append", "findings=备份后 🚒。"]);
    device.json(&["edit", &doc, "--set", "outcome=rectification_order"]);
    assert_eq!(device.json(&["sync"])["ok"], true);

    // Act: the home comes back from the backup, the officer edits offline and syncs.
    replace_dir(device.home(), backup.path());
    device.json(&["edit", &doc, "--append", "findings=恢复后。"]);
    let synced = device.json(&["sync"]);

    // Assert: one sync re-forks the record under a new actor; nothing is lost or doubled.
    assert_eq!(synced["ok"], true, "{synced}");
    assert_eq!(synced["reforked"], serde_json::json!([doc]), "{synced}");
    let mut supervisor = server.supervisor();
    let view = supervisor.get_json(&format!("/v1/docs/{doc}")).expect("server view");
    assert_eq!(device.json(&["show", &doc]), view);
    let findings = view["record"]["findings"].as_str().expect("findings text");
    for part in ["第一次检查。", "备份时未上传。", "备份后 🚒。", "恢复后。"]
    {
        assert_eq!(findings.matches(part).count(), 1, "{part} once in {findings}");
    }
    assert_eq!(view["record"]["outcome"], "rectification_order");
    let status = device.json(&["status"]);
    assert_eq!(status["refused_changes"], 1, "the post-restore edit, kept: {status}");
    assert_ne!(status["actor"], old_actor.as_str(), "{status}");
    assert!(
        audit(&mut server.admin())
            .iter()
            .any(|row| row["action"] == "allocate" && row["object_id"] == status["actor"]),
        "the new actor is audited"
    );
    // The next edit syncs plainly under the new actor.
    device.json(&["edit", &doc, "--append", "findings=再次编辑。"]);
    let again = device.json(&["sync"]);
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["reforked"], serde_json::json!([]), "{again}");
    assert_eq!(again["uploaded"], 1, "{again}");
    server.check().assert_clean();
}
