//! A region's connection pools: one primary, any number of replicas. Writes need a
//! [`Primary`], which only [`PrimaryPool::get`] hands out; there is no flag to flip.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use model::RegionId;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::health::{DatabaseHealth, EndpointProbe};
use crate::routing::Routing;
use crate::tls::PgTls;
use crate::tokens::ConsistencyKeys;
use crate::{Migration, MigrationReport, StoreError, migrate};

/// Where one PostgreSQL server is, how to log in, and how the connection is protected.
/// Debug hides the password.
#[derive(Clone)]
pub struct PgEndpoint {
    /// A short name for health reports and metrics, e.g. `primary`, `replica-1`.
    pub name: String,
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
}

impl PgEndpoint {
    /// An endpoint reached over plain TCP (loopback servers); see [`PgEndpoint::with_tls`].
    pub fn new(name: impl Into<String>, config: tokio_postgres::Config) -> Self {
        Self {
            name: name.into(),
            config,
            tls: PgTls::Disabled,
        }
    }

    pub fn with_tls(mut self, tls: PgTls) -> Self {
        self.tls = tls;
        self
    }

    /// `host:port`, for reports; never includes credentials.
    pub fn address(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }
}

impl fmt::Debug for PgEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEndpoint")
            .field("name", &self.name)
            .field("address", &self.address())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The databases of one region.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// The primary as the node's login role (`residency_node`, [`crate::NODE_ROLE`]),
    /// which owns nothing: every pool and probe connects as it.
    pub primary: PgEndpoint,
    /// The primary as the owner of the schema, used only by [`RegionDatabase::prepare`]
    /// (migrations and the region stamp), on one connection of its own that is closed
    /// when it is done. `None`: `prepare` migrates over the pool, which works only where
    /// the pool's role owns the schema (a database that does not separate the roles).
    pub owner: Option<PgEndpoint>,
    pub replicas: Vec<PgEndpoint>,
    /// Connections per pool.
    pub pool_size: usize,
    /// How long a caller waits for a pooled connection, and for a new one to open.
    pub pool_timeout: Duration,
    /// A replica serves bounded-staleness reads only while its last observed lag (see
    /// [`RegionDatabase::observe`]) is within this, and only while that observation is
    /// itself no older than this: the health poller must observe more often.
    pub max_replica_lag: Duration,
    /// Optionally also bound the lag in WAL bytes (checked while the primary is up).
    pub max_replica_lag_bytes: Option<u64>,
    /// How long a read with a consistency token waits for a replica to replay up to the
    /// token before it goes to the primary.
    pub token_wait: Duration,
    /// How many reads may wait for a replica to replay up to their token at once (each
    /// holds a replica connection while it waits); a read beyond them goes to the primary
    /// at once. Keep it well below `pool_size`, so that waiting never starves the
    /// replicas' other reads.
    pub max_token_waits: usize,
    /// The keys consistency tokens are tagged and checked with: the same on every node
    /// of the deployment, or a token minted by one node is refused by another.
    /// [`DatabaseSettings::new`] generates a key of this process alone; `node` derives
    /// the deployment's.
    pub consistency_keys: ConsistencyKeys,
    /// How long one statement of this node may run, and how long it may wait for a row
    /// lock, and how long a transaction may sit idle, before the server cancels it (set
    /// on every pooled session). A request then answers 503 with `Retry-After` instead of
    /// holding a pooled connection; migrations lift the statement bound for themselves.
    pub session_timeouts: SessionTimeouts,
}

/// The server-side bounds of a pooled session (PostgreSQL's `statement_timeout`,
/// `lock_timeout`, `idle_in_transaction_session_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub statement: Duration,
    pub lock: Duration,
    pub idle_in_transaction: Duration,
}

impl SessionTimeouts {
    /// The application's: a request's statements take milliseconds, a job's batch
    /// seconds; a lock held longer than `lock` by another transaction is a stuck writer.
    pub const APPLICATION: Self = Self {
        statement: Duration::from_secs(30),
        lock: Duration::from_secs(5),
        idle_in_transaction: Duration::from_secs(30),
    };

