//! Failure behaviour of the tenant API: with the primary unreachable, writes fail closed
//! (503 + `Retry-After`) while reads go on from the replica; with the replica unreachable,
//! reads go to the primary. A second node over the same region (same keys and objects)
//! sees the database through endpoints that point at a closed port.

use std::time::Duration;

use model::RegionId;
use reqwest::{Method, StatusCode};
use serde_json::json;
use store::testing::{region_database, settings};
use store::{DatabaseSettings, PgEndpoint, RegionDatabase};

use crate::tenant_api::{Served, person, serve, serve_node};
use crate::{Node, closed_port_endpoint, node_state};

/// A tenant with a `people` collection, a writer key and one record, written through a
/// healthy node; returns (tenant, writer key, record path).
async fn seeded(api: &Served) -> (String, String, String) {
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let created = api
        .create_person(&tenant, &writer, person("f@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id");
    let path = format!("/v1/tenants/{tenant}/collections/people/records/{id}");
    (tenant, writer, path)
}

/// Waits until the replica has replayed everything the primary has now.
async fn replica_caught_up(db: &devstack::testing::TestDatabase) {
    let primary = devstack::testing::connect(db.primary.clone()).await;
    let replica = devstack::testing::connect(db.replica.clone()).await;
    let target: String = primary
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await
        .expect("primary lsn")
        .get(0);
    for _ in 0..200 {
        let caught_up: bool = replica
            .query_one(
                "select pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&target],
            )
            .await
            .expect("replica lsn")
            .get(0);
        if caught_up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the replica did not catch up within 5 s");
}

/// A second node over the same database and node directory, through `settings`.
async fn second_node(first: &Served, settings: &DatabaseSettings) -> Served {
    let region = RegionId::parse("eu-central-1").expect("region");
    let database = RegionDatabase::new(region, settings).expect("pools");
    let state = node_state(
        database,
        first.node.dir.path(),
        api::rate_limit::RateLimit::default(),
    );
    let dir = tempfile::tempdir().expect("unused dir");
    // A health round probes the databases and puts healthy replicas into rotation.
    crate::poll_health(&state).await;
    serve_node(Node { state, dir }).await
}

#[tokio::test]
async fn with_the_primary_down_writes_fail_closed_and_reads_go_on_from_the_replica() {
    let (db, database) = region_database("eu-central-1").await;
    let healthy = serve(database).await;
    let (tenant, writer, path) = seeded(&healthy).await;
    replica_caught_up(&db).await;

    let down = second_node(
        &healthy,
        &DatabaseSettings::new(
            closed_port_endpoint("primary", &db.primary),
            vec![PgEndpoint::new("replica-1", db.replica.clone())],
        ),
    )
    .await;

    let read = down
        .call(Method::GET, &path, Some(&writer), None, &[])
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.header("x-served-by"), Some("replica"));
    assert_eq!(read.body["data"]["email"], "f@example.com");

    let search = down
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/collections/people/records?email=f%40example.com"),
            Some(&writer),
            None,
            &[],
        )
        .await;
    assert_eq!(search.status, StatusCode::OK, "{:?}", search.body);
    assert_eq!(search.body["records"].as_array().map(Vec::len), Some(1));

    let create = down
        .create_person(&tenant, &writer, person("g@example.com"))
        .await;
    assert_eq!(
        create.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        create.body
    );
    assert!(
        create.header("retry-after").is_some(),
        "503 carries Retry-After"
    );
    assert_eq!(
        create.header("content-type"),
        Some("application/problem+json")
    );
    let update = down
        .call(
            Method::PUT,
            &path,
            Some(&writer),
            Some(json!({"data": person("h@example.com")})),
            &[],
        )
        .await;
    assert_eq!(update.status, StatusCode::SERVICE_UNAVAILABLE);

    // Nothing was written: the healthy node still reads version 1.
    let check = healthy
        .call(Method::GET, &path, Some(&writer), None, &[])
        .await;
    assert_eq!(check.body["version"], 1);
}

#[tokio::test]
async fn with_the_replica_down_reads_are_served_by_the_primary() {
    let (db, database) = region_database("eu-central-1").await;
    let healthy = serve(database).await;
    let (_tenant, writer, path) = seeded(&healthy).await;

    let mut without_replica = settings(&db);
    without_replica.replicas = vec![closed_port_endpoint("replica-1", &db.replica)];
    let degraded = second_node(&healthy, &without_replica).await;
    for _ in 0..3 {
        let read = degraded
            .call(Method::GET, &path, Some(&writer), None, &[])
            .await;
        assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
        assert_eq!(read.header("x-served-by"), Some("primary"));
    }
    let written = degraded
        .call(
            Method::PUT,
            &path,
            Some(&writer),
            Some(json!({"data": person("i@example.com")})),
            &[],
        )
        .await;
    assert_eq!(written.status, StatusCode::OK, "{:?}", written.body);
}
