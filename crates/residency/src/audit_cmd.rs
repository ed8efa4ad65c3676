//! `residency audit verify`: checks an exported audit bundle offline — every hash, the
//! chain links, seq continuity, the manifest's counts and head, and the signatures —
//! and names the first bad seq and the fault; with `--anchors`, also against the
//! checkpoints anchored in the region's audit bucket (a cut tail or a reset head that the
//! bundle alone cannot show). Exit 0 only for an intact bundle.
//! `residency audit verify-certificate`: checks an offboarding certificate offline — its
//! fields and its signature by the region's audit key — and names what is wrong.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use audit::{Checkpoint, KeySet, Summary};
use envelope::aws::{AwsCredentials, AwsSettings};
use envelope::objects::ObjectStore as _;
use envelope::objects::s3::S3ObjectStore;
use model::TenantId;

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Verify an exported bundle (NDJSON events + signed manifest).
    Verify(VerifyArgs),
    /// Verify an offboarding certificate (`GET /v1/tenants/{tenant}/offboarding`).
    VerifyCertificate(CertificateArgs),
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The bundle, as returned by `GET /v1/tenants/{tenant}/audit/export`.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    keys: KeySource,
    /// Also check the bundle against the checkpoints anchored in the region's audit
    /// bucket: `s3://BUCKET` (AWS credentials from the environment) or a directory
    /// holding the bucket or a copy of it (`residency dev`:
    /// `<state-dir>/<region>/audit-bucket`).
    #[arg(long, value_name = "DIR_OR_S3_URL")]
    anchors: Option<String>,
    /// The S3 endpoint for `--anchors s3://…` (e.g. an emulator's), instead of AWS's.
    #[arg(long, requires = "anchors", value_name = "URL")]
    anchors_endpoint: Option<String>,
}

#[derive(Debug, clap::Args)]
struct CertificateArgs {
    /// The certificate, as returned by `GET /v1/tenants/{tenant}/offboarding`.
    #[arg(long)]
    certificate: PathBuf,
    #[command(flatten)]
    keys: KeySource,
}

/// Where the region's public audit keys come from, for an offline verification.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct KeySource {
    /// The region's Ed25519 public key, base64 (as in `GET /v1/audit/keys`).
    #[arg(long)]
    public_key: Option<String>,
    /// `GET /v1/audit/keys` of a region (plain HTTP; for HTTPS download it and use
    /// --keys-file).
    #[arg(long)]
    keys_url: Option<String>,
    /// A saved copy of `GET /v1/audit/keys`.
    #[arg(long)]
    keys_file: Option<PathBuf>,
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let args = match args.command {
        AuditCommand::Verify(args) => args,
        AuditCommand::VerifyCertificate(args) => return verify_certificate(args).await,
    };
    let keys = load_keys(&args.keys).await?;
    let plain_keys = keys.clone();
    let verified = verify_file(&args.bundle, move |reader| {
        audit::verify_bundle(reader, &plain_keys)
    })
    .await?;
    let summary = match verified {
        Ok(summary) => summary,
        Err(err) => bail!("bundle rejected: {err}"),
    };
    let Some(location) = &args.anchors else {
        println!("{summary}");
        return Ok(());
    };
    let anchors = load_anchors(location, args.anchors_endpoint.clone(), &summary).await?;
    let verified = verify_file(&args.bundle, move |reader| {
        audit::verify_bundle_against_anchors(reader, &keys, &anchors)
    })
    .await?;
    match verified {
        Ok(anchored) => {
            println!("{anchored}");
            Ok(())
        }
        Err(err) => bail!("bundle rejected: {err}"),
    }
}

/// Runs `verify` over the bundle file off the async workers: verification is CPU-bound
/// and streams the file.
async fn verify_file<T: Send + 'static>(
    path: &Path,
    verify: impl FnOnce(BufReader<std::fs::File>) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    tokio::task::spawn_blocking(move || verify(BufReader::new(file)))
        .await
        .context("join verifier")
}

/// The anchored checkpoints of the bundle's tenant that can bear on it (from its first
/// event's predecessor on), read from `location`: `s3://BUCKET` or a directory.
async fn load_anchors(
    location: &str,
    endpoint: Option<String>,
    summary: &Summary,
) -> anyhow::Result<Vec<Checkpoint>> {
    let tenant = summary.tenant;
    let from_seq = summary.first_seq.map_or(0, |first| first.saturating_sub(1));
    let wanted = |name: &str| {
        audit::parse_anchor_name(name).is_some_and(|(of, seq)| of == tenant && seq >= from_seq)
    };
    let objects = if let Some(bucket) = location.strip_prefix("s3://") {
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            bail!("--anchors: expected s3://BUCKET, got {location}");
        }
        let settings = AwsSettings {
            region: summary.region.clone(),
            endpoint_url: endpoint.clone(),
            credentials: AwsCredentials::DefaultChain,
        };
        read_bucket(
            &S3ObjectStore::new(&settings, bucket.to_owned(), endpoint.is_some()),
            &tenant,
            wanted,
        )
        .await?
    } else {
        if endpoint.is_some() {
            bail!("--anchors-endpoint applies to --anchors s3://BUCKET only");
        }
        read_directory(Path::new(location), &tenant, wanted)?
    };
    objects
        .into_iter()
        .map(|(name, bytes)| {
            let anchor = audit::parse_anchor(&bytes)
                .with_context(|| format!("anchor {name} in {location}"))?;
            if audit::parse_anchor_name(&name) != Some((anchor.tenant, anchor.seq)) {
                bail!(
                    "anchor {name} in {location} holds the checkpoint of tenant {} at seq {} (misplaced)",
                    anchor.tenant,
                    anchor.seq
                );
            }
            Ok(anchor)
        })
        .collect()
}

