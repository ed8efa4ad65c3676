//! `serve`'s composition: one regional node against the databases, KMS key, buckets,
//! audit signing key and forwarding secret the region catalogue names, with AWS backends
//! and the PostgreSQL tenant directory. Also the catalogue look-ups `migrate` and the
//! export share (a region's entry, its database settings, TLS to a database by URL).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use catalog::{Catalog, DbEndpoint, DbTls, RegionSpec};
use envelope::aws::{AwsCredentials, AwsSettings};
use envelope::kms::aws::AwsKms;
use envelope::objects::s3::S3ObjectStore;
use model::RegionId;
use service::{AuditKeys, AuditSettings};
use store::{DatabaseSettings, PgEndpoint, PgTls};
use tokio_postgres::config::SslMode;

use crate::directory::PgDirectory;
use crate::{
    ApiSettings, Backends, NodeAudit, NodeConfig, NodeListeners, Platform, Routing, RunningNode,
};

/// What `residency serve` starts a node from: the catalogue names the region's
/// databases, KMS key, buckets and secrets; the rest comes from the operator.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The region catalogue directory.
    pub catalog: PathBuf,
    /// The region this node serves (an id of the catalogue).
    pub region: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of the operations listener (`/healthz`, and `/readyz` and `/metrics` in
    /// detail, nothing else), if any: a private address, for operators and scrapers.
    pub operations_listen: Option<SocketAddr>,
    /// Send KMS and S3 calls to this endpoint instead of AWS; credentials come from the
    /// default AWS chain either way.
    pub aws_endpoint_url: Option<String>,
    /// The deployment's operator token (at least 32 characters).
    pub operator_token: catalog::Secret,
    /// The tenant directory database (`postgres://…`), shared by every region.
    pub directory_url: catalog::Secret,
    /// During a rotation of the inter-region forwarding secret: the previous secret,
    /// still accepted on forwarded requests (the node signs with the catalogue's).
    pub forwarding_secret_previous: Option<catalog::Secret>,
    pub audit: AuditSettings,
    pub api: ApiSettings,
}

/// Starts the node `config` describes. The audit signing key and the forwarding secret are
/// checked before anything connects: a node that cannot sign does not start.
pub async fn start(config: ServeConfig) -> anyhow::Result<RunningNode> {
    if config.api.metrics_access == crate::MetricsAccess::OperationsListener
        && config.operations_listen.is_none()
    {
        bail!(
            "metrics are to be served on the operations listener only, but there is none: \
             give --operations-listen (RESIDENCY_OPERATIONS_LISTEN) or another --metrics-access"
        );
    }
    let catalog = Catalog::load_dir(&config.catalog)?;
    let (region, spec) = find_region(&catalog, &config.region)?;
    let keys = audit_keys(&region, spec, |name| std::env::var_os(name))?;
    let mut routing = routing(&catalog, &region, spec, &config.directory_url, |name| {
        std::env::var_os(name)
    })?;
    if let Some(previous) = &config.forwarding_secret_previous {
        router::ForwardingKey::from_secret(previous)
            .context("--forwarding-secret-previous (RESIDENCY_FORWARDING_SECRET_PREVIOUS)")?;
        routing.previous_forwarding_secret = Some(previous.clone());
    }
    let database = database_settings(spec)?;
    let backends = aws_backends(&region, spec, config.aws_endpoint_url.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let operations = match config.operations_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listen for operations on {address}"))?,
        ),
        None => None,
    };
    let audit = NodeAudit {
        keys,
        settings: config.audit,
    };
    if config.operator_token.expose().len() < 32 {
        bail!("the operator token must be at least 32 characters");
    }
    let platform = Platform {
        regions: catalog.ids().cloned().collect(),
        operator: service::access::OperatorToken::new(config.operator_token.expose()),
        api: config.api,
        routing: Some(routing),
    };
    crate::start_on(
        NodeConfig {
            region,
            database,
            backends,
            audit,
            platform,
        },
        NodeListeners {
            api: listener,
            operations,
        },
    )
    .await
}

/// Every region's endpoints, the directory, and the forwarding secret: what the router in
/// front of this node needs. Refuses a region without a forwarding secret.
fn routing(
    catalog: &Catalog,
    region: &RegionId,
    spec: &RegionSpec,
    directory_url: &catalog::Secret,
    env: impl FnOnce(&str) -> Option<OsString>,
) -> anyhow::Result<Routing> {
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
    let tls = url_tls("the directory", &config, spec)?;
    let directory = store::directory::DirectoryDatabase::new(
        &PgEndpoint::new("directory", config).with_tls(tls),
    )
    .context("the directory pool")?;
    Ok(Routing {
        regions: router::regions_from_catalog(catalog).context("region endpoints")?,
        directory: PgDirectory::new(directory),
        forwarding_secret,
        previous_forwarding_secret: None,
        behind_load_balancer: spec.endpoints.behind_load_balancer,
    })
}

