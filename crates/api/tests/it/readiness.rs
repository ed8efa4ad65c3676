//! `/readyz` answers from the health poller's snapshot: a flood of it calls no dependency
//! and changes nothing, the public body names no address, the operator token and the
//! operations listener get the detail, a dependency going down shows within one poll
//! interval, a stale snapshot answers 503, and `/metrics` follows its configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use api::{HealthPolling, MetricsAccess, NodeState, app, operations_app};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use envelope::kms::KmsError;
use envelope::kms::faulty::FaultyKms;
use envelope::objects::faulty::FaultyObjectStore;
use futures::StreamExt as _;
use model::RegionId;
use serde_json::Value;
use store::testing::region_database;
use store::{DatabaseSettings, PgEndpoint, RegionDatabase};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;
use wire::Readiness;

use crate::{
    OPERATOR_TOKEN, StubDirectory, body_text, get, get_as_operator, node_parts, poll_health,
};

/// A TCP relay in front of a database that counts the connections and bytes clients send
/// through it: any probe, query or connection attempt shows. Dropping it closes the
/// listener and every connection through it (the database "goes down").
struct CountingProxy {
    address: SocketAddr,
    sent: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CountingProxy {
    async fn start(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let sent = sent.clone();
            let connections = connections.clone();
            async move {
                // Owned here so that aborting this task closes every connection.
                let mut relays = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    relays.spawn(relay(client, upstream.clone(), sent.clone()));
                }
            }
        });
        Self {
            address,
            sent,
            connections,
            task,
        }
    }

    /// Connections accepted and bytes clients sent, so far.
    fn traffic(&self) -> (u64, u64) {
        (
            self.connections.load(Ordering::SeqCst),
            self.sent.load(Ordering::SeqCst),
        )
    }

    /// `like` (user, password, database), reached through this proxy.
    fn config(&self, like: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.address.port())
            .user(like.get_user().expect("a user"))
            .password(like.get_password().expect("a password"))
            .dbname(like.get_dbname().expect("a database"));
        config
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: (String, u16), sent: Arc<AtomicU64>) {
    let Ok(mut server) = TcpStream::connect((upstream.0.as_str(), upstream.1)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upward = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sent.fetch_add(n as u64, Ordering::SeqCst);
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downward = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upward, downward);
}

fn upstream(config: &tokio_postgres::Config) -> (String, u16) {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("a TCP host, not {other:?}"),
    };
    (host, *config.get_ports().first().expect("a port"))
}

/// A node whose primary and replica are reached through counting proxies, with a
/// call-counting KMS and object store and a counting tenant directory.
struct Watched {
    state: NodeState,
    primary: CountingProxy,
    replica: CountingProxy,
    kms: Arc<FaultyKms>,
    objects: Arc<FaultyObjectStore>,
    directory: Arc<StubDirectory>,
    _db: devstack::testing::TestDatabase,
    _dir: tempfile::TempDir,
}

impl Watched {
    async fn start(region: &str) -> Self {
        // Migrated and stamped directly; the node reaches it through the proxies.
        let (db, _) = region_database(region).await;
        let primary = CountingProxy::start(upstream(&db.primary)).await;
        let replica = CountingProxy::start(upstream(&db.replica)).await;
        let settings = DatabaseSettings::new(
            PgEndpoint::new("primary", primary.config(&db.primary)),
            vec![PgEndpoint::new("replica-1", replica.config(&db.replica))],
        );
        let database = RegionDatabase::new(RegionId::parse(region).expect("region"), &settings)
            .expect("pools");
        let dir = tempfile::tempdir().expect("node dir");
        let mut parts = node_parts(database, dir.path(), api::rate_limit::RateLimit::default());
        let kms = Arc::new(FaultyKms::new(parts.kms.clone()));
        let objects = Arc::new(FaultyObjectStore::new(parts.objects.clone()));
        let directory = Arc::new(StubDirectory::up());
        parts.kms = kms.clone();
        parts.objects = objects.clone();
        parts.directory = Some(directory.clone());
        Self {
            state: NodeState::new(parts),
            primary,
            replica,
            kms,
            objects,
            directory,
            _db: db,
            _dir: dir,
        }
    }

