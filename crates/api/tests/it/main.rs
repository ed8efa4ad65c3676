//! Handler tests of the regional node: `app(state).oneshot(request)` against a real
//! primary and streaming replica.

mod abuse;
mod analytics;
mod contention;
mod erasure;
mod failover;
mod idempotency;
mod jobs;
mod openapi;
mod problems;
mod readiness;
mod rotation;
mod subjects;
mod tenant_api;
mod tenant_listing;

use std::sync::Arc;

use api::{NodeParts, NodeState, app};
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use envelope::kms::local::LocalKms;
use envelope::objects::local::LocalObjectStore;
use model::RegionId;
use service::{AuditKeys, AuditLog, AuditSettings, Keyring, KeyringSettings};
use store::testing::{migrated_database, region_database, settings};
use store::{PgEndpoint, RegionDatabase};
use telemetry::NodeMetrics;
use tower::ServiceExt;
use wire::{Problem, Readiness};

/// The operator token of test nodes.
pub const OPERATOR_TOKEN: &str = "rso.test-operator-token-of-the-api-tests";

/// A node on `database` with a real local KMS and object store in a temporary directory
/// (kept alive as long as the node).
#[derive(Debug)]
pub struct Node {
    pub state: NodeState,
    pub dir: tempfile::TempDir,
}

pub fn node(database: RegionDatabase) -> Node {
    node_with(database, api::rate_limit::RateLimit::default())
}

/// A node with a chosen rate limit.
pub fn node_with(database: RegionDatabase, rate_limit: api::rate_limit::RateLimit) -> Node {
    let dir = tempfile::tempdir().expect("node dir");
    let state = node_state(database, dir.path(), rate_limit);
    Node { state, dir }
}

/// A node whose KMS and object store live under `root` (another node's `dir`, to build a
/// second node over the same region's keys and objects).
pub fn node_state(
    database: RegionDatabase,
    root: &std::path::Path,
    rate_limit: api::rate_limit::RateLimit,
) -> NodeState {
    NodeState::new(node_parts(database, root, rate_limit))
}

/// The parts of [`node_state`]'s node, to change one before building it.
pub fn node_parts(
    database: RegionDatabase,
    root: &std::path::Path,
    rate_limit: api::rate_limit::RateLimit,
) -> NodeParts {
    let region = database.region().clone();
    let kms =
        Arc::new(LocalKms::open_or_create(&root.join("kms"), region.clone()).expect("local kms"));
    let objects = Arc::new(LocalObjectStore::new(root.join("objects")).expect("local objects"));
    let audit_objects =
        Arc::new(LocalObjectStore::new(root.join("audit-bucket")).expect("local audit bucket"));
    let metrics = Arc::new(NodeMetrics::new(region.as_str()));
    let keyring = Keyring::new(
        database.clone(),
        kms.clone(),
        metrics.clone(),
        KeyringSettings::default(),
    );
    let audit = AuditLog::with_settings(
        database.clone(),
        AuditKeys::generate(region.clone()),
        AuditSettings::default(),
        metrics.clone(),
    );
    NodeParts {
        database,
        kms,
        objects,
        audit_objects,
        keyring,
        audit,
        metrics,
        regions: ["eu-central-1", "eu-west-1", "us-east-1", "ap-southeast-1"]
            .into_iter()
            .map(|id| RegionId::parse(id).expect("catalogue region"))
            .collect(),
        operator: service::access::OperatorToken::new(OPERATOR_TOKEN),
        service: service::ServiceSettings {
            max_file_size: 64 * 1024 * 1024,
            ..service::ServiceSettings::default()
        },
        rate_limit,
        registry: None,
        behind_router: false,
        directory: None,
        metrics_access: api::MetricsAccess::default(),
    }
}

