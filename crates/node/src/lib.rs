//! `node`: composing a regional node from plain configuration — database pools,
//! migrations, KMS and object store, audit log, router, tenant API and HTTP server — and
//! the compositions the binaries run: [`serve`] (a catalogued region with AWS backends and
//! the PostgreSQL tenant directory), [`dev`] (every region on one machine with local
//! PostgreSQL, KMS and object store), [`migrate`] and [`export`] (one region's analytics
//! export). It never parses a command line: the `residency` and `residency-bench` binaries turn their
//! arguments into these configuration structs.

pub mod dev;
pub mod directory;
pub mod export;
pub mod migrate;
pub mod serve;
mod start;

pub use api::MetricsAccess;
pub use api::rate_limit::RateLimit;
pub use hop::InternalProtocol;
pub use service::jobs::JobSettings;
pub use service::{AuditSettings, ReadAudit};
pub use start::{
    AUDIT_DRAIN_TIMEOUT, ApiSettings, Backends, NodeAudit, NodeConfig, NodeListeners, Platform,
    Routing, RunningNode, ShutdownSettings, start, start_on,
};
