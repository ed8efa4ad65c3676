//! The tenant API through `residency dev`, as a tenant's backend would use it: the
//! operator token from `endpoints.json` creates a tenant, whose keys write records and a
//! 50 MiB file that streams through the node with bounded memory.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::dev::Dev;

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
    let operator = endpoints["operator_token"]
        .as_str()
        .expect("operator token");
    let api = endpoints["regions"]["eu-central-1"]["api"]
        .as_str()
        .expect("api endpoint")
        .to_owned();
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
    let (status, stored) = send(
        http.put(&file_url)
            .bearer_auth(writer)
            .header("content-type", "application/octet-stream")
            .body(content),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored:?}");
    assert_eq!(stored["size"], size);
    assert_eq!(stored["sha256"], expected);

    let response = http
        .get(&file_url)
        .bearer_auth(writer)
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
