//! The per-node directory cache (moka): fresh entries for `ttl`, and a second, TTL-less
//! "stale" copy served only while the directory backend is unavailable.

use std::fmt;
use std::future::Future as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use model::TenantId;
use moka::future::Cache;
use moka::ops::compute::Op;

use crate::directory::{Directory, DirectoryEntry, DirectoryError};

/// A [`Directory`] in front of which every node keeps the entries it used recently.
///
/// - A fresh hit never touches the backend; concurrent misses for one tenant share one
///   backend read.
/// - When the backend is [`DirectoryError::Unavailable`], the last entry seen for the tenant
///   is served even if its TTL has passed; without one, the error is returned.
/// - The backend saying "unknown" is authoritative: nothing is served for that tenant from
///   the stale copy afterwards.
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
    ttl: Duration,
}

impl fmt::Debug for CachedDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedDirectory")
            .field("backend", &self.inner.backend)
            .field("ttl", &self.inner.ttl)
            .field("entries", &self.inner.fresh.entry_count())
            .finish()
    }
}

/// Why a miss produced no entry; shared between the callers waiting on one backend read.
#[derive(Debug)]
enum Miss {
    NotFound,
    Backend(DirectoryError),
}

impl CachedDirectory {
    /// A cache of at most `capacity` tenants whose entries are re-read after `ttl`.
    pub fn new(backend: Arc<dyn Directory>, ttl: Duration, capacity: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                fresh: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                stale: Cache::builder().max_capacity(capacity).build(),
                ttl,
            }),
        }
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
        let backend = Arc::clone(&inner.backend);
        let key = *tenant;
        let read = inner
            .fresh
            .try_get_with(key, async move {
                match backend.lookup(&key).await {
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
                    Ok(None)
                }
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
        match inner.backend.lookup(tenant).await? {
            Some(entry) => {
                let shared = Arc::new(entry.clone());
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
    /// relocation), unless the cache already holds a higher version.
    pub async fn record(&self, entry: DirectoryEntry) {
        let shared = Arc::new(entry);
        keep_higher(&self.inner.fresh, Arc::clone(&shared)).await;
        keep_higher(&self.inner.stale, shared).await;
    }

    /// Forgets the tenant (offboarding).
    pub async fn invalidate(&self, tenant: &TenantId) {
        self.inner.fresh.invalidate(tenant).await;
        self.inner.stale.invalidate(tenant).await;
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

    #[tokio::test]
    async fn unknown_tenants_are_not_cached_as_absent() {
        let (backend, cache) = setup(Duration::from_secs(60));
        let e = entry(1, "eu-west-1");
        assert_eq!(cache.lookup(&e.tenant).await, Ok(None));
        backend.upsert(&e).await.expect("upsert");
        assert_eq!(cache.lookup(&e.tenant).await, Ok(Some(e)));
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
