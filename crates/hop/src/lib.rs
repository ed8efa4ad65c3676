//! The HTTP transport of a regional node: the accept side ([`listeners`]: the node's
//! server, its connections, limits and graceful drain) and the dial side ([`connectors`]:
//! the pooled client to other regions' upstreams, HTTP/1.1 with an HTTP/2 overflow). All
//! protocol tuning lives here.
//!
//! It links no domain crate: it knows requests, responses and bodies, never tenants,
//! regions' rules or the meaning of a header. Limits come in as values from its callers.

pub mod connectors;
pub mod listeners;

pub use connectors::{
    Connectors, DEFAULT_HTTP1_CONNECTIONS, InternalProtocol, Origin, Upstream, UpstreamError,
};
pub use listeners::{
    ClosedReason, ConnectionLimits, ConnectionMetrics, HeadLimits, NodeService, ServerConfig,
    serve_connections, serve_service,
};
