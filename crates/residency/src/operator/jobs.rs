//! `residency jobs list|get` (operator token): the region's durable jobs,
//! `GET /v1/jobs` and `GET /v1/jobs/{job}`.

use http::StatusCode;
use wire::jobs::{JobPage, JobView};

use super::output::{fields, next_page, or_dash, table};
use super::{OperatorFlags, print};

#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobsCommand {
    /// List the jobs of the endpoint's region, newest first.
    List(ListArgs),
    /// Show one job.
    Get(JobArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    operator: OperatorFlags,
    /// Only jobs of this kind, e.g. `reencrypt`, `rewrap`, `purge`.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs in this state: `queued`, `running`, `done`, `failed` or `cancelled`.
    #[arg(long)]
    state: Option<String>,
    /// Only jobs of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Jobs per page (the node's default when not given).
    #[arg(long)]
    limit: Option<u32>,
    /// The previous page's cursor.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct JobArgs {
    #[command(flatten)]
    operator: OperatorFlags,
    /// The job id.
    job: String,
}

pub(crate) async fn run(args: JobsArgs) -> anyhow::Result<()> {
    match args.command {
        JobsCommand::List(args) => {
            let api = args.operator.api()?;
            let url = api.url(
                &["v1", "jobs"],
                &[
                    ("kind", args.kind),
                    ("state", args.state),
                    ("tenant", args.tenant),
                    ("limit", args.limit.map(|limit| limit.to_string())),
                    ("cursor", args.cursor),
                ],
            )?;
            let answer = api.get::<JobPage>(url, StatusCode::OK).await?;
            print(args.operator.connection.json, &answer, job_table)
        }
        JobsCommand::Get(args) => {
            let api = args.operator.api()?;
            let url = api.url(&["v1", "jobs", &args.job], &[])?;
            let answer = api.get::<JobView>(url, StatusCode::OK).await?;
            print(args.operator.connection.json, &answer, job_fields)
        }
    }
}

fn job_table(page: &JobPage) -> String {
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|job| {
            vec![
                job.id.clone(),
                job.kind.clone(),
                or_dash(job.tenant.as_deref()),
                job.state.clone(),
                format!("{}/{}", job.progress.done, job.progress.total),
                job.progress.failed.to_string(),
                job.updated_at.clone(),
            ]
        })
        .collect();
    let mut text = table(
        &["ID", "KIND", "TENANT", "STATE", "DONE", "FAILED", "UPDATED"],
        &rows,
    );
    text.push_str(&next_page(page.next_cursor.as_deref()));
    text
}

/// One job as `name: value` lines (also what `keys rewrap` prints).
pub(crate) fn job_fields(job: &JobView) -> String {
    fields(&[
        ("id", job.id.clone()),
        ("kind", job.kind.clone()),
        ("tenant", or_dash(job.tenant.as_deref())),
        ("state", job.state.clone()),
        (
            "progress",
            format!(
                "{}/{} done, {} failed",
                job.progress.done, job.progress.total, job.progress.failed
            ),
        ),
        ("attempts", job.attempts.to_string()),
        ("last error", or_dash(job.last_error.as_deref())),
        ("created at", job.created_at.clone()),
        ("updated at", job.updated_at.clone()),
        ("finished at", or_dash(job.finished_at.as_deref())),
    ])
}