    /// The analytics export's: it reads whole collections on one snapshot and anonymizes
    /// between reads, on a replica (no locks to wait for).
    pub const EXPORT: Self = Self {
        statement: Duration::from_secs(600),
        lock: Duration::from_secs(5),
        idle_in_transaction: Duration::from_secs(1800),
    };

    /// The session options (`-c name=value ...`) that set these bounds.
    pub fn options(&self) -> String {
        format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement.as_millis().max(1),
            self.lock.as_millis().max(1),
            self.idle_in_transaction.as_millis().max(1),
        )
    }
}

/// `config` with `timeouts` added to its session options.
pub(crate) fn with_timeouts(
    mut config: tokio_postgres::Config,
    timeouts: &SessionTimeouts,
) -> tokio_postgres::Config {
    let options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => {
            format!("{existing} {}", timeouts.options())
        }
        _ => timeouts.options(),
    };
    config.options(&options);
    config
}

impl DatabaseSettings {
    /// Settings whose [`DatabaseSettings::prepare`] connects as `owner`.
    pub fn with_owner(mut self, owner: PgEndpoint) -> Self {
        self.owner = Some(owner);
        self
    }

    pub fn new(primary: PgEndpoint, replicas: Vec<PgEndpoint>) -> Self {
        Self {
            primary,
            owner: None,
            replicas,
            pool_size: 16,
            pool_timeout: Duration::from_secs(5),
            max_replica_lag: Duration::from_secs(5),
            max_replica_lag_bytes: None,
            token_wait: Duration::from_millis(250),
            max_token_waits: 4,
            consistency_keys: ConsistencyKeys::generate(),
            session_timeouts: SessionTimeouts::APPLICATION,
        }
    }
}

/// Connection-pool occupancy, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub name: String,
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
}

pub(crate) fn build_pool(
    endpoint: &PgEndpoint,
    settings: &DatabaseSettings,
) -> Result<Pool, StoreError> {
    let mut config = with_timeouts(
        endpoint.tls.configure(&endpoint.config),
        &settings.session_timeouts,
    );
    config.connect_timeout(settings.pool_timeout);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &endpoint.tls {
        PgTls::Disabled => Manager::from_config(config, NoTls, manager_config),
        PgTls::VerifyFull(rustls) => Manager::from_config(
            config,
            MakeRustlsConnect::new((**rustls).clone()),
            manager_config,
        ),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(settings.pool_timeout))
        .create_timeout(Some(settings.pool_timeout))
        .recycle_timeout(Some(settings.pool_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| {
            StoreError::unavailable(crate::error::Failed {
                doing: format!("build pool {}", endpoint.name),
                cause: err.into(),
            })
        })
}

fn stats(name: &str, pool: &Pool) -> PoolStats {
    let status = pool.status();
    PoolStats {
        name: name.to_owned(),
        max: status.max_size,
        open: status.size,
        idle: status.available,
        waiting: status.waiting,
    }
}

/// The pool of the region's primary: the only source of [`Primary`] connections.
#[derive(Debug, Clone)]
pub struct PrimaryPool {
    endpoint: PgEndpoint,
    pool: Pool,
}

/// A connection to the region's primary: the only kind that may write.
#[derive(Debug)]
pub struct Primary(pub(crate) Object);

impl PrimaryPool {
    pub async fn get(&self) -> Result<Primary, StoreError> {
        Ok(Primary(self.pool.get().await?))
    }

    pub(crate) fn endpoint(&self) -> &PgEndpoint {
        &self.endpoint
    }

    pub fn stats(&self) -> PoolStats {
        stats(&self.endpoint.name, &self.pool)
    }

    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    /// `host:port` of the primary, for reports and evidence; never includes credentials.
    pub fn address(&self) -> String {
        self.endpoint.address()
    }
}

impl Primary {
    /// The underlying client, for reads on the primary.
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.0
    }

    /// Closes this connection instead of returning it to the pool: for callers that saw
    /// an error which may have broken it (the pool notices a dead connection only once
    /// its socket has closed, which can be a moment after the error).
    pub fn discard(self) {
        drop(Object::take(self.0));
    }

    /// Starts a transaction on the primary: the only way to write.
    pub async fn begin(&mut self) -> Result<PrimaryTx<'_>, StoreError> {
        Ok(PrimaryTx(self.0.transaction().await?))
    }
}

