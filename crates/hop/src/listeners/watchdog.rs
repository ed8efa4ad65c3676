//! The timeouts of a served connection: a request head that takes too long to arrive
//! (slowloris) and a connection that sits with no request in flight. One timer per
//! connection enforces both, ticking every `header_read_timeout`; it wakes the connection's
//! task through a waker of its own, so a connection's poll costs one flag load for it and
//! nothing else. What the connection did between ticks is counted where it happens, once
//! per request or per read, never with a clock:
//!
//! - [`InFlight`]: a request from the moment its head is parsed until its response body is
//!   dropped (sent, or abandoned);
//! - [`NotingReads`]: an HTTP/1.1 connection's socket, noting that a read returned bytes.
//!
//! At a tick, a connection that started a request since the last one, or has one in
//! flight, is busy. Otherwise an HTTP/1.1 connection that received bytes since the last
//! tick is reading a head: if the next tick still finds no request, the head took longer
//! than the timeout and the connection is closed. A connection that received nothing for
//! the idle timeout is closed gracefully (HTTP/2 with a `GOAWAY`), and for good at the tick
//! after if it is still open.

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::ConnectionLimits;
use super::metrics::ClosedReason;
use super::sniff::Protocol;

/// What a connection did, counted where it happens and read at the watchdog's ticks.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// A read returned bytes since the last tick (HTTP/1.1 only).
    read: AtomicBool,
    /// Requests whose head was parsed.
    started: AtomicU64,
    /// Requests whose response body was dropped.
    finished: AtomicU64,
}

/// One request in flight on its connection, from its head until its response body is
/// dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }

    /// `response` with this request's end tied to its body.
    pub(super) fn track(
        (response, in_flight): (Result<Response, Infallible>, Self),
    ) -> Result<Response<TrackedBody>, Infallible> {
        response.map(|response| {
            response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            })
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

/// A response body that ends its request's time in flight when it is dropped.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An HTTP/1.1 connection's socket, noting in its [`Activity`] that a read returned
/// bytes (one store per read; writes pass straight through).
#[derive(Debug)]
pub(super) struct NotingReads {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl NotingReads {
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl AsyncRead for NotingReads {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.read.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for NotingReads {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The waker the watchdog's timer sees: it marks the tick and wakes the connection's task.
#[derive(Debug, Default)]
struct TickWake {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for TickWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// What a tick decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    /// Ask the connection to finish and close (HTTP/2: `GOAWAY`).
    Finish(ClosedReason),
    /// Close it now.
    Close(Option<ClosedReason>),
}

/// One connection's timer and what it has seen (see the module docs).
pub(super) struct Watchdog {
    timer: Pin<Box<Sleep>>,
    wake: Arc<TickWake>,
    /// A waker over `wake`, made once.
    waker: Waker,
    activity: Arc<Activity>,
    protocol: Protocol,
    tick: Duration,
    idle_timeout: Duration,
    /// `activity.started` at the last tick.
    started_before: u64,
    /// Time with nothing in flight and nothing received, in whole ticks.
    idle_for: Duration,
    /// An HTTP/1.1 head has been arriving since before the last tick.
    head_pending: bool,
    /// The connection was asked to finish: the next tick that finds it open closes it.
    finishing: bool,
}

impl Watchdog {
    /// Takes over `timer` (the connection's sniffing deadline, so that a connection arms
    /// one timer in all) for the connection's ticks.
    pub(super) fn new(
        mut timer: Pin<Box<Sleep>>,
        activity: Arc<Activity>,
        protocol: Protocol,
        limits: &ConnectionLimits,
    ) -> Self {
        let tick = limits
            .header_read_timeout
            .min(limits.idle_timeout)
            .max(Duration::from_millis(1));
        timer.as_mut().reset(Instant::now() + tick);
        let wake = Arc::new(TickWake::default());
        let mut watchdog = Self {
            timer,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
            activity,
            protocol,
            tick,
            idle_timeout: limits.idle_timeout,
            started_before: 0,
            idle_for: Duration::ZERO,
            head_pending: false,
            finishing: false,
        };
        watchdog.arm();
        watchdog
    }

    /// The connection's task now polls with `task`: the ticks wake it.
    pub(super) fn wake_with(&self, task: &Waker) {
        let mut stored = self
            .wake
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match stored.as_mut() {
            Some(stored) => stored.clone_from(task),
            None => *stored = Some(task.clone()),
        }
    }

    /// Whether the timer woke the connection since the last check. One load; a tick is
    /// taken (and its verdict returned) only when it did.
    pub(super) fn check(&mut self) -> Verdict {
        if !self.wake.fired.load(Ordering::Acquire) {
            return Verdict::Keep;
        }
        self.wake.fired.store(false, Ordering::Relaxed);
        let mut cx = Context::from_waker(&self.waker);
        if self.timer.as_mut().poll(&mut cx).is_pending() {
            // Woken by something else than the deadline (tokio's cooperative budget).
            return Verdict::Keep;
        }
        let verdict = self.tick();
        let next = self.timer.deadline() + self.tick;
        self.timer.as_mut().reset(next.max(Instant::now()));
        self.arm();
        verdict
    }

    /// The connection was asked to finish (a drain, or this watchdog's idle timeout).
    pub(super) fn finishing(&mut self) {
        self.finishing = true;
    }

    fn arm(&mut self) {
        let mut cx = Context::from_waker(&self.waker);
        // Registers the timer; a deadline already past wakes the task through `wake`.
        let _ = self.timer.as_mut().poll(&mut cx);
    }

    fn tick(&mut self) -> Verdict {
        let started = self.activity.started.load(Ordering::Relaxed);
        let finished = self.activity.finished.load(Ordering::Acquire);
        let read = self.activity.read.swap(false, Ordering::Relaxed);
        if started != self.started_before || started != finished {
            self.started_before = started;
            self.idle_for = Duration::ZERO;
            self.head_pending = false;
            return Verdict::Keep;
        }
        if self.finishing {
            return Verdict::Close(None);
        }
        if self.protocol == Protocol::Http1 {
            if self.head_pending {
                return Verdict::Close(Some(ClosedReason::HeaderRead));
            }
            if read {
                self.head_pending = true;
                self.idle_for = Duration::ZERO;
                return Verdict::Keep;
            }
        }
        self.idle_for += self.tick;
        if self.idle_for >= self.idle_timeout {
            self.finishing = true;
            return Verdict::Finish(ClosedReason::Idle);
        }
        Verdict::Keep
    }
}
