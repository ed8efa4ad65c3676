//! The region-pinned router: a tower layer in front of a regional node's app that sends
//! every request to its tenant's home region. Local tenants are served in-process (no extra
//! hop); foreign tenants are forwarded over pooled hyper connections with signed forwarding
//! headers, or redirected (`307`), as the tenant's transit policy says; a request that a
//! stale cache sent to the wrong region is corrected (`421` → refresh → retry once).
//!
//! The router reads only method, path and headers (and the `home_region` of a
//! `POST /v1/tenants` body). It never stores, caches or logs bodies, and never logs a path:
//! logs and metrics carry decisions, region ids and tenant ids only. It does not link
//! `store`, `envelope` or `service`.

mod admission;
mod answers;
mod body;
mod cache;
mod config;
mod decision;
pub mod delay_proxy;
mod directory;
mod forwarding;
mod layer;
mod limits;
mod metrics;
mod problem;
mod router_core;
mod routing;
mod signing;
mod target;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cache::{CachedDirectory, DirectoryLimits};
pub use config::{ConfigError, RegionEndpoints, RouterConfig, regions_from_catalog};
pub use delay_proxy::{DelayProxy, DelayProxyHandle};
pub use directory::{
    Directory, DirectoryEntry, DirectoryError, DirectoryLocation, MemoryDirectory,
};
pub use layer::{RouterLayer, RouterService, layer};
pub use limits::Rate;
pub use metrics::{Decision, RouterMetrics};
pub use signing::{
    DEFAULT_MAX_SKEW, ForwardError, ForwardSigner, Forwarded, ForwardingKey, KeyError, MIN_KEY_LEN,
    Vouching,
};

/// Header names the router reads and writes, besides those of `wire::headers`.
pub mod headers {
    pub use wire::headers::{REQUEST_ID, RESIDENCY_REGION, RESIDENCY_VIA};

    /// What a forwarding node vouches for, signed: `v2;at=<unix seconds>;entry=<entry
    /// region>;for=<client address>;sig=<hex HMAC-SHA256>` (see `signing`).
    pub const FORWARDED: &str = "x-residency-forwarded";
    /// Every header whose name starts with this belongs to the router: a client's copies
    /// are stripped unless signed, and none is forwarded as the client sent it.
    pub const FORWARDED_PREFIX: &str = "x-residency-forwarded";
    /// Set by the router, for the local app only, on a request whose forwarding signature
    /// verified: the entry region. Any client copy is removed first, so the app may trust it.
    pub const ENTRY_REGION: &str = "x-residency-entry-region";
}

/// The same names as [`headers`], as `HeaderName`s built at compile time: a `&str` name is
/// parsed and validated again on every map operation, which the forwarding hop does about
/// twenty times per request.
mod names {
    use http::HeaderName;

    use crate::headers;

    pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static(headers::REQUEST_ID);
    pub(crate) const RESIDENCY_REGION: HeaderName =
        HeaderName::from_static(headers::RESIDENCY_REGION);
    pub(crate) const RESIDENCY_VIA: HeaderName = HeaderName::from_static(headers::RESIDENCY_VIA);
    pub(crate) const FORWARDED: HeaderName = HeaderName::from_static(headers::FORWARDED);
    pub(crate) const ENTRY_REGION: HeaderName = HeaderName::from_static(headers::ENTRY_REGION);
}
