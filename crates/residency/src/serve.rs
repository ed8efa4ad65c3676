//! `residency serve`: one regional node against the databases, KMS key, buckets and
//! audit signing key the catalogue names.

use std::ffi::OsString;
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
use service::AuditKeys;
use store::{DatabaseSettings, PgEndpoint};

use crate::node::{AuditFlags, NodeAudit};

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
    /// The deployment's operator token (manages tenants). Read it from the
    /// environment or a secret store; never put it on a command line.
    #[arg(long, env = "RESIDENCY_OPERATOR_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    operator_token: catalog::Secret,
    /// The tenant directory database (`postgres://…`), shared by every region. It holds
    /// no personal data: tenant id, home region, allowed regions, transit, version.
    #[arg(long, env = "RESIDENCY_DIRECTORY_URL", hide_env_values = true, value_parser = parse_secret)]
    directory_url: catalog::Secret,
    /// During a rotation of the inter-region forwarding secret: the previous secret,
    /// still accepted on forwarded requests (this node signs with the catalogue's
    /// `forwarding_secret`). See docs/operations.md.
    #[arg(long, env = "RESIDENCY_FORWARDING_SECRET_PREVIOUS", hide_env_values = true, value_parser = parse_secret)]
    forwarding_secret_previous: Option<catalog::Secret>,
    #[command(flatten)]
    audit: AuditFlags,
    #[command(flatten)]
    api: crate::node::ApiFlags,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let catalog = Catalog::load_dir(&args.catalog)?;
    let (region, spec) = find_region(&catalog, &args.region)?;
    // Before anything connects: a node that cannot sign its audit log does not start.
    let keys = audit_keys(&region, spec, |name| std::env::var_os(name))?;
    let mut routing = routing(&catalog, &region, spec, &args.directory_url, |name| {
        std::env::var_os(name)
    })?;
    if let Some(previous) = &args.forwarding_secret_previous {
        router::ForwardingKey::from_secret(previous)
            .context("--forwarding-secret-previous (RESIDENCY_FORWARDING_SECRET_PREVIOUS)")?;
        routing.previous_forwarding_secret = Some(previous.clone());
    }
    let settings = database_settings(spec)?;
    let backends = aws_backends(&region, spec, args.aws_endpoint_url.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let audit = NodeAudit {
        keys,
        settings: args.audit.settings(),
    };
    if args.operator_token.expose().len() < 32 {
        bail!("the operator token must be at least 32 characters");
    }
    let platform = crate::node::Platform {
        regions: catalog.ids().cloned().collect(),
        operator: service::access::OperatorToken::new(args.operator_token.expose()),
        api: args.api.clone(),
        routing: Some(routing),
    };
    let node = crate::node::start(region, &settings, backends, audit, platform, listener).await?;
    let signal = crate::signals::shutdown_requested().await?;
    tracing::info!(signal, "stopping");
    node.stop().await
}

/// Every region's endpoints, the directory, and the forwarding secret: what the router in
/// front of this node needs. Refuses a region without a forwarding secret.
fn routing(
    catalog: &Catalog,
    region: &RegionId,
    spec: &RegionSpec,
    directory_url: &catalog::Secret,
    env: impl FnOnce(&str) -> Option<OsString>,
) -> anyhow::Result<crate::node::Routing> {
    let Some(reference) = &spec.forwarding_secret else {
        bail!(
            "region {region} has no forwarding_secret in {}: routers sign forwarded requests with it; \
             add `forwarding_secret = {{ env = \"NAME\" }}` (or `{{ file = \"/path\" }}`), the same secret in every region",
            spec.source.display()
        );
    };
    let forwarding_secret = reference
        .resolve_with(env)
        .with_context(|| format!("region {region}: resolve forwarding_secret ({reference})"))?;
    router::ForwardingKey::from_secret(&forwarding_secret)
        .with_context(|| format!("region {region}: forwarding_secret ({reference})"))?;
    let config: tokio_postgres::Config = directory_url
        .expose()
        .parse()
        // The URL may carry a password: never echo it.
        .map_err(|_| anyhow::anyhow!("--directory-url is not a valid PostgreSQL URL"))?;
    let directory = store::directory::DirectoryDatabase::new(&PgEndpoint::new("directory", config))
        .context("the directory pool")?;
    Ok(crate::node::Routing {
        regions: router::regions_from_catalog(catalog).context("region endpoints")?,
        directory: crate::directory::PgDirectory::new(directory),
        forwarding_secret,
        previous_forwarding_secret: None,
    })
}

