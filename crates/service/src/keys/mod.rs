//! Tenant keys for one region: provisioning, the bounded in-memory cache of unwrapped
//! keys, rotation, KMS rewrapping, re-encryption and crypto-shredding.
//!
//! The hot path (sealing and opening values) almost never calls the KMS: unwrapped keys
//! are cached (bounded by entries, age and uses; concurrent misses on one key make one KMS
//! call), and the active version of each tenant is cached briefly. Wrapped keys are read
//! from the primary, or from a replica while the primary is down, so reads go on.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envelope::kms::{EncryptionContext, Kms, KmsError, WrappedKey, tenant_key_context};
use envelope::seal::{self, OpenError, SealContext};
use envelope::sealed_objects::SealedObjectError;
use envelope::{DataKey, KeyPurpose, KeyState, KeyVersion};
use model::{RegionId, TenantId};
use moka::future::Cache;
use store::tenant_keys::{self, StoredKey};
use store::{RegionDatabase, StoreError};
use telemetry::NodeMetrics;

/// Cache keys are ids, hashed on every sealed value: a fast seeded hash, not SipHash.
type FastHash = foldhash::fast::RandomState;

/// Bounds of the unwrapped-key cache.
#[derive(Debug, Clone)]
pub struct KeyringSettings {
    /// Unwrapped keys held at most.
    pub capacity: u64,
    /// An unwrapped key is dropped (and zeroized) this long after it was unwrapped.
    pub max_age: Duration,
    /// An unwrapped key is dropped after this many uses, and unwrapped anew.
    pub max_uses: u64,
    /// How long a node trusts its idea of a tenant's active version. Another node's
    /// rotation is seen within this time; until then the previous version (still valid
    /// for opening) keeps sealing.
    pub active_version_ttl: Duration,
}

impl Default for KeyringSettings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_age: Duration::from_secs(300),
            max_uses: 1_000_000,
            active_version_ttl: Duration::from_secs(5),
        }
    }
}

/// Why an object could not be re-encrypted.
#[derive(Debug, thiserror::Error)]
pub enum ObjectKeyError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Object(#[from] SealedObjectError),
}

/// Cloned out of the key cache to every caller waiting on one load, hence the shared
/// causes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The tenant's keys were destroyed: its data is permanently unreadable.
    #[error("tenant {tenant} has been crypto-shredded")]
    Shredded { tenant: TenantId },
    #[error("tenant {tenant} has no keys")]
    NotProvisioned { tenant: TenantId },
    #[error("tenant {tenant} has no {purpose} key version {version}")]
    UnknownVersion {
        tenant: TenantId,
        purpose: &'static str,
        version: u32,
    },
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The database could not be reached: retry later.
    #[error("key store unavailable")]
    Unavailable(#[source] Arc<StoreError>),
    #[error("key store error")]
    Database(#[source] Arc<StoreError>),
}

impl From<StoreError> for KeyError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Self::Unavailable(Arc::new(err)),
            other => Self::Database(Arc::new(other)),
        }
    }
}

