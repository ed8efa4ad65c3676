//! The node's periodic checkpoint task: every `checkpoint_interval` it signs the chain
//! heads that moved since their last checkpoint and, when the node has an audit bucket,
//! anchors the signed checkpoints there (`audit_anchors`). A failed round is logged (once
//! per outage, not once per round) and retried at the next tick; the task never panics
//! and stops with the node.

use std::sync::Arc;
use std::time::Duration;

use envelope::objects::ObjectStore;
use tokio::sync::oneshot;

use crate::AuditLog;
use crate::stoppable::StoppableTask;

/// The running checkpoint task. [`CheckpointTask::stop`] ends it (a round in progress is
/// cancelled: its open transaction rolls back, and heads it already committed stay
/// signed); dropping it does too.
pub type CheckpointTask = StoppableTask;

impl AuditLog {
    /// Spawns the task that signs moved heads every `settings().checkpoint_interval`,
    /// the first round one interval from now. Nothing is anchored.
    pub fn spawn_checkpoints(&self) -> CheckpointTask {
        self.spawn_checkpoint_task(None)
    }

    /// [`AuditLog::spawn_checkpoints`], each round followed by anchoring every signed
    /// checkpoint not yet in `bucket` (the region's write-once audit bucket).
    pub fn spawn_anchored_checkpoints(&self, bucket: Arc<dyn ObjectStore>) -> CheckpointTask {
        self.spawn_checkpoint_task(Some(bucket))
    }

    fn spawn_checkpoint_task(&self, bucket: Option<Arc<dyn ObjectStore>>) -> CheckpointTask {
        let settings = self.settings();
        let log = self.clone();
        let interval = settings.checkpoint_interval;
        let batch = settings.checkpoint_batch;
        StoppableTask::spawn("audit checkpoint task", move |stopped| {
            run(log, interval, batch, bucket, stopped)
        })
    }
}

/// Whether a kind of round is failing: errors are logged when an outage starts and ends.
#[derive(Debug, Default)]
struct Outage {
    failing: bool,
}

impl Outage {
    /// A successful round; `true` when it ends an outage.
    fn recovered(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }

    /// A failed round; `true` when it starts an outage.
    fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }
}

async fn run(
    log: AuditLog,
    interval: Duration,
    batch: i64,
    bucket: Option<Arc<dyn ObjectStore>>,
    mut stopped: oneshot::Receiver<()>,
) {
    // A zero interval would spin; tokio's interval refuses it.
    let interval = interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut signing = Outage::default();
    let mut anchoring = Outage::default();
    loop {
        tokio::select! {
            // A send or a dropped sender: either way, stop.
            _ = &mut stopped => return,
            _ = ticker.tick() => {}
        }
        let round = tokio::select! {
            _ = &mut stopped => return,
            round = log.checkpoint(batch) => round,
        };
        match round {
            Ok(signed) => {
                if signing.recovered() {
                    tracing::info!(region = %log.region(), signed, "audit checkpoints signed again");
                } else if signed > 0 {
                    tracing::debug!(region = %log.region(), signed, "signed audit checkpoints");
                }
            }
            Err(err) => {
                if signing.failed() {
                    tracing::error!(
                        region = %log.region(),
                        interval_seconds = interval.as_secs_f64(),
                        "failed to sign audit checkpoints, retrying every interval: {err}"
                    );
                }
            }
        }
        // Checkpoints signed in an earlier round wait for the bucket even when this
        // round's signing failed.
        let Some(bucket) = &bucket else { continue };
        let round = tokio::select! {
            _ = &mut stopped => return,
            round = log.anchor(bucket.as_ref(), batch) => round,
        };
        match round {
            Ok(round) => {
                for (tenant, seq) in &round.conflicts {
                    // Evidence of a rewritten chain: said every round until resolved.
                    tracing::error!(
                        region = %log.region(),
                        tenant = %tenant,
                        seq,
                        "the audit bucket holds another checkpoint of this chain at this seq: \
                         the chain in the database was rewritten after it was anchored"
                    );
                }
                if anchoring.recovered() {
                    tracing::info!(region = %log.region(), anchored = round.anchored, "audit checkpoints anchored again");
                } else if round.anchored > 0 {
                    tracing::debug!(region = %log.region(), anchored = round.anchored, "anchored audit checkpoints");
                }
            }
            Err(err) => {
                if anchoring.failed() {
                    tracing::error!(
                        region = %log.region(),
                        bucket = bucket.location(),
                        interval_seconds = interval.as_secs_f64(),
                        "failed to anchor audit checkpoints in the audit bucket, retrying every interval: {err}"
                    );
                }
            }
        }
    }
}
