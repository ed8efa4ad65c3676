//! What the test suite needs from the machine, and how to get it on Debian.

use std::path::Path;
use std::process::Command;

/// One line per missing prerequisite, each naming what to install.
pub(crate) fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !postgres_server_present() {
        missing.push(
            "PostgreSQL server binaries (initdb, postgres, pg_basebackup): apt-get install -y postgresql".into(),
        );
    } else if running_as_root() && !user_exists("postgres") {
        missing.push(
            "a `postgres` user to run PostgreSQL as (we are root): apt-get install -y postgresql creates it".into(),
        );
    }
    if !on_path("moto_server") {
        missing.push(
            "moto_server (an S3/KMS-compatible server for the AWS tests): pip install \"moto[server]\"".into(),
        );
    }
    if !on_path("nginx") && !Path::new("/usr/sbin/nginx").is_file() {
        missing.push(
            "nginx (the baseline `residency-bench router` measures its forwarding hop against, in `crates/bench`'s tests): apt-get install -y nginx".into(),
        );
    }
    missing
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn postgres_server_present() -> bool {
    if let Some(dir) = std::env::var_os("RESIDENCY_PG_BINDIR") {
        return Path::new(&dir).join("initdb").is_file();
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if from_pg_config.is_some_and(|dir| Path::new(&dir).join("initdb").is_file()) {
        return true;
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("bin/initdb").is_file())
        })
        .unwrap_or(false)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|passwd| {
            passwd
                .lines()
                .any(|line| line.split(':').next() == Some(name))
        })
        .unwrap_or(false)
}
