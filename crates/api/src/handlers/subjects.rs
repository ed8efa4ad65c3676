//! Data subjects (admin key): `GET /v1/tenants/{tenant}/subjects/{subject}/export` answers
//! one signed page of everything stored about a data subject (DSAR). The subject in the
//! path is personal data: the route template, not the path, is what logs and metrics see,
//! and denials and the audit event name `subjects`, never the value.

use ::audit::Action;
use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::response::IntoResponse;
use model::Access;
use serde::Deserialize;
use utoipa::IntoParams;
use wire::api as body;

use super::{ApiResult, page_limit, query_params};
use crate::extract::Ctx;
use crate::openapi::problems as p;

/// `/v1/tenants/{tenant}/subjects/{subject}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SubjectPath {
    /// The tenant id.
    pub tenant: String,
    /// The subject's value in the collections' `subject_field` (percent-encoded).
    pub subject: String,
}

/// Never the subject's value.
impl std::fmt::Debug for SubjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectPath")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/subjects/{subject}/export",
    tag = "administration",
    summary = "Export everything stored about a data subject (DSAR), signed",
    description = "One page of the subject's records in every collection of the tenant \
                   (opened), their files' metadata and the audit events about them, signed \
                   by the region's audit key (verify offline with `residency subjects \
                   verify-export`). Pages hold at most 100 records; `next_cursor` asks for \
                   the next. Audited as `subject.export`, naming the subject's token only.",
    security(("bearer" = [])),
    params(
        SubjectPath,
        ("limit" = Option<u32>, Query, description = "Records per page (1 to 100, default 100)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
    ),
    responses(
        (
            status = 200,
            description = "A signed page of the subject's data.",
            body = body::SubjectExport
        ),
        (status = 400, response = p::BadRequest),
    ),
)]
pub(crate) async fn export_subject(
    ctx: Ctx,
    Path(path): Path<SubjectPath>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let target = super::TenantPath {
        tenant: path.tenant,
    };
    let caller = ctx
        .authorize(
            target.on("subjects"),
            Access::Administer,
            Action::SubjectExport,
        )
        .await?;
    let params: ExportParams = query_params(query)?;
    let limit = page_limit(params.limit.as_deref())?;
    let export = ctx
        .service()
        .export_subject(&caller, &path.subject, params.cursor.as_deref(), limit)
        .await?;
    Ok(Json(export).into_response())
}
