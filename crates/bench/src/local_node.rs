//! A regional node for a benchmark, on a local region the benchmark started: the embedded
//! KMS and object store in a temporary directory, a fresh audit key, and the API and audit
//! settings as `serve` takes them.

use std::sync::Arc;

use anyhow::Context as _;
use devstack::LocalRegion;
use envelope::kms::local::LocalKms;
use envelope::objects::local::LocalObjectStore;
use model::RegionId;
use node::{Backends, NodeAudit, NodeConfig, Platform, Routing, RunningNode};
use service::AuditKeys;
use store::{DatabaseSettings, PgEndpoint};

/// A running node, what it was started with, and the directory its keys live in.
pub(crate) struct BenchNode {
    pub(crate) node: RunningNode,
    pub(crate) operator: String,
    pub(crate) database: DatabaseSettings,
    _state: tempfile::TempDir,
}

impl BenchNode {
    /// Stops the node (in-flight requests finish) and removes its directory, whatever
    /// the measurement's `result`; the result, or why it or the stop failed.
    pub(crate) async fn stop_after<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        let stopped = self.node.stop().await;
        let report = result?;
        stopped.context("stop the node")?;
        Ok(report)
    }
}

/// Starts the node of `region` on `listener` over `databases` (its `postgres` database,
/// primary and replica), with `routing` in front when given.
pub(crate) async fn start(
    region: &RegionId,
    databases: &LocalRegion,
    api: &residency::flags::ApiFlags,
    audit: &residency::flags::AuditFlags,
    listener: tokio::net::TcpListener,
    routing: Option<Routing>,
) -> anyhow::Result<BenchNode> {
    let state = tempfile::tempdir().context("create the node's directory")?;
    let database = DatabaseSettings::new(
        PgEndpoint::new("primary", databases.primary_config("postgres")),
        vec![PgEndpoint::new(
            "replica-1",
            databases.replica_config("postgres"),
        )],
    );
    let operator = format!("rop_{}", hex::encode(rand::random::<[u8; 32]>()));
    let node = node::start(
        NodeConfig {
            region: region.clone(),
            database: database.clone(),
            backends: Backends {
                kms: Arc::new(LocalKms::open_or_create(
                    &state.path().join("kms"),
                    region.clone(),
                )?),
                objects: Arc::new(LocalObjectStore::new(state.path().join("objects"))?),
                audit_objects: Arc::new(LocalObjectStore::new(state.path().join("audit-bucket"))?),
            },
            audit: NodeAudit {
                keys: AuditKeys::generate(region.clone()),
                settings: audit.settings(),
            },
            platform: Platform {
                regions: vec![region.clone()],
                operator: service::access::OperatorToken::new(&operator),
                api: api.settings()?,
                routing,
            },
        },
        listener,
    )
    .await?;
    Ok(BenchNode {
        node,
        operator,
        database,
        _state: state,
    })
}

/// A loopback listener for a node.
pub(crate) async fn loopback_listener() -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("bind a loopback port for the node")
}
