//! Offboarding a tenant: `DELETE /v1/tenants/{tenant}` marks it offboarded, destroys
//! every wrapped key it has (crypto-shredding) and appends its `tenant.delete` event, all
//! in one transaction, then queues the `purge` job (`jobs/purge.rs`) that removes its
//! data and ends with a signed offboarding certificate.
//!
//! From the commit on the tenant is gone: this node drops its cached copies at once; the
//! other nodes of the region drop theirs when they hear the key-change notification the
//! shredding sends (`KeyChanges`), within milliseconds; other regions forward to the home,
//! which answers 404. The directory entry stays until the purge ends, so that every region
//! keeps forwarding to the home's 404 meanwhile.

use std::time::Duration;

use audit::{Action, Actor, ActorKind, Outcome};
use model::TenantId;
use store::StoreError;
use store::jobs::{self, Job, JobFilter, JobState};

use crate::jobs::PURGE;
use crate::unit_of_work::EventTiming;
use crate::{OperatorGrant, RegionService, RequestContext, ServiceError};

/// How long an offboarding waits for this node's queued audit events to be written before
/// it closes the tenant's chain (the queue drains in milliseconds while the primary is up;
/// the offboarding needs the primary anyway).
const FLUSH_BEFORE_CLOSE: Duration = Duration::from_secs(5);

/// Where an offboarding stands.
#[derive(Debug, Clone)]
pub enum Offboarding {
    /// The purge is queued or running (or failed and waits for an operator: `job` says).
    Purging(Box<Job>),
    /// The purge is done: the signed certificate.
    Done(Box<wire::api::OffboardingCertificate>),
}

impl Offboarding {
    /// The `status` of `DELETE /v1/tenants/{tenant}`'s answer.
    pub fn status(&self) -> &'static str {
        match self {
            Offboarding::Purging(job) if job.state == JobState::Failed => "purge_failed",
            Offboarding::Purging(_) => "offboarding",
            Offboarding::Done(_) => "offboarded",
        }
    }
}

