//! `residency export run` (the anonymized analytics export of one region: a separate
//! process reading replicas only, as its own database role, releasing to the analytics
//! bucket) and `residency anonymize` (the same engine on a local CSV or NDJSON file, with
//! the privacy report printed as a table).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use envelope::aws::{AwsCredentials, AwsSettings};
use envelope::kms::Kms;
use envelope::kms::aws::AwsKms;
use envelope::kms::local::LocalKms;
use envelope::objects::ObjectStore;
use envelope::objects::local::LocalObjectStore;
use envelope::objects::s3::S3ObjectStore;
use model::RegionId;
use service::analytics::{ExportTarget, RunSummary, export_once};
use store::PgTls;
use store::export::ExportReplica;

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
    #[arg(long, env = "RESIDENCY_EXPORT_REPLICA_URL", hide_env_values = true, value_parser = parse_secret)]
    replica_url: Option<catalog::Secret>,
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// An S3/KMS-compatible endpoint instead of AWS (tests, emulators).
    #[arg(long, env = "RESIDENCY_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
}

fn parse_secret(raw: &str) -> Result<catalog::Secret, std::convert::Infallible> {
    Ok(catalog::Secret::new(raw.to_owned()))
}

pub(crate) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    match args.command {
        ExportCommand::Run(args) => run_export(args).await,
    }
}

/// What a pass needs: where to read, with which keys, and where to write.
struct Setup {
    region: RegionId,
    replica: tokio_postgres::Config,
    replica_tls: PgTls,
    replica_name: String,
    kms: Arc<dyn Kms>,
    target: ExportTarget,
}

async fn run_export(args: RunArgs) -> anyhow::Result<()> {
    let setup = setup(&args)?;
    loop {
        let summary = pass(&setup).await?;
        print_summary(&setup.region, &summary);
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

async fn pass(setup: &Setup) -> anyhow::Result<RunSummary> {
    let mut replica =
        ExportReplica::connect(&setup.replica, &setup.replica_tls, &setup.replica_name).await?;
    export_once(&mut replica, &setup.region, &setup.kms, &setup.target)
        .await
        .map_err(|err| anyhow::anyhow!("export {}: {err}", setup.region))
}

fn setup(args: &RunArgs) -> anyhow::Result<Setup> {
    let region = RegionId::parse(&args.region)?;
    if let Some(state) = &args.dev_state {
        let root = state.join(region.as_str());
        let url = std::fs::read_to_string(root.join(crate::dev::EXPORT_REPLICA_FILE))
            .with_context(|| {
                format!(
                    "read the export replica URL of {region} in {} (is `residency dev` running with that state directory?)",
                    state.display()
                )
            })?;
        let replica: tokio_postgres::Config = url
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("the dev export replica URL is not a PostgreSQL URL"))?;
        let kms = LocalKms::open_or_create(&root.join("kms"), region.clone())
            .context("open the region's local KMS")?;
        let objects = LocalObjectStore::new(state.join("analytics"))
            .context("open the local analytics directory")?;
        return Ok(Setup {
            replica_name: endpoint_name(&replica),
            replica,
            // `dev` serves its databases on loopback only.
            replica_tls: PgTls::Disabled,
            kms: Arc::new(kms),
            target: ExportTarget {
                objects: Arc::new(objects),
                prefix: format!("{region}/"),
            },
            region,
        });
    }
    let Some(url) = &args.replica_url else {
        bail!(
            "name the region's replica as the residency_export role with --replica-url (or RESIDENCY_EXPORT_REPLICA_URL), or use --dev-state"
        );
    };
    let replica: tokio_postgres::Config = url
        .expose()
        .parse()
        // The URL may carry a password: never echo it.
        .map_err(|_| anyhow::anyhow!("--replica-url is not a valid PostgreSQL URL"))?;
    let catalog = catalog::Catalog::load_dir(&args.catalog)?;
    let (region, spec) = crate::serve::find_region(&catalog, region.as_str())?;
    let settings = AwsSettings {
        region: region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        credentials: AwsCredentials::DefaultChain,
    };
    let replica_tls = crate::serve::url_tls("the export replica", &replica, spec)?;
    let objects: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(
        &settings,
        spec.analytics.bucket.clone(),
        args.aws_endpoint_url.is_some(),
    ));
    Ok(Setup {
        replica_name: endpoint_name(&replica),
        replica,
        replica_tls,
        kms: Arc::new(AwsKms::new(&settings, spec.kms.key.clone())),
        target: ExportTarget {
            objects,
            prefix: spec.analytics.prefix.clone(),
        },
        region,
    })
}

/// `host:port` of a connection config, for messages (never credentials).
fn endpoint_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "unknown host".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
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
