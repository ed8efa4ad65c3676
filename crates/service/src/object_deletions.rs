//! No orphaned objects (issue 30, item 5). An object that no row references any more (a
//! file deleted or replaced, a record deleted, a subject erased, an upload whose row never
//! committed) is named in the outbox (`store::object_deletions`) in the same transaction
//! as the change, and deleted, every version of it, by one of two hands:
//! - the writer, right after its commit ([`RegionService::delete_objects_now`]), so a
//!   caller sees the object gone at once; it removes the rows of what it deleted;
//! - the [`ObjectSweeper`] every node runs, which takes due rows of the whole region in
//!   small batches (`FOR UPDATE SKIP LOCKED`, a lease on each), deletes their objects and
//!   removes the rows, or backs off exponentially (with a cap) and keeps the row.
//!
//! Correctness rests on the outbox alone: a node that dies between the commit and the
//! object store's answer leaves the row, and any node's sweeper finishes the work. Deleting
//! an object twice is harmless (object keys are random ids, never reused), so the two
//! hands may race. Metrics: `residency_object_deletions_pending`,
//! `residency_object_deletions_oldest_pending_seconds` and
//! `residency_object_deletions_total{outcome}` (`docs/operations.md`).

use std::sync::Arc;
use std::time::Duration;

use envelope::objects::{ObjectKey, ObjectStore, ObjectStoreError};
use futures::StreamExt as _;
use model::TenantId;
use store::object_deletions::{
    self, DeletionFailure, DeletionId, DeletionReason, PendingDeletion, QueuedDeletion,
};
use store::{PrimaryTx, RegionDatabase, StoreError};
use telemetry::NodeMetrics;

use crate::ServiceError;
use crate::stoppable::StoppableTask;
use crate::tenancy::RegionService;

/// `residency_object_deletions_total{outcome}`: every version of the object is gone.
pub const DELETED: &str = "deleted";
/// `residency_object_deletions_total{outcome}`: the attempt failed; the row stays.
pub const FAILED: &str = "failed";

/// How long an upload's row waits before a sweeper may delete its object: far longer than
/// any transaction that commits the file's row may take (statement and lock timeouts are
/// seconds), so only an upload whose row never committed is collected.
pub(crate) const UPLOAD_GRACE: Duration = Duration::from_secs(15 * 60);

/// How a node sweeps the outbox. Tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct ObjectSweepSettings {
    /// How often the sweeper looks for due rows (and recounts the outbox for metrics).
    pub poll_interval: Duration,
    /// Rows one claim takes at most; a full batch is followed by the next at once.
    pub batch_size: usize,
    /// Object deletions of a batch in flight at once.
    pub concurrency: usize,
    /// How long a claimed row is not due for another sweeper (a node that dies while
    /// deleting leaves it for this long).
    pub lease: Duration,
    /// The wait after a row's first failed attempt; it doubles with every further one…
    pub backoff_base: Duration,
    /// …up to this.
    pub backoff_cap: Duration,
}

impl Default for ObjectSweepSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            batch_size: 50,
            concurrency: 8,
            lease: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(3600),
        }
    }
}

impl ObjectSweepSettings {
    /// The wait before the next attempt of a row that failed its `attempts`-th.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_cap)
    }
}

