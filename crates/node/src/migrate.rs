//! `migrate`'s composition: apply the embedded migrations to a region's primary and
//! stamp it with the region. Refuses a changed migration and another region's database.

use std::path::PathBuf;

use anyhow::Context as _;
use model::RegionId;
use store::{DatabaseSettings, MigrationReport, PgEndpoint, RegionDatabase, embedded_migrations};

/// Which primary to migrate.
#[derive(Debug, Clone)]
pub enum MigrateTarget {
    /// The primary the catalogue in `catalog` names for `region`.
    Catalog { catalog: PathBuf, region: String },
    /// The primary at `url` (e.g. a `dev` one), stamped as `region`'s.
    Url {
        region: String,
        url: catalog::Secret,
    },
}

/// Migrates and stamps the target's primary; the region and what was applied.
pub async fn migrate(target: &MigrateTarget) -> anyhow::Result<(RegionId, MigrationReport)> {
    let (region, settings) = match target {
        MigrateTarget::Url { region, url } => {
            let region = RegionId::parse(region)?;
            // The URL holds a password: never echo it, not even in a parse error.
            let config: tokio_postgres::Config = url
                .expose()
                .parse()
                .map_err(|_| anyhow::anyhow!("--database-url is not a valid PostgreSQL URL"))?;
            (
                region,
                DatabaseSettings::new(PgEndpoint::new("primary", config), Vec::new()),
            )
        }
        MigrateTarget::Catalog { catalog, region } => {
            crate::serve::region_settings(catalog, region)?
        }
    };
    let database = RegionDatabase::new(region.clone(), &settings)?;
    let report = database
        .prepare(embedded_migrations())
        .await
        .with_context(|| format!("migrate the {region} primary"))?;
    Ok((region, report))
}
