//! The small shell guardian that owns every local server we spawn (PostgreSQL, moto).
//!
//! Why a guardian: servers do not exit when the process that started them dies, and a test
//! binary never runs destructors of its statics. So every server runs under a `/bin/sh`
//! guardian whose standard input is a pipe from us (the *lifeline*). When the lifeline
//! closes — because we stop the server, drop it, exit, or are killed with SIGKILL — the
//! guardian sends the server its stop signal, waits for it, and optionally removes a
//! cleanup path (an ephemeral cluster's directory, a log file). Nothing is left running.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{DevstackError, RunAs};

/// `$@` is the server's command line. fd 3 keeps the lifeline for the watcher only, so that
/// the server's own processes never hold it open. A non-interactive shell starts background
/// jobs with SIGINT ignored, which programs that keep inherited dispositions (Python) never
/// undo: such servers are stopped with SIGTERM instead (`RESIDENCY_STOP_SIGNAL`).
const GUARDIAN_SCRIPT: &str = r#"
exec 3<&0 0</dev/null
"$@" 3<&- &
server=$!
{ read -r _ignored <&3; kill -"${RESIDENCY_STOP_SIGNAL:-INT}" "$server" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
if [ -n "$RESIDENCY_CLEANUP_DIR" ]; then rm -rf "$RESIDENCY_CLEANUP_DIR"; fi
exit "$status"
"#;

/// The signal the guardian sends when the lifeline closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// PostgreSQL's fast shutdown.
    Int,
    /// Servers that ignore an inherited SIGINT (Python).
    Term,
}

impl StopSignal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Term => "TERM",
        }
    }
}

/// A server's command line, to be run under a guardian.
#[derive(Debug)]
pub(crate) struct GuardedCommand {
    command: Command,
}

impl GuardedCommand {
    /// `name` labels the guardian in `ps` (its `$0`).
    pub fn new(name: &str, program: impl AsRef<OsStr>) -> Self {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(GUARDIAN_SCRIPT)
            .arg(name)
            .arg(program)
            .env("RESIDENCY_STOP_SIGNAL", StopSignal::Int.as_str())
            .env_remove("RESIDENCY_CLEANUP_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Our own process group: a Ctrl-C in the terminal reaches only `residency dev`,
            // which then stops its servers in order.
            .process_group(0);
        Self { command }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.command.env_remove(key);
        self
    }

    pub fn stop_signal(&mut self, signal: StopSignal) -> &mut Self {
        self.command.env("RESIDENCY_STOP_SIGNAL", signal.as_str());
        self
    }

    /// Removes `path` (file or directory) once the server has exited.
    pub fn remove_on_exit(&mut self, path: &Path) -> &mut Self {
        self.command.env("RESIDENCY_CLEANUP_DIR", path);
        self
    }

    /// Appends the server's standard output and error to `path`.
    pub fn log_to(&mut self, path: &Path) -> Result<&mut Self, DevstackError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(DevstackError::io("open log file", path))?;
        let log_err = log
            .try_clone()
            .map_err(DevstackError::io("open log file", path))?;
        self.command.stdout(log).stderr(log_err);
        Ok(self)
    }

    pub fn run_as(&mut self, run_as: &RunAs) -> &mut Self {
        run_as.apply(&mut self.command);
        self
    }

    /// Starts the guardian and, under it, the server. `what` names it in errors.
    pub fn spawn(mut self, what: &Path) -> Result<Guardian, DevstackError> {
        let mut child = self
            .command
            .spawn()
            .map_err(DevstackError::io("start guardian for", what))?;
        let lifeline = child.stdin.take();
        Ok(Guardian { child, lifeline })
    }
}

/// A running guardian and its server. Closing the lifeline (or dropping this) stops the
/// server; [`Guardian::exited`] tells when it is gone.
#[derive(Debug)]
pub(crate) struct Guardian {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Guardian {
    /// Asks the guardian to stop the server; returns false if it was asked already.
    pub fn close_lifeline(&mut self) -> bool {
        self.lifeline.take().is_some()
    }

    /// The guardian's exit status if it (and so the server) has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("unknown: {err}")),
        }
    }

    /// Sends `signal` to the guardian's whole process group (it leads its own group), for
    /// a server that does not stop when asked.
    pub fn signal_group(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }
}

/// The last `max_bytes` of a log file, for error messages.
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
