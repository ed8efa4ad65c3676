//! `residency migrate`: apply the embedded migrations to a region's primary and stamp it
//! with the region. Refuses a changed migration and another region's database.

use std::path::PathBuf;

use anyhow::Context as _;
use model::RegionId;
use store::{DatabaseSettings, PgEndpoint, RegionDatabase, embedded_migrations};

#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The region whose primary to migrate.
    #[arg(long, env = "RESIDENCY_REGION")]
    region: String,
    /// The region catalogue directory (used unless --database-url is given).
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// Connect to this primary instead of the catalogue's, e.g. a `residency dev` one.
    #[arg(long, env = "RESIDENCY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let (region, settings) = match &args.database_url {
        Some(url) => {
            let region = RegionId::parse(&args.region)?;
            // The URL holds a password: never echo it, not even in a parse error.
            let config: tokio_postgres::Config = url
                .parse()
                .map_err(|_| anyhow::anyhow!("--database-url is not a valid PostgreSQL URL"))?;
            (
                region,
                DatabaseSettings::new(PgEndpoint::new("primary", config), Vec::new()),
            )
        }
        None => crate::serve::region_settings(&args.catalog, &args.region)?,
    };
    let database = RegionDatabase::new(region.clone(), &settings)?;
    let report = database
        .prepare(embedded_migrations())
        .await
        .with_context(|| format!("migrate the {region} primary"))?;
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
