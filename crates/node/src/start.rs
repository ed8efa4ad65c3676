//! Starting one regional node from a [`NodeConfig`]: pools, migrations and region stamp,
//! audit log and its checkpoint task, health poller, router and HTTP server. `serve`,
//! `dev`, the benchmarks and the three-region tests all start nodes through [`start`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api::MetricsAccess;
use api::rate_limit::RateLimit;
use envelope::kms::Kms;
use envelope::objects::ObjectStore;
use hop::InternalProtocol;
use model::RegionId;
use service::jobs::{
    JobRunner, JobSettings, PurgeJob, ReencryptJob, RewrapJob, RunnerTask, SubjectIndexJob,
};
use service::{
    AuditKeys, AuditLog, AuditSettings, CheckpointTask, KeyChanges, Keyring, KeyringSettings,
    RegionAuditKeys, SigningKeys,
};
use store::{DatabaseSettings, RegionDatabase, embedded_migrations};
use telemetry::NodeMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a starting node waits for its first health round before serving anyway
/// (`/readyz` answers 503 `starting` until a round completes). A round is bounded by its
/// probes' timeouts, well within this.
const FIRST_HEALTH_ROUND_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a stopping node waits for queued audit events to be written.
pub const AUDIT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of the tenant API and how its router forwards.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest file a tenant may upload, in bytes.
    pub max_file_bytes: u64,
    /// Requests per second each API key may make on average, and at once when idle.
    pub rate_limit: RateLimit,
    /// What each client address may send to this node, checked by its router before
    /// anything else (default [`router::Rate::CLIENT_DEFAULT`]).
    pub client_rate: router::Rate,
    /// The protocol this node forwards to other regions' internal endpoints in. Production
    /// (`serve`, `dev`) always runs the default,
    /// [`InternalProtocol::Http1WithHttp2Overflow`] with
    /// [`hop::DEFAULT_HTTP1_CONNECTIONS`]: HTTP/1.1 on up to that many connections per
    /// region and HTTP/2 past them (and for every request while HTTP/2 carries that many).
    /// Only the benchmark and tests choose another.
    pub internal_protocol: InternalProtocol,
    /// Who may read `/metrics` on the main listener (the operations listener always
    /// serves it); by default the operator token.
    pub metrics_access: MetricsAccess,
    /// How the node runs the region's durable jobs (poll interval, lease, batch size);
    /// tests shorten them.
    pub jobs: JobSettings,
    /// When tenants' data keys rotate on their own (maximum age and seals per version,
    /// how often a node counts); tests shrink the bounds.
    pub key_policy: service::key_policy::KeyPolicy,
    /// How the node stops (deregistration delay, drain bound).
    pub shutdown: ShutdownSettings,
}

/// How a node stops when told to: `/readyz` fails at once while it keeps serving for
/// `deregistration_delay` (the load balancer sees the failure and stops routing to it),
/// then it stops accepting and waits at most `drain_timeout` for in-flight requests,
/// then writes its audit queue (at most [`AUDIT_DRAIN_TIMEOUT`]) and exits. The
/// container's stop timeout must cover the sum (`terraform/modules/region_compute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// How long the node keeps serving after `/readyz` begins to fail. Zero by default
    /// (tests, `residency dev`); `serve` takes it from `--deregistration-delay`.
    pub deregistration_delay: Duration,
    /// The longest the node waits for in-flight requests once it stops accepting.
    pub drain_timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            deregistration_delay: Duration::ZERO,
            drain_timeout: hop::ConnectionLimits::PRODUCTION.drain_timeout,
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: service::ServiceSettings::default().max_file_size,
            rate_limit: RateLimit::default(),
            client_rate: router::Rate::CLIENT_DEFAULT,
            internal_protocol: InternalProtocol::Http1WithHttp2Overflow {
                http1_connections: hop::DEFAULT_HTTP1_CONNECTIONS,
            },
            metrics_access: MetricsAccess::default(),
            jobs: JobSettings::default(),
            key_policy: service::key_policy::KeyPolicy::default(),
            shutdown: ShutdownSettings::default(),
        }
    }
}

