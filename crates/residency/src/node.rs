//! Starting one regional node from database settings: pools, migrations and region
//! stamp, audit log and its checkpoint task, health poller, HTTP server. Shared by
//! `serve` and `dev`, with the command-line flags they share.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use envelope::kms::Kms;
use envelope::objects::ObjectStore;
use model::RegionId;
use service::{
    AuditKeys, AuditLog, AuditSettings, CheckpointTask, Keyring, KeyringSettings, ReadAudit,
};
use store::{DatabaseSettings, RegionDatabase, embedded_migrations};
use telemetry::NodeMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a node refreshes its database health gauges.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a stopping node waits for queued audit events to be written.
const AUDIT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of the tenant API and how its router forwards, shared by `dev` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiFlags {
    /// Largest file a tenant may upload, in MiB.
    #[arg(
        long,
        env = "RESIDENCY_MAX_FILE_MIB",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=1_048_576)
    )]
    max_file_mib: u64,
    /// Requests per second each API key may make on average.
    #[arg(long, env = "RESIDENCY_RATE_LIMIT", default_value_t = 1000.0)]
    rate_limit: f64,
    /// Requests an idle API key may make at once.
    #[arg(long, env = "RESIDENCY_RATE_BURST", default_value_t = 2000.0)]
    rate_burst: f64,
    /// The protocol this node forwards to other regions' internal endpoints in:
    /// HTTP/1.1 on up to `--internal-http1-connections` per region and HTTP/2 past them
    /// (and for every request while HTTP/2 carries that many), or only one of the two
    /// (`http1` where something between the regions speaks no HTTP/2 on a plain-http
    /// endpoint; on https, ALPN settles it).
    #[arg(long, env = "RESIDENCY_INTERNAL_PROTOCOL", value_enum, default_value_t = InternalProtocolFlag::Http1ThenHttp2)]
    internal_protocol: InternalProtocolFlag,
    /// With `--internal-protocol http1-then-http2`: HTTP/1.1 connections per region.
    #[arg(
        long,
        env = "RESIDENCY_INTERNAL_HTTP1_CONNECTIONS",
        default_value_t = router::DEFAULT_HTTP1_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000)
    )]
    internal_http1_connections: usize,
}

/// The protocols a node may forward in, by their command-line names (`serve`, `dev` and
/// `bench router` take them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InternalProtocolFlag {
    Http1ThenHttp2,
    Http1,
    Http2,
}

impl InternalProtocolFlag {
    /// The router's protocol, `http1_connections` bounding HTTP/1.1 where it is bounded.
    pub(crate) fn protocol(self, http1_connections: usize) -> router::InternalProtocol {
        match self {
            Self::Http1 => router::InternalProtocol::Http1,
            Self::Http2 => router::InternalProtocol::Http2,
            Self::Http1ThenHttp2 => {
                router::InternalProtocol::Http1WithHttp2Overflow { http1_connections }
            }
        }
    }

    /// Its name on the command line.
    pub(crate) fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("no value is skipped")
            .get_name()
            .to_owned()
    }

    /// `http1_connections` when the protocol is bounded by it.
    pub(crate) fn http1_connections(self, http1_connections: usize) -> Option<usize> {
        (self == Self::Http1ThenHttp2).then_some(http1_connections)
    }
}

impl ApiFlags {
    fn internal_protocol(&self) -> router::InternalProtocol {
        self.internal_protocol
            .protocol(self.internal_http1_connections)
    }

    fn service_settings(&self) -> service::ServiceSettings {
        service::ServiceSettings {
            max_file_size: self.max_file_mib * 1024 * 1024,
            ..service::ServiceSettings::default()
        }
    }

    fn rate_limit(&self) -> anyhow::Result<api::rate_limit::RateLimit> {
        anyhow::ensure!(
            self.rate_limit > 0.0 && self.rate_burst >= 1.0,
            "--rate-limit must be positive and --rate-burst at least 1"
        );
        Ok(api::rate_limit::RateLimit {
            per_second: self.rate_limit,
            burst: self.rate_burst,
        })
    }
}

