//! Residency evidence (auditor key): `GET /v1/tenants/{tenant}/residency` answers where
//! the tenant's data lives, signed by the region's audit key.

use ::audit::Action;
use axum::Json;
use axum::extract::Path;
use axum::response::IntoResponse;
use model::Access;
use wire::api as body;

use super::{ApiResult, TenantPath};
use crate::extract::Ctx;

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/residency",
    tag = "audit",
    summary = "Get signed residency evidence",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (
            status = 200,
            description = "Where the tenant's data lives, signed.",
            body = body::ResidencyEvidence
        ),
    ),
)]
pub(crate) async fn residency_evidence(ctx: Ctx, Path(path): Path<TenantPath>) -> ApiResult {
    let caller = ctx
        .authorize(path.on("residency"), Access::Audit, Action::AuditRead)
        .await?;
    let evidence = ctx.service().residency_evidence(&caller).await?;
    Ok(Json(evidence).into_response())
}
