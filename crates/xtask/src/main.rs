//! `cargo xtask`: repository chores. `test` checks the machine's prerequisites, then runs
//! the whole test suite; `tidy` checks repository conventions (also run as a test);
//! `terraform` checks, tests and applies (against moto) everything under `terraform/`.

mod edges;
mod prerequisites;
mod terraform;
mod tidy;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "usage: cargo xtask <test [cargo test args…] | tidy | terraform>";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("tidy") => tidy::check(&repo_root()).map(|()| println!("tidy: ok")),
        Some("terraform") => terraform::run(&repo_root()),
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

/// Checks prerequisites, saying what to install, then runs every test of the workspace
/// and ends with one total line (`tests: N passed, N failed`), since cargo's own last
/// lines are per-binary (often doc-tests with nothing in them).
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
    let mut child = Command::new(cargo)
        .current_dir(repo_root())
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    if !status.success() {
        anyhow::bail!("tests failed ({status})");
    }
    if totals.passed == 0 {
        anyhow::bail!("no test ran");
    }
    Ok(())
}

/// Sums cargo's `test result: ok. 3 passed; 0 failed; …` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(count), Some(kind)) = (words.next(), words.next())
                && let Ok(count) = count.parse::<u64>()
            {
                match kind {
                    "passed" => self.passed += count,
                    "failed" => self.failed += count,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_cargo_result_lines() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.98s");
        totals
            .add("test result: FAILED. 9 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add("running 3 tests");
        assert_eq!(
            totals,
            Totals {
                passed: 16,
                failed: 1
            }
        );
    }
}
