//! A cap on one tenant's concurrent write transactions: each holds a pooled primary
//! connection for as long as it runs, and a tenant whose writers queue on its chain head
//! (or on a lock someone holds) must not take every connection of the region's pool.
//! Beyond the cap a writer waits briefly for a slot, then answers 503 with `Retry-After`;
//! other tenants never wait on it.

use std::sync::Arc;
use std::time::Duration;

use model::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ServiceError;

/// How many tenants' slot counters a node keeps (an idle tenant's is dropped and made
/// again when it writes: at worst a tenant briefly gets a fresh cap while its old
/// writers finish).
const TRACKED_TENANTS: u64 = 100_000;
const IDLE_FOR: Duration = Duration::from_secs(600);

/// The slots of every tenant: `per_tenant` concurrent writes each.
#[derive(Debug)]
pub(crate) struct TenantWriteSlots {
    slots: moka::sync::Cache<TenantId, Arc<Semaphore>>,
    per_tenant: usize,
    wait: Duration,
}

/// A tenant's write in progress; the slot frees when it drops.
#[derive(Debug)]
pub(crate) struct WriteSlot {
    _permit: OwnedSemaphorePermit,
}

impl TenantWriteSlots {
    pub(crate) fn new(per_tenant: usize, wait: Duration) -> Self {
        Self {
            slots: moka::sync::Cache::builder()
                .max_capacity(TRACKED_TENANTS)
                .time_to_idle(IDLE_FOR)
                .build(),
            per_tenant: per_tenant.max(1),
            wait,
        }
    }

    /// A slot of `tenant`, waiting at most the configured time for one.
    pub(crate) async fn acquire(&self, tenant: &TenantId) -> Result<WriteSlot, ServiceError> {
        let slots = self
            .slots
            .get_with(*tenant, || Arc::new(Semaphore::new(self.per_tenant)));
        match tokio::time::timeout(self.wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(WriteSlot { _permit: permit }),
            // Timed out (or, never, closed): the tenant's writes are all busy.
            Ok(Err(_)) | Err(_) => Err(ServiceError::Unavailable {
                what: "the tenant's write capacity (its concurrent writes are at the cap)",
                retry_after: Duration::from_secs(1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tenant_at_its_cap_waits_then_gets_a_retryable_answer_while_another_writes() {
        let slots = TenantWriteSlots::new(2, Duration::from_millis(500));
        let busy = TenantId::parse("0b6f7a52-4a8e-4c39-9a53-0c1f7d0a1e42").expect("tenant");
        let other = TenantId::parse("1c7e8b63-5b9f-4d4a-8b64-1d2e8e1b2f53").expect("tenant");
        let first = slots.acquire(&busy).await.expect("a slot");
        let _second = slots.acquire(&busy).await.expect("a slot");

        let started = tokio::time::Instant::now();
        let third = slots.acquire(&busy).await;
        assert!(
            matches!(third, Err(ServiceError::Unavailable { retry_after, .. }) if retry_after == Duration::from_secs(1)),
            "{third:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        slots
            .acquire(&other)
            .await
            .expect("another tenant is not capped by it");

        drop(first);
        slots.acquire(&busy).await.expect("a freed slot");
    }
}
