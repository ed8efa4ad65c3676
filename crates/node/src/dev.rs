//! `dev`'s composition: the whole platform on one machine. Per region: a real PostgreSQL
//! primary and streaming replica (from the system's binaries), local KMS key material, a
//! local object store directory, and the regional node. [`DevPlatform::start`] writes
//! `endpoints.json`; [`DevPlatform::stop`] stops every node and every PostgreSQL process.
//!
//! State directory layout: `operator_token`, `endpoints.json`, `.lock`, and per region
//! `<region>/{postgres/, kms/ (the local KMS's master keys), objects/, audit-bucket/ (the erasure ledger, the anchored checkpoints), api_port,
//! operations_port, audit/signing.key, export_password, export_replica_url}`; `analytics/` is where
//! `residency export run --dev-state` releases (the analytics bucket). A second start with the same directory reuses everything:
//! clusters, data, ports, token, audit signing keys (so bundles exported before a restart
//! still verify against `GET /v1/audit/keys`).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use catalog::Catalog;
use devstack::{Durability, LocalRegion, LocalRegionOptions, PgBinaries};
use envelope::kms::local::LocalKms;
use envelope::objects::local::LocalObjectStore;
use model::RegionId;
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;
use service::{AuditKeys, AuditSettings};
use store::{DatabaseSettings, PgEndpoint};

use crate::directory::{LateDirectory, PgDirectory};
use crate::{
    ApiSettings, Backends, NodeAudit, NodeConfig, NodeListeners, Platform, Routing, RunningNode,
};

/// The application database created in every local primary.
const APP_DATABASE: &str = "residency";

/// What `residency dev` starts.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Where clusters, keys, objects and endpoints.json live; reused across starts.
    pub state_dir: PathBuf,
    /// Regions to start, ids of the catalogue (blank entries are skipped).
    pub regions: Vec<String>,
    /// The region catalogue directory.
    pub catalog: PathBuf,
    pub audit: AuditSettings,
    pub api: ApiSettings,
}

/// One started region: its databases, its node, and what `endpoints.json` says of it.
#[derive(Debug)]
struct DevRegion {
    id: RegionId,
    databases: LocalRegion,
    node: RunningNode,
    kms_key: PathBuf,
    object_store: PathBuf,
    audit_key: audit::PublicKey,
}

/// A running local platform: every region's databases and node, `endpoints.json`, and
/// the lock on the state directory. Stop it with [`DevPlatform::stop`].
#[derive(Debug)]
pub struct DevPlatform {
    state_dir: PathBuf,
    operator_token: String,
    regions: Vec<DevRegion>,
    directory: LateDirectory,
    _lock: Flock<fs::File>,
}

impl DevPlatform {
    /// Starts every region of `config` (stopping those started if one fails) and writes
    /// `endpoints.json`.
    pub async fn start(config: DevConfig) -> anyhow::Result<Self> {
        let catalog = Catalog::load_dir(&config.catalog)?;
        let regions = requested_regions(&catalog, &config.regions)?;
        let binaries = PgBinaries::locate()?;

        fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("create state directory {}", config.state_dir.display()))?;
        let state_dir = config
            .state_dir
            .canonicalize()
            .context("resolve state directory")?;
        let lock = lock_state_dir(&state_dir)?;
        let operator_token = load_or_create_secret(&state_dir.join("operator_token"))?;

