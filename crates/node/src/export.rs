//! `export run`'s composition: where one region's analytics export reads (the region's
//! replica, as the `residency_export` role), with which KMS, and where it releases (the
//! analytics bucket, or `<state>/analytics/` of a `dev` platform). A pass reads replicas
//! only; the data never leaves the region but anonymized.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use envelope::aws::{AwsCredentials, AwsSettings};
use envelope::kms::Kms;
use envelope::kms::aws::AwsKms;
use envelope::kms::local::LocalKms;
use envelope::objects::ObjectStore;
use envelope::objects::local::LocalObjectStore;
use envelope::objects::s3::S3ObjectStore;
use model::RegionId;
pub use service::analytics::RunSummary;
use service::analytics::{ExportTarget, export_once};
use store::PgTls;
use store::export::ExportReplica;

/// Where the export of a region reads and writes.
#[derive(Debug, Clone)]
pub enum ExportSource {
    /// A `dev` state directory: the region's local KMS, the export replica URL `dev`
    /// wrote, and `<state>/analytics/` as the analytics bucket.
    DevState(PathBuf),
    /// A catalogued region: its replica by URL (with `sslmode=require`, TLS verified
    /// against the catalogue's database CA file), its KMS key and analytics bucket
    /// through AWS or `aws_endpoint_url`.
    Catalog {
        replica_url: catalog::Secret,
        catalog: PathBuf,
        aws_endpoint_url: Option<String>,
    },
}

/// What an export pass needs: where to read, with which keys, and where to write.
#[derive(Debug)]
pub struct RegionExport {
    region: RegionId,
    replica: tokio_postgres::Config,
    replica_tls: PgTls,
    replica_name: String,
    kms: Arc<dyn Kms>,
    target: ExportTarget,
}

impl RegionExport {
    /// The export of `region` from `source`; connects to nothing yet.
    pub fn new(region: &str, source: &ExportSource) -> anyhow::Result<Self> {
        let region = RegionId::parse(region)?;
        match source {
            ExportSource::DevState(state) => dev_state(region, state),
            ExportSource::Catalog {
                replica_url,
                catalog,
                aws_endpoint_url,
            } => catalogued(region, replica_url, catalog, aws_endpoint_url),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// One pass: connects to the replica and releases every exporting tenant's analytics
    /// collections that changed.
    pub async fn pass(&self) -> anyhow::Result<RunSummary> {
        let mut replica =
            ExportReplica::connect(&self.replica, &self.replica_tls, &self.replica_name).await?;
        export_once(&mut replica, &self.region, &self.kms, &self.target)
            .await
            .map_err(|err| anyhow::anyhow!("export {}: {err}", self.region))
    }
}

fn dev_state(region: RegionId, state: &std::path::Path) -> anyhow::Result<RegionExport> {
    let root = state.join(region.as_str());
    let url = std::fs::read_to_string(root.join(crate::dev::EXPORT_REPLICA_FILE))
        .with_context(|| {
            format!(
                "read the export replica URL of {region} in {} (is `residency dev` running with that state directory?)",
                state.display()
            )
        })?;
    let replica: tokio_postgres::Config = url
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("the dev export replica URL is not a PostgreSQL URL"))?;
    let kms = LocalKms::open_or_create(&root.join("kms"), region.clone())
        .context("open the region's local KMS")?;
    let objects = LocalObjectStore::new(state.join("analytics"))
        .context("open the local analytics directory")?;
    Ok(RegionExport {
        replica_name: endpoint_name(&replica),
        replica,
        // `dev` serves its databases on loopback only.
        replica_tls: PgTls::Disabled,
        kms: Arc::new(kms),
        target: ExportTarget {
            objects: Arc::new(objects),
            prefix: format!("{region}/"),
        },
        region,
    })
}

fn catalogued(
    region: RegionId,
    replica_url: &catalog::Secret,
    catalog: &std::path::Path,
    aws_endpoint_url: &Option<String>,
) -> anyhow::Result<RegionExport> {
    let replica: tokio_postgres::Config = replica_url
        .expose()
        .parse()
        // The URL may carry a password: never echo it.
        .map_err(|_| anyhow::anyhow!("--replica-url is not a valid PostgreSQL URL"))?;
    let catalog = catalog::Catalog::load_dir(catalog)?;
    let (region, spec) = crate::serve::find_region(&catalog, region.as_str())?;
    let settings = AwsSettings {
        region: region.clone(),
        endpoint_url: aws_endpoint_url.clone(),
        credentials: AwsCredentials::DefaultChain,
    };
    let replica_tls = crate::serve::url_tls("the export replica", &replica, spec)?;
    let objects: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(
        &settings,
        spec.analytics.bucket.clone(),
        aws_endpoint_url.is_some(),
    ));
    Ok(RegionExport {
        replica_name: endpoint_name(&replica),
        replica,
        replica_tls,
        kms: Arc::new(AwsKms::new(&settings, spec.kms.key.clone())),
        target: ExportTarget {
            objects,
            prefix: spec.analytics.prefix.clone(),
        },
        region,
    })
}

/// `host:port` of a connection config, for messages (never credentials).
fn endpoint_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "unknown host".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}
