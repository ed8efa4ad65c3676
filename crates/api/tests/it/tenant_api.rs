//! End-to-end tests of the tenant API over real HTTP: a node bound to a loopback port in
//! front of a real primary and streaming replica (the harness's region), called with
//! reqwest as a tenant's backend would.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use store::RegionDatabase;
use store::testing::region_database;

use crate::{Node, OPERATOR_TOKEN, node};

/// A node serving on a loopback port.
#[derive(Debug)]
pub struct Served {
    pub node: Node,
    pub base: String,
    pub http: Client,
    _server: tokio::task::JoinHandle<()>,
}

pub async fn serve_node(node: Node) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let state = node.state.clone();
    let server = tokio::spawn(async move {
        api::serve(listener, state, std::future::pending())
            .await
            .expect("serve");
    });
    Served {
        node,
        base: format!("http://{address}"),
        http: Client::new(),
        _server: server,
    }
}

pub async fn serve(database: RegionDatabase) -> Served {
    serve_node(node(database)).await
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl Served {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("send request")).await
    }

    pub async fn raw(&self, request: reqwest::RequestBuilder) -> Answer {
        answer(request.send().await.expect("send request")).await
    }

    /// Creates a tenant homed here; returns its id and admin key.
    pub async fn tenant(&self) -> (String, String) {
        let created = self
            .call(
                Method::POST,
                "/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(json!({"name": "Acme GmbH", "home_region": "eu-central-1"})),
                &[],
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        (
            created.body["id"].as_str().expect("id").to_owned(),
            created.body["admin_key"].as_str().expect("key").to_owned(),
        )
    }

    /// The tenant's audit export (200), checked to verify offline with the keys of
    /// `/v1/audit/keys`.
    pub async fn verified_export(&self, tenant: &str, auditor: &str) -> (Answer, audit::Summary) {
        let keys = self
            .call(Method::GET, "/v1/audit/keys", None, None, &[])
            .await;
        let export = self
            .call(
                Method::GET,
                &format!("/v1/tenants/{tenant}/audit/export"),
                Some(auditor),
                None,
                &[],
            )
            .await;
        assert_eq!(export.status, StatusCode::OK);
        let key_set =
            audit::KeySet::from_json(&String::from_utf8_lossy(&keys.bytes)).expect("key set");
        let summary =
            audit::verify_bundle(export.bytes.as_slice(), &key_set).expect("the bundle verifies");
        (export, summary)
    }

    /// A key of `role` for `tenant`.
    pub async fn key(&self, tenant: &str, admin: &str, role: &str) -> String {
        let created = self
            .call(
                Method::POST,
                &format!("/v1/tenants/{tenant}/api-keys"),
                Some(admin),
                Some(json!({"name": format!("{role} key"), "role": role})),
                &[],
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        created.body["key"].as_str().expect("key").to_owned()
    }

    /// Puts API.md's example `people` schema.
    pub async fn people(&self, tenant: &str, admin: &str) {
        let answer = self
            .call(
                Method::PUT,
                &format!("/v1/tenants/{tenant}/collections/people"),
                Some(admin),
                Some(people_schema()),
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    }

    pub async fn create_person(&self, tenant: &str, key: &str, data: Value) -> Answer {
        self.call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/collections/people/records"),
            Some(key),
            Some(json!({ "data": data })),
            &[],
        )
        .await
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("read body").to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        bytes,
    }
}

pub fn people_schema() -> Value {
    wire::examples::collection_schema()
}

pub fn person(email: &str) -> Value {
    json!({"email": email, "name": "Ada Lovelace", "age": 36, "zip": "10115",
           "diagnosis": "flu", "plan": "pro"})
}

fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json"),
        "errors are problem+json"
    );
    assert_eq!(answer.body["status"], status.as_u16());
    assert!(answer.body["request_id"].is_string(), "{:?}", answer.body);
}

