//! The erasure's jobs (`crate::erasure`):
//! - `erasure_follow_up`, queued in every erasure's transaction: writes the ledger entry
//!   to the audit bucket (and deletes the objects a job queued before the outbox of object
//!   deletions named, every version). The erasure's transaction names the erased files'
//!   objects in that outbox (`crate::object_deletions`); the erasure deletes them and
//!   writes the entry right after its commit, and the outbox's sweeper and this job do it
//!   when the node died first. Every step is idempotent.
//! - `subject_erasure`: a subject with more records than the inline bound, erased in
//!   batches of the runner's batch size, each batch one audited transaction (a
//!   `subject.erase` event by the system naming the job); the last writes the ledger's row
//!   with the totals. Its checkpoint holds the subject's token until it is done, then only
//!   the entry's id.

use audit::{Action, Event};
use serde::{Deserialize, Serialize};
use store::erasures::{self, ERASURE_JOB_KIND, ErasedRows, ErasureRow, FOLLOW_UP_KIND};

use super::{BatchDone, BatchError, BatchInput, JobHandler, NextBatch, database_unavailable};
use crate::erasure::{purge_objects, token_resource};
use crate::object_deletions::enqueue;
use crate::tenancy::RegionService;
use crate::unit_of_work::UnitOfWork;
use store::object_deletions::DeletionReason;

/// The kind of an erasure's follow-up job.
pub const ERASURE_FOLLOW_UP: &str = FOLLOW_UP_KIND;
/// The kind of a large subject's erasure job.
pub const SUBJECT_ERASURE: &str = ERASURE_JOB_KIND;

/// Runs `erasure_follow_up` jobs.
#[derive(Debug, Clone)]
pub struct ErasureFollowUpJob {
    service: RegionService,
}

impl ErasureFollowUpJob {
    pub fn new(service: RegionService) -> Self {
        Self { service }
    }
}

#[derive(Debug, Deserialize)]
struct FollowUp {
    entry_id: Option<String>,
    objects: Vec<String>,
}

fn corrupt() -> BatchError {
    BatchError {
        reason: "corrupt checkpoint",
        cause: None,
    }
}

/// The checkpoint the job was queued with (or left by its last batch).
fn checkpoint<T: serde::de::DeserializeOwned>(input: &BatchInput<'_>) -> Result<T, BatchError> {
    input
        .checkpoint
        .cloned()
        .and_then(|value| serde_json::from_value(value).ok())
        .ok_or_else(corrupt)
}

#[async_trait::async_trait]
impl JobHandler for ErasureFollowUpJob {
    fn kind(&self) -> &'static str {
        ERASURE_FOLLOW_UP
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let tenant = input.tenant.ok_or_else(corrupt)?;
        let follow_up: FollowUp = checkpoint(&input)?;
        purge_objects(self.service.inner.objects.as_ref(), &follow_up.objects)
            .await
            .map_err(|err| BatchError::new("object store unavailable", err))?;
        if let Some(entry_id) = &follow_up.entry_id {
            let mut primary = self
                .service
                .inner
                .database
                .primary()
                .get()
                .await
                .map_err(database_unavailable)?;
            let tx = primary
                .begin_tenant(tenant)
                .await
                .map_err(database_unavailable)?;
            let row = erasures::get(tx.client(), tenant, entry_id)
                .await
                .map_err(database_unavailable)?;
            tx.commit().await.map_err(database_unavailable)?;
            drop(primary);
            // No row: the tenant was offboarded since; nothing is left to record.
            if let Some(row) = row {
                self.service
                    .write_ledger_entry(&row)
                    .await
                    .map_err(|err| BatchError::new("audit bucket unavailable", err))?;
            }
        }
        Ok(BatchDone {
            processed: follow_up.objects.len() as u64,
            failed: 0,
            total: None,
            next: NextBatch::Finished,
        })
    }
}

/// Runs `subject_erasure` jobs.
#[derive(Debug, Clone)]
pub struct SubjectErasureJob {
    service: RegionService,
}

impl SubjectErasureJob {
    pub fn new(service: RegionService) -> Self {
        Self { service }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// Hex; `None` once the erasure is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    entry_id: String,
    #[serde(default)]
    records: u64,
    #[serde(default)]
    files: u64,
    #[serde(default)]
    collections: Vec<String>,
}

#[async_trait::async_trait]
impl JobHandler for SubjectErasureJob {
    fn kind(&self) -> &'static str {
        SUBJECT_ERASURE
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let tenant = input.tenant.ok_or_else(corrupt)?;
        let mut at: Progress = checkpoint(&input)?;
        let Some(token_hex) = at.token.clone() else {
            return Ok(BatchDone {
                processed: 0,
                failed: 0,
                total: None,
                next: NextBatch::Finished,
            });
        };
        let token: [u8; 32] = hex::decode(&token_hex)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(corrupt)?;
        let limit = i64::try_from(input.batch_size.max(1)).unwrap_or(i64::MAX);
        let service = &self.service;
        let event = service.system_event(
            tenant,
            "subject-erasure",
            Action::SubjectErase,
            &token_resource(&token),
            format!("job-{}", input.job),
        );
        let mut primary = service
            .inner
            .database
            .primary()
            .get()
            .await
            .map_err(database_unavailable)?;
        let so_far = at.clone();
        let committed = UnitOfWork::new(&service.inner.audit)
            .run_recorded(
                &mut primary,
                tenant,
                [event],
                async |tx| Ok(erasures::erase_records(tx, tenant, &token, limit).await?),
                async |tx, rows: ErasedRows, events: &[Event]| {
                    let last = rows.records < u64::try_from(limit).unwrap_or(u64::MAX);
                    let mut collections = so_far.collections.clone();
                    collections.extend(rows.collections.iter().cloned());
                    collections.sort();
                    collections.dedup();
                    let entry = last.then(|| ErasureRow {
                        tenant: *tenant,
                        entry_id: so_far.entry_id.clone(),
                        subject_token: token,
                        erased_at: std::time::SystemTime::now(),
                        records_erased: so_far.records + rows.records,
                        files_erased: so_far.files + rows.files,
                        collections: collections.clone(),
                        audit_seq: events.first().map_or(1, |event| event.seq),
                        reapplied: false,
                    });
                    if let Some(entry) = &entry {
                        erasures::insert(tx, entry).await?;
                    }
                    let queued =
                        enqueue(tx, tenant, &rows.object_keys, DeletionReason::SubjectErased)
                            .await?;
                    erasures::queue_follow_up(
                        tx,
                        tenant,
                        entry.as_ref().map(|entry| entry.entry_id.as_str()),
                        &[],
                    )
                    .await?;
                    Ok((rows, entry, collections, queued))
                },
            )
            .await
            .map_err(|err| BatchError::new("erasure batch failed", err))?;
        drop(primary);
        let (rows, entry, collections, queued) = committed.value;
        at.records += rows.records;
        at.files += rows.files;
        at.collections = collections;
        if let Some(entry) = &entry {
            service.follow_up(entry, &queued).await;
            // Done: the token leaves the job's row.
            at.token = None;
        } else {
            service.delete_objects_now(tenant, &queued).await;
        }
        Ok(BatchDone {
            processed: rows.records,
            failed: 0,
            total: None,
            next: NextBatch::Continue(
                serde_json::to_value(&at)
                    .map_err(|err| BatchError::new("encode checkpoint", err))?,
            ),
        })
    }
}
