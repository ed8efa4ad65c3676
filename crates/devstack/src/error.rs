//! Errors of the local stack, each saying what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DevstackError {
    #[error(
        "PostgreSQL server binaries not found (looked for initdb via `pg_config --bindir` and in /usr/lib/postgresql/*/bin): install the `postgresql` package, e.g. `apt-get install -y postgresql`"
    )]
    BinariesMissing,
    #[error("PostgreSQL binary {0} is missing: install the `postgresql` package")]
    BinaryMissing(PathBuf),
    #[error(
        "running as root but there is no `postgres` user to run PostgreSQL as: install the `postgresql` package or run as an ordinary user"
    )]
    NoPostgresUser,
    #[error(
        "PostgreSQL runs as user {user}, which cannot write to {dir}: choose a state directory that user can reach (every parent directory must be searchable by others, e.g. under /tmp or /var/lib)"
    )]
    DirectoryUnreachable { user: String, dir: PathBuf },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}); its output:\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what} did not become ready within {seconds} s; last error: {last_error}\n{log}")]
    NotReady {
        what: String,
        seconds: u64,
        last_error: String,
        log: String,
    },
    #[error("{what} exited during start-up ({status})\n{log}")]
    ExitedEarly {
        what: String,
        status: String,
        log: String,
    },
    #[error("{what}: {source}")]
    Postgres {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(r#"moto_server not found: install it with pip install "moto[server]""#)]
    MotoMissing,
    #[error("state file {path} is corrupt: {reason}")]
    CorruptState { path: PathBuf, reason: String },
}

impl DevstackError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
