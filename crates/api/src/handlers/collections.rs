//! Collections (admin key): `PUT` creates or replaces a collection's schema, `GET` shows
//! it, at `/v1/tenants/{tenant}/collections/{collection}`.

use ::audit::Action;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use model::Access;
use service::ServiceError;
use wire::api as body;

use super::{ApiResult, CollectionPath};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::problems as p;

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/collections/{collection}",
    tag = "administration",
    summary = "Create or replace a collection's schema",
    security(("bearer" = [])),
    params(CollectionPath),
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
        (status = 409, response = p::Conflict),
    ),
)]
pub(crate) async fn put_collection(
    ctx: Ctx,
    Path(path): Path<CollectionPath>,
    schema: JsonBody<body::SchemaDoc>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::Administer, Action::CollectionPut)
        .await?;
    let schema = schema
        .read(&caller)
        .await?
        .into_model()
        .map_err(|err| ServiceError::invalid(err.field, err.reason))?;
    let (collection, created) = ctx
        .service()
        .put_collection(&caller, &path.collection, schema)
        .await?;
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
    params(CollectionPath),
    responses(
        (status = 200, description = "The collection's schema.", body = body::SchemaDoc),
    ),
)]
pub(crate) async fn get_collection(ctx: Ctx, Path(path): Path<CollectionPath>) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::Administer, Action::CollectionPut)
        .await?;
    let collection = ctx.service().collection(&caller, &path.collection).await?;
    Ok(Json(body::SchemaDoc::from_model(&collection.schema)).into_response())
}
