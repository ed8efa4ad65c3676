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
}

/// Derived blind-index keys of one index key: collection → field → key.
pub(super) type FieldKeyTable =
    HashMap<Box<str>, HashMap<Box<str>, Arc<FieldIndexKey>, FastHash>, FastHash>;

/// Derived keys one index key entry holds at most; beyond that they are derived per use
/// (a tenant with that many searchable fields is not the hot path).
pub const MAX_FIELD_KEYS: usize = 1024;

impl CachedKey {
    pub(super) fn new(key: DataKey, max_age: Duration) -> Self {
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

    pub(super) fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}
