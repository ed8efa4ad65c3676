//! `residency keys rotate|status <tenant>` (the tenant's admin key):
//! `POST /v1/tenants/{tenant}/keys/rotate`, `GET /v1/tenants/{tenant}/keys`.

use http::{Method, StatusCode};
use wire::api::{KeyRotationStarted, KeyStatus, ReencryptionView};

use super::output::{fields, table};
use super::{TenantKeyFlags, print};

#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Rotate the tenant's data key: the new version seals every new write at once, and a
    /// job re-encrypts what is stored under it.
    Rotate(TenantArgs),
    /// The tenant's data key versions and how far the re-encryption is.
    Status(TenantArgs),
}

#[derive(Debug, clap::Args)]
struct TenantArgs {
    #[command(flatten)]
    tenant_key: TenantKeyFlags,
    /// The tenant id.
    tenant: String,
}

pub(crate) async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Rotate(args) => {
            let api = args.tenant_key.api()?;
            let url = api.url(&["v1", "tenants", &args.tenant, "keys", "rotate"], &[])?;
            let answer = api
                .call::<KeyRotationStarted>(Method::POST, url, None::<&()>, StatusCode::ACCEPTED)
                .await?;
            print(args.tenant_key.connection.json, &answer, |started| {
                fields(&[
                    ("key version", started.key_version.to_string()),
                    ("re-encryption", progress(&started.reencryption)),
                ])
            })
        }
        KeysCommand::Status(args) => {
            let api = args.tenant_key.api()?;
            let url = api.url(&["v1", "tenants", &args.tenant, "keys"], &[])?;
            let answer = api.get::<KeyStatus>(url, StatusCode::OK).await?;
            print(args.tenant_key.connection.json, &answer, status_text)
        }
    }
}

fn progress(reencryption: &ReencryptionView) -> String {
    format!(
        "{} ({}/{})",
        reencryption.status, reencryption.done, reencryption.total
    )
}

fn status_text(status: &KeyStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .versions
        .iter()
        .map(|version| {
            vec![
                version.version.to_string(),
                version.state.clone(),
                version.created_at.clone(),
            ]
        })
        .collect();
    let mut text = table(&["VERSION", "STATE", "CREATED"], &rows);
    let reencryption = status
        .reencryption
        .as_ref()
        .map_or_else(|| "none yet".to_owned(), progress);
    text.push_str(&format!("re-encryption: {reencryption}\n"));
    text
}