#[tokio::test]
async fn tenants_are_created_by_the_operator_only_and_validated() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;

    let fetched = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["home_region"], "eu-central-1");
    assert_eq!(fetched.body["allowed_regions"], json!(["eu-central-1"]));
    assert_eq!(fetched.body["transit"], "proxy");
    assert!(
        fetched.body.get("admin_key").is_none(),
        "keys are shown once"
    );
    assert_eq!(fetched.header("x-residency-region"), Some("eu-central-1"));
    assert_eq!(fetched.header("x-residency-via"), Some("eu-central-1"));

    let body = json!({"name": "X", "home_region": "eu-central-1"});
    let anonymous = api
        .call(Method::POST, "/v1/tenants", None, Some(body.clone()), &[])
        .await;
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED);
    let with_tenant_key = api
        .call(Method::POST, "/v1/tenants", Some(&admin), Some(body), &[])
        .await;
    assert_problem(&with_tenant_key, StatusCode::FORBIDDEN);

    let unknown = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "X", "home_region": "mars-north-1"})),
            &[],
        )
        .await;
    assert_problem(&unknown, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("home_region")
    );

    let outside = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "X", "home_region": "eu-central-1", "allowed_regions": ["eu-west-1"]})),
            &[],
        )
        .await;
    assert_problem(&outside, StatusCode::UNPROCESSABLE_ENTITY);

    let elsewhere = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "X", "home_region": "us-east-1"})),
            &[],
        )
        .await;
    assert_problem(&elsewhere, StatusCode::MISDIRECTED_REQUEST);
    assert!(
        elsewhere.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("us-east-1")
    );

    let extra = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "X", "home_region": "eu-central-1", "colour": "red"})),
            &[],
        )
        .await;
    assert_problem(&extra, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        extra.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("colour")
    );
}

