//! The bounded queue of batched audit events (reads, denials) and the one writer task
//! that drains it: a batch per transaction on the primary, FIFO, retried with backoff
//! until it commits. An event accepted by the queue is never dropped while the log is
//! open; when the queue is full, `AuditLog::record` refuses instead of waiting, so that a
//! read fails rather than goes unaudited.
//!
//! Reads and denials have separate budgets: each [`Budget`] holds its own number of
//! waiting events, so a flood of denials can fill only its own and never makes a read
//! fail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use audit::NewEvent;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::audit::{AuditError, Core};

/// First wait after a failed batch; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the queue is sized and drained.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueSettings {
    /// Waiting events of the reads' budget at most.
    pub capacity: usize,
    /// Waiting events of the denials' budget at most.
    pub denial_capacity: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
}

#[derive(Debug)]
pub(crate) struct Queue {
    settings: QueueSettings,
    state: Mutex<State>,
    /// Wakes the writer: an event arrived, a flush was asked for, or the queue closed.
    wake: Notify,
    /// Events made durable, counted from the first; and whether the writer gave up.
    progress: watch::Sender<Progress>,
}

/// Which budget an event counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Reads, exports and other events of served requests.
    Reads,
    /// Denied attempts.
    Denials,
}

/// Events accepted and not yet written, per budget.
#[derive(Debug, Default, Clone, Copy)]
struct Waiting {
    reads: usize,
    denials: usize,
}

impl Waiting {
    fn of(&mut self, budget: Budget) -> &mut usize {
        match budget {
            Budget::Reads => &mut self.reads,
            Budget::Denials => &mut self.denials,
        }
    }

    fn total(self) -> usize {
        self.reads + self.denials
    }
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<(Budget, NewEvent)>,
    /// Taken by the writer, not committed yet. Counts against the capacity.
    in_flight: usize,
    /// Pending and in flight, per budget.
    waiting: Waiting,
    /// Of the batch in flight, how many are denials.
    in_flight_denials: usize,
    /// Events accepted since the start.
    enqueued: u64,
    /// When the oldest pending event was accepted (the writer lingers from then on).
    oldest: Option<Instant>,
    /// Someone waits in `flush`: write without lingering.
    urgent: bool,
    closed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    durable: u64,
    /// The writer stopped with events unwritten (the log was closed while the primary
    /// failed); nothing more becomes durable.
    abandoned: bool,
}

/// Why an event was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

impl Queue {
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            settings: QueueSettings {
                capacity: settings.capacity.max(1),
                denial_capacity: settings.denial_capacity.max(1),
                max_batch: settings.max_batch.max(1),
                flush_interval: settings.flush_interval,
            },
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.settings.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent state (every update is
        // complete before any call that could panic), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accepts `event` unless its budget is full or the queue closed; returns the new
    /// backlog (of both budgets).
    pub fn push(&self, budget: Budget, event: NewEvent) -> Result<usize, Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        let capacity = match budget {
            Budget::Reads => self.settings.capacity,
            Budget::Denials => self.settings.denial_capacity,
        };
        if *state.waiting.of(budget) >= capacity {
            return Err(Refused::Full);
        }
        let backlog = state.pending.len() + state.in_flight;
        *state.waiting.of(budget) += 1;
        // The writer needs waking only when it waits for a first event (no linger timer
        // is set) or when a batch is full; in between it lingers until the oldest event
        // is due, and waking it for every event (every audited read) would only make it
        // check and go back to sleep.
        let first = state.pending.is_empty();
        if first {
            state.oldest = Some(Instant::now());
        }
        state.pending.push_back((budget, event));
        state.enqueued += 1;
        let full = state.pending.len() >= self.settings.max_batch;
        drop(state);
        if first || full {
            self.wake.notify_one();
        }
        Ok(backlog + 1)
    }

    /// Events accepted and not yet durable.
    pub fn backlog(&self) -> usize {
        let state = self.lock();
        state.pending.len() + state.in_flight
    }