impl RegionService {
    /// Offboards `tenant` (see the module documentation). Idempotent: offboarding a tenant
    /// being or already offboarded gives where it stands; a tenant this region never had
    /// is [`ServiceError::NotFound`].
    pub async fn offboard_tenant(
        &self,
        _operator: &OperatorGrant,
        tenant: &TenantId,
        context: &RequestContext,
    ) -> Result<Offboarding, ServiceError> {
        let id = *tenant;
        let row = self
            .read_primary_first(tenant, move |client| {
                Box::pin(async move { store::tenants::get(client, &id).await })
            })
            .await?;
        if row.as_ref().is_some_and(|row| row.status == "active") {
            let actor = Actor {
                kind: ActorKind::Operator,
                id: "operator".to_owned(),
            };
            let event = self.event(
                tenant,
                actor,
                Action::TenantDelete,
                &format!("tenants/{tenant}"),
                Outcome::Success,
                context,
            );
            // Reads this node served and queued (batched audit) go into the chain before
            // `tenant.delete` closes it; what other nodes still queue is counted and logged
            // when it reaches the closed chain (`docs/audit.md`, "A closed chain").
            if tokio::time::timeout(FLUSH_BEFORE_CLOSE, self.inner.audit.flush())
                .await
                .is_err()
            {
                tracing::warn!(region = %self.inner.region, tenant = %tenant, "the audit queue did not drain before an offboarding; its events of the tenant will be counted as late");
            }
            let marked = self
                .write(tenant, EventTiming::AfterChange, [], async |tx| {
                    if !store::tenants::mark_offboarded(tx, tenant).await? {
                        // Offboarded by another request meanwhile: roll this one back.
                        return Err(ServiceError::Conflict("tenant already offboarded"));
                    }
                    store::tenant_keys::destroy_all(tx, tenant).await?;
                    // The chain's last event, in the transaction of the change it records.
                    self.inner.audit.append_and_close(tx, event).await?;
                    Ok(())
                })
                .await;
            match marked {
                Ok(_) => {
                    tracing::info!(region = %self.inner.region, tenant = %tenant, actor = "operator", "offboarded a tenant, its keys destroyed")
                }
                Err(ServiceError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
            self.forget_tenant_here(tenant).await;
        } else if row.is_none() && self.latest_purge(tenant).await?.is_none() {
            return Err(ServiceError::NotFound { what: "tenant" });
        }
        self.ensure_purge(tenant).await
    }

    /// Where the offboarding of `tenant` stands; [`ServiceError::NotFound`] for a tenant
    /// this region never offboarded (an active one included).
    pub async fn offboarding(
        &self,
        _operator: &OperatorGrant,
        tenant: &TenantId,
    ) -> Result<Offboarding, ServiceError> {
        let job = self
            .latest_purge(tenant)
            .await?
            .ok_or(ServiceError::NotFound {
                what: "offboarding",
            })?;
        offboarding_of(job)
    }

    /// Drops this node's cached copies of `tenant` (its record and its keys).
    pub(crate) async fn forget_tenant_here(&self, tenant: &TenantId) {
        self.inner.keyring.forget_tenant(tenant);
        self.inner.tenants.invalidate(tenant).await;
    }

    /// Drops this node's cached copy of `tenant` (`None`: of every tenant), for the
    /// key-change listener, which calls it from a synchronous callback.
    pub fn forget_cached_tenant(&self, tenant: Option<&TenantId>) {
        match tenant {
            Some(tenant) => {
                let tenants = self.inner.tenants.clone();
                let tenant = *tenant;
                tokio::spawn(async move { tenants.invalidate(&tenant).await });
            }
            None => self.inner.tenants.invalidate_all(),
        }
    }

    /// The purge job of `tenant` (queued, running or done), queueing one when there is none
    /// or the last one failed: the offboarding committed before the job was queued if a
    /// node died between the two, or the purge gave up; a second `DELETE` mends both.
    async fn ensure_purge(&self, tenant: &TenantId) -> Result<Offboarding, ServiceError> {
        if let Some(job) = self.latest_purge(tenant).await?
            && job.state != JobState::Failed
        {
            return offboarding_of(job);
        }
        let primary = self.inner.database.primary().get().await?;
        let job = match jobs::enqueue(&primary, PURGE, Some(tenant)).await {
            Ok(job) => job,
            Err(StoreError::Conflict) => self
                .latest_purge(tenant)
                .await?
                .ok_or_else(|| ServiceError::internal("a conflicting purge job vanished"))?,
            Err(err) => return Err(err.into()),
        };
        tracing::info!(region = %self.inner.region, tenant = %tenant, job = %job.id, "queued the purge of an offboarded tenant");
        offboarding_of(job)
    }

    async fn latest_purge(&self, tenant: &TenantId) -> Result<Option<Job>, ServiceError> {
        let primary = self.inner.database.primary().get().await?;
        let filter = JobFilter {
            kind: Some(PURGE),
            tenant: Some(tenant),
            ..JobFilter::default()
        };
        Ok(jobs::list(&primary, &filter, 1).await?.into_iter().next())
    }
}

fn offboarding_of(job: Job) -> Result<Offboarding, ServiceError> {
    if job.state != JobState::Done {
        return Ok(Offboarding::Purging(Box::new(job)));
    }
    let certificate = job
        .checkpoint
        .as_ref()
        .and_then(|checkpoint| checkpoint.get("certificate"))
        .cloned()
        .ok_or_else(|| ServiceError::internal("a done purge without its certificate"))?;
    let certificate: wire::api::OffboardingCertificate = serde_json::from_value(certificate)
        .map_err(|err| ServiceError::internal_while("decode an offboarding certificate", err))?;
    Ok(Offboarding::Done(Box::new(certificate)))
}
