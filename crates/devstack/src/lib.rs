//! Local PostgreSQL for `residency dev` and for tests: finds the system's server binaries,
//! creates a primary with `initdb` and a streaming replica with `pg_basebackup -R`, runs
//! them (as the `postgres` user when we are root), and stops them without leaving orphans,
//! even when this process dies without warning. Also the AWS emulator (`moto_server`) the
//! S3 and KMS backends are tested against.
//!
//! This crate never speaks the product's schema: migrations belong to `store`.

mod binaries;
mod cluster;
mod error;
mod guardian;
mod moto;
mod ports;
mod region;
mod run_as;
pub mod testing;

pub use binaries::PgBinaries;
pub use cluster::{ClusterRole, PgCluster};
pub use error::DevstackError;
pub use moto::MotoServer;
pub use ports::free_loopback_port;
pub use region::{Durability, LocalRegion, LocalRegionOptions, NODE_ROLE, SUPERUSER, ServerTls};
pub use run_as::RunAs;
