//! The JSON the API speaks: request and response bodies, `application/problem+json`
//! errors (RFC 9457) and header names. The only crate where serde meets the API.

pub mod api;
mod health;
mod problem;

pub use health::{
    AuditCheck, ComponentCheck, Liveness, PrimaryCheck, Readiness, ReadinessChecks, ReplicaCheck,
};
pub use problem::{PROBLEM_JSON, Problem};

/// Header names of the public contract (API.md).
pub mod headers {
    /// The tenant's home region, which served the request.
    pub const RESIDENCY_REGION: &str = "x-residency-region";
    /// The region whose endpoint received the request.
    pub const RESIDENCY_VIA: &str = "x-residency-via";
    /// `primary` or `replica`, on reads.
    pub const SERVED_BY: &str = "x-served-by";
    /// Echoed if the client sent one, generated otherwise.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Set by the region router on a request whose forwarding signature verified: the
    /// region whose endpoint received it. Internal; the router strips client copies.
    pub const ENTRY_REGION: &str = "x-residency-entry-region";
    /// Opaque read-your-writes token returned by writes.
    pub const CONSISTENCY_TOKEN: &str = "x-consistency-token";
}
