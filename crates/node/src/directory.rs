//! The tenant directory in PostgreSQL, joined to the two crates that use it: the router
//! reads it (`router::Directory`) and the home region's service writes new tenants into it
//! (`service::TenantRegistry`). Only the node links both sides.

use std::sync::Arc;

use async_trait::async_trait;
use model::{RegionId, ResidencyPolicy, TenantId, Transit};
use router::{Directory, DirectoryEntry, DirectoryError, DirectoryLocation};
use store::StoreError;
use store::directory::{DirectoryDatabase, DirectoryRow};

/// The directory table of the deployment's directory database.
#[derive(Debug, Clone)]
pub struct PgDirectory {
    database: DirectoryDatabase,
}

impl PgDirectory {
    pub fn new(database: DirectoryDatabase) -> Arc<Self> {
        Arc::new(Self { database })
    }

    /// Closes the connections to the directory database (see [`DirectoryDatabase::close`]).
    pub fn close(&self) {
        self.database.close();
    }
}

fn directory_error(err: StoreError) -> DirectoryError {
    match err {
        err @ StoreError::Unavailable(_) => DirectoryError::unavailable(err),
        other => DirectoryError::other(other),
    }
}

fn entry_from_row(row: DirectoryRow) -> Result<DirectoryEntry, DirectoryError> {
    let corrupt =
        |what: &str| DirectoryError::other(format!("directory entry {}: bad {what}", row.tenant));
    Ok(DirectoryEntry {
        tenant: row.tenant,
        home: RegionId::parse(&row.home_region).map_err(|_| corrupt("home region"))?,
        allowed: row
            .allowed_regions
            .iter()
            .map(|raw| RegionId::parse(raw))
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("allowed regions"))?,
        transit: Transit::parse(&row.transit).map_err(|_| corrupt("transit"))?,
        version: u64::try_from(row.version).map_err(|_| corrupt("version"))?,
    })
}

fn row_from_entry(entry: &DirectoryEntry) -> Result<DirectoryRow, DirectoryError> {
    Ok(DirectoryRow {
        tenant: entry.tenant,
        home_region: entry.home.to_string(),
        allowed_regions: entry.allowed.iter().map(ToString::to_string).collect(),
        transit: entry.transit.as_str().to_owned(),
        version: i64::try_from(entry.version)
            .map_err(|_| DirectoryError::other("version out of range"))?,
    })
}

#[async_trait]
impl Directory for PgDirectory {
    async fn lookup(&self, tenant: &TenantId) -> Result<Option<DirectoryEntry>, DirectoryError> {
        self.database
            .lookup(tenant)
            .await
            .map_err(directory_error)?
            .map(entry_from_row)
            .transpose()
    }

    async fn upsert(&self, entry: &DirectoryEntry) -> Result<(), DirectoryError> {
        self.database
            .upsert(&row_from_entry(entry)?)
            .await
            .map_err(directory_error)?;
        Ok(())
    }

    async fn remove(&self, tenant: &TenantId) -> Result<(), DirectoryError> {
        self.database.remove(tenant).await.map_err(directory_error)
    }

    async fn check(&self) -> Result<(), DirectoryError> {
        self.database.check().await.map_err(directory_error)
    }

    fn location(&self) -> DirectoryLocation {
        DirectoryLocation {
            kind: "postgres",
            target: self.database.location().to_owned(),
        }
    }
}

/// Registers new tenants in the directory and in this node's cache of it, so the node
/// routes them at once.
#[derive(Debug)]
pub(crate) struct Registrar {
    pub(crate) cache: router::CachedDirectory,
}

#[async_trait]
impl service::TenantRegistry for Registrar {
    async fn register(&self, tenant: &TenantId, policy: &ResidencyPolicy) -> Result<(), String> {
        let entry = DirectoryEntry {
            tenant: *tenant,
            home: policy.home().clone(),
            allowed: policy.allowed().to_vec(),
            transit: policy.transit(),
            version: 1,
        };
        self.cache
            .backend()
            .upsert(&entry)
            .await
            .map_err(|err| err.to_string())?;
        self.cache.record(entry).await;
        Ok(())
    }

    async fn unregister(&self, tenant: &TenantId) -> Result<(), String> {
        self.cache
            .backend()
            .remove(tenant)
            .await
            .map_err(|err| err.to_string())?;
        self.cache.invalidate(tenant).await;
        Ok(())
    }
}

/// The tenant directory's backend as the node's `/readyz` reports it.
#[derive(Debug)]
pub(crate) struct DirectoryReadiness(pub(crate) Arc<dyn Directory>);

#[async_trait]
impl api::DirectoryProbe for DirectoryReadiness {
    fn kind(&self) -> &'static str {
        self.0.location().kind
    }

    fn target(&self) -> String {
        self.0.location().target
    }

    async fn check(&self) -> Result<(), &'static str> {
        match self.0.check().await {
            Ok(()) => Ok(()),
            Err(DirectoryError::Unavailable(_)) => Err("unavailable"),
            Err(err) => {
                tracing::warn!(error = %err, "tenant directory check failed");
                Err("error")
            }
        }
    }
}

/// The directory of `residency dev`: the first region's database, which exists only once
/// that region's PostgreSQL is up. Until then the directory is unavailable (the router
/// answers 503 for foreign tenants), which only matters during start-up.
#[derive(Debug, Clone, Default)]
pub(crate) struct LateDirectory {
    inner: Arc<tokio::sync::OnceCell<Arc<PgDirectory>>>,
}

impl LateDirectory {
    pub(crate) fn set(&self, directory: Arc<PgDirectory>) {
        let _ = self.inner.set(directory);
    }

    /// Closes the directory's connections, if it was set, before its PostgreSQL stops.
    pub(crate) fn close(&self) {
        if let Some(directory) = self.inner.get() {
            directory.close();
        }
    }

    fn get(&self) -> Result<&Arc<PgDirectory>, DirectoryError> {
        self.inner
            .get()
            .ok_or_else(|| DirectoryError::unavailable("the directory database is starting"))
    }
}

#[async_trait]
impl Directory for LateDirectory {
    async fn lookup(&self, tenant: &TenantId) -> Result<Option<DirectoryEntry>, DirectoryError> {
        self.get()?.lookup(tenant).await
    }

    async fn upsert(&self, entry: &DirectoryEntry) -> Result<(), DirectoryError> {
        self.get()?.upsert(entry).await
    }

    async fn remove(&self, tenant: &TenantId) -> Result<(), DirectoryError> {
        self.get()?.remove(tenant).await
    }

    async fn check(&self) -> Result<(), DirectoryError> {
        self.get()?.check().await
    }

    fn location(&self) -> DirectoryLocation {
        match self.inner.get() {
            Some(directory) => directory.location(),
            None => DirectoryLocation {
                kind: "postgres",
                target: "starting".to_owned(),
            },
        }
    }
}
