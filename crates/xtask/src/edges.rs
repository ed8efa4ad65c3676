//! The allowed dependency edges between workspace crates (ENGINEERING.md, "Layout"),
//! checked by `cargo xtask tidy`: the router never links the store, the envelope or the
//! service; the pure crates link no IO crate; the transport links no domain crate.
//!
//! A crate *links* what its normal and build dependencies name (optional ones included,
//! since a feature can switch them on), and everything the workspace crates among those
//! link in turn. External crates count by what the workspace crates name directly: the
//! rules are about our own manifests, not about what a third-party crate pulls in.
//! Development dependencies are not linked into what ships, and do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// External crates that do IO (network, files, processes, an async runtime): what the
/// pure crates must never link. Names ending in `*` are prefixes.
const IO_CRATES: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-postgres",
    "tokio-postgres-rustls",
    "deadpool-postgres",
    "postgres-*",
    "aws-config",
    "aws-sdk-*",
    "aws-smithy-*",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "h2",
    "reqwest",
    "axum",
    "tower-http",
    "mio",
    "socket2",
    "nix",
    "tempfile",
];

/// The workspace crates that hold the product's domain: what the transport must never
/// link, so that it stays a piece of HTTP plumbing.
const DOMAIN_CRATES: &[&str] = &[
    "model",
    "wire",
    "catalog",
    "telemetry",
    "store",
    "envelope",
    "audit",
    "service",
    "api",
    "router",
    "export",
    "node",
];

/// What one crate must not link, and why (quoted in the problem report).
struct Rule {
    krate: &'static str,
    forbidden: Forbidden,
    why: &'static str,
}

enum Forbidden {
    /// These workspace crates, directly or through other workspace crates.
    Workspace(&'static [&'static str]),
    /// These external crates, named by the crate or by any workspace crate it links.
    External(&'static [&'static str]),
}

const RULES: &[Rule] = &[
    Rule {
        krate: "router",
        forbidden: Forbidden::Workspace(&["store", "envelope", "service"]),
        why: "the router sees ids and ciphertext, never the database or keys",
    },
    Rule {
        krate: "model",
        forbidden: Forbidden::External(IO_CRATES),
        why: "the domain types are pure",
    },
    Rule {
        krate: "wire",
        forbidden: Forbidden::External(IO_CRATES),
        why: "the JSON types are pure",
    },
    Rule {
        krate: "audit",
        forbidden: Forbidden::External(IO_CRATES),
        why: "the audit chain is computed and verified without IO",
    },
    Rule {
        krate: "export",
        forbidden: Forbidden::External(IO_CRATES),
        why: "the anonymization engine is pure; its callers read and write",
    },
    Rule {
        krate: "hop",
        forbidden: Forbidden::Workspace(DOMAIN_CRATES),
        why: "the transport links no domain crate",
    },
    Rule {
        krate: "residency",
        forbidden: Forbidden::Workspace(&["bench"]),
        why: "the production binary carries no benchmark or load generator",
    },
    Rule {
        krate: "node",
        forbidden: Forbidden::Workspace(&["bench"]),
        why: "the production binary carries no benchmark or load generator",
    },
];

/// The workspace's crates and what each names as normal or build dependencies.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    /// Workspace crate → (dependency name → whether it is a workspace crate).
    crates: BTreeMap<String, BTreeMap<String, bool>>,
}

