//! The audit log (auditor key): `GET /v1/tenants/{tenant}/audit/events` pages through
//! a tenant's events, `GET /v1/tenants/{tenant}/audit/export` streams them with a signed
//! manifest; `GET /v1/audit/keys` (no auth) lists the keys that verify what is signed.

use std::time::SystemTime;

use ::audit::Action;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use model::Access;
use service::ServiceError;
use wire::api as body;

use super::{ApiResult, TenantPath};
use crate::NodeState;
use crate::extract::Ctx;
use crate::openapi::problems as p;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQueryParams {
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_time(field: &str, raw: Option<&str>) -> Result<Option<SystemTime>, ServiceError> {
    raw.map(|raw| {
        ::audit::time::parse(raw)
            .map_err(|_| ServiceError::invalid(field, "must be an RFC 3339 timestamp"))
    })
    .transpose()
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/audit/events",
    tag = "audit",
    summary = "List audit events",
    security(("bearer" = [])),
    params(
        TenantPath,
        ("from" = Option<String>, Query, description = "RFC 3339: events at or after."),
        ("to" = Option<String>, Query, description = "RFC 3339: events before."),
        ("action" = Option<String>, Query, description = "An action, e.g. `record.create`."),
        ("limit" = Option<u32>, Query, description = "Page size."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
    ),
    responses(
        (
            status = 200,
            description = "A page of the tenant's audit events.",
            body = body::AuditEventPage
        ),
        (status = 400, response = p::BadRequest),
        (status = 422, response = p::Unprocessable),
    ),
)]
pub(crate) async fn audit_events(
    ctx: Ctx,
    Path(path): Path<TenantPath>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let caller = ctx
        .authorize(path.on("audit/events"), Access::Audit, Action::AuditRead)
        .await?;
    let params: AuditQueryParams = super::query_params(query)?;
    let action = params
        .action
        .as_deref()
        .map(|raw| {
            Action::parse(raw).map_err(|_| ServiceError::invalid("action", "is not a known action"))
        })
        .transpose()?;
    let limit = super::page_limit(params.limit.as_deref())?;
    let query = service::compliance::EventQuery {
        from: parse_time("from", params.from.as_deref())?,
        to: parse_time("to", params.to.as_deref())?,
        action,
        limit,
        cursor: params.cursor,
    };
    let page = ctx.service().audit_events(&caller, query).await?;
    Ok(Json(serde_json::json!({
        "events": page.events,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/audit/export",
    tag = "audit",
    summary = "Export audit events and a signed manifest",
    security(("bearer" = [])),
    params(
        TenantPath,
        ("from" = Option<String>, Query, description = "RFC 3339: events at or after."),
        ("to" = Option<String>, Query, description = "RFC 3339: events before."),
    ),
    responses(
        (
            status = 200,
            description = "One `AuditEventView` a line, then `{\"manifest\": {...}}`, signed.",
            body = String,
            content_type = "application/x-ndjson"
        ),
        (status = 422, response = p::Unprocessable),
    ),
)]
pub(crate) async fn audit_export(
    ctx: Ctx,
    Path(path): Path<TenantPath>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let caller = ctx
        .authorize(path.on("audit/export"), Access::Audit, Action::AuditExport)
        .await?;
    let params: AuditQueryParams = super::query_params(query)?;
    if params.action.is_some() || params.limit.is_some() || params.cursor.is_some() {
        return Err(ServiceError::invalid("query", "an export takes only `from` and `to`").into());
    }
    let from = parse_time("from", params.from.as_deref())?;
    let to = parse_time("to", params.to.as_deref())?;
    let stream = ctx.service().audit_export(&caller, from, to).await?;
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// `GET /v1/audit/keys`: the region's current and retired audit public keys (no auth).
#[utoipa::path(
    get,
    path = "/v1/audit/keys",
    tag = "audit",
    responses(
        (
            status = 200,
            description = "Keys verifying checkpoints, manifests and evidence.",
            body = body::AuditKeys
        ),
    ),
)]
pub(crate) async fn audit_keys(State(state): State<NodeState>) -> Response {
    Json(::audit::KeyList {
        keys: state.service().audit().public_keys(),
    })
    .into_response()
}