/// Deletes every version of the object named `key`; an object already gone is success.
pub(crate) async fn delete_every_version(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<(), DeletionFailure> {
    let key = ObjectKey::parse(key).map_err(|_| DeletionFailure::MalformedKey)?;
    purge_object(store, &key).await.map_err(|err| {
        // The store's words may echo a key or a request: they go to debug only.
        tracing::debug!("object deletion failed: {err}");
        match err {
            ObjectStoreError::Unavailable(_) => DeletionFailure::Unavailable,
            _ => DeletionFailure::StoreError,
        }
    })
}

/// Deletes `key`, on a versioned store every version and delete marker of it. Object keys
/// are fixed-length random ids, so the key as a prefix names it alone.
pub(crate) async fn purge_object(
    store: &dyn ObjectStore,
    key: &ObjectKey,
) -> Result<(), ObjectStoreError> {
    loop {
        match store.purge(key.as_str(), 100).await {
            Ok(0) | Err(ObjectStoreError::NotFound(_)) => return Ok(()),
            Ok(_) => {}
            Err(err) => return Err(err),
        }
    }
}

/// Names `object_keys` for deletion in the tenant's transaction `tx`, due for a sweeper at
/// once. Call it inside the unit of work's closure, so each attempt writes its own rows.
pub(crate) async fn enqueue(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    object_keys: &[String],
    reason: DeletionReason,
) -> Result<Vec<QueuedDeletion>, ServiceError> {
    Ok(object_deletions::enqueue(tx, tenant, object_keys, reason, Duration::ZERO).await?)
}

impl RegionService {
    /// The fast path after a commit: deletes the objects of `queued` (every version) and
    /// removes the rows of those that went. What fails stays in the outbox for the sweeper.
    pub(crate) async fn delete_objects_now(&self, tenant: &TenantId, queued: &[QueuedDeletion]) {
        if queued.is_empty() {
            return;
        }
        let metrics = self.inner.audit.metrics();
        let mut gone = Vec::with_capacity(queued.len());
        let mut failure = None;
        for deletion in queued {
            match delete_every_version(self.inner.objects.as_ref(), &deletion.object_key).await {
                Ok(()) => gone.push(deletion.id),
                Err(kind) => failure = Some(kind),
            }
        }
        metrics.record_object_deletions(DELETED, gone.len() as u64);
        if let Some(kind) = failure {
            let failed = queued.len() - gone.len();
            metrics.record_object_deletions(FAILED, failed as u64);
            tracing::warn!(
                tenant = %tenant,
                failed,
                reason = kind.as_str(),
                "objects not deleted after the commit; the outbox's sweeper will"
            );
        }
        if gone.is_empty() {
            return;
        }
        if let Err(err) = self.forget_deletions(tenant, &gone).await {
            // The sweeper takes the rows, finds the objects gone and removes them.
            tracing::warn!(tenant = %tenant, "deleted objects' outbox rows not removed yet: {err}");
        }
    }

    async fn forget_deletions(
        &self,
        tenant: &TenantId,
        ids: &[DeletionId],
    ) -> Result<(), StoreError> {
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin_tenant(tenant).await?;
        object_deletions::forget(&tx, tenant, ids).await?;
        tx.commit().await
    }

    /// Names `object_keys` for deletion in a transaction of their own: an upload's object
    /// before its row commits (due only after [`UPLOAD_GRACE`]; the transaction that
    /// writes the row removes it), or an object a re-encryption wrote again after its file
    /// was deleted (due at once).
    pub(crate) async fn enqueue_alone(
        &self,
        tenant: &TenantId,
        object_keys: &[String],
        reason: DeletionReason,
        not_before: Duration,
    ) -> Result<Vec<QueuedDeletion>, ServiceError> {
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin_tenant(tenant).await?;
        let queued =
            object_deletions::enqueue(&tx, tenant, object_keys, reason, not_before).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// After a failed commit of an upload's row: deletes the upload's object now unless its
    /// row is gone (the commit happened after all, and removed it with the file's row).
    pub(crate) async fn abandon_upload(&self, tenant: &TenantId, queued: &[QueuedDeletion]) {
        let ids: Vec<DeletionId> = queued.iter().map(|deletion| deletion.id).collect();
        let pending = async {
            let mut primary = self.inner.database.primary().get().await?;
            let tx = primary.begin_tenant(tenant).await?;
            let pending = object_deletions::still_pending(tx.client(), tenant, &ids).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(pending)
        }
        .await;
        match pending {
            Ok(pending) => {
                let abandoned: Vec<QueuedDeletion> = queued
                    .iter()
                    .filter(|deletion| pending.contains(&deletion.id))
                    .cloned()
                    .collect();
                self.delete_objects_now(tenant, &abandoned).await;
            }
            Err(err) => {
                tracing::warn!(tenant = %tenant, "an abandoned upload is left to the outbox's sweeper: {err}");
            }
        }
    }
}

/// What one batch of the sweeper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Rows claimed.
    pub claimed: u64,
    /// Objects deleted (every version) and their rows removed.
    pub deleted: u64,
    /// Attempts that failed; their rows wait for their backoff.
    pub failed: u64,
}

/// The outbox's sweeper of one node (see the module's documentation).
#[derive(Debug, Clone)]
pub struct ObjectSweeper {
    database: RegionDatabase,
    objects: Arc<dyn ObjectStore>,
    settings: ObjectSweepSettings,
    metrics: Arc<NodeMetrics>,
}

impl ObjectSweeper {
    pub fn new(
        database: RegionDatabase,
        objects: Arc<dyn ObjectStore>,
        settings: ObjectSweepSettings,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        Self {
            database,
            objects,
            settings,
            metrics,
        }
    }

    /// Recounts the outbox for the metrics.
    pub async fn publish_stats(&self) -> Result<(), StoreError> {
        let primary = self.database.primary().get().await?;
        let stats = object_deletions::stats(&primary).await?;
        self.metrics
            .set_object_deletions_pending(stats.pending, stats.oldest);
        Ok(())
    }

    /// Claims one batch of due rows and carries it out.
    pub async fn sweep_batch(&self) -> Result<SweepReport, StoreError> {
        let limit = i64::try_from(self.settings.batch_size.max(1)).unwrap_or(i64::MAX);
        let claimed = {
            let primary = self.database.primary().get().await?;
            object_deletions::claim_due(&primary, limit, self.settings.lease).await?
        };
        let mut report = SweepReport {
            claimed: claimed.len() as u64,
            ..SweepReport::default()
        };
        if claimed.is_empty() {
            return Ok(report);
        }
        let objects = self.objects.as_ref();
        let outcomes: Vec<(PendingDeletion, Result<(), DeletionFailure>)> =
            futures::stream::iter(claimed)
                .map(|row| async move {
                    let outcome = delete_every_version(objects, &row.object_key).await;
                    (row, outcome)
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
        let primary = self.database.primary().get().await?;
        let mut gone = Vec::new();
        let mut failures = Vec::new();
        for (row, outcome) in outcomes {
            match outcome {
                Ok(()) => gone.push(row.id),
                Err(kind) => {
                    object_deletions::retry_later(
                        &primary,
                        row.id,
                        kind,
                        self.settings.backoff(row.attempts),
                    )
                    .await?;
                    failures.push(kind);
                }
            }
        }
        object_deletions::done(&primary, &gone).await?;
        report.deleted = gone.len() as u64;
        report.failed = failures.len() as u64;
        self.metrics
            .record_object_deletions(DELETED, report.deleted);
        self.metrics.record_object_deletions(FAILED, report.failed);
        if let Some(kind) = failures.first() {
            tracing::warn!(
                region = %self.database.region(),
                failed = report.failed,
                reason = kind.as_str(),
                "object deletions failed; retrying with backoff"
            );
        }
        Ok(report)
    }

    /// Starts sweeping every `poll_interval`; stopping ends the batch in flight (its rows
    /// are due again when their lease ends).
    pub fn spawn(self) -> StoppableTask {
        let region = self.database.region().to_string();
        let interval = self.settings.poll_interval;
        let sweeper = Arc::new(self);
        StoppableTask::spawn_every("object deletion sweeper", region, interval, move || {
            let sweeper = sweeper.clone();
            async move { sweeper.sweep().await }
        })
    }

    /// One round: the metrics, then batch after batch while they come back full (each
    /// one bounded).
    async fn sweep(&self) -> Result<(), StoreError> {
        self.publish_stats().await?;
        loop {
            let report = self.sweep_batch().await?;
            if report.claimed < self.settings.batch_size.max(1) as u64 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_its_base_up_to_its_cap() {
        let settings = ObjectSweepSettings {
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(60),
            ..ObjectSweepSettings::default()
        };
        let waits: Vec<u64> = (1..=6)
            .map(|attempts| settings.backoff(attempts).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(settings.backoff(0).as_secs(), 5);
        assert_eq!(settings.backoff(u32::MAX).as_secs(), 60);
    }
}
