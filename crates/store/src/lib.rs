//! The only crate that speaks SQL: a region's database pools (one primary, its replicas),
//! migrations, region stamping, replica health, consistency routing, tenant-scoped
//! transactions, the tenant-data rows, and SQLSTATE → typed errors.
//!
//! Writes take a [`Primary`] connection by type; reads run through
//! [`RegionDatabase::read`], which chooses a [`Reader`] for a [`ReadConsistency`] and
//! retries a read whose connection died once elsewhere. Tenant data is read and written
//! only inside [`Primary::begin_tenant`] / [`Reader::begin_tenant`] transactions, which
//! row-level security confines to one tenant. A [`RegionDatabase`] holds the pools of
//! exactly one region and refuses a database stamped with another region.

pub mod api_keys;
pub mod audit;
pub mod audit_signing_keys;
pub mod collections;
pub mod directory;
pub mod erasures;
mod error;
pub mod export;
pub mod files;
mod health;
pub mod idempotency;
pub mod jobs;
mod migrate;
pub mod notifications;
pub mod object_deletions;
mod pools;
pub mod purge;
pub mod records;
pub mod reencryption;
mod routing;
mod rows;
mod scoped;
mod statement;
pub mod subjects;
pub mod tenant_keys;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod tokens;

/// Every table that holds a tenant's data: each has a `tenant_id` column under row-level
/// security, and a tenant's rows in them rest in its home region only. Checked against the
/// migrations by this crate's tests and used by the "nothing of the tenant in another
/// region" tests, so a new tenant table is listed here or fails them.
pub const TENANT_TABLES: &[&str] = &[
    "tenants",
    "api_keys",
    "collections",
    "records",
    "record_index",
    "files",
    "audit_events",
    "audit_heads",
    "audit_checkpoints",
    "tenant_keys",
    // A tenant's jobs (migration 0008; `tenant_id` is null for region-wide work).
    "jobs",
    // The erasure ledger's rows (migration 0013): subject tokens and counts, never values.
    "subject_erasures",
    // Idempotency keys of creates (migration 0016): hashes, ids and versions, never values.
    "idempotency_keys",
    // The outbox of object deletions (migration 0017): object keys (random ids), never values.
    "object_deletions",
    // What offboarding purges deleted (migration 0015), written by `residency_purge` only.
    "tenant_purges",
];

pub use error::{BoxError, StoreError, with_causes};
pub use health::{DatabaseHealth, PrimaryHealth, ProbeFailure, ReplicaHealth, ReplicaState};
pub use migrate::{
    CLUSTER_ROLES, ClusterRole, Migration, MigrationError, MigrationReport, embedded_migrations,
    migrate, migrate_with_roles,
};
pub use notifications::{Listener, ListenerSettings, Notice, NoticeHandler};
pub use pools::{
    DatabaseSettings, PgEndpoint, PoolStats, Primary, PrimaryPool, PrimaryTx, RegionDatabase,
    Replica, ReplicaPool, SessionTimeouts,
};
pub use routing::ReadConsistency;
pub use scoped::{APP_ROLE, NODE_ROLE, ReadTx, Reader, ServedBy, TENANT_SETTING};
pub use tls::{PgTls, TlsSetupError};
pub use tokens::{ConsistencyKeys, TokenRefused};
