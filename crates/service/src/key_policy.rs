//! Automatic rotation: every node counts the values it seals per tenant and data key
//! version (in memory, bounded), and every `interval` adds its counts to the version's row
//! and rotates the keys of tenants whose active version reached its bounds (maximum seals,
//! maximum age; per tenant, else the region's [`KeyPolicy`]), exactly as an admin's
//! `POST .../keys/rotate` would, audited as `key.rotate` by the system.
//!
//! A tenant admin may set the tenant's own bounds (`GET`/`PUT .../keys/policy`), tighter
//! than the region's, never looser ([`RegionService::set_key_bounds`]).
//!
//! Counts are approximate by design: a node that dies loses what it had not added yet (at
//! most `interval` of its seals), and a seal whose transaction rolled back still counts.
//! The bounds sit far below AES-GCM's random-nonce limit (`docs/envelope.md`), so neither
//! matters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use audit::{Actor, ActorKind};
use model::{KeyVersion, TenantId};
use store::tenant_keys::{self, RotationDue};

use crate::ServiceError;
use crate::stoppable::StoppableTask;
use crate::tenancy::{Caller, RegionService, RequestContext};
use crate::unit_of_work::EventTiming;

/// When a tenant's data key is rotated on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The oldest an active data key version may get.
    pub max_age: Duration,
    /// The most values an active data key version may seal (2^30: a quarter of AES-GCM's
    /// 2^32 bound for random 96-bit nonces).
    pub max_seals: u64,
    /// How often a node adds its seal counts and looks for tenants due.
    pub interval: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(90 * 24 * 3600),
            max_seals: 1 << 30,
            interval: Duration::from_secs(10),
        }
    }
}

/// Tenant and key versions a node counts at once; seals under a version beyond them are
/// not counted until the next flush empties the map (approximate, and bounded).
const MAX_COUNTED_VERSIONS: usize = 100_000;
/// Tenants rotated per round at most (the rest are due again next round).
const ROTATIONS_PER_ROUND: i64 = 100;

/// Seals per (tenant, data key version) since the last flush.
#[derive(Debug, Default)]
pub(crate) struct SealCounts {
    counts: Mutex<HashMap<(TenantId, KeyVersion), u64>>,
}

impl SealCounts {
    /// Counts `seals` values sealed under `version` of `tenant`'s data key.
    pub(crate) fn add(&self, tenant: TenantId, version: KeyVersion, seals: u64) {
        if seals == 0 {
            return;
        }
        let mut counts = lock(&self.counts);
        let full = counts.len() >= MAX_COUNTED_VERSIONS;
        match counts.get_mut(&(tenant, version)) {
            Some(count) => *count = count.saturating_add(seals),
            None if !full => {
                counts.insert((tenant, version), seals);
            }
            None => {}
        }
    }

    fn take(&self) -> HashMap<(TenantId, KeyVersion), u64> {
        std::mem::take(&mut *lock(&self.counts))
    }

