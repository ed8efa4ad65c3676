//! Tenants (operator token): `POST /v1/tenants` creates one in this region, its home;
//! `GET /v1/tenants/{tenant}` shows one, never its keys.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use model::{NewTenant, NewTenantFields, RegionId};
use service::ServiceError;
use wire::api as body;

use super::{ApiResult, TenantPath, tenant_id, time_text};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::problems as p;

/// Region ids as the API shows them.
fn region_names(regions: &[RegionId]) -> Vec<String> {
    regions.iter().map(ToString::to_string).collect()
}

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    summary = "Create a tenant",
    security(("bearer" = [])),
    request_body = body::CreateTenant,
    responses(
        (
            status = 201,
            description = "The tenant; `admin_key` is shown once.",
            body = body::TenantCreated
        ),
        (status = 409, response = p::Conflict),
        (status = 421, response = p::Misdirected),
    ),
)]
pub(crate) async fn create_tenant(ctx: Ctx, request: JsonBody<body::CreateTenant>) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let request = request.read(&operator).await?;
    let fields = NewTenantFields {
        name: &request.name,
        home_region: &request.home_region,
        allowed_regions: request.allowed_regions.as_deref(),
        transit: request.transit.as_deref(),
        analytics_export: request.analytics_export.unwrap_or(false),
    };
    let new = NewTenant::parse(fields, |region| service.knows_region(region))
        .map_err(ServiceError::invalid_tenant)?;
    let created = service.create_tenant(&operator, new, &ctx.context).await?;
    let tenant = &created.tenant;
    let view = body::TenantCreated {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        home_region: tenant.policy.home().to_string(),
        allowed_regions: region_names(tenant.policy.allowed()),
        transit: tenant.policy.transit().as_str().to_owned(),
        analytics_export: tenant.analytics_export,
        admin_key: created.admin_key.token.to_string(),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    summary = "Get a tenant",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant (no keys).", body = body::TenantView),
    ),
)]
pub(crate) async fn get_tenant(
    ctx: Ctx,
    Path(TenantPath { tenant }): Path<TenantPath>,
) -> ApiResult {
    let id = tenant_id(&tenant)?;
    let operator = ctx.authorize_operator().await?;
    let tenant = ctx.service().get_tenant(&operator, &id).await?;
    Ok(Json(body::TenantView {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        home_region: tenant.policy.home().to_string(),
        allowed_regions: region_names(tenant.policy.allowed()),
        transit: tenant.policy.transit().as_str().to_owned(),
        analytics_export: tenant.analytics_export,
        created_at: time_text(tenant.created_at),
    })
    .into_response())
}
