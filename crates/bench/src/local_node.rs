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

/// A running node, what it was started with, and the directory its keys live in (shared
/// with its peers: the nodes of one region share the KMS and the object store).
pub(crate) struct BenchNode {
    pub(crate) node: RunningNode,
    pub(crate) operator: String,
    pub(crate) database: DatabaseSettings,
    kms: Arc<LocalKms>,
    state: Arc<tempfile::TempDir>,
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

    /// The directory of the region's object store (the node's files).
    pub(crate) fn objects_dir(&self) -> std::path::PathBuf {
        self.state.path().join("objects")
    }

    /// Starts another node of this node's region on `listener`: the same database, KMS,
    /// object store and operator token, with `api` settings of its own.
    pub(crate) async fn peer(
        &self,
        databases: &LocalRegion,
        api: node::ApiSettings,
        audit: &residency::flags::AuditFlags,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<BenchNode> {
        start_in(
            &self.node.region,
            databases,
            api,
            audit,
            listener,
            None,
            Shared {
                kms: self.kms.clone(),
                state: self.state.clone(),
                operator: self.operator.clone(),
            },
        )
        .await
    }
}

/// The flags of every benchmark that starts a node: the node's settings as `serve` and
/// `dev` take them, and whether a missed goal fails the command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeFlags {
    /// Exit non-zero when a goal is missed or an operation failed.
    #[arg(long)]
    pub(crate) check: bool,
    /// The node's API limits, as `serve` and `dev` take them.
    #[command(flatten)]
    pub(crate) api: residency::flags::ApiFlags,
    /// The node's audit log settings, as `serve` and `dev` take them (a baseline's read
    /// events use the same).
    #[command(flatten)]
    pub(crate) audit: residency::flags::AuditFlags,
}

/// What the nodes of one benchmark region share.
struct Shared {
    kms: Arc<LocalKms>,
    state: Arc<tempfile::TempDir>,
    operator: String,
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
    start_with(region, databases, api.settings()?, audit, listener, routing).await
}

/// [`start`] with the API settings given whole (a benchmark may shorten the job runner's
/// intervals).
pub(crate) async fn start_with(
    region: &RegionId,
    databases: &LocalRegion,
    api: node::ApiSettings,
    audit: &residency::flags::AuditFlags,
    listener: tokio::net::TcpListener,
    routing: Option<Routing>,
) -> anyhow::Result<BenchNode> {
    let state = tempfile::tempdir().context("create the node's directory")?;
    let shared = Shared {
        kms: Arc::new(LocalKms::open_or_create(
            &state.path().join("kms"),
            region.clone(),
        )?),
        state: Arc::new(state),
        operator: format!("rop_{}", hex::encode(rand::random::<[u8; 32]>())),
    };
    start_in(region, databases, api, audit, listener, routing, shared).await
}

async fn start_in(
    region: &RegionId,
    databases: &LocalRegion,
    api: node::ApiSettings,
    audit: &residency::flags::AuditFlags,
    listener: tokio::net::TcpListener,
    routing: Option<Routing>,
    shared: Shared,
) -> anyhow::Result<BenchNode> {
    let database = DatabaseSettings::new(
        PgEndpoint::new("primary", databases.primary_config("postgres")),
        vec![PgEndpoint::new(
            "replica-1",
            databases.replica_config("postgres"),
        )],
    );
    let node = node::start(
        NodeConfig {
            region: region.clone(),
            database: database.clone(),
            backends: Backends {
                kms: shared.kms.clone(),
                objects: Arc::new(LocalObjectStore::new(shared.state.path().join("objects"))?),
                audit_objects: Arc::new(LocalObjectStore::new(
                    shared.state.path().join("audit-bucket"),
                )?),
            },
            audit: NodeAudit {
                keys: AuditKeys::generate(region.clone()),
                settings: audit.settings(),
            },
            platform: Platform {
                regions: vec![region.clone()],
                operator: service::access::OperatorToken::new(&shared.operator),
                api,
                routing,
            },
        },
        listener,
    )
    .await?;
    Ok(BenchNode {
        node,
        operator: shared.operator,
        database,
        kms: shared.kms,
        state: shared.state,
    })
}

/// A loopback listener for a node.
pub(crate) async fn loopback_listener() -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("bind a loopback port for the node")
}
