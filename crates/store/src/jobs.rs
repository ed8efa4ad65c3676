//! Durable jobs in the region's primary (`jobs`, migration 0008): enqueue, lease
//! (`FOR UPDATE SKIP LOCKED`), heartbeat, checkpoint, finish, and the operator's reads.
//!
//! Every write is one statement on a [`Primary`] and every write after the lease is
//! conditional on the caller still holding it, so a node whose lease expired (and was
//! taken over) can no longer move the job. No transaction outlives a statement: a job
//! never holds one open across its batches. Lease times come from the database's clock,
//! the one clock every node of the region shares.

use std::time::{Duration, SystemTime};

use model::TenantId;
use tokio_postgres::Row;

use crate::{Primary, StoreError};

/// A job's id: the table's identity, shown to operators as decimal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(i64);

impl JobId {
    /// A job id from its text; `None` for anything that is not a positive integer.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().filter(|id| *id > 0).map(Self)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The id of a row this crate read.
    pub(crate) fn from_raw(id: i64) -> Self {
        Self(id)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// Items done, the total known when the job started, and items that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobProgress {
    pub done: u64,
    pub total: u64,
    pub failed: u64,
}

/// One job, column for column.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub tenant: Option<TenantId>,
    pub state: JobState,
    pub progress: JobProgress,
    /// Where the next batch starts; `None` before the first checkpoint.
    pub checkpoint: Option<serde_json::Value>,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<SystemTime>,
    pub attempts: u32,
    /// Batches that failed in a row since the last checkpoint.
    pub failures: u32,
    pub last_error: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

/// Which jobs a listing shows: every filter is optional; `before` is the cursor (the id of
/// the last job of the previous page).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter<'a> {
    pub kind: Option<&'a str>,
    pub state: Option<JobState>,
    pub tenant: Option<&'a TenantId>,
    pub before: Option<JobId>,
}

/// How many jobs of one kind are in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub kind: String,
    pub state: JobState,
    pub count: u64,
}

const COLUMNS: &str = "job_id, kind, tenant_id, state, done, total, failed, checkpoint, \
     lease_holder, lease_expires_at, attempts, failures, last_error, created_at, updated_at, \
     finished_at";

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn count_param(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn decode(row: &Row) -> Result<Job, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("jobs: {what}"));
    let tenant: Option<&str> = row.try_get(2)?;
    let state: &str = row.try_get(3)?;
    let attempts: i32 = row.try_get(10)?;
    let failures: i32 = row.try_get(11)?;
    Ok(Job {
        id: JobId(row.try_get(0)?),
        kind: row.try_get(1)?,
        tenant: tenant
            .map(TenantId::parse)
            .transpose()
            .map_err(|_| corrupt("tenant id"))?,
        state: JobState::parse(state).ok_or_else(|| corrupt("state"))?,
        progress: JobProgress {
            done: count(row.try_get(4)?),
            total: count(row.try_get(5)?),
            failed: count(row.try_get(6)?),
        },
        checkpoint: row.try_get(7)?,
        lease_holder: row.try_get(8)?,
        lease_expires_at: row.try_get(9)?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
        failures: u32::try_from(failures).map_err(|_| corrupt("failures"))?,
        last_error: row.try_get(12)?,
        created_at: row.try_get(13)?,
        updated_at: row.try_get(14)?,
        finished_at: row.try_get(15)?,
    })
}

/// Queues a new job of `kind` (lowercase `[a-z][a-z0-9_]*`, at most 32 characters, else
/// [`StoreError::Check`]) for `tenant` (`None`: region-wide work). A region-wide job of a
/// kind that is already queued or running is [`StoreError::Conflict`].
pub async fn enqueue(
    primary: &Primary,
    kind: &str,
    tenant: Option<&TenantId>,
) -> Result<Job, StoreError> {
    let sql = format!("insert into jobs (kind, tenant_id) values ($1, $2) returning {COLUMNS}");
    let row = primary
        .client()
        .query_one(&sql, &[&kind, &tenant.map(TenantId::as_str)])
        .await?;
    decode(&row)
}

