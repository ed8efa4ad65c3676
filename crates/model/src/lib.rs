//! Domain newtypes and rules shared by every crate: regions, jurisdictions, tenants,
//! residency policy, tenant key metadata, log sequence numbers. Pure: no IO, no serde; what leaves the process goes
//! through `wire` or `audit`.

mod keys;
mod lsn;
mod region;
mod residency;
mod tenant;

pub use keys::{KeyPurpose, KeyState, KeyVersion};
pub use lsn::{Lsn, LsnParseError};
pub use region::{Jurisdiction, JurisdictionParseError, RegionId, RegionIdError};
pub use residency::{ResidencyPolicy, ResidencyPolicyError, Transit, TransitParseError};
pub use tenant::{TenantId, TenantIdError};
