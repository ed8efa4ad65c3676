//! The per-node directory cache (moka): fresh entries for `ttl`, a second, TTL-less
//! "stale" copy served only while the directory backend cannot be asked, and tenants the
//! backend did not know, remembered for a few seconds. Lookups of tenants the cache does
//! not hold draw from a budget, so that a flood of made-up tenant ids costs the shared
//! directory a bounded number of queries however many addresses it comes from.

use std::fmt;
use std::future::Future as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use model::TenantId;
use moka::future::Cache;
use moka::ops::compute::Op;

use crate::directory::{Directory, DirectoryEntry, DirectoryError};
use crate::limits::{Rate, SharedBucket};
use crate::metrics::RouterMetrics;

/// How a [`CachedDirectory`] bounds what unknown tenants cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectoryLimits {
    /// How long the backend's "unknown" is believed (default 5 s). A tenant created on
    /// this node is found at once ([`CachedDirectory::record`] forgets the "unknown");
    /// a node that asked for the tenant just before it was created elsewhere finds it at
    /// most this long after.
    pub unknown_ttl: Duration,
    /// Backend lookups of tenants the cache does not hold (default
    /// [`Rate::DIRECTORY_MISSES_DEFAULT`]). Past it, a tenant with a stale entry is served
    /// from it; one without gets [`DirectoryError::Busy`] and no query is made.
    pub misses: Rate,
}

impl Default for DirectoryLimits {
    fn default() -> Self {
        Self {
            unknown_ttl: Duration::from_secs(5),
            misses: Rate::DIRECTORY_MISSES_DEFAULT,
        }
    }
}

/// A [`Directory`] in front of which every node keeps the entries it used recently.
///
/// - A fresh hit never touches the backend; concurrent misses for one tenant share one
///   backend read.
/// - When the backend is [`DirectoryError::Unavailable`], or the miss budget is spent, the
///   last entry seen for the tenant is served even if its TTL has passed; without one,
///   the error is returned.
/// - The backend saying "unknown" is authoritative: nothing is served for that tenant from
///   the stale copy afterwards, and the "unknown" is kept for
///   [`DirectoryLimits::unknown_ttl`].
///
/// Cloning is cheap: clones share the caches.
#[derive(Clone)]
pub struct CachedDirectory {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Directory>,
    fresh: Cache<TenantId, Arc<DirectoryEntry>>,
    stale: Cache<TenantId, Arc<DirectoryEntry>>,
    /// Tenants the backend said it does not know, for `limits.unknown_ttl`.
    unknown: Cache<TenantId, ()>,
    ttl: Duration,
    limits: DirectoryLimits,
    misses: SharedBucket,
    /// Lookups sent to the backend (misses and refreshes).
    queries: AtomicU64,
    metrics: OnceLock<RouterMetrics>,
}

impl Inner {
    fn queried(&self, reason: &'static str) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.directory_query(reason);
        }
    }
}

impl fmt::Debug for CachedDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedDirectory")
            .field("backend", &self.inner.backend)
            .field("ttl", &self.inner.ttl)
            .field("limits", &self.inner.limits)
            .field("entries", &self.inner.fresh.entry_count())
            .finish()
    }
}

/// Why a miss produced no entry; shared between the callers waiting on one backend read.
#[derive(Debug)]
enum Miss {
    NotFound,
    OverBudget,
    Backend(DirectoryError),
}

impl CachedDirectory {
    /// A cache of at most `capacity` tenants whose entries are re-read after `ttl`, with
    /// the default [`DirectoryLimits`].
    pub fn new(backend: Arc<dyn Directory>, ttl: Duration, capacity: u64) -> Self {
        Self::with_limits(backend, ttl, capacity, DirectoryLimits::default())
    }