        // Every node's port is bound before any node starts: each router needs them all.
        // Each node also gets an operations listener on loopback (detailed `/readyz`,
        // `/metrics` whatever `--metrics-access` says).
        let mut listeners = Vec::new();
        let mut endpoints = std::collections::HashMap::new();
        for id in &regions {
            let root = state_dir.join(id.as_str());
            fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
            let listener = bind_saved_port(&root.join("api_port")).await?;
            let operations = bind_saved_port(&root.join("operations_port")).await?;
            let url: http::Uri = format!("http://{}", listener.local_addr()?)
                .parse()
                .context("node address as a URI")?;
            endpoints.insert(
                id.clone(),
                router::RegionEndpoints {
                    internal: url.clone(),
                    public: url,
                },
            );
            listeners.push(NodeListeners {
                api: listener,
                operations: Some(operations),
            });
        }
        let forwarding_secret = load_or_create_secret(&state_dir.join("forwarding_secret"))?;
        // The directory lives in the first region's database (it holds no personal data).
        let directory = LateDirectory::default();
        let platform = Platform {
            regions: catalog.ids().cloned().collect(),
            operator: service::access::OperatorToken::new(&operator_token),
            api: config.api.clone(),
            routing: Some(Routing {
                regions: endpoints,
                directory: Arc::new(directory.clone()),
                forwarding_secret: catalog::Secret::new(forwarding_secret),
                previous_forwarding_secret: None,
                // Clients call the loopback listeners directly.
                behind_load_balancer: false,
            }),
        };
        let started = start_regions(
            &binaries,
            &state_dir,
            regions.iter().cloned().zip(listeners).collect(),
            &config.audit,
            &platform,
            &directory,
        )
        .await?;
        // A node's first health round may have run before the first region's directory
        // was up: endpoints.json appears once every node has seen the whole platform.
        // Rounds are bounded by their probes' timeouts; the bound here only keeps a
        // broken poller from hanging the start (its `/readyz` then says `stale`).
        let all_started = tokio::time::Instant::now();
        let rounds = futures::future::join_all(
            started
                .iter()
                .map(|region| region.node.health_checked_since(all_started)),
        );
        if tokio::time::timeout(std::time::Duration::from_secs(30), rounds)
            .await
            .is_err()
        {
            tracing::warn!("a node's health poller did not finish a round after start");
        }
        let written = write_endpoints(&state_dir.join(ENDPOINTS_FILE), &operator_token, &started);
        if let Err(err) = written {
            stop_all(started, &directory).await;
            return Err(err);
        }
        Ok(Self {
            state_dir,
            operator_token,
            regions: started,
            directory,
            _lock: lock,
        })
    }

    /// What the platform runs, for people: every region's API and database ports, the
    /// operator token and where `endpoints.json` is.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "Residency dev platform is up ({} regions).\n",
            self.regions.len()
        );
        for region in &self.regions {
            let _ = writeln!(
                out,
                "  {:<16} api http://{}   operations http://{}   primary 127.0.0.1:{}   replica 127.0.0.1:{}",
                region.id,
                region.node.address,
                operations_address(&region.node),
                region.databases.primary().port(),
                region.databases.replica().port(),
            );
        }
        let _ = writeln!(out, "Operator token: {}", self.operator_token);
        let _ = writeln!(
            out,
            "Endpoints and credentials: {}",
            self.state_dir.join(ENDPOINTS_FILE).display()
        );
        out
    }

    /// Resolves when a region's node stops on its own (an error), naming the region.
    pub async fn node_exited(&self) -> RegionId {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if let Some(region) = self.regions.iter().find(|r| r.node.has_exited()) {
                return region.id.clone();
            }
        }
    }

    /// Removes `endpoints.json`, then stops every node, the directory's connections and
    /// every cluster.
    pub async fn stop(self) {
        let _ = fs::remove_file(self.state_dir.join(ENDPOINTS_FILE));
        stop_all(self.regions, &self.directory).await;
    }
}

/// The file, in the state directory, naming every region's endpoints and credentials.
const ENDPOINTS_FILE: &str = "endpoints.json";

fn requested_regions(catalog: &Catalog, requested: &[String]) -> anyhow::Result<Vec<RegionId>> {
    let mut seen = BTreeSet::new();
    let mut regions = Vec::new();
    for raw in requested.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let (id, _) = crate::serve::find_region(catalog, raw).context("--regions")?;
        if !seen.insert(id.clone()) {
            bail!("--regions: {id} is listed twice");
        }
        regions.push(id);
    }
    if regions.is_empty() {
        bail!("--regions: name at least one region");
    }
    Ok(regions)
}

/// Holds an exclusive lock on the state directory so two platforms never share clusters.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<Flock<fs::File>> {
    let path = state_dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another `residency dev` is using {}: stop it first or pass another --state-dir",
            state_dir.display()
        )
    })
}

/// Starts every region concurrently; if one fails, stops the others and reports it.
async fn start_regions(
    binaries: &PgBinaries,
    state_dir: &Path,
    regions: Vec<(RegionId, NodeListeners)>,
    audit: &AuditSettings,
    platform: &Platform,
    directory: &LateDirectory,
) -> anyhow::Result<Vec<DevRegion>> {
    let directory_region = regions.first().map(|(id, _)| id.clone());
    let results = futures::future::join_all(regions.into_iter().map(|(id, listeners)| {
        let holds_directory = directory_region.as_ref() == Some(&id);
        start_region(
            binaries,
            state_dir.join(id.as_str()),
            id,
            audit,
            platform.clone(),
            listeners,
            holds_directory.then(|| directory.clone()),
        )
    }))
    .await;
    let mut started = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(region) => started.push(region),
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    if let Some(err) = failure {
        stop_all(started, directory).await;
        return Err(err);
    }
    Ok(started)
}