    /// Puts counts that could not be written back (they are added to what came since).
    fn restore(&self, taken: HashMap<(TenantId, KeyVersion), u64>) {
        for ((tenant, version), seals) in taken {
            self.add(tenant, version, seals);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while counting leaves a count, never a half-written entry.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The policy's task on one node. Stop it with [`StoppableTask::stop`].
pub type KeyPolicyTask = StoppableTask;

impl RegionService {
    /// Counts values this node sealed under `version` of `tenant`'s data key.
    pub(crate) fn count_seals(&self, tenant: &TenantId, version: KeyVersion, seals: u64) {
        self.inner.seal_counts.add(*tenant, version, seals);
    }

    /// One round of the policy: adds this node's seal counts to the database, then rotates
    /// the keys of the tenants due (each with its re-encryption job). Returns the tenants
    /// rotated.
    pub async fn enforce_key_policy(&self) -> Result<Vec<TenantId>, ServiceError> {
        let policy = self.inner.settings.key_policy;
        let taken = self.inner.seal_counts.take();
        if !taken.is_empty() {
            let mut tenants = Vec::with_capacity(taken.len());
            let mut versions = Vec::with_capacity(taken.len());
            let mut counts = Vec::with_capacity(taken.len());
            for ((tenant, version), seals) in &taken {
                tenants.push(tenant.as_str());
                versions.push(i32::try_from(version.get()).unwrap_or(i32::MAX));
                counts.push(i64::try_from(*seals).unwrap_or(i64::MAX));
            }
            let added = match self.inner.database.primary().get().await {
                Ok(primary) => {
                    tenant_keys::add_seals(primary.client(), &tenants, &versions, &counts).await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = added {
                drop(tenants);
                self.inner.seal_counts.restore(taken);
                return Err(err.into());
            }
        }
        let due = {
            let primary = self.inner.database.primary().get().await?;
            tenant_keys::due_for_rotation(
                primary.client(),
                i64::try_from(policy.max_seals).unwrap_or(i64::MAX),
                i64::try_from(policy.max_age.as_secs()).unwrap_or(i64::MAX),
                ROTATIONS_PER_ROUND,
            )
            .await?
        };
        let mut rotated = Vec::new();
        for (tenant, why) in due {
            match self.start_rotation(&self.policy_caller(tenant, why)).await {
                Ok(started) => {
                    tracing::info!(region = %self.inner.region, tenant = %tenant, job = %started.job.id, reason = why.as_str(), "rotated a tenant's data key by policy");
                    rotated.push(tenant);
                }
                // Another node rotated it this round.
                Err(ServiceError::Conflict(_)) => {}
                Err(err) => {
                    tracing::error!(region = %self.inner.region, tenant = %tenant, "failed to rotate a tenant's data key by policy, retrying next round: {}", store::with_causes(&err));
                }
            }
        }
        Ok(rotated)
    }

    /// The system, acting on `tenant` by the key policy (the reason is in the request id,
    /// which the `key.rotate` event carries).
    fn policy_caller(&self, tenant: TenantId, why: RotationDue) -> Caller {
        Caller {
            tenant,
            actor: Actor {
                kind: ActorKind::System,
                id: "key-policy".to_owned(),
            },
            role: None,
            context: RequestContext {
                request_id: format!("key-policy-{}", why.as_str()),
                via_region: self.inner.region.clone(),
                client: None,
            },
        }
    }

    /// Runs [`RegionService::enforce_key_policy`] every `interval` until stopped.
    pub fn spawn_key_policy(&self) -> KeyPolicyTask {
        let service = self.clone();
        StoppableTask::spawn("key policy", move |mut stopped| async move {
            let mut ticker = tokio::time::interval(service.inner.settings.key_policy.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {}
                }
                match service.enforce_key_policy().await {
                    Ok(_) => failing = false,
                    Err(err) => {
                        if !failing {
                            tracing::error!(region = %service.inner.region, "failed to enforce the key policy, retrying every interval: {}", store::with_causes(&err));
                        }
                        failing = true;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_counts_add_up_per_version_and_stay_bounded() {
        let counts = SealCounts::default();
        let (a, b) = (
            TenantId::from_random_bytes([1; 16]),
            TenantId::from_random_bytes([2; 16]),
        );
        let (v1, v2) = (KeyVersion::FIRST, KeyVersion::new(2).expect("positive"));
        counts.add(a, v1, 3);
        counts.add(a, v1, 4);
        counts.add(a, v2, 1);
        counts.add(b, v1, 0);
        let taken = counts.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[&(a, v1)], 7);
        assert!(counts.take().is_empty(), "taking empties");
        counts.restore(taken);
        counts.add(a, v1, 1);
        assert_eq!(
            counts.take()[&(a, v1)],
            8,
            "restored counts add to new ones"
        );

        for n in 0..MAX_COUNTED_VERSIONS as u32 + 10 {
            counts.add(a, KeyVersion::new(n + 1).expect("positive"), 1);
        }
        assert_eq!(counts.take().len(), MAX_COUNTED_VERSIONS);
    }
}

/// The most seals a tenant may allow one data key version: a quarter of AES-GCM's 2^32
/// bound for random 96-bit nonces (`docs/envelope.md` has the arithmetic). The region's
/// default may be lower, never higher.
pub const MAX_SEALS_CEILING: u64 = 1 << 30;
/// The shortest age bound a tenant may set: a rotation queues a re-encryption of
/// everything the tenant stores, so a tenant must not make its keys rotate by the minute.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(3600);

/// A tenant's own bounds of automatic rotation (`None`: the region's [`KeyPolicy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantKeyBounds {
    pub max_seals: Option<u64>,
    pub max_age: Option<Duration>,
}

/// A tenant's bounds and the region's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBoundsView {
    pub tenant: TenantKeyBounds,
    /// The region's default seals bound (the ceiling a tenant may set, too).
    pub default_max_seals: u64,
    /// The region's default age bound (the longest a tenant may set, too).
    pub default_max_age: Duration,
}

impl RegionService {
    /// The tenant's rotation bounds as set, with the region's defaults.
    pub async fn key_bounds(&self, caller: &Caller) -> Result<KeyBoundsView, ServiceError> {
        let tenant = caller.tenant;
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.read_tenant(&tenant).await?;
        let stored = store::tenants::key_bounds(tx.client(), &tenant).await?;
        tx.finish().await?;
        let stored = stored.ok_or(ServiceError::NotFound { what: "tenant" })?;
        Ok(self.bounds_view(TenantKeyBounds {
            max_seals: stored.max_seals.and_then(|v| u64::try_from(v).ok()),
            max_age: stored
                .max_age_seconds
                .and_then(|v| u64::try_from(v).ok())
                .map(Duration::from_secs),
        }))
    }

    /// Sets the tenant's rotation bounds (`None`: the region's default), audited as
    /// `key.policy` in the same transaction. A seals bound must be 1 to the region's
    /// default (itself at most [`MAX_SEALS_CEILING`]); an age bound [`MIN_MAX_AGE`] to the
    /// region's default: a tenant may rotate more often than the region, never less.
    /// The next round of the policy (every `interval`) applies them.
    pub async fn set_key_bounds(
        &self,
        caller: &Caller,
        bounds: TenantKeyBounds,
    ) -> Result<KeyBoundsView, ServiceError> {
        let view = self.bounds_view(bounds);
        if let Some(seals) = bounds.max_seals
            && !(1..=view.default_max_seals).contains(&seals)
        {
            return Err(ServiceError::invalid(
                "max_seals",
                format!("must be between 1 and {}", view.default_max_seals),
            ));
        }
        if let Some(age) = bounds.max_age
            && !(MIN_MAX_AGE..=view.default_max_age).contains(&age)
        {
            return Err(ServiceError::invalid(
                "max_age_seconds",
                format!(
                    "must be between {} and {}",
                    MIN_MAX_AGE.as_secs(),
                    view.default_max_age.as_secs()
                ),
            ));
        }
        let tenant = caller.tenant;
        let shown = |value: Option<u64>| value.map_or("default".to_owned(), |v| v.to_string());
        let event = self.caller_event(
            caller,
            audit::Action::KeyPolicy,
            &format!(
                "keys/policy?max_seals={}&max_age_seconds={}",
                shown(bounds.max_seals),
                shown(bounds.max_age.map(|age| age.as_secs())),
            ),
            audit::Outcome::Success,
        );
        let stored = store::tenants::KeyBounds {
            max_seals: bounds.max_seals.map(to_column),
            max_age_seconds: bounds.max_age.map(|age| to_column(age.as_secs())),
        };
        self.write(&tenant, EventTiming::AfterChange, [event], async |tx| {
            if store::tenants::set_key_bounds(tx, &tenant, stored).await? {
                Ok(())
            } else {
                Err(ServiceError::NotFound { what: "tenant" })
            }
        })
        .await?;
        tracing::info!(region = %self.inner.region, tenant = %tenant, "set a tenant's key rotation bounds");
        Ok(view)
    }

    fn bounds_view(&self, tenant: TenantKeyBounds) -> KeyBoundsView {
        let policy = self.inner.settings.key_policy;
        KeyBoundsView {
            tenant,
            default_max_seals: policy.max_seals.min(MAX_SEALS_CEILING),
            default_max_age: policy.max_age,
        }
    }
}

/// A bound checked against the region's defaults (far below `i64::MAX`) as its column.
fn to_column(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
