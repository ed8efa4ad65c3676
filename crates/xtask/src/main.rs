//! `cargo xtask`: repository chores. `test` checks the machine's prerequisites, then runs
//! the whole test suite; `tidy` checks repository conventions (also run as a test).

mod prerequisites;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <test [cargo test args…] | tidy>";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("tidy") => tidy::check(&repo_root()).map(|()| println!("tidy: ok")),
        _ => Err(anyhow::anyhow!(USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (two levels above this crate).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root exists")
}

/// Checks prerequisites, saying what to install, then runs every test of the workspace.
fn test(extra: Vec<String>) -> anyhow::Result<()> {
    let missing = prerequisites::missing();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| format!("  - {m}")).collect();
        anyhow::bail!(
            "the test suite needs what this machine lacks:\n{}",
            list.join("\n")
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo_root())
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .status()?;
    if !status.success() {
        anyhow::bail!("tests failed ({status})");
    }
    Ok(())
}
