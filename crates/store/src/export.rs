//! What the anonymized analytics export reads, and only from a replica: a connection
//! that is checked to be in recovery (a primary is refused), as the `residency_export`
//! role (SELECT on tenants, collections, records and wrapped keys, `0006_analytics_export.sql`;
//! and the erasure ledger's rows, `0013_subject_erasures.sql`). A collection is read on one
//! snapshot with its watermark and the erasures it reflects, so that a release and the
//! position it records agree.

use model::TenantId;
use tokio_postgres::IsolationLevel;

use crate::collections::CollectionRow;
use crate::records::RecordRow;
use crate::{PgTls, StoreError};

/// The role the export connects as.
pub const EXPORT_ROLE: &str = "residency_export";

/// A connection to a replica, made by [`ExportReplica::connect`].
#[derive(Debug)]
pub struct ExportReplica {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for ExportReplica {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Why a connection was refused before any read.
#[derive(Debug, thiserror::Error)]
pub enum ExportConnectError {
    #[error("the export reads replicas only, and {0} is a primary (pg_is_in_recovery() is false)")]
    Primary(String),
    #[error("connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
}

impl ExportReplica {
    /// Connects and checks the server is a replica (`pg_is_in_recovery()`); `endpoint`
    /// names it in errors (host and port, never credentials).
    pub async fn connect(
        config: &tokio_postgres::Config,
        tls: &PgTls,
        endpoint: &str,
    ) -> Result<Self, ExportConnectError> {
        let failed = |reason: String| ExportConnectError::Connect {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let config = crate::pools::with_timeouts(config.clone(), &crate::SessionTimeouts::EXPORT);
        let (client, connection) = crate::tls::connect(&config, tls)
            .await
            .map_err(|err| failed(describe(&err)))?;
        let replica = Self { client, connection };
        let in_recovery: bool = replica
            .client
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(|err| failed(describe(&err)))?
            .get(0);
        if !in_recovery {
            return Err(ExportConnectError::Primary(endpoint.to_owned()));
        }
        Ok(replica)
    }

    /// The tenants that turned analytics export on, in id order.
    pub async fn exporting_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let rows = self
            .client
            .query(
                "select tenant_id from tenants where analytics_export order by tenant_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(0)?;
                id.parse::<TenantId>()
                    .map_err(|_| StoreError::Corrupt("tenants: tenant id".into()))
            })
            .collect()
    }

    /// Opens a read-only snapshot confined to `tenant` (the tenant setting; the role is
    /// the connection's own).
    pub async fn snapshot(&mut self, tenant: &TenantId) -> Result<TenantSnapshot<'_>, StoreError> {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        tx.execute(
            &format!("select set_config('{}', $1, true)", crate::TENANT_SETTING),
            &[&tenant.as_str()],
        )
        .await?;
        Ok(TenantSnapshot {
            tx,
            tenant: *tenant,
        })
    }
}

/// The server's message when there is one (tokio-postgres' own text is "db error").
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => crate::error::with_causes(err),
    }
}

/// One tenant's data on one snapshot.
pub struct TenantSnapshot<'a> {
    tx: tokio_postgres::Transaction<'a>,
    tenant: TenantId,
}

impl std::fmt::Debug for TenantSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSnapshot")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantSnapshot<'_> {
    /// The tenant's collections, in name order.
    pub async fn collections(&self) -> Result<Vec<CollectionRow>, StoreError> {
        crate::collections::list(&self.tx, &self.tenant).await
    }

    /// What a release of the collection is a release of: the schema's version, the
    /// number of records and the latest change. A collection whose watermark equals the
    /// last release's has not changed since.
    pub async fn watermark(&self, collection: &CollectionRow) -> Result<String, StoreError> {
        let row = self
            .tx
            .query_one(
                "select count(*), coalesce((extract(epoch from max(updated_at)) * 1000000)::bigint, 0)
                 from records where tenant_id = $1 and collection = $2",
                &[&self.tenant.as_str(), &collection.name],
            )
            .await?;
        let count: i64 = row.try_get(0)?;
        let latest: i64 = row.try_get(1)?;
        Ok(format!("v{}.n{count}.t{latest}", collection.version))
    }

    /// The erasures of data subjects that held records in the collection, as the snapshot
    /// sees them: empty when there are none, else their count and the latest one's time
    /// (`e<count>.t<µs>`). Erasures only add rows (the ledger is append-only), and an
    /// erasure's row commits with the deletion of the subject's records, so a release taken
    /// on a snapshot with this value holds none of the records of those subjects.
    pub async fn erasures(&self, collection: &CollectionRow) -> Result<String, StoreError> {
        let row = self
            .tx
            .query_one(
                "select count(*), coalesce((extract(epoch from max(erased_at)) * 1000000)::bigint, 0)
                 from subject_erasures where tenant_id = $1 and $2 = any(collections)",
                &[&self.tenant.as_str(), &collection.name],
            )
            .await?;
        let count: i64 = row.try_get(0)?;
        let latest: i64 = row.try_get(1)?;
        Ok(if count == 0 {
            String::new()
        } else {
            format!("e{count}.t{latest}")
        })
    }

    /// Up to `limit` records of the collection after `after` (record id order).
    pub async fn records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RecordRow>, StoreError> {
        crate::records::list(&self.tx, &self.tenant, collection, after, limit).await
    }

    /// The snapshot's transaction, for the keyring's reads of wrapped keys.
    pub fn client(&self) -> &tokio_postgres::Transaction<'_> {
        &self.tx
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}