impl Graph {
    /// Reads the graph of the workspace at `root` from `cargo metadata`.
    pub(crate) fn of_workspace(root: &Path) -> anyhow::Result<Self> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--no-deps",
            ])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .output()
            .context("run cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let metadata: Value =
            serde_json::from_slice(&output.stdout).context("parse cargo metadata")?;
        Self::from_metadata(&metadata)
    }

    /// The graph of `cargo metadata --no-deps` output: a dependency with a `path` is a
    /// workspace crate.
    fn from_metadata(metadata: &Value) -> anyhow::Result<Self> {
        let mut graph = Self::default();
        let packages = metadata["packages"]
            .as_array()
            .context("cargo metadata without packages")?;
        for package in packages {
            let name = package["name"]
                .as_str()
                .context("a package without a name")?;
            let dependencies = package["dependencies"]
                .as_array()
                .context("a package without dependencies")?;
            let mut named = BTreeMap::new();
            for dependency in dependencies {
                if dependency["kind"].as_str() == Some("dev") {
                    continue;
                }
                let dependency_name = dependency["name"]
                    .as_str()
                    .context("a dependency without a name")?;
                let in_workspace = dependency["path"].is_string();
                named.insert(dependency_name.to_owned(), in_workspace);
            }
            graph.crates.insert(name.to_owned(), named);
        }
        Ok(graph)
    }

    /// Adds `krate` naming `dependencies` (tests build graphs by hand).
    #[cfg(test)]
    fn with(mut self, krate: &str, dependencies: &[(&str, bool)]) -> Self {
        let named = dependencies
            .iter()
            .map(|&(name, in_workspace)| (name.to_owned(), in_workspace))
            .collect();
        self.crates.insert(krate.to_owned(), named);
        self
    }

    /// The workspace crates `krate` links, itself excluded, each with one path to it.
    fn linked_workspace_crates(&self, krate: &str) -> BTreeMap<String, Vec<String>> {
        let mut reached: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = vec![vec![krate.to_owned()]];
        while let Some(path) = queue.pop() {
            let last = path.last().expect("paths are never empty");
            let Some(dependencies) = self.crates.get(last) else {
                continue;
            };
            for (name, &in_workspace) in dependencies {
                if !in_workspace || name == krate || reached.contains_key(name) {
                    continue;
                }
                let mut longer = path.clone();
                longer.push(name.clone());
                reached.insert(name.clone(), longer.clone());
                queue.push(longer);
            }
        }
        reached
    }

    /// The problems of this graph against [`RULES`], one line each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for rule in RULES {
            if !self.crates.contains_key(rule.krate) {
                continue;
            }
            let linked = self.linked_workspace_crates(rule.krate);
            match rule.forbidden {
                Forbidden::Workspace(forbidden) => {
                    for (name, path) in &linked {
                        if forbidden.contains(&name.as_str()) {
                            problems.push(format!(
                                "{} links {name} ({}): {}",
                                rule.krate,
                                path.join(" -> "),
                                rule.why
                            ));
                        }
                    }
                }
                Forbidden::External(forbidden) => {
                    let linkers =
                        std::iter::once(vec![rule.krate.to_owned()]).chain(linked.into_values());
                    let mut seen = BTreeSet::new();
                    for path in linkers {
                        let linker = path.last().expect("paths are never empty");
                        let externals = self.crates[linker]
                            .iter()
                            .filter(|&(_, &in_workspace)| !in_workspace);
                        for (name, _) in externals {
                            if matches_any(name, forbidden) && seen.insert(name.clone()) {
                                problems.push(format!(
                                    "{} links {name} ({}): {}",
                                    rule.krate,
                                    [path.join(" -> "), name.clone()].join(" -> "),
                                    rule.why
                                ));
                            }
                        }
                    }
                }
            }
        }
        problems
    }
}

fn matches_any(name: &str, patterns: &[&str]) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_keeps_its_edges() {
        let graph = Graph::of_workspace(&crate::repo_root()).expect("cargo metadata");
        for krate in ["router", "model", "wire", "audit", "export", "store"] {
            assert!(graph.crates.contains_key(krate), "{krate} is in the graph");
        }
        assert_eq!(graph.problems(), Vec::<String>::new());
    }

    #[test]
    fn a_router_reaching_the_store_through_another_crate_is_named() {
        let graph = Graph::default()
            .with("router", &[("model", true), ("catalog", true)])
            .with("catalog", &[("store", true)])
            .with("store", &[("tokio-postgres", false)])
            .with("model", &[]);
        assert_eq!(
            graph.problems(),
            vec![
                "router links store (router -> catalog -> store): the router sees ids and \
                 ciphertext, never the database or keys"
            ]
        );
    }

    #[test]
    fn a_pure_crate_naming_an_io_crate_directly_or_through_the_workspace_is_named() {
        let graph = Graph::default()
            .with("model", &[("serde_json", false), ("tokio", false)])
            .with("export", &[("model", true), ("aws-sdk-s3", false)])
            .with("wire", &[("model", true)])
            // A development dependency never reaches the graph: cargo metadata marks it.
            .with("audit", &[("model", true)]);
        assert_eq!(
            graph.problems(),
            vec![
                "model links tokio (model -> tokio): the domain types are pure",
                "wire links tokio (wire -> model -> tokio): the JSON types are pure",
                "audit links tokio (audit -> model -> tokio): the audit chain is computed and \
                 verified without IO",
                "export links aws-sdk-s3 (export -> aws-sdk-s3): the anonymization engine is \
                 pure; its callers read and write",
                "export links tokio (export -> model -> tokio): the anonymization engine is \
                 pure; its callers read and write",
            ]
        );
    }

    #[test]
    fn the_transport_linking_a_domain_crate_is_named_once_it_exists() {
        let without_hop = Graph::default().with("router", &[("model", true)]);
        assert!(without_hop.problems().is_empty());
        let graph = without_hop
            .with("hop", &[("hyper", false), ("model", true)])
            .with("model", &[]);
        assert_eq!(
            graph.problems(),
            vec!["hop links model (hop -> model): the transport links no domain crate"]
        );
    }

    #[test]
    fn development_dependencies_do_not_count() {
        let metadata = serde_json::json!({
            "packages": [{
                "name": "router",
                "dependencies": [
                    { "name": "model", "kind": null, "path": "/w/crates/model" },
                    { "name": "store", "kind": "dev", "path": "/w/crates/store" },
                    { "name": "tokio", "kind": null },
                ],
            }],
        });
        let graph = Graph::from_metadata(&metadata).expect("graph");
        assert_eq!(
            graph.crates["router"],
            BTreeMap::from([("model".to_owned(), true), ("tokio".to_owned(), false)])
        );
    }
}
