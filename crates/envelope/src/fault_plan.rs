//! The fault plan both failure-injecting backends ([`crate::kms::faulty`],
//! [`crate::objects::faulty`]) follow: count each call by operation, sleep a configured
//! latency, and fail the next `n` calls with a given error. Never used outside tests and
//! drills.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Call counters per operation (indexed by the backend's operation enum) and the faults
/// ordered for the next calls.
#[derive(Debug)]
pub(crate) struct FaultPlan<E, const OPERATIONS: usize> {
    ordered: Mutex<Ordered<E>>,
    calls: AtomicU64,
    calls_by_operation: [AtomicU64; OPERATIONS],
}

#[derive(Debug)]
struct Ordered<E> {
    /// How many of the next calls fail, and with what.
    failing: u32,
    error: Option<E>,
    latency: Duration,
}

impl<E: Clone, const OPERATIONS: usize> FaultPlan<E, OPERATIONS> {
    pub(crate) fn new() -> Self {
        Self {
            ordered: Mutex::new(Ordered {
                failing: 0,
                error: None,
                latency: Duration::ZERO,
            }),
            calls: AtomicU64::new(0),
            calls_by_operation: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The next `n` calls (of any operation) fail with `error`; replaces an earlier order.
    pub(crate) fn fail_next(&self, n: u32, error: E) {
        let mut ordered = self.ordered();
        ordered.failing = n;
        ordered.error = Some(error);
    }

    /// Every later call sleeps this long first (zero to stop).
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.ordered().latency = latency;
    }

    /// Calls of every operation so far, failed ones included.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls of one operation so far, failed ones included.
    pub(crate) fn calls_of(&self, operation: usize) -> u64 {
        self.calls_by_operation[operation].load(Ordering::SeqCst)
    }

    /// Counts the call, sleeps the configured latency, and returns the injected error if
    /// this call is to fail.
    pub(crate) async fn enter(&self, operation: usize) -> Result<(), E> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.calls_by_operation[operation].fetch_add(1, Ordering::SeqCst);
        let (latency, injected) = {
            let mut ordered = self.ordered();
            let injected = if ordered.failing > 0 {
                ordered.failing -= 1;
                ordered.error.clone()
            } else {
                None
            };
            (ordered.latency, injected)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        injected.map_or(Ok(()), Err)
    }

    fn ordered(&self) -> MutexGuard<'_, Ordered<E>> {
        // Plain counters and values: a panic while holding the lock leaves nothing torn.
        self.ordered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