#[tokio::test]
async fn records_round_trip_with_versions_tokens_and_every_validation_error() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let records = format!("/v1/tenants/{tenant}/collections/people/records");

    let created = api
        .create_person(&tenant, &writer, person("ada@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["data"], person("ada@example.com"));
    assert_eq!(created.header("etag"), Some("\"1\""));
    let token = created
        .header("x-consistency-token")
        .expect("a write returns a token")
        .to_owned();
    let id = created.body["id"].as_str().expect("id").to_owned();

    let read = api
        .call(
            Method::GET,
            &format!("{records}/{id}"),
            Some(&writer),
            None,
            &[("x-consistency-token", &token)],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.body["data"], person("ada@example.com"));
    assert!(matches!(
        read.header("x-served-by"),
        Some("primary" | "replica")
    ));
    assert!(read.body["updated_at"].is_string());

    let stale = api
        .call(
            Method::PUT,
            &format!("{records}/{id}"),
            Some(&writer),
            Some(json!({"data": person("ada@new.example")})),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_problem(&stale, StatusCode::PRECONDITION_FAILED);
    let updated = api
        .call(
            Method::PUT,
            &format!("{records}/{id}"),
            Some(&writer),
            Some(json!({"data": person("ada@new.example")})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["version"], 2);
    assert_eq!(updated.header("etag"), Some("\"2\""));
    let token = updated
        .header("x-consistency-token")
        .expect("token")
        .to_owned();
    let read = api
        .call(
            Method::GET,
            &format!("{records}/{id}"),
            Some(&writer),
            None,
            &[("x-consistency-token", &token)],
        )
        .await;
    assert_eq!(read.body["data"]["email"], "ada@new.example");

    // Every validation error is a 422 naming the field, never echoing the value.
    let mut unknown = person("x@example.com");
    unknown["shoe_size"] = json!(44);
    let mut wrong_type = person("x@example.com");
    wrong_type["age"] = json!("SECRET-AGE-VALUE");
    let mut missing = person("x@example.com");
    missing.as_object_mut().expect("object").remove("email");
    for (data, field) in [
        (unknown, "shoe_size"),
        (wrong_type, "age"),
        (missing, "email"),
    ] {
        let refused = api.create_person(&tenant, &writer, data).await;
        assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);
        let detail = refused.body["detail"].as_str().unwrap_or("");
        assert!(detail.contains(field), "{detail}");
        assert!(!detail.contains("SECRET"), "{detail}");
    }
    let not_json = api
        .raw(
            api.http
                .post(format!("{}{records}", api.base))
                .bearer_auth(&writer)
                .body("{nope"),
        )
        .await;
    assert_problem(&not_json, StatusCode::BAD_REQUEST);
    let huge = format!(
        "{{\"data\": {{\"email\": \"{}\"}}}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let too_large = api
        .raw(
            api.http
                .post(format!("{}{records}", api.base))
                .bearer_auth(&writer)
                .body(huge),
        )
        .await;
    assert_problem(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    let no_collection = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/collections/nope/records"),
            Some(&writer),
            Some(json!({"data": {}})),
            &[],
        )
        .await;
    assert_problem(&no_collection, StatusCode::NOT_FOUND);

    let deleted = api
        .call(
            Method::DELETE,
            &format!("{records}/{id}"),
            Some(&writer),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let token = deleted
        .header("x-consistency-token")
        .expect("token")
        .to_owned();
    let gone = api
        .call(
            Method::GET,
            &format!("{records}/{id}"),
            Some(&writer),
            None,
            &[("x-consistency-token", &token)],
        )
        .await;
    assert_problem(&gone, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn search_matches_blind_indexed_and_public_fields_and_pages() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let mut token = String::new();
    for i in 0..5 {
        let mut data = person(&format!("p{i}@example.com"));
        data["plan"] = json!(if i % 2 == 0 { "pro" } else { "free" });
        let created = api.create_person(&tenant, &writer, data).await;
        assert_eq!(created.status, StatusCode::CREATED);
        token = created
            .header("x-consistency-token")
            .expect("token")
            .to_owned();
    }
    let records = format!("/v1/tenants/{tenant}/collections/people/records");
    let records = records.as_str();
    let search = |query: String| {
        let api = &api;
        let writer = writer.clone();
        let token = token.clone();
        async move {
            api.call(
                Method::GET,
                &format!("{records}?{query}"),
                Some(&writer),
                None,
                &[("x-consistency-token", &token)],
            )
            .await
        }
    };
    let by_email = search("email=p3%40example.com".to_owned()).await;
    assert_eq!(by_email.status, StatusCode::OK, "{:?}", by_email.body);
    let found = by_email.body["records"].as_array().expect("records");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["data"]["email"], "p3@example.com");
    assert!(by_email.body["next_cursor"].is_null());

    let pro = search("plan=pro".to_owned()).await;
    assert_eq!(pro.body["records"].as_array().expect("records").len(), 3);

    let not_searchable = search("name=Ada%20Lovelace".to_owned()).await;
    assert_problem(&not_searchable, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        not_searchable.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("name")
    );
    assert!(
        !not_searchable.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Lovelace")
    );

    // Paging visits every record exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=2&cursor={cursor}"),
            None => "limit=2".to_owned(),
        };
        let page = search(query).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        for record in page.body["records"].as_array().expect("records") {
            seen.push(record["id"].as_str().expect("id").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5));
    let bad_cursor = search("cursor=garbage".to_owned()).await;
    assert_problem(&bad_cursor, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn roles_limit_what_keys_may_do_and_revoked_keys_stop_working() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let reader = api.key(&tenant, &admin, "reader").await;
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let writer = api.key(&tenant, &admin, "writer").await;

    let refused = api
        .create_person(&tenant, &reader, person("r@example.com"))
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN);
    let created = api
        .create_person(&tenant, &writer, person("w@example.com"))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/tenants/{tenant}/collections/people/records/{id}");
    let read = api.call(Method::GET, &path, Some(&reader), None, &[]).await;
    assert_eq!(read.status, StatusCode::OK);
    let auditor_read = api
        .call(Method::GET, &path, Some(&auditor), None, &[])
        .await;
    assert_problem(&auditor_read, StatusCode::FORBIDDEN);
    let writer_audit = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events"),
            Some(&writer),
            None,
            &[],
        )
        .await;
    assert_problem(&writer_audit, StatusCode::FORBIDDEN);
    let writer_keys = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/api-keys"),
            Some(&writer),
            Some(json!({"name": "x", "role": "admin"})),
            &[],
        )
        .await;
    assert_problem(&writer_keys, StatusCode::FORBIDDEN);

    let bad_role = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/api-keys"),
            Some(&admin),
            Some(json!({"name": "x", "role": "root"})),
            &[],
        )
        .await;
    assert_problem(&bad_role, StatusCode::UNPROCESSABLE_ENTITY);

    let key_id = reader.split('.').nth(2).expect("key id").to_owned();
    let revoked = api
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{tenant}/api-keys/{key_id}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = api.call(Method::GET, &path, Some(&reader), None, &[]).await;
    assert_problem(&after, StatusCode::UNAUTHORIZED);
    let forged = format!("{}AAAA", &writer[..writer.len() - 4]);
    let forged = api.call(Method::GET, &path, Some(&forged), None, &[]).await;
    assert_problem(&forged, StatusCode::UNAUTHORIZED);

    // Denials are audited, with the denied outcome.
    let events = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?limit=1000"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(events.status, StatusCode::OK, "{:?}", events.body);
    let denied: Vec<&Value> = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["outcome"] == "denied")
        .collect();
    assert!(
        denied
            .iter()
            .any(|event| event["action"] == "record.create"),
        "{denied:?}"
    );
    assert!(
        denied.iter().any(|event| event["action"] == "record.read"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn another_tenants_key_gets_404_on_every_endpoint_and_the_attempt_is_audited() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant_a, admin_a) = api.tenant().await;
    let (tenant_b, admin_b) = api.tenant().await;
    api.people(&tenant_b, &admin_b).await;
    let writer_b = api.key(&tenant_b, &admin_b, "writer").await;
    let created = api
        .create_person(&tenant_b, &writer_b, person("b@example.com"))
        .await;
    let record_b = created.body["id"].as_str().expect("id").to_owned();
    let file = api
        .raw(
            api.http
                .put(format!(
                    "{}/v1/tenants/{tenant_b}/collections/people/records/{record_b}/files/scan.pdf",
                    api.base
                ))
                .bearer_auth(&writer_b)
                .body(vec![7u8; 1000]),
        )
        .await;
    assert_eq!(file.status, StatusCode::CREATED, "{:?}", file.body);

    let b = format!("/v1/tenants/{tenant_b}");
    let rec = format!("{b}/collections/people/records/{record_b}");
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            format!("{b}/api-keys"),
            Some(json!({"name": "x", "role": "admin"})),
        ),
        (
            Method::DELETE,
            format!("{b}/api-keys/0011223344556677"),
            None,
        ),
        (
            Method::PUT,
            format!("{b}/collections/people"),
            Some(people_schema()),
        ),
        (Method::GET, format!("{b}/collections/people"), None),
        (
            Method::POST,
            format!("{b}/collections/people/records"),
            Some(json!({"data": person("a@x.io")})),
        ),
        (
            Method::GET,
            format!("{b}/collections/people/records?plan=pro"),
            None,
        ),
        (Method::GET, rec.clone(), None),
        (
            Method::PUT,
            rec.clone(),
            Some(json!({"data": person("a@x.io")})),
        ),
        (Method::DELETE, rec.clone(), None),
        (Method::PUT, format!("{rec}/files/scan.pdf"), None),
        (Method::GET, format!("{rec}/files/scan.pdf"), None),
        (Method::DELETE, format!("{rec}/files/scan.pdf"), None),
        (Method::GET, format!("{b}/audit/events"), None),
        (Method::GET, format!("{b}/audit/export"), None),
        (Method::GET, format!("{b}/residency"), None),
    ];
    for (method, path, body) in &endpoints {
        let answer = api
            .call(method.clone(), path, Some(&admin_a), body.clone(), &[])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            answer.body
        );
    }
    // B's record is untouched, and B's chain shows each denied attempt.
    let still = api
        .call(Method::GET, &rec, Some(&writer_b), None, &[])
        .await;
    assert_eq!(still.status, StatusCode::OK);
    let auditor_b = api.key(&tenant_b, &admin_b, "auditor").await;
    let events = api
        .call(
            Method::GET,
            &format!("{b}/audit/events?limit=1000"),
            Some(&auditor_b),
            None,
            &[],
        )
        .await;
    let denied = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["outcome"] == "denied")
        .count();
    assert_eq!(denied, endpoints.len(), "{:?}", events.body);
    let _ = tenant_a;
}

