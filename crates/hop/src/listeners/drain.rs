//! Graceful shutdown of every connection at once: one flag each connection reads when it
//! is polled, and one wake-up per waiting connection when the drain starts (no watch
//! channel polled on every wake-up). The same wrapper closes a connection its
//! [`Watchdog`] gives up on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::metrics::ConnectionMetrics;
use super::watchdog::{NotingReads, Verdict, Watchdog};
use super::{HyperAdapter, NodeService};

/// Shutdown for every connection at once: a flag each connection reads when it is polled,
/// and the wakers of those that are waiting, so that each is polled once more.
#[derive(Default)]
pub(super) struct Drain {
    stopping: AtomicBool,
    waiting: Mutex<slab::Slab<Waker>>,
    /// For connections that have not sent their first bytes yet.
    started: tokio::sync::Notify,
}

impl Drain {
    pub(super) fn start(&self) {
        self.stopping.store(true, Ordering::Release);
        self.started.notify_waiters();
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, waker) in waiting.iter() {
            waker.wake_by_ref();
        }
    }

    /// Resolves once the drain has started (at once if it has).
    pub(super) async fn stopped(&self) {
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
pub(super) trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S: NodeService> Graceful
    for hyper::server::conn::http1::Connection<TokioIo<NotingReads>, HyperAdapter<S>>
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

/// A connection that starts hyper's graceful shutdown once the [`Drain`] starts, and
/// closes when its [`Watchdog`] says so.
pub(super) struct Draining<C> {
    connection: Pin<Box<C>>,
    drain: Arc<Drain>,
    watchdog: Watchdog,
    metrics: ConnectionMetrics,
    /// This connection's key in `drain.waiting` and the waker stored there.
    registered: Option<(usize, Waker)>,
    /// hyper's graceful shutdown was started (by the drain or the watchdog).
    closing: bool,
}

impl<C: Graceful> Draining<C> {
    pub(super) fn new(
        connection: C,
        drain: Arc<Drain>,
        watchdog: Watchdog,
        metrics: ConnectionMetrics,
    ) -> Self {
        Self {
            connection: Box::pin(connection),
            drain,
            watchdog,
            metrics,
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
        let current = this
            .registered
            .as_ref()
            .is_some_and(|(_, waker)| waker.will_wake(cx.waker()));
        if !current {
            // Where the drain and the watchdog's ticks wake this connection.
            this.watchdog.wake_with(cx.waker());
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
        if !this.closing && this.drain.stopping.load(Ordering::Acquire) {
            this.closing = true;
            this.watchdog.finishing();
            this.connection.as_mut().graceful_shutdown();
        }
        match this.watchdog.check() {
            Verdict::Keep => {}
            Verdict::Finish(reason) => {
                this.metrics.count_closed(reason);
                if !this.closing {
                    this.closing = true;
                    this.connection.as_mut().graceful_shutdown();
                }
            }
            Verdict::Close(reason) => {
                if let Some(reason) = reason {
                    this.metrics.count_closed(reason);
                }
                return Poll::Ready(Ok(()));
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
