//! End-to-end tests of the `residency` binary as a child process: `residency dev` brings
//! up real regions and stops them cleanly; `residency migrate` refuses what it must.

mod audit_verify;
mod bench;
mod dev;
mod migrate;

use std::path::{Path, PathBuf};

/// The repository's `regions/` catalogue.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

pub fn residency() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_residency"))
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("procfs is mounted")
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(&needle)
        {
            pids.push(pid);
        }
    }
    pids
}