/// A transaction on the region's primary. Writes take one by type; dropping it without
/// [`PrimaryTx::commit`] rolls back.
#[derive(Debug)]
pub struct PrimaryTx<'a>(pub(crate) deadpool_postgres::Transaction<'a>);

impl PrimaryTx<'_> {
    pub fn client(&self) -> &tokio_postgres::Transaction<'_> {
        &self.0
    }

    /// A prepared statement from the connection's cache: hot statements skip the extra
    /// round trip that preparing costs.
    pub async fn prepare_cached(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        Ok(self.0.prepare_cached(sql).await?)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}

impl Deref for Primary {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.0
    }
}

impl DerefMut for Primary {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.0
    }
}

/// The pool of one streaming replica.
#[derive(Debug, Clone)]
pub struct ReplicaPool {
    endpoint: PgEndpoint,
    pool: Pool,
    /// Its position among the region's replicas (and in the routing state).
    index: usize,
}

/// A read-only connection to one of the region's replicas.
#[derive(Debug)]
pub struct Replica {
    pub(crate) object: Object,
    /// Which of the region's replicas it is connected to.
    pub(crate) index: usize,
}

impl ReplicaPool {
    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    pub async fn get(&self) -> Result<Replica, StoreError> {
        Ok(self.checkout().await?)
    }

    /// A connection, or the pool's own error: routing tells a busy pool (a wait timeout)
    /// from a server that cannot be reached.
    pub(crate) async fn checkout(&self) -> Result<Replica, deadpool_postgres::PoolError> {
        Ok(Replica {
            object: self.pool.get().await?,
            index: self.index,
        })
    }

    pub fn stats(&self) -> PoolStats {
        stats(&self.endpoint.name, &self.pool)
    }

    /// `host:port` of the replica, for reports and evidence; never includes credentials.
    pub fn address(&self) -> String {
        self.endpoint.address()
    }
}

impl Replica {
    /// The underlying client: reads only (a write fails with `StoreError::ReadOnly`).
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.object
    }

    /// Closes this connection instead of returning it to the pool (see
    /// [`Primary::discard`]).
    pub fn discard(self) {
        drop(Object::take(self.object));
    }
}

impl Deref for Replica {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.object
    }
}

/// The pools and health probes of exactly one region's databases.
#[derive(Debug, Clone)]
pub struct RegionDatabase {
    region: RegionId,
    pub(crate) primary: PrimaryPool,
    pub(crate) replicas: Vec<ReplicaPool>,
    probes: std::sync::Arc<[EndpointProbe]>,
    /// The schema owner's login, for [`RegionDatabase::prepare`] only.
    owner: Option<PgEndpoint>,
    /// Which replicas serve reads, shared by every clone.
    pub(crate) routing: std::sync::Arc<Routing>,
    /// What consistency tokens are tagged and checked with.
    pub(crate) consistency_keys: ConsistencyKeys,
}

