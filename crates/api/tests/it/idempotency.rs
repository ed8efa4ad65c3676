//! Idempotent creates over real HTTP: a record create or a file put sent again with the
//! same `Idempotency-Key` and request answers as the first time and stores nothing twice,
//! also when the first answer was lost on the wire after the commit; the key with another
//! request is 422; keys are per tenant, expire after 24 hours and are bounded per tenant.

use std::net::SocketAddr;

use devstack::testing::TestDatabase;
use devstack::testing::connect;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store::testing::region_database;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};

use crate::tenant_api::{Answer, Served, collect_files, person, serve_node};
use crate::{OPERATOR_TOKEN, node};

/// A node on a database of its own, and a superuser connection to that database.
async fn node_and_database() -> (Served, tokio_postgres::Client, TestDatabase) {
    let (database, db) = region_database("eu-central-1").await;
    let api = serve_node(node(db)).await;
    let sql = connect(database.primary.clone()).await;
    (api, sql, database)
}

/// A tenant with the `people` collection and a writer key.
async fn tenant_with_writer(api: &Served) -> (String, String) {
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    (tenant, writer)
}

async fn create_keyed(api: &Served, tenant: &str, writer: &str, key: &str, data: Value) -> Answer {
    api.call(
        Method::POST,
        &format!("/v1/tenants/{tenant}/collections/people/records"),
        Some(writer),
        Some(json!({ "data": data })),
        &[("idempotency-key", key)],
    )
    .await
}

async fn records_of(sql: &tokio_postgres::Client, tenant: &str) -> i64 {
    sql.query_one(
        "select count(*) from records where tenant_id = $1",
        &[&tenant],
    )
    .await
    .expect("count records")
    .get(0)
}

