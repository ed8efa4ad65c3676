//! The operator's job use cases: start the region's KMS rewrap, list the region's jobs
//! (filters, newest first, a cursor) and show one. Each takes an [`OperatorGrant`]: the
//! token was checked before anything else.

use model::TenantId;
use store::StoreError;
use store::jobs::{self, Job, JobFilter, JobId, JobState};

use super::REWRAP;
use crate::{OperatorGrant, RegionService, ServiceError};

/// A page of jobs, newest first; `next_cursor` names the page after it.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
}

/// What `GET /v1/jobs` asks for, as the query string said it (checked here).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobQuery<'a> {
    pub kind: Option<&'a str>,
    pub state: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub limit: Option<u32>,
    pub cursor: Option<&'a str>,
}

/// The most a page holds, and what a listing that names no limit gets.
const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

impl RegionService {
    /// Queues the region's KMS rewrap (every stored data key rewrapped under the KMS's
    /// current key), or gives the one already queued or running.
    pub async fn start_rewrap(&self, _operator: &OperatorGrant) -> Result<Job, ServiceError> {
        let primary = self.inner.database.primary().get().await?;
        if let Some(active) = jobs::active(&primary, REWRAP, None).await? {
            return Ok(active);
        }
        match jobs::enqueue(&primary, REWRAP, None).await {
            Ok(job) => {
                // No region-level audit chain exists (chains are per tenant): the job row
                // and this line are the record of who started what.
                tracing::info!(region = %self.inner.region, job = %job.id, actor = "operator", "queued the KMS rewrap");
                Ok(job)
            }
            // Started by another request at the same moment: that one.
            Err(StoreError::Conflict) => jobs::active(&primary, REWRAP, None)
                .await?
                .ok_or_else(|| ServiceError::internal("a conflicting rewrap job vanished")),
            Err(err) => Err(err.into()),
        }
    }

    /// One job of the region.
    pub async fn job(&self, _operator: &OperatorGrant, id: &str) -> Result<Job, ServiceError> {
        let not_found = || ServiceError::NotFound { what: "job" };
        let id = JobId::parse(id).ok_or_else(not_found)?;
        let primary = self.inner.database.primary().get().await?;
        jobs::get(&primary, id).await?.ok_or_else(not_found)
    }

    /// The region's jobs matching `query`, newest first.
    pub async fn jobs(
        &self,
        _operator: &OperatorGrant,
        query: JobQuery<'_>,
    ) -> Result<JobPage, ServiceError> {
        let limit = match query.limit {
            None => DEFAULT_PAGE,
            Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
            Some(_) => {
                return Err(ServiceError::invalid(
                    "limit",
                    format!("must be 1 to {MAX_PAGE}"),
                ));
            }
        };
        let state = query
            .state
            .map(|raw| {
                JobState::parse(raw).ok_or_else(|| {
                    ServiceError::invalid(
                        "state",
                        "must be queued, running, done, failed or cancelled",
                    )
                })
            })
            .transpose()?;
        let tenant = query
            .tenant
            .map(|raw| {
                TenantId::parse(raw).map_err(|_| ServiceError::invalid("tenant", "not a tenant id"))
            })
            .transpose()?;
        let before = query
            .cursor
            .map(|raw| {
                JobId::parse(raw).ok_or_else(|| ServiceError::BadRequest("malformed cursor".into()))
            })
            .transpose()?;
        let filter = JobFilter {
            // A kind is only ever compared: an unknown one matches nothing.
            kind: query.kind,
            state,
            tenant: tenant.as_ref(),
            before,
        };
        let primary = self.inner.database.primary().get().await?;
        let mut page = jobs::list(&primary, &filter, limit + 1).await?;
        let next_cursor = if page.len() > limit as usize {
            page.truncate(limit as usize);
            page.last().map(|job| job.id.to_string())
        } else {
            None
        };
        Ok(JobPage {
            jobs: page,
            next_cursor,
        })
    }
}
