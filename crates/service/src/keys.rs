//! Tenant keys for one region: provisioning, the bounded in-memory cache of unwrapped
//! keys, rotation, KMS rewrapping, re-encryption and crypto-shredding.
//!
//! The hot path (sealing and opening values) almost never calls the KMS: unwrapped keys
//! are cached (bounded by entries, age and uses; concurrent misses on one key make one KMS
//! call), and the active version of each tenant is cached briefly. Wrapped keys are read
//! from the primary, or from a replica while the primary is down, so reads go on.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use envelope::blind_index::FieldIndexKey;
use envelope::kms::{EncryptionContext, Kms, KmsError, WrappedKey, tenant_key_context};
use envelope::objects::{ObjectKey, ObjectStore, ObjectStoreError};
use envelope::seal::{self, OpenError, SealContext};
use envelope::sealed_objects::{self, SealedObjectError};
use envelope::{DataKey, KeyPurpose, KeyState, KeyVersion};
use futures::StreamExt as _;
use model::{RegionId, TenantId};
use moka::future::Cache;
use store::tenant_keys::{self, NewKey, StoredKey};
use store::{PrimaryTx, RegionDatabase, StoreError};
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

/// What [`Keyring::rewrap_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// The KMS key every live tenant key is now wrapped under.
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyId {
    tenant: TenantId,
    purpose: KeyPurpose,
    version: KeyVersion,
}

#[derive(Debug)]
struct CachedKey {
    key: Arc<DataKey>,
    uses: AtomicU64,
    /// `max_age` after it was unwrapped; the hot index honours it like moka does.
    expires_at: Instant,
    /// For an index key: the blind-index keys derived from it, per collection and field.
    /// They live in this entry, so they go exactly when the key they come from goes
    /// (expiry, eviction, the use bound, crypto-shredding), and are zeroized then
    /// (aws-lc cleanses an HMAC key's context when it is dropped).
    fields: Mutex<FieldKeyTable>,
}

/// Derived blind-index keys of one index key: collection → field → key.
type FieldKeyTable = HashMap<Box<str>, HashMap<Box<str>, Arc<FieldIndexKey>, FastHash>, FastHash>;

/// Derived keys one index key entry holds at most; beyond that they are derived per use
/// (a tenant with that many searchable fields is not the hot path).
pub const MAX_FIELD_KEYS: usize = 1024;

impl CachedKey {
    fn new(key: DataKey, max_age: Duration) -> Self {
        Self {
            key: Arc::new(key),
            uses: AtomicU64::new(0),
            expires_at: Instant::now() + max_age,
            fields: Mutex::new(HashMap::default()),
        }
    }
}

/// A tenant's active index key with the blind-index keys derived from it: deriving one
/// (HKDF) costs as much as sealing a field, so each is derived once per cached index key.
#[derive(Debug)]
pub struct IndexKeys {
    entry: Arc<CachedKey>,
}

impl IndexKeys {
    /// The blind-index key of `collection.field`, derived on first use.
    pub fn field(&self, collection: &str, field: &str) -> Arc<FieldIndexKey> {
        let mut table = self
            .entry
            .fields
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = table.get(collection).and_then(|fields| fields.get(field)) {
            return key.clone();
        }
        let key = Arc::new(FieldIndexKey::derive(&self.entry.key, collection, field));
        let held: usize = table.values().map(HashMap::len).sum();
        if held < MAX_FIELD_KEYS {
            table
                .entry(collection.into())
                .or_default()
                .insert(field.into(), key.clone());
        }
        key
    }

    /// The index key itself (for other derivations, e.g. pseudonyms).
    pub fn key(&self) -> &Arc<DataKey> {
        &self.entry.key
    }

    /// Derived keys held with this index key now.
    pub fn cached_fields(&self) -> usize {
        self.entry
            .fields
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }
}

