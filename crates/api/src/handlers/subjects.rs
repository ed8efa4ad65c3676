//! Data subjects (admin key): `GET /v1/tenants/{tenant}/subjects/{subject}/export` answers
//! one signed page of everything stored about a data subject (DSAR), `POST …/erase` erases
//! it; `POST /v1/subjects/erasures/reapply` (operator) re-applies the erasure ledger. The subject in the
//! path is personal data: the route template, not the path, is what logs and metrics see,
//! and denials and the audit event name `subjects`, never the value.

use ::audit::Action;
use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use model::Access;
use serde::Deserialize;
use service::erasure::SubjectErasure;
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

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/subjects/{subject}/erase",
    tag = "administration",
    summary = "Erase everything stored about a data subject",
    description = "Deletes the subject's records in every collection of the tenant, their \
                   index tokens and files (every stored object version), in one transaction \
                   with a `subject.erase` audit event (naming the subject's token only) and \
                   a row of the erasure ledger; the ledger entry is also written to the \
                   region's audit bucket, from which a node erases the subject again after \
                   a database restore. A second erasure answers 0 erased (audited again). A \
                   subject with more than 1,000 records is erased by a job: `202` with its \
                   progress; asking again answers the job while it runs.",
    security(("bearer" = [])),
    params(SubjectPath),
    responses(
        (status = 200, description = "The subject is erased.", body = body::SubjectErasure),
        (
            status = 202,
            description = "More than 1,000 records: a job erases them.",
            body = body::SubjectErasureStarted
        ),
        (status = 400, response = p::BadRequest),
    ),
)]
pub(crate) async fn erase_subject(ctx: Ctx, Path(path): Path<SubjectPath>) -> ApiResult {
    let target = super::TenantPath {
        tenant: path.tenant,
    };
    let caller = ctx
        .authorize(
            target.on("subjects"),
            Access::Administer,
            Action::SubjectErase,
        )
        .await?;
    let erasure = ctx.service().erase_subject(&caller, &path.subject).await?;
    Ok(match erasure {
        SubjectErasure::Done(done) => Json(body::SubjectErasure {
            subject: path.subject,
            records_erased: done.records_erased,
            files_erased: done.files_erased,
            audit_seq: done.audit_seq,
        })
        .into_response(),
        SubjectErasure::Started(job) => (
            StatusCode::ACCEPTED,
            Json(body::SubjectErasureStarted {
                subject: path.subject,
                job: body::ErasureJobView {
                    id: job.job.to_string(),
                    state: job.state,
                    done: job.done,
                    total: job.total,
                },
            }),
        )
            .into_response(),
    })
}

#[utoipa::path(
    post,
    path = "/v1/subjects/erasures/reapply",
    tag = "jobs",
    summary = "Re-apply the region's erasure ledger to its database",
    description = "Reads the erasure ledger in the region's audit bucket and erases again, \
                   by subject token, every entry this database has not applied (after a \
                   restore from a backup older than the erasure). Every node also does it \
                   at start, before serving.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What was re-applied.", body = body::ErasureLedgerReapplied),
    ),
)]
pub(crate) async fn reapply_erasures(ctx: Ctx) -> ApiResult {
    let operator = ctx.authorize_operator().await?;
    let report = ctx.service().reapply_erasure_ledger(&operator).await?;
    Ok(Json(body::ErasureLedgerReapplied {
        entries: report.entries,
        reapplied: report.reapplied,
        records_erased: report.records_erased,
        skipped: report.skipped,
    })
    .into_response())
}
