//! `residency audit verify`: checks an exported audit bundle offline — every hash, the
//! chain links, seq continuity, the manifest's counts and head, and the signatures —
//! and names the first bad seq and the fault. Exit 0 only for an intact bundle.
//! `residency audit verify-certificate`: checks an offboarding certificate offline — its
//! fields and its signature by the region's audit key — and names what is wrong.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use audit::KeySet;

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
    let file = std::fs::File::open(&args.bundle)
        .with_context(|| format!("open {}", args.bundle.display()))?;
    // Verification is CPU-bound and streams the file: keep it off the async workers.
    let result =
        tokio::task::spawn_blocking(move || audit::verify_bundle(BufReader::new(file), &keys))
            .await
            .context("join verifier")?;
    match result {
        Ok(summary) => {
            println!("bundle intact: {summary}");
            Ok(())
        }
        Err(err) => bail!("bundle rejected: {err}"),
    }
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
