//! `residency migrate`: apply the embedded migrations to a region's primary and stamp it
//! with the region (`node::migrate`). Refuses a changed migration and another region's
//! database.

use std::path::PathBuf;

use node::migrate::{MigrateTarget, OwnerLogin};

#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The region whose primary to migrate.
    #[arg(long, env = "RESIDENCY_REGION")]
    region: String,
    /// The region catalogue directory (used unless --database-url is given).
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// Connect to this primary instead of the catalogue's, e.g. a `residency dev` one, as
    /// the user in the URL (the schema owner).
    #[arg(long, env = "RESIDENCY_DATABASE_URL", hide_env_values = true, value_parser = crate::parse_secret)]
    database_url: Option<catalog::Secret>,
    /// With the catalogue: the schema owner, who runs migrations (the catalogue names the
    /// node's own login role, `residency_node`, which owns nothing; docs/operations.md).
    #[arg(
        long,
        env = "RESIDENCY_DB_OWNER_USER",
        default_value = "residency_owner"
    )]
    owner_user: String,
    /// With the catalogue: the schema owner's password. Without it, the catalogue's user
    /// migrates, which works only where that user owns the schema.
    #[arg(long, env = "RESIDENCY_DB_OWNER_PASSWORD", hide_env_values = true, value_parser = crate::parse_secret)]
    owner_password: Option<catalog::Secret>,
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
            owner: args.owner_password.map(|password| OwnerLogin {
                user: args.owner_user,
                password,
            }),
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