async fn start_region(
    binaries: &PgBinaries,
    root: PathBuf,
    id: RegionId,
    audit: &AuditSettings,
    platform: Platform,
    listeners: NodeListeners,
    directory: Option<LateDirectory>,
) -> anyhow::Result<DevRegion> {
    fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let keys = load_or_create_audit_keys(&root.join("audit"), &id)?;
    let audit = NodeAudit {
        keys,
        settings: audit.clone(),
    };
    let kms_key = root.join("kms");
    let object_store = root.join("objects");
    let backends = Backends {
        kms: Arc::new(
            LocalKms::open_or_create(&kms_key, id.clone()).context("open the local KMS")?,
        ),
        objects: Arc::new(
            LocalObjectStore::new(object_store.clone()).context("open the local object store")?,
        ),
        // The region's audit bucket: the erasure ledger's entries and the anchored
        // checkpoints.
        audit_objects: Arc::new(
            LocalObjectStore::new(root.join("audit-bucket"))
                .context("open the local audit bucket")?,
        ),
    };

    let options = LocalRegionOptions {
        name: id.to_string(),
        durability: Durability::Durable { root: root.clone() },
        server_tls: None,
    };
    let databases = LocalRegion::start(binaries, options)
        .await
        .with_context(|| format!("start the {id} databases"))?;
    let node = match start_node(
        &id, &databases, backends, audit, platform, listeners, directory,
    )
    .await
    {
        Ok(node) => node,
        Err(err) => {
            let _ = databases.stop().await;
            return Err(err.context(format!("start the {id} node")));
        }
    };
    if let Err(err) = prepare_export_role(&databases, &root).await {
        let _ = node.stop().await;
        let _ = databases.stop().await;
        return Err(err.context(format!("prepare the {id} export role")));
    }
    // The region's key as the node loaded it (after a rotation, no longer the file's).
    let audit_key = node.audit_public_key();
    Ok(DevRegion {
        id,
        databases,
        node,
        kms_key,
        object_store,
        audit_key,
    })
}

async fn start_node(
    id: &RegionId,
    databases: &LocalRegion,
    backends: Backends,
    audit: NodeAudit,
    platform: Platform,
    listeners: NodeListeners,
    directory: Option<LateDirectory>,
) -> anyhow::Result<RunningNode> {
    create_app_database(databases).await?;
    if let Some(directory) = directory {
        let endpoint = PgEndpoint::new("directory", databases.node_primary_config(APP_DATABASE));
        let database =
            store::directory::DirectoryDatabase::new(&endpoint).context("the directory pool")?;
        directory.set(PgDirectory::new(database));
    }
    // The node logs in as `residency_node`, which owns nothing; the cluster's superuser
    // stands in for the schema owner and only migrates (as `residency migrate` does).
    let settings = DatabaseSettings::new(
        PgEndpoint::new("primary", databases.node_primary_config(APP_DATABASE)),
        vec![PgEndpoint::new(
            "replica-1",
            databases.node_replica_config(APP_DATABASE),
        )],
    )
    .with_owner(PgEndpoint::new(
        "owner",
        databases.primary_config(APP_DATABASE),
    ));
    crate::start_on(
        NodeConfig {
            region: id.clone(),
            database: settings,
            backends,
            audit,
            platform,
        },
        listeners,
    )
    .await
}

/// Where `dev` writes the URL the analytics export reads the region's replica with (as
/// the `residency_export` role), for `residency export run --dev-state`.
pub const EXPORT_REPLICA_FILE: &str = "export_replica_url";

/// Gives the export role (created by the migrations, without a password) the region's
/// saved password, and writes its replica URL beside the region's other state.
async fn prepare_export_role(databases: &LocalRegion, root: &Path) -> anyhow::Result<()> {
    let password = load_or_create_secret(&root.join("export_password"))?;
    let (client, connection) = databases
        .primary_config(APP_DATABASE)
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to set the export role's password")?;
    let connection = tokio::spawn(connection);
    // The password is a word of letters, digits and `_`: nothing to quote.
    let set = client
        .batch_execute(&format!(
            "alter role {} password '{password}'",
            store::export::EXPORT_ROLE
        ))
        .await
        .context("set the export role's password");
    drop(client);
    let _ = connection.await;
    set?;
    let port = databases.replica().port();
    let url = format!(
        "postgres://{}:{password}@127.0.0.1:{port}/{APP_DATABASE}\n",
        store::export::EXPORT_ROLE
    );
    write_private(&root.join(EXPORT_REPLICA_FILE), url.as_bytes())
}