async fn get(state: &NodeState, path: &str) -> Response {
    app(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

/// `GET path` with the operator token, which sees `/readyz` in detail and `/metrics`.
async fn get_as_operator(state: &NodeState, path: &str) -> Response {
    app(state.clone())
        .oneshot(
            Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {OPERATOR_TOKEN}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible")
}

/// One round of the health poller, as a running node makes it every interval: `/readyz`
/// answers from what it saw.
async fn poll_health(state: &NodeState) {
    api::HealthPolling::default().poll_once(state).await;
}

async fn body_text(response: Response) -> String {
    let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8 body")
}

pub fn closed_port_endpoint(name: &str, like: &tokio_postgres::Config) -> PgEndpoint {
    // A port bound and never listened on: connecting is refused, and no other test's
    // server (tests bind ephemeral ports in parallel) can take it while the process runs.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .expect("bind a loopback port");
    let port = socket.local_addr().expect("bound address").port();
    std::mem::forget(socket);
    let mut config = like.clone();
    config.port(port);
    PgEndpoint::new(name, config)
}

#[tokio::test]
async fn healthz_answers_with_the_region_and_a_request_id() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let state = node.state.clone();
    let response = get(&state, "/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let generated = |response: &http::Response<Body>| -> uuid::Uuid {
        let id = response.headers()["x-request-id"].to_str().expect("ascii");
        let uuid = uuid::Uuid::parse_str(id).expect("a generated request id is a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{id}");
        uuid
    };
    let first = generated(&response);
    let second = generated(&get(&state, "/healthz").await);
    assert_ne!(first, second, "each request gets its own id");
    let body: serde_json::Value = serde_json::from_str(&body_text(response).await).expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["region"], "eu-central-1");

    let response = app(state)
        .oneshot(
            Request::get("/healthz")
                .header("x-request-id", "client-chosen-42")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(
        response.headers()["x-request-id"],
        "client-chosen-42",
        "a sent request id is echoed"
    );
}

#[tokio::test]
async fn readyz_reports_primary_and_replica_lag_when_everything_is_up() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    poll_health(&node.state).await;
    let response = get_as_operator(&node.state, "/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let readiness: Readiness =
        serde_json::from_str(&body_text(response).await).expect("readiness json");
    assert_eq!(readiness.status, "ready");
    let kms = &readiness.checks.kms;
    assert_eq!(
        (kms.status.as_str(), kms.kind.as_deref()),
        ("up", Some("local")),
        "the embedded KMS says so"
    );
    assert!(
        kms.target
            .as_deref()
            .is_some_and(|target| target.starts_with("local:eu-central-1:")),
        "{kms:?}"
    );
    let objects = &readiness.checks.object_store;
    assert_eq!(
        (objects.status.as_str(), objects.kind.as_deref()),
        ("up", Some("local"))
    );
    assert_eq!(readiness.checks.primary.status, "up");
    assert!(readiness.checks.primary.wal_lsn.is_some());
    let replica = &readiness.checks.replicas[0];
    assert_eq!(
        (replica.name.as_str(), replica.status.as_str()),
        ("replica-1", "up")
    );
    assert!(
        replica.lag_bytes.is_some() && replica.lag_seconds.is_some(),
        "{replica:?}"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_primary_is_down_and_never_leaks_credentials() {
    let database = migrated_database().await;
    let settings = store::DatabaseSettings::new(
        closed_port_endpoint("primary", &database.primary),
        vec![PgEndpoint::new("replica-1", database.replica.clone())],
    );
    let region = RegionId::parse("us-east-1").expect("region");
    let node = node(RegionDatabase::new(region, &settings).expect("pools"));
    poll_health(&node.state).await;
    let public = get(&node.state, "/readyz").await;
    assert_eq!(public.status(), StatusCode::SERVICE_UNAVAILABLE);
    let public = body_text(public).await;
    let response = get_as_operator(&node.state, "/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = body_text(response).await;
    let password = String::from_utf8(database.primary.get_password().expect("password").to_vec())
        .expect("utf-8");
    for text in [&public, &text] {
        assert!(
            !text.contains(&password),
            "readiness must not expose credentials"
        );
    }
    let readiness: Readiness = serde_json::from_str(&text).expect("readiness json");
    assert_eq!(readiness.status, "not_ready");
    assert_eq!(
        readiness.checks.primary.reason.as_deref(),
        Some("unreachable")
    );
    assert_eq!(
        readiness.checks.replicas[0].status, "up",
        "replicas keep serving reads"
    );
}

#[tokio::test]
async fn readyz_is_degraded_but_200_when_a_replica_is_down() {
    let (database, _) = region_database("eu-central-1").await;
    let mut settings = settings(&database);
    settings
        .replicas
        .push(closed_port_endpoint("replica-2", &database.replica));
    let region = RegionId::parse("eu-central-1").expect("region");
    let node = node(RegionDatabase::new(region, &settings).expect("pools"));
    poll_health(&node.state).await;
    let response = get_as_operator(&node.state, "/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let readiness: Readiness = serde_json::from_str(&body_text(response).await).expect("json");
    assert_eq!(readiness.status, "degraded");
    assert_eq!(readiness.checks.replicas[1].status, "down");
    assert_eq!(
        readiness.checks.replicas[1].reason.as_deref(),
        Some("unreachable")
    );
}

/// A tenant directory that answers or not, as the test says, and counts its checks.
#[derive(Debug)]
struct StubDirectory {
    up: std::sync::atomic::AtomicBool,
    checks: std::sync::atomic::AtomicU64,
}

impl StubDirectory {
    fn up() -> Self {
        Self {
            up: std::sync::atomic::AtomicBool::new(true),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl api::DirectoryProbe for StubDirectory {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn target(&self) -> String {
        "10.0.0.7:5432/residency_directory".to_owned()
    }

    async fn check(&self) -> Result<(), &'static str> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.up.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err("unavailable")
        }
    }
}

#[tokio::test]
async fn readyz_reports_the_tenant_directory_and_is_degraded_but_200_without_it() {
    let (_db, database) = region_database("eu-central-1").await;
    let dir = tempfile::tempdir().expect("node dir");
    let directory = Arc::new(StubDirectory::up());
    let mut parts = node_parts(database, dir.path(), api::rate_limit::RateLimit::default());
    parts.directory = Some(directory.clone());
    let state = NodeState::new(parts);

    poll_health(&state).await;
    let response = get_as_operator(&state, "/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let readiness: Readiness = serde_json::from_str(&body_text(response).await).expect("json");
    assert_eq!(readiness.status, "ready");
    let check = readiness.checks.directory.expect("a directory check");
    assert_eq!(
        (
            check.status.as_str(),
            check.kind.as_deref(),
            check.target.as_deref()
        ),
        (
            "up",
            Some("postgres"),
            Some("10.0.0.7:5432/residency_directory")
        )
    );

    directory
        .up
        .store(false, std::sync::atomic::Ordering::SeqCst);
    poll_health(&state).await;
    let response = get_as_operator(&state, "/readyz").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "every node shares the directory: draining this one would help no request"
    );
    let readiness: Readiness = serde_json::from_str(&body_text(response).await).expect("json");
    assert_eq!(readiness.status, "degraded");
    let check = readiness.checks.directory.expect("a directory check");
    assert_eq!(
        (check.status.as_str(), check.reason.as_deref()),
        ("down", Some("unavailable"))
    );
}

#[tokio::test]
async fn readyz_of_a_node_without_a_router_has_no_directory_check() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    poll_health(&node.state).await;
    let text = body_text(get_as_operator(&node.state, "/readyz").await).await;
    let readiness: Readiness = serde_json::from_str(&text).expect("json");
    assert_eq!(readiness.checks.directory, None, "{text}");
    assert!(!text.contains("directory"), "{text}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_export_lag_and_pool_usage() {
    let (_db, database) = region_database("ap-southeast-1").await;
    let node = node(database);
    let state = node.state.clone();
    get(&state, "/healthz").await;
    poll_health(&state).await;
    get(&state, "/readyz").await;
    get(&state, "/no/such/thing/alice@example.com").await;
    let response = get_as_operator(&state, "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text")
    );
    let text = body_text(response).await;
    for expected in [
        r#"residency_http_requests_total{region="ap-southeast-1",route="/healthz",method="GET",status="200"} 1"#,
        r#"residency_http_requests_total{region="ap-southeast-1",route="unmatched",method="GET",status="404"} 1"#,
        r#"residency_db_primary_up{region="ap-southeast-1"} 1"#,
        r#"residency_db_replica_up{region="ap-southeast-1",endpoint="replica-1"} 1"#,
        r#"residency_db_replica_lag_bytes{region="ap-southeast-1",endpoint="replica-1"}"#,
        r#"residency_db_pool_connections{region="ap-southeast-1",pool="primary",state="max"} 16"#,
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
    assert!(
        !text.contains("alice@example.com"),
        "concrete paths never become labels"
    );
}

#[tokio::test]
async fn unknown_paths_get_problem_json_without_echoing_the_path() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let response = get(&node.state, "/v1/tenants/alice@example.com/secret").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let text = body_text(response).await;
    assert!(!text.contains("alice"), "{text}");
    let problem: Problem = serde_json::from_str(&text).expect("problem json");
    assert_eq!(problem.status, 404);
    assert_eq!(problem.request_id.as_deref(), Some(request_id.as_str()));
}

#[tokio::test]
async fn the_health_poller_keeps_gauges_current() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = node(database);
    let state = node.state.clone();
    let poller = api::spawn_health_poller(state.clone(), std::time::Duration::from_millis(50));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = state.metrics().encode();
        if text.contains(r#"residency_db_replica_up{region="eu-central-1",endpoint="replica-1"} 1"#)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "poller never reported the replica:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    poller.abort();
}

#[tokio::test]
async fn readyz_is_degraded_when_the_object_store_is_gone() {
    let (_db, database) = region_database("us-east-1").await;
    let node = node(database);
    std::fs::remove_dir_all(node.dir.path().join("objects")).expect("remove object store");
    poll_health(&node.state).await;
    let response = get(&node.state, "/readyz").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the primary still serves"
    );
    let readiness: Readiness = serde_json::from_str(&body_text(response).await).expect("json");
    assert_eq!(readiness.status, "degraded");
    assert_eq!(readiness.checks.object_store.status, "down");
    assert_eq!(readiness.checks.kms.status, "up");
}
