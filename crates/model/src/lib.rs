//! Domain newtypes and rules shared by every crate: regions, jurisdictions, residency
//! policy, log sequence numbers. Pure: no IO, no serde; what leaves the process goes
//! through `wire` or `audit`.

mod lsn;
mod region;
mod residency;

pub use lsn::{Lsn, LsnParseError};
pub use region::{Jurisdiction, JurisdictionParseError, RegionId, RegionIdError};
pub use residency::{ResidencyPolicy, ResidencyPolicyError, Transit, TransitParseError};
