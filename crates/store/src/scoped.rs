//! Tenant-scoped transactions: every tenant-data statement runs in one. The transaction
//! switches to the `residency_app` role and names its tenant in `residency.tenant`, so
//! row-level security confines it to that tenant's rows even if a query forgot its
//! `where tenant_id = $1` (which every query in this crate still has: RLS is the backup,
//! not the mechanism). Both settings are transaction-local and end with it, so a pooled
//! connection never carries them into the next checkout.

use deadpool_postgres::Object;
use model::{Lsn, TenantId};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row, SimpleQueryMessage};

use crate::{Primary, PrimaryTx, Replica, StoreError};

/// The NOLOGIN role tenant-scoped transactions run as (see `0004_tenant_data.sql`).
pub const APP_ROLE: &str = "residency_app";

/// The LOGIN role a node's pools connect as (`0015_roles_that_hold.sql`): it owns nothing,
/// reaches as itself only the system rows granted to it, and switches to [`APP_ROLE`] for
/// tenant data.
pub const NODE_ROLE: &str = "residency_node";

/// The setting row-level security policies compare `tenant_id` with.
pub const TENANT_SETTING: &str = "residency.tenant";

/// Confines the rest of `tx` to `tenant`: the row-level-security role and the tenant
/// setting, as one prepared statement (`set_config('role', …, true)` is `SET LOCAL ROLE`),
/// so the tenant id travels as a parameter and the statement is parsed once per connection.
async fn scope(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &TenantId,
) -> Result<(), StoreError> {
    let statement = tx.prepare_cached(scope_sql()).await?;
    tx.query_one(&statement, &[&tenant.as_str()]).await?;
    Ok(())
}

/// The scope statement; built once, since it is hashed into the statement cache on every
/// tenant-scoped transaction.
fn scope_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "select set_config('role', '{APP_ROLE}', true), set_config('{TENANT_SETTING}', $1, true)"
        )
    });
    &SQL
}

/// A WAL position at or past every commit so far (see [`PrimaryTx::commit_lsn`]).
const INSERT_LSN: &str = "select pg_current_wal_insert_lsn()::text";

impl Primary {
    /// Starts a transaction confined to `tenant`'s rows: what every tenant-data write uses.
    /// [`Primary::begin`] stays for unscoped system work.
    pub async fn begin_tenant(&mut self, tenant: &TenantId) -> Result<PrimaryTx<'_>, StoreError> {
        // TODO-perf: two round trips (BEGIN, then the settings); tokio-postgres builds a
        // `Transaction` only from its own BEGIN, so the two cannot share a batch.
        let tx = self.0.transaction().await?;
        scope(&tx, tenant).await?;
        Ok(PrimaryTx(tx))
    }

    /// Runs one statement in a transaction confined to `tenant` and commits it, in one
    /// round trip where [`Primary::begin_tenant`] and [`PrimaryTx::commit_lsn`] take
    /// three: BEGIN, the scope, `sql`, COMMIT and the WAL position past the commit are
    /// prepared once per connection and then sent together (tokio-postgres pipelines
    /// statements issued concurrently, in the order they were issued). When `sql` fails,
    /// the COMMIT queued behind it rolls back (PostgreSQL ends a failed transaction that
    /// way), so nothing of it stays; and the transaction ends even if this future is
    /// dropped half-way. For a write whose outcome decides nothing else inside the
    /// transaction: what `sql` did, it did by the time this returns.
    pub async fn write_scoped(
        &mut self,
        tenant: &TenantId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Vec<Row>, Lsn), StoreError> {
        let client = &self.0;
        let begin = client.prepare_cached("begin").await?;
        let scope = client.prepare_cached(scope_sql()).await?;
        let statement = client.prepare_cached(sql).await?;
        let commit = client.prepare_cached("commit").await?;
        let position = client.prepare_cached(INSERT_LSN).await?;
        let tenant = tenant.as_str();
        let scope_params: [&(dyn ToSql + Sync); 1] = [&tenant];
        // Each future sends its statement when first polled, and `join!` polls in order.
        let (began, scoped, rows, committed, position) = futures::join!(
            client.execute(&begin, &[]),
            client.execute(&scope, &scope_params),
            client.query(&statement, params),
            client.execute(&commit, &[]),
            client.query_one(&position, &[]),
        );
        began?;
        scoped?;
        let rows = rows?;
        committed?;
        let position = position?;
        let raw: &str = position.try_get(0)?;
        let lsn = Lsn::parse(raw).map_err(|_| StoreError::Corrupt("commit wal position".into()))?;
        Ok((rows, lsn))
    }
}

