//! Another region as the router reaches it: its id and header value, its upstream for
//! forwarding and its public origin for redirects.

use hop::{Origin, Upstream};
use http::HeaderValue;
use model::RegionId;
use prometheus_client::metrics::histogram::Histogram;

/// Another region as the router reaches it.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) region: RegionId,
    pub(crate) region_header: HeaderValue,
    /// This region's series of the forwarding-latency histogram, when metrics are on.
    pub(crate) forward_duration: Option<Histogram>,
    /// `None` when the internal endpoint is not an absolute http URL (logged when used).
    pub(crate) internal: Option<Upstream>,
    pub(crate) public: Option<Origin>,
}

pub(crate) fn region_value(region: &RegionId) -> HeaderValue {
    // Region ids are lowercase ASCII words, digits and hyphens.
    HeaderValue::from_str(region.as_str()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
