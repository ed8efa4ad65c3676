//! Use cases of a regional node, independent of HTTP: authorization, residency checks,
//! sealing, audit in the same transaction. Today: tenant key management (`keys`) and the
//! audit log (`audit`).
//!
//! Tenant plaintext exists only here and in `envelope`; `store` sees ciphertext and ids.

pub mod audit;
pub mod keys;

pub use audit::{AuditError, AuditLog};
pub use keys::{KeyError, Keyring, KeyringSettings, ObjectKeyError, RewrapReport};
