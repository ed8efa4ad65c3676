//! Files attached to records (writer; reader for reads) at
//! `/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}`; the
//! bodies stream through the handler in both directions.

use ::audit::Action;
use axum::Json;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use model::Access;
use service::ServiceError;
use service::records::Served;
use wire::api as body;

use super::{ApiResult, FilePath, idempotency_key, with_served_by, with_written};
use crate::extract::{Ctx, UPLOAD_IDLE_DEADLINE, within_idle_deadline};
use crate::openapi::header_params as h;
use crate::openapi::problems as p;
use crate::openapi::successes as s;

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
    tag = "files",
    summary = "Store a file on a record",
    security(("bearer" = [])),
    params(FilePath, h::IdempotencyKey),
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
        (status = 409, response = p::Conflict),
        (status = 422, response = p::IdempotencyKeyReused),
    ),
)]
pub(crate) async fn put_file(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<FilePath>,
    request_body: Body,
) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::WriteData, Action::FilePut)
        .await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = within_idle_deadline(request_body, UPLOAD_IDLE_DEADLINE, stalled.clone());
    let (record, name) = path.file_to_write()?;
    let key = idempotency_key(&headers)?;
    let stored = ctx
        .service()
        .put_file(
            &caller,
            &path.collection,
            &record,
            &name,
            content_type,
            Box::pin(stream),
            key.as_ref(),
        )
        .await
        .map_err(|err| {
            if stalled.load(std::sync::atomic::Ordering::SeqCst) {
                ServiceError::BodyTimeout {
                    limit: UPLOAD_IDLE_DEADLINE,
                }
            } else {
                err
            }
        });
    let (stored, written) = stored?;
    let view = body::FileStored {
        name: path.name,
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
    params(FilePath, h::ConsistencyToken),
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
    ),
)]
pub(crate) async fn get_file(
    ctx: Ctx,
    headers: HeaderMap,
    Path(path): Path<FilePath>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::ReadData, Action::FileGet)
        .await?;
    let consistency = ctx.consistency(&headers)?;
    let (record, name) = path.file()?;
    let Served { value, served_by } = ctx
        .service()
        .get_file(&caller, &path.collection, &record, &name, consistency)
        .await?;
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
    params(FilePath),
    responses(
        (status = 204, response = s::Deleted),
    ),
)]
pub(crate) async fn delete_file(ctx: Ctx, Path(path): Path<FilePath>) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::WriteData, Action::FileDelete)
        .await?;
    let (record, name) = path.file()?;
    let written = ctx
        .service()
        .delete_file(&caller, &path.collection, &record, &name)
        .await?;
    Ok(with_written(
        StatusCode::NO_CONTENT.into_response(),
        &written,
    ))
}
