//! The node's periodic checkpoint task: every `checkpoint_interval` it signs the chain
//! heads that moved since their last checkpoint. A failed round is logged (once per
//! outage, not once per round) and retried at the next tick; the task never panics and
//! stops with the node.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::AuditLog;
use crate::stoppable::StoppableTask;

/// The running checkpoint task. [`CheckpointTask::stop`] ends it (a round in progress is
/// cancelled: its open transaction rolls back, and heads it already committed stay
/// signed); dropping it does too.
pub type CheckpointTask = StoppableTask;

impl AuditLog {
    /// Spawns the task that signs moved heads every `settings().checkpoint_interval`,
    /// the first round one interval from now.
    pub fn spawn_checkpoints(&self) -> CheckpointTask {
        let settings = self.settings();
        let log = self.clone();
        StoppableTask::spawn("audit checkpoint task", move |stopped| {
            run(
                log,
                settings.checkpoint_interval,
                settings.checkpoint_batch,
                stopped,
            )
        })
    }
}

async fn run(log: AuditLog, interval: Duration, batch: i64, mut stopped: oneshot::Receiver<()>) {
    // A zero interval would spin; tokio's interval refuses it.
    let interval = interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
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
                if failing {
                    failing = false;
                    tracing::info!(region = %log.region(), signed, "audit checkpoints signed again");
                } else if signed > 0 {
                    tracing::debug!(region = %log.region(), signed, "signed audit checkpoints");
                }
            }
            Err(err) => {
                if !failing {
                    failing = true;
                    tracing::error!(
                        region = %log.region(),
                        interval_seconds = interval.as_secs_f64(),
                        "failed to sign audit checkpoints, retrying every interval: {err}"
                    );
                }
            }
        }
    }
}
