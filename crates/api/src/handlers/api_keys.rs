//! API keys (admin key): `POST /v1/tenants/{tenant}/api-keys` issues one, shown once;
//! `DELETE /v1/tenants/{tenant}/api-keys/{id}` revokes one.

use ::audit::Action;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use model::{Access, ApiKeyId, KeyName};
use serde::Deserialize;
use service::ServiceError;
use utoipa::IntoParams;
use wire::api as body;

use super::{ApiResult, Target, TenantPath};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::problems as p;

/// `/v1/tenants/{tenant}/api-keys/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ApiKeyPath {
    /// The tenant id.
    pub tenant: String,
    /// The API key id.
    pub id: String,
}

impl ApiKeyPath {
    /// The API key.
    fn target(&self) -> Target<'_> {
        Target {
            tenant: &self.tenant,
            resource: format!(
                "apikeys/{}",
                super::validated(&self.id, ApiKeyId::parse(&self.id).is_some())
            ),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/api-keys",
    tag = "administration",
    summary = "Create an API key",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = body::CreateApiKey,
    responses(
        (status = 201, description = "The key; `key` is shown once.", body = body::ApiKeyCreated),
        (status = 409, response = p::Conflict),
    ),
)]
pub(crate) async fn create_api_key(
    ctx: Ctx,
    Path(path): Path<TenantPath>,
    request: JsonBody<body::CreateApiKey>,
) -> ApiResult {
    let caller = ctx
        .authorize(path.on("apikeys"), Access::Administer, Action::ApiKeyCreate)
        .await?;
    let request = request.read(&caller).await?;
    let name = KeyName::parse(&request.name).map_err(ServiceError::invalid_id)?;
    let created = ctx
        .service()
        .create_api_key(&caller, &name, &request.role)
        .await?;
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
    params(ApiKeyPath),
    responses(
        (status = 204, description = "The key is revoked."),
    ),
)]
pub(crate) async fn delete_api_key(ctx: Ctx, Path(path): Path<ApiKeyPath>) -> ApiResult {
    let caller = ctx
        .authorize(path.target(), Access::Administer, Action::ApiKeyDelete)
        .await?;
    // A malformed id names no key: the same answer as an unknown one.
    let id = ApiKeyId::parse(&path.id).ok_or(ServiceError::NotFound { what: "api key" })?;
    ctx.service().revoke_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