#[tokio::test]
async fn files_round_trip_encrypted_with_a_size_limit() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let created = api
        .create_person(&tenant, &writer, person("f@example.com"))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let url = format!(
        "{}/v1/tenants/{tenant}/collections/people/records/{id}/files/jane-doe-passport.pdf",
        api.base
    );
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let put = api
        .raw(
            api.http
                .put(&url)
                .bearer_auth(&writer)
                .header("content-type", "application/pdf")
                .body(content.clone()),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    assert_eq!(put.body["size"], content.len());
    assert_eq!(put.body["name"], "jane-doe-passport.pdf");
    let token = put.header("x-consistency-token").expect("token").to_owned();
    let got = api
        .raw(
            api.http
                .get(&url)
                .bearer_auth(&writer)
                .header("x-consistency-token", token),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("application/pdf"));
    assert!(got.bytes == content, "the file comes back byte for byte");

    // The store holds ciphertext only, under a name that is not the file's.
    let objects = api.node.dir.path().join("objects");
    let mut stored = Vec::new();
    collect_files(&objects, &mut stored);
    assert_eq!(stored.len(), 1, "one object");
    let raw = std::fs::read(&stored[0]).expect("read object");
    assert!(!contains(&raw, &content[..4096]));
    assert!(!stored[0].to_string_lossy().contains("jane-doe"));

    let too_big = vec![0u8; 64 * 1024 * 1024 + 1];
    let refused = api
        .raw(api.http.put(&url).bearer_auth(&writer).body(too_big))
        .await;
    assert_problem(&refused, StatusCode::PAYLOAD_TOO_LARGE);
    let still = api.raw(api.http.get(&url).bearer_auth(&writer)).await;
    assert!(still.bytes == content, "a refused upload changes nothing");

    let deleted = api.raw(api.http.delete(&url).bearer_auth(&writer)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api.raw(api.http.get(&url).bearer_auth(&writer)).await;
    assert_problem(&gone, StatusCode::NOT_FOUND);
    let mut left = Vec::new();
    collect_files(&objects, &mut left);
    assert!(
        left.is_empty(),
        "deleting the file deletes its object: {left:?}"
    );
}

pub fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn a_planted_marker_never_reaches_the_database_or_the_object_store() {
    let (db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let marker = "MARKER-7f3c9e-PERSONAL";
    let data = json!({"email": format!("{marker}@example.com"), "name": marker, "age": 41,
                      "zip": marker, "diagnosis": marker, "plan": "pro"});
    let created = api.create_person(&tenant, &writer, data).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let file_url = format!(
        "{}/v1/tenants/{tenant}/collections/people/records/{id}/files/{marker}.txt",
        api.base
    );
    let put = api
        .raw(
            api.http
                .put(&file_url)
                .bearer_auth(&writer)
                .body(format!("{marker} {marker}")),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    let search = api
        .call(
            Method::GET,
            &format!(
                "/v1/tenants/{tenant}/collections/people/records?email={marker}%40example.com"
            ),
            Some(&writer),
            None,
            &[],
        )
        .await;
    assert_eq!(search.body["records"].as_array().map(Vec::len), Some(1));
    api.node
        .state
        .service()
        .audit()
        .flush()
        .await
        .expect("flush audit");

    let dump = pg_dump(&db).await;
    assert!(dump.contains(&tenant), "the dump is of the right database");
    assert!(!dump.contains(marker), "the marker reached the database");
    let mut stored = Vec::new();
    collect_files(&api.node.dir.path().join("objects"), &mut stored);
    for path in stored {
        let bytes = std::fs::read(&path).expect("read object");
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "the marker reached {}",
            path.display()
        );
        assert!(!path.to_string_lossy().contains(marker));
    }
}

pub(crate) async fn pg_dump(db: &devstack::testing::TestDatabase) -> String {
    let binaries = devstack::PgBinaries::locate().expect("PostgreSQL binaries");
    let config = &db.primary;
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let mut command = tokio::process::Command::new(binaries.bin("pg_dump"));
    command
        .arg("--host")
        .arg(host)
        .arg("--port")
        .arg(config.get_ports()[0].to_string())
        .arg("--username")
        .arg(config.get_user().unwrap_or("postgres"))
        .arg("--dbname")
        .arg(config.get_dbname().expect("dbname"))
        .arg("--data-only");
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).to_string());
    }
    let output = command.output().await.expect("run pg_dump");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_audit_export_verifies_offline_and_is_itself_audited() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let auditor = api.key(&tenant, &admin, "auditor").await;
    for i in 0..3 {
        let created = api
            .create_person(&tenant, &writer, person(&format!("e{i}@example.com")))
            .await;
        let id = created.body["id"].as_str().expect("id").to_owned();
        let read = api
            .call(
                Method::GET,
                &format!("/v1/tenants/{tenant}/collections/people/records/{id}"),
                Some(&writer),
                None,
                &[],
            )
            .await;
        assert_eq!(read.status, StatusCode::OK);
    }
    let keys = api
        .call(Method::GET, "/v1/audit/keys", None, None, &[])
        .await;
    assert_eq!(keys.status, StatusCode::OK);
    assert_eq!(keys.body["keys"][0]["algorithm"], "ed25519");
    assert_eq!(keys.body["keys"][0]["region"], "eu-central-1");

    let (export, summary) = api.verified_export(&tenant, &auditor).await;
    let key_set = audit::KeySet::from_json(&String::from_utf8_lossy(&keys.bytes)).expect("key set");
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    let text = String::from_utf8_lossy(&export.bytes).into_owned();
    for action in [
        "tenant.create",
        "apikey.create",
        "collection.put",
        "record.create",
        "record.read",
        "audit.export",
    ] {
        assert!(
            text.contains(&format!("\"action\":\"{action}\"")),
            "{action} missing from the export"
        );
    }
    assert!(summary.count >= 10, "{summary:?}");
    assert!(
        !text.contains("example.com"),
        "events carry ids, never values"
    );

    // Paging by action.
    let creates = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?action=record.create&limit=2"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(creates.status, StatusCode::OK, "{:?}", creates.body);
    assert_eq!(creates.body["events"].as_array().map(Vec::len), Some(2));
    let cursor = creates.body["next_cursor"]
        .as_str()
        .expect("another page")
        .to_owned();
    let rest = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?action=record.create&cursor={cursor}"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(rest.body["events"].as_array().map(Vec::len), Some(1));
    let bad = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?action=record.explode"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY);

    let evidence = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/residency"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(evidence.status, StatusCode::OK, "{:?}", evidence.body);
    assert_eq!(evidence.body["home_region"], "eu-central-1");
    assert_eq!(evidence.body["records"], 3);
    assert!(evidence.body["audit_head"]["seq"].as_u64().unwrap_or(0) > 0);
    let parsed: wire::api::ResidencyEvidence =
        serde_json::from_value(evidence.body.clone()).expect("evidence");
    let payload = service::compliance::evidence_payload(&parsed).expect("payload");
    let signature = audit::Signature::from_base64(&parsed.signature).expect("signature");
    assert!(
        key_set.verify_signature(&parsed.key_id, "eu-central-1", &payload, &signature),
        "the evidence signature verifies with the published key"
    );
    let mut forged = parsed.clone();
    forged.records += 1;
    let forged_payload = service::compliance::evidence_payload(&forged).expect("payload");
    assert!(!key_set.verify_signature(&parsed.key_id, "eu-central-1", &forged_payload, &signature));
}