impl ApiSettings {
    fn service_settings(&self) -> service::ServiceSettings {
        service::ServiceSettings {
            max_file_size: self.max_file_bytes,
            key_policy: self.key_policy,
            ..service::ServiceSettings::default()
        }
    }
}

/// The node's audit signing keys and how its log runs.
#[derive(Debug)]
pub struct NodeAudit {
    pub keys: AuditKeys,
    pub settings: AuditSettings,
}

/// Where a node serves.
#[derive(Debug)]
pub struct NodeListeners {
    /// The API: tenants, requests forwarded by other regions, public health.
    pub api: TcpListener,
    /// The operations listener, if any: `/healthz`, and `/readyz` and `/metrics` in
    /// detail, nothing else. Bind it where only operators and scrapers reach.
    pub operations: Option<TcpListener>,
}

/// A node that is serving; stop it with [`RunningNode::stop`].
#[derive(Debug)]
pub struct RunningNode {
    pub region: RegionId,
    pub address: std::net::SocketAddr,
    /// The operations listener's address, if the node has one.
    pub operations_address: Option<std::net::SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
    operations_server: Option<JoinHandle<std::io::Result<()>>>,
    state: api::NodeState,
    poller: JoinHandle<()>,
    audit: AuditLog,
    checkpoints: CheckpointTask,
    jobs: RunnerTask,
    object_sweeper: service::stoppable::StoppableTask,
    key_policy: service::key_policy::KeyPolicyTask,
    key_changes: KeyChanges,
    stop: watch::Sender<bool>,
    deregistration_delay: Duration,
}

/// The region's KMS, object store and audit bucket (AWS in production, local in
/// `residency dev`).
#[derive(Debug, Clone)]
pub struct Backends {
    pub kms: Arc<dyn Kms>,
    pub objects: Arc<dyn ObjectStore>,
    /// The region's audit bucket: the erasure ledger's entries (`docs/privacy.md`) and the
    /// anchored checkpoints (`docs/audit.md`).
    pub audit_objects: Arc<dyn ObjectStore>,
}

/// What a node knows of the whole deployment: the catalogue's regions and the operator
/// token.
#[derive(Debug, Clone)]
pub struct Platform {
    pub regions: Vec<RegionId>,
    pub operator: service::access::OperatorToken,
    pub api: ApiSettings,
    /// How this node reaches the other regions; `None` serves this region's tenants only.
    pub routing: Option<Routing>,
}

/// What the region router in front of a node needs: every region's endpoints, the
/// tenant directory, and the inter-region forwarding secret.
#[derive(Debug, Clone)]
pub struct Routing {
    pub regions: std::collections::HashMap<RegionId, router::RegionEndpoints>,
    pub directory: Arc<dyn router::Directory>,
    pub forwarding_secret: catalog::Secret,
    /// Accepted on forwarded requests besides `forwarding_secret` while every region moves
    /// to a new secret; never used to sign.
    pub previous_forwarding_secret: Option<catalog::Secret>,
    /// The catalogue's `endpoints.behind_load_balancer` of this region: clients reach the
    /// node only through a load balancer that appends their address to `X-Forwarded-For`.
    pub behind_load_balancer: bool,
}

/// How long a node trusts its cached directory entry of a tenant. A relocation is
/// corrected sooner through the 421 path.
const DIRECTORY_TTL: Duration = Duration::from_secs(60);

/// Everything one regional node is started from.
#[derive(Debug)]
pub struct NodeConfig {
    pub region: RegionId,
    /// The region's primary and replicas.
    pub database: DatabaseSettings,
    pub backends: Backends,
    pub audit: NodeAudit,
    pub platform: Platform,
}

