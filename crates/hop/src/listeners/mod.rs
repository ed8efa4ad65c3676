//! The accept side of the transport: the node's HTTP server. It accepts on a listener, serves each connection with hyper
//! (HTTP/1.1, or HTTP/2 when the connection opens with its preface), gives every request
//! the peer address (`ConnectInfo<SocketAddr>`) or makes a service for each connection that
//! knows it, and on shutdown lets in-flight requests finish before it returns.
//!
//! Why not `axum::serve`: its connection task polls a shutdown watch on every wake-up (a
//! mutex lock and a waker check per poll, ~5 % of a forwarding node's user time in
//! `bench router`) and sniffs each connection for HTTP/2 through an extra IO layer. Here
//! a connection checks two flags per poll (the drain's and its timer's), and shutdown
//! wakes each connection once. The protocol is chosen once per connection, by peeking at
//! its first bytes: HTTP/2 with prior knowledge (cleartext, as between regions: TLS ends at
//! the load balancer in front of a node) or HTTP/1.1; nothing sits between hyper and the
//! socket afterwards but, for HTTP/1.1, one store per read that returned bytes (the
//! request head's deadline starts with them).
//!
//! HTTP/2 is there for the forwarding hop between regions: many requests share one
//! connection, so a busy link sends and receives several in one system call where
//! HTTP/1.1 needs two calls per request on each side (see `docs/ARCHITECTURE.md`).
//!
//! Against clients that hold connections without using them: a connection must say which
//! protocol it speaks within a deadline (`sniff`), an HTTP/1.1 request head must arrive
//! within its own once it has begun, and a connection with no request in flight is closed
//! after the idle timeout (`watchdog`: one timer per connection); a listener keeps a
//! bounded number of connections open and answers the next one `503` (`refuse`); HTTP/2
//! connections are held to limits on streams, resets, header lists and send buffers.
//!
//! It knows nothing of the requests it carries: the limits come from the caller
//! ([`ServerConfig`]: [`HeadLimits`], [`ConnectionLimits`]), and so do the counters it
//! reports to ([`ConnectionMetrics`]).

mod drain;
mod limits;
mod metrics;
mod refuse;
mod sniff;
mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use futures::FutureExt as _;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt as _};

use drain::{Drain, Draining};
pub use limits::{ConnectionLimits, HeadLimits, ServerConfig};
pub use metrics::{ClosedReason, ConnectionMetrics};
use refuse::Refusal;
use sniff::{Protocol, protocol_of};
use watchdog::{Activity, InFlight, NotingReads, TrackedBody, Watchdog};

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
/// `config` holds the limits ([`HeadLimits`] alone means [`ConnectionLimits::PRODUCTION`])
/// and the counters of refused and timed-out connections.
///
/// Every accepted socket gets `TCP_NODELAY`. A response written in more than one piece (a
/// streamed file, an NDJSON export, a forwarded body arriving in frames) would otherwise
/// have its later small segments held back until the client acknowledges the earlier
/// ones, a delayed-ACK stall of up to 40 ms.
pub async fn serve_service<S: NodeService>(
    listener: TcpListener,
    config: impl Into<ServerConfig>,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let with_peer = move |peer| WithConnectInfo {
        service: service.clone(),
        peer,
    };
    serve_connections(listener, config, with_peer, shutdown).await
}