/// The queued or running job of `kind` for `tenant` (`None`: the region-wide one), the
/// oldest if there are several.
pub async fn active(
    primary: &Primary,
    kind: &str,
    tenant: Option<&TenantId>,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from jobs
         where kind = $1 and tenant_id is not distinct from $2 and state in ('queued', 'running')
         order by job_id limit 1"
    );
    let row = primary
        .client()
        .query_opt(&sql, &[&kind, &tenant.map(TenantId::as_str)])
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Leases the oldest runnable job of one of `kinds` for `holder` until `lease` from now: a
/// queued job, or a running one whose lease expired (its holder stopped heartbeating).
/// Rows another node is leasing at this moment are skipped, not waited for. Counts an
/// attempt. `None` when nothing is runnable.
pub async fn lease_next(
    primary: &Primary,
    kinds: &[&str],
    holder: &str,
    lease: Duration,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "with next as (
             select job_id from jobs
             where (state = 'queued' or (state = 'running' and lease_expires_at < now()))
               and kind = any($1)
             order by job_id
             limit 1
             for update skip locked
         )
         update jobs set state = 'running', lease_holder = $2,
                         lease_expires_at = now() + make_interval(secs => $3),
                         attempts = attempts + 1, updated_at = now()
         from next where jobs.job_id = next.job_id
         returning {}",
        qualified_columns()
    );
    let row = primary
        .client()
        .query_opt(&sql, &[&kinds, &holder, &seconds(lease)])
        .await?;
    row.as_ref().map(decode).transpose()
}

