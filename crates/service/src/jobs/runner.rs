//! The job runner every node runs: every `poll_interval` it counts the region's jobs (for
//! metrics), then leases runnable jobs of the kinds it has handlers for, up to
//! `concurrency` at a time, and runs each batch by batch: heartbeat while a batch runs,
//! checkpoint after it, `failed` after `max_batch_failures` failed batches in a row, or
//! once it was leased more than `max_attempts` times (a job whose nodes keep dying on it,
//! e.g. a batch that panics, must not take node after node down forever).
//!
//! Stopping ends the batches in flight and gives their leases up, so another node (or
//! this one, restarted) resumes them at once; a node that dies instead leaves leases that
//! expire after `lease`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::jobs::{self, Job, JobId, JobState};
use store::{RegionDatabase, StoreError};
use telemetry::NodeMetrics;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::{BatchDone, BatchInput, JobHandler, NextBatch};
use crate::stoppable::StoppableTask;

/// How a node runs jobs. Tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// How often an idle runner looks for work (and recounts jobs for the metrics).
    pub poll_interval: Duration,
    /// How long a lease lasts without a heartbeat; heartbeats go every third of it.
    pub lease: Duration,
    /// Items a batch takes at most.
    pub batch_size: usize,
    /// Jobs this node runs at once.
    pub concurrency: usize,
    /// Failed batches in a row after which a job ends `failed`.
    pub max_batch_failures: u32,
    /// Leases after which a job that never ends is failed (`too many attempts`).
    pub max_attempts: u32,
    /// Pause before a failed batch runs again.
    pub retry_delay: Duration,
    /// How the node's sweeper of the outbox of object deletions runs (a task of its own,
    /// beside the runner: `crate::object_deletions`).
    pub object_deletions: crate::object_deletions::ObjectSweepSettings,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            batch_size: 100,
            concurrency: 1,
            max_batch_failures: 5,
            max_attempts: 10,
            retry_delay: Duration::from_secs(2),
            object_deletions: crate::object_deletions::ObjectSweepSettings::default(),
        }
    }
}

/// A node's job runner, before it is spawned.
#[derive(Debug, Clone)]
pub struct JobRunner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    database: RegionDatabase,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    kinds: Vec<&'static str>,
    settings: JobSettings,
    /// This runner's name in leases: the region and a random suffix (fixed text).
    holder: String,
    metrics: Arc<NodeMetrics>,
    /// Jobs this runner holds a lease on, to give them up when it stops.
    leased: Mutex<HashSet<JobId>>,
}

/// The spawned runner. [`RunnerTask::stop`] stops it cleanly (batches in flight are cut
/// short, each being idempotent, and their leases given up, so another node resumes them
/// at once); [`RunnerTask::abort`] kills it as a crashing node would (nothing given up;
/// the leases expire).
pub type RunnerTask = StoppableTask;

/// Why a job stopped running on this node.
enum Ended {
    /// Done or failed, recorded.
    Finished,
    /// The lease is no longer ours (expired and taken over, or the job ended elsewhere).
    LostLease,
    /// The database refused a job write: the lease will expire and the job resume.
    Database(StoreError),
}

