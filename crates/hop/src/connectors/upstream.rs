//! Connections to one region's upstream (its internal endpoint), on hyper's connection-level client:
//! pooled keep-alive HTTP/1.1 connections, up to a bound, and past it one shared HTTP/2
//! connection (the default, [`InternalProtocol::Http1WithHttp2Overflow`]); or only one
//! of the two. HTTP/2 is spoken with prior knowledge on `http://` (every node accepts it
//! beside HTTP/1.1) and by ALPN on `https://`. It never reads, keeps or logs a body
//! beyond passing it on.
//!
//! HTTP/2 carries many requests per system call on a busy link, where HTTP/1.1 costs a
//! write and a read on each side of the link per request; but each HTTP/2 request costs
//! more in user space (HPACK, with Huffman coding of the forwarding header and request id
//! that differ on every request, framing, the connection's own task, a timer per request).
//! In `bench router` on this 2-core machine, HTTP/2 alone took (c) from 0.69–0.86 of
//! nginx's requests per second to 0.95–1.07, but (b) from throughput 0.96, +40–65 µs p50 to
//! 0.77–0.87, +180–305 µs: at 8 clients the home and the entry each spent 10–18 µs more
//! CPU per request, all of it in user space (perf: fewer system calls than HTTP/1.1).
//! Hence the default: a link with a few requests in flight uses HTTP/1.1, the requests
//! beyond [`DEFAULT_HTTP1_CONNECTIONS`] in flight share an HTTP/2 connection, where they
//! batch, and while that connection carries at least as many requests as the pool has
//! connections, every new request joins it: a busy link moves to HTTP/2 altogether, and
//! back to HTTP/1.1 when it quietens. Overflow alone (the HTTP/1.1 connections kept
//! busy) gave (c) 0.79–1.00 where HTTP/1.1 alone got 0.71–0.72; moving the busy link
//! over took it to 0.93–0.95, while (b), whose 8 requests in flight never open HTTP/2,
//! kept HTTP/1.1's figures. The bound also caps the connections each entry node holds
//! open at a home, and a burst rides the open HTTP/2 connection instead of waiting for
//! new handshakes across the WAN. Only one HTTP/2 connection is opened at a time, so
//! that a burst shares it. It is driven by a task of its own; flow control bounds what
//! it buffers per stream and per connection. The values that differ on every request
//! (the forwarding header, the request id) go as literals never indexed, so that they
//! do not churn the HPACK tables (the caller marks them sensitive).
//!
//! An HTTP/1.1 connection is driven by the task that uses it (no task of its own): the
//! request, the response head and the response body all move within the serving
//! connection's task, and a connection whose response was read to the end goes back to
//! the pool.
//!
//! Each connection carries one timer for the wait for response heads, re-armed lazily:
//! a tokio timer costs a wheel insert and removal (and the runtime's lock) each time it is
//! set and dropped, which was the largest single cost of a forwarded request after the
//! HTTP work itself. The connection's timer stays armed at an earlier deadline and, when it
//! fires before the request's own deadline, is moved there; a busy connection touches the
//! wheel about once per timeout period instead of twice per request.

use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::Service;

use super::self_wake::SelfWake;
use super::{Connectors, InternalProtocol, Origin};

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Idle connections kept per region; more are closed when they come back.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Flow-control windows of the HTTP/2 connection: what it may buffer of one response body
/// and of all of them at once. Bodies stream through; these bound the memory a slow
/// client's response can hold at this node.
const HTTP2_STREAM_WINDOW: u32 = 1024 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// The protocol a new connection is made for.
enum Wanted {
    /// With the pool place reserved for it, when the pool is bounded.
    Http1(Option<Http1Slot>),
    Http2,
}

/// Counts one thing (an open connection, a request in flight) in a counter for as long as
/// it lives. `C` is the counter: shared (`Arc`) when the thing outlives the borrow of its
/// upstream, as a pooled connection does, else borrowed.
struct Counted<C: Deref<Target = AtomicUsize>>(C);

impl<C: Deref<Target = AtomicUsize>> Counted<C> {
    /// Counts one more, and says how many were counted before.
    fn enter(count: C) -> (Self, usize) {
        let before = count.fetch_add(1, Ordering::Relaxed);
        (Self(count), before)
    }
}