/// `COLUMNS`, each prefixed with `jobs.` (an `update … from` names two relations).
fn qualified_columns() -> String {
    COLUMNS
        .split(", ")
        .map(|column| format!("jobs.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Extends the lease by `lease` from now, if `holder` still holds it; returns whether it
/// did (`false`: the lease expired and another node took the job, or it ended).
pub async fn heartbeat(
    primary: &Primary,
    job: JobId,
    holder: &str,
    lease: Duration,
) -> Result<bool, StoreError> {
    let updated = primary
        .client()
        .execute(
            "update jobs set lease_expires_at = now() + make_interval(secs => $3)
             where job_id = $1 and lease_holder = $2 and state = 'running'",
            &[&job.0, &holder, &seconds(lease)],
        )
        .await?;
    Ok(updated == 1)
}

/// After a batch: records the progress and where the next batch starts, clears the run of
/// failures and extends the lease, in one statement, if `holder` still holds the lease;
/// returns whether it did.
pub async fn checkpoint(
    primary: &Primary,
    job: JobId,
    holder: &str,
    lease: Duration,
    progress: JobProgress,
    checkpoint: &serde_json::Value,
) -> Result<bool, StoreError> {
    let updated = primary
        .client()
        .execute(
            "update jobs set done = $4, total = $5, failed = $6, checkpoint = $7, failures = 0,
                             lease_expires_at = now() + make_interval(secs => $3),
                             updated_at = now()
             where job_id = $1 and lease_holder = $2 and state = 'running'",
            &[
                &job.0,
                &holder,
                &seconds(lease),
                &count_param(progress.done),
                &count_param(progress.total),
                &count_param(progress.failed),
                checkpoint,
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// A batch failed: counts it, records `error` (a short fixed text) and extends the lease,
/// if `holder` still holds it. Returns how many batches failed in a row, `None` when the
/// lease is no longer the holder's.
pub async fn batch_failed(
    primary: &Primary,
    job: JobId,
    holder: &str,
    lease: Duration,
    error: &str,
) -> Result<Option<u32>, StoreError> {
    let row = primary
        .client()
        .query_opt(
            "update jobs set failures = failures + 1, last_error = $4,
                             lease_expires_at = now() + make_interval(secs => $3),
                             updated_at = now()
             where job_id = $1 and lease_holder = $2 and state = 'running'
             returning failures",
            &[&job.0, &holder, &seconds(lease), &error],
        )
        .await?;
    row.map(|row| {
        let failures: i32 = row.try_get(0)?;
        u32::try_from(failures).map_err(|_| StoreError::Corrupt("jobs: failures".into()))
    })
    .transpose()
}

/// Ends the job `done` with its final progress, if `holder` still holds it.
pub async fn finish(
    primary: &Primary,
    job: JobId,
    holder: &str,
    progress: JobProgress,
) -> Result<bool, StoreError> {
    let updated = primary
        .client()
        .execute(
            "update jobs set state = 'done', done = $3, total = $4, failed = $5,
                             lease_holder = null, lease_expires_at = null,
                             updated_at = now(), finished_at = now()
             where job_id = $1 and lease_holder = $2 and state = 'running'",
            &[
                &job.0,
                &holder,
                &count_param(progress.done),
                &count_param(progress.total),
                &count_param(progress.failed),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Ends the job `failed` with `error` (a short fixed text), if `holder` still holds it.
pub async fn fail(
    primary: &Primary,
    job: JobId,
    holder: &str,
    error: &str,
) -> Result<bool, StoreError> {
    let updated = primary
        .client()
        .execute(
            "update jobs set state = 'failed', last_error = $3,
                             lease_holder = null, lease_expires_at = null,
                             updated_at = now(), finished_at = now()
             where job_id = $1 and lease_holder = $2 and state = 'running'",
            &[&job.0, &holder, &error],
        )
        .await?;
    Ok(updated == 1)
}

/// Gives the lease up at once (a node shutting down): the job stays running, and any
/// node may lease it again now rather than when the lease would have expired.
pub async fn release(primary: &Primary, job: JobId, holder: &str) -> Result<bool, StoreError> {
    let updated = primary
        .client()
        .execute(
            "update jobs set lease_expires_at = now() - interval '1 millisecond'
             where job_id = $1 and lease_holder = $2 and state = 'running'",
            &[&job.0, &holder],
        )
        .await?;
    Ok(updated == 1)
}

/// One job, whatever its state.
pub async fn get(primary: &Primary, job: JobId) -> Result<Option<Job>, StoreError> {
    let sql = format!("select {COLUMNS} from jobs where job_id = $1");
    let row = primary.client().query_opt(&sql, &[&job.0]).await?;
    row.as_ref().map(decode).transpose()
}

/// Up to `limit` jobs matching `filter`, newest first.
pub async fn list(
    primary: &Primary,
    filter: &JobFilter<'_>,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from jobs
         where ($1::text is null or kind = $1)
           and ($2::text is null or state = $2)
           and ($3::text is null or tenant_id = $3)
           and ($4::bigint is null or job_id < $4)
         order by job_id desc
         limit $5"
    );
    primary
        .client()
        .query(
            &sql,
            &[
                &filter.kind,
                &filter.state.map(JobState::as_str),
                &filter.tenant.map(TenantId::as_str),
                &filter.before.map(JobId::get),
                &i64::from(limit),
            ],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// How many jobs of each kind are in each state (for metrics), only the pairs that exist.
// TODO-perf: counts every row, finished ones included, at each runner poll; once a region
// keeps many finished jobs, keep their counts in a summary row instead.
pub async fn counts(primary: &Primary) -> Result<Vec<JobCount>, StoreError> {
    let rows = primary
        .client()
        .query(
            "select kind, state, count(*) from jobs group by kind, state order by kind, state",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let state: &str = row.try_get(1)?;
            Ok(JobCount {
                kind: row.try_get(0)?,
                state: JobState::parse(state)
                    .ok_or_else(|| StoreError::Corrupt("jobs: state".into()))?,
                count: count(row.try_get(2)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_parse_only_positive_integers() {
        assert_eq!(JobId::parse("42"), Some(JobId(42)));
        for refused in [
            "",
            "0",
            "-1",
            "+1",
            "4 2",
            "1e3",
            "99999999999999999999",
            "abc",
        ] {
            assert_eq!(JobId::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn states_round_trip_through_their_text() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("Running"), None);
    }
}
