//! Locating the system's PostgreSQL server binaries (`initdb`, `postgres`, `pg_basebackup`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::DevstackError;

/// The directory holding PostgreSQL's server binaries, checked to contain what we run.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
}

const REQUIRED: [&str; 3] = ["initdb", "postgres", "pg_basebackup"];

impl PgBinaries {
    /// `$RESIDENCY_PG_BINDIR` if set, else `pg_config --bindir`, else the newest
    /// `/usr/lib/postgresql/*/bin` that has `initdb` (Debian keeps server binaries off PATH).
    pub fn locate() -> Result<Self, DevstackError> {
        if let Some(dir) = std::env::var_os("RESIDENCY_PG_BINDIR") {
            return Self::at(PathBuf::from(dir));
        }
        let mut candidates = Vec::new();
        if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
            && output.status.success()
        {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !dir.is_empty() {
                candidates.push(PathBuf::from(dir));
            }
        }
        candidates.extend(debian_bindirs(Path::new("/usr/lib/postgresql")));
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").is_file())
            .ok_or(DevstackError::BinariesMissing)
            .and_then(Self::at)
    }

    /// Uses `bindir`, checking that every binary we need is there.
    pub fn at(bindir: PathBuf) -> Result<Self, DevstackError> {
        for name in REQUIRED {
            let path = bindir.join(name);
            if !path.is_file() {
                return Err(DevstackError::BinaryMissing(path));
            }
        }
        Ok(Self { bindir })
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

/// `/usr/lib/postgresql/<major>/bin`, highest major version first.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_initdb_is_refused_naming_the_binary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = PgBinaries::at(dir.path().to_path_buf()).expect_err("empty dir");
        assert!(err.to_string().contains("initdb"), "{err}");
        assert!(err.to_string().contains("postgresql"), "{err}");
    }

    #[test]
    fn debian_layout_prefers_the_newest_major_version() {
        let root = tempfile::tempdir().expect("temp dir");
        for v in ["13", "16", "15", "not-a-version"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).expect("mkdir");
        }
        let dirs = debian_bindirs(root.path());
        assert_eq!(dirs.first(), Some(&root.path().join("16").join("bin")));
        assert_eq!(dirs.len(), 3);
    }
}
