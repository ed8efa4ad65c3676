//! Test harness: one ephemeral region (primary + streaming replica) and one `moto_server`
//! per test binary, each started on first use, and a fresh database per test.
//!
//! The region lives in a static that is never dropped; when the test binary exits, the
//! clusters' lifelines close and their guardians stop PostgreSQL and delete its files
//! (see `guardian.rs`); moto likewise. A missing PostgreSQL or moto installation fails the
//! test with what to install.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{LocalRegion, LocalRegionOptions, MotoServer, PgBinaries};

static SHARED: OnceLock<LocalRegion> = OnceLock::new();
static MOTO: OnceLock<MotoServer> = OnceLock::new();

/// The test binary's region, started on first call (about two seconds).
///
/// # Panics
/// When the region cannot be started: the message says why (e.g. what to install).
pub fn shared_region() -> &'static LocalRegion {
    SHARED.get_or_init(|| {
        start_apart(|| async {
            let binaries = PgBinaries::locate().unwrap_or_else(|err| panic!("{err}"));
            let options = LocalRegionOptions::ephemeral("test");
            LocalRegion::start(&binaries, options)
                .await
                .unwrap_or_else(|err| panic!("start the test region: {err}"))
        })
    })
}

/// Runs the future `start` makes to its end on a thread and a current-thread runtime of
/// its own: the caller is usually inside a test's runtime, which must not be blocked on,
/// and what is started must not depend on that runtime.
fn start_apart<T, F>(start: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime can always be built")
            .block_on(start())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The test binary's `moto_server`, started on first call (a second or two). Point the
/// AWS SDKs at [`MotoServer::endpoint_url`] with fixed test credentials.
///
/// # Panics
/// When moto cannot be started: the message says why (e.g. `pip install "moto[server]"`).
pub fn shared_moto() -> &'static MotoServer {
    MOTO.get_or_init(|| {
        start_apart(|| async {
            MotoServer::start()
                .await
                .unwrap_or_else(|err| panic!("start moto_server: {err}"))
        })
    })
}

/// A database of its own for one test, on the shared region's primary, visible on its
/// replica too.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    /// As the cluster's superuser: the owner, who migrates (and what tests use to look
    /// behind the application's back).
    pub primary: tokio_postgres::Config,
    pub replica: tokio_postgres::Config,
    /// As the node's login role ([`crate::NODE_ROLE`]): what a node's pools use.
    pub node_primary: tokio_postgres::Config,
    pub node_replica: tokio_postgres::Config,
}

impl TestDatabase {
    /// Creates a database named uniquely for this test, from `template` if given, and
    /// waits until the replica has replayed its creation.
    pub async fn create(template: Option<&str>) -> Self {
        let region = shared_region();
        let name = format!("test_{}", hex::encode(rand::random::<[u8; 8]>()));
        let admin = connect(region.primary_config("postgres")).await;
        let statement = match template {
            Some(template) => format!("create database {name} template {template}"),
            None => format!("create database {name}"),
        };
        admin
            .execute(&statement, &[])
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
        let database = Self {
            primary: region.primary_config(&name),
            replica: region.replica_config(&name),
            node_primary: region.node_primary_config(&name),
            node_replica: region.node_replica_config(&name),
            name,
        };
        database.wait_on_replica().await;
        database
    }

    async fn wait_on_replica(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.replica.connect(tokio_postgres::NoTls).await {
                Ok(_) => return,
                Err(err) if Instant::now() >= deadline => {
                    panic!(
                        "database {} never appeared on the replica: {err}",
                        self.name
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Connects with `config` and drives the connection on the current runtime.
///
/// # Panics
/// When the connection fails.
pub async fn connect(config: tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to test database: {err}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Pids of processes (other than this one) whose command line mentions `needle`, e.g. a
/// data or state directory: what tests use to prove nothing was left running.
pub fn processes_mentioning(needle: &std::path::Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (pid != std::process::id()
                && String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(&needle))
            .then_some(pid)
        })
        .collect()
}
