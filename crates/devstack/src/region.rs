//! A local region's databases: one primary and one streaming replica, created on first
//! start and reused afterwards.
//!
//! Durable layout (`residency dev`), under the region's directory:
//! `postgres/password` (superuser password, 0600), `postgres/node_password` (the node
//! login role's, 0600), `postgres/{primary,replica}/` each with
//! `data/`, `postgres.log`, `pgpass` and `port`. Ephemeral regions (tests) put each cluster
//! in its own temporary directory, removed by the cluster's guardian when it stops.

use std::fmt;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{self, ClusterRole, Launch, PgCluster};
use crate::{DevstackError, PgBinaries, RunAs, ports};

/// The superuser every local cluster is created with.
pub const SUPERUSER: &str = "residency";
/// The login role a node's pools connect as (created by the migrations too, and
/// `store::NODE_ROLE` there): it owns nothing and is no superuser, so row-level security
/// holds for it. Each local region gives it a random password of its own.
pub const NODE_ROLE: &str = "residency_node";
/// The physical replication slot that keeps WAL for the replica.
const REPLICA_SLOT: &str = "replica_1";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the clusters must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// Under `root`, fsync on, reused by the next start (`residency dev`).
    Durable { root: PathBuf },
    /// In temporary directories, fsync off, removed when stopped (tests).
    Ephemeral,
}

#[derive(Debug, Clone)]
pub struct LocalRegionOptions {
    /// A name for logs and errors, e.g. `eu-central-1`.
    pub name: String,
    pub durability: Durability,
    /// Serve TLS on the primary with this certificate (tests of TLS to the database);
    /// plain TCP is still accepted, as on a server without `hostssl`-only rules.
    pub server_tls: Option<ServerTls>,
}

impl LocalRegionOptions {
    /// A throwaway region named `name`: its clusters are deleted when it stops, no TLS.
    pub fn ephemeral(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            durability: Durability::Ephemeral,
            server_tls: None,
        }
    }
}

/// A server certificate and its private key, PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls(<certificate and key>)")
    }
}

/// The superuser password of a local region. Debug never shows it.
#[derive(Clone)]
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A running primary and streaming replica.
#[derive(Debug)]
pub struct LocalRegion {
    name: String,
    password: Password,
    /// The password of [`NODE_ROLE`].
    node_password: Password,
    primary: PgCluster,
    replica: PgCluster,
}