/// A read-optimized index of the unwrapped keys in front of moka. moka stays the
/// authority (capacity, age, single-flight loading, invalidation); its eviction listener
/// removes evicted keys here. A hit costs a shard read lock and a clock read instead of
/// moka's bookkeeping, which cost as much as opening a 1 KiB value.
///
/// `forget` bumps a generation, so an entry fetched from moka before a shred and inserted
/// here after it is never served.
#[derive(Debug)]
struct HotKeys {
    shards: Vec<HotShard>,
    hasher: FastHash,
    generation: AtomicU64,
}

const HOT_SHARDS: usize = 16;

/// One shard of the hot index: each key with the generation it was inserted in.
type HotShard = RwLock<HashMap<KeyId, (Arc<CachedKey>, u64), FastHash>>;

impl HotKeys {
    fn new() -> Self {
        Self {
            shards: (0..HOT_SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(FastHash::default())))
                .collect(),
            hasher: FastHash::default(),
            generation: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: &KeyId) -> &HotShard {
        let index = (self.hasher.hash_one(id) as usize) % HOT_SHARDS;
        &self.shards[index]
    }

    fn get(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        let generation = self.generation.load(Ordering::Acquire);
        let shard = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (entry, inserted_in) = shard.get(id)?;
        (*inserted_in == generation && Instant::now() < entry.expires_at).then(|| entry.clone())
    }

    fn insert(&self, id: KeyId, entry: Arc<CachedKey>, generation: u64) {
        self.shard(&id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (entry, generation));
    }

