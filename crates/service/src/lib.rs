//! Use cases of a regional node, independent of HTTP: authorization, residency checks,
//! sealing, audit in the same transaction: tenant key management (`keys`), the audit log
//! (`audit`), and the tenant service (`tenancy`, `records`, `files`, `compliance`) that
//! the HTTP API calls one function of per request.
//!
//! Tenant plaintext exists only here and in `envelope`; `store` sees ciphertext and ids.

pub mod access;
pub mod analytics;
mod api_keys;
pub mod audit;
pub mod audit_anchors;
pub mod audit_checkpoints;
pub mod audit_keys;
mod audit_queue;
pub mod audit_signing;
mod authentication;
mod collections;
pub mod compliance;
pub mod denials;
pub mod erasure;
mod error;
pub mod files;
pub mod idempotency;
pub mod jobs;
pub mod key_changes;
pub mod key_policy;
pub mod key_rotation;
pub mod keys;
pub mod object_deletions;
mod offboarding;
pub mod rate_limit;
pub mod records;
pub mod stoppable;
pub mod subjects;
pub mod tenancy;
pub mod unit_of_work;
mod write_slots;

pub use audit::{AuditError, AuditLog};
pub use audit::{AuditSettings, ReadAudit};
pub use audit_checkpoints::CheckpointTask;
pub use audit_keys::{AuditKeys, KeyText, KeyTextError};
pub use audit_signing::{AuditKeyError, PublishedKey, RegionAuditKeys, SigningKeys};
pub use error::{BoxError, ServiceError};
pub use key_changes::{KeyChanges, TenantCacheHook};
pub use keys::{
    IndexKeys, KeyError, Keyring, KeyringSettings, ObjectKeyError, RewrapOutcome, RewrapReport,
};
pub use object_deletions::{ObjectSweepSettings, ObjectSweeper};
pub use offboarding::Offboarding;
pub use tenancy::{
    Attempt, Caller, Collection, OperatorGrant, RegionService, RequestContext, ServiceParts,
    ServiceSettings, Tenant, TenantPage, TenantRegistry, Written,
};
pub use unit_of_work::{Committed, EventTiming, UnitOfWork};
