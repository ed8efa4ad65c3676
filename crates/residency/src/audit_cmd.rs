//! `residency audit verify`: checks an exported audit bundle offline — every hash, the
//! chain links, seq continuity, the manifest's counts and head, and the signatures —
//! and names the first bad seq and the fault. Exit 0 only for an intact bundle.

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
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The bundle, as returned by `GET /v1/tenants/{tenant}/audit/export`.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    keys: KeySource,
}

/// Where the region's public audit keys come from, for an offline verification.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keys").required(true).args(["public_key", "keys_url", "keys_file"])))]
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
    let AuditCommand::Verify(args) = args.command;
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