    fn remove(&self, id: &KeyId) {
        self.shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

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
    active: Cache<(TenantId, KeyPurpose), KeyVersion, FastHash>,
}

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
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.inner.region
    }

    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.inner.kms
    }

    /// Creates version 1 of the tenant's data and index keys inside the caller's
    /// transaction (tenant creation), so the tenant and its keys commit together.
    pub async fn provision(&self, tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<(), KeyError> {
        for purpose in [KeyPurpose::Data, KeyPurpose::Index] {
            let (wrapped, context_json) = self.generate_wrapped(tenant, purpose).await?;
            tenant_keys::insert_first_key(
                tx,
                &NewKey {
                    tenant,
                    purpose,
                    kms_key_id: &wrapped.key_id,
                    wrapped: &wrapped.ciphertext,
                    kms_context: &context_json,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// A new key from the KMS, wrapped, with its context as JSON. The plaintext is dropped
    /// (and zeroized) at once: it is not cached, since the caller's transaction may still
    /// roll back; first use unwraps it like any other key.
    async fn generate_wrapped(
        &self,
        tenant: &TenantId,
        purpose: KeyPurpose,
    ) -> Result<(WrappedKey, String), KeyError> {
        let context = self.context(tenant, purpose);
        let generated = self
            .kms_call(
                "generate_data_key",
                self.inner.kms.generate_data_key(&context),
            )
            .await?;
        drop(generated.material);
        Ok((generated.wrapped, context_json(&context)))
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

    /// Batch re-encryption primitive: the value sealed under the active data key, or
    /// `None` when it already is. The service drives it over stored values after a
    /// rotation.
    pub async fn reencrypt(
        &self,
        tenant: &TenantId,
        context: &SealContext<'_>,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, KeyError> {
        let active = self.active_data_key(tenant).await?;
        if seal::sealed_version(sealed)? == active.version() {
            return Ok(None);
        }
        let plaintext = self.open(tenant, context, sealed).await?;
        Ok(Some(seal::seal(&active, context, &plaintext)))
    }

    /// Batch re-encryption primitive for objects: rewrites `object` under the active data
    /// key (streaming, bounded memory) unless it already is; returns whether it did.
    pub async fn reencrypt_object(
        &self,
        tenant: &TenantId,
        store: &dyn ObjectStore,
        object: &ObjectKey,
    ) -> Result<bool, ObjectKeyError> {
        let active = self.active_data_key(tenant).await?;
        if sealed_objects::sealed_object_version(store, object).await? == active.version() {
            return Ok(false);
        }
        let keyring = self.clone();
        let owner = *tenant;
        let plaintext = sealed_objects::get_sealed(store, object, move |version| async move {
            keyring
                .data_key(&owner, version)
                .await
                .map_err(|err| SealedObjectError::Key(err.to_string()))
        })
        .await?;
        // The store replaces the object only once the new one is complete.
        let body =
            plaintext.map(|chunk| chunk.map_err(|err| ObjectStoreError::Body(err.to_string())));
        sealed_objects::put_sealed(store, &active, object, Box::pin(body), None).await?;
        Ok(true)
    }

    /// A new data key version for new writes; older versions keep opening old data.
    pub async fn rotate(&self, tenant: &TenantId) -> Result<KeyVersion, KeyError> {
        let (wrapped, context_json) = self.generate_wrapped(tenant, KeyPurpose::Data).await?;
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin().await?;
        let version = tenant_keys::rotate(
            &tx,
            &NewKey {
                tenant,
                purpose: KeyPurpose::Data,
                kms_key_id: &wrapped.key_id,
                wrapped: &wrapped.ciphertext,
                kms_context: &context_json,
            },
        )
        .await
        .map_err(|err| match err {
            StoreError::NotFound => self.missing(tenant),
            other => other.into(),
        })?;
        tx.commit().await?;
        self.inner
            .active
            .invalidate(&(*tenant, KeyPurpose::Data))
            .await;
        Ok(version)
    }

    /// Every key version of the tenant (for the keys API and residency evidence).
    pub async fn versions(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, KeyError> {
        let primary = self.inner.database.primary().get().await?;
        Ok(tenant_keys::list(primary.client(), tenant).await?)
    }

    /// KMS key rotation: rewraps every live tenant key of the region under the KMS's
    /// current key, `batch` keys at a time, without touching any sealed data. The first
    /// rewrap tells which key is current (an alias resolves to it); later batches only
    /// take keys still wrapped under another one.
    pub async fn rewrap_all(&self, batch: i64) -> Result<RewrapReport, KeyError> {
        let mut report = RewrapReport::default();
        let mut first_pass = true;
        loop {
            let primary = self.inner.database.primary().get().await?;
            let pending = tenant_keys::wrapped_under_other_keys(
                primary.client(),
                report.kms_key_id.as_deref(),
                batch,
            )
            .await?;
            drop(primary);
            if pending.is_empty() {
                return Ok(report);
            }
            let mut moved = 0;
            for stored in pending {
                let (Some(old_key_id), Some(ciphertext)) =
                    (stored.kms_key_id.clone(), stored.wrapped.clone())
                else {
                    continue;
                };
                let context = self.context(&stored.tenant, stored.purpose);
                let wrapped = WrappedKey {
                    key_id: old_key_id.clone(),
                    ciphertext,
                };
                let rewrapped = self
                    .kms_call("re_encrypt", self.inner.kms.re_encrypt(&wrapped, &context))
                    .await?;
                if rewrapped.key_id == old_key_id {
                    // Already under the current key (only possible in the first batch).
                    report.kms_key_id = Some(rewrapped.key_id);
                    continue;
                }
                let mut primary = self.inner.database.primary().get().await?;
                let tx = primary.begin().await?;
                // Conditional on the old wrapping: a concurrent rewrap or shred wins.
                if tenant_keys::rewrap(
                    &tx,
                    &stored,
                    &old_key_id,
                    &rewrapped.key_id,
                    &rewrapped.ciphertext,
                )
                .await?
                {
                    moved += 1;
                }
                tx.commit().await?;
                report.kms_key_id = Some(rewrapped.key_id);
            }
            report.rewrapped += moved;
            if moved == 0 && report.kms_key_id.is_some() && !first_pass {
                // Nothing could be moved (every row changed under us): stop rather than spin.
                return Ok(report);
            }
            first_pass = false;
        }
    }

    /// Crypto-shredding: erases every wrapped key of the tenant and forgets any unwrapped
    /// copy on this node. Afterwards the tenant's data cannot be opened by anyone.
    /// Other nodes of the region drop their copies within `max_age`.
    pub async fn shred(&self, tenant: &TenantId) -> Result<u64, KeyError> {
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin().await?;
        let destroyed = tenant_keys::destroy_all(&tx, tenant).await?;
        tx.commit().await?;
        self.forget(tenant);
        Ok(destroyed)
    }

    /// Drops every cached key and active version of `tenant` on this node.
    fn forget(&self, tenant: &TenantId) {
        self.inner.hot.forget_all();
        let owner = *tenant;
        let _ = self
            .inner
            .keys
            .invalidate_entries_if(move |id, _| id.tenant == owner);
        let owner = *tenant;
        let _ = self
            .inner
            .active
            .invalidate_entries_if(move |(t, _), _| *t == owner);
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
        if let Some(version) = self.inner.active.get(&(*tenant, purpose)).await {
            return Ok(version);
        }
        self.inner
            .active
            .try_get_with((*tenant, purpose), async {
                let stored = self
                    .read_with_fallback(|client| {
                        let tenant = *tenant;
                        async move { tenant_keys::active(&*client, &tenant, purpose).await }
                    })
                    .await?;
                match stored {
                    Some(stored) => Ok(stored.version),
                    None => Err(self.missing_after_lookup(tenant).await),
                }
            })
            .await
            .map_err(|err: Arc<KeyError>| (*err).clone())
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
        let entry = match self.inner.keys.get(&id).await {
            Some(entry) => {
                self.inner.metrics.record_dek_lookup(true);
                entry
            }
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
                self.inner
                    .metrics
                    .record_dek_lookup(!missed.load(Ordering::Relaxed));
                entry
            }
        };
        self.inner.hot.insert(id, entry.clone(), generation);
        Ok(self.count_use(&id, &entry).await)
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
        let stored = self
            .read_with_fallback(|client| {
                let (tenant, purpose, version) = (id.tenant, id.purpose, id.version);
                async move { tenant_keys::by_version(&*client, &tenant, purpose, version).await }
            })
            .await?
            .ok_or_else(|| KeyError::UnknownVersion {
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
        Ok(Arc::new(CachedKey::new(key, self.inner.settings.max_age)))
    }

    /// Runs a read on the primary, or on the first replica when the primary is down, so
    /// that reads keep working without a primary. A key too new for the replica simply
    /// is not found there.
    async fn read_with_fallback<T, F, Fut>(&self, read: F) -> Result<T, KeyError>
    where
        F: Fn(ClientRef) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match self.inner.database.primary().get().await {
            Ok(primary) => Ok(read(ClientRef::Primary(primary)).await?),
            Err(err @ StoreError::Unavailable(_)) => {
                let Some(pool) = self.inner.database.replicas().first() else {
                    return Err(err.into());
                };
                let replica = pool.get().await?;
                Ok(read(ClientRef::Replica(replica)).await?)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Why there is no active key: never provisioned, or shredded.
    async fn missing_after_lookup(&self, tenant: &TenantId) -> KeyError {
        let all = self
            .read_with_fallback(|client| {
                let tenant = *tenant;
                async move { tenant_keys::list(&*client, &tenant).await }
            })
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

/// A pooled connection to either server, usable as a generic client for reads.
#[derive(Debug)]
enum ClientRef {
    Primary(store::Primary),
    Replica(store::Replica),
}

impl std::ops::Deref for ClientRef {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        match self {
            Self::Primary(primary) => primary.client(),
            Self::Replica(replica) => replica.client(),
        }
    }
}

fn context_json(context: &EncryptionContext) -> String {
    serde_json::to_string(context).expect("a map of strings always serializes")
}
