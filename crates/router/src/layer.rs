//! The router as a tower layer: [`RouterLayer`] wraps a regional node's app in a
//! [`RouterService`], which hands every request to the [`RouterCore`] shared by all.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::config::RouterConfig;
use crate::router_core::RouterCore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The router as a [`tower::Layer`]: `layer(config).layer(app)`.
pub fn layer(config: RouterConfig) -> RouterLayer {
    RouterLayer {
        core: Arc::new(RouterCore::new(config)),
    }
}

/// See [`layer`]. Cheap to clone.
#[derive(Clone)]
pub struct RouterLayer {
    core: Arc<RouterCore>,
}

impl fmt::Debug for RouterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterLayer")
            .field("local", &self.core.local)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = RouterService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouterService {
            inner,
            core: Arc::clone(&self.core),
            peer: None,
        }
    }
}

/// The future of one request through the router.
pub type Routed<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The local app behind the router, as every routing path needs it: it answers
/// `Request<Body>` with `Response<B>`, and its futures and errors may cross tasks. The
/// associated-type bounds ride along with the trait, so a path names `S: Inner<B>` once.
pub(crate) trait Inner<B>:
    Service<Request<Body>, Response = Response<B>, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S, B> Inner<B> for S
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
}

/// The local app's response body: bytes, with errors that box.
pub(crate) trait InnerBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> InnerBody for B
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
}

/// The local app wrapped by the router.
#[derive(Clone)]
pub struct RouterService<S> {
    inner: S,
    core: Arc<RouterCore>,
    /// The connection's peer, when the service was made for one connection
    /// ([`RouterService::for_peer`]); otherwise read from each request's `ConnectInfo`.
    peer: Option<SocketAddr>,
}

impl<S: Clone> RouterService<S> {
    /// This service for the requests of one connection from `peer`, as a server that
    /// makes a service per connection hands it over (`hop::serve_connections`). The
    /// router then knows the client address without the request's `ConnectInfo`
    /// extension, whose first insert costs three allocations on every request, and
    /// gives `ConnectInfo` only to the requests it serves locally, where handlers may
    /// read it; a forwarded request never needs it.
    #[must_use]
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            inner: self.inner.clone(),
            core: Arc::clone(&self.core),
            peer: Some(peer),
        }
    }
}

impl<S> fmt::Debug for RouterService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterService")
            .field("local", &self.core.local)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<Body>> for RouterService<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Routed<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Arc::clone(&self.core).handle(inner, request, self.peer)
    }
}
