//! A started node runs the region's jobs: the operator changes the local KMS's master key,
//! starts the rewrap over HTTP, the node's runner completes it (progress through
//! `GET /v1/jobs/{job}` and the metrics), and a node started afresh afterwards (a cold key
//! cache) reads a record written before.

use std::sync::Arc;
use std::time::Duration;

use devstack::testing::{TestDatabase, connect};
use envelope::kms::local::LocalKms;
use model::RegionId;
use node::{ApiSettings, JobSettings, RunningNode};
use serde_json::{Value, json};

use crate::support::{node_config, single_region, start_on_loopback};

pub(crate) const OPERATOR: &str = "rso.jobs-test-operator-token-0123456789abcdef";

pub(crate) async fn start(
    id: &RegionId,
    database: &TestDatabase,
    kms: Arc<LocalKms>,
    dir: &std::path::Path,
) -> RunningNode {
    let api = ApiSettings {
        jobs: JobSettings {
            poll_interval: Duration::from_millis(50),
            lease: Duration::from_secs(3),
            batch_size: 3,
            ..JobSettings::default()
        },
        ..ApiSettings::default()
    };
    start_with_api(id, database, kms, dir, api).await
}

/// A node of region `id` alone, with `api`, the jobs tests' operator token, on a
/// loopback port.
pub(crate) async fn start_with_api(
    id: &RegionId,
    database: &TestDatabase,
    kms: Arc<LocalKms>,
    dir: &std::path::Path,
    api: ApiSettings,
) -> RunningNode {
    start_on_loopback(node_config(
        id,
        database,
        kms,
        dir,
        single_region(id, OPERATOR, api),
    ))
    .await
}

pub(crate) async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A tenant created through `api` with the example collection `people` and one record:
/// its id, its admin key and the record's id.
pub(crate) async fn tenant_with_record(
    api: &str,
    name: &str,
    email: &str,
) -> (String, String, String) {
    use reqwest::Method;
    let (status, tenant) = call(
        Method::POST,
        &format!("{api}/v1/tenants"),
        OPERATOR,
        Some(json!({"name": name, "home_region": "eu-west-1"})),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let (tenant, admin) = (
        tenant["id"].as_str().expect("id").to_owned(),
        tenant["admin_key"].as_str().expect("key").to_owned(),
    );
    let (status, body) = call(
        Method::PUT,
        &format!("{api}/v1/tenants/{tenant}/collections/people"),
        &admin,
        Some(wire::examples::collection_schema()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, record) = call(
        Method::POST,
        &format!("{api}/v1/tenants/{tenant}/collections/people/records"),
        &admin,
        Some(json!({"data": {"email": email}})),
    )
    .await;
    assert_eq!(status, 201, "{record}");
    let record = record["id"].as_str().expect("record id").to_owned();
    (tenant, admin, record)
}

#[tokio::test]
async fn a_node_runs_the_rewrap_the_operator_starts_and_data_stays_readable() {
    use reqwest::Method;
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let database = TestDatabase::create(None).await;
    let kms = Arc::new(LocalKms::open_or_create(&dir.path().join("kms"), id.clone()).expect("kms"));
    let node = start(&id, &database, kms.clone(), dir.path()).await;
    let api = format!("http://{}", node.address);

    let mut records = Vec::new();
    for n in 0..3 {
        records.push(
            tenant_with_record(
                &api,
                &format!("Tenant {n}"),
                &format!("person-{n}@example.com"),
            )
            .await,
        );
    }

    let new_master = kms.rotate_master_key().expect("rotate the master key");
    let (status, job) = call(
        Method::POST,
        &format!("{api}/v1/keys/rewrap"),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (status, seen) = call(
            Method::GET,
            &format!("{api}/v1/jobs/{job_id}"),
            OPERATOR,
            None,
        )
        .await;
        assert_eq!(status, 200, "{seen}");
        if seen["state"] == "done" {
            break seen;
        }
        assert_ne!(seen["state"], "failed", "{seen}");
        assert!(tokio::time::Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done["progress"],
        json!({"done": 6, "total": 6, "failed": 0})
    );
    let client = connect(database.primary.clone()).await;
    let elsewhere: i64 = client
        .query_one(
            "select count(*) from tenant_keys where kms_key_id <> $1",
            &[&new_master],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(elsewhere, 0, "every key is under the new master key");
    let seeds_elsewhere: i64 = client
        .query_one(
            "select count(*) from audit_signing_keys
             where kms_key_id is not null and kms_key_id <> $1",
            &[&new_master],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        seeds_elsewhere, 0,
        "the audit signing seeds' data keys are under the new master key too"
    );
    let (status, metrics) = call(Method::GET, &format!("{api}/metrics"), OPERATOR, None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains(r#"residency_job_items_total{region="eu-west-1",kind="rewrap"} 6"#),
        "{metrics}"
    );
    node.stop().await.expect("stop");

    // A node with nothing cached unwraps through the new master key.
    let fresh = start(&id, &database, kms, dir.path()).await;
    let api = format!("http://{}", fresh.address);
    // (The first node's consistency tokens are its own, so these reads carry none: one may
    // meet the replica a moment behind, within its lag bound.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (n, (tenant, admin, record)) in records.iter().enumerate() {
        let url = format!("{api}/v1/tenants/{tenant}/collections/people/records/{record}");
        let (status, read) = loop {
            let (status, read) = call(Method::GET, &url, admin, None).await;
            if status != 404 || tokio::time::Instant::now() > deadline {
                break (status, read);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["data"]["email"], format!("person-{n}@example.com"));
    }
    fresh.stop().await.expect("stop");
}
