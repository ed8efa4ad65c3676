//! Domain newtypes and rules shared by every crate: regions, jurisdictions, tenants,
//! residency policy, tenant key metadata, log sequence numbers, consistency tokens, API key
//! roles, collection schemas, the canonical value encoding of blind indexes and pseudonyms
//! ([`canonical`]). Pure: no IO, no serde derives (records are checked as
//! `serde_json` values); what leaves the process goes through `wire` or `audit`.

pub mod canonical;
mod client;
mod consistency;
mod ids;
mod keys;
mod lsn;
mod region;
mod residency;
mod role;
mod schema;
mod tenant;

pub use client::ClientKey;
pub use consistency::{ConsistencyToken, PresentedToken, SignedToken, TOKEN_TAG_BYTES, TokenError};
pub use ids::{
    ApiKeyId, FileName, IdError, KeyName, NewTenant, NewTenantError, NewTenantFields, RecordId,
};
pub use keys::{KeyPurpose, KeyState, KeyVersion};
pub use lsn::{Lsn, LsnParseError};
pub use region::{Jurisdiction, JurisdictionParseError, RegionId, RegionIdError};
pub use residency::{ResidencyPolicy, ResidencyPolicyError, Transit, TransitParseError};
pub use role::{Access, Role, RoleParseError};
pub use schema::{
    AnalyticsSpec, CollectionName, CollectionSchema, FieldClass, FieldError, FieldSpec, FieldType,
    MAX_FIELDS, SchemaError, parse_timestamp,
};
pub use tenant::{TenantId, TenantIdError};
