//! The region's durable jobs (operator token): `GET /v1/jobs` lists them (newest first,
//! filters, a cursor), `GET /v1/jobs/{job}` shows one, and `POST /v1/keys/rewrap` starts
//! the region's KMS rewrap as a job.

use axum::Json;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use service::jobs::JobQuery;
use store::jobs::Job;
use utoipa::IntoParams;
use wire::jobs as body;

use super::{ApiResult, page_limit, query_params, time_text};
use crate::extract::Ctx;
use crate::openapi::problems as p;

/// `/v1/jobs/{job}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct JobPath {
    /// The job id.
    pub job: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQueryParams {
    kind: Option<String>,
    state: Option<String>,
    tenant: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A job as the operator API shows it.
pub(crate) fn job_view(job: &Job) -> body::JobView {
    body::JobView {
        id: job.id.to_string(),
        kind: job.kind.clone(),
        tenant: job.tenant.as_ref().map(ToString::to_string),
        state: job.state.as_str().to_owned(),
        progress: body::JobProgress {
            done: job.progress.done,
            total: job.progress.total,
            failed: job.progress.failed,
        },
        attempts: job.attempts,
        last_error: job.last_error.clone(),
        created_at: time_text(job.created_at),
        updated_at: time_text(job.updated_at),
        finished_at: job.finished_at.map(time_text),
    }
}

#[utoipa::path(
    post,
    path = "/v1/keys/rewrap",
    tag = "jobs",
    summary = "Rewrap every stored data key under the KMS's current key",
    description = "After a change of the region's KMS key (a new key behind the alias, or \
        a rotated local master key): queues the region's rewrap job, or answers the one \
        already queued or running. Sealed data is not touched.",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The rewrap job.", body = body::JobView),
    ),
)]
pub(crate) async fn start_rewrap(ctx: Ctx) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let job = service.start_rewrap(&operator).await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "List the region's jobs",
    security(("bearer" = [])),
    params(
        ("kind" = Option<String>, Query, description = "Only jobs of this kind, e.g. `rewrap`."),
        ("state" = Option<String>, Query, description = "`queued`, `running`, `done`, `failed` or `cancelled`."),
        ("tenant" = Option<String>, Query, description = "Only jobs of this tenant."),
        ("limit" = Option<u32>, Query, description = "Page size (1 to 500, default 50)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
    ),
    responses(
        (status = 200, description = "A page of jobs, newest first.", body = body::JobPage),
        (status = 400, response = p::BadRequest),
        (status = 422, response = p::Unprocessable),
    ),
)]
pub(crate) async fn list_jobs(ctx: Ctx, RawQuery(query): RawQuery) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let params: JobQueryParams = query_params(query)?;
    let limit = page_limit(params.limit.as_deref())?;
    let page = service
        .jobs(
            &operator,
            JobQuery {
                kind: params.kind.as_deref(),
                state: params.state.as_deref(),
                tenant: params.tenant.as_deref(),
                limit,
                cursor: params.cursor.as_deref(),
            },
        )
        .await?;
    Ok(Json(body::JobPage {
        jobs: page.jobs.iter().map(job_view).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{job}",
    tag = "jobs",
    summary = "Get a job",
    security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The job.", body = body::JobView),
        (status = 404, response = p::NotFound),
    ),
)]
pub(crate) async fn get_job(ctx: Ctx, Path(JobPath { job }): Path<JobPath>) -> ApiResult {
    let service = ctx.service();
    let operator = ctx.authorize_operator().await?;
    let job = service.job(&operator, &job).await?;
    Ok(Json(job_view(&job)).into_response())
}