    /// [`CachedDirectory::new`] with other limits (at most `capacity` unknown tenants are
    /// remembered too, in a cache of their own, so a flood of them evicts no entry).
    pub fn with_limits(
        backend: Arc<dyn Directory>,
        ttl: Duration,
        capacity: u64,
        limits: DirectoryLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                fresh: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                stale: Cache::builder().max_capacity(capacity).build(),
                unknown: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(limits.unknown_ttl)
                    .build(),
                ttl,
                limits,
                misses: SharedBucket::new(limits.misses),
                queries: AtomicU64::new(0),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Counts backend queries in `metrics` too (the router's, set once when it starts).
    pub(crate) fn report_to(&self, metrics: RouterMetrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// How many lookups this cache has sent to its backend (misses and refreshes), for
    /// tests and benchmarks; `router_directory_queries_total` counts the same.
    pub fn backend_queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// The backend this cache reads.
    pub fn backend(&self) -> &Arc<dyn Directory> {
        &self.inner.backend
    }

    /// The tenant's entry, `None` when the directory does not know it.
    pub async fn lookup(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<DirectoryEntry>, DirectoryError> {
        self.lookup_shared(tenant)
            .await
            .map(|entry| entry.map(|e| (*e).clone()))
    }

    /// Whether the tenant is cached as unknown, so that looking it up queries nothing.
    pub fn known_unknown(&self, tenant: &TenantId) -> bool {
        self.inner.unknown.contains_key(tenant)
    }

    /// The tenant's fresh entry if the cache holds one and answers at once; `None` means
    /// "ask [`CachedDirectory::lookup_shared`]", not "unknown". Lets the router decide a
    /// cached tenant's route before its first await, without a future for the lookup.
    pub fn cached(&self, tenant: &TenantId) -> Option<Arc<DirectoryEntry>> {
        let mut get = std::pin::pin!(self.inner.fresh.get(tenant));
        // A hit completes on the first poll; if moka has to wait (its housekeeping lock),
        // the read is abandoned, which has no effect but a skipped access record.
        match get
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(entry) => entry,
            Poll::Pending => None,
        }
    }

    /// Like [`CachedDirectory::lookup`] without copying the entry (the router's hot path).
    pub async fn lookup_shared(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<DirectoryEntry>>, DirectoryError> {
        if let Some(entry) = self.inner.fresh.get(tenant).await {
            return Ok(Some(entry));
        }
        // Boxed: the miss path's futures (moka's loader, the stale copy) are several
        // times the hit path's, and every caller's future would otherwise carry them.
        Box::pin(self.lookup_missed(tenant)).await
    }

    /// [`CachedDirectory::lookup_shared`] after a miss of the fresh cache.
    async fn lookup_missed(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<DirectoryEntry>>, DirectoryError> {
        let inner = &self.inner;
        if inner.unknown.contains_key(tenant) {
            return Ok(None);
        }
        let shared = Arc::clone(inner);
        let key = *tenant;
        let read = inner
            .fresh
            .try_get_with(key, async move {
                if shared.misses.take().is_err() {
                    return Err(Miss::OverBudget);
                }
                shared.queried("miss");
                match shared.backend.lookup(&key).await {
                    Ok(Some(entry)) => Ok(Arc::new(entry)),
                    Ok(None) => Err(Miss::NotFound),
                    Err(err) => Err(Miss::Backend(err)),
                }
            })
            .await;
        match read {
            Ok(entry) => {
                keep_higher(&inner.stale, Arc::clone(&entry)).await;
                Ok(Some(entry))
            }
            Err(miss) => match &*miss {
                Miss::NotFound => {
                    inner.stale.invalidate(tenant).await;
                    // Checked after the fresh cache, so a tenant recorded meanwhile (created
                    // on this node) is still found.
                    inner.unknown.insert(*tenant, ()).await;
                    Ok(None)
                }
                Miss::OverBudget => match inner.stale.get(tenant).await {
                    Some(entry) => Ok(Some(entry)),
                    None => Err(DirectoryError::Busy),
                },
                Miss::Backend(err @ DirectoryError::Unavailable(_)) => {
                    match inner.stale.get(tenant).await {
                        Some(entry) => {
                            tracing::debug!(tenant = %tenant, "directory unavailable, serving a stale entry");
                            Ok(Some(entry))
                        }
                        None => Err(err.clone()),
                    }
                }
                Miss::Backend(err) => Err(err.clone()),
            },
        }
    }

    /// Re-reads the tenant's entry from the backend and replaces the cached one (after a
    /// `421` from the region the cache said was home). The backend is the authority here:
    /// its answer replaces the cached entry whatever the versions.
    pub async fn refresh(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<DirectoryEntry>, DirectoryError> {
        let inner = &self.inner;
        inner.queried("refresh");
        match inner.backend.lookup(tenant).await? {
            Some(entry) => {
                let shared = Arc::new(entry.clone());
                inner.unknown.invalidate(tenant).await;
                inner.fresh.insert(*tenant, Arc::clone(&shared)).await;
                inner.stale.insert(*tenant, shared).await;
                Ok(Some(entry))
            }
            None => {
                self.invalidate(tenant).await;
                Ok(None)
            }
        }
    }

    /// Records an entry this node has just written to the backend (tenant creation,
    /// relocation), unless the cache already holds a higher version, and forgets that the
    /// tenant was unknown: a tenant created here is found here at once.
    pub async fn record(&self, entry: DirectoryEntry) {
        let shared = Arc::new(entry);
        keep_higher(&self.inner.fresh, Arc::clone(&shared)).await;
        keep_higher(&self.inner.stale, Arc::clone(&shared)).await;
        self.inner.unknown.invalidate(&shared.tenant).await;
    }

    /// Forgets the tenant (offboarding), and that it was unknown.
    pub async fn invalidate(&self, tenant: &TenantId) {
        self.inner.fresh.invalidate(tenant).await;
        self.inner.stale.invalidate(tenant).await;
        self.inner.unknown.invalidate(tenant).await;
    }
}

async fn keep_higher(cache: &Cache<TenantId, Arc<DirectoryEntry>>, entry: Arc<DirectoryEntry>) {
    cache
        .entry(entry.tenant)
        .and_compute_with(|current| {
            let op = match current {
                Some(current) if current.value().version > entry.version => Op::Nop,
                _ => Op::Put(entry),
            };
            std::future::ready(op)
        })
        .await;
}

#[cfg(test)]
mod tests {
    use model::{RegionId, Transit};

    use super::*;
    use crate::directory::MemoryDirectory;

    fn entry(version: u64, home: &str) -> DirectoryEntry {
        DirectoryEntry {
            tenant: TenantId::from_random_bytes([9; 16]),
            home: RegionId::parse(home).expect("region"),
            allowed: vec![],
            transit: Transit::Proxy,
            version,
        }
    }

    fn setup(ttl: Duration) -> (Arc<MemoryDirectory>, CachedDirectory) {
        let backend = Arc::new(MemoryDirectory::new());
        let cache = CachedDirectory::new(backend.clone(), ttl, 1000);
        (backend, cache)
    }

    #[tokio::test]
    async fn hits_never_touch_the_backend() {
        let (backend, cache) = setup(Duration::from_secs(60));
        let e = entry(1, "eu-west-1");
        backend.upsert(&e).await.expect("upsert");
        for _ in 0..5 {
            assert_eq!(cache.lookup(&e.tenant).await, Ok(Some(e.clone())));
        }
        assert_eq!(backend.lookups(), 1);
    }

    fn limited(unknown_ttl: Duration, misses: Rate) -> (Arc<MemoryDirectory>, CachedDirectory) {
        let backend = Arc::new(MemoryDirectory::new());
        let limits = DirectoryLimits {
            unknown_ttl,
            misses,
        };
        let cache =
            CachedDirectory::with_limits(backend.clone(), Duration::from_secs(60), 1000, limits);
        (backend, cache)
    }

    /// An unknown tenant is remembered as unknown for a short while: asking again costs no
    /// query. Recording it (its creation on this node) makes it found at once; a creation
    /// elsewhere is found once the "unknown" has expired.
    #[tokio::test]
    async fn unknown_tenants_are_cached_as_absent_briefly_and_a_record_ends_it() {
        let (backend, cache) = limited(Duration::from_millis(300), Rate::DIRECTORY_MISSES_DEFAULT);
        let e = entry(1, "eu-west-1");
        assert_eq!(cache.lookup(&e.tenant).await, Ok(None));
        assert_eq!(cache.lookup(&e.tenant).await, Ok(None));
        assert_eq!(
            backend.lookups(),
            1,
            "the second lookup is answered by the cache"
        );
        assert_eq!(cache.backend_queries(), 1);

        backend.upsert(&e).await.expect("upsert");
        cache.record(e.clone()).await;
        assert_eq!(cache.lookup(&e.tenant).await, Ok(Some(e)));
        assert_eq!(backend.lookups(), 1);

        let elsewhere = DirectoryEntry {
            tenant: TenantId::from_random_bytes([5; 16]),
            ..entry(1, "us-east-1")
        };
        assert_eq!(cache.lookup(&elsewhere.tenant).await, Ok(None));
        backend.upsert(&elsewhere).await.expect("upsert");
        assert_eq!(
            cache.lookup(&elsewhere.tenant).await,
            Ok(None),
            "still believed"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            cache.lookup(&elsewhere.tenant).await,
            Ok(Some(elsewhere)),
            "found once the unknown expired"
        );
        assert_eq!(backend.lookups(), 3);
    }

    /// Past the miss budget no query is made: an unseen tenant is `Busy`, a tenant with a
    /// stale entry is served from it, a fresh one as always.
    #[tokio::test(start_paused = true)]
    async fn past_the_miss_budget_no_query_is_made() {
        let (backend, cache) = limited(
            Duration::from_secs(5),
            Rate {
                per_second: 1.0,
                burst: 3.0,
            },
        );
        let known = entry(1, "eu-west-1");
        backend.upsert(&known).await.expect("upsert");
        assert_eq!(cache.lookup(&known.tenant).await, Ok(Some(known.clone())));
        for i in 0..20u8 {
            let _ = cache
                .lookup(&TenantId::from_random_bytes([i + 100; 16]))
                .await;
        }
        assert_eq!(backend.lookups(), 3, "the burst, and no more");
        assert_eq!(
            cache.lookup(&TenantId::from_random_bytes([1; 16])).await,
            Err(DirectoryError::Busy)
        );
        assert_eq!(cache.lookup(&known.tenant).await, Ok(Some(known.clone())));

        cache.inner.fresh.invalidate(&known.tenant).await;
        assert_eq!(
            cache.lookup(&known.tenant).await,
            Ok(Some(known)),
            "served from the stale copy"
        );
        assert_eq!(backend.lookups(), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            cache.lookup(&TenantId::from_random_bytes([1; 16])).await,
            Ok(None),
            "a token back"
        );
        assert_eq!(backend.lookups(), 4);
    }

    #[tokio::test]
    async fn an_unavailable_backend_is_bridged_by_the_stale_copy() {
        let (backend, cache) = setup(Duration::from_millis(50));
        let e = entry(1, "eu-west-1");
        backend.upsert(&e).await.expect("upsert");
        assert_eq!(cache.lookup(&e.tenant).await, Ok(Some(e.clone())));
        tokio::time::sleep(Duration::from_millis(120)).await;
        backend.set_unavailable(true);
        assert_eq!(cache.lookup(&e.tenant).await, Ok(Some(e.clone())));
        assert!(backend.lookups() >= 2, "the expired entry was re-read");

        let other = TenantId::from_random_bytes([1; 16]);
        let err = cache.lookup(&other).await.expect_err("nothing cached");
        assert!(matches!(err, DirectoryError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn record_keeps_the_higher_version_and_refresh_follows_the_backend() {
        let (backend, cache) = setup(Duration::from_secs(60));
        cache.record(entry(3, "eu-west-1")).await;
        cache.record(entry(2, "us-east-1")).await;
        let tenant = entry(1, "eu-west-1").tenant;
        assert_eq!(cache.lookup(&tenant).await, Ok(Some(entry(3, "eu-west-1"))));
        assert_eq!(backend.lookups(), 0);

        backend.force(entry(4, "ap-south-1"));
        assert_eq!(
            cache.refresh(&tenant).await,
            Ok(Some(entry(4, "ap-south-1")))
        );
        assert_eq!(
            cache.lookup(&tenant).await,
            Ok(Some(entry(4, "ap-south-1")))
        );

        backend.remove(&tenant);
        assert_eq!(cache.refresh(&tenant).await, Ok(None));
        backend.set_unavailable(true);
        assert!(
            cache.lookup(&tenant).await.is_err(),
            "nothing stale is kept"
        );
    }
}
