//! Records (writer; reader for reads) below
//! `/v1/tenants/{tenant}/collections/{collection}/records`: create, read, replace and
//! delete one (`ETag`/`If-Match` versions, `X-Consistency-Token` for reading one's
//! writes), and search by one field.

use ::audit::Action;
use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use model::Access;
use service::ServiceError;
use service::records::{Filter, Paging, Record, Served};
use wire::api as body;

use super::{
    ApiResult, CollectionPath, RecordPath, idempotency_key, time_text, with_etag, with_served_by,
    with_written,
};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::header_params as h;
use crate::openapi::problems as p;
use crate::openapi::successes as s;

fn record_view(record: Record, with_updated: bool) -> body::RecordView {
    body::RecordView {
        id: record.id,
        version: record.version,
        data: record.data,
        created_at: time_text(record.created_at),
        updated_at: with_updated.then(|| time_text(record.updated_at)),
    }
}

/// `If-Match: "<version>"` (or `*`, which matches any version).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ServiceError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ServiceError::BadRequest("If-Match must be an ETag like \"3\"".to_owned());
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

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/collections/{collection}/records",
    tag = "records",
    summary = "Create a record",
    security(("bearer" = [])),
    params(CollectionPath, h::IdempotencyKey),
    request_body = body::RecordBody,
    responses(
        (status = 201, response = s::RecordWritten),
        (status = 409, response = p::Conflict),
        (status = 422, response = p::IdempotencyKeyReused),
    ),
)]
pub(crate) async fn create_record(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<CollectionPath>,
    request: JsonBody<body::RecordBody>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.records(), Access::WriteData, Action::RecordCreate)
        .await?;
    let key = idempotency_key(&headers)?;
    let request = request.read(&caller).await?;
    let service = ctx.service();
    let (record, written) = match key {
        Some(key) => {
            service
                .create_record_once(&caller, &path.collection, request.data, &key)
                .await?
        }
        None => {
            service
                .create_record(&caller, &path.collection, request.data)
                .await?
        }
    };
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
    params(RecordPath, h::ConsistencyToken),
    responses(
        (status = 200, response = s::RecordRead),
    ),
)]
pub(crate) async fn get_record(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<RecordPath>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::ReadData, Action::RecordRead)
        .await?;
    let consistency = ctx.consistency(&headers)?;
    let Served { value, served_by } = ctx
        .service()
        .get_record(&caller, &path.collection, &path.record()?, consistency)
        .await?;
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
    params(RecordPath, h::IfMatch),
    request_body = body::RecordBody,
    responses(
        (status = 200, response = s::RecordWritten),
    ),
)]
pub(crate) async fn update_record(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<RecordPath>,
    request: JsonBody<body::RecordBody>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::WriteData, Action::RecordUpdate)
        .await?;
    let request = request.read(&caller).await?;
    let expected = if_match(&headers)?;
    let (record, written) = ctx
        .service()
        .update_record(
            &caller,
            &path.collection,
            &path.record()?,
            request.data,
            expected,
        )
        .await?;
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
    params(RecordPath, h::IfMatch),
    responses(
        (status = 204, response = s::Deleted),
    ),
)]
pub(crate) async fn delete_record(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<RecordPath>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::WriteData, Action::RecordDelete)
        .await?;
    let expected = if_match(&headers)?;
    let written = ctx
        .service()
        .delete_record(&caller, &path.collection, &path.record()?, expected)
        .await?;
    Ok(with_written(
        StatusCode::NO_CONTENT.into_response(),
        &written,
    ))
}

/// A search's query string: one `field=value` filter, and the page (`limit`, `cursor`).
fn search_query(query: Option<String>) -> Result<(Option<Filter>, Paging), ServiceError> {
    let mut paging = Paging::default();
    let mut filter = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => {
                paging.limit =
                    Some(value.parse().map_err(|_| {
                        ServiceError::invalid("limit", "must be a positive integer")
                    })?);
            }
            "cursor" => paging.cursor = Some(value.into_owned()),
            field => {
                if filter.is_some() {
                    return Err(ServiceError::invalid(
                        field,
                        "only one field may be searched at a time",
                    ));
                }
                filter = Some(Filter {
                    field: field.to_owned(),
                    value: value.into_owned(),
                });
            }
        }
    }
    Ok((filter, paging))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/collections/{collection}/records",
    tag = "records",
    summary = "Search records by one field",
    security(("bearer" = [])),
    params(
        CollectionPath,
        (
            "filter" = Option<std::collections::BTreeMap<String, String>>, Query,
            style = Form, explode,
            description = "One `field=value`: exact match on a searchable identifier or a public \
                field."
        ),
        ("limit" = Option<u32>, Query, description = "Page size."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
        h::ConsistencyToken,
    ),
    responses(
        (status = 200, response = s::RecordsFound),
        (status = 422, response = p::Unprocessable),
    ),
)]
pub(crate) async fn search_records(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<CollectionPath>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let caller = ctx
        .authorize(path.records(), Access::ReadData, Action::RecordSearch)
        .await?;
    let consistency = ctx.consistency(&headers)?;
    let (filter, paging) = search_query(query)?;
    let Served { value, served_by } = ctx
        .service()
        .search_records(&caller, &path.collection, filter, paging, consistency)
        .await?;
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
