//! `residency dev`: the whole platform on one machine (composed by `node::dev`): prints
//! a summary once every region serves, and on SIGINT/SIGTERM (or when a node stops on its
//! own) stops every node and every PostgreSQL process.

use std::path::PathBuf;

use residency::flags::{ApiFlags, AuditFlags};

/// Where `residency dev` keeps its state unless told otherwise; the operator commands
/// read `endpoints.json` there by default.
pub(crate) const DEFAULT_STATE_DIR: &str = ".residency/dev";

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Where clusters, keys, objects and endpoints.json live; reused across starts.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Regions to start, comma-separated ids of the catalogue.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eu-central-1,us-east-1,ap-southeast-1"
    )]
    regions: Vec<String>,
    /// The region catalogue directory.
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    #[command(flatten)]
    audit: AuditFlags,
    #[command(flatten)]
    api: ApiFlags,
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let platform = node::dev::DevPlatform::start(node::dev::DevConfig {
        api: args.api.settings()?,
        audit: args.audit.settings(),
        state_dir: args.state_dir,
        regions: args.regions,
        catalog: args.catalog,
    })
    .await?;
    print!("{}", platform.summary());
    println!("Press Ctrl-C to stop.");

    let reason = tokio::select! {
        signal = crate::signals::shutdown_requested() => signal.unwrap_or("signal handler failed"),
        region = platform.node_exited() => {
            tracing::error!(region = %region, "regional node stopped unexpectedly");
            "a node stopped"
        }
    };
    tracing::info!(reason, "stopping the local platform");
    platform.stop().await;
    println!("Stopped: every node and PostgreSQL process has exited ({reason}).");
    Ok(())
}
