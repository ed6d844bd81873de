//! The OpenAPI document (issue 6): served without a token, and complete. Completeness is judged
//! against the routers' sources, parsed here, so a route added without its handler in
//! `routes::openapi` fails this test rather than going undocumented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use sync_core::protocol::CONTENT_TYPE;

use crate::tests::TestApi;

/// The routes answered without any credential.
const PUBLIC: &[&str] = &[
    "GET /healthz",
    "GET /v1/openapi.json",
    "GET /v1/nonce",
    "GET /v1/public/officers",
    "GET /v1/public/entrustments",
    "GET /v1/public/matters",
    "GET /v1/public/complaints",
];

/// The routes that take a DPoP proof of the device key but no access token yet.
const PROOF_ONLY: &[&str] = &["POST /v1/enroll", "POST /v1/token"];

/// The axum method routers `.route(path, …)` may chain; any other first call fails the parse,
/// so a route cannot hide behind `any` or `on`.
const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options", "trace"];

/// Path → methods, lower case.
type Routes = BTreeMap<String, BTreeSet<String>>;

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_and_lists_every_route() {
    let api = TestApi::new();
    let document = fetch_document(&api).await;

    assert!(
        document["openapi"].as_str().is_some_and(|version| version.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let registered = registered_routes();
    let documented = documented_routes(&document);

    let expected = registered;
    let undocumented = difference(&expected, &documented);
    let unregistered = difference(&documented, &expected);
    assert!(
        undocumented.is_empty(),
        "routes registered in server/src but not in the document; add their handlers' \
         #[utoipa::path] to routes::openapi: {undocumented:?}"
    );
    assert!(unregistered.is_empty(), "documented routes no router registers: {unregistered:?}");
}

#[tokio::test]
async fn every_error_answer_is_the_error_body_and_every_operation_says_what_it_needs() {
    let api = TestApi::new();
    let document = fetch_document(&api).await;
    let schemes = document["components"]["securitySchemes"].as_object().expect("schemes");
    assert!(document["components"]["schemas"]["ErrorBody"].is_object(), "ErrorBody is a schema");
    assert_eq!(
        document["security"],
        serde_json::json!([{ "access_token": [], "dpop_proof": [] }]),
        "by default an operation needs the token and the proof"
    );

    let mut public = BTreeSet::new();
    let mut proof_only = BTreeSet::new();
    for (path, method, operation) in operations(&document) {
        let route = format!("{} {path}", method.to_uppercase());
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{route} answers {status} with another body"
            );
        }
        let Some(security) = operation.get("security") else { continue };
        for requirement in security.as_array().expect("a list of requirements") {
            for scheme in requirement.as_object().expect("a requirement").keys() {
                assert!(schemes.contains_key(scheme), "{route} names an undefined scheme {scheme}");
            }
        }
        match security.as_array().map(Vec::as_slice) {
            Some([requirement]) if requirement == &serde_json::json!({}) => public.insert(route),
            Some([requirement]) if requirement == &serde_json::json!({ "dpop_proof": [] }) => {
                proof_only.insert(route)
            }
            // The default, spelled out.
            Some([requirement]) if Some(requirement) == document["security"].get(0) => false,
            _ => panic!("{route} has an unexpected security {security}"),
        };
    }
    assert_eq!(public, PUBLIC.iter().map(|route| (*route).to_owned()).collect());
    assert_eq!(proof_only, PROOF_ONLY.iter().map(|route| (*route).to_owned()).collect());

    // What the document calls public must answer without a credential.
    for route in PUBLIC {
        let path = route.strip_prefix("GET ").expect("public routes are reads");
        let response = api.send(Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(response.status, StatusCode::OK, "{route} without a token");
    }

    // Bytes are described as bytes, in the content type the handlers send.
    let binary = serde_json::json!({ "type": "string", "format": "binary" });
    let blob = &document["paths"]["/v1/blobs/{sha256}"];
    let sync = &document["paths"]["/v1/sync"]["post"];
    for (what, schema) in [
        ("PUT blob", &blob["put"]["requestBody"]["content"]["application/octet-stream"]),
        ("GET blob", &blob["get"]["responses"]["200"]["content"]["application/octet-stream"]),
        ("sync request", &sync["requestBody"]["content"][CONTENT_TYPE]),
        ("sync answer", &sync["responses"]["200"]["content"][CONTENT_TYPE]),
    ] {
        assert_eq!(resolve(&document, &schema["schema"]), &binary, "{what}: {schema}");
    }
}

#[test]
fn the_route_parser_sees_one_line_chained_and_multi_line_routes() {
    let source = r#"
        // .route("/commented", get(nothing))
        Router::new().route("/v1/nonce", get(get_nonce)).route("/v1/token", post(issue_token))
            .route(
                "/v1/blobs/{sha256}",
                get(get_blob).put(upload_blob).layer(DefaultBodyLimit::max(MAX_CHUNK_BYTES)),
            )
            .route("/v1/sync", post(upload).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
    "#;
    let mut routes = Routes::new();
    parse_routes(source, &mut routes);
    let flat: Vec<String> = routes
        .iter()
        .map(|(path, methods)| format!("{path} {}", Vec::from_iter(methods.clone()).join(",")))
        .collect();
    assert_eq!(
        flat,
        ["/v1/blobs/{sha256} get,put", "/v1/nonce get", "/v1/sync post", "/v1/token post"]
    );
}

/// The schema `schema` names, through its `$ref` if it has one.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|name| name.strip_prefix("#/components/schemas/")) {
        Some(name) => &document["components"]["schemas"][name],
        None => schema,
    }
}