    /// Waits until every event accepted before the call is durable. Fails with
    /// `Unwritten` when the writer gave up on them (closed while the primary failed).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let target = {
            let mut state = self.lock();
            if state.enqueued > self.progress.borrow().durable {
                state.urgent = true;
            }
            state.enqueued
        };
        self.wake.notify_one();
        let mut progress = self.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.durable >= target || p.abandoned)
            .await
            .map(|p| *p)
            // The sender lives in `self`, so it cannot be gone while we borrow `self`.
            .unwrap_or(Progress {
                durable: 0,
                abandoned: true,
            });
        if reached.durable >= target {
            Ok(())
        } else {
            Err(AuditError::Unwritten {
                events: target - reached.durable,
            })
        }
    }

    /// Refuses new events and tells the writer to finish: it writes what it can and
    /// stops at the first failure.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The next batch: up to `max_batch` events, once `max_batch` are pending, a flush is
    /// waiting, the queue closed, or the oldest has waited `flush_interval`. `None` when
    /// the queue is closed and empty.
    async fn take(&self) -> Option<Vec<NewEvent>> {
        loop {
            let linger = {
                let mut state = self.lock();
                match state.oldest {
                    None if state.closed => return None,
                    None => None,
                    Some(oldest) => {
                        let due = oldest + self.settings.flush_interval;
                        let ready = state.pending.len() >= self.settings.max_batch
                            || state.urgent
                            || state.closed
                            || Instant::now() >= due;
                        if ready {
                            let count = state.pending.len().min(self.settings.max_batch);
                            let mut denials = 0;
                            let batch: Vec<NewEvent> = state
                                .pending
                                .drain(..count)
                                .map(|(budget, event)| {
                                    denials += usize::from(budget == Budget::Denials);
                                    event
                                })
                                .collect();
                            state.in_flight += batch.len();
                            state.in_flight_denials += denials;
                            // What is left keeps the oldest time: it lingers no longer.
                            if state.pending.is_empty() {
                                state.oldest = None;
                                state.urgent = false;
                            }
                            return Some(batch);
                        }
                        Some(due)
                    }
                }
            };
            match linger {
                Some(due) => {
                    let _ = tokio::time::timeout_at(due, self.wake.notified()).await;
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// `count` in-flight events committed.
    fn written(&self, count: usize) {
        let mut state = self.lock();
        state.in_flight -= count;
        // One batch is in flight at a time: its denials are written with it.
        let denials = state.in_flight_denials.min(count);
        state.in_flight_denials -= denials;
        state.waiting.denials -= denials;
        state.waiting.reads -= count - denials;
        debug_assert_eq!(state.waiting.total(), state.pending.len() + state.in_flight);
        drop(state);
        self.progress.send_modify(|p| p.durable += count as u64);
    }

    /// The writer stops: the in-flight batch and everything pending stay unwritten.
    fn abandon(&self) -> usize {
        let mut state = self.lock();
        let lost = state.pending.len() + state.in_flight;
        state.pending.clear();
        state.in_flight = 0;
        state.in_flight_denials = 0;
        state.waiting = Waiting::default();
        state.oldest = None;
        drop(state);
        self.progress.send_modify(|p| p.abandoned = true);
        lost
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Sleeps `duration`, or less when the queue closes meanwhile.
    async fn backoff(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.is_closed() {
            if tokio::time::timeout_at(deadline, self.wake.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Drains `queue` into the database until it is closed and empty. Per tenant, events
/// reach their chain in the order they were accepted: one writer, FIFO batches, and a
/// failed batch is retried whole before the next one is taken.
pub(crate) async fn run_writer(core: Arc<Core>, queue: Arc<Queue>) {
    let region = core.region().clone();
    while let Some(batch) = queue.take().await {
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        let mut sent_commits = Vec::new();
        loop {
            let mut result = core.append_batch(&batch, &mut sent_commits).await;
            if result.is_err() && matches!(core.committed(&sent_commits).await, Ok(true)) {
                // The server committed an attempt whose answer was lost: writing the
                // batch again would put every event in the chain twice.
                tracing::warn!(region = %region, batch = batch.len(), "an audit batch whose commit went unanswered had committed");
                result = Ok(Vec::new());
            }
            match result {
                Ok(closed) => {
                    let refused = after_close(&core, &closed);
                    queue.written(batch.len());
                    core.metrics()
                        .record_audit_events_written("batched", (batch.len() - refused) as u64);
                    core.metrics()
                        .set_audit_backlog(queue.backlog(), queue.capacity());
                    if failures > 0 {
                        tracing::info!(region = %region, failures, "audit batch written after retrying");
                    }
                    break;
                }
                Err(err) => {
                    core.metrics().record_audit_write_failure("batched");
                    if queue.is_closed() {
                        let lost = queue.abandon();
                        tracing::error!(
                            region = %region,
                            events = lost,
                            "failed to write audit events before the log closed; they are lost: {err}"
                        );
                        return;
                    }
                    // Once per outage: the retries that follow would repeat it.
                    if failures == 0 {
                        tracing::error!(
                            region = %region,
                            batch = batch.len(),
                            backlog = queue.backlog(),
                            "failed to write audit batch, retrying until it commits: {err}"
                        );
                    }
                    failures = failures.saturating_add(1);
                    queue.backoff(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Events of tenants whose chain was closed (offboarded) before they reached it: reads
/// served before the offboarding committed, queued on this node before it heard of it.
/// They cannot follow `tenant.delete`, so they are counted and logged, never dropped
/// silently.
/// Returns how many events that is.
fn after_close(core: &Core, closed: &[(model::TenantId, usize)]) -> usize {
    for (tenant, events) in closed {
        core.metrics()
            .record_audit_events_after_close("batched", *events as u64);
        tracing::warn!(
            region = %core.region(),
            tenant = %tenant,
            events,
            "audit events of an offboarded tenant reached its closed chain and were not appended"
        );
    }
    closed.iter().map(|(_, events)| events).sum()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use audit::{Action, Actor, ActorKind, Outcome};
    use model::{RegionId, TenantId};

    use super::*;

    fn event() -> NewEvent {
        let region = RegionId::parse("eu-central-1").expect("region");
        NewEvent {
            time: SystemTime::now(),
            region: region.clone(),
            tenant: TenantId::from_random_bytes([7; 16]),
            actor: Actor {
                kind: ActorKind::System,
                id: "test".into(),
            },
            action: Action::RecordRead,
            resource: "records/r1".into(),
            outcome: Outcome::Success,
            request_id: "req".into(),
            via_region: region,
        }
    }

    fn queue(capacity: usize, max_batch: usize, flush_interval: Duration) -> Queue {
        Queue::new(QueueSettings {
            capacity,
            denial_capacity: capacity,
            max_batch,
            flush_interval,
        })
    }

    #[tokio::test]
    async fn in_flight_events_count_against_the_capacity() {
        let queue = queue(3, 2, Duration::ZERO);
        for expected in 1..=3 {
            assert_eq!(queue.push(Budget::Reads, event()), Ok(expected));
        }
        assert_eq!(queue.push(Budget::Reads, event()), Err(Refused::Full));
        let batch = queue.take().await.expect("batch");
        assert_eq!(batch.len(), 2, "at most max_batch");
        assert_eq!(queue.backlog(), 3, "taken but not written");
        assert_eq!(queue.push(Budget::Reads, event()), Err(Refused::Full));
        queue.written(batch.len());
        assert_eq!(queue.backlog(), 1);
        assert_eq!(queue.push(Budget::Reads, event()), Ok(2));
    }

    #[tokio::test]
    async fn the_writer_lingers_for_a_batch_unless_a_flush_waits() {
        let linger = Duration::from_millis(30);
        let queue = queue(100, 10, linger);
        queue.push(Budget::Reads, event()).expect("accepted");
        let started = Instant::now();
        assert_eq!(queue.take().await.expect("batch").len(), 1);
        assert!(started.elapsed() >= linger, "lingered for more events");

        let queue = Arc::new(self::queue(100, 10, Duration::from_secs(3600)));
        queue.push(Budget::Reads, event()).expect("accepted");
        let flusher = tokio::spawn({
            let queue = queue.clone();
            async move { queue.flush().await }
        });
        let batch = tokio::time::timeout(Duration::from_secs(30), queue.take())
            .await
            .expect("a waiting flush cuts the linger short")
            .expect("batch");
        queue.written(batch.len());
        flusher.await.expect("join").expect("flushed");
    }

    #[tokio::test]
    async fn closing_refuses_new_events_and_abandoning_fails_flushes() {
        let queue = Arc::new(queue(10, 10, Duration::ZERO));
        queue.push(Budget::Reads, event()).expect("accepted");
        queue.push(Budget::Reads, event()).expect("accepted");
        let flusher = tokio::spawn({
            let queue = queue.clone();
            async move { queue.flush().await }
        });
        queue.close();
        assert_eq!(queue.push(Budget::Reads, event()), Err(Refused::Closed));
        let batch = queue.take().await.expect("closed, but not empty");
        assert_eq!(batch.len(), 2);
        assert_eq!(queue.abandon(), 2);
        assert!(queue.take().await.is_none(), "closed and empty");
        assert!(matches!(
            flusher.await.expect("join"),
            Err(AuditError::Unwritten { events: 2 })
        ));
    }

    #[tokio::test]
    async fn a_flood_of_denials_fills_only_its_own_budget() {
        let queue = Queue::new(QueueSettings {
            capacity: 4,
            denial_capacity: 2,
            max_batch: 100,
            flush_interval: Duration::from_secs(3600),
        });
        assert_eq!(queue.push(Budget::Denials, event()), Ok(1));
        assert_eq!(queue.push(Budget::Denials, event()), Ok(2));
        for _ in 0..10 {
            assert_eq!(queue.push(Budget::Denials, event()), Err(Refused::Full));
        }
        for expected in 3..=6 {
            assert_eq!(
                queue.push(Budget::Reads, event()),
                Ok(expected),
                "reads keep their whole budget"
            );
        }
        assert_eq!(queue.push(Budget::Reads, event()), Err(Refused::Full));
        queue.close();
        let batch = queue.take().await.expect("batch");
        assert_eq!(batch.len(), 6);
        queue.written(batch.len());
        assert_eq!(queue.backlog(), 0);
    }
}
