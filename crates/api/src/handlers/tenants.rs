//! Tenants (operator token): `POST /v1/tenants` creates one in this region, its home;
//! `GET /v1/tenants` lists this region's tenants (another region's list is that region's
//! to give: the router forwards `?home_region=` there); `GET /v1/tenants/{tenant}` shows
//! one, never its keys; `DELETE /v1/tenants/{tenant}` offboards it and
//! `GET /v1/tenants/{tenant}/offboarding` gives its offboarding certificate.

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use model::{NewTenant, NewTenantFields, RegionId};
use service::records::Paging;
use service::{Offboarding, ServiceError, Tenant};
use wire::api as body;

use super::{
    ApiResult, TenantPath, idempotency_key, page_limit, query_params, tenant_id, time_text,
};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::header_params as h;
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
    params(h::IdempotencyKey),
    request_body = body::CreateTenant,
    responses(
        (
            status = 201,
            description = "The tenant; `admin_key` is shown once (and to a retry with the \
                same `Idempotency-Key` within 24 hours).",
            body = body::TenantCreated
        ),
        (status = 409, response = p::Conflict),
        (status = 421, response = p::Misdirected),
        (status = 422, response = p::IdempotencyKeyReused),
    ),
)]
pub(crate) async fn create_tenant(
    ctx: Ctx,
    headers: HeaderMap,
    request: JsonBody<body::CreateTenant>,
) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let key = idempotency_key(&headers)?;
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
    let created = match key {
        Some(key) => {
            service
                .create_tenant_once(&operator, new, &ctx.context, &key)
                .await?
        }
        None => service.create_tenant(&operator, new, &ctx.context).await?,
    };
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
    Ok(Json(tenant_view(&tenant)).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    summary = "Offboard a tenant",
    description = "At once: the tenant answers 404 on every path from every region, every \
        data and index key version it has is destroyed (its wrapped keys erased, so every \
        ciphertext of the tenant is unreadable; every node of the home region drops its \
        cached keys within a second) and its audit chain ends with `tenant.delete`. A \
        `purge` job then removes its records, index tokens, files (every object version), \
        API keys, collections and directory entry, and signs the offboarding certificate \
        (`GET /v1/tenants/{tenant}/offboarding`). Idempotent: a second call answers `202` \
        with where the offboarding stands (`offboarding`, `offboarded`, `purge_failed`).",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 202, description = "Offboarded; the purge runs.", body = body::OffboardStatus),
    ),
)]
pub(crate) async fn offboard_tenant(
    ctx: Ctx,
    Path(TenantPath { tenant }): Path<TenantPath>,
) -> ApiResult {
    let id = tenant_id(&tenant)?;
    let operator = ctx.authorize_operator().await?;
    let offboarding = ctx
        .service()
        .offboard_tenant(&operator, &id, &ctx.context)
        .await?;
    let status = body::OffboardStatus {
        status: offboarding.status().to_owned(),
    };
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/offboarding",
    tag = "tenants",
    summary = "Get a tenant's offboarding certificate",
    description = "`200` with the offboarding certificate, signed by the home region's \
        audit key, once the purge is done (verify it offline with \
        `residency audit verify-certificate`); `202` with the status while the purge runs; \
        `404` for a tenant that was never offboarded here. Once the purge has removed the \
        tenant's directory entry only its home region can answer: ask that region.",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The signed certificate.", body = body::OffboardingCertificate),
        (status = 202, description = "The purge is not done yet.", body = body::OffboardStatus),
    ),
)]
pub(crate) async fn offboarding_certificate(
    ctx: Ctx,
    Path(TenantPath { tenant }): Path<TenantPath>,
) -> ApiResult {
    let id = tenant_id(&tenant)?;
    let operator = ctx.authorize_operator().await?;
    let offboarding = ctx.service().offboarding(&operator, &id).await?;
    Ok(match offboarding {
        Offboarding::Done(certificate) => Json(*certificate).into_response(),
        purging @ Offboarding::Purging(_) => {
            let status = body::OffboardStatus {
                status: purging.status().to_owned(),
            };
            (StatusCode::ACCEPTED, Json(status)).into_response()
        }
    })
}

/// The tenant as the API shows it, without keys.
fn tenant_view(tenant: &Tenant) -> body::TenantView {
    body::TenantView {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        home_region: tenant.policy.home().to_string(),
        allowed_regions: region_names(tenant.policy.allowed()),
        transit: tenant.policy.transit().as_str().to_owned(),
        analytics_export: tenant.analytics_export,
        created_at: time_text(tenant.created_at),
    }
}

/// `GET /v1/tenants` query parameters.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    home_region: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    summary = "List a region's tenants",
    description = "The active tenants homed in one region, ordered by id, a page at a time. \
        A region lists the tenants its own database holds: without `home_region`, the \
        region that answers; with it, the router of the region that receives the request \
        forwards it to that region, like any request for a tenant homed there (a region \
        that cannot be reached answers `503`). There is no list across regions: an \
        operator asks each region. Offboarded tenants are not listed.",
    security(("bearer" = [])),
    params(
        ("home_region" = Option<String>, Query, description = "The region whose tenants to list; default: the region that answers."),
        ("limit" = Option<u32>, Query, description = "Page size: 1 to the node's largest page (500 by default); default 50."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
    ),
    responses(
        (status = 200, description = "A page of the region's tenants.", body = body::TenantPage),
        (status = 400, response = p::BadRequest),
        (status = 421, response = p::Misdirected),
        (status = 422, response = p::Unprocessable),
    ),
)]
pub(crate) async fn list_tenants(ctx: Ctx, RawQuery(query): RawQuery) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let params: ListParams = query_params(query)?;
    if let Some(raw) = params.home_region.as_deref() {
        let region = RegionId::parse(raw)
            .ok()
            .filter(|region| service.knows_region(region))
            .ok_or_else(|| {
                ServiceError::invalid("home_region", "is not a region of the catalogue")
            })?;
        if region != *service.region() {
            // The router forwards a listing to the region it names; one that reaches
            // this node anyway (no route to that region here) is answered with its home.
            return Err(ServiceError::Misdirected { home: region }.into());
        }
    }
    let paging = Paging {
        limit: page_limit(params.limit.as_deref())?,
        cursor: params.cursor,
    };
    let page = service.list_tenants(&operator, paging).await?;
    Ok(Json(body::TenantPage {
        tenants: page.tenants.iter().map(tenant_view).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}
