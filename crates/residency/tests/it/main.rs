//! End-to-end tests of the `residency` binary as a child process: `residency dev` brings
//! up real regions and stops them cleanly; `residency migrate` refuses what it must; the
//! operator commands manage what `residency dev` runs.

mod audit_anchors;
mod audit_verify;
mod dev;
mod erasures;
mod export;
mod migrate;
mod operator;
mod platform;
mod subjects;
mod subjects_verify;

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

/// Runs `command` to its end: whether it succeeded, and its stdout followed by its stderr.
pub fn outcome(command: &mut std::process::Command) -> (bool, String) {
    let output = command.output().expect("run residency");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
