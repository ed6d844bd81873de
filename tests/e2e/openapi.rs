//! The OpenAPI document (issue 6), as the real server serves it: no token needed, the routes a
//! client generator needs, and the one error body every failure answers with.

use serde_json::Value;

use crate::harness::TestServer;

#[test]
fn the_openapi_document_is_served_without_a_token_and_describes_the_error_body() {
    let server = TestServer::spawn();

    let response = server
        .client()
        .request_raw("GET", "/v1/openapi.json", &[], Vec::new())
        .expect("the server answers");

    assert_eq!(response.status, 200);
    let document: Value = serde_json::from_slice(&response.body).expect("a JSON document");
    assert!(
        document["openapi"].as_str().is_some_and(|version| version.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let paths = &document["paths"];
    for (path, method) in [
        ("/v1/sync", "post"),
        ("/v1/token", "post"),
        ("/v1/blobs/{sha256}", "put"),
        ("/v1/docs/{id}", "get"),
        ("/v1/review/{id}/approve", "post"),
        ("/v1/public/officers", "get"),
        ("/v1/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{} {path} is documented", method.to_uppercase());
    }
    let error_body = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_body["required"], serde_json::json!(["error"]), "{error_body}");
    assert_eq!(
        paths["/v1/sync"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let detail = &document["components"]["schemas"]["ErrorDetail"]["properties"];
    assert!(detail["code"].is_object() && detail["message"].is_object(), "{detail}");
}