/// Migrates and stamps the region's primary (refusing a changed migration or another
/// region's database), then serves on `listener` (no operations listener).
pub async fn start(config: NodeConfig, listener: TcpListener) -> anyhow::Result<RunningNode> {
    start_on(
        config,
        NodeListeners {
            api: listener,
            operations: None,
        },
    )
    .await
}

/// As [`start`], on `listeners`. The node serves once its first health round is done (or
/// after 15 s), so that `/readyz` reports what was probed and
/// healthy replicas are in rotation from the first request.
pub async fn start_on(config: NodeConfig, listeners: NodeListeners) -> anyhow::Result<RunningNode> {
    let NodeListeners {
        api: listener,
        operations,
    } = listeners;
    let NodeConfig {
        region,
        database: mut settings,
        backends,
        audit,
        platform,
    } = config;
    if let Some(routing) = &platform.routing {
        // Every node of every region holds the forwarding secret, so each accepts the
        // consistency tokens of every other (the key is derived from it, not the secret).
        let mut keys =
            store::ConsistencyKeys::derive(routing.forwarding_secret.expose().as_bytes());
        if let Some(previous) = &routing.previous_forwarding_secret {
            keys = keys.with_previous(previous.expose().as_bytes());
        }
        settings.consistency_keys = keys;
    }
    let database =
        RegionDatabase::new(region.clone(), &settings).context("build database pools")?;
    let report = database
        .prepare(embedded_migrations())
        .await
        .with_context(|| format!("prepare the {region} primary"))?;
    if !report.applied.is_empty() {
        tracing::info!(region = %region, applied = ?report.applied, "migrated primary");
    }
    let mut router_metrics = None;
    let mut connection_metrics = None;
    let metrics = Arc::new(NodeMetrics::with_extra(region.as_str(), |registry| {
        if platform.routing.is_some() {
            router_metrics = Some(router::RouterMetrics::new(registry));
        }
        connection_metrics = Some(hop::ConnectionMetrics::new(registry));
    }));
    // The server's limits: the head's as the api reads them, a node's connection limits,
    // and the counters of refused and timed-out connections in the node's registry.
    let server_config = hop::ServerConfig {
        head: api::SERVER_HEAD_LIMITS,
        connections: hop::ConnectionLimits {
            drain_timeout: platform.api.shutdown.drain_timeout,
            ..hop::ConnectionLimits::PRODUCTION
        },
        metrics: connection_metrics.unwrap_or_default(),
    };
    let keyring = Keyring::new(
        database.clone(),
        backends.kms.clone(),
        metrics.clone(),
        KeyringSettings::default(),
    );
    // The region's audit keys live in its database (the configured text is imported
    // once); a node that cannot load them now signs with the configured key, which it
    // publishes, until its key-change listener loads them.
    let region_audit_keys = RegionAuditKeys::new(database.clone(), backends.kms.clone());
    let loaded = region_audit_keys
        .bootstrap(&SigningKeys::from_key_text(&audit.keys))
        .await;
    let audit = AuditLog::with_settings(
        database.clone(),
        audit.keys,
        audit.settings,
        metrics.clone(),
    );
    match loaded {
        Ok(keys) => audit.install_keys(keys),
        Err(err) => tracing::error!(
            region = %region,
            "cannot load the region's audit signing keys yet, signing with the configured key: {err}"
        ),
    }
    let key_id = audit.signing_key().key_id().to_owned();
    let key_changes = KeyChanges::spawn(
        &database,
        keyring.clone(),
        Some((audit.clone(), region_audit_keys.clone())),
        store::ListenerSettings::default(),
    );
    // Checkpoints are anchored in the region's write-once audit bucket (docs/audit.md,
    // "Anchors").
    let checkpoints = audit.spawn_anchored_checkpoints(backends.audit_objects.clone());
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
            config.internal_protocol = platform.api.internal_protocol;
            config.client_rate = platform.api.client_rate;
            config.behind_load_balancer = routing.behind_load_balancer;
            Some((config, cache))
        }
        None => None,
    };
    let registry: Option<Arc<dyn service::TenantRegistry>> = routing.as_ref().map(|(_, cache)| {
        Arc::new(crate::directory::Registrar {
            cache: cache.clone(),
        }) as Arc<dyn service::TenantRegistry>
    });
    let rewrap = RewrapJob::new(keyring.clone(), database.clone())
        .with_audit_keys(region_audit_keys.clone());
    let purge = PurgeJob::new(
        database.clone(),
        backends.objects.clone(),
        audit.clone(),
        registry.clone(),
    );
    let subject_index = SubjectIndexJob::new(keyring.clone(), database.clone());
    // Every node sweeps the region's outbox of object deletions, beside its job runner
    // (stopped with the node, or when a failed start drops it).
    let object_sweeper = service::ObjectSweeper::new(
        database.clone(),
        backends.objects.clone(),
        platform.api.jobs.object_deletions.clone(),
        metrics.clone(),
    )
    .spawn();
    let job_database = database.clone();
    let job_metrics = metrics.clone();
    let state = api::NodeState::new(api::NodeParts {
        database,
        kms: backends.kms,
        objects: backends.objects,
        audit_objects: backends.audit_objects,
        keyring,
        audit: audit.clone(),
        metrics,
        regions: platform.regions,
        operator: platform.operator,
        service: platform.api.service_settings(),
        rate_limit: platform.api.rate_limit,
        registry,
        behind_router: routing.is_some(),
        directory: platform.routing.as_ref().map(|routing| {
            Arc::new(crate::directory::DirectoryReadiness(
                routing.directory.clone(),
            )) as Arc<dyn api::DirectoryProbe>
        }),
        metrics_access: platform.api.metrics_access,
    });
    // Every node of the region runs jobs; a lease in the primary keeps each job on one.
    let jobs = JobRunner::new(
        job_database,
        vec![
            Arc::new(rewrap),
            Arc::new(ReencryptJob::new(state.service().clone())),
            Arc::new(purge),
            Arc::new(subject_index),
            Arc::new(service::jobs::ErasureFollowUpJob::new(
                state.service().clone(),
            )),
            Arc::new(service::jobs::SubjectErasureJob::new(
                state.service().clone(),
            )),
        ],
        platform.api.jobs.clone(),
        job_metrics,
    );
    // An offboarding shreds the tenant's keys: hearing it, every node of the region stops
    // serving the tenant too.
    let service = state.service().clone();
    key_changes.forget_tenants_with(Arc::new(move |tenant| service.forget_cached_tenant(tenant)));
    // A database restored from a backup lacks the erasures made since: erase those
    // subjects again before serving anything (docs/privacy.md, "The erasure ledger").
    reapply_erasure_ledger(&region, state.service()).await;
    let first_round = tokio::time::Instant::now();
    let poller = api::HealthPolling::default().spawn(state.clone());
    if tokio::time::timeout(
        FIRST_HEALTH_ROUND_TIMEOUT,
        state.health_checked_since(first_round),
    )
    .await
    .is_err()
    {
        tracing::warn!(region = %region, "serving before the first health round finished");
    }
    let address = listener.local_addr().context("read listener address")?;
    let operations_address = operations
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("read operations listener address")?;
    let (stop, stopped) = watch::channel(false);
    let stopping = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let operations_server = operations.map(|listener| {
        tokio::spawn(api::serve_operations(
            listener,
            state.clone(),
            stopping(stopped.clone()),
        ))
    });
    let shutdown = stopping(stopped);
    let server = match routing {
        Some((config, _)) => {
            let routed = tower::Layer::layer(&router::layer(config), api::app(state.clone()));
            let for_connection = move |peer| routed.for_peer(peer);
            tokio::spawn(hop::serve_connections(
                listener,
                server_config,
                for_connection,
                shutdown,
            ))
        }
        None => tokio::spawn(hop::serve_service(
            listener,
            server_config,
            api::app(state.clone()),
            shutdown,
        )),
    };
    let jobs = jobs.spawn();
    let deregistration_delay = platform.api.shutdown.deregistration_delay;
    // Every node counts its seals and rotates the keys of tenants due.
    let key_policy = state.service().spawn_key_policy();
    tracing::info!(region = %region, %address, operations = ?operations_address, "regional node serving");
    Ok(RunningNode {
        region,
        address,
        operations_address,
        server,
        operations_server,
        state,
        poller,
        audit,
        checkpoints,
        jobs,
        object_sweeper,
        key_policy,
        key_changes,
        stop,
        deregistration_delay,
    })
}

