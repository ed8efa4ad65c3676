//! Which Unix user runs PostgreSQL. PostgreSQL refuses to run as root, so when we are root
//! every PostgreSQL process runs as `postgres` on directories that user owns.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{Gid, Uid, User, chown};

use crate::DevstackError;

#[derive(Debug, Clone)]
pub enum RunAs {
    /// We are not root: PostgreSQL runs as us.
    CurrentUser,
    /// We are root: PostgreSQL runs as this (unprivileged) user.
    User { name: String, uid: Uid, gid: Gid },
}

impl RunAs {
    pub fn detect() -> Result<Self, DevstackError> {
        if !Uid::effective().is_root() {
            return Ok(Self::CurrentUser);
        }
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(DevstackError::NoPostgresUser)?;
        Ok(Self::User {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        })
    }

    /// Makes `command` run as this user.
    pub fn apply(&self, command: &mut Command) {
        if let Self::User { uid, gid, .. } = self {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    /// Hands `path` to this user (no-op when we are that user already).
    pub fn own(&self, path: &Path) -> Result<(), DevstackError> {
        if let Self::User { uid, gid, .. } = self {
            chown(path, Some(*uid), Some(*gid)).map_err(|errno| DevstackError::Io {
                action: "change owner of",
                path: path.to_path_buf(),
                source: errno.into(),
            })?;
        }
        Ok(())
    }

    /// Checks that this user can create files in `dir`: it fails early with a clear message
    /// instead of a cryptic `initdb` error when a parent directory is private.
    pub fn check_writable(&self, dir: &Path) -> Result<(), DevstackError> {
        let Self::User { name, .. } = self else {
            return Ok(());
        };
        let mut probe = Command::new("/bin/sh");
        probe
            .arg("-c")
            .arg(r#"test -w "$1" && test -x "$1""#)
            .arg("sh")
            .arg(dir);
        self.apply(&mut probe);
        let ok = probe.status().map(|s| s.success()).unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(DevstackError::DirectoryUnreachable {
                user: name.clone(),
                dir: dir.to_path_buf(),
            })
        }
    }
}
