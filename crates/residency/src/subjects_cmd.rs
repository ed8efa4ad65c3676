//! `residency subjects verify-export`: checks a subject export (`GET
//! /v1/tenants/{tenant}/subjects/{subject}/export`, one page as saved to a file) offline
//! against the region's published audit keys: the signature must be by a key of the
//! export's region over the export's content. Exit 0 only for an intact export.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::audit_cmd::{KeySource, load_keys};

#[derive(Debug, clap::Args)]
pub(crate) struct SubjectsArgs {
    #[command(subcommand)]
    command: SubjectsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SubjectsCommand {
    /// Verify a saved subject export (DSAR) offline.
    VerifyExport(VerifyExportArgs),
}

#[derive(Debug, clap::Args)]
struct VerifyExportArgs {
    /// The export, as returned by `GET /v1/tenants/{tenant}/subjects/{subject}/export`.
    #[arg(long)]
    file: PathBuf,
    #[command(flatten)]
    keys: KeySource,
}

pub(crate) async fn run(args: SubjectsArgs) -> anyhow::Result<()> {
    let SubjectsCommand::VerifyExport(args) = args.command;
    let keys = load_keys(&args.keys).await?;
    let raw = std::fs::read(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    let export: wire::api::SubjectExport =
        serde_json::from_slice(&raw).context("the file is not a subject export")?;
    let payload = export
        .signed_payload()
        .context("encode the export for verification")?;
    let signature = audit::Signature::from_base64(&export.signature)
        .map_err(|_| anyhow::anyhow!("export rejected: the signature is not valid base64"))?;
    if !keys.verify_signature(&export.key_id, &export.region, &payload, &signature) {
        bail!(
            "export rejected: the signature does not verify with key {} of region {}",
            export.key_id,
            export.region
        );
    }
    // The subject is personal data: the summary names its token, never the value.
    println!(
        "export intact: tenant {}, subject token {}, {} records, generated {}, signed by {}{}",
        export.tenant,
        export.subject_token,
        export.records.len(),
        export.generated_at,
        export.key_id,
        if export.next_cursor.is_some() {
            " (more pages follow)"
        } else {
            ""
        }
    );
    Ok(())
}
