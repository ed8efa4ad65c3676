//! The node's HTTP server: accepts on a listener, serves each connection with hyper
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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
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
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let with_peer = move |peer| WithConnectInfo {
        service: service.clone(),
        peer,
    };
    serve_connections(listener, with_peer, shutdown).await
}

/// As [`serve_service`], with the service for each connection made by
/// `for_connection(peer)`, which puts no `ConnectInfo` in the requests: the service knows
/// its peer and passes it on as its handlers need it (`RouterService::for_peer` does,
/// and saves the three allocations of a request's first extension on every request it
/// forwards).
pub async fn serve_connections<S, F>(
    listener: TcpListener,
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
                    connections.spawn(serve_connection(stream, for_connection(peer), Arc::clone(&drain)));
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

async fn serve_connection<S: NodeService>(stream: TcpStream, service: S, drain: Arc<Drain>) {
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
            // Larger than a client may send (the router holds clients to `CLIENT_`
            // limits), so that a forwarded request, which carries the forwarding headers
            // too, always fits.
            let connection = hyper::server::conn::http1::Builder::new()
                .max_headers(wire::limits::SERVER_MAX_HEADERS)
                .max_buf_size(wire::limits::SERVER_MAX_HEAD_BYTES)
                .serve_connection(io, service);
            Draining::new(connection, drain).await
        }
        Protocol::Http2 => {
            let connection =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(HTTP2_MAX_STREAMS)
                    .max_header_list_size(wire::limits::SERVER_MAX_HEADER_LIST_SIZE)
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
struct HyperAdapter<S> {
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

/// Shutdown for every connection at once: a flag each connection reads when it is polled,
/// and the wakers of those that are waiting, so that each is polled once more.
#[derive(Default)]
struct Drain {
    stopping: AtomicBool,
    waiting: Mutex<slab::Slab<Waker>>,
    /// For connections that have not sent their first bytes yet.
    started: tokio::sync::Notify,
}

impl Drain {
    fn start(&self) {
        self.stopping.store(true, Ordering::Release);
        self.started.notify_waiters();
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, waker) in waiting.iter() {
            waker.wake_by_ref();
        }
    }

    /// Resolves once the drain has started (at once if it has).
    async fn stopped(&self) {
        let notified = self.started.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read: a start in between still wakes it.
        notified.as_mut().enable();
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// A hyper connection that can be asked to finish what it is serving and close.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S: NodeService> Graceful
    for hyper::server::conn::http1::Connection<TokioIo<TcpStream>, HyperAdapter<S>>
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

impl<S: NodeService> Graceful
    for hyper::server::conn::http2::Connection<
        TokioIo<TcpStream>,
        HyperAdapter<S>,
        hyper_util::rt::TokioExecutor,
    >
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// A connection that starts hyper's graceful shutdown once the [`Drain`] starts.
struct Draining<C> {
    connection: Pin<Box<C>>,
    drain: Arc<Drain>,
    /// This connection's key in `drain.waiting` and the waker stored there.
    registered: Option<(usize, Waker)>,
    closing: bool,
}

impl<C: Graceful> Draining<C> {
    fn new(connection: C, drain: Arc<Drain>) -> Self {
        Self {
            connection: Box::pin(connection),
            drain,
            registered: None,
            closing: false,
        }
    }
}

impl<C: Graceful> Future for Draining<C> {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `connection` is boxed, so nothing here is pinned structurally.
        let this = self.get_mut();
        if !this.closing {
            let current = this
                .registered
                .as_ref()
                .is_some_and(|(_, waker)| waker.will_wake(cx.waker()));
            if !current {
                let mut waiting = this
                    .drain
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match &mut this.registered {
                    Some((key, waker)) => {
                        waker.clone_from(cx.waker());
                        if let Some(stored) = waiting.get_mut(*key) {
                            stored.clone_from(cx.waker());
                        }
                    }
                    None => {
                        let key = waiting.insert(cx.waker().clone());
                        this.registered = Some((key, cx.waker().clone()));
                    }
                }
            }
            // After registering: a drain that starts later wakes this connection.
            if this.drain.stopping.load(Ordering::Acquire) {
                this.closing = true;
                this.connection.as_mut().graceful_shutdown();
            }
        }
        this.connection.as_mut().poll(cx)
    }
}

impl<C> Drop for Draining<C> {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            let mut waiting = self
                .drain
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            waiting.try_remove(key);
        }
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
