//! Public disclosure (执法公开): readable without a token, and nothing personal beyond what the
//! law requires to publish.

use serde_json::Value;

use crate::harness::{Device, TestServer, admin_post, certificate_of};

fn public(server: &TestServer, path: &str) -> (Value, String) {
    let response =
        server.client().request_raw("GET", path, &[], Vec::new()).expect("the server answers");
    assert_eq!(response.status, 200, "{path}");
    let text = String::from_utf8(response.body).expect("UTF-8 JSON");
    (serde_json::from_str(&text).expect("JSON"), text)
}

#[test]
fn officers_entrustments_matters_and_complaint_channels_are_public_without_a_token() {
    let server = TestServer::spawn_demo();

    let (officers, _) = public(&server, "/v1/public/officers");
    let (entrustments, _) = public(&server, "/v1/public/entrustments");
    let (matters, _) = public(&server, "/v1/public/matters");
    let (channels, _) = public(&server, "/v1/public/complaints");

    let names: Vec<&str> =
        officers.as_array().unwrap().iter().filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(names, vec!["李明", "王芳", "赵强"], "officers holding valid certificates, by name");
    assert!(officers[0]["cert_no"].as_str().is_some_and(|no| !no.is_empty()));
    assert_eq!(officers[0]["sectors"][0], "work_safety");
    let agreements = entrustments.as_array().unwrap();
    assert_eq!(agreements.len(), 1, "only the active agreement");
    assert_eq!(agreements[0]["township"], "城关镇");
    assert_eq!(agreements[0]["items"][0]["matter"], "AJ-001");
    let codes: Vec<&str> =
        matters.as_array().unwrap().iter().filter_map(|m| m["code"].as_str()).collect();
    assert_eq!(codes, vec!["AJ-001", "AJ-002"]);
    assert!(matters[0]["penalty_standard"].as_str().is_some_and(|text| !text.is_empty()));
    assert!(channels.as_array().unwrap().iter().any(|c| c["hotline"] == "12350"));
}

#[test]
fn public_disclosure_carries_no_personal_data_and_follows_revocation() {
    // Arrange: a record with a party's ID number, and a revoked certificate.
    let server = TestServer::spawn_demo();
    let demo = server.demo().clone();
    let (device, enrolled) = Device::enrolled(&server, &demo.officers[0].code);
    let doc = device.new_inspection(&demo.entrusted, &demo.officers[1].officer);
    device.json(&["sync"]);
    let mut admin = server.admin();
    let revoked_officer = &demo.officers[2].officer;
    let revoked_cert = certificate_of(&mut admin, revoked_officer);
    admin_post(&mut admin, &format!("certificates/{revoked_cert}/revoke"));

    // Act
    let everything: String = ["officers", "entrustments", "matters", "complaints"]
        .iter()
        .map(|what| public(&server, &format!("/v1/public/{what}")).1)
        .collect();

    // Assert: no registry ids, devices, actors, codes, records or parties.
    let secrets = [
        demo.officers[0].officer.clone(),
        enrolled["device"].as_str().unwrap().to_owned(),
        enrolled["actor"].as_str().unwrap().to_owned(),
        demo.officers[1].code.clone(),
        doc,
        "91330100MA2KXXXX1Q".to_owned(),
        "张三五金店".to_owned(),
        revoked_cert,
    ];
    for secret in &secrets {
        assert!(!everything.contains(secret.as_str()), "{secret} must not be public: {everything}");
    }
    assert!(
        !everything.contains("赵强"),
        "an officer whose certificate was revoked is no longer listed"
    );
}
