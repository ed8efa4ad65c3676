//! The OpenAPI document at `GET /v1/openapi.json`: OpenAPI 3.1, complete against API.md's
//! tables, every `$ref` resolving, and every documented operation one the router serves
//! (with a status the document lists for it).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use store::testing::region_database;
use tower::ServiceExt;

use crate::{body_text, get, node};

/// Every `method path` of API.md's tables (`...` spelt out), and the operational ones.
const API_MD: &[(&str, &str)] = &[
    // Tenants (operator token).
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants/{tenant}"),
    ("DELETE", "/v1/tenants/{tenant}"),
    ("POST", "/v1/tenants/{tenant}/relocations"),
    ("GET", "/v1/tenants/{tenant}/relocations/{id}"),
    // Tenant administration (admin key).
    ("POST", "/v1/tenants/{tenant}/api-keys"),
    ("DELETE", "/v1/tenants/{tenant}/api-keys/{id}"),
    ("PUT", "/v1/tenants/{tenant}/collections/{collection}"),
    ("GET", "/v1/tenants/{tenant}/collections/{collection}"),
    ("POST", "/v1/tenants/{tenant}/keys/rotate"),
    ("GET", "/v1/tenants/{tenant}/keys"),
    ("GET", "/v1/tenants/{tenant}/subjects/{subject}/export"),
    ("POST", "/v1/tenants/{tenant}/subjects/{subject}/erase"),
    // Records (writer; reader for GET).
    (
        "POST",
        "/v1/tenants/{tenant}/collections/{collection}/records",
    ),
    (
        "GET",
        "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
    ),
    (
        "PUT",
        "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
    ),
    (
        "DELETE",
        "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
    ),
    (
        "GET",
        "/v1/tenants/{tenant}/collections/{collection}/records",
    ),
    (
        "PUT",
        "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    ),
    (
        "GET",
        "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    ),
    (
        "DELETE",
        "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    ),
    // Audit (auditor key).
    ("GET", "/v1/tenants/{tenant}/audit/events"),
    ("GET", "/v1/tenants/{tenant}/audit/export"),
    ("GET", "/v1/tenants/{tenant}/residency"),
    ("GET", "/v1/audit/keys"),
    // The region's jobs and KMS rewrap (operator token; issue 28, beyond API.md's tables).
    ("POST", "/v1/keys/rewrap"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job}"),
    // Operators' key commands (issue 28; added to the contract, nothing renamed).
    ("POST", "/v1/audit/keys/rotate"),
    // Operations.
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
];

/// Operations the project added to API.md's contract (it may add, never rename): the
/// document lists them like the rest.
const ADDED: &[(&str, &str)] = &[
    // The operator's listing of a region's tenants.
    ("GET", "/v1/tenants"),
    // An offboarded tenant's signed certificate (issue 28).
    ("GET", "/v1/tenants/{tenant}/offboarding"),
    // Destroying a retired data key version (issue 28).
    ("DELETE", "/v1/tenants/{tenant}/keys/{version}"),
    // The tenant's bounds of automatic key rotation (issue 28).
    ("GET", "/v1/tenants/{tenant}/keys/policy"),
    ("PUT", "/v1/tenants/{tenant}/keys/policy"),
    // The operator's re-application of the erasure ledger (issue 29).
    ("POST", "/v1/subjects/erasures/reapply"),
];

/// Routes of API.md that no handler serves yet. The document is generated from the code,
/// so it cannot list them; the test below fails as soon as one is routed, so that its
/// handler gets annotated and the route leaves this list.
const NOT_YET_ROUTED: &[(&str, &str)] = &[
    ("POST", "/v1/tenants/{tenant}/relocations"),
    ("GET", "/v1/tenants/{tenant}/relocations/{id}"),
];

/// Operations anyone may call; every other one requires the bearer scheme.
const NO_AUTH: &[&str] = &[
    "/v1/audit/keys",
    "/v1/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// A syntactically valid tenant id that names no tenant.
const DUMMY_TENANT: &str = "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60";

/// The detail of the router's fallback (`problem::not_found`).
const FALLBACK_DETAIL: &str = "no such resource";

async fn document(state: &api::NodeState) -> Value {
    let response = get(state, "/v1/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    serde_json::from_str(&body_text(response).await).expect("the document is JSON")
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths object");
    let mut found = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(*method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

fn owned(routes: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect()
}

/// Every `$ref` under `value`, with the JSON pointer where it occurs.
fn refs(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    if let Some(target) = child.as_str() {
                        found.push((at.to_owned(), target.to_owned()));
                    }
                } else {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    refs(child, &format!("{at}/{escaped}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// `path` with every `{param}` replaced by a dummy value.
fn concrete(path: &str) -> String {
    path.replace("{tenant}", DUMMY_TENANT)
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "dummy-id"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_every_route_of_api_md() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let doc = document(&node.state).await;

    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let documented = operations(&doc);
    let expected: BTreeSet<_> = owned(API_MD)
        .difference(&owned(NOT_YET_ROUTED))
        .cloned()
        .chain(owned(ADDED))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes of API.md not documented: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        extra.is_empty(),
        "documented operations that API.md does not list: {extra:?}"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let id = operation["operationId"].as_str().expect("an operationId");
        assert!(
            operation_ids.insert(id.to_owned()),
            "operationId {id} twice"
        );

        // Every path template is a declared path parameter, and nothing else is.
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().expect("parameter name"))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(templated, declared, "{method} {path}: path parameters");

        // Authentication: the bearer scheme everywhere but the public operations.
        let secured = operation["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        assert_eq!(
            secured,
            !NO_AUTH.contains(&path.as_str()),
            "{method} {path}: security"
        );

        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path}: no success response"
        );
        if secured {
            let tenant_scoped = path.starts_with("/v1/tenants/{tenant}");
            let statuses = ["401", "403", "429", "503"]
                .into_iter()
                .chain(tenant_scoped.then_some("404"));
            for status in statuses {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: {status} undocumented"
                );
            }
        }
    }

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
}

#[tokio::test]
async fn every_ref_resolves_and_errors_are_problem_json() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let doc = document(&node.state).await;

    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(!found.is_empty(), "the document uses components");
    for (at, target) in &found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: external $ref {target}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: $ref {target} does not resolve"
        );
    }

    // Resolves a response, following one `$ref`.
    let response = |path: &str, method: &str, status: &str| -> Value {
        let response = &doc["paths"][path][method]["responses"][status];
        match response["$ref"].as_str() {
            Some(target) => doc
                .pointer(target.trim_start_matches('#'))
                .cloned()
                .unwrap_or(Value::Null),
            None => response.clone(),
        }
    };
    let header_names = |response: &Value| -> BTreeSet<String> {
        response["headers"]
            .as_object()
            .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default()
    };

    for (method, path) in operations(&doc) {
        let method = method.to_lowercase();
        let statuses: Vec<String> = doc["paths"][&path][&method]["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect();
        for status in statuses {
            let answer = response(&path, &method, &status);
            let headers = header_names(&answer);
            assert!(
                headers.contains("x-request-id"),
                "{method} {path} {status}: X-Request-Id"
            );
            if path.starts_with("/v1/tenants/{tenant}") {
                for name in ["x-residency-region", "x-residency-via"] {
                    assert!(headers.contains(name), "{method} {path} {status}: {name}");
                }
            }
            let code: u16 = status.parse().expect("numeric status");
            if code >= 400 && path != "/readyz" {
                let content = &answer["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    content["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}: problem+json"
                );
            }
            if code == 429 || (code == 503 && path != "/readyz") {
                assert!(
                    headers.contains("retry-after"),
                    "{method} {path} {status}: Retry-After"
                );
            }
        }
    }

    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "request_id"] {
        assert!(problem.get(field).is_some(), "Problem.{field}");
    }

    // The headers API.md names where it names them.
    let records = "/v1/tenants/{tenant}/collections/{collection}/records";
    let record = "/v1/tenants/{tenant}/collections/{collection}/records/{id}";
    let file = "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}";
    for (path, method, status, names) in [
        (records, "post", "201", &["etag", "x-consistency-token"][..]),
        (record, "put", "200", &["etag", "x-consistency-token"][..]),
        (record, "delete", "204", &["x-consistency-token"][..]),
        (file, "put", "201", &["x-consistency-token"][..]),
        (file, "delete", "204", &["x-consistency-token"][..]),
        (record, "get", "200", &["etag", "x-served-by"][..]),
        (records, "get", "200", &["x-served-by"][..]),
        (file, "get", "200", &["x-served-by"][..]),
    ] {
        let headers = header_names(&response(path, method, status));
        for name in names {
            assert!(headers.contains(*name), "{method} {path} {status}: {name}");
        }
    }
    for (path, method, parameter) in [
        (record, "put", "If-Match"),
        (record, "delete", "If-Match"),
        (record, "get", "X-Consistency-Token"),
        (records, "get", "X-Consistency-Token"),
        (file, "get", "X-Consistency-Token"),
        (records, "post", "Idempotency-Key"),
        (file, "put", "Idempotency-Key"),
        ("/v1/tenants", "post", "Idempotency-Key"),
    ] {
        let parameters = doc["paths"][path][method]["parameters"]
            .as_array()
            .expect("parameters");
        let declared = parameters
            .iter()
            .find(|p| p["in"] == "header" && p["name"] == parameter)
            .unwrap_or_else(|| panic!("{method} {path}: {parameter} parameter"));
        assert_eq!(
            (&declared["required"], &declared["schema"]["type"]),
            (&Value::Bool(false), &Value::from("string")),
            "{method} {path}: {parameter} is an optional string"
        );
    }

    // A reused idempotency key is a problem of its own type, documented where keys go.
    for (path, method) in [(records, "post"), (file, "put"), ("/v1/tenants", "post")] {
        let unprocessable = response(path, method, "422");
        assert!(
            unprocessable.to_string().contains("idempotency-key-reused"),
            "{method} {path}: 422 names idempotency-key-reused"
        );
    }

    // Bodies that are not JSON say what they are.
    let export = &doc["paths"]["/v1/tenants/{tenant}/audit/export"]["get"]["responses"]["200"];
    assert!(export["content"].get("application/x-ndjson").is_some());
    let file_get = &doc["paths"][file]["get"]["responses"]["200"];
    assert!(
        file_get["content"]
            .get("application/octet-stream")
            .is_some()
    );
    let file_put = &doc["paths"][file]["put"]["requestBody"];
    assert!(
        file_put["content"]
            .get("application/octet-stream")
            .is_some()
    );
    let events = &doc["paths"]["/v1/tenants/{tenant}/audit/events"]["get"]["responses"]["200"];
    assert_eq!(
        events["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/AuditEventPage"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_a_documented_status() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let doc = document(&node.state).await;

    for (method, path) in operations(&doc) {
        let uri = concrete(&path);
        let response = crate::app(node.state.clone())
            .oneshot(
                Request::builder()
                    .method(Method::from_bytes(method.as_bytes()).expect("method"))
                    .uri(&uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let text = body_text(response).await;
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: the router has the path but not the method"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && text.contains(FALLBACK_DETAIL)),
            "{method} {path}: the router does not serve it ({uri}: {text})"
        );
        let documented = &doc["paths"][&path][method.to_lowercase()]["responses"];
        assert!(
            documented.get(status.as_str()).is_some(),
            "{method} {uri} answered {status}, which the document does not list: {text}"
        );
        if !NO_AUTH.contains(&path.as_str()) {
            assert!(
                [StatusCode::UNAUTHORIZED, StatusCode::BAD_REQUEST].contains(&status),
                "{method} {uri} without credentials (and without a body): {status} {text}"
            );
        }
    }
}

#[tokio::test]
async fn routes_of_api_md_that_are_not_routed_yet_are_not_documented() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let doc = document(&node.state).await;
    let documented = operations(&doc);

    for (method, path) in NOT_YET_ROUTED {
        let uri = concrete(path);
        let response = crate::app(node.state.clone())
            .oneshot(
                Request::builder()
                    .method(*method)
                    .uri(&uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let text = body_text(response).await;
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND && text.contains(FALLBACK_DETAIL));
        assert!(
            unrouted,
            "{method} {path} is routed now ({status}): annotate its handler with \
             #[utoipa::path], list it in crates/api/src/openapi.rs and remove it from \
             NOT_YET_ROUTED"
        );
        assert!(
            !documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn a_method_a_path_does_not_have_is_a_problem_naming_the_allowed_ones() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let record = concrete("/v1/tenants/{tenant}/collections/people/records/{id}");
    // (method, path, the path's methods, whether it is tenant-scoped)
    let cases = [
        ("PATCH", record.as_str(), "GET,HEAD,PUT,DELETE", true),
        ("DELETE", "/healthz", "GET,HEAD", false),
        // `GET /v1/tenants` (the listing) was added after this case was written.
        ("PUT", "/v1/tenants", "POST,GET,HEAD", false),
        ("POST", "/v1/audit/keys", "GET,HEAD", false),
    ];
    for (method, uri, allowed, tenant_scoped) in cases {
        let response = crate::app(node.state.clone())
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("x-request-id", "req-405")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        let headers = response.headers().clone();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{method} {uri}"
        );
        assert_eq!(headers[header::ALLOW], allowed, "{method} {uri}");
        assert_eq!(
            headers.contains_key("x-residency-region"),
            tenant_scoped,
            "{method} {uri}: routing headers on tenant-scoped paths only"
        );
        let problem: Value =
            serde_json::from_str(&body_text(response).await).expect("a problem document");
        assert_eq!(
            problem["type"], "https://residency.dev/problems/method-not-allowed",
            "{method} {uri}: {problem}"
        );
        assert_eq!(problem["status"], 405);
        assert_eq!(problem["request_id"], "req-405");
        let detail = problem["detail"].as_str().expect("a detail");
        assert!(detail.contains(method), "{detail}");
        assert!(
            !detail.contains(DUMMY_TENANT),
            "the detail names no identifier: {detail}"
        );
    }
}

#[tokio::test]
async fn a_client_request_id_is_echoed_only_when_it_is_short_visible_text() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let longest = "r".repeat(telemetry::MAX_CLIENT_REQUEST_ID_LEN);
    let too_long = "r".repeat(telemetry::MAX_CLIENT_REQUEST_ID_LEN + 1);
    // (sent, echoed)
    let cases: [(&[u8], bool); 5] = [
        (b"order 42/retry", true),
        (longest.as_bytes(), true),
        (too_long.as_bytes(), false),
        (b"", false),
        ("caf\u{e9}".as_bytes(), false),
    ];
    for (sent, echoed) in cases {
        let response = crate::app(node.state.clone())
            .oneshot(
                Request::builder()
                    .uri("/healthz")
                    .header(
                        "x-request-id",
                        header::HeaderValue::from_bytes(sent).expect("a header value"),
                    )
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let answered = response.headers()["x-request-id"].as_bytes().to_vec();
        if echoed {
            assert_eq!(answered, sent);
        } else {
            let generated = std::str::from_utf8(&answered).expect("ascii");
            assert!(
                uuid::Uuid::parse_str(generated).is_ok(),
                "{:?} is replaced by a generated id, not {generated}",
                String::from_utf8_lossy(sent)
            );
        }
    }
}
