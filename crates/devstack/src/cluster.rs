//! One running PostgreSQL cluster (a primary or a streaming replica) and the small shell
//! guardian that owns it.
//!
//! Why a guardian: PostgreSQL does not exit when the process that started it dies, and a
//! test binary never runs destructors of its statics. So every postmaster runs under a
//! `/bin/sh` guardian whose standard input is a pipe from us (the *lifeline*). When the
//! lifeline closes — because we stop the cluster, drop it, exit, or are killed with
//! SIGKILL — the guardian asks PostgreSQL for a fast shutdown (SIGINT), waits for it, and
//! for ephemeral clusters removes the cluster directory. Nothing is left running.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{DevstackError, RunAs};

/// `$@` is the postgres command line. fd 3 keeps the lifeline for the watcher only, so that
/// PostgreSQL's own processes never hold it open.
const GUARDIAN_SCRIPT: &str = r#"
exec 3<&0 0</dev/null
"$@" 3<&- &
pg=$!
{ read -r _ignored <&3; kill -INT "$pg" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$pg"
status=$?
kill "$watcher" 2>/dev/null
if [ -n "$RESIDENCY_CLEANUP_DIR" ]; then rm -rf "$RESIDENCY_CLEANUP_DIR"; fi
exit "$status"
"#;

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
    guardian: Child,
    lifeline: Option<ChildStdin>,
}

impl PgCluster {
    pub(crate) fn launch(launch: Launch<'_>) -> Result<Self, DevstackError> {
        let log_path = log_path(&launch.cluster_dir);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(DevstackError::io("open log file", &log_path))?;
        let log_err = log
            .try_clone()
            .map_err(DevstackError::io("open log file", &log_path))?;
        let data_dir = data_dir(&launch.cluster_dir);

        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(GUARDIAN_SCRIPT)
            .arg("residency-pg-guardian")
            .arg(&launch.postgres)
            .arg("-D")
            .arg(&data_dir)
            .arg("-c")
            .arg(format!("port={}", launch.port))
            .args(&launch.extra_args)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Our own process group: a Ctrl-C in the terminal reaches only `residency dev`,
            // which then stops the clusters in order.
            .process_group(0);
        if launch.remove_on_exit {
            command.env("RESIDENCY_CLEANUP_DIR", &launch.cluster_dir);
        } else {
            command.env_remove("RESIDENCY_CLEANUP_DIR");
        }
        launch.run_as.apply(&mut command);
        let mut guardian = command.spawn().map_err(DevstackError::io(
            "start PostgreSQL guardian for",
            &launch.cluster_dir,
        ))?;
        let lifeline = guardian.stdin.take();
        Ok(Self {
            label: launch.label,
            role: launch.role,
            cluster_dir: launch.cluster_dir,
            port: launch.port,
            guardian,
            lifeline,
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
        match self.guardian.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("unknown: {err}")),
        }
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        tail_of_file(&self.log_path(), 4096)
    }

    /// Fast shutdown; waits until every PostgreSQL process of the cluster has exited.
    pub async fn stop(mut self) -> Result<(), DevstackError> {
        self.lifeline.take();
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
        if self.lifeline.take().is_none() {
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

pub(crate) fn tail_of_file(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    format!(
        "--- {} (tail) ---\n{}",
        path.display(),
        String::from_utf8_lossy(&bytes)
    )
}
