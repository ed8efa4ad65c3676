//! The tenant directory's rows (`tenant_directory`): where each tenant lives. Ids and
//! region names only. Writes keep the higher version, so a late or replayed write never
//! moves a tenant back.

use model::TenantId;
use tokio_postgres::GenericClient;

use crate::StoreError;

/// One directory entry, column for column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRow {
    pub tenant: TenantId,
    pub home_region: String,
    pub allowed_regions: Vec<String>,
    /// `proxy` or `redirect`.
    pub transit: String,
    pub version: i64,
}

/// The tenant's entry, if the directory has one.
pub async fn lookup<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<Option<DirectoryRow>, StoreError> {
    let row = client
        .query_opt(
            "select home_region, allowed_regions, transit, version
             from tenant_directory where tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await?;
    Ok(row.map(|row| DirectoryRow {
        tenant: *tenant,
        home_region: row.get(0),
        allowed_regions: row.get(1),
        transit: row.get(2),
        version: row.get(3),
    }))
}

/// Inserts the entry, or replaces the stored one if this one's version is higher;
/// returns whether it was stored.
pub async fn upsert<C: GenericClient>(
    client: &C,
    entry: &DirectoryRow,
) -> Result<bool, StoreError> {
    let stored = client
        .execute(
            "insert into tenant_directory (tenant_id, home_region, allowed_regions, transit, version)
             values ($1, $2, $3, $4, $5)
             on conflict (tenant_id) do update
                set home_region = excluded.home_region,
                    allowed_regions = excluded.allowed_regions,
                    transit = excluded.transit,
                    version = excluded.version,
                    updated_at = now()
              where tenant_directory.version < excluded.version",
            &[
                &entry.tenant.as_str(),
                &entry.home_region,
                &entry.allowed_regions,
                &entry.transit,
                &entry.version,
            ],
        )
        .await?;
    Ok(stored == 1)
}

/// A connection pool to the database that holds the tenant directory (one for the whole
/// deployment; every node reads it through a cache).
#[derive(Debug, Clone)]
pub struct DirectoryDatabase {
    pool: deadpool_postgres::Pool,
    /// `host:port/database`, for readiness reports: never the user or password.
    location: String,
}

impl DirectoryDatabase {
    /// Builds the pool; connections open lazily, so this succeeds with the server down.
    pub fn new(endpoint: &crate::PgEndpoint) -> Result<Self, StoreError> {
        let settings = crate::DatabaseSettings {
            pool_size: 8,
            ..crate::DatabaseSettings::new(endpoint.clone(), Vec::new())
        };
        let database = endpoint.config.get_dbname().unwrap_or("postgres");
        Ok(Self {
            pool: crate::pools::build_pool(endpoint, &settings)?,
            location: format!("{}/{database}", endpoint.address()),
        })
    }

    /// Where the directory is: `host:port/database`, without credentials.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether the directory answers now: a connection from the pool and a read of the
    /// directory table (no entry is returned). For readiness reports.
    pub async fn check(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .query_opt("select 1 from tenant_directory limit 1", &[])
            .await?;
        Ok(())
    }

    /// Closes the pool: idle connections end cleanly, and no new ones open. For a
    /// shutdown that stops the directory's PostgreSQL next.
    pub fn close(&self) {
        self.pool.close();
    }

    pub async fn lookup(&self, tenant: &TenantId) -> Result<Option<DirectoryRow>, StoreError> {
        let client = self.pool.get().await?;
        lookup(&**client, tenant).await
    }

    pub async fn upsert(&self, entry: &DirectoryRow) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        upsert(&**client, entry).await
    }

    /// Removes the tenant's entry (the end of an offboarding); absent is fine.
    pub async fn remove(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "delete from tenant_directory where tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(())
    }
}