/// `tenant`'s anchor objects in an S3 bucket whose names `wanted` accepts.
async fn read_bucket(
    bucket: &S3ObjectStore,
    tenant: &TenantId,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use futures::TryStreamExt as _;
    let location = bucket.location();
    let keys = bucket
        .list(&audit::anchor_prefix(tenant))
        .await
        .with_context(|| format!("list the anchors in {location}"))?;
    let mut objects = Vec::new();
    for key in keys.into_iter().filter(|key| wanted(key.as_str())) {
        let body = bucket
            .get(&key)
            .await
            .with_context(|| format!("read {key} in {location}"))?;
        let mut bytes = Vec::new();
        let mut chunks = body;
        while let Some(chunk) = chunks
            .try_next()
            .await
            .with_context(|| format!("read {key} in {location}"))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > audit::MAX_ANCHOR_BYTES {
                bail!("{key} in {location} is larger than an anchor can be");
            }
        }
        objects.push((key.as_str().to_owned(), bytes));
    }
    Ok(objects)
}

/// `tenant`'s anchor files under `root` (the bucket's layout:
/// `checkpoints/<tenant>/<seq>.json`) whose names `wanted` accepts.
fn read_directory(
    root: &Path,
    tenant: &TenantId,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    if !root.is_dir() {
        bail!("--anchors: {} is not a directory", root.display());
    }
    let prefix = audit::anchor_prefix(tenant);
    let dir = root.join(&prefix);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // No anchor of the tenant yet: checked against none.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("read {}", dir.display())),
    };
    let mut objects = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let name = format!("{prefix}{file}");
        if !wanted(&name) {
            continue;
        }
        let path = entry.path();
        let size = entry
            .metadata()
            .with_context(|| format!("read {}", path.display()))?
            .len();
        if size > audit::MAX_ANCHOR_BYTES as u64 {
            bail!("{} is larger than an anchor can be", path.display());
        }
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        objects.push((name, bytes));
    }
    Ok(objects)
}

async fn verify_certificate(args: CertificateArgs) -> anyhow::Result<()> {
    let keys = load_keys(&args.keys).await?;
    let text = std::fs::read_to_string(&args.certificate)
        .with_context(|| format!("read {}", args.certificate.display()))?;
    match check_certificate(&text, &keys) {
        Ok(certificate) => {
            println!(
                "certificate valid: tenant {} offboarded in {} (requested {}, completed {}), {} key versions destroyed, audit head seq {}, signed by {}",
                certificate.tenant,
                certificate.region,
                certificate.requested_at,
                certificate.completed_at,
                certificate.key_versions_destroyed.len(),
                certificate.audit_head.seq,
                certificate.key_id
            );
            Ok(())
        }
        Err(fault) => bail!("certificate rejected: {fault}"),
    }
}

/// The certificate if its fields are well formed and its signature is the region's;
/// otherwise what is wrong.
fn check_certificate(
    text: &str,
    keys: &KeySet,
) -> Result<wire::api::OffboardingCertificate, String> {
    let certificate: wire::api::OffboardingCertificate =
        serde_json::from_str(text).map_err(|err| format!("not a certificate: {err}"))?;
    model::TenantId::parse(&certificate.tenant)
        .map_err(|_| "tenant: not a tenant id".to_owned())?;
    model::RegionId::parse(&certificate.region)
        .map_err(|_| "region: not a region id".to_owned())?;
    for (field, time) in [
        ("requested_at", &certificate.requested_at),
        ("completed_at", &certificate.completed_at),
    ] {
        audit::time::parse(time).map_err(|_| format!("{field}: not an RFC 3339 time"))?;
    }
    if certificate.audit_head.seq == 0
        || certificate.audit_head.hash.parse::<audit::Hash>().is_err()
    {
        return Err("audit_head: not a chain head (seq and 64 hex digits)".to_owned());
    }
    let signature = audit::Signature::from_base64(&certificate.signature)
        .map_err(|_| "signature: not a base64 Ed25519 signature".to_owned())?;
    if !keys.verify_signature(
        &certificate.key_id,
        &certificate.region,
        &certificate.signed_payload(),
        &signature,
    ) {
        return Err(format!(
            "signature: does not verify with key {} of region {} (the certificate was altered after signing, or that key is not trusted)",
            certificate.key_id, certificate.region
        ));
    }
    Ok(certificate)
}

pub(crate) async fn load_keys(args: &KeySource) -> anyhow::Result<KeySet> {
    if let Some(key) = &args.public_key {
        return KeySet::from_public_key(key).context("--public-key");
    }
    let json = if let Some(path) = &args.keys_file {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    } else if let Some(url) = &args.keys_url {
        if !url.starts_with("http://") {
            bail!(
                "--keys-url supports http:// only in this build; download the keys and pass --keys-file"
            );
        }
        let response = reqwest::get(url)
            .await
            .with_context(|| format!("fetch {url}"))?;
        if !response.status().is_success() {
            bail!("fetch {url}: HTTP {}", response.status());
        }
        response
            .text()
            .await
            .with_context(|| format!("read {url}"))?
    } else {
        bail!("give --public-key, --keys-url or --keys-file");
    };
    KeySet::from_json(&json).context("parse the audit keys")
}
