//! `residency export run` (the anonymized analytics export of one region: a separate
//! process reading replicas only, as its own database role, releasing to the analytics
//! bucket; composed by `node::export`) and `residency anonymize` (the same engine on a
//! local CSV or NDJSON file, with the privacy report printed as a table).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use model::RegionId;
use node::export::RunSummary;
use node::export::{ExportSource, RegionExport};

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    #[command(subcommand)]
    command: ExportCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ExportCommand {
    /// Release anonymized snapshots of every exporting tenant's analytics collections.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The region whose data is exported (it never leaves it but anonymized).
    #[arg(long, env = "RESIDENCY_REGION")]
    region: String,
    /// One pass, then exit (otherwise a pass every --interval seconds until stopped).
    #[arg(long)]
    once: bool,
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// A `residency dev` state directory: the region's local KMS, the export replica URL
    /// `dev` wrote, and `<state>/analytics/` as the analytics bucket.
    #[arg(long, conflicts_with_all = ["replica_url", "aws_endpoint_url"])]
    dev_state: Option<PathBuf>,
    /// The region's replica, as the `residency_export` role (a primary is refused). With
    /// `sslmode=require` in it, TLS verified against the catalogue's database CA file.
    #[arg(long, env = "RESIDENCY_EXPORT_REPLICA_URL", hide_env_values = true, value_parser = crate::parse_secret)]
    replica_url: Option<catalog::Secret>,
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// An S3/KMS-compatible endpoint instead of AWS (tests, emulators).
    #[arg(long, env = "RESIDENCY_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
}

pub(crate) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    match args.command {
        ExportCommand::Run(args) => run_export(args).await,
    }
}

async fn run_export(args: RunArgs) -> anyhow::Result<()> {
    let source = match (args.dev_state, args.replica_url) {
        (Some(state), _) => ExportSource::DevState(state),
        (None, Some(replica_url)) => ExportSource::Catalog {
            replica_url,
            catalog: args.catalog,
            aws_endpoint_url: args.aws_endpoint_url,
        },
        (None, None) => {
            RegionId::parse(&args.region)?;
            bail!(
                "name the region's replica as the residency_export role with --replica-url (or RESIDENCY_EXPORT_REPLICA_URL), or use --dev-state"
            );
        }
    };
    let export = RegionExport::new(&args.region, &source)?;
    loop {
        let summary = export.pass().await?;
        print_summary(export.region(), &summary);
        if args.once {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(args.interval)) => {}
            signal = crate::signals::shutdown_requested() => {
                tracing::info!(signal = signal?, "stopping the export");
                return Ok(());
            }
        }
    }
}

fn print_summary(region: &RegionId, summary: &RunSummary) {
    println!(
        "export {region}: {} tenants, {} collections released ({} resuming a stopped run), {} unchanged; {} rows released, {} suppressed, {} no longer valid",
        summary.tenants,
        summary.released,
        summary.resumed,
        summary.unchanged,
        summary.rows_released,
        summary.rows_suppressed,
        summary.rows_invalid
    );
    for manifest in &summary.manifests {
        println!("  {manifest}");
    }
    if summary.withdrawn > 0 {
        println!(
            "  {} earlier runs withdrawn after a subject erasure (see each collection's _withdrawn.json)",
            summary.withdrawn
        );
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct AnonymizeArgs {
    /// The collection schema (as `PUT .../collections/{c}` takes it), with an `analytics`
    /// section or --k.
    #[arg(long)]
    schema: PathBuf,
    /// Records as CSV with a header line, or NDJSON (`.ndjson`, `.jsonl`).
    #[arg(long)]
    input: PathBuf,
    /// The Parquet file to write.
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    k: Option<u32>,
    #[arg(long)]
    l: Option<u32>,
    /// Also write the privacy report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub(crate) fn anonymize(args: AnonymizeArgs) -> anyhow::Result<()> {
    let report = export::anonymize_file(
        &args.schema,
        &args.input,
        &args.output,
        args.k,
        args.l,
        args.report.as_deref(),
    )?;
    print!("{}", export::render_report(&report));
    println!("written to {}", args.output.display());
    Ok(())
}