/// Errors are equal when they say the same; database failures only when they are the
/// same failure (one load's error, cloned).
impl PartialEq for KeyError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Shredded { tenant: a }, Self::Shredded { tenant: b })
            | (Self::NotProvisioned { tenant: a }, Self::NotProvisioned { tenant: b }) => a == b,
            (
                Self::UnknownVersion {
                    tenant: a,
                    purpose: pa,
                    version: va,
                },
                Self::UnknownVersion {
                    tenant: b,
                    purpose: pb,
                    version: vb,
                },
            ) => a == b && pa == pb && va == vb,
            (Self::Kms(a), Self::Kms(b)) => a == b,
            (Self::Open(a), Self::Open(b)) => a == b,
            (Self::Unavailable(a), Self::Unavailable(b))
            | (Self::Database(a), Self::Database(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for KeyError {}

mod cache;
mod lifecycle;

use cache::{CachedKey, Forgotten, HotKeys, KeyId};
pub use cache::{IndexKeys, MAX_FIELD_KEYS};
pub use lifecycle::{NextDataKey, RewrapOutcome, RewrapReport};

/// Unwraps a stored key through the region's KMS, with the encryption context that binds
/// it to its tenant, region and purpose: for the keyring, and for readers that load
/// wrapped keys themselves (the analytics export, on a replica).
pub async fn unwrap_stored(
    kms: &dyn Kms,
    region: &RegionId,
    stored: StoredKey,
) -> Result<DataKey, UnwrapError> {
    let (Some(key_id), Some(ciphertext)) = (stored.kms_key_id, stored.wrapped) else {
        return Err(UnwrapError::Shredded {
            tenant: stored.tenant,
        });
    };
    if stored.state == KeyState::Destroyed {
        return Err(UnwrapError::Shredded {
            tenant: stored.tenant,
        });
    }
    let context = tenant_key_context(&stored.tenant, region, stored.purpose);
    let wrapped = WrappedKey { key_id, ciphertext };
    let material = kms.decrypt(&wrapped, &context).await?;
    Ok(DataKey::new(
        stored.tenant,
        region.clone(),
        stored.purpose,
        stored.version,
        material,
    ))
}

/// Why [`unwrap_stored`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    #[error("the keys of tenant {tenant} were destroyed")]
    Shredded { tenant: TenantId },
    #[error(transparent)]
    Kms(#[from] KmsError),
}

impl From<UnwrapError> for KeyError {
    fn from(err: UnwrapError) -> Self {
        match err {
            UnwrapError::Shredded { tenant } => KeyError::Shredded { tenant },
            UnwrapError::Kms(err) => err.into(),
        }
    }
}

/// The tenant keys of one region. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    region: RegionId,
    kms: Arc<dyn Kms>,
    database: RegionDatabase,
    metrics: Arc<NodeMetrics>,
    settings: KeyringSettings,
    keys: Cache<KeyId, Arc<CachedKey>, FastHash>,
    hot: Arc<HotKeys>,
    active: Cache<(TenantId, KeyPurpose), ActiveVersion, FastHash>,
    forgotten: Forgotten,
}

/// A tenant's active version of one purpose, with the hot index's generation when it was
/// read (see [`Forgotten`]).
#[derive(Debug, Clone, Copy)]
struct ActiveVersion {
    version: KeyVersion,
    loaded_in: u64,
}

/// How often a lookup loads a key or version again after finding it stale before it reads
/// one without the cache (forgets kept overtaking its loads).
const STALE_RELOADS: usize = 2;

impl Keyring {
    pub fn new(
        database: RegionDatabase,
        kms: Arc<dyn Kms>,
        metrics: Arc<NodeMetrics>,
        settings: KeyringSettings,
    ) -> Self {
        let hot = Arc::new(HotKeys::new());
        let evicted = hot.clone();
        let keys = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.max_age)
            .support_invalidation_closures()
            .eviction_listener(move |id: Arc<KeyId>, _, _| evicted.remove(&id))
            .build_with_hasher(FastHash::default());
        let active = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.active_version_ttl)
            .support_invalidation_closures()
            .build_with_hasher(FastHash::default());
        let forgotten = Forgotten::new(
            settings.capacity,
            settings.max_age.max(settings.active_version_ttl),
            hot.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                region: database.region().clone(),
                kms,
                database,
                metrics,
                settings,
                keys,
                hot,
                active,
                forgotten,
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.inner.region
    }

    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.inner.kms
    }

    /// The key new values and objects of `tenant` are sealed with.
    pub async fn active_data_key(&self, tenant: &TenantId) -> Result<Arc<DataKey>, KeyError> {
        let version = self.active_version(tenant, KeyPurpose::Data).await?;
        self.key(tenant, KeyPurpose::Data, version).await
    }

    /// A specific data key version, e.g. the one a sealed value names.
    pub async fn data_key(
        &self,
        tenant: &TenantId,
        version: KeyVersion,
    ) -> Result<Arc<DataKey>, KeyError> {
        self.key(tenant, KeyPurpose::Data, version).await
    }

    /// The key blind indexes of `tenant` are derived from.
    pub async fn index_key(&self, tenant: &TenantId) -> Result<Arc<DataKey>, KeyError> {
        let version = self.active_version(tenant, KeyPurpose::Index).await?;
        self.key(tenant, KeyPurpose::Index, version).await
    }

    /// The active index key of `tenant` with its cached per-field blind-index keys.
    pub async fn index_keys(&self, tenant: &TenantId) -> Result<IndexKeys, KeyError> {
        let version = self.active_version(tenant, KeyPurpose::Index).await?;
        let entry = self.entry(tenant, KeyPurpose::Index, version).await?;
        Ok(IndexKeys { entry })
    }

    /// Seals a value under the tenant's active data key.
    pub async fn seal(
        &self,
        tenant: &TenantId,
        context: &SealContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let key = self.active_data_key(tenant).await?;
        Ok(seal::seal(&key, context, plaintext))
    }

    /// Opens a value sealed under any live data key version of the tenant.
    pub async fn open(
        &self,
        tenant: &TenantId,
        context: &SealContext<'_>,
        sealed: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let version = seal::sealed_version(sealed)?;
        let key = self.data_key(tenant, version).await?;
        Ok(seal::open(&key, context, sealed)?)
    }

    /// Unwrapped keys in memory now, in moka or the hot index (after pending evictions
    /// are applied).
    pub async fn cached_keys(&self) -> u64 {
        self.inner.keys.run_pending_tasks().await;
        let hot = self.inner.hot.len() as u64;
        self.inner.keys.entry_count().max(hot)
    }

    async fn active_version(
        &self,
        tenant: &TenantId,
        purpose: KeyPurpose,
    ) -> Result<KeyVersion, KeyError> {
        let id = (*tenant, purpose);
        for _ in 0..STALE_RELOADS {
            let active = match self.inner.active.get(&id).await {
                Some(active) => active,
                None => self
                    .inner
                    .active
                    .try_get_with(id, self.load_active_version(tenant, purpose))
                    .await
                    .map_err(|err: Arc<KeyError>| (*err).clone())?,
            };
            if !self.inner.forgotten.is_stale(tenant, active.loaded_in) {
                return Ok(active.version);
            }
            self.inner.active.invalidate(&id).await;
        }
        Ok(self.load_active_version(tenant, purpose).await?.version)
    }

    async fn load_active_version(
        &self,
        tenant: &TenantId,
        purpose: KeyPurpose,
    ) -> Result<ActiveVersion, KeyError> {
        let loaded_in = self.inner.hot.generation();
        let mut reader = self.key_reader().await?;
        let tx = reader.begin_tenant(tenant).await?;
        let stored = tenant_keys::active(tx.client(), tenant, purpose).await?;
        tx.finish().await?;
        match stored {
            Some(stored) => Ok(ActiveVersion {
                version: stored.version,
                loaded_in,
            }),
            None => Err(self.missing_after_lookup(tenant).await),
        }
    }

    async fn key(
        &self,
        tenant: &TenantId,
        purpose: KeyPurpose,
        version: KeyVersion,
    ) -> Result<Arc<DataKey>, KeyError> {
        Ok(self.entry(tenant, purpose, version).await?.key.clone())
    }

    /// The cache entry of a key (unwrapped on a miss), its use counted.
    async fn entry(
        &self,
        tenant: &TenantId,
        purpose: KeyPurpose,
        version: KeyVersion,
    ) -> Result<Arc<CachedKey>, KeyError> {
        let id = KeyId {
            tenant: *tenant,
            purpose,
            version,
        };
        if let Some(entry) = self.inner.hot.get(&id) {
            self.inner.metrics.record_dek_lookup(true);
            return Ok(self.count_use(&id, &entry).await);
        }
        let generation = self.inner.hot.generation();
        for _ in 0..STALE_RELOADS {
            let (entry, hit) = match self.inner.keys.get(&id).await {
                Some(entry) => (entry, true),
                None => {
                    let missed = AtomicBool::new(false);
                    let entry = self
                        .inner
                        .keys
                        .try_get_with(id, async {
                            missed.store(true, Ordering::Relaxed);
                            self.unwrap_key(&id).await
                        })
                        .await
                        .map_err(|err: Arc<KeyError>| (*err).clone())?;
                    (entry, !missed.load(Ordering::Relaxed))
                }
            };
            if self.inner.forgotten.is_stale(tenant, entry.loaded_in) {
                // Loaded before the tenant's keys were forgotten: maybe shredded since.
                self.inner.keys.invalidate(&id).await;
                continue;
            }
            self.inner.metrics.record_dek_lookup(hit);
            self.inner.hot.insert(id, entry.clone(), generation);
            return Ok(self.count_use(&id, &entry).await);
        }
        self.inner.metrics.record_dek_lookup(false);
        self.unwrap_key(&id).await
    }

    /// Counts one use; the copy that reaches `max_uses` is dropped from both caches (this
    /// use still gets it), so the next use unwraps a fresh copy.
    async fn count_use(&self, id: &KeyId, entry: &Arc<CachedKey>) -> Arc<CachedKey> {
        let uses = entry.uses.fetch_add(1, Ordering::Relaxed) + 1;
        if uses >= self.inner.settings.max_uses {
            self.inner.hot.remove(id);
            self.inner.keys.invalidate(id).await;
        }
        entry.clone()
    }

    async fn unwrap_key(&self, id: &KeyId) -> Result<Arc<CachedKey>, KeyError> {
        let loaded_in = self.inner.hot.generation();
        let mut reader = self.key_reader().await?;
        let tx = reader.begin_tenant(&id.tenant).await?;
        let stored = tenant_keys::by_version(tx.client(), &id.tenant, id.purpose, id.version).await;
        tx.finish().await?;
        let stored = stored?.ok_or_else(|| KeyError::UnknownVersion {
            tenant: id.tenant,
            purpose: id.purpose.as_str(),
            version: id.version.get(),
        })?;
        if stored.state == KeyState::Destroyed || stored.wrapped.is_none() {
            return Err(KeyError::Shredded { tenant: id.tenant });
        }
        let key = self
            .kms_call(
                "decrypt",
                unwrap_stored(self.inner.kms.as_ref(), &self.inner.region, stored),
            )
            .await?;
        Ok(Arc::new(CachedKey::new(
            key,
            self.inner.settings.max_age,
            loaded_in,
        )))
    }

    /// A connection for reading keys: the primary, or the first replica when the primary
    /// is down, so that reads keep working without a primary (a key too new for the
    /// replica simply is not found there). Keys are read in their tenant's scope, like
    /// every read of its rows; the node's own role reads wrapped keys only for the
    /// region-wide KMS rewrap.
    async fn key_reader(&self) -> Result<store::Reader, KeyError> {
        match self.inner.database.primary().get().await {
            Ok(primary) => Ok(store::Reader::Primary(primary)),
            Err(err @ StoreError::Unavailable(_)) => {
                let Some(pool) = self.inner.database.replicas().first() else {
                    return Err(err.into());
                };
                Ok(store::Reader::Replica(pool.get().await?))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Why there is no active key: never provisioned, or shredded.
    async fn missing_after_lookup(&self, tenant: &TenantId) -> KeyError {
        let all = async {
            let mut reader = self.key_reader().await?;
            let tx = reader.begin_tenant(tenant).await?;
            let keys = tenant_keys::list(tx.client(), tenant).await?;
            tx.finish().await?;
            Ok::<_, KeyError>(keys)
        }
        .await;
        match all {
            Ok(keys) if keys.iter().any(|k| k.state == KeyState::Destroyed) => {
                KeyError::Shredded { tenant: *tenant }
            }
            Ok(_) => KeyError::NotProvisioned { tenant: *tenant },
            Err(err) => err,
        }
    }

    fn missing(&self, tenant: &TenantId) -> KeyError {
        KeyError::NotProvisioned { tenant: *tenant }
    }

    fn context(&self, tenant: &TenantId, purpose: KeyPurpose) -> EncryptionContext {
        tenant_key_context(tenant, &self.inner.region, purpose)
    }

    async fn kms_call<T, E: Into<KeyError>>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, KeyError> {
        let started = Instant::now();
        let result = call.await;
        self.inner
            .metrics
            .record_kms_call(operation, result.is_ok(), started.elapsed());
        result.map_err(Into::into)
    }
}

fn context_json(context: &EncryptionContext) -> String {
    serde_json::to_string(context).expect("a map of strings always serializes")
}
