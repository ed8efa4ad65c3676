//! `residency`: the one production binary. Subcommands: `dev` (the local three-region
//! platform), `serve` (one regional node), `migrate` (a region's primary), `audit verify`,
//! `export run`, `anonymize`, `terraform-vars`, `subjects`, and the operator's commands over a node's
//! API (`tenants`, `keys`, `jobs`; `operator/`; `erasures reapply`). Thin: each command module parses its
//! arguments and calls the `node` library (or `audit`, `export`, `catalog`, or the API). It holds no
//! benchmark or load generator: those are `residency-bench` (`crates/bench`).

mod audit_cmd;
mod dev;
mod erasure_cmd;
mod export_cmd;
mod migrate;
mod operator;
mod serve;
mod signals;
mod subjects_cmd;
mod terraform_vars;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use residency::process::ProcessFlags;

#[derive(Debug, Parser)]
#[command(
    name = "residency",
    version,
    about = "Multi-region data-residency platform"
)]
struct Cli {
    #[command(flatten)]
    process: ProcessFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a complete local platform: per region a PostgreSQL primary and streaming
    /// replica, local KMS key material, a local object store and the regional node.
    Dev(dev::DevArgs),
    /// Run one regional node against the databases named in the region catalogue.
    Serve(serve::ServeArgs),
    /// Apply migrations to a region's primary (nodes also do this when they start).
    Migrate(migrate::MigrateArgs),
    /// Audit-log tools for compliance officers (`audit verify`).
    Audit(audit_cmd::AuditArgs),
    /// Data-subject requests for compliance officers (admin key): `export`, `erase`,
    /// `verify-export` (offline).
    Subjects(subjects_cmd::SubjectsArgs),
    /// The anonymized analytics export of one region (`export run`), reading replicas only.
    Export(export_cmd::ExportArgs),
    /// Anonymize a local CSV or NDJSON file with a collection schema's analytics policy and
    /// print the privacy report: how a tenant tries a configuration before turning export on.
    Anonymize(export_cmd::AnonymizeArgs),
    /// Write Terraform's inputs (`terraform/envs/example/regions.auto.tfvars.json`) from
    /// the region catalogue.
    TerraformVars(terraform_vars::TerraformVarsArgs),
    /// Tenants (operator token): `list`, `get`, `create`, `offboard`.
    #[command(after_help = operator::EXIT_STATUS)]
    Tenants(operator::tenants::TenantsArgs),
    /// Keys: a tenant's data keys (its admin key): `rotate`, `status`, `destroy`, `policy`;
    /// the region's (operator token): `rewrap`, `rotate-audit`.
    #[command(after_help = operator::EXIT_STATUS)]
    Keys(operator::keys::KeysArgs),
    /// The region's durable jobs (operator token): `list`, `get`.
    #[command(after_help = operator::EXIT_STATUS)]
    Jobs(operator::jobs::JobsArgs),
    /// The region's erasure ledger (operator token): `reapply`.
    #[command(after_help = operator::EXIT_STATUS)]
    Erasures(erasure_cmd::ErasuresArgs),
}

/// mimalloc rather than the system allocator: a node allocates many small short-lived
/// buffers per request (headers, bodies, JSON), where glibc's malloc showed up in profiles.
/// Its 3.x line, not 2.x (the crate's `v2` feature): 2.x spent ~0.8k fewer instructions
/// per forwarded request at the entry node (callgrind of `residency-bench router`), but a node's
/// peak memory while it streamed a 50 MiB file grew by 22–26 MiB instead of ~14.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where the region catalogue is by default: `regions/` in the working directory.
pub(crate) fn default_catalog() -> PathBuf {
    PathBuf::from("regions")
}

/// A secret given as a flag or environment variable, kept redacted from then on.
pub(crate) fn parse_secret(raw: &str) -> Result<catalog::Secret, std::convert::Infallible> {
    Ok(catalog::Secret::new(raw.to_owned()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    residency::process::run(&cli.process, async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Audit(args) => audit_cmd::run(args).await,
            Command::Subjects(args) => subjects_cmd::run(args).await,
            Command::Export(args) => export_cmd::run(args).await,
            Command::Anonymize(args) => export_cmd::anonymize(args),
            Command::TerraformVars(args) => terraform_vars::run(args),
            Command::Tenants(args) => operator::tenants::run(args).await,
            Command::Keys(args) => operator::keys::run(args).await,
            Command::Jobs(args) => operator::jobs::run(args).await,
            Command::Erasures(args) => erasure_cmd::run(args).await,
        }
    })
}