/// The tenant's one idempotency row, as text.
async fn key_row_text(sql: &tokio_postgres::Client, tenant: &str) -> String {
    let row: Vec<u8> = sql
        .query_one(
            "select convert_to(row(k.*)::text, 'UTF8') from idempotency_keys k
             where tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("the key's row")
        .get(0);
    String::from_utf8_lossy(&row).into_owned()
}

#[tokio::test]
async fn a_retried_create_answers_as_the_first_and_stores_one_record() {
    let (api, sql, _database) = node_and_database().await;
    let (tenant, writer) = tenant_with_writer(&api).await;

    let events = async || -> i64 {
        sql.query_one(
            "select count(*) from audit_events where tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("count events")
        .get(0)
    };
    let first = create_keyed(&api, &tenant, &writer, "order-42", person("a@example.com")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let audited = events().await;
    let again = create_keyed(&api, &tenant, &writer, "order-42", person("a@example.com")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body, first.body, "the same record, version and time");
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(records_of(&sql, &tenant).await, 1);
    assert_eq!(events().await, audited, "a replay creates no event");

    // The replay's consistency token reads the first write.
    let id = first.body["id"].as_str().expect("id");
    let token = again.header("x-consistency-token").expect("a token");
    let read = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/collections/people/records/{id}"),
            Some(&writer),
            None,
            &[("x-consistency-token", token)],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.body["data"], person("a@example.com"));

    // Only the key's hash is stored, never its text, and nothing of the record's data.
    let stored = key_row_text(&sql, &tenant).await;
    for secret in ["order-42", "a@example.com", "Ada Lovelace"] {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
    }

    // A create without a key still creates every time.
    for _ in 0..2 {
        let plain = api
            .create_person(&tenant, &writer, person("a@example.com"))
            .await;
        assert_eq!(plain.status, StatusCode::CREATED);
    }
    assert_eq!(records_of(&sql, &tenant).await, 3);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_creates_nothing() {
    let (api, sql, _database) = node_and_database().await;
    let (tenant, writer) = tenant_with_writer(&api).await;

    let first = create_keyed(&api, &tenant, &writer, "k-1", person("a@example.com")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let other = create_keyed(&api, &tenant, &writer, "k-1", person("b@example.com")).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        other.body
    );
    assert_eq!(
        other.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        other.body["type"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("idempotency-key-reused")),
        "{:?}",
        other.body
    );
    assert!(!other.bytes.windows(13).any(|w| w == b"b@example.com"));
    assert_eq!(records_of(&sql, &tenant).await, 1);

    // Keys that are not 1 to 255 printable ASCII characters are refused, nothing stored.
    let long = "k".repeat(256);
    for bad in ["", long.as_str(), "tab\there"] {
        let refused = create_keyed(&api, &tenant, &writer, bad, person("c@example.com")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert_eq!(records_of(&sql, &tenant).await, 1);
}

#[tokio::test]
async fn tenants_keys_are_independent_and_an_expired_key_creates_anew() {
    let (api, sql, _database) = node_and_database().await;
    let (one, one_writer) = tenant_with_writer(&api).await;
    let (two, two_writer) = tenant_with_writer(&api).await;

    let first = create_keyed(&api, &one, &one_writer, "shared", person("a@example.com")).await;
    let second = create_keyed(&api, &two, &two_writer, "shared", person("a@example.com")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    assert_ne!(first.body["id"], second.body["id"]);
    assert_eq!(records_of(&sql, &one).await, 1);
    assert_eq!(records_of(&sql, &two).await, 1);

    // A day and more later, the key is forgotten: the same request creates again.
    sql.execute(
        "update idempotency_keys set created_at = now() - interval '24 hours 1 second'
         where tenant_id = $1",
        &[&one],
    )
    .await
    .expect("age the key");
    let later = create_keyed(&api, &one, &one_writer, "shared", person("a@example.com")).await;
    assert_eq!(later.status, StatusCode::CREATED, "{:?}", later.body);
    assert_ne!(later.body["id"], first.body["id"]);
    assert_eq!(records_of(&sql, &one).await, 2);
    // And the new answer is the one kept.
    let replay = create_keyed(&api, &one, &one_writer, "shared", person("a@example.com")).await;
    assert_eq!(replay.body["id"], later.body["id"]);
    assert_eq!(records_of(&sql, &one).await, 2);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_store_one_record() {
    let (api, sql, _database) = node_and_database().await;
    let (tenant, writer) = tenant_with_writer(&api).await;
    let api = std::sync::Arc::new(api);

    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (api, tenant, writer) = (api.clone(), tenant.clone(), writer.clone());
        creates.spawn(async move {
            create_keyed(&api, &tenant, &writer, "burst", person("a@example.com")).await
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(done) = creates.join_next().await {
        let answer = done.expect("a create");
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        ids.insert(answer.body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        ids.len(),
        1,
        "every create answers with one record: {ids:?}"
    );
    assert_eq!(records_of(&sql, &tenant).await, 1);
}

#[tokio::test]
async fn a_tenant_at_its_bound_of_live_keys_gets_429_for_keyed_creates_only() {
    let (api, sql, _database) = node_and_database().await;
    let (tenant, writer) = tenant_with_writer(&api).await;
    sql.execute(
        "insert into idempotency_keys
             (tenant_id, key_hash, operation, request_hash, status, response)
         select $1, sha256(n::text::bytea), 'record.create', sha256(''::bytea), 201, '{}'
         from generate_series(1, $2::bigint) n",
        &[&tenant, &service::idempotency::MAX_LIVE_KEYS_PER_TENANT],
    )
    .await
    .expect("fill the tenant's keys");

    let refused = create_keyed(&api, &tenant, &writer, "one-more", person("a@example.com")).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(records_of(&sql, &tenant).await, 0);
    let plain = api
        .create_person(&tenant, &writer, person("a@example.com"))
        .await;
    assert_eq!(plain.status, StatusCode::CREATED);

    // Expired keys do not count, and the next keyed create clears a batch of them.
    sql.execute(
        "update idempotency_keys set created_at = now() - interval '25 hours'
         where tenant_id = $1 and key_hash in (
             select key_hash from idempotency_keys where tenant_id = $1 limit 150)",
        &[&tenant],
    )
    .await
    .expect("age some keys");
    let accepted = create_keyed(&api, &tenant, &writer, "one-more", person("a@example.com")).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);
    let expired: i64 = sql
        .query_one(
            "select count(*) from idempotency_keys
             where tenant_id = $1 and created_at < now() - interval '24 hours'",
            &[&tenant],
        )
        .await
        .expect("count expired")
        .get(0);
    assert_eq!(expired, 50, "a batch of 100 expired keys went");
}

#[tokio::test]
async fn a_retried_file_put_answers_as_the_first_and_keeps_one_object() {
    let (api, sql, _database) = node_and_database().await;
    let (tenant, writer) = tenant_with_writer(&api).await;
    let created = api
        .create_person(&tenant, &writer, person("f@example.com"))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let url = format!(
        "{}/v1/tenants/{tenant}/collections/people/records/{id}/files/scan.pdf",
        api.base
    );
    let put = |content: &'static [u8]| {
        api.raw(
            api.http
                .put(&url)
                .bearer_auth(&writer)
                .header("idempotency-key", "upload-1")
                .header("content-type", "application/pdf")
                .body(content),
        )
    };
    let first = put(b"first bytes").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = put(b"first bytes").await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body, first.body);
    assert!(again.header("x-consistency-token").is_some());

    let other = put(b"other bytes").await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        other.body
    );
    // The retries' uploads were deleted: one object, one file row, the first bytes.
    let mut objects = Vec::new();
    collect_files(&api.node.dir.path().join("objects"), &mut objects);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let files: i64 = sql
        .query_one(
            "select count(*) from files where tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("count files")
        .get(0);
    assert_eq!(files, 1);
    let got = api.raw(api.http.get(&url).bearer_auth(&writer)).await;
    assert_eq!(got.bytes, b"first bytes");
}

/// A proxy in front of `upstream` whose first connection forwards the request and closes
/// the client's side as soon as the response starts (the node has committed), forwarding
/// none of it; later connections pass through.
async fn proxy_losing_the_first_answer(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let address = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                continue;
            };
            if std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let (mut client_read, client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let forward = tokio::spawn(async move {
                        tokio::io::copy(&mut client_read, &mut server_write).await
                    });
                    let mut started = [0u8; 1];
                    let _ = server_read.read(&mut started).await;
                    forward.abort();
                    drop(client_write);
                });
            } else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        }
    });
    address
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_after_commit_is_retried_into_the_same_record() {
    let (api, sql, _database) = node_and_database().await;
    let (tenant, writer) = tenant_with_writer(&api).await;
    let node_address: SocketAddr = api
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("node address");
    let proxy = proxy_losing_the_first_answer(node_address).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let send = || {
        client
            .post(format!(
                "http://{proxy}/v1/tenants/{tenant}/collections/people/records"
            ))
            .bearer_auth(&writer)
            .header("idempotency-key", "lost-answer")
            .json(&json!({ "data": person("lost@example.com") }))
            .send()
    };

    let lost = send().await;
    assert!(lost.is_err(), "the first answer never arrives: {lost:?}");
    // The create committed all the same.
    assert_eq!(records_of(&sql, &tenant).await, 1);
    let stored_id: String = sql
        .query_one(
            "select record_id from records where tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("the record")
        .get(0);

    let retried = send().await.expect("the retry's answer");
    assert_eq!(retried.status(), StatusCode::CREATED);
    let body: Value = retried.json().await.expect("json");
    assert_eq!(
        body["id"],
        stored_id.as_str(),
        "the record the first create made"
    );
    assert_eq!(body["data"], person("lost@example.com"));
    assert_eq!(records_of(&sql, &tenant).await, 1, "exactly one record");
}

async fn create_tenant_keyed(api: &Served, key: &str, name: &str) -> Answer {
    api.call(
        Method::POST,
        "/v1/tenants",
        Some(OPERATOR_TOKEN),
        Some(json!({"name": name, "home_region": "eu-central-1"})),
        &[("idempotency-key", key)],
    )
    .await
}

#[tokio::test]
async fn a_retried_tenant_creation_answers_with_the_same_tenant_and_admin_key() {
    let (api, sql, _database) = node_and_database().await;
    let tenants = async || -> i64 {
        sql.query_one("select count(*) from tenants", &[])
            .await
            .expect("count tenants")
            .get(0)
    };

    let first = create_tenant_keyed(&api, "new-customer-7", "Acme GmbH").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = create_tenant_keyed(&api, "new-customer-7", "Acme GmbH").await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(
        again.body, first.body,
        "the same tenant and the same admin key"
    );
    assert_eq!(tenants().await, 1);
    let tenant = first.body["id"].as_str().expect("id").to_owned();
    let admin = first.body["admin_key"]
        .as_str()
        .expect("admin key")
        .to_owned();
    api.people(&tenant, &admin).await;

    // The admin key rests sealed, never as text.
    let stored = key_row_text(&sql, &tenant).await;
    for secret in [
        admin.as_str(),
        admin.rsplit('.').next().expect("secret"),
        "new-customer-7",
    ] {
        assert!(!stored.contains(secret), "stored: {stored}");
    }

    // Other settings under the key: 422, nothing created.
    let other = create_tenant_keyed(&api, "new-customer-7", "Other AG").await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        other.body
    );
    assert_eq!(tenants().await, 1);
    // A tenant's key of the same text is not the operator's.
    let (own, own_admin) = tenant_with_writer(&api).await;
    let record = create_keyed(
        &api,
        &own,
        &own_admin,
        "new-customer-7",
        person("a@example.com"),
    )
    .await;
    assert_eq!(record.status, StatusCode::CREATED, "{:?}", record.body);

    // Once the tenant is offboarded its keys are shredded: the retry cannot be answered
    // again and creates nothing.
    let offboarded = api
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(
        offboarded.status,
        StatusCode::ACCEPTED,
        "{:?}",
        offboarded.body
    );
    let after = create_tenant_keyed(&api, "new-customer-7", "Acme GmbH").await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{:?}", after.body);
    assert!(!String::from_utf8_lossy(&after.bytes).contains(&admin));
    assert_eq!(
        tenants().await,
        2,
        "the offboarded tenant and the other one"
    );
}

#[tokio::test]
async fn concurrent_tenant_creations_with_one_key_create_one_tenant() {
    let (api, sql, _database) = node_and_database().await;
    let api = std::sync::Arc::new(api);
    let mut creations = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let api = api.clone();
        creations
            .spawn(async move { create_tenant_keyed(&api, "onboarding-1", "Acme GmbH").await });
    }
    let mut answers = std::collections::BTreeSet::new();
    while let Some(done) = creations.join_next().await {
        let answer = done.expect("a creation");
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answers.insert(answer.body.to_string());
    }
    assert_eq!(answers.len(), 1, "one tenant, one admin key: {answers:?}");
    let tenants: i64 = sql
        .query_one("select count(*) from tenants", &[])
        .await
        .expect("count tenants")
        .get(0);
    assert_eq!(tenants, 1);
}