async fn create_app_database(databases: &LocalRegion) -> anyhow::Result<()> {
    let (client, connection) = databases
        .primary_config("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the local primary")?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt(
            "select 1 from pg_database where datname = $1",
            &[&APP_DATABASE],
        )
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("create database {APP_DATABASE}"))
            .await?;
    }
    drop(client);
    let _ = connection.await;
    wait_for_replica(databases).await
}

/// Waits until the replica has replayed the app database's creation, so that the node
/// is ready (replica in rotation) by the time endpoints.json appears.
async fn wait_for_replica(databases: &LocalRegion) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match databases
            .replica_config(APP_DATABASE)
            .connect(tokio_postgres::NoTls)
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(err).context(format!(
                    "the {} replica never replayed the creation of the {APP_DATABASE} database",
                    databases.name()
                )));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
}

/// Binds the API port used last time if it is free, else a new one (and saves it).
async fn bind_saved_port(path: &Path) -> anyhow::Result<tokio::net::TcpListener> {
    let saved = fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok());
    if let Some(port) = saved
        && let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await
    {
        return Ok(listener);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("bind the API port")?;
    let port = listener.local_addr()?.port();
    fs::write(path, format!("{port}\n")).with_context(|| format!("write {}", path.display()))?;
    Ok(listener)
}

/// The region's audit signing keys from `dir/signing.key` (owner-only), created with a
/// new key on first start and reused after, so that a restart keeps the key id. The
/// file's format (docs/audit.md) also keeps retired public keys across a rotation.
fn load_or_create_audit_keys(dir: &Path, region: &RegionId) -> anyhow::Result<AuditKeys> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict {}", dir.display()))?;
    let path = dir.join("signing.key");
    match fs::read_to_string(&path) {
        Ok(text) => {
            AuditKeys::parse(region, &text).with_context(|| format!("read {}", path.display()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let keys = AuditKeys::generate(region.clone());
            write_private(&path, keys.to_text().expose().as_bytes())?;
            tracing::info!(region = %region, key_id = keys.current().key_id(), "created the audit signing key");
            Ok(keys)
        }
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        let token = text.trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    let token = format!("rop_{}", hex::encode(rand::random::<[u8; 32]>()));
    write_private(path, token.as_bytes())?;
    Ok(token)
}

/// Creates or replaces `path` with owner-only permissions, atomically.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

fn write_endpoints(path: &Path, operator_token: &str, regions: &[DevRegion]) -> anyhow::Result<()> {
    let mut map = serde_json::Map::new();
    for region in regions {
        map.insert(
            region.id.to_string(),
            json!({
                "api": format!("http://{}", region.node.address),
                "operations": format!("http://{}", operations_address(&region.node)),
                "primary": region.databases.primary_url(APP_DATABASE),
                "replicas": [region.databases.replica_url(APP_DATABASE)],
                "object_store": format!("file://{}", region.object_store.display()),
                "kms": format!("file://{}", region.kms_key.display()),
                "audit_key_id": region.audit_key.key_id,
                "audit_public_key": region.audit_key.public_key,
            }),
        );
    }
    let document = json!({ "operator_token": operator_token, "regions": map });
    let text = serde_json::to_string_pretty(&document)? + "\n";
    // It holds the operator token and database passwords: owner-only.
    write_private(path, text.as_bytes())
}

/// The node's operations listener (dev always binds one).
fn operations_address(node: &RunningNode) -> String {
    node.operations_address
        .map_or_else(|| "none".to_owned(), |address| address.to_string())
}

/// Stops every node first (no request touches a database being stopped), then closes
/// the directory's connections, which reach the first region's database from every
/// region, then stops every cluster: no connection is cut by its server's shutdown.
async fn stop_all(regions: Vec<DevRegion>, directory: &LateDirectory) {
    let (nodes, clusters): (Vec<_>, Vec<_>) = regions
        .into_iter()
        .map(|region| {
            (
                (region.id.clone(), region.node),
                (region.id, region.databases),
            )
        })
        .unzip();
    futures::future::join_all(nodes.into_iter().map(|(id, node)| async move {
        if let Err(err) = node.stop().await {
            tracing::error!(region = %id, "failed to stop node: {err:#}");
        }
    }))
    .await;
    directory.close();
    futures::future::join_all(clusters.into_iter().map(|(id, databases)| async move {
        if let Err(err) = databases.stop().await {
            tracing::error!(region = %id, "failed to stop PostgreSQL: {err:#}");
        }
    }))
    .await;
}
