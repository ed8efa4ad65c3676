//! `residency migrate`: apply the embedded migrations to a region's primary and stamp it
//! with the region (`node::migrate`). Refuses a changed migration and another region's
//! database.

use std::path::PathBuf;

use node::migrate::MigrateTarget;

#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The region whose primary to migrate.
    #[arg(long, env = "RESIDENCY_REGION")]
    region: String,
    /// The region catalogue directory (used unless --database-url is given).
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// Connect to this primary instead of the catalogue's, e.g. a `residency dev` one.
    #[arg(long, env = "RESIDENCY_DATABASE_URL", hide_env_values = true, value_parser = crate::parse_secret)]
    database_url: Option<catalog::Secret>,
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let target = match args.database_url {
        Some(url) => MigrateTarget::Url {
            region: args.region,
            url,
        },
        None => MigrateTarget::Catalog {
            catalog: args.catalog,
            region: args.region,
        },
    };
    let (region, report) = node::migrate::migrate(&target).await?;
    println!(
        "{region}: {} migration(s) applied ({}), {} already applied",
        report.applied.len(),
        report
            .applied
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        report.already_applied.len()
    );
    Ok(())
}