/// The region's KMS key, data bucket and audit bucket (the erasure ledger and the anchored
/// checkpoints; Object Lock in AWS, whose default retention applies to every entry) from
/// the catalogue, through AWS (or the endpoint override), credentials from the default
/// chain.
fn aws_backends(region: &RegionId, spec: &RegionSpec, endpoint_url: Option<String>) -> Backends {
    let force_path_style = endpoint_url.is_some();
    let settings = AwsSettings {
        region: region.clone(),
        endpoint_url,
        credentials: AwsCredentials::DefaultChain,
    };
    Backends {
        kms: Arc::new(AwsKms::new(&settings, spec.kms.key.clone())),
        objects: Arc::new(S3ObjectStore::new(
            &settings,
            spec.storage.data_bucket.clone(),
            force_path_style,
        )),
        audit_objects: Arc::new(S3ObjectStore::new(
            &settings,
            spec.storage.audit_bucket.clone(),
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
    config
        .host(&spec.host)
        .port(spec.port)
        .dbname(&spec.database)
        .user(&spec.user)
        .password(password.expose())
        .application_name("residency")
        .connect_timeout(Duration::from_secs(5));
    Ok(PgEndpoint::new(name, config).with_tls(pg_tls(name, &spec.tls)?))
}

/// TLS for a database given by URL (the directory, the export's replica): with
/// `sslmode=require` in the URL, verified as the region's catalogued databases are (the
/// primary's `ca_file`, else the platform's trust store); otherwise plain TCP, as for
/// `residency dev`'s loopback servers. Nothing is ever encrypted without verifying the
/// server, and an RDS instance with `rds.force_ssl` refuses plain TCP outright.
pub(crate) fn url_tls(
    what: &str,
    config: &tokio_postgres::Config,
    spec: &RegionSpec,
) -> anyhow::Result<PgTls> {
    if !matches!(config.get_ssl_mode(), SslMode::Require) {
        return Ok(PgTls::Disabled);
    }
    let ca_file = match &spec.database.primary.tls {
        DbTls::VerifyFull { ca_file } => ca_file.as_deref(),
        DbTls::Disable => None,
    };
    PgTls::verify_full(ca_file).with_context(|| format!("set up TLS to {what}"))
}

/// The catalogue's TLS setting for a database endpoint, with its CA file read.
pub(crate) fn pg_tls(name: &str, tls: &DbTls) -> anyhow::Result<PgTls> {
    Ok(match tls {
        DbTls::Disable => PgTls::Disabled,
        DbTls::VerifyFull { ca_file } => PgTls::verify_full(ca_file.as_deref())
            .with_context(|| format!("set up TLS to the {name} database"))?,
    })
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

    /// A CA certificate (PEM) in `dir`, as an operator would place Amazon's RDS bundle.
    fn ca_file(dir: &Path) -> std::path::PathBuf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = params.self_signed(&key).expect("certificate");
        let path = dir.join("rds-ca.pem");
        std::fs::write(&path, certificate.pem()).expect("write CA file");
        path
    }

    /// The repository's region file with `lines` added to its primary database.
    fn with_primary_tls(lines: &str) -> RegionSpec {
        let marker = "region = \"eu-west-1\"\n\n[[database.replicas]]";
        assert!(REGION_FILE.contains(marker));
        spec(&REGION_FILE.replacen(
            marker,
            &format!("region = \"eu-west-1\"\n{lines}\n\n[[database.replicas]]"),
            1,
        ))
    }

    #[test]
    fn database_tls_follows_the_catalogue_and_reads_its_ca_file() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca_file(dir.path());
        let spec = with_primary_tls(&format!("ca_file = \"{}\"", ca.display()));
        let tls = pg_tls("primary", &spec.database.primary.tls).expect("CA file reads");
        assert_eq!(tls.mode(), "verify-full");
        assert_eq!(
            pg_tls("primary", &DbTls::Disable).expect("plain").mode(),
            "disable"
        );

        let missing = DbTls::VerifyFull {
            ca_file: Some(dir.path().join("absent.pem")),
        };
        let err = pg_tls("replica-1", &missing).expect_err("no such file");
        let message = format!("{err:#}");
        assert!(
            message.contains("replica-1") && message.contains("absent.pem"),
            "names the endpoint and the file: {message}"
        );
    }

    #[test]
    fn a_url_asks_for_tls_with_sslmode_require_and_gets_the_catalogues_ca() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca_file(dir.path());
        let spec = with_primary_tls(&format!("ca_file = \"{}\"", ca.display()));
        let url = |raw: &str| raw.parse::<tokio_postgres::Config>().expect("url");
        let tls = url_tls(
            "the directory",
            &url("postgres://u:p@db.example.com/directory?sslmode=require"),
            &spec,
        )
        .expect("verified TLS");
        assert_eq!(tls.mode(), "verify-full");
        for plain in [
            "postgres://u:p@127.0.0.1:5432/directory",
            "postgres://u:p@127.0.0.1:5432/directory?sslmode=disable",
        ] {
            assert_eq!(
                url_tls("the directory", &url(plain), &spec)
                    .expect("plain")
                    .mode(),
                "disable"
            );
        }
        let unreadable = with_primary_tls("ca_file = \"/nonexistent/rds-ca.pem\"");
        let err = url_tls(
            "the directory",
            &url("postgres://u:p@db.example.com/directory?sslmode=require"),
            &unreadable,
        )
        .expect_err("the CA file is missing");
        assert!(format!("{err:#}").contains("the directory"), "{err:#}");
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
