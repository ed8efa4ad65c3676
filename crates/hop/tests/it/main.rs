//! Integration tests of the transport: a real server (`hop::serve_service`) on loopback
//! ports, and upstreams dialling it in every protocol mode, with tokio's paused clock where
//! the behaviour depends on time.

mod connectors;
mod listeners;

/// The head limits of the test servers (those of a node, in round numbers).
pub const LIMITS: hop::HeadLimits = hop::HeadLimits {
    max_headers: 132,
    max_head_bytes: 480 * 1024,
    max_header_list_size: 480 * 1024,
};