impl<C: Deref<Target = AtomicUsize>> Drop for Counted<C> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One of the HTTP/1.1 connections an upstream counts: held by the connection (or by the
/// attempt to make one), given back when it is dropped.
type Http1Slot = Counted<Arc<AtomicUsize>>;

/// Where one request goes: a pooled HTTP/1.1 connection or the shared HTTP/2 one, and
/// whether it was made for this request (a request a new connection refused is not
/// tried again).
enum Lane {
    Pooled {
        conn: Box<Conn>,
        fresh: bool,
    },
    Shared {
        connection: Multiplexed,
        fresh: bool,
    },
}

/// Why no connection took a request.
enum Unreached {
    /// None could be made: the request never left.
    Refused,
    TimedOut,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made, or none would take the request: it provably never
    /// left this node, so it is safe to send again. The request is handed back.
    #[error("the request was never sent")]
    NotSent(Box<Request<Body>>),
    /// The connection failed after the request may have been (partly) sent.
    #[error("the connection failed after the request may have been sent")]
    Failed,
    /// No connection, or no response head, before the deadline; the request may have
    /// been (partly) sent.
    #[error("no response head before the deadline")]
    TimedOut,
}

/// One region's upstream (its internal endpoint) and its idle connections.
pub struct Upstream {
    origin: Origin,
    host: HeaderValue,
    connectors: Connectors,
    protocol: InternalProtocol,
    idle: Arc<Mutex<Vec<Idle>>>,
    /// HTTP/1.1 connections open, idle and busy.
    http1_open: Arc<AtomicUsize>,
    /// The shared HTTP/2 connection, once one is open.
    multiplexed: Mutex<Option<Multiplexed>>,
    /// Requests sent on HTTP/2 whose response head has not arrived yet.
    http2_in_flight: AtomicUsize,
    /// Held while an HTTP/2 connection is being opened.
    opening_http2: tokio::sync::Mutex<()>,
    /// Numbers the HTTP/2 connections opened, so that no two share a generation.
    opened: AtomicU64,
}

/// A handle on the shared HTTP/2 connection; `generation` tells a dead one from its
/// successor.
#[derive(Clone)]
struct Multiplexed {
    sender: http2::SendRequest<Body>,
    generation: u64,
}

/// A new connection, in the protocol the endpoint agreed to.
enum Connected {
    Http1(Box<Conn>),
    Http2(http2::SendRequest<Body>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A connection: the handle that sends requests and the state machine that drives it.
/// Always boxed: it is ~1.8 KB (the TLS variant of the stream), and it moves from the pool
/// to the request to the response body and back on every request.
struct Conn {
    sender: http1::SendRequest<Body>,
    driver: http1::Connection<Io, Body>,
    /// Armed at or before the current request's deadline (see the module docs).
    timer: Pin<Box<Sleep>>,
    /// The waker `sender` and `driver` (and the response body) are polled with, so that
    /// their hand-overs to each other do not re-schedule the serving task.
    wakes: SelfWake,
    /// Counts it among the upstream's open HTTP/1.1 connections while it lives.
    _counted: Http1Slot,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Upstream {
    /// The upstream at `origin`; `None` when its authority is no `Host` value.
    #[must_use]
    pub fn new(origin: Origin, connectors: Connectors, protocol: InternalProtocol) -> Option<Self> {
        Some(Self {
            host: HeaderValue::from_str(origin.authority().as_str()).ok()?,
            origin,
            connectors,
            protocol,
            idle: Arc::new(Mutex::new(Vec::new())),
            http1_open: Arc::new(AtomicUsize::new(0)),
            multiplexed: Mutex::new(None),
            http2_in_flight: AtomicUsize::new(0),
            opening_http2: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
        })
    }

    /// The request target on this upstream: its path prefix, then `path`.
    #[must_use]
    pub fn target(&self, path: Option<&PathAndQuery>) -> Option<Uri> {
        Some(Uri::from(self.origin.path(path)?))
    }

    /// The `Host` this upstream expects.
    #[must_use]
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `request` (origin-form target, `Host` set) on the connection the protocol
    /// picks ([`Self::lane`]); a connection that turns out closed before the request was
    /// sent is skipped. Gives up when the response head has not arrived by `deadline`. An
    /// HTTP/1.1 response body keeps driving its connection and returns it to the pool
    /// once read to the end.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`]: never sent (safe to send again), failed, or timed out.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        deadline: Instant,
    ) -> Result<Response<Body>, UpstreamError> {
        loop {
            let lane = match self.lane(deadline).await {
                Ok(lane) => lane,
                Err(Unreached::Refused) => return Err(UpstreamError::NotSent(Box::new(request))),
                Err(Unreached::TimedOut) => return Err(UpstreamError::TimedOut),
            };
            let failed = match lane {
                Lane::Shared { connection, fresh } => {
                    match self
                        .exchange_multiplexed(connection, request, deadline)
                        .await
                    {
                        Ok(response) => return Ok(response),
                        // That connection is gone (and forgotten): the next round finds
                        // or opens another.
                        Err(Exchange::NotSent(returned)) if !fresh => {
                            request = *returned;
                            continue;
                        }
                        Err(failed) => failed,
                    }
                }
                Lane::Pooled { conn, fresh } => match exchange(conn, request, deadline).await {
                    Ok((response, conn)) => {
                        let (parts, incoming) = response.into_parts();
                        let body = Driven {
                            incoming,
                            conn,
                            idle: Arc::clone(&self.idle),
                        };
                        return Ok(Response::from_parts(parts, Body::new(body)));
                    }
                    Err(Exchange::NotSent(returned)) if !fresh => {
                        request = *returned;
                        continue;
                    }
                    Err(failed) => failed,
                },
            };
            return Err(match failed {
                Exchange::NotSent(returned) => UpstreamError::NotSent(returned),
                Exchange::Failed => UpstreamError::Failed,
                Exchange::TimedOut => UpstreamError::TimedOut,
            });
        }
    }

    /// The connection for the next request: the shared HTTP/2 one when it is open and
    /// the protocol prefers it (always, or on a busy link), else an idle pooled one, else
    /// a new one: HTTP/1.1 while the protocol allows another, HTTP/2 (shared from then
    /// on) otherwise.
    async fn lane(&self, deadline: Instant) -> Result<Lane, Unreached> {
        let joins_http2 = match self.protocol {
            InternalProtocol::Http1 => false,
            InternalProtocol::Http2 => true,
            // A busy link: HTTP/2 batches, and the requests it carries move there.
            InternalProtocol::Http1WithHttp2Overflow { http1_connections } => {
                self.http2_in_flight.load(Ordering::Relaxed) >= http1_connections
            }
        };
        if joins_http2 && let Some(connection) = self.multiplexed() {
            return Ok(Lane::Shared {
                connection,
                fresh: false,
            });
        }
        if let Some(conn) = self.checkout().await {
            return Ok(Lane::Pooled { conn, fresh: false });
        }
        let wanted = match self.protocol {
            InternalProtocol::Http1 => Wanted::Http1(None),
            InternalProtocol::Http2 => Wanted::Http2,
            InternalProtocol::Http1WithHttp2Overflow { http1_connections } => {
                let (slot, open) = Http1Slot::enter(Arc::clone(&self.http1_open));
                if open < http1_connections {
                    Wanted::Http1(Some(slot))
                } else if let Some(connection) = self.multiplexed() {
                    return Ok(Lane::Shared {
                        connection,
                        fresh: false,
                    });
                } else {
                    Wanted::Http2
                }
            }
        };
        // Boxed: the handshake's future holds a whole TLS stream (~2 KB), and the future
        // of every forwarded request would otherwise carry it.
        let connecting = Box::pin(tokio::time::timeout_at(deadline.into(), async {
            // One HTTP/2 connection is opened at a time, so that a burst shares the first
            // rather than each of its requests opening one of its own.
            let _one_at_a_time = match wanted {
                Wanted::Http2 => {
                    let guard = self.opening_http2.lock().await;
                    if let Some(connection) = self.multiplexed() {
                        return Some(Lane::Shared {
                            connection,
                            fresh: false,
                        });
                    }
                    Some(guard)
                }
                Wanted::Http1(_) => None,
            };
            Some(match self.connect(wanted, deadline).await? {
                Connected::Http1(conn) => Lane::Pooled { conn, fresh: true },
                Connected::Http2(sender) => Lane::Shared {
                    connection: self.share(sender),
                    fresh: true,
                },
            })
        }))
        .await;
        match connecting {
            Ok(Some(lane)) => Ok(lane),
            Ok(None) => Err(Unreached::Refused),
            // A handshake that outlasts the whole wait is not tried again.
            Err(_) => Err(Unreached::TimedOut),
        }
    }

    /// The shared HTTP/2 connection, if one is open.
    fn multiplexed(&self) -> Option<Multiplexed> {
        let mut slot = self
            .multiplexed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref()?.sender.is_closed() {
            *slot = None;
        }
        slot.clone()
    }

    /// Makes a new HTTP/2 connection the shared one. Called holding `opening_http2`, after
    /// finding no open one, so it replaces none that is still open.
    fn share(&self, sender: http2::SendRequest<Body>) -> Multiplexed {
        let generation = self.opened.fetch_add(1, Ordering::Relaxed);
        let multiplexed = Multiplexed { sender, generation };
        *self
            .multiplexed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(multiplexed.clone());
        multiplexed
    }

    /// Forgets the shared connection if it is still the given (dead) one.
    fn forget(&self, dead: &Multiplexed) {
        let mut slot = self
            .multiplexed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_some_and(|m| m.generation == dead.generation)
        {
            *slot = None;
        }
    }

    /// Sends `request` on the HTTP/2 connection and waits for the response head until
    /// `deadline`. A request the connection never took comes back (`NotSent`).
    async fn exchange_multiplexed(
        &self,
        multiplexed: Multiplexed,
        request: Request<Body>,
        deadline: Instant,
    ) -> Result<Response<Body>, Exchange> {
        let mut sender = multiplexed.sender.clone();
        let request = self.for_http2(request);
        let (_in_flight, _) = Counted::enter(&self.http2_in_flight);
        let exchanged = tokio::time::timeout_at(deadline.into(), async {
            if sender.ready().await.is_err() {
                return Err(Exchange::NotSent(Box::new(request)));
            }
            match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                Err(mut err) => match err.take_message() {
                    Some(request) => Err(Exchange::NotSent(Box::new(request))),
                    None => {
                        tracing::debug!(error = %err.into_error(), "forwarded request failed");
                        Err(Exchange::Failed)
                    }
                },
            }
        })
        .await;
        match exchanged {
            Ok(Ok(response)) => {
                let (mut parts, incoming) = response.into_parts();
                // What the client is answered in; hyper's HTTP/1.1 server writes its own
                // status line either way.
                parts.version = http::Version::HTTP_11;
                Ok(Response::from_parts(parts, Body::new(incoming)))
            }
            Ok(Err(Exchange::NotSent(request))) => {
                self.forget(&multiplexed);
                Err(Exchange::NotSent(Box::new(self.for_http1(*request))))
            }
            Ok(Err(other)) => Err(other),
            // Dropping the response future resets the stream; the connection lives on.
            Err(_) => Err(Exchange::TimedOut),
        }
    }

    /// An HTTP/1.1 request (origin-form target, `Host`) in HTTP/2's form: the target's
    /// scheme and authority in the URI, no `Host`.
    fn for_http2(&self, request: Request<Body>) -> Request<Body> {
        let (mut parts, body) = request.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(self.origin.scheme().clone());
        uri.authority = Some(self.origin.authority().clone());
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        parts.version = http::Version::HTTP_2;
        parts.headers.remove(http::header::HOST);
        Request::from_parts(parts, body)
    }

    /// The reverse of [`Self::for_http2`], for a request that goes out again.
    fn for_http1(&self, request: Request<Body>) -> Request<Body> {
        let (mut parts, body) = request.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = None;
        uri.authority = None;
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        parts.version = http::Version::HTTP_11;
        parts.headers.insert(http::header::HOST, self.host.clone());
        Request::from_parts(parts, body)
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut conn = idle.conn;
            // One poll settles what happened while it sat idle: a close from the other
            // end, or the bookkeeping after its last response.
            let ready = std::future::poll_fn(|cx| {
                let Conn {
                    sender,
                    driver,
                    wakes,
                    ..
                } = &mut *conn;
                wakes.poll(cx, |cx| {
                    if driver.poll_without_shutdown(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    Poll::Ready(matches!(sender.poll_ready(cx), Poll::Ready(Ok(()))))
                })
            })
            .await;
            if ready {
                return Some(conn);
            }
        }
    }

    async fn connect(&self, wanted: Wanted, deadline: Instant) -> Option<Connected> {
        let origin = self.origin.join(None)?;
        let (mut connector, slot, prior_knowledge) = match wanted {
            Wanted::Http1(slot) => (self.connectors.http1.clone(), slot, false),
            Wanted::Http2 => (self.connectors.any_version.clone(), None, true),
        };
        let io = match connector.call(origin).await {
            Ok(io) => io,
            Err(err) => {
                tracing::debug!(error = %err, "cannot connect to the home region");
                return None;
            }
        };
        let http2 = match &io {
            MaybeHttpsStream::Http(_) => prior_knowledge,
            MaybeHttpsStream::Https(_) => io.connected().is_negotiated_h2(),
        };
        if http2 {
            // hyper runs each request on a task of its own whose future is as large as
            // the connection's (one enum for both), and the connection holds its stream
            // inline: boxed, the stream (~1.1 KB with its TLS variant) is no longer
            // copied into and out of every request's task (2.5 KB → 1.4 KB).
            let (sender, driver) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(HTTP2_STREAM_WINDOW)
                .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
                .max_header_list_size(self.connectors.max_header_list_size)
                .handshake(Box::new(io))
                .await
                .ok()?;
            tokio::spawn(async move {
                if let Err(err) = driver.await {
                    tracing::debug!(error = %err, "HTTP/2 connection to the home region ended");
                }
            });
            return Some(Connected::Http2(sender));
        }
        let (sender, driver) = http1::Builder::new().handshake(io).await.ok()?;
        Some(Connected::Http1(Box::new(Conn {
            sender,
            driver,
            timer: Box::pin(tokio::time::sleep_until(deadline.into())),
            wakes: SelfWake::new(),
            _counted: slot.unwrap_or_else(|| Http1Slot::enter(Arc::clone(&self.http1_open)).0),
        })))
    }
}

enum Exchange {
    NotSent(Box<Request<Body>>),
    Failed,
    TimedOut,
}

/// Sends `request` on `conn` and drives the connection until the response head arrives
/// or `deadline` passes; the connection comes back unless it ended with that response.
async fn exchange(
    mut conn: Box<Conn>,
    request: Request<Body>,
    deadline: Instant,
) -> Result<(Response<Incoming>, Option<Box<Conn>>), Exchange> {
    if conn.timer.deadline() > deadline.into() {
        // Armed later than this request allows (a shorter timeout than the last one's).
        conn.timer.as_mut().reset(deadline.into());
    }
    let Conn {
        sender,
        driver,
        timer,
        wakes,
        ..
    } = &mut *conn;
    // hyper checks readiness when the request is queued, so the future owns nothing of
    // `sender` and the connection can be driven next to it. It is queued in the first
    // round, where the wake it raises for `driver` is absorbed: `driver` is polled next.
    let mut request = Some(request);
    let mut response = std::pin::pin!(None);
    let mut driver_done = false;
    let result = std::future::poll_fn(|cx| {
        let polled = wakes.poll(cx, |cx| {
            if let Some(request) = request.take() {
                response.set(Some(sender.try_send_request(request)));
            }
            if !driver_done {
                // Ready means the connection ended; the response future then resolves
                // with its error (the dispatcher answers every queued request before it
                // ends).
                driver_done = driver.poll_without_shutdown(cx).is_ready();
            }
            match response.as_mut().as_pin_mut() {
                Some(response) => response.poll(cx),
                None => Poll::Pending,
            }
        });
        if let Poll::Ready(result) = polled {
            return Poll::Ready(Some(result));
        }
        // The timer fires at its armed deadline, which may be an earlier request's: only
        // this request's own deadline ends the wait, else the timer moves there. Read on
        // the timer's clock (tokio's), which a test may pause.
        while timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= tokio::time::Instant::from_std(deadline) {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline.into());
        }
        Poll::Pending
    })
    .await;
    let Some(result) = result else {
        // The request may be half-written: the connection is dropped, not reused.
        return Err(Exchange::TimedOut);
    };
    match result {
        // After a response the connection may end (`Connection: close`): the body is
        // still readable from what it read, the connection is not reused.
        Ok(response) => Ok((response, (!driver_done).then_some(conn))),
        Err(mut err) => match err.take_message() {
            Some(request) => Err(Exchange::NotSent(Box::new(request))),
            None => {
                tracing::debug!(error = %err.into_error(), "forwarded request failed");
                Err(Exchange::Failed)
            }
        },
    }
}

/// A response body that drives its connection while it is read and hands the connection
/// back to the pool once the body ended; dropped before its end, it closes the connection.
struct Driven {
    incoming: Incoming,
    conn: Option<Box<Conn>>,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl Driven {
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

impl http_body::Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.conn {
            Some(conn) => {
                let Conn { driver, wakes, .. } = &mut **conn;
                let mut ended = false;
                let incoming = &mut this.incoming;
                let frame = wakes.poll(cx, |cx| {
                    if !ended && driver.poll_without_shutdown(cx).is_ready() {
                        // The connection ended; what it read is still in the body's
                        // channel.
                        ended = true;
                    }
                    Pin::new(&mut *incoming).poll_frame(cx)
                });
                if ended {
                    this.conn = None;
                }
                frame
            }
            None => Pin::new(&mut this.incoming).poll_frame(cx),
        };
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.incoming.is_end_stream() {
            self.release();
        }
    }
}
