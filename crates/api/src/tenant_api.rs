//! The tenant-facing `/v1` API of API.md: tenants, API keys, collections, records, files,
//! audit and residency evidence. Handlers are thin: parse, authorize, call one service
//! function, map the result (status, `ETag`, `X-Consistency-Token`, `X-Served-By`).

use std::time::SystemTime;

use audit::Action;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt as _, TryStreamExt as _};
use model::{Access, TenantId};
use service::records::{Filter, Paging, Record, Served};
use service::{Attempt, Caller, ServiceError, Written};
use store::{ReadConsistency, ServedBy};
use wire::api as body;

use crate::NodeState;
use crate::extract::{ApiError, Ctx, JsonBody, parse_json};
use crate::openapi::problems as p;

type ApiResult = Result<Response, ApiError>;

fn tenant_id(ctx: &Ctx, raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ctx.error(ServiceError::NotFound { what: "tenant" }))
}

/// Authenticates and authorizes a tenant-scoped call (denials are audited).
async fn authorize(
    state: &NodeState,
    ctx: &Ctx,
    tenant: &str,
    access: Access,
    action: Action,
    resource: &str,
) -> Result<Caller, ApiError> {
    let tenant = tenant_id(ctx, tenant)?;
    state
        .service()
        .authorize(
            ctx.bearer(),
            &tenant,
            access,
            Attempt { action, resource },
            &ctx.context,
        )
        .await
        .map_err(|err| ctx.error(err))
}

fn consistency(
    state: &NodeState,
    ctx: &Ctx,
    headers: &HeaderMap,
) -> Result<ReadConsistency, ApiError> {
    let token = headers
        .get(wire::headers::CONSISTENCY_TOKEN)
        .map(|value| value.to_str().unwrap_or("\u{0}"));
    state
        .service()
        .consistency(token)
        .map_err(|err| ctx.error(err))
}

fn with_written(mut response: Response, written: &Written) -> Response {
    if let Ok(value) = HeaderValue::from_str(&written.token.encode()) {
        response
            .headers_mut()
            .insert(wire::headers::CONSISTENCY_TOKEN, value);
    }
    response
}

fn with_served_by(mut response: Response, served_by: ServedBy) -> Response {
    response.headers_mut().insert(
        wire::headers::SERVED_BY,
        HeaderValue::from_static(served_by.as_str()),
    );
    response
}

fn with_etag(mut response: Response, version: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `If-Match: "<version>"` (or `*`, which matches any version).
fn if_match(ctx: &Ctx, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ctx.error(ServiceError::BadRequest(
            "If-Match must be an ETag like \"3\"".to_owned(),
        ))
    };
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|version| version.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(bad)
}

fn time_text(time: SystemTime) -> String {
    audit::time::format(time)
}

fn record_view(record: Record, with_updated: bool) -> body::RecordView {
    body::RecordView {
        id: record.id,
        version: record.version,
        data: record.data,
        created_at: time_text(record.created_at),
        updated_at: with_updated.then(|| time_text(record.updated_at)),
    }
}