#[tokio::test]
async fn a_read_with_a_token_is_never_stale_while_the_replica_is_paused() {
    let (db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let created = api
        .create_person(&tenant, &writer, person("v1@example.com"))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/tenants/{tenant}/collections/people/records/{id}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let replica = devstack::testing::connect(db.replica.clone()).await;
    replica
        .execute("select pg_wal_replay_pause()", &[])
        .await
        .expect("pause replay");
    let mut stale_reads = 0;
    for round in 0..5 {
        let updated = api
            .call(
                Method::PUT,
                &path,
                Some(&writer),
                Some(json!({"data": person(&format!("v{}@example.com", round + 2))})),
                &[],
            )
            .await;
        assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
        let token = updated
            .header("x-consistency-token")
            .expect("token")
            .to_owned();
        let read = api
            .call(
                Method::GET,
                &path,
                Some(&writer),
                None,
                &[("x-consistency-token", &token)],
            )
            .await;
        assert_eq!(read.status, StatusCode::OK);
        if read.body["version"] != updated.body["version"] {
            stale_reads += 1;
        }
        assert_eq!(
            read.header("x-served-by"),
            Some("primary"),
            "the paused replica cannot serve it"
        );
    }
    replica
        .execute("select pg_wal_replay_resume()", &[])
        .await
        .expect("resume replay");
    assert_eq!(stale_reads, 0);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = crate::node_with(
        database,
        api::rate_limit::RateLimit {
            per_second: 1.0,
            burst: 3.0,
        },
    );
    let api = serve_node(node).await;
    let (tenant, admin) = api.tenant().await;
    let path = format!("/v1/tenants/{tenant}/collections/people");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(api.call(Method::GET, &path, Some(&admin), None, &[]).await);
    }
    let limited = statuses
        .iter()
        .find(|answer| answer.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("a 429");
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn a_token_with_another_keys_id_cannot_drain_that_keys_rate_limit() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = crate::node_with(
        database,
        api::rate_limit::RateLimit {
            per_second: 0.1,
            burst: 3.0,
        },
    );
    let api = serve_node(node).await;
    let (tenant, admin) = api.tenant().await;
    let path = format!("/v1/tenants/{tenant}/collections/people");
    // The admin key's tenant and id (public), with a made-up secret of the right shape.
    let (public_part, _secret) = admin.rsplit_once('.').expect("a key token");
    let forged = format!("{public_part}.{}", "A".repeat(43));
    let mut forged_statuses = Vec::new();
    for _ in 0..8 {
        let answer = api.call(Method::GET, &path, Some(&forged), None, &[]).await;
        forged_statuses.push(answer.status);
    }
    assert!(
        forged_statuses.contains(&StatusCode::UNAUTHORIZED)
            && forged_statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the forged token is refused, then limited: {forged_statuses:?}"
    );
    // The key itself still has its whole burst.
    for _ in 0..3 {
        let answer = api.call(Method::GET, &path, Some(&admin), None, &[]).await;
        assert_ne!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "the key's bucket was not drained by the forged token"
        );
    }
}