/// The audit log's flags, shared by `dev` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AuditFlags {
    /// Seconds between signed checkpoints of the audit chain heads that moved.
    #[arg(
        long,
        env = "RESIDENCY_AUDIT_CHECKPOINT_INTERVAL",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    audit_checkpoint_interval: u64,
    /// How read events (record.read, file.get, record.search, denials) are written:
    /// `batched` through a bounded queue, or `sync` before the read answers.
    #[arg(long, env = "RESIDENCY_AUDIT_READS", value_enum, default_value_t = ReadMode::Batched)]
    audit_reads: ReadMode,
    /// Read events the batched queue holds; while it is full, reads fail with 503.
    #[arg(
        long,
        env = "RESIDENCY_AUDIT_QUEUE_CAPACITY",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    audit_queue_capacity: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReadMode {
    Batched,
    Sync,
}

impl AuditFlags {
    pub fn settings(&self) -> AuditSettings {
        let reads = match self.audit_reads {
            ReadMode::Sync => ReadAudit::Sync,
            ReadMode::Batched => {
                ReadAudit::batched(usize::try_from(self.audit_queue_capacity).unwrap_or(usize::MAX))
            }
        };
        AuditSettings {
            reads,
            checkpoint_interval: Duration::from_secs(self.audit_checkpoint_interval),
            ..AuditSettings::default()
        }
    }
}

/// The node's audit signing keys and how its log runs.
#[derive(Debug)]
pub(crate) struct NodeAudit {
    pub keys: AuditKeys,
    pub settings: AuditSettings,
}

/// A node that is serving; stop it with [`RunningNode::stop`].
#[derive(Debug)]
pub(crate) struct RunningNode {
    pub region: RegionId,
    pub address: std::net::SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    poller: JoinHandle<()>,
    audit: AuditLog,
    checkpoints: CheckpointTask,
    stop: watch::Sender<bool>,
}

/// The region's KMS and object store (AWS in production, local in `residency dev`).
#[derive(Debug, Clone)]
pub(crate) struct Backends {
    pub kms: Arc<dyn Kms>,
    pub objects: Arc<dyn ObjectStore>,
}

/// What a node knows of the whole deployment: the catalogue's regions and the operator
/// token.
#[derive(Debug, Clone)]
pub(crate) struct Platform {
    pub regions: Vec<RegionId>,
    pub operator: service::access::OperatorToken,
    pub api: ApiFlags,
    /// How this node reaches the other regions; `None` serves this region's tenants only.
    pub routing: Option<Routing>,
}

/// What the region router in front of a node needs: every region's endpoints, the
/// tenant directory, and the inter-region forwarding secret.
#[derive(Debug, Clone)]
pub(crate) struct Routing {
    pub regions: std::collections::HashMap<RegionId, router::RegionEndpoints>,
    pub directory: Arc<dyn router::Directory>,
    pub forwarding_secret: catalog::Secret,
    /// Accepted on forwarded requests besides `forwarding_secret` while every region moves
    /// to a new secret; never used to sign.
    pub previous_forwarding_secret: Option<catalog::Secret>,
}

/// How long a node trusts its cached directory entry of a tenant. A relocation is
/// corrected sooner through the 421 path.
const DIRECTORY_TTL: Duration = Duration::from_secs(60);

