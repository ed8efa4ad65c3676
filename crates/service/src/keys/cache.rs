//! The keyring's memory: unwrapped keys by id, the lock-free hot index in front of moka,
//! and the blind-index keys derived from a cached index key. Bounded; zeroized on drop.
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use envelope::blind_index::FieldIndexKey;
use envelope::{DataKey, KeyPurpose, KeyVersion};
use model::TenantId;

use super::FastHash;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct KeyId {
    pub(super) tenant: TenantId,
    pub(super) purpose: KeyPurpose,
    pub(super) version: KeyVersion,
}

#[derive(Debug)]
pub(super) struct CachedKey {
    pub(super) key: Arc<DataKey>,
    pub(super) uses: AtomicU64,
    /// `max_age` after it was unwrapped; the hot index honours it like moka does.
    pub(super) expires_at: Instant,
    /// For an index key: the blind-index keys derived from it, per collection and field.
    /// They live in this entry, so they go exactly when the key they come from goes
    /// (expiry, eviction, the use bound, crypto-shredding), and are zeroized then
    /// (aws-lc cleanses an HMAC key's context when it is dropped).
    pub(super) fields: Mutex<FieldKeyTable>,
    /// The hot index's generation when loading began (before the wrapped key was read):
    /// a forget of the tenant after that makes this copy stale (see [`Forgotten`]).
    pub(super) loaded_in: u64,
}

/// Derived blind-index keys of one index key: collection → field → key.
pub(super) type FieldKeyTable =
    HashMap<Box<str>, HashMap<Box<str>, Arc<FieldIndexKey>, FastHash>, FastHash>;

/// Derived keys one index key entry holds at most; beyond that they are derived per use
/// (a tenant with that many searchable fields is not the hot path).
pub const MAX_FIELD_KEYS: usize = 1024;

impl CachedKey {
    pub(super) fn new(key: DataKey, max_age: Duration, loaded_in: u64) -> Self {
        Self {
            key: Arc::new(key),
            uses: AtomicU64::new(0),
            expires_at: Instant::now() + max_age,
            fields: Mutex::new(HashMap::default()),
            loaded_in,
        }
    }
}

/// A tenant's active index key with the blind-index keys derived from it: deriving one
/// (HKDF) costs as much as sealing a field, so each is derived once per cached index key.
#[derive(Debug)]
pub struct IndexKeys {
    pub(super) entry: Arc<CachedKey>,
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
pub(super) struct HotKeys {
    pub(super) shards: Vec<HotShard>,
    pub(super) hasher: FastHash,
    pub(super) generation: AtomicU64,
}

pub(super) const HOT_SHARDS: usize = 16;

/// One shard of the hot index: each key with the generation it was inserted in.
pub(super) type HotShard = RwLock<HashMap<KeyId, (Arc<CachedKey>, u64), FastHash>>;

impl HotKeys {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..HOT_SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(FastHash::default())))
                .collect(),
            hasher: FastHash::default(),
            generation: AtomicU64::new(0),
        }
    }

    pub(super) fn shard(&self, id: &KeyId) -> &HotShard {
        let index = (self.hasher.hash_one(id) as usize) % HOT_SHARDS;
        &self.shards[index]
    }

    pub(super) fn get(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        let generation = self.generation.load(Ordering::Acquire);
        let shard = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (entry, inserted_in) = shard.get(id)?;
        (*inserted_in == generation && Instant::now() < entry.expires_at).then(|| entry.clone())
    }

    pub(super) fn insert(&self, id: KeyId, entry: Arc<CachedKey>, generation: u64) {
        self.shard(&id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (entry, generation));
    }

    pub(super) fn remove(&self, id: &KeyId) {
        self.shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Empties the index and starts a new generation; returns it.
    pub(super) fn forget_all(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        generation
    }
}

