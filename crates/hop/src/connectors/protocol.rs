//! Which protocol the dial side asks an upstream for, and the default: HTTP/1.1 on a
//! bounded pool, HTTP/2 past it (the trade is measured in `upstream`'s module docs).

/// Which protocol to ask an internal endpoint for (see the module docs for the trade).
/// The default is [`InternalProtocol::Http1WithHttp2Overflow`] with
/// [`DEFAULT_HTTP1_CONNECTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalProtocol {
    /// HTTP/1.1 over pooled keep-alive connections, as many as requests in flight.
    Http1,
    /// HTTP/2 with prior knowledge on `http://` endpoints (every node accepts it beside
    /// HTTP/1.1), offered by ALPN on `https://` ones, HTTP/1.1 where the TLS peer does
    /// not agree to it: for links with many requests in flight.
    Http2,
    /// HTTP/1.1 on at most `http1_connections` pooled connections to each region; a
    /// request that finds none of them idle and the pool full rides one shared HTTP/2
    /// connection instead of opening another, and so does every request while that
    /// connection carries `http1_connections` requests or more (a busy link, where
    /// HTTP/2 batches). A few requests in flight take the cheaper HTTP/1.1 path; a burst
    /// beyond the pool neither waits for new handshakes across the WAN nor grows the
    /// home's connection count without bound.
    Http1WithHttp2Overflow {
        /// HTTP/1.1 connections per region, idle and busy together.
        http1_connections: usize,
    },
}

/// The HTTP/1.1 connections to each region by default: above the handful of requests in
/// flight that a region's link carries when it is not busy, below the tens that a busy
/// one does, where HTTP/2 is the cheaper protocol (see the module docs).
pub const DEFAULT_HTTP1_CONNECTIONS: usize = 16;

impl Default for InternalProtocol {
    fn default() -> Self {
        Self::Http1WithHttp2Overflow {
            http1_connections: DEFAULT_HTTP1_CONNECTIONS,
        }
    }
}
