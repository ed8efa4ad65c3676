//! `residency keys …`. With the tenant's admin key: `rotate|status <tenant>`
//! (`POST /v1/tenants/{tenant}/keys/rotate`, `GET /v1/tenants/{tenant}/keys`),
//! `destroy --tenant T --version N` (`DELETE /v1/tenants/{tenant}/keys/{version}`),
//! `policy --tenant T [--max-seals N] [--max-age S]` (`GET`/`PUT
//! /v1/tenants/{tenant}/keys/policy`). With the operator token: `rewrap`
//! (`POST /v1/keys/rewrap`) and `rotate-audit` (`POST /v1/audit/keys/rotate`).

use http::{Method, StatusCode};
use wire::api::{
    AuditKeyRotated, KeyPolicyBody, KeyPolicyView, KeyRotationStarted, KeyStatus, ReencryptionView,
};
use wire::jobs::JobView;

use super::jobs::job_fields;
use super::output::{fields, or_dash, table};
use super::{OperatorFlags, TenantKeyFlags, print};

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
    /// Destroy a retired data key version that no stored value or file uses any more
    /// (after its re-encryption is done): its wrapped key is erased for ever. Prints the
    /// versions afterwards.
    Destroy(DestroyArgs),
    /// Show the tenant's bounds of automatic key rotation, or set them with --max-seals
    /// and --max-age (a flag not given keeps its bound; `default` takes the region's).
    Policy(PolicyArgs),
    /// Rewrap every stored data key of the region under the catalogue's current KMS key
    /// (after a KMS key change), as a job (operator token). Prints the job; follow it
    /// with `residency jobs get`.
    Rewrap(RegionArgs),
    /// Rotate the region's audit signing key (operator token): the new key signs from
    /// now on, the old one stays published and verifying what it signed.
    RotateAudit(RegionArgs),
}

#[derive(Debug, clap::Args)]
struct DestroyArgs {
    #[command(flatten)]
    tenant_key: TenantKeyFlags,
    /// The tenant id.
    #[arg(long)]
    tenant: String,
    /// The data key version to destroy (`residency keys status` lists them).
    #[arg(long)]
    version: u32,
}

#[derive(Debug, clap::Args)]
struct PolicyArgs {
    #[command(flatten)]
    tenant_key: TenantKeyFlags,
    /// The tenant id.
    #[arg(long)]
    tenant: String,
    /// The most values one data key version may seal, or `default`.
    #[arg(long, value_name = "N|default", value_parser = parse_bound)]
    max_seals: Option<Bound>,
    /// The oldest a data key version may get, in seconds, or `default`.
    #[arg(long, value_name = "SECONDS|default", value_parser = parse_bound)]
    max_age: Option<Bound>,
}

/// A bound given on the command line: a number, or the region's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Default,
    Value(u64),
}

fn parse_bound(text: &str) -> Result<Bound, String> {
    if text == "default" {
        return Ok(Bound::Default);
    }
    text.parse()
        .map(Bound::Value)
        .map_err(|_| "a positive whole number, or `default`".to_owned())
}

/// What a bound becomes: `keep` when not given, `None` for the region's default.
fn merged(given: Option<Bound>, keep: Option<u64>) -> Option<u64> {
    match given {
        None => keep,
        Some(Bound::Default) => None,
        Some(Bound::Value(value)) => Some(value),
    }
}

#[derive(Debug, clap::Args)]
struct RegionArgs {
    #[command(flatten)]
    operator: OperatorFlags,
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
        KeysCommand::Destroy(args) => {
            let api = args.tenant_key.api()?;
            let version = args.version.to_string();
            let url = api.url(&["v1", "tenants", &args.tenant, "keys", &version], &[])?;
            api.call_without_answer(Method::DELETE, url, StatusCode::NO_CONTENT)
                .await?;
            let url = api.url(&["v1", "tenants", &args.tenant, "keys"], &[])?;
            let answer = api.get::<KeyStatus>(url, StatusCode::OK).await?;
            print(args.tenant_key.connection.json, &answer, |status| {
                format!("version {version} destroyed\n{}", status_text(status))
            })
        }
        KeysCommand::Policy(args) => {
            let api = args.tenant_key.api()?;
            let url = api.url(&["v1", "tenants", &args.tenant, "keys", "policy"], &[])?;
            let mut answer = api
                .get::<KeyPolicyView>(url.clone(), StatusCode::OK)
                .await?;
            if args.max_seals.is_some() || args.max_age.is_some() {
                let body = KeyPolicyBody {
                    max_seals: merged(args.max_seals, answer.value.max_seals),
                    max_age_seconds: merged(args.max_age, answer.value.max_age_seconds),
                };
                answer = api
                    .call::<KeyPolicyView>(Method::PUT, url, Some(&body), StatusCode::OK)
                    .await?;
            }
            print(args.tenant_key.connection.json, &answer, policy_text)
        }
        KeysCommand::Rewrap(args) => {
            let api = args.operator.api()?;
            let url = api.url(&["v1", "keys", "rewrap"], &[])?;
            let answer = api
                .call::<JobView>(Method::POST, url, None::<&()>, StatusCode::ACCEPTED)
                .await?;
            print(args.operator.connection.json, &answer, job_fields)
        }
        KeysCommand::RotateAudit(args) => {
            let api = args.operator.api()?;
            let url = api.url(&["v1", "audit", "keys", "rotate"], &[])?;
            let answer = api
                .call::<AuditKeyRotated>(Method::POST, url, None::<&()>, StatusCode::OK)
                .await?;
            print(args.operator.connection.json, &answer, audit_keys_text)
        }
    }
}

fn policy_text(policy: &KeyPolicyView) -> String {
    let bound = |value: Option<u64>, default: u64, unit: &str| match value {
        Some(value) => format!("{value}{unit}"),
        None => format!("region default ({default}{unit})"),
    };
    fields(&[
        (
            "max seals",
            bound(policy.max_seals, policy.default_max_seals, ""),
        ),
        (
            "max age",
            bound(policy.max_age_seconds, policy.default_max_age_seconds, " s"),
        ),
    ])
}

fn audit_keys_text(rotated: &AuditKeyRotated) -> String {
    let mut text = fields(&[
        ("signing key", rotated.key_id.clone()),
        ("previous key", rotated.previous_key_id.clone()),
    ]);
    let rows: Vec<Vec<String>> = rotated
        .keys
        .iter()
        .map(|key| {
            vec![
                key.key_id.clone(),
                key.region.clone(),
                or_dash(key.valid_from.as_deref()),
                or_dash(key.valid_until.as_deref()),
            ]
        })
        .collect();
    text.push_str(&table(
        &["KEY ID", "REGION", "VALID FROM", "VALID UNTIL"],
        &rows,
    ));
    text
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