impl RunningNode {
    /// Whether a server task ended on its own (an error).
    pub fn has_exited(&self) -> bool {
        self.server.is_finished()
            || self
                .operations_server
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
    }

    /// The public half of the key the node signs with now.
    pub fn audit_public_key(&self) -> audit::PublicKey {
        self.audit.signing_key().public()
    }

    /// Resolves once the health poller has finished a round that began at or after
    /// `since`.
    pub async fn health_checked_since(&self, since: tokio::time::Instant) {
        self.state.health_checked_since(since).await;
    }

    /// Stops the node as [`ShutdownSettings`] says: `/readyz` fails at once while the node
    /// serves on for the deregistration delay; then the job runner stops (its jobs' leases
    /// given up for another node), the server stops accepting and drains in-flight
    /// requests (bounded), the poller, the checkpoint task and the key-change listener
    /// stop, and the queued audit events are written (waiting a bounded time).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.state.start_draining();
        if !self.deregistration_delay.is_zero() {
            tracing::info!(
                region = %self.region,
                seconds = self.deregistration_delay.as_secs_f64(),
                "readiness fails; serving on for the deregistration delay"
            );
            tokio::time::sleep(self.deregistration_delay).await;
        }
        self.jobs.stop().await;
        self.key_policy.stop().await;
        // Its rows in flight are due again once their lease ends.
        self.object_sweeper.stop().await;
        let _ = self.stop.send(true);
        self.poller.abort();
        let served = self.server.await;
        let operations = match self.operations_server {
            Some(server) => Some(server.await),
            None => None,
        };
        self.checkpoints.stop().await;
        self.key_changes.stop().await;
        // The open windows of aggregated denials go into the queue before it drains.
        if let Err(err) = self.state.service().flush_denials().await {
            tracing::error!(region = %self.region, "failed to record the open denials before stopping: {err:#}");
        }
        if let Err(err) = self.audit.shutdown(AUDIT_DRAIN_TIMEOUT).await {
            tracing::error!(region = %self.region, "failed to write the audit queue before stopping: {err}");
        }
        if let Some(operations) = operations {
            operations
                .context("join the operations server")?
                .with_context(|| format!("serve {} operations", self.region))?;
        }
        served
            .context("join node server")?
            .with_context(|| format!("serve {}", self.region))
    }
}

/// Re-applies the region's erasure ledger before the node serves. A ledger that cannot be
/// read now (the audit bucket away) does not stop the node: the error is logged, and the
/// operator re-applies it with `residency erasures reapply` once the bucket is back.
async fn reapply_erasure_ledger(region: &RegionId, service: &service::RegionService) {
    match service.reapply_ledger().await {
        Ok(report) if report.reapplied > 0 => tracing::warn!(
            region = %region,
            entries = report.entries,
            reapplied = report.reapplied,
            records = report.records_erased,
            "erasures missing from the database were re-applied from the ledger"
        ),
        Ok(report) => tracing::info!(
            region = %region,
            entries = report.entries,
            skipped = report.skipped,
            "erasure ledger checked: every entry is applied"
        ),
        Err(err) => tracing::error!(
            region = %region,
            "cannot re-apply the erasure ledger at start (re-apply it on demand): {err}"
        ),
    }
}
