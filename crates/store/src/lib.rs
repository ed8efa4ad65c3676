//! The only crate that speaks SQL: a region's database pools (one primary, its replicas),
//! migrations, region stamping, replica health, and SQLSTATE → typed errors.
//!
//! Writes take a [`Primary`] connection by type; reads take a [`Replica`] (or fall back to
//! a `Primary`). A [`RegionDatabase`] holds the pools of exactly one region and refuses a
//! database stamped with another region.

pub mod audit;
mod error;
mod health;
mod migrate;
mod pools;
pub mod tenant_keys;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::StoreError;
pub use health::{DatabaseHealth, PrimaryHealth, ProbeFailure, ReplicaHealth, ReplicaState};
pub use migrate::{Migration, MigrationError, MigrationReport, embedded_migrations, migrate};
pub use pools::{
    DatabaseSettings, PgEndpoint, PoolStats, Primary, PrimaryPool, PrimaryTx, RegionDatabase,
    Replica, ReplicaPool,
};
