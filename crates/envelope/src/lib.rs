//! Envelope encryption for one region: KMS backends (AWS, local), tenant data keys in
//! memory, field sealing (AES-256-GCM with bound associated data), blind indexes for
//! exact-match search, and segment-encrypted objects in the region's object store.
//!
//! Plaintext keys exist only in [`KeyMaterial`] (zeroized on drop) and [`DataKey`] (its
//! material zeroized; its AES key schedule, held by aws-lc, is not cleansed: see
//! `DataKey`). This crate never speaks SQL: wrapped keys are persisted by `store`, driven
//! by `service`.

pub mod aws;
pub mod blind_index;
mod fault_plan;
mod key;
pub mod kms;
pub mod objects;
pub mod pseudonym;
pub mod seal;
pub mod sealed_objects;
pub mod stream;
pub mod subject_index;

pub use key::{DataKey, KeyMaterial, KeyPurpose, KeyState, KeyVersion};