impl PrimaryTx<'_> {
    /// Commits and returns a WAL position at or past the commit record, for consistency
    /// tokens: a replica that has replayed up to it sees this transaction.
    ///
    /// One round trip: COMMIT, the position, and an empty transaction for the
    /// `Transaction` to roll back when it is dropped (its Drop always sends ROLLBACK;
    /// with nothing open that would log a warning on the server for every write).
    /// `pg_current_wal_insert_lsn()` rather than `pg_current_wal_lsn()`: it is past the
    /// commit record even when `synchronous_commit` is off and the record is not yet
    /// written.
    pub async fn commit_lsn(self) -> Result<Lsn, StoreError> {
        let messages = self
            .0
            .simple_query("commit; select pg_current_wal_insert_lsn()::text; begin")
            .await?;
        let raw = messages
            .iter()
            .find_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            })
            .ok_or_else(|| StoreError::Corrupt("commit returned no wal position".into()))?;
        Lsn::parse(raw).map_err(|_| StoreError::Corrupt("commit wal position".into()))
    }
}

/// Which kind of server answered a read (`X-Served-By`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServedBy {
    Primary,
    Replica,
}

impl ServedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// A connection chosen for a read by [`RegionDatabase::reader`](crate::RegionDatabase::reader)
/// (or built by the caller from a [`Primary`] or [`Replica`] it holds).
#[derive(Debug)]
pub enum Reader {
    Primary(Primary),
    Replica(Replica),
}

impl Reader {
    pub fn served_by(&self) -> ServedBy {
        match self {
            Self::Primary(_) => ServedBy::Primary,
            Self::Replica(_) => ServedBy::Replica,
        }
    }

    /// The underlying client, outside any tenant scope: for system reads only.
    pub fn client(&self) -> &tokio_postgres::Client {
        match self {
            Self::Primary(primary) => primary.client(),
            Self::Replica(replica) => replica.client(),
        }
    }

    /// Which of the region's replicas serves this read, if a replica does.
    pub(crate) fn replica_index(&self) -> Option<usize> {
        match self {
            Self::Primary(_) => None,
            Self::Replica(replica) => Some(replica.index),
        }
    }

    /// Closes the connection instead of returning it to the pool: after an error that may
    /// have broken it.
    pub fn discard(self) {
        match self {
            Self::Primary(primary) => primary.discard(),
            Self::Replica(replica) => replica.discard(),
        }
    }

    fn object(&mut self) -> &mut Object {
        match self {
            Self::Primary(primary) => &mut primary.0,
            Self::Replica(replica) => &mut replica.object,
        }
    }

    /// Runs one read-only statement confined to `tenant`'s rows in a round trip: BEGIN
    /// (read only), the scope, `sql` and COMMIT are prepared once per connection and then
    /// sent together (tokio-postgres pipelines statements issued concurrently, in the
    /// order they were issued), where [`Reader::begin_tenant`] waits for each in turn.
    /// COMMIT is queued with the rest, so the transaction ends even if this future is
    /// dropped half-way, or `sql` fails (COMMIT then rolls back).
    pub async fn query_scoped(
        &mut self,
        tenant: &TenantId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.object();
        let begin = client
            .prepare_cached("begin isolation level repeatable read read only")
            .await?;
        let scope = client.prepare_cached(scope_sql()).await?;
        let statement = client.prepare_cached(sql).await?;
        let commit = client.prepare_cached("commit").await?;
        let tenant = tenant.as_str();
        let scope_params: [&(dyn ToSql + Sync); 1] = [&tenant];
        // Each future sends its statement when first polled, and `join!` polls in order.
        let (began, scoped, rows, committed) = futures::join!(
            client.execute(&begin, &[]),
            client.execute(&scope, &scope_params),
            client.query(&statement, params),
            client.execute(&commit, &[]),
        );
        began?;
        scoped?;
        let rows = rows?;
        committed?;
        Ok(rows)
    }

    /// Starts a read-only transaction confined to `tenant`'s rows, on one snapshot
    /// (repeatable read), so that the reads of one request agree with each other.
    pub async fn begin_tenant(&mut self, tenant: &TenantId) -> Result<ReadTx<'_>, StoreError> {
        begin_read(self.object(), tenant).await
    }
}

/// A read-only transaction confined to `tenant` on `object`, on one snapshot.
async fn begin_read<'a>(
    object: &'a mut Object,
    tenant: &TenantId,
) -> Result<ReadTx<'a>, StoreError> {
    let tx = object
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    scope(&tx, tenant).await?;
    Ok(ReadTx(tx))
}

impl Primary {
    /// [`Reader::begin_tenant`] on this primary, keeping it: for the reads of a job or
    /// a use case that writes on the same connection afterwards. The node's own role
    /// reads no tenant data, so every read of a tenant's rows goes through one.
    pub async fn read_tenant(&mut self, tenant: &TenantId) -> Result<ReadTx<'_>, StoreError> {
        begin_read(&mut self.0, tenant).await
    }
}

/// A read-only, tenant-scoped transaction on a primary or replica; dropping it without
/// [`ReadTx::finish`] rolls back, which for a read is just as good.
#[derive(Debug)]
pub struct ReadTx<'a>(deadpool_postgres::Transaction<'a>);

impl ReadTx<'_> {
    pub fn client(&self) -> &tokio_postgres::Transaction<'_> {
        &self.0
    }

    /// Ends the transaction.
    pub async fn finish(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}