/// The `METHOD path` pairs of `left` that `right` lacks.
fn difference(left: &Routes, right: &Routes) -> Vec<String> {
    let mut missing = Vec::new();
    for (path, methods) in left {
        for method in methods {
            if !right.get(path).is_some_and(|other| other.contains(method)) {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    missing
}

async fn fetch_document(api: &TestApi) -> Value {
    let response = api.send(Request::get("/v1/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    response.json()
}

/// Every `(path, method, operation)` of the document.
fn operations(document: &Value) -> Vec<(&str, &str, &Value)> {
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                operations.push((path.as_str(), method.as_str(), operation));
            }
        }
    }
    operations
}

fn documented_routes(document: &Value) -> Routes {
    let mut routes = Routes::new();
    for (path, method, _) in operations(document) {
        routes.entry(path.to_owned()).or_default().insert(method.to_owned());
    }
    routes
}

/// Every route registered in the server's non-test sources.
fn registered_routes() -> Routes {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routes = Routes::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading server/src") {
            let path = entry.expect("a directory entry").path();
            if path == src.join("tests") || path == src.join("tests.rs") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                parse_routes(&std::fs::read_to_string(&path).expect("a source file"), &mut routes);
            }
        }
    }
    // The parser must see the routes this test was written against, or it sees nothing.
    assert_eq!(routes["/v1/sync"], BTreeSet::from(["post".to_owned()]));
    assert_eq!(routes["/v1/blobs/{sha256}"], BTreeSet::from(["get".to_owned(), "put".to_owned()]));
    routes
}

/// Adds every `.route("<path>", <method>(…).<method>(…)…)` of `source` to `routes`; comment
/// lines are skipped, and a `.layer(…)` in the chain is not a method.
#[track_caller]
fn parse_routes(source: &str, routes: &mut Routes) {
    let code: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(start) = rest.find(".route(") {
        let arguments = &rest[start + ".route(".len()..];
        let arguments = &arguments[..closing_paren(arguments)];
        rest = &rest[start + ".route(".len()..];

        let (path, handlers) = arguments.split_once(',').expect("two arguments");
        let path = path.trim().strip_prefix('"').and_then(|path| path.strip_suffix('"'));
        let path = path.unwrap_or_else(|| panic!("a literal path in .route({arguments})"));
        let calls = chained_calls(handlers);
        assert!(
            calls.first().is_some_and(|call| METHODS.contains(call)),
            "{path}: the method router {handlers:?} does not start with a known method"
        );
        let methods = routes.entry(path.to_owned()).or_default();
        for call in calls.into_iter().filter(|call| METHODS.contains(call)) {
            methods.insert(call.to_owned());
        }
    }
}

/// The byte offset of the `)` that closes the call whose arguments `text` starts with.
fn closing_paren(text: &str) -> usize {
    let mut depth = 0_usize;
    for (offset, byte) in text.bytes().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' if depth == 0 => return offset,
            b')' => depth -= 1,
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {text:?}")
}

/// The names of the calls chained at the top level of `expression`: `get(a).put(b).layer(c)`
/// gives `get`, `put`, `layer`.
fn chained_calls(expression: &str) -> Vec<&str> {
    let mut calls = Vec::new();
    let mut rest = expression.trim().trim_end_matches(',').trim();
    while !rest.is_empty() {
        let open = rest.find('(').unwrap_or_else(|| panic!("a call in {expression:?}"));
        calls.push(rest[..open].trim().trim_start_matches('.').trim());
        let after = &rest[open + 1..];
        rest = after[closing_paren(after) + 1..].trim();
    }
    calls
}
