//! `residency tenants list|get|create|offboard` (operator token): `GET /v1/tenants`,
//! `GET /v1/tenants/{id}`, `POST /v1/tenants`, `DELETE /v1/tenants/{id}`.

use anyhow::bail;
use http::{Method, StatusCode};
use wire::api::{CreateTenant, OffboardStatus, TenantCreated, TenantPage, TenantView};

use super::output::{fields, list, next_page, table};
use super::{OperatorFlags, print};

/// What `get` and `create` both show of a tenant: the fields `TenantView` and
/// `TenantCreated` share.
macro_rules! shown_fields {
    ($tenant:expr) => {{
        let tenant = $tenant;
        vec![
            ("id", tenant.id.clone()),
            ("name", tenant.name.clone()),
            ("home region", tenant.home_region.clone()),
            ("allowed regions", list(&tenant.allowed_regions)),
            ("transit", tenant.transit.clone()),
            ("analytics export", tenant.analytics_export.to_string()),
        ]
    }};
}

#[derive(Debug, clap::Args)]
pub(crate) struct TenantsArgs {
    #[command(subcommand)]
    command: TenantsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TenantsCommand {
    /// List the active tenants homed in one region, by id, a page at a time.
    List(ListArgs),
    /// Show one tenant (never its keys).
    Get(TenantArgs),
    /// Create a tenant homed in --home-region; prints its admin key, shown only once.
    Create(CreateArgs),
    /// Offboard a tenant: its data keys are crypto-shredded at once (nothing of its data
    /// can be read again), then its data is purged. Irreversible.
    Offboard(OffboardArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    operator: OperatorFlags,
    /// The region whose tenants to list (the node forwards the request there). Default:
    /// the region of the endpoint.
    #[arg(long, value_name = "REGION")]
    home_region: Option<String>,
    /// Tenants per page (the node's default when not given).
    #[arg(long)]
    limit: Option<u32>,
    /// The previous page's cursor.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TenantArgs {
    #[command(flatten)]
    operator: OperatorFlags,
    /// The tenant id.
    tenant: String,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    #[command(flatten)]
    operator: OperatorFlags,
    /// The tenant's name.
    #[arg(long)]
    name: String,
    /// The region the tenant's data lives in.
    #[arg(long, value_name = "REGION")]
    home_region: String,
    /// A region the tenant may be relocated to (repeat for more); the home region is
    /// always allowed. Default: the home region only.
    #[arg(long = "allowed-region", value_name = "REGION")]
    allowed_regions: Vec<String>,
    /// How other regions pass the tenant's requests home: `proxy` (default) or
    /// `redirect` (307 to the home region's endpoint).
    #[arg(long, value_name = "MODE")]
    transit: Option<String>,
    /// Include the tenant in the anonymized analytics export.
    #[arg(long)]
    analytics_export: bool,
}

#[derive(Debug, clap::Args)]
struct OffboardArgs {
    #[command(flatten)]
    operator: OperatorFlags,
    /// The tenant id.
    tenant: String,
    /// Confirms the offboarding: without it nothing is sent.
    #[arg(long)]
    yes: bool,
}

pub(crate) async fn run(args: TenantsArgs) -> anyhow::Result<()> {
    match args.command {
        TenantsCommand::List(args) => list_tenants(args).await,
        TenantsCommand::Get(args) => get_tenant(args).await,
        TenantsCommand::Create(args) => create_tenant(args).await,
        TenantsCommand::Offboard(args) => offboard_tenant(args).await,
    }
}

async fn list_tenants(args: ListArgs) -> anyhow::Result<()> {
    let api = args.operator.api()?;
    let url = api.url(
        &["v1", "tenants"],
        &[
            ("home_region", args.home_region),
            ("limit", args.limit.map(|limit| limit.to_string())),
            ("cursor", args.cursor),
        ],
    )?;
    let answer = api.get::<TenantPage>(url, StatusCode::OK).await?;
    print(args.operator.connection.json, &answer, tenant_table)
}

async fn get_tenant(args: TenantArgs) -> anyhow::Result<()> {
    let api = args.operator.api()?;
    let url = api.url(&["v1", "tenants", &args.tenant], &[])?;
    let answer = api.get::<TenantView>(url, StatusCode::OK).await?;
    print(args.operator.connection.json, &answer, |tenant| {
        let mut shown = shown_fields!(tenant);
        shown.push(("created at", tenant.created_at.clone()));
        fields(&shown)
    })
}

async fn create_tenant(args: CreateArgs) -> anyhow::Result<()> {
    let api = args.operator.api()?;
    let request = CreateTenant {
        name: args.name,
        home_region: args.home_region.clone(),
        // The API wants the home region among the allowed ones; the flag lists the others.
        allowed_regions: (!args.allowed_regions.is_empty()).then(|| {
            let mut allowed = vec![args.home_region];
            for region in args.allowed_regions {
                if !allowed.contains(&region) {
                    allowed.push(region);
                }
            }
            allowed
        }),
        transit: args.transit,
        analytics_export: args.analytics_export.then_some(true),
    };
    let url = api.url(&["v1", "tenants"], &[])?;
    let answer = api
        .call::<TenantCreated>(Method::POST, url, Some(&request), StatusCode::CREATED)
        .await?;
    print(args.operator.connection.json, &answer, |tenant| {
        let mut shown = shown_fields!(tenant);
        shown.push(("admin key", tenant.admin_key.clone()));
        let mut text = fields(&shown);
        text.push_str("The admin key is shown only this once: store it now.\n");
        text
    })
}

async fn offboard_tenant(args: OffboardArgs) -> anyhow::Result<()> {
    if !args.yes {
        bail!(
            "offboarding destroys the tenant's keys and data and cannot be undone: pass --yes to confirm"
        );
    }
    let api = args.operator.api()?;
    let url = api.url(&["v1", "tenants", &args.tenant], &[])?;
    let answer = api
        .call::<OffboardStatus>(Method::DELETE, url, None::<&()>, StatusCode::ACCEPTED)
        .await?;
    print(args.operator.connection.json, &answer, |status| {
        format!("tenant {}: {}\n", args.tenant, status.status)
    })
}

fn tenant_table(page: &TenantPage) -> String {
    let rows: Vec<Vec<String>> = page
        .tenants
        .iter()
        .map(|tenant| {
            vec![
                tenant.id.clone(),
                tenant.name.clone(),
                tenant.home_region.clone(),
                list(&tenant.allowed_regions),
                tenant.transit.clone(),
                tenant.analytics_export.to_string(),
                tenant.created_at.clone(),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ID",
            "NAME",
            "HOME",
            "ALLOWED",
            "TRANSIT",
            "ANALYTICS",
            "CREATED",
        ],
        &rows,
    );
    text.push_str(&next_page(page.next_cursor.as_deref()));
    text
}