impl RegionDatabase {
    /// Builds the pools; connections open lazily, so this succeeds with servers down.
    pub fn new(region: RegionId, settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let primary = PrimaryPool {
            pool: build_pool(&settings.primary, settings)?,
            endpoint: settings.primary.clone(),
        };
        let replicas = settings
            .replicas
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                Ok(ReplicaPool {
                    pool: build_pool(endpoint, settings)?,
                    endpoint: endpoint.clone(),
                    index,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let probes = std::iter::once(&settings.primary)
            .chain(&settings.replicas)
            .map(|endpoint| EndpointProbe::new(endpoint.clone()))
            .collect();
        let routing = std::sync::Arc::new(Routing::new(replicas.len(), settings));
        Ok(Self {
            region,
            primary,
            replicas,
            probes,
            owner: settings.owner.clone(),
            routing,
            consistency_keys: settings.consistency_keys.clone(),
        })
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// This region's primary and replicas as the schema owner (the settings' `owner`), for
    /// tests that look at or tamper with rows behind the application's back: pools of its
    /// own.
    ///
    /// # Panics
    /// When the settings named no owner.
    #[cfg(feature = "testing")]
    pub fn as_owner(&self) -> RegionDatabase {
        let owner = self
            .owner
            .clone()
            .expect("the test settings name the schema owner");
        // The replicas as the owner too (same user and password, each replica's address).
        let replicas = self
            .replicas
            .iter()
            .map(|replica| {
                let mut config = replica.endpoint.config.clone();
                if let Some(user) = owner.config.get_user() {
                    config.user(user);
                }
                if let Some(password) = owner.config.get_password() {
                    config.password(password);
                }
                PgEndpoint {
                    config,
                    ..replica.endpoint.clone()
                }
            })
            .collect();
        let mut settings = DatabaseSettings::new(owner, replicas);
        settings.consistency_keys = self.consistency_keys.clone();
        RegionDatabase::new(self.region.clone(), &settings).expect("pools build without connecting")
    }

    pub fn primary(&self) -> &PrimaryPool {
        &self.primary
    }

    pub fn replicas(&self) -> &[ReplicaPool] {
        &self.replicas
    }

    /// Occupancy of every pool, primary first.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        std::iter::once(self.primary.stats())
            .chain(self.replicas.iter().map(ReplicaPool::stats))
            .collect()
    }

    /// Makes the primary ready for this node: refuses a database stamped for another
    /// region, applies `migrations`, then stamps the database with this region. Runs as
    /// the schema owner when the settings name one (the node's own role may not create
    /// or alter anything). Without one, over the pool: a database already migrated and
    /// stamped (by `residency migrate`, as the owner) is only verified, which the node's
    /// own role may do; anything else is migrated, which only an owner may.
    pub async fn prepare(&self, migrations: &[Migration]) -> Result<MigrationReport, StoreError> {
        let Some(owner) = &self.owner else {
            let mut primary = self.primary.get().await?;
            let client: &mut tokio_postgres::Client = &mut primary;
            if read_stamp(client).await?.is_some()
                && crate::migrate::all_applied(client, migrations).await?
            {
                self.check_stamp(client).await?;
                return Ok(MigrationReport {
                    applied: Vec::new(),
                    already_applied: migrations.iter().map(|m| m.version).collect(),
                });
            }
            return self.prepare_with(client, migrations).await;
        };
        let mut config = owner.config.clone();
        config.connect_timeout(OWNER_CONNECT_TIMEOUT);
        let (mut client, connection) =
            crate::tls::connect(&config, &owner.tls)
                .await
                .map_err(|err| {
                    StoreError::unavailable(crate::error::Failed {
                        doing: format!("connect to {} as the schema owner", owner.address()),
                        cause: err.into(),
                    })
                })?;
        let result = self.prepare_with(&mut client, migrations).await;
        drop(client);
        let _ = connection.await;
        result
    }

    async fn prepare_with(
        &self,
        client: &mut tokio_postgres::Client,
        migrations: &[Migration],
    ) -> Result<MigrationReport, StoreError> {
        self.check_stamp(client).await?;
        let report = migrate(client, migrations).await?;
        client
            .execute(
                "insert into residency_region (region_id) values ($1) on conflict (singleton) do nothing",
                &[&self.region.as_str()],
            )
            .await?;
        self.check_stamp(client).await?;
        Ok(report)
    }

    async fn check_stamp(&self, client: &tokio_postgres::Client) -> Result<(), StoreError> {
        let stamped = read_stamp(client).await?;
        match stamped {
            Some(stamped) if stamped != self.region.as_str() => Err(StoreError::WrongRegion {
                stamped,
                configured: self.region.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Probes the primary and every replica (each bounded by `timeout`).
    pub async fn health(&self, timeout: Duration) -> DatabaseHealth {
        crate::health::probe_all(&self.region, &self.probes, timeout).await
    }
}

/// How long `prepare` waits for the owner's connection to open.
const OWNER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The region stamp of the database behind `client`, if it has one yet.
pub(crate) async fn read_stamp(
    client: &tokio_postgres::Client,
) -> Result<Option<String>, tokio_postgres::Error> {
    // A replica that has not replayed the grant to the node's role yet (migration 0015,
    // just applied by the owner) reads as one not stamped yet, like one that has not
    // replayed the table: the next probe sees the stamp.
    let exists: bool = client
        .query_one(
            "select case when to_regclass('public.residency_region') is null then false
                         else has_table_privilege('public.residency_region', 'select') end",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_opt("select region_id from residency_region", &[])
        .await?
        .map(|row| row.get(0)))
}