/// As [`serve_service`], with the service for each connection made by
/// `for_connection(peer)`, which puts no `ConnectInfo` in the requests: the service knows
/// its peer and passes it on as its handlers need it (`RouterService::for_peer` does,
/// and saves the three allocations of a request's first extension on every request it
/// forwards).
///
/// At most `max_connections` are open at once; one beyond is answered `503` with
/// `Retry-After` and closed at once, and counted (`ConnectionMetrics::refused`).
pub async fn serve_connections<S, F>(
    listener: TcpListener,
    config: impl Into<ServerConfig>,
    for_connection: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: NodeService,
    F: Fn(SocketAddr) -> S + Send + 'static,
{
    let config = Arc::new(config.into());
    let refusal = Refusal::new(config.connections.retry_after_secs);
    let max_connections = config.connections.max_connections;
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
                    if connections.len() >= max_connections {
                        // Connections that ended since the last turn of the loop.
                        while connections.try_join_next().is_some() {}
                    }
                    if connections.len() >= max_connections {
                        config.metrics.count_refused();
                        refusal.answer(stream);
                    } else {
                        connections.spawn(serve_connection(
                            stream,
                            Arc::clone(&config),
                            for_connection(peer),
                            Arc::clone(&drain),
                        ));
                    }
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
    let drained = tokio::time::timeout(config.connections.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // In-flight requests past the bound: cut, so that the node's shutdown (the audit
        // queue's flush after it) fits the time its supervisor gives it.
        let cut = connections.len();
        tracing::warn!(
            connections = cut,
            "connections still open after the drain timeout were cut"
        );
        for _ in 0..cut {
            config.metrics.count_closed(ClosedReason::Drain);
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

async fn serve_connection<S: NodeService>(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    service: S,
    drain: Arc<Drain>,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY on an accepted connection");
    }
    let limits = &config.connections;
    // The connection's one timer: the sniffing deadline, then the watchdog's ticks.
    let mut timer = Box::pin(tokio::time::sleep(limits.sniff_timeout));
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
            () = timer.as_mut() => {
                config.metrics.count_closed(ClosedReason::Sniff);
                return;
            }
        }
    };
    let activity = Arc::new(Activity::default());
    let watchdog = Watchdog::new(timer, Arc::clone(&activity), protocol, limits);
    let metrics = config.metrics.clone();
    let ended = match protocol {
        Protocol::Http1 => {
            let service = HyperAdapter {
                service,
                activity: Arc::clone(&activity),
            };
            let io = TokioIo::new(NotingReads::new(stream, activity));
            // The caller's limits are larger than a client may send (the router holds
            // clients to smaller ones), so that a forwarded request, which carries the
            // forwarding headers too, always fits. The head's read deadline is the
            // watchdog's: hyper's own would start when the connection goes idle, and so
            // close idle keep-alive connections as early as slow heads.
            let connection = hyper::server::conn::http1::Builder::new()
                .max_headers(config.head.max_headers)
                .max_buf_size(config.head.max_head_bytes)
                .header_read_timeout(None)
                .serve_connection(io, service);
            Draining::new(connection, drain, watchdog, metrics).await
        }
        Protocol::Http2 => {
            let service = HyperAdapter { service, activity };
            let mut builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .max_concurrent_streams(limits.http2_max_concurrent_streams)
                .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
                .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
                .max_send_buf_size(limits.http2_max_send_buf_size)
                .max_header_list_size(config.head.max_header_list_size);
            if let Some(interval) = limits.http2_keep_alive_interval {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(limits.http2_keep_alive_timeout);
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            Draining::new(connection, drain, watchdog, metrics).await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// The future of one request's response: the service's, then the response body tied to
/// the request's [`InFlight`] (a plain function, so the type has a name and costs no
/// allocation).
type TrackedResponse<S> = futures::future::Map<
    futures::future::Join<
        tower::util::Oneshot<S, http::Request<Body>>,
        std::future::Ready<InFlight>,
    >,
    fn((Result<Response, Infallible>, InFlight)) -> Result<Response<TrackedBody>, Infallible>,
>;

/// The per-connection adapter from hyper to the tower service: the axum body for each
/// request, and the request counted in flight until its response body is dropped.
#[derive(Clone)]
pub(crate) struct HyperAdapter<S> {
    service: S,
    activity: Arc<Activity>,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for HyperAdapter<S>
where
    S: Service<http::Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedResponse<S>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        // A request without a body (most GETs) gets an empty body, which boxes nothing.
        let request = if request.body().is_end_stream() {
            request.map(|_| Body::empty())
        } else {
            request.map(Body::new)
        };
        let response = self.service.clone().oneshot(request);
        futures::future::join(response, std::future::ready(in_flight)).map(InFlight::track as _)
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
