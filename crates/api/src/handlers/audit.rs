//! The audit log (auditor key): `GET /v1/tenants/{tenant}/audit/events` pages through
//! a tenant's events, `GET /v1/tenants/{tenant}/audit/export` streams them with a signed
//! manifest; `GET /v1/audit/keys` (no auth) lists the keys that verify what is signed, and
//! `POST /v1/audit/keys/rotate` (operator token) replaces the region's signing key.

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
            description = "Keys verifying checkpoints, manifests and evidence, each with when it signed; the current key first.",
            body = body::AuditKeys
        ),
    ),
)]
pub(crate) async fn audit_keys(State(state): State<NodeState>) -> Response {
    Json(body::AuditKeys {
        keys: key_views(&state.service().audit().signing_keys()),
    })
    .into_response()
}

/// `POST /v1/audit/keys/rotate` (operator token): a new audit signing key for the region.
#[utoipa::path(
    post,
    path = "/v1/audit/keys/rotate",
    tag = "audit",
    summary = "Rotate the region's audit signing key",
    security(("bearer" = [])),
    responses(
        (
            status = 200,
            description = "The new key signs on every node of the region from now on; the previous one stays published with its validity.",
            body = body::AuditKeyRotated
        ),
    ),
)]
pub(crate) async fn rotate_audit_key(ctx: Ctx) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let previous = service.audit().signing_key();
    let keys = service.rotate_audit_key(&operator).await?;
    Ok(Json(body::AuditKeyRotated {
        key_id: keys.current().key_id().to_owned(),
        previous_key_id: previous.key_id().to_owned(),
        keys: key_views(&keys),
    })
    .into_response())
}

fn key_views(keys: &service::SigningKeys) -> Vec<body::AuditKeyView> {
    keys.published()
        .iter()
        .map(|key| body::AuditKeyView {
            key_id: key.public.key_id.clone(),
            region: key.public.region.clone(),
            algorithm: key.public.algorithm.clone(),
            public_key: key.public.public_key.clone(),
            valid_from: key.valid_from.map(super::time_text),
            valid_until: key.valid_until.map(super::time_text),
        })
        .collect()
}