/// Migrates and stamps the region's primary (refusing a changed migration or another
/// region's database), then serves on `listener`.
pub(crate) async fn start(
    region: RegionId,
    settings: &DatabaseSettings,
    backends: Backends,
    audit: NodeAudit,
    platform: Platform,
    listener: TcpListener,
) -> anyhow::Result<RunningNode> {
    let database = RegionDatabase::new(region.clone(), settings).context("build database pools")?;
    let report = database
        .prepare(embedded_migrations())
        .await
        .with_context(|| format!("prepare the {region} primary"))?;
    if !report.applied.is_empty() {
        tracing::info!(region = %region, applied = ?report.applied, "migrated primary");
    }
    let mut router_metrics = None;
    let metrics = Arc::new(NodeMetrics::with_extra(region.as_str(), |registry| {
        if platform.routing.is_some() {
            router_metrics = Some(router::RouterMetrics::new(registry));
        }
    }));
    let keyring = Keyring::new(
        database.clone(),
        backends.kms.clone(),
        metrics.clone(),
        KeyringSettings::default(),
    );
    let key_id = audit.keys.current().key_id().to_owned();
    let audit = AuditLog::with_settings(
        database.clone(),
        audit.keys,
        audit.settings,
        metrics.clone(),
    );
    let checkpoints = audit.spawn_checkpoints();
    tracing::info!(
        region = %region,
        key_id,
        reads = audit.settings().reads.mode(),
        checkpoint_interval_seconds = audit.settings().checkpoint_interval.as_secs_f64(),
        "audit log ready"
    );
    let routing = match &platform.routing {
        Some(routing) => {
            let cache =
                router::CachedDirectory::new(routing.directory.clone(), DIRECTORY_TTL, 100_000);
            let key = router::ForwardingKey::from_secret(&routing.forwarding_secret)
                .context("the forwarding secret")?;
            let mut signer = router::ForwardSigner::new(key, router::DEFAULT_MAX_SKEW);
            if let Some(previous) = &routing.previous_forwarding_secret {
                signer = signer.with_previous(
                    router::ForwardingKey::from_secret(previous)
                        .context("the previous forwarding secret")?,
                );
            }
            let mut config = router::RouterConfig::new(
                region.clone(),
                routing.regions.clone(),
                cache.clone(),
                signer,
            );
            config.metrics = router_metrics;
            config.internal_protocol = platform.api.internal_protocol();
            Some((config, cache))
        }
        None => None,
    };
    let registry: Option<Arc<dyn service::TenantRegistry>> = routing.as_ref().map(|(_, cache)| {
        Arc::new(crate::directory::Registrar {
            cache: cache.clone(),
        }) as Arc<dyn service::TenantRegistry>
    });
    let state = api::NodeState::new(api::NodeParts {
        database,
        kms: backends.kms,
        objects: backends.objects,
        keyring,
        audit: audit.clone(),
        metrics,
        regions: platform.regions,
        operator: platform.operator,
        service: platform.api.service_settings(),
        rate_limit: platform.api.rate_limit()?,
        registry,
        behind_router: routing.is_some(),
        directory: platform.routing.as_ref().map(|routing| {
            Arc::new(crate::directory::DirectoryReadiness(
                routing.directory.clone(),
            )) as Arc<dyn api::DirectoryProbe>
        }),
    });
    let poller = api::spawn_health_poller(state.clone(), HEALTH_POLL_INTERVAL);
    let address = listener.local_addr().context("read listener address")?;
    let (stop, mut stopped) = watch::channel(false);
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let server = match routing {
        Some((config, _)) => {
            let routed = tower::Layer::layer(&router::layer(config), api::app(state));
            let for_connection = move |peer| routed.for_peer(peer);
            tokio::spawn(api::serve_connections(listener, for_connection, shutdown))
        }
        None => tokio::spawn(api::serve(listener, state, shutdown)),
    };
    tracing::info!(region = %region, %address, "regional node serving");
    Ok(RunningNode {
        region,
        address,
        server,
        poller,
        audit,
        checkpoints,
        stop,
    })
}

impl RunningNode {
    /// Whether the server task ended on its own (an error).
    pub fn has_exited(&self) -> bool {
        self.server.is_finished()
    }

    /// Stops accepting, drains in-flight requests, stops the poller and the checkpoint
    /// task, and writes the queued audit events (waiting a bounded time).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.poller.abort();
        let served = self.server.await;
        self.checkpoints.stop().await;
        if let Err(err) = self.audit.shutdown(AUDIT_DRAIN_TIMEOUT).await {
            tracing::error!(region = %self.region, "failed to write the audit queue before stopping: {err}");
        }
        served
            .context("join node server")?
            .with_context(|| format!("serve {}", self.region))
    }
}
