//! What a server allows a connection: the size of a request head ([`HeadLimits`]), how long
//! a connection may take to say what it wants and how long it may sit idle, how many may be
//! open at once, and HTTP/2's limits against abuse ([`ConnectionLimits`]). All of it comes
//! from the caller in one [`ServerConfig`], with the counters it reports to.

use std::time::Duration;

use super::metrics::ConnectionMetrics;

/// What a connection's server reads of a request head at most: larger heads are refused
/// (`431`) by hyper before any service sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Header fields of one HTTP/1.1 request.
    pub max_headers: usize,
    /// Bytes of one HTTP/1.1 request head (the request line and its fields).
    pub max_head_bytes: usize,
    /// HTTP/2's header-list size setting (RFC 9113 §6.5.2).
    pub max_header_list_size: u32,
}

/// How long a connection may take and hold, how many there may be, and HTTP/2's limits.
///
/// Timeouts are enforced by one timer per connection that ticks every
/// [`header_read_timeout`](Self::header_read_timeout) (not a timer per request or a clock
/// read per poll), so a timeout closes a connection after between one and two of its
/// lengths (the idle timeout: after between it and it plus one tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a new connection may take to send enough bytes to tell HTTP/1.1 from
    /// HTTP/2 (at most the 24 of HTTP/2's preface are read to decide); after it the
    /// connection is closed.
    pub sniff_timeout: Duration,
    /// How long an HTTP/1.1 request head may take to arrive once its first byte has: a
    /// client that trickles its head (slowloris) is closed after it.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight is kept open (HTTP/1.1 keep-alive,
    /// HTTP/2 with no open stream); then it is closed (HTTP/2 with a `GOAWAY`).
    pub idle_timeout: Duration,
    /// Connections one listener keeps open at once. A connection beyond it is answered
    /// `503 Service Unavailable` with `Retry-After` and closed, and counted.
    pub max_connections: usize,
    /// The `Retry-After` of that `503`, in seconds.
    pub retry_after_secs: u32,
    /// Streams one HTTP/2 connection may have open at once; more are refused (and a client
    /// may retry them: they were not processed).
    pub http2_max_concurrent_streams: u32,
    /// Streams a peer may reset before the server accepted them, at once; beyond it the
    /// connection is closed with `GOAWAY` (`ENHANCE_YOUR_CALM`): HTTP/2 rapid reset
    /// (CVE-2023-44487).
    pub http2_max_pending_accept_reset_streams: usize,
    /// Streams the server may reset because the peer broke the protocol on them; beyond it
    /// the connection is closed with `GOAWAY` (`ENHANCE_YOUR_CALM`).
    pub http2_max_local_error_reset_streams: usize,
    /// Bytes one HTTP/2 stream may queue for sending before its body stops being polled.
    pub http2_max_send_buf_size: usize,
    /// How often an HTTP/2 connection pings its peer, or `None` for never. hyper's ping
    /// bookkeeping takes a lock and reads the clock on every frame received while it is
    /// on, so it is off where the idle timeout and the connection cap are enough.
    pub http2_keep_alive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub http2_keep_alive_timeout: Duration,
    /// How long a stopping server waits for its in-flight requests once it has stopped
    /// accepting; connections still open then are cut (and counted,
    /// `http_connections_closed{reason="drain_timeout"}`).
    pub drain_timeout: Duration,
}

impl ConnectionLimits {
    /// A node's limits.
    ///
    /// - The idle timeout (120 s) outlasts what keeps connections to a node idle: the
    ///   load balancer's 60 s (`terraform/modules/region_compute/network.tf`) and the 90 s
    ///   another region's upstream pool keeps one (`connectors`), so a node never closes a
    ///   connection that a client is about to reuse.
    /// - A request head comes in one segment from any real client: 10 s is generous, and a
    ///   trickled head holds a connection 20 s at most.
    /// - 10,000 connections stay well below the file descriptors a node's container gets
    ///   (its pools and upstreams need some too).
    /// - The drain (20 s) outlasts any request a node answers (the longest, an audit
    ///   export, streams; the load balancer's own deregistration delay covers the rest), and
    ///   fits the container's stop timeout (`terraform/modules/region_compute`).
    pub const PRODUCTION: Self = Self {
        sniff_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        max_connections: 10_000,
        retry_after_secs: 1,
        http2_max_concurrent_streams: 256,
        http2_max_pending_accept_reset_streams: 20,
        http2_max_local_error_reset_streams: 1024,
        http2_max_send_buf_size: 400 * 1024,
        http2_keep_alive_interval: None,
        http2_keep_alive_timeout: Duration::from_secs(20),
        drain_timeout: Duration::from_secs(20),
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::PRODUCTION
    }
}

/// Everything a server is told by its caller: the limits and the counters it reports to.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub head: HeadLimits,
    pub connections: ConnectionLimits,
    pub metrics: ConnectionMetrics,
}

impl ServerConfig {
    /// `head` with [`ConnectionLimits::PRODUCTION`], counting into series of its own (not
    /// registered anywhere).
    pub fn new(head: HeadLimits) -> Self {
        Self {
            head,
            connections: ConnectionLimits::PRODUCTION,
            metrics: ConnectionMetrics::default(),
        }
    }
}

impl From<HeadLimits> for ServerConfig {
    fn from(head: HeadLimits) -> Self {
        Self::new(head)
    }
}
