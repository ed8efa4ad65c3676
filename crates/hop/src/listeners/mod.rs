//! The accept side of the transport: the node's HTTP server. It accepts on a listener, serves each connection with hyper
//! (HTTP/1.1, or HTTP/2 when the connection opens with its preface), gives every request
//! the peer address (`ConnectInfo<SocketAddr>`) or makes a service for each connection that
//! knows it, and on shutdown lets in-flight requests finish before it returns.
//!
//! Why not `axum::serve`: its connection task polls a shutdown watch on every wake-up (a
//! mutex lock and a waker check per poll, ~5 % of a forwarding node's user time in
//! `bench router`) and sniffs each connection for HTTP/2 through an extra IO layer. Here
//! a connection checks one atomic flag per poll, and shutdown wakes each connection once.
//! The protocol is chosen once per connection, by peeking at its first bytes: HTTP/2 with
//! prior knowledge (cleartext, as between regions: TLS ends at the load balancer in front
//! of a node) or HTTP/1.1; nothing sits between hyper and the socket afterwards.
//!
//! HTTP/2 is there for the forwarding hop between regions: many requests share one
//! connection, so a busy link sends and receives several in one system call where
//! HTTP/1.1 needs two calls per request on each side (see `docs/ARCHITECTURE.md`).
//!
//! It knows nothing of the requests it carries: the limits on a request head come from the
//! caller ([`HeadLimits`]).

mod drain;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt as _};

use drain::{Drain, Draining};

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

/// What [`serve_service`] serves: a cloneable tower service of axum requests that never
/// fails (errors are responses).
pub trait NodeService:
    Service<http::Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> NodeService for S
where
    S: Service<http::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops accepting, lets
/// every connection finish the request it is serving (idle ones close at once) and
/// returns once all have closed.
///
/// Every accepted socket gets `TCP_NODELAY`. A response written in more than one piece (a
/// streamed file, an NDJSON export, a forwarded body arriving in frames) would otherwise
/// have its later small segments held back until the client acknowledges the earlier
/// ones, a delayed-ACK stall of up to 40 ms.
pub async fn serve_service<S: NodeService>(
    listener: TcpListener,
    limits: HeadLimits,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let with_peer = move |peer| WithConnectInfo {
        service: service.clone(),
        peer,
    };
    serve_connections(listener, limits, with_peer, shutdown).await
}

/// As [`serve_service`], with the service for each connection made by
/// `for_connection(peer)`, which puts no `ConnectInfo` in the requests: the service knows
/// its peer and passes it on as its handlers need it (`RouterService::for_peer` does,
/// and saves the three allocations of a request's first extension on every request it
/// forwards).
pub async fn serve_connections<S, F>(
    listener: TcpListener,
    limits: HeadLimits,
    for_connection: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: NodeService,
    F: Fn(SocketAddr) -> S + Send + 'static,
{
    let drain = Arc::new(Drain::default());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, limits, for_connection(peer), Arc::clone(&drain)));
                }
                Err(err) if is_connection_error(&err) => {}
                Err(err) => {
                    // Out of file descriptors or memory: wait instead of spinning.
                    tracing::error!(error = %err, "cannot accept connections");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    drop(listener);
    drain.start();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The first bytes an HTTP/2 client with prior knowledge sends (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams one HTTP/2 connection may have open at once; more are refused (and a client
/// may retry them: they were not processed).
const HTTP2_MAX_STREAMS: u32 = 256;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Waits for the connection's first bytes and reads the protocol from them without
/// consuming them. Anything but the HTTP/2 preface (including a peer that closes at once)
/// is HTTP/1.1, whose parser then answers it.
async fn protocol_of(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    loop {
        let seen = stream.peek(&mut first).await?;
        if seen == 0 || first[..seen] != HTTP2_PREFACE[..seen] {
            return Ok(Protocol::Http1);
        }
        if seen == HTTP2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // Part of the preface so far (it comes in one segment from any real client): peek
        // returns at once while data is waiting, so wait a little for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve_connection<S: NodeService>(
    stream: TcpStream,
    limits: HeadLimits,
    service: S,
    drain: Arc<Drain>,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY on an accepted connection");
    }
    let protocol = {
        let stopped = drain.stopped();
        tokio::select! {
            biased;
            () = stopped => return,
            protocol = protocol_of(&stream) => match protocol {
                Ok(protocol) => protocol,
                Err(err) => {
                    tracing::debug!(error = %err, "connection ended before its first request");
                    return;
                }
            },
        }
    };
    let service = HyperAdapter { service };
    let io = TokioIo::new(stream);
    let ended = match protocol {
        Protocol::Http1 => {
            // The caller's limits are larger than a client may send (the router holds
            // clients to smaller ones), so that a forwarded request, which carries the
            // forwarding headers too, always fits.
            let connection = hyper::server::conn::http1::Builder::new()
                .max_headers(limits.max_headers)
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(io, service);
            Draining::new(connection, drain).await
        }
        Protocol::Http2 => {
            let connection =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(HTTP2_MAX_STREAMS)
                    .max_header_list_size(limits.max_header_list_size)
                    .serve_connection(io, service);
            Draining::new(connection, drain).await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// The per-connection adapter from hyper to the tower service: the axum body for each
/// request.
#[derive(Clone)]
pub(crate) struct HyperAdapter<S> {
    service: S,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for HyperAdapter<S>
where
    S: Service<http::Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = tower::util::Oneshot<S, http::Request<Body>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        // A request without a body (most GETs) gets an empty body, which boxes nothing.
        let request = if request.body().is_end_stream() {
            request.map(|_| Body::empty())
        } else {
            request.map(Body::new)
        };
        self.service.clone().oneshot(request)
    }
}

/// A service that gives every request its connection's peer address as
/// `ConnectInfo<SocketAddr>`, as axum's extractor reads it.
#[derive(Clone)]
struct WithConnectInfo<S> {
    service: S,
    peer: SocketAddr,
}

impl<S> Service<http::Request<Body>> for WithConnectInfo<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.service.call(request)
    }
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