    /// Every call any dependency has seen: database traffic, KMS, object store, directory.
    fn calls(&self) -> (u64, u64, u64, u64, u64, u64) {
        let (primary_connections, primary_bytes) = self.primary.traffic();
        let (replica_connections, replica_bytes) = self.replica.traffic();
        (
            primary_connections + replica_connections,
            primary_bytes,
            replica_bytes,
            self.kms.calls(),
            self.objects.calls(),
            self.directory.checks(),
        )
    }
}

async fn readiness_of(response: axum::response::Response) -> (StatusCode, Readiness, String) {
    let status = response.status();
    let text = body_text(response).await;
    let readiness = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"));
    (status, readiness, text)
}

/// The statuses of a readiness body, without its age.
fn statuses(readiness: &Readiness) -> Readiness {
    Readiness {
        age_seconds: None,
        ..readiness.public()
    }
}

#[tokio::test]
async fn a_readyz_flood_calls_no_dependency_and_changes_no_readiness() {
    let node = Watched::start("eu-central-1").await;
    poll_health(&node.state).await;
    let (status, before, _) = readiness_of(get(&node.state, "/readyz").await).await;
    assert_eq!((status, before.status.as_str()), (StatusCode::OK, "ready"));
    let rotation = node.state.database().rotation();
    assert_eq!(rotation, [("replica-1".to_owned(), true)]);
    let calls = node.calls();

    let router: Router = app(node.state.clone());
    let answers: Vec<(StatusCode, Readiness)> = futures::stream::iter(0..2_000)
        .map(|i| {
            let router = router.clone();
            async move {
                let mut request = Request::get("/readyz");
                if i % 10 == 0 {
                    // Junk tokens cost a hash, nothing more.
                    request = request.header(header::AUTHORIZATION, format!("Bearer junk-{i}"));
                }
                let response = router
                    .oneshot(request.body(Body::empty()).expect("request"))
                    .await
                    .expect("infallible");
                let (status, readiness, _) = readiness_of(response).await;
                (status, readiness)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(answers.len(), 2_000);
    for (status, readiness) in &answers {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(statuses(readiness), statuses(&before));
    }
    assert_eq!(
        node.calls(),
        calls,
        "(database connections, primary bytes, replica bytes, KMS calls, object store calls, \
         directory checks) moved during a /readyz flood"
    );
    assert_eq!(node.state.database().rotation(), rotation);

    // The counters do count: one round of the poller moves every one of them.
    poll_health(&node.state).await;
    let (_, primary_bytes, replica_bytes, kms, objects, directory) = node.calls();
    assert!(
        primary_bytes > calls.1
            && replica_bytes > calls.2
            && kms > calls.3
            && objects > calls.4
            && directory > calls.5,
        "{:?} after a round, {calls:?} before",
        node.calls()
    );
}

#[tokio::test]
async fn a_replica_going_down_moves_rotation_and_readyz_at_the_next_round_not_on_a_request() {
    let mut node = Watched::start("eu-central-1").await;
    poll_health(&node.state).await;
    assert_eq!(
        node.state.database().rotation(),
        [("replica-1".to_owned(), true)]
    );

    // The replica goes away: requests see the last round's snapshot and move nothing.
    node.replica.task.abort();
    let _ = (&mut node.replica.task).await;
    for _ in 0..200 {
        let (status, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(readiness.checks.replicas[0].status, "up");
    }
    assert_eq!(
        node.state.database().rotation(),
        [("replica-1".to_owned(), true)],
        "a request never takes a replica out of rotation"
    );

    poll_health(&node.state).await;
    let (status, readiness, _) = readiness_of(get_as_operator(&node.state, "/readyz").await).await;
    assert_eq!(
        (status, readiness.status.as_str()),
        (StatusCode::OK, "degraded")
    );
    let replica = &readiness.checks.replicas[0];
    assert_eq!(
        (replica.status.as_str(), replica.reason.as_deref()),
        ("down", Some("unreachable"))
    );
    assert_eq!(
        node.state.database().rotation(),
        [("replica-1".to_owned(), false)],
        "the poller's probe takes it out"
    );
}

#[tokio::test]
async fn the_public_body_names_no_address_and_the_operator_and_operations_listener_get_the_detail()
{
    let node = Watched::start("us-east-1").await;
    poll_health(&node.state).await;

    let (status, public, text) = readiness_of(get(&node.state, "/readyz").await).await;
    assert_eq!(status, StatusCode::OK);
    let (_, detailed, detailed_text) =
        readiness_of(get_as_operator(&node.state, "/readyz").await).await;
    let primary_address = detailed.checks.primary.address.clone().expect("address");
    let replica_address = detailed.checks.replicas[0]
        .address
        .clone()
        .expect("address");
    let kms_target = detailed.checks.kms.target.clone().expect("kms target");
    let objects_target = detailed.checks.object_store.target.clone().expect("target");
    let mut secrets = vec![
        "postgres://".to_owned(),
        "127.0.0.1".to_owned(),
        "10.0.0.7".to_owned(),
        node.primary.address.port().to_string(),
        node.replica.address.port().to_string(),
        primary_address.clone(),
        replica_address.clone(),
        kms_target.clone(),
        objects_target.clone(),
        detailed.checks.primary.wal_lsn.clone().expect("lsn"),
        "address".to_owned(),
        "target".to_owned(),
        "lag".to_owned(),
        "backlog".to_owned(),
        "capacity".to_owned(),
    ];
    secrets.retain(|secret| !secret.is_empty());
    // The age is the public body's only number; without it, no digits of a port can hide.
    let mut value: Value = serde_json::from_str(&text).expect("json");
    assert!(value["age_seconds"].is_number(), "{text}");
    value
        .as_object_mut()
        .expect("an object")
        .remove("age_seconds");
    let ageless = value.to_string();
    for secret in &secrets {
        assert!(
            !ageless.contains(secret.as_str()),
            "`{secret}` in the public body: {text}"
        );
    }
    // Every dependency's status is public.
    for pointer in [
        "/checks/primary/status",
        "/checks/replicas/0/status",
        "/checks/kms/status",
        "/checks/object_store/status",
        "/checks/directory/status",
        "/checks/audit/status",
    ] {
        assert_eq!(value.pointer(pointer), Some(&Value::from("up")), "{text}");
    }
    assert_eq!(statuses(&public), statuses(&detailed));

    // The operator's form has the detail, and the addresses are the real ones.
    assert!(
        primary_address.starts_with(&format!("127.0.0.1:{}", node.primary.address.port())),
        "{primary_address}"
    );
    assert!(replica_address.contains(&node.replica.address.port().to_string()));
    let replica = &detailed.checks.replicas[0];
    assert!(replica.lag_bytes.is_some() && replica.lag_seconds.is_some());
    assert!(detailed.checks.audit.backlog.is_some() && detailed.checks.audit.capacity.is_some());
    assert_eq!(
        detailed
            .checks
            .directory
            .as_ref()
            .and_then(|d| d.target.as_deref()),
        Some("10.0.0.7:5432/residency_directory")
    );
    assert!(detailed_text.contains("lag_bytes"), "{detailed_text}");

    // Another token gets the public form; the operations listener the detailed one.
    let response = app(node.state.clone())
        .oneshot(
            Request::get("/readyz")
                .header(header::AUTHORIZATION, format!("Bearer {OPERATOR_TOKEN}x"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let (_, _, wrong_token) = readiness_of(response).await;
    assert!(!wrong_token.contains(&primary_address), "{wrong_token}");
    let response = operations_app(node.state.clone())
        .oneshot(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let (status, internal, _) = readiness_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        internal.checks.primary.address.as_deref(),
        Some(primary_address.as_str())
    );
    assert_eq!(
        internal.checks.kms.target.as_deref(),
        Some(kms_target.as_str())
    );
}

#[tokio::test]
async fn a_dependency_going_down_shows_in_readyz_within_one_poll_interval() {
    let node = Watched::start("eu-west-1").await;
    let interval = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let poller = HealthPolling { interval }.spawn(node.state.clone());
    node.state.health_checked_since(started).await;
    let kms_status = |readiness: &Readiness| readiness.checks.kms.status.clone();
    let (_, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
    assert_eq!(kms_status(&readiness), "up");

    node.kms
        .fail_next(u32::MAX, KmsError::Unavailable("drill".into()));
    let failed_at = tokio::time::Instant::now();
    let seen = loop {
        let (status, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
        if kms_status(&readiness) == "down" {
            assert_eq!(
                (status, readiness.status.as_str()),
                (StatusCode::OK, "degraded"),
                "the primary still serves"
            );
            break failed_at.elapsed();
        }
        assert!(
            failed_at.elapsed() < interval * 10,
            "the KMS still shows up after {:?}",
            failed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The next round starts within one interval; a round against local dependencies
    // takes milliseconds (allow for a loaded machine).
    assert!(
        seen <= interval + Duration::from_millis(250),
        "seen after {seen:?}, the interval is {interval:?}"
    );

    node.kms.fail_next(0, KmsError::Unavailable("over".into()));
    let recovered_at = tokio::time::Instant::now();
    loop {
        let (_, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
        if kms_status(&readiness) == "up" {
            break;
        }
        assert!(
            recovered_at.elapsed() < interval * 10,
            "the KMS never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    poller.abort();
}

#[tokio::test]
async fn a_stale_snapshot_answers_503_and_a_node_never_polled_is_starting() {
    let (_db, database) = region_database("ap-southeast-1").await;
    let node = crate::node(database);

    let (status, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
    assert_eq!(
        (
            status,
            readiness.status.as_str(),
            readiness.reason.as_deref()
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            Some("starting")
        )
    );

    let polling = HealthPolling::default();
    let polled_at = tokio::time::Instant::now();
    polling.poll_once(&node.state).await;
    // From here on no request does I/O, so the clock can be driven by hand: the poller
    // is stuck (it never runs again). The round began between `polled_at` and now.
    tokio::time::pause();
    let round = polled_at.elapsed();
    let margin = Duration::from_millis(50);
    tokio::time::advance(polling.stale_after() - round - margin).await;
    let (status, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
    assert_eq!(
        (status, readiness.status.as_str(), readiness.reason),
        (StatusCode::OK, "ready", None)
    );

    tokio::time::advance(round + margin * 2).await;
    let (status, readiness, _) = readiness_of(get(&node.state, "/readyz").await).await;
    assert_eq!(
        (
            status,
            readiness.status.as_str(),
            readiness.reason.as_deref()
        ),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready", Some("stale"))
    );
    assert!(
        readiness
            .age_seconds
            .is_some_and(|age| age > polling.stale_after().as_secs_f64()),
        "{readiness:?}"
    );
    assert_eq!(
        readiness.checks.primary.status, "up",
        "the last round's checks are still shown"
    );
}

/// A node over `database` whose `/metrics` is as `access` says.
fn with_metrics_access(
    database: &RegionDatabase,
    dir: &std::path::Path,
    access: MetricsAccess,
) -> NodeState {
    let mut parts = node_parts(database.clone(), dir, api::rate_limit::RateLimit::default());
    parts.metrics_access = access;
    NodeState::new(parts)
}

/// `GET /metrics` on `router`, with `token` if given: status, headers, body.
async fn metrics_of(
    router: Router,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get("/metrics");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, body_text(response).await)
}

#[tokio::test]
async fn metrics_access_follows_the_configuration() {
    let (_db, database) = region_database("eu-central-1").await;
    let dir = tempfile::tempdir().expect("dir");
    let series = "residency_db_pool_connections";

    // The default: the operator token.
    let state = with_metrics_access(&database, dir.path(), MetricsAccess::default());
    let (status, headers, text) = metrics_of(app(state.clone()), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(!text.contains(series), "{text}");
    let (status, _, text) = metrics_of(app(state.clone()), Some("rso.junk")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let (status, _, text) = metrics_of(app(state.clone()), Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(series), "{text}");
    let (status, _, text) = metrics_of(operations_app(state.clone()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(series), "{text}");

    // Public.
    let state = with_metrics_access(&database, dir.path(), MetricsAccess::Public);
    let (status, _, text) = metrics_of(app(state.clone()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(series), "{text}");

    // The operations listener only: the main listener has no such path, token or not.
    let state = with_metrics_access(&database, dir.path(), MetricsAccess::OperationsListener);
    for token in [None, Some(OPERATOR_TOKEN)] {
        let (status, _, text) = metrics_of(app(state.clone()), token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        assert!(!text.contains(series), "{text}");
    }
    let (status, _, text) = metrics_of(operations_app(state.clone()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(series), "{text}");
}

#[tokio::test]
async fn the_operations_listener_serves_operations_and_nothing_of_the_tenant_api() {
    let (_db, database) = region_database("eu-central-1").await;
    let node = crate::node(database);
    poll_health(&node.state).await;
    for (path, expected) in [
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/metrics", StatusCode::OK),
        ("/v1/openapi.json", StatusCode::NOT_FOUND),
        ("/v1/audit/keys", StatusCode::NOT_FOUND),
        (
            "/v1/tenants/2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let response = operations_app(node.state.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), expected, "{path}");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
}
