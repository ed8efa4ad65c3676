//! The tenant API through `residency dev`, as a tenant's backend would use it: the
//! operator token from `endpoints.json` creates a tenant, whose keys write records and a
//! 50 MiB file that streams through the node with bounded memory.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::dev::{Dev, api_endpoint, operator_token};

/// The node's peak resident memory so far, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("send request");
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn a_tenant_works_through_residency_dev_and_a_50_mib_file_streams_with_bounded_memory() {
    let state = tempfile::tempdir().expect("state dir");
    let mut dev = Dev::spawn(state.path(), "eu-central-1");
    let endpoints = dev.endpoints().await;
    let operator: &str = &operator_token(&endpoints);
    let api = api_endpoint(&endpoints, "eu-central-1");
    let http = reqwest::Client::new();

    let (status, tenant) = send(
        http.post(format!("{api}/v1/tenants"))
            .bearer_auth(operator)
            .json(&json!({"name": "Big Files Ltd", "home_region": "eu-central-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant:?}\n{}", dev.output());
    let id = tenant["id"].as_str().expect("tenant id");
    let admin = tenant["admin_key"].as_str().expect("admin key");
    let base = format!("{api}/v1/tenants/{id}");
    let (status, _) = send(
        http.put(format!("{base}/collections/docs"))
            .bearer_auth(admin)
            .json(&json!({"fields": {"title": {"type": "string", "class": "identifier"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, writer) = send(
        http.post(format!("{base}/api-keys"))
            .bearer_auth(admin)
            .json(&json!({"name": "uploader", "role": "writer"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let writer = writer["key"].as_str().expect("writer key");
    let (status, record) = send(
        http.post(format!("{base}/collections/docs/records"))
            .bearer_auth(writer)
            .json(&json!({"data": {"title": "scan"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let file_url = format!(
        "{base}/collections/docs/records/{}/files/scan.bin",
        record["id"].as_str().expect("record id")
    );

    let size = 50 * 1024 * 1024;
    let content: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
    let expected = hex::encode(Sha256::digest(&content));
    let pid = dev.child.id();
    let before = peak_rss_kib(pid);
    let put = http
        .put(&file_url)
        .bearer_auth(writer)
        .header("content-type", "application/octet-stream")
        .body(content)
        .send()
        .await
        .expect("upload");
    let status = put.status();
    // Read-your-writes: a read without the write's token may meet a replica behind it.
    let token = put.headers()["x-consistency-token"].clone();
    let stored: Value = put.json().await.expect("stored file");
    assert_eq!(status, StatusCode::CREATED, "{stored:?}");
    assert_eq!(stored["size"], size);
    assert_eq!(stored["sha256"], expected);

    let response = http
        .get(&file_url)
        .bearer_auth(writer)
        .header("x-consistency-token", token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let downloaded = response.bytes().await.expect("download body");
    assert_eq!(downloaded.len(), size);
    assert_eq!(hex::encode(Sha256::digest(&downloaded)), expected);

    let grown_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!(
        "peak memory: {} MiB before, grew by {grown_mib} MiB",
        before / 1024
    );
    assert!(
        grown_mib < 24,
        "the node's peak memory grew by {grown_mib} MiB for a 50 MiB file: it must stream"
    );
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("send request")
}

#[tokio::test]
async fn every_region_serves_every_tenant_and_the_data_stays_home() {
    let state = tempfile::tempdir().expect("state dir");
    let mut dev = Dev::spawn(state.path(), "eu-central-1,us-east-1");
    let endpoints = dev.endpoints().await;
    let operator: &str = &operator_token(&endpoints);
    let eu = api_endpoint(&endpoints, "eu-central-1");
    let us = api_endpoint(&endpoints, "us-east-1");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    use reqwest::Method;

    // Created through the EU endpoint, homed in the US.
    let created = call(
        &http,
        Method::POST,
        &format!("{eu}/v1/tenants"),
        operator,
        Some(json!({"name": "Globex Inc", "home_region": "us-east-1"})),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED, "{}", dev.output());
    let tenant: Value = created.json().await.expect("tenant");
    let id = tenant["id"].as_str().expect("id").to_owned();
    let admin = tenant["admin_key"].as_str().expect("admin key").to_owned();

    let schema =
        json!({"fields": {"email": {"type": "string", "class": "identifier", "searchable": true}}});
    let put = call(
        &http,
        Method::PUT,
        &format!("{eu}/v1/tenants/{id}/collections/people"),
        &admin,
        Some(schema),
    )
    .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let record = call(
        &http,
        Method::POST,
        &format!("{eu}/v1/tenants/{id}/collections/people/records"),
        &admin,
        Some(json!({"data": {"email": "MARKER-us-only@example.com"}})),
    )
    .await;
    assert_eq!(record.status(), StatusCode::CREATED);
    let token = record.headers()["x-consistency-token"]
        .to_str()
        .expect("token")
        .to_owned();
    let record: Value = record.json().await.expect("record");
    let path = format!(
        "/v1/tenants/{id}/collections/people/records/{}",
        record["id"].as_str().expect("id")
    );

    let read = http
        .get(format!("{eu}{path}"))
        .bearer_auth(&admin)
        .header("x-consistency-token", &token)
        // A client cannot claim to have entered elsewhere.
        .header("x-residency-entry-region", "ap-southeast-1")
        .header(
            "x-residency-forwarded",
            "v2;at=1;entry=ap-southeast-1;for=6.6.6.6;sig=00",
        )
        .send()
        .await
        .expect("read through the EU");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.headers()["x-residency-region"], "us-east-1");
    assert_eq!(read.headers()["x-residency-via"], "eu-central-1");
    let direct = http
        .get(format!("{us}{path}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("read at home");
    assert_eq!(direct.status(), StatusCode::OK);
    assert_eq!(direct.headers()["x-residency-via"], "us-east-1");

    // A 50 MiB file through the forwarding node streams both ways with bounded memory
    // (both nodes run in the one `residency dev` process being measured).
    let file_url = format!("{eu}{path}/files/scan.bin");
    let content: Vec<u8> = (0..50 * 1024 * 1024)
        .map(|i: usize| (i * 13 % 256) as u8)
        .collect();
    let expected = hex::encode(Sha256::digest(&content));
    let before = peak_rss_kib(dev.child.id());
    let put = http
        .put(&file_url)
        .bearer_auth(&admin)
        .body(content)
        .send()
        .await
        .expect("upload");
    assert_eq!(put.status(), StatusCode::CREATED);
    // Read-your-writes: a read without the write's token may meet a replica behind it.
    let token = put.headers()["x-consistency-token"].clone();
    let got = http
        .get(&file_url)
        .bearer_auth(&admin)
        .header("x-consistency-token", token)
        .send()
        .await
        .expect("download");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["x-residency-region"], "us-east-1");
    let body = got.bytes().await.expect("body");
    assert_eq!(hex::encode(Sha256::digest(&body)), expected);
    let grown_mib = peak_rss_kib(dev.child.id()).saturating_sub(before) / 1024;
    eprintln!("forwarded 50 MiB: peak memory grew by {grown_mib} MiB");
    // The file crosses two nodes of this process (the entry and the home), each with its
    // own bounded buffers: one node alone grows by about 12 MiB for it (the test above),
    // two by 21 to 26 MiB. Holding the file anywhere would take at least 50 MiB.
    assert!(
        grown_mib < 36,
        "peak memory grew by {grown_mib} MiB: forwarding must stream"
    );

    // The home region's audit log names the entry region, not the forged one.
    let auditor = call(
        &http,
        Method::POST,
        &format!("{us}/v1/tenants/{id}/api-keys"),
        &admin,
        Some(json!({"name": "audit", "role": "auditor"})),
    )
    .await;
    let auditor: Value = auditor.json().await.expect("auditor key");
    let auditor = auditor["key"].as_str().expect("key").to_owned();
    let events = call(
        &http,
        Method::GET,
        &format!("{us}/v1/tenants/{id}/audit/events?action=record.read"),
        &auditor,
        None,
    )
    .await;
    let events: Value = events.json().await.expect("events");
    let vias: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["via_region"].as_str())
        .collect();
    assert_eq!(vias, ["eu-central-1", "us-east-1"], "{events}");

    // A tenant that asks for redirects gets a 307 to its home's public endpoint.
    let redirected = call(
        &http,
        Method::POST,
        &format!("{us}/v1/tenants"),
        operator,
        Some(json!({"name": "Initech", "home_region": "us-east-1", "transit": "redirect"})),
    )
    .await;
    assert_eq!(redirected.status(), StatusCode::CREATED);
    let redirected: Value = redirected.json().await.expect("tenant");
    let other = redirected["id"].as_str().expect("id");
    let other_key = redirected["admin_key"].as_str().expect("key");
    let moved = call(
        &http,
        Method::GET,
        &format!("{eu}/v1/tenants/{other}/collections/people?x=1"),
        other_key,
        None,
    )
    .await;
    assert_eq!(moved.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        moved.headers()["location"],
        format!("{us}/v1/tenants/{other}/collections/people?x=1").as_str()
    );

    // Nothing of the US tenant rests in the EU database but its directory entry.
    let eu_db = endpoints["regions"]["eu-central-1"]["primary"]
        .as_str()
        .expect("eu primary");
    let (client, connection) = tokio_postgres::connect(eu_db, tokio_postgres::NoTls)
        .await
        .expect("connect to the EU primary");
    tokio::spawn(connection);
    for &table in store::TENANT_TABLES {
        let count: i64 = client
            .query_one(
                &format!("select count(*) from {table} where tenant_id = $1"),
                &[&id],
            )
            .await
            .unwrap_or_else(|err| panic!("count {table}: {err}"))
            .get(0);
        assert_eq!(count, 0, "{table} of the EU region holds the US tenant");
    }
    let directory: String = client
        .query_one(
            "select home_region from tenant_directory where tenant_id = $1",
            &[&id],
        )
        .await
        .expect("directory entry")
        .get(0);
    assert_eq!(directory, "us-east-1");
}