// ---- tenants (operator) ----------------------------------------------------------------

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
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 409, response = p::Conflict),
        (status = 413, response = p::PayloadTooLarge),
        (status = 421, response = p::Misdirected),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn create_tenant(
    State(state): State<NodeState>,
    ctx: Ctx,
    JsonBody(request): JsonBody<body::CreateTenant>,
) -> ApiResult {
    let created = state
        .service()
        .create_tenant(
            ctx.bearer(),
            service::NewTenant {
                name: request.name,
                home_region: request.home_region,
                allowed_regions: request.allowed_regions,
                transit: request.transit,
                analytics_export: request.analytics_export.unwrap_or(false),
            },
            &ctx.context,
        )
        .await
        .map_err(|err| ctx.error(err))?;
    let tenant = &created.tenant;
    let view = body::TenantCreated {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        home_region: tenant.policy.home().to_string(),
        allowed_regions: tenant
            .policy
            .allowed()
            .iter()
            .map(ToString::to_string)
            .collect(),
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
    params(
        ("tenant" = String, Path, description = "The tenant id."),
    ),
    responses(
        (status = 200, description = "The tenant (no keys).", body = body::TenantView),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn get_tenant(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> ApiResult {
    let id = tenant_id(&ctx, &tenant)?;
    let tenant = state
        .service()
        .get_tenant(ctx.bearer(), &id)
        .await
        .map_err(|err| ctx.error(err))?;
    Ok(Json(body::TenantView {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        home_region: tenant.policy.home().to_string(),
        allowed_regions: tenant
            .policy
            .allowed()
            .iter()
            .map(ToString::to_string)
            .collect(),
        transit: tenant.policy.transit().as_str().to_owned(),
        analytics_export: tenant.analytics_export,
        created_at: time_text(tenant.created_at),
    })
    .into_response())
}

// ---- API keys and collections (admin) ----------------------------------------------

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/api-keys",
    tag = "administration",
    summary = "Create an API key",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
    ),
    request_body = body::CreateApiKey,
    responses(
        (status = 201, description = "The key; `key` is shown once.", body = body::ApiKeyCreated),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 409, response = p::Conflict),
        (status = 413, response = p::PayloadTooLarge),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn create_api_key(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    JsonBody(request): JsonBody<body::CreateApiKey>,
) -> ApiResult {
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Administer,
        Action::ApiKeyCreate,
        "apikeys",
    )
    .await?;
    let created = state
        .service()
        .create_api_key(&caller, &request.name, &request.role)
        .await
        .map_err(|err| ctx.error(err))?;
    let view = body::ApiKeyCreated {
        id: created.key.key_id.clone(),
        name: created.name,
        role: created.role.as_str().to_owned(),
        key: created.key.token.to_string(),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/api-keys/{id}",
    tag = "administration",
    summary = "Revoke an API key",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("id" = String, Path, description = "The API key id."),
    ),
    responses(
        (status = 204, description = "The key is revoked."),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn delete_api_key(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path((tenant, key_id)): Path<(String, String)>,
) -> ApiResult {
    let resource = format!("apikeys/{key_id}");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Administer,
        Action::ApiKeyDelete,
        &resource,
    )
    .await?;
    state
        .service()
        .revoke_api_key(&caller, &key_id)
        .await
        .map_err(|err| ctx.error(err))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/collections/{collection}",
    tag = "administration",
    summary = "Create or replace a collection's schema",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
    ),
    request_body = body::SchemaDoc,
    responses(
        (
            status = 200,
            description = "The schema replaced the previous one.",
            body = body::SchemaDoc
        ),
        (
            status = 201,
            description = "The collection was created with this schema.",
            body = body::SchemaDoc
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 409, response = p::Conflict),
        (status = 413, response = p::PayloadTooLarge),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn put_collection(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path((tenant, collection)): Path<(String, String)>,
    JsonBody(schema): JsonBody<body::SchemaDoc>,
) -> ApiResult {
    let resource = format!("collections/{collection}");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Administer,
        Action::CollectionPut,
        &resource,
    )
    .await?;
    let schema = schema
        .into_model()
        .map_err(|err| ctx.error(ServiceError::invalid(err.field, err.reason)))?;
    let (collection, created) = state
        .service()
        .put_collection(&caller, &collection, schema)
        .await
        .map_err(|err| ctx.error(err))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(body::SchemaDoc::from_model(&collection.schema)),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/collections/{collection}",
    tag = "administration",
    summary = "Get a collection's schema",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
    ),
    responses(
        (status = 200, description = "The collection's schema.", body = body::SchemaDoc),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn get_collection(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path((tenant, collection)): Path<(String, String)>,
) -> ApiResult {
    let resource = format!("collections/{collection}");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Administer,
        Action::CollectionPut,
        &resource,
    )
    .await?;
    let collection = state
        .service()
        .collection(&caller, &collection)
        .await
        .map_err(|err| ctx.error(err))?;
    Ok(Json(body::SchemaDoc::from_model(&collection.schema)).into_response())
}

// ---- records -----------------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/collections/{collection}/records",
    tag = "records",
    summary = "Create a record",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
    ),
    request_body = body::RecordBody,
    responses(
        (
            status = 201,
            description = "The record, at version 1.",
            body = body::RecordView,
            headers(
                ("ETag" = String, description = "`\"<version>\"` of the record."),
                ("X-Consistency-Token" = String, description = "Read-your-writes token."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 409, response = p::Conflict),
        (status = 413, response = p::PayloadTooLarge),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn create_record(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path((tenant, collection)): Path<(String, String)>,
    JsonBody(request): JsonBody<body::RecordBody>,
) -> ApiResult {
    let resource = format!("collections/{collection}/records");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::WriteData,
        Action::RecordCreate,
        &resource,
    )
    .await?;
    let (record, written) = state
        .service()
        .create_record(&caller, &collection, request.data)
        .await
        .map_err(|err| ctx.error(err))?;
    let version = record.version;
    let response = (StatusCode::CREATED, Json(record_view(record, false))).into_response();
    Ok(with_etag(with_written(response, &written), version))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
    tag = "records",
    summary = "Read a record",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        ("id" = String, Path, description = "The record id."),
        (
            "X-Consistency-Token" = Option<String>, Header,
            description = "A token from a write: the read sees that write or a later one."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The record.",
            body = body::RecordView,
            headers(
                ("ETag" = String, description = "`\"<version>\"` of the record."),
                ("X-Served-By" = String, description = "`primary` or `replica`."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn get_record(
    State(state): State<NodeState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((tenant, collection, id)): Path<(String, String, String)>,
) -> ApiResult {
    let resource = format!("collections/{collection}/records/{id}");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::ReadData,
        Action::RecordRead,
        &resource,
    )
    .await?;
    let consistency = consistency(&state, &ctx, &headers)?;
    let Served { value, served_by } = state
        .service()
        .get_record(&caller, &collection, &id, consistency)
        .await
        .map_err(|err| ctx.error(err))?;
    let version = value.version;
    let response = Json(record_view(value, true)).into_response();
    Ok(with_etag(with_served_by(response, served_by), version))
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
    tag = "records",
    summary = "Replace a record's data",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        ("id" = String, Path, description = "The record id."),
        (
            "If-Match" = Option<String>, Header,
            description = "`\"<version>\"` or `*`: 412 unless the record is at that version."
        ),
    ),
    request_body = body::RecordBody,
    responses(
        (
            status = 200,
            description = "The record at its new version.",
            body = body::RecordView,
            headers(
                ("ETag" = String, description = "`\"<version>\"` of the record."),
                ("X-Consistency-Token" = String, description = "Read-your-writes token."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 412, response = p::PreconditionFailed),
        (status = 413, response = p::PayloadTooLarge),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn update_record(
    State(state): State<NodeState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((tenant, collection, id)): Path<(String, String, String)>,
    JsonBody(request): JsonBody<body::RecordBody>,
) -> ApiResult {
    let resource = format!("collections/{collection}/records/{id}");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::WriteData,
        Action::RecordUpdate,
        &resource,
    )
    .await?;
    let expected = if_match(&ctx, &headers)?;
    let (record, written) = state
        .service()
        .update_record(&caller, &collection, &id, request.data, expected)
        .await
        .map_err(|err| ctx.error(err))?;
    let version = record.version;
    let response = Json(record_view(record, true)).into_response();
    Ok(with_etag(with_written(response, &written), version))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
    tag = "records",
    summary = "Delete a record",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        ("id" = String, Path, description = "The record id."),
        (
            "If-Match" = Option<String>, Header,
            description = "`\"<version>\"` or `*`: 412 unless the record is at that version."
        ),
    ),
    responses(
        (
            status = 204,
            description = "The record and its files are deleted.",
            headers(
                ("X-Consistency-Token" = String, description = "Read-your-writes token."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 412, response = p::PreconditionFailed),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn delete_record(
    State(state): State<NodeState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((tenant, collection, id)): Path<(String, String, String)>,
) -> ApiResult {
    let resource = format!("collections/{collection}/records/{id}");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::WriteData,
        Action::RecordDelete,
        &resource,
    )
    .await?;
    let expected = if_match(&ctx, &headers)?;
    let written = state
        .service()
        .delete_record(&caller, &collection, &id, expected)
        .await
        .map_err(|err| ctx.error(err))?;
    Ok(with_written(
        StatusCode::NO_CONTENT.into_response(),
        &written,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/collections/{collection}/records",
    tag = "records",
    summary = "Search records by one field",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        (
            "filter" = Option<std::collections::BTreeMap<String, String>>, Query,
            style = Form, explode,
            description = "One `field=value`: exact match on a searchable identifier or a public \
                field."
        ),
        ("limit" = Option<u32>, Query, description = "Page size."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
        (
            "X-Consistency-Token" = Option<String>, Header,
            description = "A token from a write: the read sees that write or a later one."
        ),
    ),
    responses(
        (
            status = 200,
            description = "A page of matching records.",
            body = body::RecordPage,
            headers(
                ("X-Served-By" = String, description = "`primary` or `replica`."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn search_records(
    State(state): State<NodeState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((tenant, collection)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let resource = format!("collections/{collection}/records");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::ReadData,
        Action::RecordSearch,
        &resource,
    )
    .await?;
    let consistency = consistency(&state, &ctx, &headers)?;
    let mut paging = Paging::default();
    let mut filter = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => {
                paging.limit = Some(value.parse().map_err(|_| {
                    ctx.error(ServiceError::invalid("limit", "must be a positive integer"))
                })?);
            }
            "cursor" => paging.cursor = Some(value.into_owned()),
            field => {
                if filter.is_some() {
                    return Err(ctx.error(ServiceError::invalid(
                        field,
                        "only one field may be searched at a time",
                    )));
                }
                filter = Some(Filter {
                    field: field.to_owned(),
                    value: value.into_owned(),
                });
            }
        }
    }
    let Served { value, served_by } = state
        .service()
        .search_records(&caller, &collection, filter, paging, consistency)
        .await
        .map_err(|err| ctx.error(err))?;
    let page = body::RecordPage {
        records: value
            .records
            .into_iter()
            .map(|record| record_view(record, true))
            .collect(),
        next_cursor: value.next_cursor,
    };
    Ok(with_served_by(Json(page).into_response(), served_by))
}

// ---- files -------------------------------------------------------------------------

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    tag = "files",
    summary = "Store a file on a record",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        ("id" = String, Path, description = "The record id."),
        ("name" = String, Path, description = "The file name."),
    ),
    request_body(
        description = "The raw bytes, of any `Content-Type` (kept, and returned on `GET`).",
        content(("application/octet-stream")),
    ),
    responses(
        (
            status = 201,
            description = "The file is stored, encrypted.",
            body = body::FileStored,
            headers(
                ("X-Consistency-Token" = String, description = "Read-your-writes token."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 409, response = p::Conflict),
        (status = 413, response = p::PayloadTooLarge),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn put_file(
    State(state): State<NodeState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((tenant, collection, id, name)): Path<(String, String, String, String)>,
    request_body: Body,
) -> ApiResult {
    let resource = format!("collections/{collection}/records/{id}/files");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::WriteData,
        Action::FilePut,
        &resource,
    )
    .await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let stream = request_body
        .into_data_stream()
        .map_err(|err| envelope::objects::ObjectStoreError::Body(err.to_string()));
    let (stored, written) = state
        .service()
        .put_file(
            &caller,
            &collection,
            &id,
            &name,
            content_type,
            Box::pin(stream),
        )
        .await
        .map_err(|err| ctx.error(err))?;
    let view = body::FileStored {
        name,
        size: stored.size,
        sha256: hex::encode(stored.sha256),
    };
    Ok(with_written(
        (StatusCode::CREATED, Json(view)).into_response(),
        &written,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    tag = "files",
    summary = "Read a file",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        ("id" = String, Path, description = "The record id."),
        ("name" = String, Path, description = "The file name."),
        (
            "X-Consistency-Token" = Option<String>, Header,
            description = "A token from a write: the read sees that write or a later one."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The bytes, with the `Content-Type` they were stored with.",
            content(("application/octet-stream")),
            headers(
                ("X-Served-By" = String, description = "`primary` or `replica`."),
                ("Content-Length" = u64, description = "Size in bytes."),
            )
        ),
        (status = 400, response = p::BadRequest),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn get_file(
    State(state): State<NodeState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((tenant, collection, id, name)): Path<(String, String, String, String)>,
) -> ApiResult {
    let resource = format!("collections/{collection}/records/{id}/files");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::ReadData,
        Action::FileGet,
        &resource,
    )
    .await?;
    let consistency = consistency(&state, &ctx, &headers)?;
    let Served { value, served_by } = state
        .service()
        .get_file(&caller, &collection, &id, &name, consistency)
        .await
        .map_err(|err| ctx.error(err))?;
    let stream = value
        .body
        .map(|chunk| chunk.map_err(|err| std::io::Error::other(err.to_string())));
    let mut response = Response::new(Body::from_stream(stream));
    let response_headers = response.headers_mut();
    if let Ok(content_type) = HeaderValue::from_str(&value.content_type) {
        response_headers.insert(header::CONTENT_TYPE, content_type);
    }
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(value.size));
    Ok(with_served_by(response, served_by))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    tag = "files",
    summary = "Delete a file",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
        ("collection" = String, Path, description = "The collection name."),
        ("id" = String, Path, description = "The record id."),
        ("name" = String, Path, description = "The file name."),
    ),
    responses(
        (
            status = 204,
            description = "The file is deleted.",
            headers(
                ("X-Consistency-Token" = String, description = "Read-your-writes token."),
            )
        ),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn delete_file(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path((tenant, collection, id, name)): Path<(String, String, String, String)>,
) -> ApiResult {
    let resource = format!("collections/{collection}/records/{id}/files");
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::WriteData,
        Action::FileDelete,
        &resource,
    )
    .await?;
    let written = state
        .service()
        .delete_file(&caller, &collection, &id, &name)
        .await
        .map_err(|err| ctx.error(err))?;
    Ok(with_written(
        StatusCode::NO_CONTENT.into_response(),
        &written,
    ))
}

// ---- audit and evidence (auditor) ----------------------------------------------------

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQueryParams {
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_time(ctx: &Ctx, field: &str, raw: Option<&str>) -> Result<Option<SystemTime>, ApiError> {
    raw.map(|raw| {
        audit::time::parse(raw).map_err(|_| {
            ctx.error(ServiceError::invalid(
                field,
                "must be an RFC 3339 timestamp",
            ))
        })
    })
    .transpose()
}

fn audit_params(ctx: &Ctx, query: Option<String>) -> Result<AuditQueryParams, ApiError> {
    let pairs: serde_json::Map<String, serde_json::Value> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(key, value)| {
                (
                    key.into_owned(),
                    serde_json::Value::String(value.into_owned()),
                )
            })
            .collect();
    let json = serde_json::to_vec(&pairs).map_err(|err| ctx.error(ServiceError::internal(err)))?;
    parse_json(&json).map_err(|err| ctx.error(err))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/audit/events",
    tag = "audit",
    summary = "List audit events",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
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
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn audit_events(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Audit,
        Action::AuditRead,
        "audit/events",
    )
    .await?;
    let params = audit_params(&ctx, query)?;
    let action = params
        .action
        .as_deref()
        .map(|raw| {
            Action::parse(raw)
                .map_err(|_| ctx.error(ServiceError::invalid("action", "is not a known action")))
        })
        .transpose()?;
    let limit = params
        .limit
        .as_deref()
        .map(|raw| {
            raw.parse::<u32>().map_err(|_| {
                ctx.error(ServiceError::invalid("limit", "must be a positive integer"))
            })
        })
        .transpose()?;
    let query = service::compliance::EventQuery {
        from: parse_time(&ctx, "from", params.from.as_deref())?,
        to: parse_time(&ctx, "to", params.to.as_deref())?,
        action,
        limit,
        cursor: params.cursor,
    };
    let page = state
        .service()
        .audit_events(&caller, query)
        .await
        .map_err(|err| ctx.error(err))?;
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
        ("tenant" = String, Path, description = "The tenant id."),
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
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 422, response = p::Unprocessable),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn audit_export(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Audit,
        Action::AuditExport,
        "audit/export",
    )
    .await?;
    let params = audit_params(&ctx, query)?;
    if params.action.is_some() || params.limit.is_some() || params.cursor.is_some() {
        return Err(ctx.error(ServiceError::invalid(
            "query",
            "an export takes only `from` and `to`",
        )));
    }
    let from = parse_time(&ctx, "from", params.from.as_deref())?;
    let to = parse_time(&ctx, "to", params.to.as_deref())?;
    let stream = state
        .service()
        .audit_export(&caller, from, to)
        .await
        .map_err(|err| ctx.error(err))?;
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/residency",
    tag = "audit",
    summary = "Get signed residency evidence",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant id."),
    ),
    responses(
        (
            status = 200,
            description = "Where the tenant's data lives, signed.",
            body = body::ResidencyEvidence
        ),
        (status = 401, response = p::Unauthorized),
        (status = 403, response = p::Forbidden),
        (status = 404, response = p::NotFound),
        (status = 429, response = p::RateLimited),
        (status = 500, response = p::Internal),
        (status = 503, response = p::Unavailable),
    ),
)]
pub(crate) async fn residency_evidence(
    State(state): State<NodeState>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> ApiResult {
    let caller = authorize(
        &state,
        &ctx,
        &tenant,
        Access::Audit,
        Action::AuditRead,
        "residency",
    )
    .await?;
    let evidence = state
        .service()
        .residency_evidence(&caller)
        .await
        .map_err(|err| ctx.error(err))?;
    Ok(Json(evidence).into_response())
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
    Json(audit::KeyList {
        keys: state.service().audit().public_keys(),
    })
    .into_response()
}