/// When each tenant's keys were last forgotten (a rotation, shred or rewrap on any node of
/// the region, heard through the database's notifications), and when everything was.
///
/// moka invalidates only what it holds when asked: a key (or active version) whose load
/// was in flight during a forget would be inserted after it and served until `max_age`.
/// So every copy carries the generation its load began in (taken before the wrapped key or
/// the version is read), and a copy loaded before its tenant's last forget is stale
/// wherever it is found.
///
/// A forget starts a generation, records it, then starts another: a copy put in the hot
/// index between the first and the record carries the first and is never served, and one
/// checked after the second is checked against the record.
///
/// Bounded: at most `capacity` tenants, each remembered for as long as a copy can live.
/// When a tenant has to be dropped to make room, the floor rises to the current
/// generation, so that every copy loaded before is stale: the bound costs unwraps, never
/// a stale key.
#[derive(Debug)]
pub(super) struct Forgotten {
    hot: Arc<HotKeys>,
    tenants: moka::sync::Cache<TenantId, u64, FastHash>,
    floor: Arc<AtomicU64>,
}

impl Forgotten {
    pub(super) fn new(capacity: u64, remember: Duration, hot: Arc<HotKeys>) -> Self {
        let floor = Arc::new(AtomicU64::new(0));
        let (raised, index) = (floor.clone(), hot.clone());
        let tenants = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(remember)
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    raised.fetch_max(index.forget_all(), Ordering::AcqRel);
                    index.forget_all();
                }
            })
            .build_with_hasher(FastHash::default());
        Self {
            hot,
            tenants,
            floor,
        }
    }

    /// Makes every copy of `tenant`'s keys loaded until now stale, and empties the hot
    /// index.
    pub(super) fn tenant(&self, tenant: TenantId) {
        let generation = self.hot.forget_all();
        self.tenants.insert(tenant, generation);
        self.hot.forget_all();
    }

    /// Makes every copy loaded until now stale, and empties the hot index.
    pub(super) fn everything(&self) {
        let generation = self.hot.forget_all();
        self.floor.fetch_max(generation, Ordering::AcqRel);
        self.hot.forget_all();
    }

    /// Whether a copy of `tenant`'s loaded in `loaded_in` predates a forget.
    pub(super) fn is_stale(&self, tenant: &TenantId, loaded_in: u64) -> bool {
        loaded_in < self.floor.load(Ordering::Acquire)
            || self
                .tenants
                .get(tenant)
                .is_some_and(|forgotten_in| loaded_in < forgotten_in)
    }

    /// Tenants remembered now (after pending evictions), for tests of the bound.
    #[cfg(test)]
    pub(super) fn remembered(&self) -> u64 {
        self.tenants.run_pending_tasks();
        self.tenants.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(byte: u8) -> TenantId {
        TenantId::from_random_bytes([byte; 16])
    }

    #[test]
    fn a_forget_makes_earlier_copies_of_its_tenant_stale_and_the_bound_makes_all_stale() {
        let hot = Arc::new(HotKeys::new());
        let forgotten = Forgotten::new(4, Duration::from_secs(60), hot.clone());
        let loaded_in = hot.generation();
        let (shredded, bystander) = (tenant(1), tenant(2));
        assert!(!forgotten.is_stale(&shredded, loaded_in));
        forgotten.tenant(shredded);
        assert!(forgotten.is_stale(&shredded, loaded_in));
        assert!(
            !forgotten.is_stale(&bystander, loaded_in),
            "another tenant's copies stay"
        );
        assert!(
            !forgotten.is_stale(&shredded, hot.generation()),
            "a copy loaded after the forget is fresh"
        );

        for byte in 10..40 {
            forgotten.tenant(tenant(byte));
        }
        assert!(forgotten.remembered() <= 4, "bounded");
        assert!(
            forgotten.is_stale(&bystander, loaded_in),
            "tenants were dropped to keep the bound: every earlier copy is stale"
        );
        assert!(!forgotten.is_stale(&bystander, hot.generation()));

        let later = hot.generation();
        forgotten.everything();
        assert!(forgotten.is_stale(&bystander, later));
        assert!(!forgotten.is_stale(&bystander, hot.generation()));
    }
}
