//! `residency serve`: one regional node against the databases the catalogue names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use catalog::{Catalog, DbEndpoint};
use model::RegionId;
use store::{DatabaseSettings, PgEndpoint};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The region this node serves (an id of the catalogue).
    #[arg(long, env = "RESIDENCY_REGION")]
    region: String,
    /// The region catalogue directory.
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "RESIDENCY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (region, settings) = region_settings(&args.catalog, &args.region)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let node = crate::node::start(region, &settings, listener).await?;
    let signal = crate::signals::shutdown_requested().await?;
    tracing::info!(signal, "stopping");
    node.stop().await
}

/// The catalogue's database settings for `region`, with secrets resolved.
pub(crate) fn region_settings(
    catalog: &std::path::Path,
    region: &str,
) -> anyhow::Result<(RegionId, DatabaseSettings)> {
    let catalog = Catalog::load_dir(catalog)?;
    let region = RegionId::parse(region)?;
    let Some(spec) = catalog.region(&region) else {
        bail!(
            "region {region} is not in the catalogue {} (known: {})",
            catalog.dir().display(),
            catalog
                .ids()
                .map(RegionId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let primary = endpoint("primary", &spec.database.primary)?;
    let replicas = spec
        .database
        .replicas
        .iter()
        .enumerate()
        .map(|(i, replica)| endpoint(&format!("replica-{}", i + 1), replica))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((region, DatabaseSettings::new(primary, replicas)))
}

fn endpoint(name: &str, spec: &DbEndpoint) -> anyhow::Result<PgEndpoint> {
    let password = spec
        .password
        .resolve()
        .with_context(|| format!("resolve the {name} database password"))?;
    let mut config = tokio_postgres::Config::new();
    // TODO-security: managed databases require TLS; the connector (rustls) comes with the
    // Terraform/deployment work. Until then `serve` speaks plain TCP.
    config
        .host(&spec.host)
        .port(spec.port)
        .dbname(&spec.database)
        .user(&spec.user)
        .password(password.expose())
        .application_name("residency")
        .connect_timeout(Duration::from_secs(5));
    Ok(PgEndpoint::new(name, config))
}
