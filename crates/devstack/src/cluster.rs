//! One running PostgreSQL cluster (a primary or a streaming replica) under its guardian
//! (see `guardian.rs`): when our lifeline closes, the guardian asks PostgreSQL for a fast
//! shutdown (SIGINT), waits for it, and for ephemeral clusters removes the cluster
//! directory. Nothing is left running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::guardian::{GuardedCommand, Guardian, tail_of_file};
use crate::{DevstackError, RunAs};

/// How long a fast shutdown may take before we escalate to an immediate one.
const FAST_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    Primary,
    Replica,
}

impl ClusterRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// What is needed to launch one postmaster under a guardian.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub postgres: PathBuf,
    pub run_as: &'a RunAs,
    pub label: String,
    pub role: ClusterRole,
    pub cluster_dir: PathBuf,
    pub port: u16,
    pub extra_args: Vec<String>,
    /// Remove `cluster_dir` once PostgreSQL has stopped (ephemeral test clusters).
    pub remove_on_exit: bool,
}

/// A running PostgreSQL cluster on `127.0.0.1:port`. Stop it with [`PgCluster::stop`];
/// dropping it also stops it (blocking briefly).
#[derive(Debug)]
pub struct PgCluster {
    label: String,
    role: ClusterRole,
    cluster_dir: PathBuf,
    port: u16,
    guardian: Guardian,
}

impl PgCluster {
    pub(crate) fn launch(launch: Launch<'_>) -> Result<Self, DevstackError> {
        let mut command = GuardedCommand::new("residency-pg-guardian", &launch.postgres);
        command
            .arg("-D")
            .arg(data_dir(&launch.cluster_dir))
            .arg("-c")
            .arg(format!("port={}", launch.port))
            .args(&launch.extra_args)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .log_to(&log_path(&launch.cluster_dir))?
            .run_as(launch.run_as);
        if launch.remove_on_exit {
            command.remove_on_exit(&launch.cluster_dir);
        }
        let guardian = command.spawn(&launch.cluster_dir)?;
        Ok(Self {
            label: launch.label,
            role: launch.role,
            cluster_dir: launch.cluster_dir,
            port: launch.port,
            guardian,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn role(&self) -> ClusterRole {
        self.role
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        data_dir(&self.cluster_dir)
    }

    pub fn log_path(&self) -> PathBuf {
        log_path(&self.cluster_dir)
    }

    /// The postmaster's pid, from `postmaster.pid`, while it runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The guardian's exit status if it (and so PostgreSQL) has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        self.guardian.exited()
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        tail_of_file(&self.log_path(), 4096)
    }

    /// Fast shutdown; waits until every PostgreSQL process of the cluster has exited.
    pub async fn stop(mut self) -> Result<(), DevstackError> {
        self.guardian.close_lifeline();
        let deadline = Instant::now() + FAST_SHUTDOWN_GRACE;
        loop {
            if self.exited().is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.escalate();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A fast shutdown that hangs (e.g. a stuck client) becomes an immediate one.
    fn escalate(&mut self) {
        tracing::warn!(cluster = %self.label, "fast shutdown timed out; sending SIGQUIT");
        if let Some(pid) = self.postmaster_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.guardian.close_lifeline() {
            return; // stopped already, or stopping
        }
        let deadline = Instant::now() + FAST_SHUTDOWN_GRACE;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                self.escalate();
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

pub(crate) fn data_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("data")
}

pub(crate) fn log_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("postgres.log")
}
