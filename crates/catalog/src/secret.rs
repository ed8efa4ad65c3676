//! Secrets and references to them. The catalogue names secrets only by reference
//! (`{ env = "NAME" }` or `{ file = "/path" }`); a resolved [`Secret`] never prints its value:
//! no `Display`, no `Serialize`, and a `Debug` that redacts.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A secret value (a password, a token). Its `Debug` prints `Secret(<redacted>)`; the value
/// is reachable only through [`Secret::expose`], so every use of it is visible in review.
/// Its memory is zeroed when it drops (copies the libraries it is handed to make are
/// theirs).
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret value. Callers hand it straight to the library that needs it and never
    /// log, format or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret lives. Holds only the name of an environment variable or the path of a
/// file, never the value, so it may be printed and logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// The value of an environment variable; it must be set and non-empty.
    Env(String),
    /// The contents of a file (absolute path), without trailing newlines.
    File(PathBuf),
}

/// Why a [`SecretRef`] could not be resolved. Names the variable or the file, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("environment variable {name} is not valid unicode")]
    EnvNotUnicode { name: String },
    #[error("read secret file {}", path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret file {} is empty", path.display())]
    FileEmpty { path: PathBuf },
}

impl SecretRef {
    /// Reads the secret from the process environment or the file system.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        self.resolve_with(|name| std::env::var_os(name))
    }

    /// Like [`SecretRef::resolve`], with environment variables looked up by `env` instead of
    /// the process environment (tests; callers that carry their own environment).
    pub fn resolve_with(
        &self,
        env: impl FnOnce(&str) -> Option<OsString>,
    ) -> Result<Secret, SecretError> {
        match self {
            Self::Env(name) => {
                let raw =
                    env(name).ok_or_else(|| SecretError::EnvMissing { name: name.clone() })?;
                let value = raw
                    .into_string()
                    .map_err(|_| SecretError::EnvNotUnicode { name: name.clone() })?;
                if value.is_empty() {
                    return Err(SecretError::EnvEmpty { name: name.clone() });
                }
                Ok(Secret::new(value))
            }
            Self::File(path) => read_secret_file(path),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let mut value = std::fs::read_to_string(path).map_err(|source| SecretError::FileRead {
        path: path.to_owned(),
        source,
    })?;
    // Files written by editors and `echo` end in a newline that is not part of the secret.
    let kept = value.trim_end_matches(['\n', '\r']).len();
    value.truncate(kept);
    if value.is_empty() {
        return Err(SecretError::FileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(value))
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_value() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{secret:#?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn references_display_without_values() {
        assert_eq!(
            SecretRef::Env("DB_PASSWORD".into()).to_string(),
            "env:DB_PASSWORD"
        );
        assert_eq!(
            SecretRef::File(PathBuf::from("/run/secrets/db")).to_string(),
            "file:/run/secrets/db"
        );
    }

    #[test]
    fn env_reference_resolves_through_the_lookup() {
        let reference = SecretRef::Env("DB_PASSWORD".into());
        let secret = reference
            .resolve_with(|name| (name == "DB_PASSWORD").then(|| "s3cret".into()))
            .expect("variable is set");
        assert_eq!(secret.expose(), "s3cret");
    }

    #[test]
    fn env_reference_resolves_from_the_process_environment() {
        // Cargo sets this for the test process; setting variables ourselves needs `unsafe`.
        let secret = SecretRef::Env("CARGO_PKG_NAME".into())
            .resolve()
            .expect("cargo sets CARGO_PKG_NAME for tests");
        assert_eq!(secret.expose(), "catalog");
    }

    #[test]
    fn missing_env_var_names_the_variable() {
        let err = SecretRef::Env("RESIDENCY_TEST_UNSET_7F3A".into())
            .resolve()
            .expect_err("variable is not set");
        assert!(matches!(err, SecretError::EnvMissing { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "environment variable RESIDENCY_TEST_UNSET_7F3A is not set"
        );
    }

    #[test]
    fn empty_env_var_is_refused() {
        let err = SecretRef::Env("EMPTY".into())
            .resolve_with(|_| Some(OsString::new()))
            .expect_err("empty value");
        assert_eq!(err.to_string(), "environment variable EMPTY is empty");
    }

    #[test]
    fn file_reference_is_read_and_trailing_newline_trimmed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db-password");
        std::fs::write(&path, "s3cret \n").expect("write secret file");
        let secret = SecretRef::File(path).resolve().expect("file exists");
        assert_eq!(secret.expose(), "s3cret ");
    }

    #[test]
    fn missing_or_empty_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("absent");
        let err = SecretRef::File(missing.clone())
            .resolve()
            .expect_err("file is missing");
        assert_eq!(
            err.to_string(),
            format!("read secret file {}", missing.display())
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write secret file");
        let err = SecretRef::File(empty.clone())
            .resolve()
            .expect_err("file is empty");
        assert_eq!(
            err.to_string(),
            format!("secret file {} is empty", empty.display())
        );
    }
}
