//! A tenant's data keys (admin key): `POST /v1/tenants/{tenant}/keys/rotate` rotates the
//! data key and queues the re-encryption of what is stored; `GET /v1/tenants/{tenant}/keys`
//! lists the versions and the latest re-encryption's progress.

use ::audit::Action;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use model::Access;
use store::jobs::Job;
use store::tenant_keys::StoredKey;
use wire::api as body;

use super::{ApiResult, TenantPath, time_text};
use crate::extract::Ctx;
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