impl JobRunner {
    /// A runner for `handlers` (one per kind; a later one of the same kind replaces an
    /// earlier one) on `database`.
    pub fn new(
        database: RegionDatabase,
        handlers: Vec<Arc<dyn JobHandler>>,
        settings: JobSettings,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix).expect("the system random generator works");
        let holder = format!("{}/{}", database.region(), hex::encode(suffix));
        let handlers: HashMap<&'static str, Arc<dyn JobHandler>> = handlers
            .into_iter()
            .map(|handler| (handler.kind(), handler))
            .collect();
        let mut kinds: Vec<&'static str> = handlers.keys().copied().collect();
        kinds.sort_unstable();
        Self {
            inner: Arc::new(Inner {
                database,
                handlers,
                kinds,
                settings,
                holder,
                metrics,
                leased: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// This runner's name in the leases it takes.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// Starts polling for work.
    pub fn spawn(self) -> RunnerTask {
        StoppableTask::spawn("job runner", move |stopped| run(self.inner, stopped))
    }
}

async fn run(inner: Arc<Inner>, mut stopped: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(inner.settings.concurrency.max(1)));
    let poll = inner.settings.poll_interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = JoinSet::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticker.tick() => {}
            // A job ended: look for the next one now rather than at the next tick.
            Some(_) = running.join_next() => {}
        }
        match poll_once(&inner, &slots, &mut running).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(region = %inner.database.region(), "job runner reaches the primary again");
            }
            Ok(()) => {}
            Err(err) => {
                if !failing {
                    failing = true;
                    tracing::error!(region = %inner.database.region(), "failed to poll for jobs, retrying every interval: {err}");
                }
            }
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
    release_all(&inner).await;
}

/// Counts the region's jobs for the metrics, then leases work for the free slots.
async fn poll_once(
    inner: &Arc<Inner>,
    slots: &Arc<Semaphore>,
    running: &mut JoinSet<()>,
) -> Result<(), StoreError> {
    let primary = inner.database.primary().get().await?;
    publish_counts(inner, &jobs::counts(&primary).await?);
    while let Ok(slot) = slots.clone().try_acquire_owned() {
        let Some(job) =
            jobs::lease_next(&primary, &inner.kinds, &inner.holder, inner.settings.lease).await?
        else {
            break;
        };
        let Some(handler) = inner.handlers.get(job.kind.as_str()).cloned() else {
            // lease_next only takes our kinds.
            continue;
        };
        if job.attempts > inner.settings.max_attempts {
            tracing::error!(region = %inner.database.region(), job = %job.id, kind = handler.kind(), attempts = job.attempts, "failing a job that was leased too many times");
            jobs::fail(&primary, job.id, &inner.holder, "too many attempts").await?;
            continue;
        }
        lock(&inner.leased).insert(job.id);
        let inner = inner.clone();
        running.spawn(async move {
            let id = job.id;
            let kind = handler.kind();
            match run_job(&inner, handler.as_ref(), job).await {
                Ended::Finished => {}
                Ended::LostLease => {
                    tracing::warn!(region = %inner.database.region(), job = %id, kind, "lost the lease of a job; another node runs it");
                }
                Ended::Database(err) => {
                    tracing::error!(region = %inner.database.region(), job = %id, kind, "failed to record a job's progress, leaving it to the lease: {err}");
                }
            }
            lock(&inner.leased).remove(&id);
            drop(slot);
        });
    }
    Ok(())
}

/// `residency_jobs{kind,state}` for every kind this node runs and every state (zero
/// when none), so a job that leaves a state is not counted there any longer.
fn publish_counts(inner: &Inner, counts: &[jobs::JobCount]) {
    for &kind in &inner.kinds {
        for state in JobState::ALL {
            let count = counts
                .iter()
                .find(|c| c.kind == kind && c.state == state)
                .map_or(0, |c| c.count);
            inner.metrics.set_jobs(kind, state.as_str(), count);
        }
    }
}

