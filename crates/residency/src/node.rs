//! Starting one regional node from database settings: pools, migrations and region
//! stamp, health poller, HTTP server. Shared by `serve` and `dev`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use envelope::kms::Kms;
use envelope::objects::ObjectStore;
use model::RegionId;
use service::{Keyring, KeyringSettings};
use store::{DatabaseSettings, RegionDatabase, embedded_migrations};
use telemetry::NodeMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a node refreshes its database health gauges.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A node that is serving; stop it with [`RunningNode::stop`].
#[derive(Debug)]
pub(crate) struct RunningNode {
    pub region: RegionId,
    pub address: std::net::SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    poller: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// The region's KMS and object store (AWS in production, local in `residency dev`).
#[derive(Debug, Clone)]
pub(crate) struct Backends {
    pub kms: Arc<dyn Kms>,
    pub objects: Arc<dyn ObjectStore>,
}

/// Migrates and stamps the region's primary (refusing a changed migration or another
/// region's database), then serves on `listener`.
pub(crate) async fn start(
    region: RegionId,
    settings: &DatabaseSettings,
    backends: Backends,
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
    let metrics = Arc::new(NodeMetrics::new(region.as_str()));
    let keyring = Keyring::new(
        database.clone(),
        backends.kms.clone(),
        metrics.clone(),
        KeyringSettings::default(),
    );
    let state = api::NodeState::new(api::NodeParts {
        database,
        kms: backends.kms,
        objects: backends.objects,
        keyring,
        metrics,
    });
    let poller = api::spawn_health_poller(state.clone(), HEALTH_POLL_INTERVAL);
    let address = listener.local_addr().context("read listener address")?;
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(api::serve(listener, state, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    tracing::info!(region = %region, %address, "regional node serving");
    Ok(RunningNode {
        region,
        address,
        server,
        poller,
        stop,
    })
}

impl RunningNode {
    /// Whether the server task ended on its own (an error).
    pub fn has_exited(&self) -> bool {
        self.server.is_finished()
    }

    /// Stops accepting, drains in-flight requests, stops the poller.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.poller.abort();
        self.server
            .await
            .context("join node server")?
            .with_context(|| format!("serve {}", self.region))
    }
}
