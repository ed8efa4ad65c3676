//! The region catalogue: loading and validating `regions/*.toml`, the single source of truth
//! for where each region's endpoints, databases, buckets and keys are, and secrets as
//! redacting types. Secrets appear in the catalogue only by reference.

mod catalog;
mod error;
mod raw;
mod rules;
mod secret;
mod spec;
mod terraform;

pub use catalog::Catalog;
pub use error::CatalogError;
pub use secret::{Secret, SecretError, SecretRef};
pub use spec::{
    AnalyticsSpec, DatabaseSpec, DbEndpoint, DbTls, Endpoints, KmsSpec, RegionSpec, StorageSpec,
};
pub use terraform::{TERRAFORM_VARS_COMMAND, TERRAFORM_VARS_PATH, terraform_vars};