/// Runs a leased job batch by batch until it ends, or until the lease is lost.
async fn run_job(inner: &Inner, handler: &dyn JobHandler, job: Job) -> Ended {
    let settings = &inner.settings;
    let mut progress = job.progress;
    let mut checkpoint = job.checkpoint;
    loop {
        let input = BatchInput {
            job: job.id,
            tenant: job.tenant.as_ref(),
            checkpoint: checkpoint.as_ref(),
            progress,
            batch_size: settings.batch_size.max(1),
        };
        let outcome = match heartbeating(inner, job.id, handler.run_batch(input)).await {
            Ok(outcome) => outcome,
            Err(ended) => return ended,
        };
        let primary = match inner.database.primary().get().await {
            Ok(primary) => primary,
            Err(err) => return Ended::Database(err),
        };
        let written = match outcome {
            Ok(BatchDone {
                processed,
                failed,
                total,
                next,
            }) => {
                inner.metrics.record_job_items(handler.kind(), processed);
                progress.done += processed;
                progress.failed += failed;
                if let Some(total) = total {
                    progress.total = total;
                }
                match next {
                    NextBatch::Continue(next) => {
                        let written = jobs::checkpoint(
                            &primary,
                            job.id,
                            &inner.holder,
                            settings.lease,
                            progress,
                            &next,
                        )
                        .await;
                        checkpoint = Some(next);
                        written
                    }
                    NextBatch::Finished => {
                        return match jobs::finish(&primary, job.id, &inner.holder, progress).await {
                            Ok(true) => Ended::Finished,
                            Ok(false) => Ended::LostLease,
                            Err(err) => Ended::Database(err),
                        };
                    }
                }
            }
            Err(err) => {
                tracing::error!(
                    region = %inner.database.region(),
                    job = %job.id,
                    kind = handler.kind(),
                    "failed to run a batch of a job: {}",
                    store::with_causes(&err)
                );
                match jobs::batch_failed(
                    &primary,
                    job.id,
                    &inner.holder,
                    settings.lease,
                    err.reason,
                )
                .await
                {
                    Ok(Some(failures)) if failures >= settings.max_batch_failures => {
                        return match jobs::fail(&primary, job.id, &inner.holder, err.reason).await {
                            Ok(true) => Ended::Finished,
                            Ok(false) => Ended::LostLease,
                            Err(err) => Ended::Database(err),
                        };
                    }
                    Ok(Some(_)) => {
                        drop(primary);
                        tokio::time::sleep(settings.retry_delay).await;
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(err) => Err(err),
                }
            }
        };
        match written {
            Ok(true) => {}
            Ok(false) => return Ended::LostLease,
            Err(err) => return Ended::Database(err),
        }
    }
}

/// Runs `batch`, extending the lease every third of it meanwhile. `Err` when the lease
/// was lost (the batch is dropped: another node runs the job now).
async fn heartbeating<T>(
    inner: &Inner,
    job: JobId,
    batch: impl std::future::Future<Output = T>,
) -> Result<T, Ended> {
    let every = (inner.settings.lease / 3).max(Duration::from_millis(1));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = std::pin::pin!(batch);
    loop {
        tokio::select! {
            done = &mut batch => return Ok(done),
            _ = beat.tick() => {
                let beaten = match inner.database.primary().get().await {
                    Ok(primary) => jobs::heartbeat(&primary, job, &inner.holder, inner.settings.lease).await,
                    Err(err) => Err(err),
                };
                match beaten {
                    Ok(true) => {}
                    Ok(false) => return Err(Ended::LostLease),
                    // The primary is briefly away: keep going; the checkpoint after the
                    // batch tells whether the lease survived.
                    Err(err) => tracing::warn!(region = %inner.database.region(), job = %job, "failed to extend a job's lease: {err}"),
                }
            }
        }
    }
}

/// Gives up every lease this runner holds (it is stopping).
async fn release_all(inner: &Inner) {
    let leased: Vec<JobId> = lock(&inner.leased).drain().collect();
    if leased.is_empty() {
        return;
    }
    let primary = match inner.database.primary().get().await {
        Ok(primary) => primary,
        Err(err) => {
            tracing::warn!(region = %inner.database.region(), "failed to give up job leases before stopping; they expire: {err}");
            return;
        }
    };
    for job in leased {
        if let Err(err) = jobs::release(&primary, job, &inner.holder).await {
            tracing::warn!(region = %inner.database.region(), job = %job, "failed to give up a job's lease before stopping; it expires: {err}");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere leaves the set as it was; nothing in it can be half-updated.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