/// A schema change that stored records could not follow is refused with 409 naming the
/// field, and changes nothing: a public field turned personal would otherwise stay in
/// plaintext in every record written before, and a field turned searchable would have no
/// tokens in them.
#[tokio::test]
async fn schema_changes_that_stored_records_could_not_follow_are_refused() {
    let (_db, database) = region_database("eu-central-1").await;
    let served = serve(database).await;
    let (tenant, admin) = served.tenant().await;
    served.people(&tenant, &admin).await;
    let path = format!("/v1/tenants/{tenant}/collections/people");
    let put = |schema: Value| served.call(Method::PUT, &path, Some(&admin), Some(schema), &[]);
    let with = |field: &str, key: &str, value: Value| {
        let mut schema = people_schema();
        schema["fields"][field][key] = value;
        schema
    };

    // While the collection is empty, any change goes.
    let plan_sensitive = with("plan", "class", json!("sensitive"));
    assert_eq!(put(plan_sensitive.clone()).await.status, StatusCode::OK);
    assert_eq!(put(people_schema()).await.status, StatusCode::OK);
    let created = served
        .create_person(&tenant, &admin, person("ada@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let before = served
        .call(Method::GET, &path, Some(&admin), None, &[])
        .await;

    for (schema, field) in [
        // public -> encrypted: the stored value is plaintext.
        (plan_sensitive, "plan"),
        // encrypted -> public: the stored value is sealed.
        (with("name", "class", json!("public")), "name"),
        // searchable: the stored records have no tokens.
        (with("zip", "searchable", json!(true)), "zip"),
    ] {
        let refused = put(schema).await;
        assert_problem(&refused, StatusCode::CONFLICT);
        assert_eq!(
            refused.body["type"], "https://residency.dev/problems/schema-conflict",
            "{:?}",
            refused.body
        );
        let detail = refused.body["detail"].as_str().expect("detail");
        assert!(detail.starts_with(&format!("{field}: ")), "{detail}");
    }
    let after = served
        .call(Method::GET, &path, Some(&admin), None, &[])
        .await;
    assert_eq!(
        after.body, before.body,
        "the refused changes changed nothing"
    );

    // Changes that keep every stored value where it is are fine: another encrypted class,
    // a new field.
    let mut compatible = with("name", "class", json!("quasi_identifier"));
    compatible["fields"]["tier"] = json!({"type": "string", "class": "public"});
    assert_eq!(put(compatible).await.status, StatusCode::OK);

    // Removing a field and adding it back encrypted does not get around it: the records
    // still hold the old plaintext.
    let mut without_plan = people_schema();
    without_plan["fields"]
        .as_object_mut()
        .expect("fields")
        .remove("plan");
    assert_eq!(put(without_plan).await.status, StatusCode::OK);
    let readded = put(with("plan", "class", json!("identifier"))).await;
    assert_problem(&readded, StatusCode::CONFLICT);
    assert!(
        readded.body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("plan: ") && d.contains("unencrypted")),
        "{:?}",
        readded.body
    );
}

/// A node seals by its cached copy of a collection's schema. When another node of the
/// region has just made a field personal, the database refuses a stale node's plaintext
/// of it (migration 0007), and the stale node reloads the schema and seals the field, in
/// a create and in an update.
#[tokio::test]
async fn a_node_with_an_old_copy_of_the_schema_still_seals_a_field_made_personal() {
    let (db, database) = region_database("eu-central-1").await;
    let a = serve(database.clone()).await;
    let stale_node = || async {
        serve_node(Node {
            state: crate::node_state(
                database.clone(),
                a.node.dir.path(),
                api::rate_limit::RateLimit::default(),
            ),
            dir: tempfile::tempdir().expect("dir"),
        })
        .await
    };
    let (creator, updater) = (stale_node().await, stale_node().await);
    let (tenant, admin) = a.tenant().await;
    a.people(&tenant, &admin).await;
    let path = format!("/v1/tenants/{tenant}/collections/people");
    // Both read the schema (plan is public) and keep their copies.
    for node in [&creator, &updater] {
        let read = node.call(Method::GET, &path, Some(&admin), None, &[]).await;
        assert_eq!(
            read.body["fields"]["plan"]["class"], "public",
            "{:?}",
            read.body
        );
    }
    // A makes plan personal (the collection is empty, so that is allowed) and writes a
    // record.
    let mut schema = people_schema();
    schema["fields"]["plan"]["class"] = json!("sensitive");
    let changed = a
        .call(Method::PUT, &path, Some(&admin), Some(schema), &[])
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let first = a
        .create_person(&tenant, &admin, person("ada@example.com"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let first = format!("{path}/records/{}", first.body["id"].as_str().expect("id"));
    // The creator writes elsewhere, after every other write, so that its next create
    // takes the one-round-trip path (it knows the tenant's current audit head).
    let notes = format!("/v1/tenants/{tenant}/collections/notes");
    let note_schema = json!({"fields": {"text": {"type": "string", "class": "public"}}});
    let put = a
        .call(Method::PUT, &notes, Some(&admin), Some(note_schema), &[])
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let note = creator
        .call(
            Method::POST,
            &format!("{notes}/records"),
            Some(&admin),
            Some(json!({"data": {"text": "hello"}})),
            &[],
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{:?}", note.body);

    // The stale nodes write plan while their copies still say public.
    let created = creator
        .create_person(&tenant, &admin, person("grace@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let mut changed_person = person("ada@example.com");
    changed_person["plan"] = json!("enterprise");
    let updated = updater
        .call(
            Method::PUT,
            &first,
            Some(&admin),
            Some(json!({ "data": changed_person })),
            &[],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);

    let client = devstack::testing::connect(db.primary.clone()).await;
    let plaintext: i64 = client
        .query_one("select count(*) from records where public ? 'plan'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(plaintext, 0, "plan is stored sealed, never in plaintext");
    let read = a.call(Method::GET, &first, Some(&admin), None, &[]).await;
    assert_eq!(read.body["data"]["plan"], "enterprise", "{:?}", read.body);
}

#[tokio::test]
async fn a_consistency_token_no_node_issued_is_a_400_naming_the_header() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let created = api
        .create_person(&tenant, &admin, person("t@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id");
    let path = format!("/v1/tenants/{tenant}/collections/people/records/{id}");
    let token = created
        .header("x-consistency-token")
        .expect("token")
        .to_owned();
    let read_with = |token: String| {
        let (api, path, admin) = (&api, &path, &admin);
        async move {
            api.call(
                Method::GET,
                path,
                Some(admin),
                None,
                &[("x-consistency-token", &token)],
            )
            .await
        }
    };

    // The same token naming a far-future position: its tag no longer verifies.
    let mut parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4, "v2.<region>.<lsn>.<tag>: {token}");
    parts[2] = "7fffffffffffffff";
    let forged = parts.join(".");
    for bad in [forged, "v2.not-a-token".to_owned()] {
        let read = read_with(bad).await;
        assert_problem(&read, StatusCode::BAD_REQUEST);
        let detail = read.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("X-Consistency-Token"), "{detail}");
    }

    // The real token reads the write; an old unsigned one reads the primary.
    let read = read_with(token).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    let old = model::ConsistencyToken {
        region: model::RegionId::parse("eu-central-1").expect("region"),
        lsn: model::Lsn(u64::MAX),
    }
    .encode();
    let read = read_with(old).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.header("x-served-by"), Some("primary"));
}