fn parse_secret(raw: &str) -> Result<catalog::Secret, std::convert::Infallible> {
    Ok(catalog::Secret::new(raw.to_owned()))
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

/// The region's audit signing keys from the catalogue's `audit_signing_key` secret,
/// environment variables looked up by `env`. Errors name the region, the field and the
/// reference, never the secret.
fn audit_keys(
    region: &RegionId,
    spec: &RegionSpec,
    env: impl FnOnce(&str) -> Option<OsString>,
) -> anyhow::Result<AuditKeys> {
    let Some(reference) = &spec.audit_signing_key else {
        bail!(
            "region {region} has no audit_signing_key in {}: `residency serve` signs the region's audit log with it; \
             add `audit_signing_key = {{ env = \"NAME\" }}` (or `{{ file = \"/path\" }}`) holding the key's text form \
             `residency-audit-ed25519:<hex>` (see docs/audit.md)",
            spec.source.display()
        );
    };
    let secret = reference
        .resolve_with(env)
        .with_context(|| format!("region {region}: resolve audit_signing_key ({reference})"))?;
    AuditKeys::parse(region, secret.expose())
        .with_context(|| format!("region {region}: audit_signing_key ({reference})"))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const REGION_FILE: &str = include_str!("../../../regions/eu-west-1.toml");

    fn spec(text: &str) -> RegionSpec {
        RegionSpec::parse(text, Path::new("regions/eu-west-1.toml")).expect("valid region file")
    }

    fn region() -> RegionId {
        RegionId::parse("eu-west-1").expect("region")
    }

    #[test]
    fn the_audit_signing_key_comes_from_the_catalogues_reference() {
        let spec = spec(REGION_FILE);
        let Some(catalog::SecretRef::Env(name)) = spec.audit_signing_key.clone() else {
            panic!("the repository's catalogue names the key by environment variable");
        };
        let keys = AuditKeys::generate(region());
        let text = keys.to_text().expose().to_owned();
        let loaded = audit_keys(&region(), &spec, |asked| {
            (asked == name).then(|| text.clone().into())
        })
        .expect("key loads");
        assert_eq!(loaded.current().key_id(), keys.current().key_id());
    }

    #[test]
    fn serve_refuses_a_missing_unset_or_malformed_key_without_echoing_it() {
        let without = REGION_FILE
            .lines()
            .filter(|line| !line.starts_with("audit_signing_key"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = audit_keys(&region(), &spec(&without), |_| None).expect_err("no reference");
        let message = format!("{err:#}");
        assert!(
            message.contains("region eu-west-1") && message.contains("audit_signing_key"),
            "{message}"
        );

        let err = audit_keys(&region(), &spec(REGION_FILE), |_| None).expect_err("unset");
        let message = format!("{err:#}");
        assert!(
            message.contains("audit_signing_key") && message.contains("is not set"),
            "{message}"
        );

        let secret = format!(
            "{}{}",
            service::audit_keys::SIGNING_KEY_PREFIX,
            "5e".repeat(31)
        );
        let err = audit_keys(&region(), &spec(REGION_FILE), |_| Some(secret.into()))
            .expect_err("malformed");
        let message = format!("{err:#}");
        assert!(message.contains("malformed signing key"), "{message}");
        assert!(!message.contains("5e5e"), "{message}");
    }
}
