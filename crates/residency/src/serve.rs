//! `residency serve`: one regional node against the databases the catalogue names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use catalog::{Catalog, DbEndpoint, RegionSpec};
use envelope::aws::{AwsCredentials, AwsSettings};
use envelope::kms::aws::AwsKms;
use envelope::objects::s3::S3ObjectStore;
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
    /// Send KMS and S3 calls to this endpoint instead of AWS (an S3/KMS-compatible
    /// server, or a VPC endpoint). Credentials come from the default AWS chain.
    #[arg(long, env = "RESIDENCY_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let catalog = Catalog::load_dir(&args.catalog)?;
    let (region, spec) = find_region(&catalog, &args.region)?;
    let settings = database_settings(spec)?;
    let backends = aws_backends(&region, spec, args.aws_endpoint_url.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let node = crate::node::start(region, &settings, backends, listener).await?;
    let signal = crate::signals::shutdown_requested().await?;
    tracing::info!(signal, "stopping");
    node.stop().await
}

/// The region's KMS key and data bucket from the catalogue, through AWS (or the
/// endpoint override), credentials from the default chain.
fn aws_backends(
    region: &RegionId,
    spec: &RegionSpec,
    endpoint_url: Option<String>,
) -> crate::node::Backends {
    let force_path_style = endpoint_url.is_some();
    let settings = AwsSettings {
        region: region.clone(),
        endpoint_url,
        credentials: AwsCredentials::DefaultChain,
    };
    crate::node::Backends {
        kms: Arc::new(AwsKms::new(&settings, spec.kms.key.clone())),
        objects: Arc::new(S3ObjectStore::new(
            &settings,
            spec.storage.data_bucket.clone(),
            force_path_style,
        )),
    }
}

/// The catalogue's entry for `region`, or an error listing the known regions.
pub(crate) fn find_region<'a>(
    catalog: &'a Catalog,
    region: &str,
) -> anyhow::Result<(RegionId, &'a RegionSpec)> {
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
    Ok((region, spec))
}

/// The catalogue's database settings for `region`, with secrets resolved.
pub(crate) fn region_settings(
    catalog: &std::path::Path,
    region: &str,
) -> anyhow::Result<(RegionId, DatabaseSettings)> {
    let catalog = Catalog::load_dir(catalog)?;
    let (region, spec) = find_region(&catalog, region)?;
    Ok((region, database_settings(spec)?))
}

fn database_settings(spec: &RegionSpec) -> anyhow::Result<DatabaseSettings> {
    let primary = endpoint("primary", &spec.database.primary)?;
    let replicas = spec
        .database
        .replicas
        .iter()
        .enumerate()
        .map(|(i, replica)| endpoint(&format!("replica-{}", i + 1), replica))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(DatabaseSettings::new(primary, replicas))
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
