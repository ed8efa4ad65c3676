//! Use cases of a regional node, independent of HTTP: authorization, residency checks,
//! sealing, audit in the same transaction. Today: tenant key management (`keys`).
//!
//! Tenant plaintext exists only here and in `envelope`; `store` sees ciphertext and ids.

pub mod keys;

pub use keys::{KeyError, Keyring, KeyringSettings, ObjectKeyError, RewrapReport};