impl LocalRegion {
    /// Creates the clusters if they do not exist yet, starts both, and returns once the
    /// primary accepts connections and the replica is streaming in recovery.
    pub async fn start(
        binaries: &PgBinaries,
        options: LocalRegionOptions,
    ) -> Result<Self, DevstackError> {
        let run_as = RunAs::detect()?;
        let name = options.name;
        let (primary_dir, replica_dir, password, node_password, ephemeral) =
            match &options.durability {
                Durability::Durable { root } => {
                    let pg_root = root.join("postgres");
                    create_dir(&pg_root)?;
                    run_as.own(&pg_root)?;
                    run_as.check_writable(&pg_root)?;
                    let password = load_or_create_password(&pg_root.join("password"), &run_as)?;
                    let node_password =
                        load_or_create_password(&pg_root.join("node_password"), &run_as)?;
                    (
                        pg_root.join("primary"),
                        pg_root.join("replica"),
                        password,
                        node_password,
                        false,
                    )
                }
                Durability::Ephemeral => {
                    let primary = ephemeral_dir(&name, "primary")?;
                    let replica = ephemeral_dir(&name, "replica")?;
                    (
                        primary,
                        replica,
                        Password(random_hex(16)),
                        Password(random_hex(16)),
                        true,
                    )
                }
            };
        for dir in [&primary_dir, &replica_dir] {
            create_dir(dir)?;
            set_mode(dir, 0o700)?;
            run_as.own(dir)?;
            write_private(&dir.join("pgpass"), &pgpass_line(&password), &run_as)?;
        }

        if !is_initialized(&primary_dir) {
            init_primary(binaries, &run_as, &primary_dir, &password, ephemeral).await?;
        }
        let primary_port = choose_port(&primary_dir, &run_as)?;
        let mut primary_args = Vec::new();
        if let Some(tls) = &options.server_tls {
            let (certificate, key) = (
                primary_dir.join("server.crt"),
                primary_dir.join("server.key"),
            );
            write_private(&certificate, &tls.certificate_pem, &run_as)?;
            write_private(&key, &tls.private_key_pem, &run_as)?;
            primary_args.extend([
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", certificate.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ]);
        }
        let label = format!("{name} primary");
        let mut primary = PgCluster::launch(Launch {
            postgres: binaries.bin("postgres"),
            run_as: &run_as,
            label: label.clone(),
            role: ClusterRole::Primary,
            cluster_dir: primary_dir.clone(),
            port: primary_port,
            extra_args: primary_args,
            remove_on_exit: ephemeral,
        })?;
        wait_ready(&mut primary, &password).await?;
        create_node_role(primary.port(), &password, &node_password).await?;

        if !is_initialized(&replica_dir) {
            clone_replica(binaries, &run_as, &primary, &replica_dir, &password).await?;
        }
        let replica_port = choose_port(&replica_dir, &run_as)?;
        let conninfo = format!(
            "host=127.0.0.1 port={primary_port} user={SUPERUSER} passfile={} application_name={REPLICA_SLOT}",
            conninfo_quote(&replica_dir.join("pgpass").to_string_lossy()),
        );
        let mut replica = PgCluster::launch(Launch {
            postgres: binaries.bin("postgres"),
            run_as: &run_as,
            label: format!("{name} replica"),
            role: ClusterRole::Replica,
            cluster_dir: replica_dir,
            port: replica_port,
            // The primary's port may change between starts, so the connection settings
            // are given on every start rather than trusted from postgresql.auto.conf.
            extra_args: vec![
                "-c".into(),
                format!("primary_conninfo={conninfo}"),
                "-c".into(),
                format!("primary_slot_name={REPLICA_SLOT}"),
            ],
            remove_on_exit: ephemeral,
        })?;
        wait_ready(&mut replica, &password).await?;
        Ok(Self {
            name,
            password,
            node_password,
            primary,
            replica,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn primary(&self) -> &PgCluster {
        &self.primary
    }

    pub fn replica(&self) -> &PgCluster {
        &self.replica
    }

    /// `postgres://` URL of `database` on the primary, with credentials.
    pub fn primary_url(&self, database: &str) -> String {
        self.url(self.primary.port(), database)
    }

    /// `postgres://` URL of `database` on the replica, with credentials.
    pub fn replica_url(&self, database: &str) -> String {
        self.url(self.replica.port(), database)
    }

    pub fn primary_config(&self, database: &str) -> tokio_postgres::Config {
        self.config(self.primary.port(), database)
    }

    pub fn replica_config(&self, database: &str) -> tokio_postgres::Config {
        self.config(self.replica.port(), database)
    }

    /// `database` on the primary as [`NODE_ROLE`]: what a node's pools use.
    pub fn node_primary_config(&self, database: &str) -> tokio_postgres::Config {
        self.node_config(self.primary.port(), database)
    }

    /// `database` on the replica as [`NODE_ROLE`].
    pub fn node_replica_config(&self, database: &str) -> tokio_postgres::Config {
        self.node_config(self.replica.port(), database)
    }

    /// `postgres://` URL of `database` on the primary as [`NODE_ROLE`], with credentials.
    pub fn node_primary_url(&self, database: &str) -> String {
        format!(
            "postgres://{NODE_ROLE}:{}@127.0.0.1:{}/{database}",
            self.node_password.0,
            self.primary.port()
        )
    }

    /// `postgres://` URL of `database` on the replica as [`NODE_ROLE`], with credentials.
    pub fn node_replica_url(&self, database: &str) -> String {
        format!(
            "postgres://{NODE_ROLE}:{}@127.0.0.1:{}/{database}",
            self.node_password.0,
            self.replica.port()
        )
    }

    fn node_config(&self, port: u16, database: &str) -> tokio_postgres::Config {
        let mut config = self.config(port, database);
        config
            .user(NODE_ROLE)
            .password(self.node_password.0.as_bytes());
        config
    }

    fn url(&self, port: u16, database: &str) -> String {
        // The password is hex, the user and database plain words: nothing to escape.
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{port}/{database}",
            self.password.0
        )
    }

    fn config(&self, port: u16, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user(SUPERUSER)
            .password(self.password.0.as_bytes())
            .dbname(database)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// Stops the replica, then the primary; returns when no process of either is left.
    pub async fn stop(self) -> Result<(), DevstackError> {
        let Self {
            replica, primary, ..
        } = self;
        replica.stop().await?;
        primary.stop().await
    }
}

fn is_initialized(cluster_dir: &Path) -> bool {
    cluster::data_dir(cluster_dir).join("PG_VERSION").is_file()
}

async fn init_primary(
    binaries: &PgBinaries,
    run_as: &RunAs,
    cluster_dir: &Path,
    password: &Password,
    ephemeral: bool,
) -> Result<(), DevstackError> {
    let data = cluster::data_dir(cluster_dir);
    remove_leftover(&data)?;
    let pwfile = cluster_dir.join("initdb-password");
    write_private(&pwfile, &password.0, run_as)?;
    let mut initdb = Command::new(binaries.bin("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .arg("-U")
        .arg(SUPERUSER)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]);
    if ephemeral {
        initdb.arg("--no-sync");
    }
    let result = run(initdb, run_as, "initdb").await;
    let _ = fs::remove_file(&pwfile);
    result?;

    let mut settings = String::from(
        "\n# Added by residency devstack.\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = ''\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         max_connections = 200\n\
         shared_buffers = 64MB\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] '\n",
    );
    if ephemeral {
        // Test clusters trade crash safety for speed; they never outlive the test run.
        settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
    }
    let conf = data.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).map_err(DevstackError::io("read", &conf))?;
    text.push_str(&settings);
    fs::write(&conf, text).map_err(DevstackError::io("write", &conf))
}

/// Creates [`NODE_ROLE`] unless it exists and gives it this region's password (the
/// migrations grant it what it may do). The password is hex: nothing to quote.
async fn create_node_role(
    port: u16,
    password: &Password,
    node_password: &Password,
) -> Result<(), DevstackError> {
    let (client, connection) = connect(port, password, "postgres").await?;
    let connection = tokio::spawn(connection);
    let result = client
        .batch_execute(&format!(
            "do $$
            begin
                if not exists (select from pg_roles where rolname = '{NODE_ROLE}') then
                    create role {NODE_ROLE} login noinherit;
                end if;
            end
            $$;
            alter role {NODE_ROLE} with login noinherit nosuperuser nobypassrls password '{}'",
            node_password.0
        ))
        .await
        .map_err(|source| DevstackError::Postgres {
            what: format!("create the {NODE_ROLE} role"),
            source,
        });
    drop(client);
    let _ = connection.await;
    result
}

async fn clone_replica(
    binaries: &PgBinaries,
    run_as: &RunAs,
    primary: &PgCluster,
    replica_dir: &Path,
    password: &Password,
) -> Result<(), DevstackError> {
    let data = cluster::data_dir(replica_dir);
    remove_leftover(&data)?;
    // A slot left by an earlier, interrupted clone would make `-C` fail.
    let (client, connection) = connect(primary.port(), password, "postgres").await?;
    let connection = tokio::spawn(connection);
    client
        .execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1",
            &[&REPLICA_SLOT],
        )
        .await
        .map_err(|source| DevstackError::Postgres { what: "drop stale replication slot".into(), source })?;
    drop(client);
    let _ = connection.await;

    let mut basebackup = Command::new(binaries.bin("pg_basebackup"));
    basebackup
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port().to_string(),
            "-U",
            SUPERUSER,
            "-D",
        ])
        .arg(&data)
        .args([
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-C",
            "-S",
            REPLICA_SLOT,
            "--no-password",
        ])
        .env("PGPASSFILE", replica_dir.join("pgpass"));
    run(basebackup, run_as, "pg_basebackup").await
}

async fn wait_ready(cluster: &mut PgCluster, password: &Password) -> Result<(), DevstackError> {
    let started = Instant::now();
    let mut last_error = String::from("not tried yet");
    while started.elapsed() < READY_TIMEOUT {
        if let Some(status) = cluster.exited() {
            return Err(DevstackError::ExitedEarly {
                what: format!("PostgreSQL {}", cluster.label()),
                status,
                log: cluster.log_tail(),
            });
        }
        match probe(cluster.port(), password, cluster.role()).await {
            Ok(true) => return Ok(()),
            Ok(false) => last_error = "server is up but not in the expected role".into(),
            Err(err) => last_error = err,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevstackError::NotReady {
        what: format!("PostgreSQL {}", cluster.label()),
        seconds: READY_TIMEOUT.as_secs(),
        last_error,
        log: cluster.log_tail(),
    })
}

/// Whether the server answers and is in the role we expect (a replica in recovery).
async fn probe(port: u16, password: &Password, role: ClusterRole) -> Result<bool, String> {
    let (client, connection) = connect(port, password, "postgres")
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .map_err(|e| e.to_string())?;
    let in_recovery: bool = row.get(0);
    drop(client);
    let _ = connection.await;
    Ok(in_recovery == (role == ClusterRole::Replica))
}

async fn connect(
    port: u16,
    password: &Password,
    database: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    DevstackError,
> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(password.0.as_bytes())
        .dbname(database)
        .connect_timeout(Duration::from_secs(2));
    config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| DevstackError::Postgres {
            what: format!("connect to 127.0.0.1:{port}"),
            source,
        })
}

/// The port saved for this cluster if it is still free, else a new free one (saved).
fn choose_port(cluster_dir: &Path, run_as: &RunAs) -> Result<u16, DevstackError> {
    let path = cluster_dir.join("port");
    if let Ok(text) = fs::read_to_string(&path)
        && let Ok(port) = text.trim().parse::<u16>()
        && port != 0
        && ports::is_free(port)
    {
        return Ok(port);
    }
    let port = ports::free_loopback_port()
        .map_err(DevstackError::io("find a free port for", cluster_dir))?;
    fs::write(&path, format!("{port}\n")).map_err(DevstackError::io("write", &path))?;
    run_as.own(&path)?;
    Ok(port)
}

fn load_or_create_password(path: &Path, run_as: &RunAs) -> Result<Password, DevstackError> {
    match fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Password(text.trim().to_owned())),
        Ok(_) => Err(DevstackError::CorruptState {
            path: path.to_path_buf(),
            reason: "empty password file".into(),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let password = Password(random_hex(16));
            write_private(path, &password.0, run_as)?;
            Ok(password)
        }
        Err(source) => Err(DevstackError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn pgpass_line(password: &Password) -> String {
    format!("127.0.0.1:*:*:{SUPERUSER}:{}\n", password.0)
}

/// libpq conninfo value quoting: single quotes, with `\` and `'` escaped.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

fn ephemeral_dir(name: &str, role: &str) -> Result<PathBuf, DevstackError> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("residency-{name}-{role}-"))
        .tempdir()
        .map_err(DevstackError::io(
            "create temporary directory in",
            std::env::temp_dir(),
        ))?;
    Ok(dir.keep())
}

fn create_dir(dir: &Path) -> Result<(), DevstackError> {
    fs::create_dir_all(dir).map_err(DevstackError::io("create directory", dir))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DevstackError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(DevstackError::io("set permissions of", path))
}

fn remove_leftover(data: &Path) -> Result<(), DevstackError> {
    if data.exists() {
        tracing::warn!(dir = %data.display(), "removing a half-initialised cluster directory");
        fs::remove_dir_all(data).map_err(DevstackError::io("remove", data))?;
    }
    Ok(())
}

/// Writes a file only its owner can read, owned by the PostgreSQL user.
fn write_private(path: &Path, contents: &str, run_as: &RunAs) -> Result<(), DevstackError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(DevstackError::io("create", path))?;
    file.write_all(contents.as_bytes())
        .map_err(DevstackError::io("write", path))?;
    set_mode(path, 0o600)?;
    run_as.own(path)
}

/// Runs a PostgreSQL tool to completion without blocking the async runtime.
async fn run(mut command: Command, run_as: &RunAs, what: &str) -> Result<(), DevstackError> {
    run_as.apply(&mut command);
    command
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null());
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .map_err(DevstackError::io("run", what))?;
    if output.status.success() {
        return Ok(());
    }
    Err(DevstackError::CommandFailed {
        command: what.to_owned(),
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_quote("/tmp/a b/pgpass"), "'/tmp/a b/pgpass'");
        assert_eq!(conninfo_quote(r"it's\"), r"'it\'s\\'");
    }

    #[test]
    fn password_debug_is_redacted() {
        let password = Password("hunter2".into());
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
