//! `migrate`'s composition: apply the embedded migrations to a region's primary and
//! stamp it with the region. Refuses a changed migration and another region's database.

use std::path::PathBuf;

use anyhow::Context as _;
use model::RegionId;
use store::{DatabaseSettings, MigrationReport, PgEndpoint, RegionDatabase, embedded_migrations};

/// Which primary to migrate.
#[derive(Debug, Clone)]
pub enum MigrateTarget {
    /// The primary the catalogue in `catalog` names for `region`, logged in as `owner`
    /// (the schema owner's user and password) when given: the catalogue names the node's
    /// own login role, which may not create or alter anything.
    Catalog {
        catalog: PathBuf,
        region: String,
        owner: Option<OwnerLogin>,
    },
    /// The primary at `url` (e.g. a `dev` one), stamped as `region`'s.
    Url {
        region: String,
        url: catalog::Secret,
    },
}

/// The schema owner's login on the catalogue's primary (same host, database and TLS).
#[derive(Debug, Clone)]
pub struct OwnerLogin {
    pub user: String,
    pub password: catalog::Secret,
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
        MigrateTarget::Catalog {
            catalog,
            region,
            owner,
        } => {
            let (region, settings) = crate::serve::region_settings(catalog, region)?;
            match owner {
                Some(owner) => {
                    let mut config = settings.primary.config.clone();
                    config.user(&owner.user).password(owner.password.expose());
                    let endpoint = PgEndpoint {
                        name: "owner".into(),
                        config,
                        tls: settings.primary.tls.clone(),
                    };
                    (region, settings.with_owner(endpoint))
                }
                None => (region, settings),
            }
        }
    };
    let database = RegionDatabase::new(region.clone(), &settings)?;
    let report = database
        .prepare(embedded_migrations())
        .await
        .with_context(|| format!("migrate the {region} primary"))?;
    Ok((region, report))
}
