//! Repository conventions, checked by `cargo xtask tidy` and by this crate's tests:
//! every Rust file opens with a `//!` line; no skipped tests or stubs; every crate is
//! unpublished and inherits the workspace lints; the top level holds only what the
//! product needs; crates depend on each other only along the allowed edges
//! ([`crate::edges`]).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// Top-level entries the repository may hold (ENGINEERING.md, "Layout").
const TOP_LEVEL: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "crates",
    "regions",
    "infra",
    "terraform",
    "migrations",
    "tests",
    "docs",
    "README.md",
    ".ci",
    ".cargo",
    ".rustfmt.toml",
    ".gitignore",
    ".git",
    // Local, gitignored state of `residency dev` and builds.
    ".residency",
    "target",
];

pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !TOP_LEVEL.contains(&name.as_str()) {
            problems.push(format!(
                "{name}: not part of the repository layout (see ENGINEERING.md)"
            ));
        }
    }
    let mut files = Vec::new();
    for dir in ["crates", "tests"] {
        collect_rust_files(&root.join(dir), &mut files)?;
    }
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{shown}: must open with a `//!` line saying what it is"
            ));
        }
        // Spelled in pieces so that this file does not flag itself.
        for banned in [
            concat!("#[", "ignore"),
            concat!("todo", "!("),
            concat!("unimplemented", "!("),
        ] {
            if text.contains(banned) {
                problems.push(format!(
                    "{shown}: contains `{banned}`: no skipped tests or stubs"
                ));
            }
        }
    }
    for entry in std::fs::read_dir(root.join("crates"))?.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let shown = manifest
            .strip_prefix(root)
            .unwrap_or(&manifest)
            .display()
            .to_string();
        if !text.contains("publish.workspace = true") {
            problems.push(format!("{shown}: must set `publish.workspace = true`"));
        }
        if !text.contains("[lints]\nworkspace = true") {
            problems.push(format!("{shown}: must inherit the workspace lints"));
        }
    }
    match crate::edges::Graph::of_workspace(root) {
        Ok(graph) => problems.extend(graph.problems()),
        Err(err) => problems.push(format!("cannot read the dependency graph: {err:#}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} tidy problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
    }
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            collect_rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_tidy() {
        check(&crate::repo_root()).unwrap_or_else(|err| panic!("{err:#}"));
    }

    #[test]
    fn a_file_without_a_module_comment_is_named() {
        let root = tempfile_root();
        std::fs::create_dir_all(root.join("crates/demo/src")).expect("mkdir");
        std::fs::write(root.join("crates/demo/src/lib.rs"), "fn main() {}\n").expect("write");
        let err = check(&root).expect_err("untidy").to_string();
        assert!(
            err.contains("crates/demo/src/lib.rs: must open with a `//!` line"),
            "{err}"
        );
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    fn tempfile_root() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
