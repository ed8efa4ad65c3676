//! A tenant's data keys (admin key): `POST /v1/tenants/{tenant}/keys/rotate` rotates the
//! data key and queues the re-encryption of what is stored; `GET /v1/tenants/{tenant}/keys`
//! lists the versions and the latest re-encryption's progress;
//! `DELETE /v1/tenants/{tenant}/keys/{version}` destroys a retired version no stored data
//! uses any more; `GET`/`PUT /v1/tenants/{tenant}/keys/policy` read and set the tenant's
//! bounds of automatic rotation.

use ::audit::Action;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use model::{Access, KeyVersion};
use serde::Deserialize;
use service::ServiceError;
use store::jobs::Job;
use store::tenant_keys::StoredKey;
use utoipa::IntoParams;
use wire::api as body;

use super::{ApiResult, TenantPath, time_text};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::problems as p;

fn reencryption_view(job: &Job) -> body::ReencryptionView {
    body::ReencryptionView {
        status: job.state.as_str().to_owned(),
        done: job.progress.done,
        total: job.progress.total,
    }
}

fn version_view(key: &StoredKey) -> body::KeyVersionView {
    body::KeyVersionView {
        version: key.version.get(),
        created_at: time_text(key.created_at),
        state: key.state.as_str().to_owned(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/keys/rotate",
    tag = "administration",
    summary = "Rotate the tenant's data key",
    description = "A new data key version seals every new write at once (on every node of \
        the region within about a second); a `reencrypt` job re-seals every stored value \
        and re-encrypts every file under it in the background, while the tenant's traffic \
        goes on. Older versions are `retired`: they open what they sealed, never seal \
        again. Audited as `key.rotate` naming the job, and again when the job completes. 409 while \
        a re-encryption of the tenant is queued or running.",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 202, description = "The new version and the queued re-encryption.", body = body::KeyRotationStarted),
        (status = 409, response = p::Conflict),
    ),
)]
pub(crate) async fn rotate_keys(ctx: Ctx, Path(path): Path<TenantPath>) -> ApiResult {
    let caller = ctx
        .authorize(path.on("keys"), Access::Administer, Action::KeyRotate)
        .await?;
    let started = ctx.service().rotate_keys(&caller).await?;
    let view = body::KeyRotationStarted {
        key_version: started.version.get(),
        reencryption: reencryption_view(&started.job),
    };
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/keys",
    tag = "administration",
    summary = "The tenant's data key versions and re-encryption",
    description = "Every data key version (`active`: seals new writes; `retired`: opens \
        what it sealed; `destroyed`: erased) and the latest re-encryption's progress \
        (`null` before the first rotation).",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The versions, oldest first, and the re-encryption.", body = body::KeyStatus),
    ),
)]
pub(crate) async fn key_status(ctx: Ctx, Path(path): Path<TenantPath>) -> ApiResult {
    let caller = ctx
        .authorize(path.on("keys"), Access::Administer, Action::KeyRotate)
        .await?;
    let status = ctx.service().key_status(&caller).await?;
    let view = body::KeyStatus {
        versions: status.versions.iter().map(version_view).collect(),
        reencryption: status.reencryption.as_ref().map(reencryption_view),
    };
    Ok((StatusCode::OK, Json(view)).into_response())
}

/// `/v1/tenants/{tenant}/keys/{version}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct KeyVersionPath {
    /// The tenant id.
    pub tenant: String,
    /// The data key version (1, 2, …).
    pub version: String,
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/keys/{version}",
    tag = "administration",
    summary = "Destroy a retired data key version",
    description = "Erases the version's wrapped key (state `destroyed`): whatever it still \
        sealed would be unreadable for ever, so only a `retired` version that no stored \
        value and no file uses any more (the re-encryption after the rotation that retired \
        it is done) may go; 409 for the active version or one still in use. Every node of \
        the region forgets it within about a second. Audited as `key.destroy`. Destroying \
        a destroyed version changes nothing (204).",
    security(("bearer" = [])),
    params(KeyVersionPath),
    responses(
        (status = 204, description = "The version is destroyed."),
        (status = 409, response = p::Conflict),
    ),
)]
pub(crate) async fn destroy_key_version(ctx: Ctx, Path(path): Path<KeyVersionPath>) -> ApiResult {
    let caller = ctx
        .authorize(path_on(&path), Access::Administer, Action::KeyDestroy)
        .await?;
    // A malformed version names no version: the same answer as an unknown one.
    let version = path
        .version
        .parse::<u32>()
        .ok()
        .and_then(KeyVersion::new)
        .ok_or(ServiceError::NotFound {
            what: "key version",
        })?;
    ctx.service().destroy_key_version(&caller, version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The audit target of a key version's path: `keys`, never the text of the path.
fn path_on(path: &KeyVersionPath) -> super::Target<'_> {
    super::Target {
        tenant: &path.tenant,
        resource: "keys".to_owned(),
    }
}

fn policy_view(view: &service::key_policy::KeyBoundsView) -> body::KeyPolicyView {
    body::KeyPolicyView {
        max_seals: view.tenant.max_seals,
        max_age_seconds: view.tenant.max_age.map(|age| age.as_secs()),
        default_max_seals: view.default_max_seals,
        default_max_age_seconds: view.default_max_age.as_secs(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/keys/policy",
    tag = "administration",
    summary = "The tenant's bounds of automatic key rotation",
    description = "The data key rotates on its own once its active version sealed \
        `max_seals` values or is `max_age_seconds` old; `null` means the region's default \
        (`default_max_seals`, `default_max_age_seconds`).",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant's bounds and the region's defaults.", body = body::KeyPolicyView),
    ),
)]
pub(crate) async fn key_policy(ctx: Ctx, Path(path): Path<TenantPath>) -> ApiResult {
    let caller = ctx
        .authorize(
            path.on("keys/policy"),
            Access::Administer,
            Action::KeyPolicy,
        )
        .await?;
    let view = ctx.service().key_bounds(&caller).await?;
    Ok((StatusCode::OK, Json(policy_view(&view))).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/keys/policy",
    tag = "administration",
    summary = "Set the tenant's bounds of automatic key rotation",
    description = "Replaces both bounds (`null` or absent: the region's default). A tenant \
        may rotate more often than the region, never less: `max_seals` from 1 to \
        `default_max_seals` (at most 2^30, a quarter of AES-GCM's bound for random nonces), \
        `max_age_seconds` from 3600 to `default_max_age_seconds`; 422 naming the field \
        otherwise. Applied by the next round of the policy (seconds). Audited as \
        `key.policy`.",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = body::KeyPolicyBody,
    responses(
        (status = 200, description = "The tenant's bounds as set and the region's defaults.", body = body::KeyPolicyView),
    ),
)]
pub(crate) async fn set_key_policy(
    ctx: Ctx,
    Path(path): Path<TenantPath>,
    request: JsonBody<body::KeyPolicyBody>,
) -> ApiResult {
    let caller = ctx
        .authorize(
            path.on("keys/policy"),
            Access::Administer,
            Action::KeyPolicy,
        )
        .await?;
    let request = request.read(&caller).await?;
    let bounds = service::key_policy::TenantKeyBounds {
        max_seals: request.max_seals,
        max_age: request.max_age_seconds.map(std::time::Duration::from_secs),
    };
    let view = ctx.service().set_key_bounds(&caller, bounds).await?;
    Ok((StatusCode::OK, Json(policy_view(&view))).into_response())
}
