//! Durable jobs: the region's long-running work, run in batches by any node of the region
//! (`runner.rs`), one handler per kind (`rewrap.rs`: the KMS rewrap; `reencrypt.rs`: a
//! tenant's re-encryption after a key rotation; `purge.rs`: an offboarded tenant's purge;
//! `subject_index.rs`: the subject-index backfill; `erasure.rs`: a subject's erasure and
//! its follow-up), and the operator's
//! use cases over them (`operator.rs`: start a rewrap, list and show jobs).
//!
//! A job lives in the region's primary (`store::jobs`). A node leases it, runs one batch
//! at a time through its kind's [`JobHandler`] while heartbeating the lease, and
//! checkpoints after every batch; a node that dies leaves a lease that expires, and
//! another node resumes from the last checkpoint. So a batch may run twice (the one that
//! was cut short), never a checkpointed one: every batch must be idempotent.

mod erasure;
mod operator;
mod purge;
mod reencrypt;
mod rewrap;
mod runner;
mod subject_index;

use model::TenantId;
use store::jobs::{JobId, JobProgress};

pub use erasure::{ERASURE_FOLLOW_UP, ErasureFollowUpJob, SUBJECT_ERASURE, SubjectErasureJob};
pub use operator::{JobPage, JobQuery};
pub use purge::{PURGE, PurgeJob};
pub use reencrypt::{REENCRYPT, ReencryptJob};
pub use rewrap::{REWRAP, RewrapJob};
pub use runner::{JobRunner, JobSettings, RunnerTask};
pub use subject_index::{SUBJECT_INDEX, SubjectIndexJob};

/// What a batch is given: the job, where the last checkpoint left it, and how many items
/// it may take.
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    pub job: JobId,
    pub tenant: Option<&'a TenantId>,
    /// `None` for the first batch.
    pub checkpoint: Option<&'a serde_json::Value>,
    /// The progress as of the last checkpoint.
    pub progress: JobProgress,
    pub batch_size: usize,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchDone {
    /// Items handled (changed, or found already done).
    pub processed: u64,
    /// Items that could not be handled and never will be (counted, skipped).
    pub failed: u64,
    /// The job's total, when the batch learned it (usually the first).
    pub total: Option<u64>,
    pub next: NextBatch,
}

/// Whether there is more to do.
#[derive(Debug, Clone, PartialEq)]
pub enum NextBatch {
    /// Checkpoint this and run the next batch from it.
    Continue(serde_json::Value),
    /// The job is complete.
    Finished,
}

/// A batch that could not run (a dependency down, a corrupt checkpoint). `reason` is a
/// short fixed text: it becomes the job's `last_error`, which operators see; the cause
/// goes to the log only.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct BatchError {
    pub reason: &'static str,
    #[source]
    pub cause: Option<crate::BoxError>,
}

impl BatchError {
    pub fn new(reason: &'static str, cause: impl Into<crate::BoxError>) -> Self {
        Self {
            reason,
            cause: Some(cause.into()),
        }
    }
}

/// A batch that could not reach the database.
pub(crate) fn database_unavailable(err: store::StoreError) -> BatchError {
    BatchError::new("database unavailable", err)
}

/// One kind of job: runs a batch at a time.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + std::fmt::Debug {
    /// The kind this handler runs (lowercase, fixed: it is a metric label and a column).
    fn kind(&self) -> &'static str;

    /// Runs the batch after `input.checkpoint`. Must be idempotent: a batch cut short by a
    /// dying node runs again from the same checkpoint on another.
    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError>;
}
