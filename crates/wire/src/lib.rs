//! The JSON the API speaks: request and response bodies, `application/problem+json`
//! errors (RFC 9457) and header names. The only crate where serde meets the API.

pub mod api;
pub mod examples;
mod health;
pub mod jobs;
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
    /// A client's key for a create (1 to 255 printable ASCII characters): a retry with
    /// the same key and request gets the first answer, nothing created twice.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
}

/// How large a request head a node accepts. A client's request is accepted or refused
/// alike at every region's endpoint, served there or forwarded: the region router holds
/// clients to the `CLIENT_` limits, and a node's HTTP server accepts more, so that the
/// headers a forwarding node adds never push a request it accepted over the home's limit.
pub mod limits {
    /// Header fields in a client's request (hyper's default).
    pub const CLIENT_MAX_HEADERS: usize = 100;
    /// Bytes of a client's request head: request line and header fields (hyper's default
    /// read-buffer limit).
    pub const CLIENT_MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
    /// Header fields a node's server parses: a client's, plus room for the forwarding
    /// headers (entry region, client address, request id, timestamp, signature, `Via`).
    pub const SERVER_MAX_HEADERS: usize = CLIENT_MAX_HEADERS + 32;
    /// Bytes of a request head a node's server reads, with the same room.
    pub const SERVER_MAX_HEAD_BYTES: usize = CLIENT_MAX_HEAD_BYTES + 64 * 1024;
    /// [`SERVER_MAX_HEAD_BYTES`] as HTTP/2's header-list size setting, on both ends of
    /// the hop between regions.
    pub const SERVER_MAX_HEADER_LIST_SIZE: u32 = {
        assert!(SERVER_MAX_HEAD_BYTES <= u32::MAX as usize);
        SERVER_MAX_HEAD_BYTES as u32
    };
}
