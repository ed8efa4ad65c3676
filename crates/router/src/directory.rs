//! The tenant directory: tenant id → home region, allowed regions, transit mode, version.
//! It holds no personal data (tenant names stay in the home region), only ids and policy.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use model::{RegionId, TenantId, Transit};

/// Where a tenant lives and how foreign regions reach it. `version` grows with every change
/// (creation is 1, each relocation adds one); a directory keeps the higher version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub tenant: TenantId,
    pub home: RegionId,
    pub allowed: Vec<RegionId>,
    pub transit: Transit,
    pub version: u64,
}

/// What made a directory fail: the backend's own error, kept whole (shared, so that the
/// cache can hand one failure to every caller waiting on the same lookup).
pub type DirectoryCause = Arc<dyn std::error::Error + Send + Sync>;

/// Why the directory could not answer, with its cause. Messages never carry personal data
/// (the directory holds none); the cause's text is part of the message, so a log line that
/// prints the error shows why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// The backend cannot be reached now; a cached entry may still be served.
    #[error("tenant directory unavailable: {0}")]
    Unavailable(#[source] DirectoryCause),
    #[error("tenant directory: {0}")]
    Other(#[source] DirectoryCause),
    /// Not an answer of the backend: the [`crate::CachedDirectory`] did not ask it, its
    /// budget of lookups for tenants it does not hold being spent for now.
    #[error("tenant directory lookups over this node's budget")]
    Busy,
}

/// Errors are equal when they are of one kind with one message: a cause has no equality
/// of its own, so causes compare by their text.
impl PartialEq for DirectoryError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Unavailable(a), Self::Unavailable(b)) | (Self::Other(a), Self::Other(b)) => {
                a.to_string() == b.to_string()
            }
            (Self::Busy, Self::Busy) => true,
            _ => false,
        }
    }
}

impl Eq for DirectoryError {}

impl DirectoryError {
    /// The backend cannot be reached now, because of `cause` (an error or a message).
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(cause.into()))
    }

    /// The backend answered, but not usably (a corrupt entry, an out-of-range value).
    pub fn other(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(Arc::from(cause.into()))
    }
}

/// Where the directory lives (a database, memory). Written by the home region at tenant
/// creation and on relocation; read by every node through a [`crate::CachedDirectory`].
#[async_trait]
pub trait Directory: Send + Sync + fmt::Debug {
    /// The tenant's entry, `None` when the directory does not know it.
    async fn lookup(&self, tenant: &TenantId) -> Result<Option<DirectoryEntry>, DirectoryError>;

    /// Inserts or replaces the tenant's entry; an entry with a lower version than the
    /// stored one is ignored, so that a late writer never undoes a relocation.
    async fn upsert(&self, entry: &DirectoryEntry) -> Result<(), DirectoryError>;

    /// Removes the tenant's entry (the end of an offboarding); removing an absent entry
    /// succeeds.
    async fn remove(&self, tenant: &TenantId) -> Result<(), DirectoryError>;

    /// Whether the backend answers now, without reading any entry: for readiness reports.
    async fn check(&self) -> Result<(), DirectoryError>;

    /// Where the directory lives, for readiness reports: its backend (`postgres`,
    /// `memory`) and its location, never credentials.
    fn location(&self) -> DirectoryLocation;
}

/// What a readiness report says about where the directory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryLocation {
    /// `postgres` or `memory`.
    pub kind: &'static str,
    /// `host:port/database` for PostgreSQL; `in-process` for memory.
    pub target: String,
}

/// A directory in memory: for tests, `residency dev` and as a building block. It can be
/// switched "down" to simulate an unreachable backend, and counts the lookups it served.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    entries: Mutex<HashMap<TenantId, DirectoryEntry>>,
    down: AtomicBool,
    lookups: AtomicU64,
}

impl MemoryDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call answers [`DirectoryError::Unavailable`].
    pub fn set_unavailable(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many lookups reached this directory (including refused ones).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Replaces the tenant's entry whatever its version (tests simulating a relocation
    /// that other nodes have not heard of, or a rollback).
    pub fn force(&self, entry: DirectoryEntry) {
        self.map().insert(entry.tenant, entry);
    }

    /// Forgets the tenant.
    pub fn remove(&self, tenant: &TenantId) {
        self.map().remove(tenant);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, DirectoryEntry>> {
        // A panic while holding the lock cannot leave a half-written map: every critical
        // section is a single insert, remove or clone.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_up(&self) -> Result<(), DirectoryError> {
        if self.down.load(Ordering::SeqCst) {
            Err(DirectoryError::unavailable("memory directory is down"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn lookup(&self, tenant: &TenantId) -> Result<Option<DirectoryEntry>, DirectoryError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.check_up()?;
        Ok(self.map().get(tenant).cloned())
    }

    async fn upsert(&self, entry: &DirectoryEntry) -> Result<(), DirectoryError> {
        self.check_up()?;
        let mut map = self.map();
        match map.get(&entry.tenant) {
            Some(stored) if stored.version > entry.version => {}
            _ => {
                map.insert(entry.tenant, entry.clone());
            }
        }
        Ok(())
    }

    async fn remove(&self, tenant: &TenantId) -> Result<(), DirectoryError> {
        self.check_up()?;
        self.map().remove(tenant);
        Ok(())
    }

    async fn check(&self) -> Result<(), DirectoryError> {
        self.check_up()
    }

    fn location(&self) -> DirectoryLocation {
        DirectoryLocation {
            kind: "memory",
            target: "in-process".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, home: &str) -> DirectoryEntry {
        DirectoryEntry {
            tenant: TenantId::from_random_bytes([7; 16]),
            home: RegionId::parse(home).expect("region"),
            allowed: vec![RegionId::parse(home).expect("region")],
            transit: Transit::Proxy,
            version,
        }
    }

    #[tokio::test]
    async fn upsert_keeps_the_higher_version() {
        let dir = MemoryDirectory::new();
        dir.upsert(&entry(2, "eu-west-1")).await.expect("upsert");
        dir.upsert(&entry(1, "us-east-1")).await.expect("upsert");
        let got = dir.lookup(&entry(1, "eu-west-1").tenant).await;
        assert_eq!(got, Ok(Some(entry(2, "eu-west-1"))));
        dir.upsert(&entry(3, "us-east-1")).await.expect("upsert");
        let got = dir.lookup(&entry(1, "eu-west-1").tenant).await;
        assert_eq!(got, Ok(Some(entry(3, "us-east-1"))));
    }

    #[tokio::test]
    async fn the_memory_directory_keeps_the_directory_contract() {
        let directory = MemoryDirectory::new();
        crate::testing::directory_contract(&directory).await;
        directory.set_unavailable(true);
        crate::testing::unavailable_directory_contract(&directory).await;
    }

    #[tokio::test]
    async fn a_down_directory_is_unavailable() {
        let dir = MemoryDirectory::new();
        dir.set_unavailable(true);
        let got = dir.lookup(&entry(1, "eu-west-1").tenant).await;
        assert!(
            matches!(got, Err(DirectoryError::Unavailable(_))),
            "{got:?}"
        );
        assert_eq!(dir.lookups(), 1);
        assert!(matches!(
            dir.check().await,
            Err(DirectoryError::Unavailable(_))
        ));
        dir.set_unavailable(false);
        assert_eq!(dir.check().await, Ok(()));
        assert_eq!(dir.lookups(), 1, "a check reads no entry");
    }
}
