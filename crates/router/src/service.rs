//! The router as a tower layer: admits forwarding headers only with a valid signature,
//! decides local / forward / redirect / misdirected for each request, and forwards over a
//! pooled hyper client with bodies streamed both ways.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hop::{Connectors, InternalProtocol, Origin, Upstream, UpstreamError};
use http::request::Parts;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use model::{RegionId, TenantId, Transit};
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use tower::{Layer, Service, ServiceExt};

use crate::body::{self, Prepared};
use crate::cache::CachedDirectory;
use crate::directory::DirectoryEntry;
use crate::metrics::{Decision, RouterMetrics, status_class};
use crate::problem;
use crate::routing::{Route, classify};
use crate::signing::{ForwardError, ForwardSigner, Forwarded, Vouching};
use crate::{headers, names};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bodies up to this size are read before forwarding, so that a `421` can be retried.
const RETRY_BUFFER: usize = 64 * 1024;
/// The most of a `POST /v1/tenants` body read to find `home_region`.
const CREATE_BUFFER: usize = 1024 * 1024;
/// The most of a misdirected request's body read (and discarded) before the `421`.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// The longest wait for it.
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);

/// Where another region's node listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionEndpoints {
    /// What routers forward to (http or https; an origin such as
    /// `https://eu-west-1.internal.example.com:8443`).
    pub internal: Uri,
    /// What clients and `307` redirects use.
    pub public: Uri,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("region {region}: {which} endpoint is not an absolute http(s) URL")]
    Endpoint {
        region: RegionId,
        which: &'static str,
    },
}

impl RegionEndpoints {
    /// The endpoints of a catalogue region.
    pub fn from_catalog(
        region: &RegionId,
        endpoints: &catalog::Endpoints,
    ) -> Result<Self, ConfigError> {
        let parse = |text: &str, which| {
            Uri::try_from(text).map_err(|_| ConfigError::Endpoint {
                region: region.clone(),
                which,
            })
        };
        Ok(Self {
            internal: parse(endpoints.internal.as_str(), "internal")?,
            public: parse(endpoints.public.as_str(), "public")?,
        })
    }
}

/// The endpoints of every region of the catalogue.
pub fn regions_from_catalog(
    catalog: &catalog::Catalog,
) -> Result<HashMap<RegionId, RegionEndpoints>, ConfigError> {
    catalog
        .regions()
        .map(|spec| {
            Ok((
                spec.id.clone(),
                RegionEndpoints::from_catalog(&spec.id, &spec.endpoints)?,
            ))
        })
        .collect()
}

/// Everything the router needs. Build with [`RouterConfig::new`] and adjust the public
/// fields.
#[derive(Debug)]
pub struct RouterConfig {
    /// This node's region.
    pub local: RegionId,
    /// Every region of the catalogue (this one may be included).
    pub regions: HashMap<RegionId, RegionEndpoints>,
    pub directory: CachedDirectory,
    pub signer: ForwardSigner,
    /// Longest wait for a forwarded request's response headers (default 30 s).
    pub upstream_timeout: Duration,
    /// Longest wait for a connection to another region (default 2 s).
    pub connect_timeout: Duration,
    /// The protocol asked of other regions' internal endpoints (default HTTP/1.1 on up to
    /// [`crate::DEFAULT_HTTP1_CONNECTIONS`] per region, HTTP/2 past them).
    pub internal_protocol: InternalProtocol,
    pub metrics: Option<RouterMetrics>,
}

impl RouterConfig {
    pub fn new(
        local: RegionId,
        regions: HashMap<RegionId, RegionEndpoints>,
        directory: CachedDirectory,
        signer: ForwardSigner,
    ) -> Self {
        Self {
            local,
            regions,
            directory,
            signer,
            upstream_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            internal_protocol: InternalProtocol::default(),
            metrics: None,
        }
    }
}

/// The router as a [`tower::Layer`]: `layer(config).layer(app)`.
pub fn layer(config: RouterConfig) -> RouterLayer {
    RouterLayer {
        shared: Arc::new(Shared::new(config)),
    }
}

/// See [`layer`]. Cheap to clone.
#[derive(Clone)]
pub struct RouterLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for RouterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterLayer")
            .field("local", &self.shared.local)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = RouterService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouterService {
            inner,
            shared: Arc::clone(&self.shared),
            peer: None,
        }
    }
}

/// The future of one request through the router.
pub type Routed<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The local app behind the router, as every routing path needs it: it answers
/// `Request<Body>` with `Response<B>`, and its futures and errors may cross tasks. The
/// associated-type bounds ride along with the trait, so a path names `S: Inner<B>` once.
trait Inner<B>:
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
trait InnerBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

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
    shared: Arc<Shared>,
    /// The connection's peer, when the service was made for one connection
    /// ([`RouterService::for_peer`]); otherwise read from each request's `ConnectInfo`.
    peer: Option<SocketAddr>,
}

impl<S: Clone> RouterService<S> {
    /// This service for the requests of one connection from `peer`, as a server that
    /// makes a service per connection hands it over (`api::serve_connections`). The
    /// router then knows the client address without the request's `ConnectInfo`
    /// extension, whose first insert costs three allocations on every request, and
    /// gives `ConnectInfo` only to the requests it serves locally, where handlers may
    /// read it; a forwarded request never needs it.
    #[must_use]
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            peer: Some(peer),
        }
    }
}

impl<S> fmt::Debug for RouterService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterService")
            .field("local", &self.shared.local)
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
        Arc::clone(&self.shared).handle(inner, request, self.peer)
    }
}

/// Another region as the router reaches it.
#[derive(Debug)]
struct Target {
    region: RegionId,
    region_header: HeaderValue,
    /// This region's series of the forwarding-latency histogram, when metrics are on.
    forward_duration: Option<Histogram>,
    /// `None` when the internal endpoint is not an absolute http URL (logged when used).
    internal: Option<Upstream>,
    public: Option<Origin>,
}

struct Shared {
    local: RegionId,
    local_header: HeaderValue,
    /// This node's `Via` member (`1.1 <region>`), added to every request it forwards.
    via: HeaderValue,
    targets: HashMap<RegionId, Target>,
    directory: CachedDirectory,
    signer: ForwardSigner,
    upstream_timeout: Duration,
    metrics: Option<RouterMetrics>,
    /// Tenants whose entry was re-read after an upstream failure, kept for
    /// [`FAILURE_REFRESH_INTERVAL`]: at most one directory read per tenant in that time,
    /// however many of its requests fail while a home region is down.
    refreshed_after_failure: moka::future::Cache<TenantId, ()>,
}

/// How often a tenant's directory entry may be re-read because its home failed a request.
const FAILURE_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Why a forwarding attempt got no response, with the body when it was never sent.
struct SendFailure {
    kind: SendError,
    unsent: Option<Body>,
}

impl From<SendError> for SendFailure {
    fn from(kind: SendError) -> Self {
        Self { kind, unsent: None }
    }
}

/// Why a forwarding attempt got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendError {
    /// No connection could be made: the request provably never left this node.
    Connect,
    /// No response headers within the upstream timeout.
    Timeout,
    /// The connection failed after the request may have been (partly) sent.
    Other,
    /// The home region's internal endpoint is unusable (configuration).
    BadEndpoint,
}

impl SendError {
    fn kind(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Other => "other",
            Self::BadEndpoint => "bad_endpoint",
        }
    }
}

/// The facts of one request the router carries through its decision.
struct Admitted {
    parts: Parts,
    /// Set when the request arrived with a valid forwarding signature: the entry region.
    forwarded: Option<HeaderValue>,
    /// The connection's peer, when the server handed it to the service rather than to
    /// the request (see [`RouterService::for_peer`]).
    peer: Option<SocketAddr>,
}

impl Admitted {
    /// The peer's address: the connection's, else the request's `ConnectInfo`.
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer
            .or_else(|| {
                self.parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0)
            })
            .map(|peer| peer.ip())
    }

    /// The request for the local app, with `ConnectInfo` for its handlers when the peer
    /// came with the connection.
    fn into_local(self, body: Body) -> Request<Body> {
        let mut parts = self.parts;
        if let Some(peer) = self.peer {
            parts.extensions.insert(ConnectInfo(peer));
        }
        Request::from_parts(parts, body)
    }
}

impl Shared {
    fn new(config: RouterConfig) -> Self {
        let connectors = Connectors::new(
            config.connect_timeout,
            wire::limits::SERVER_MAX_HEADER_LIST_SIZE,
        );
        let targets = config
            .regions
            .iter()
            .map(|(region, endpoints)| {
                let internal = Origin::parse(&endpoints.internal)
                    .and_then(|origin| {
                        Upstream::new(origin, connectors.clone(), config.internal_protocol)
                    });
                if internal.is_none() {
                    tracing::error!(region = %region, "internal endpoint is not an absolute http(s) URL: requests for its tenants will get 503");
                }
                let target = Target {
                    region: region.clone(),
                    region_header: region_value(region),
                    forward_duration: config
                        .metrics
                        .as_ref()
                        .map(|m| m.forward_duration(region.as_str())),
                    internal,
                    public: Origin::parse(&endpoints.public),
                };
                (region.clone(), target)
            })
            .collect();
        Self {
            local_header: region_value(&config.local),
            via: via_member(&config.local),
            local: config.local,
            targets,
            directory: config.directory,
            signer: config.signer,
            upstream_timeout: config.upstream_timeout,
            metrics: config.metrics,
            refreshed_after_failure: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FAILURE_REFRESH_INTERVAL)
                .build(),
        }
    }

    fn count(&self, decision: Decision, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.request(decision, outcome);
        }
    }

    /// Admits and classifies the request here, before any await, and returns the one
    /// future its route needs: a future is as large as its largest branch, and the one
    /// allocated for every request should not carry the others.
    fn handle<S, B>(
        self: Arc<Self>,
        inner: S,
        request: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Routed<S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let (mut parts, body) = request.into_parts();
        let forwarded = self.admit(&mut parts);
        if forwarded.is_none() {
            // Measured as the client sent it, before the router adds a request id.
            let over_limit = head_over_client_limit(&parts);
            ensure_request_id(&mut parts);
            if let Some(limit) = over_limit {
                return Box::pin(std::future::ready(Ok(self.head_too_large(&parts, limit))));
            }
        }
        let req = Admitted {
            parts,
            forwarded,
            peer,
        };
        match classify(&req.parts.method, req.parts.uri.path()) {
            Route::Local => Box::pin(async move {
                let response = call_local(inner, req, body).await?;
                self.count(Decision::Local, status_class(response.status()));
                Ok(response)
            }),
            Route::CreateTenant => Box::pin(self.create_tenant(inner, req, body)),
            Route::Tenant(tenant) => match self.directory.cached(&tenant) {
                // A fresh entry in hand: the tenant's route is decided here too.
                Some(entry) => self.tenant_at(inner, req, body, tenant, &entry),
                None => Box::pin(self.tenant(inner, req, body, tenant)),
            },
        }
    }

    /// Removes every client copy of the trusted entry-region header, and the forwarding
    /// headers unless their signature verifies. A verified request gets the entry-region
    /// header and a [`Forwarded`] extension.
    fn admit(&self, parts: &mut Parts) -> Option<HeaderValue> {
        parts.headers.remove(names::ENTRY_REGION);
        let has_forwarding = parts
            .headers
            .keys()
            .any(|name| name.as_str().starts_with(headers::FORWARDED_PREFIX));
        if !has_forwarding {
            return None;
        }
        let verified = self
            .signer
            .verify_in_place(parts, &self.local, SystemTime::now())
            .and_then(|verified| {
                // A catalogue region's id and header value are shared, not built per
                // request; the catalogue's few regions are compared, not hashed.
                let (entry_region, entry) = match self
                    .targets
                    .values()
                    .find(|target| target.region.as_str() == verified.entry_region)
                {
                    Some(target) => (target.region.clone(), target.region_header.clone()),
                    None => {
                        let region = RegionId::parse(verified.entry_region)
                            .map_err(|_| ForwardError::Malformed("entry region"))?;
                        let header = region_value(&region);
                        (region, header)
                    }
                };
                let forwarded = Forwarded {
                    entry_region,
                    client_address: verified.client_address.to_owned(),
                    request_id: verified.request_id.to_owned(),
                };
                Ok((forwarded, entry))
            });
        match verified {
            Ok((forwarded, entry)) => {
                parts.headers.insert(names::ENTRY_REGION, entry.clone());
                parts.extensions.insert(forwarded);
                Some(entry)
            }
            Err(err) => {
                tracing::debug!(reason = %err, "stripping untrusted forwarding headers");
                if let Some(m) = &self.metrics {
                    m.refused_signature(err.kind());
                }
                strip_forwarding(&mut parts.headers);
                None
            }
        }
    }

    async fn create_tenant<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        if req.forwarded.is_some() {
            // Already forwarded once: this node is the requested home (or will say why not).
            let response = call_local(inner, req, body).await?;
            self.count(Decision::Local, status_class(response.status()));
            return Ok(response);
        }
        let mut prepared = match body::prepare(body, CREATE_BUFFER).await {
            Ok(prepared) => prepared,
            Err(_) => return Ok(self.unreadable_body(&req.parts)),
        };
        let home = match &prepared {
            Prepared::Buffered(bytes) => requested_home(bytes),
            _ => None,
        };
        match home {
            Some(home) if home != self.local && self.targets.contains_key(&home) => {
                Ok(Box::pin(self.forward(inner, req, prepared, None, home)).await?)
            }
            _ => {
                let body = prepared.take().unwrap_or_default();
                let response = call_local(inner, req, body).await?;
                self.count(Decision::Local, status_class(response.status()));
                Ok(response)
            }
        }
    }

    async fn tenant<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        tenant: TenantId,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let entry = match self.directory.lookup_shared(&tenant).await {
            Ok(entry) => entry,
            Err(_) if req.forwarded.is_some() => {
                // Another region's directory sent it here; the local node serves only
                // tenants it holds (404 otherwise), so nothing is served from elsewhere.
                return self.local_tenant(inner, req, body).await;
            }
            Err(err) => {
                tracing::warn!(tenant = %tenant, error = %err, "cannot route: tenant directory unavailable");
                self.count(Decision::Unrouted, "directory_unavailable");
                let mut response = problem::unavailable(
                    "directory-unavailable",
                    "the tenant directory cannot be reached; try again shortly",
                    req.parts.headers.get(names::REQUEST_ID),
                );
                self.routing_headers(&mut response, &self.local_header, false, None);
                return Ok(response);
            }
        };
        let Some(entry) = entry else {
            // Unknown here: the local node answers (404) with its own checks.
            return self.local_tenant(inner, req, body).await;
        };
        self.tenant_at(inner, req, body, tenant, &entry).await
    }

    /// The future of a request for a tenant whose directory entry is known.
    fn tenant_at<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        tenant: TenantId,
        entry: &Arc<DirectoryEntry>,
    ) -> Routed<S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        if entry.home == self.local {
            return Box::pin(self.local_tenant(inner, req, body));
        }
        if req.forwarded.is_some() {
            let entry = Arc::clone(entry);
            return Box::pin(async move { self.misdirected(inner, req, body, &entry).await });
        }
        match entry.transit {
            Transit::Redirect => {
                let response = self.redirect(&req, &entry.home);
                Box::pin(std::future::ready(Ok(response)))
            }
            Transit::Proxy => {
                let home = entry.home.clone();
                Box::pin(async move {
                    let prepared = match body::prepare(body, RETRY_BUFFER).await {
                        Ok(prepared) => prepared,
                        Err(_) => return Ok(self.unreadable_body(&req.parts)),
                    };
                    self.forward(inner, req, prepared, Some(tenant), home).await
                })
            }
        }
    }

    /// A forwarded request for a tenant this node's cache places elsewhere. The home
    /// region is the authority for its tenants, so the cache is re-read first: if the
    /// tenant has just moved here, it is served; otherwise `421` names the home.
    async fn misdirected<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        cached: &DirectoryEntry,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let home = match self.directory.refresh(&cached.tenant).await {
            Ok(Some(fresh)) => fresh.home,
            Ok(None) => return self.local_tenant(inner, req, body).await,
            Err(_) => cached.home.clone(),
        };
        if home == self.local {
            return self.local_tenant(inner, req, body).await;
        }
        // The forwarding node is still sending the body; let it finish before answering.
        body::drain(body, DRAIN_LIMIT, DRAIN_PATIENCE).await;
        self.count(Decision::Misdirected, "4xx");
        let mut response = problem::response(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            "the tenant is homed in another region",
            req.parts.headers.get(names::REQUEST_ID),
        );
        let home = region_value(&home);
        self.routing_headers(&mut response, &home, true, req.forwarded.as_ref());
        Ok(response)
    }

    async fn local_tenant<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let forwarded = req.forwarded.clone();
        let mut response = call_local(inner, req, body).await?;
        self.count(Decision::Local, status_class(response.status()));
        self.routing_headers(&mut response, &self.local_header, false, forwarded.as_ref());
        Ok(response)
    }

    fn redirect(&self, req: &Admitted, home: &RegionId) -> Response<Body> {
        let Some(target) = self.targets.get(home) else {
            return self.unknown_home(req, home);
        };
        let location = target
            .public
            .as_ref()
            .and_then(|origin| origin.join(req.parts.uri.path_and_query()))
            .and_then(|uri| HeaderValue::try_from(uri.to_string()).ok());
        let Some(location) = location else {
            tracing::error!(region = %home, "cannot redirect: the region's public endpoint is not an absolute URL");
            return self.unknown_home(req, home);
        };
        self.count(Decision::Redirect, "3xx");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        response.headers_mut().insert(header::LOCATION, location);
        if let Some(id) = req.parts.headers.get(names::REQUEST_ID) {
            response.headers_mut().insert(names::REQUEST_ID, id.clone());
        }
        self.routing_headers(&mut response, &target.region_header, true, None);
        response
    }

    fn unknown_home(&self, req: &Admitted, home: &RegionId) -> Response<Body> {
        tracing::error!(region = %home, "cannot route: the tenant's home region is not in this node's catalogue");
        self.count(Decision::Unrouted, "unknown_region");
        self.home_unreachable(req, &region_value(home))
    }

    /// `431` for a client's request over a `CLIENT_` limit, wherever it would be served: the
    /// node's server reads more, to leave room for the forwarding headers.
    fn head_too_large(&self, parts: &Parts, limit: HeadLimit) -> Response<Body> {
        self.count(Decision::Unrouted, "head_too_large");
        let detail = match limit {
            HeadLimit::Fields => format!(
                "the request carries more than {} header fields",
                wire::limits::CLIENT_MAX_HEADERS
            ),
            HeadLimit::Bytes => format!(
                "the request line and header fields are larger than {} bytes",
                wire::limits::CLIENT_MAX_HEAD_BYTES
            ),
        };
        problem::response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request-header-fields-too-large",
            &detail,
            parts.headers.get(names::REQUEST_ID),
        )
    }

    fn unreadable_body(&self, parts: &Parts) -> Response<Body> {
        self.count(Decision::Unrouted, "bad_body");
        problem::response(
            StatusCode::BAD_REQUEST,
            "unreadable-body",
            "the request body could not be read",
            parts.headers.get(names::REQUEST_ID),
        )
    }

    /// Proxies the request to `home` (a region other than this one). `tenant` is set for
    /// tenant-scoped requests, whose `421` answers are corrected once.
    async fn forward<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        mut prepared: Prepared,
        tenant: Option<TenantId>,
        mut home: RegionId,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        if has_passed(&req.parts.headers, &self.local) {
            return Ok(self.routing_loop(&req, tenant, &home).await);
        }
        let client = req
            .peer_ip()
            .map_or_else(AddressText::unknown, AddressText::ip);
        let forwarded = Vouching {
            entry_region: &self.local,
            client_address: client.as_str(),
            request_id: request_id(&req.parts),
        };
        let mut corrected = false;
        let mut resent = false;
        loop {
            let Some(target) = self.targets.get(&home) else {
                return Ok(self.unknown_home(&req, &home));
            };
            let Some(body) = prepared.take() else {
                // Only a replayable body is ever sent twice; this cannot happen.
                return Ok(self.upstream_failed(&req, target, SendError::Other));
            };
            match self.send(&req.parts, body, target, forwarded).await {
                Ok(response)
                    if response.status() == StatusCode::MISDIRECTED_REQUEST && !corrected =>
                {
                    let Some(tenant) = tenant else {
                        return Ok(self.proxied(response, target));
                    };
                    corrected = true;
                    let fresh = match Box::pin(self.directory.refresh(&tenant)).await {
                        Ok(Some(fresh)) if fresh.home != home => fresh,
                        _ => return Ok(self.proxied(response, target)),
                    };
                    tracing::info!(tenant = %tenant, stale = %home, home = %fresh.home, "directory entry corrected after 421");
                    if !prepared.is_replayable() {
                        // The body was streamed and is gone: the client retries, and its
                        // next request goes to the corrected home.
                        return Ok(self.proxied(response, target));
                    }
                    if let Some(m) = &self.metrics {
                        m.retry("misdirected");
                    }
                    if fresh.home == self.local {
                        let body = prepared.take().unwrap_or_default();
                        let mut response = Box::pin(call_local(inner, req, body)).await?;
                        self.count(Decision::Local, status_class(response.status()));
                        self.routing_headers(&mut response, &self.local_header, false, None);
                        return Ok(response);
                    }
                    if fresh.transit == Transit::Redirect {
                        return Ok(self.redirect(&req, &fresh.home));
                    }
                    home = fresh.home;
                }
                Ok(response) => return Ok(self.proxied(response, target)),
                Err(SendFailure { kind: err, unsent }) => {
                    if let Some(body) = unsent {
                        // Never sent: the body (even a streamed one) can go again.
                        prepared.restore(body);
                    }
                    let retry = !resent
                        && prepared.is_sendable()
                        && match err {
                            SendError::Connect => true,
                            SendError::Other => is_idempotent(&req.parts.method),
                            SendError::Timeout | SendError::BadEndpoint => false,
                        };
                    if !retry {
                        let response = self.upstream_failed(&req, target, err);
                        if let Some(tenant) = tenant {
                            Box::pin(Arc::clone(&self).refresh_after_failure(tenant, home)).await;
                        }
                        return Ok(response);
                    }
                    resent = true;
                    if let Some(m) = &self.metrics {
                        m.retry(err.kind());
                    }
                }
            }
        }
    }

    /// One attempt: the request, signed, to the target's internal endpoint.
    async fn send(
        &self,
        parts: &Parts,
        body: Body,
        target: &Target,
        forwarded: Vouching<'_>,
    ) -> Result<Response<Body>, SendFailure> {
        let Some(upstream) = &target.internal else {
            return Err(SendError::BadEndpoint.into());
        };
        let Some(uri) = upstream.target(parts.uri.path_and_query()) else {
            return Err(SendError::BadEndpoint.into());
        };
        let (mut out, ()) = Request::new(()).into_parts();
        out.method = parts.method.clone();
        out.uri = uri;
        out.version = http::Version::HTTP_11;
        out.headers = forward_headers(&parts.headers);
        out.headers.insert(header::HOST, upstream.host().clone());
        // Appended after the client's (and earlier regions') members, as RFC 9110 §7.6.3
        // asks of a proxy; `has_passed` reads them to stop a loop.
        out.headers.append(header::VIA, self.via.clone());
        self.signer.sign(&mut out, forwarded, &target.region);
        let request = Request::from_parts(out, body);

        let started = Instant::now();
        let result = upstream
            .send(request, started + self.upstream_timeout)
            .await;
        let outcome = match result {
            Err(UpstreamError::TimedOut) => Err(SendError::Timeout.into()),
            Err(UpstreamError::NotSent(request)) => Err(SendFailure {
                kind: SendError::Connect,
                unsent: Some(request.into_body()),
            }),
            Err(UpstreamError::Failed) => Err(SendError::Other.into()),
            Ok(response) => Ok(response),
        };
        if let Some(m) = &self.metrics {
            match &outcome {
                Ok(_) => {
                    if let Some(histogram) = &target.forward_duration {
                        histogram.observe(started.elapsed().as_secs_f64());
                    }
                }
                Err(failure) => m.upstream_error(target.region.as_str(), failure.kind.kind()),
            }
        }
        outcome
    }

    /// Re-reads the tenant's directory entry in the background after its home region
    /// failed one of its requests (at most once per [`FAILURE_REFRESH_INTERVAL`]). A home
    /// that no longer holds the tenant answers `421`, but when it closes the connection
    /// before the answer is read (a large streamed body), the failure is all this node
    /// sees; without the refresh its stale entry would send every request to the old
    /// home until the entry's TTL ran out. The client still gets the 503 it got.
    async fn refresh_after_failure(self: Arc<Self>, tenant: TenantId, failed: RegionId) {
        let first = self
            .refreshed_after_failure
            .entry(tenant)
            .or_insert(())
            .await
            .is_fresh();
        if !first {
            return;
        }
        tokio::spawn(async move {
            if let Ok(Some(fresh)) = self.directory.refresh(&tenant).await
                && fresh.home != failed
            {
                tracing::info!(tenant = %tenant, stale = %failed, home = %fresh.home, "directory entry corrected after an upstream failure");
            }
        });
    }

    /// A request that already passed through this region on its way here: two regions
    /// each send the tenant to the other. That happens only while their directory caches
    /// disagree and neither trusts the other's forwarding signature (a forwarding secret
    /// or header version that differs between regions mid-deployment); a trusted
    /// forwarded request is answered `421` instead. Forwarding again would pass it back
    /// and forth until the upstream timeout, a new connection at every hop, so the chain
    /// ends here with a 503 and this node re-reads the tenant's entry.
    async fn routing_loop(
        self: &Arc<Self>,
        req: &Admitted,
        tenant: Option<TenantId>,
        home: &RegionId,
    ) -> Response<Body> {
        tracing::warn!(tenant = ?tenant, "routing loop: the request already passed through this region");
        self.count(Decision::Unrouted, "loop");
        if let Some(tenant) = tenant {
            Box::pin(Arc::clone(self).refresh_after_failure(tenant, home.clone())).await;
        }
        self.unavailable(
            req,
            "routing-loop",
            "the regions do not agree yet where the tenant is homed; try again shortly",
            &self.local_header,
        )
    }

    /// The home region's response, streamed back with the routing headers.
    fn proxied(&self, response: Response<Body>, target: &Target) -> Response<Body> {
        self.count(Decision::Forward, status_class(response.status()));
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let mut response = Response::from_parts(parts, body);
        self.routing_headers(&mut response, &target.region_header, false, None);
        response
            .headers_mut()
            .insert(names::RESIDENCY_VIA, self.local_header.clone());
        response
    }

    fn upstream_failed(&self, req: &Admitted, target: &Target, err: SendError) -> Response<Body> {
        if err == SendError::BadEndpoint {
            tracing::error!(region = %target.region, "cannot forward: the region's internal endpoint is not an absolute http URL");
        } else {
            tracing::warn!(region = %target.region, kind = err.kind(), "home region unreachable");
        }
        self.count(Decision::Forward, err_outcome(err));
        self.home_unreachable(req, &target.region_header)
    }

    /// `503` for a request that cannot reach `home`, the tenant's region.
    fn home_unreachable(&self, req: &Admitted, home: &HeaderValue) -> Response<Body> {
        self.unavailable(
            req,
            "home-region-unreachable",
            "the tenant's home region cannot be reached; try again shortly",
            home,
        )
    }

    /// `503` with `Retry-After`, naming `home` as the region that serves the tenant.
    fn unavailable(
        &self,
        req: &Admitted,
        slug: &str,
        detail: &str,
        home: &HeaderValue,
    ) -> Response<Body> {
        let mut response =
            problem::unavailable(slug, detail, req.parts.headers.get(names::REQUEST_ID));
        self.routing_headers(&mut response, home, true, None);
        response
    }

    /// `X-Residency-Region` (the home) and `X-Residency-Via` (the entry region: this one,
    /// or the signed entry region of a forwarded request). `force` overwrites what the
    /// app set; otherwise only missing headers are added, except that a forwarded
    /// request's `Via` is always the entry region.
    fn routing_headers(
        &self,
        response: &mut Response<Body>,
        home: &HeaderValue,
        force: bool,
        forwarded: Option<&HeaderValue>,
    ) {
        let h = response.headers_mut();
        let (region, via) = (names::RESIDENCY_REGION, names::RESIDENCY_VIA);
        if force {
            h.insert(region, home.clone());
        } else {
            h.entry(region).or_insert_with(|| home.clone());
        }
        match forwarded {
            Some(entry) => {
                h.insert(via, entry.clone());
                // The answer goes back to the entry node, over HTTP/2 when the link is
                // busy: its request id, different every time, as a literal never
                // indexed (see `signing::never_indexed`).
                if let Some(id) = h.get_mut(names::REQUEST_ID) {
                    id.set_sensitive(true);
                }
            }
            None if force => {
                h.insert(via, self.local_header.clone());
            }
            None => {
                h.entry(via).or_insert_with(|| self.local_header.clone());
            }
        }
    }
}

async fn call_local<S, B>(inner: S, req: Admitted, body: Body) -> Result<Response<Body>, S::Error>
where
    S: Inner<B>,
    B: InnerBody,
{
    let response = inner.oneshot(req.into_local(body)).await?;
    Ok(response.map(Body::new))
}

fn err_outcome(err: SendError) -> &'static str {
    match err {
        SendError::Connect | SendError::Other => "unreachable",
        SendError::Timeout => "timeout",
        SendError::BadEndpoint => "bad_endpoint",
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// `1.1 <region>`: a region's member of the `Via` header. Region ids are public names, so
/// nothing about the deployment's hosts leaks.
fn via_member(region: &RegionId) -> HeaderValue {
    HeaderValue::from_str(&format!("1.1 {region}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 invalid"))
}

/// Whether `Via` names `region` as a recipient: the request was forwarded by that region's
/// node before. Members are `protocol pseudonym [comment]`, comma-separated, in any number
/// of header lines.
fn has_passed(headers: &HeaderMap, region: &RegionId) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|member| member.split_whitespace().nth(1) == Some(region.as_str()))
}

fn region_value(region: &RegionId) -> HeaderValue {
    // Region ids are lowercase ASCII words, digits and hyphens.
    HeaderValue::from_str(region.as_str()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Which client limit of [`wire::limits`] a request head is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadLimit {
    Fields,
    Bytes,
}

/// Whether a client's request head is over a `CLIENT_` limit. Its size is counted as
/// HTTP/1.1 writes it (`name: value` lines), which is at most what the client sent.
fn head_over_client_limit(parts: &Parts) -> Option<HeadLimit> {
    if parts.headers.len() > wire::limits::CLIENT_MAX_HEADERS {
        return Some(HeadLimit::Fields);
    }
    // "METHOD target HTTP/1.1\r\n" (the space after the method is the `+ 1`) and the
    // blank line that ends the head.
    let line = parts.method.as_str().len()
        + 1
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n\r\n".len();
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    (line + fields > wire::limits::CLIENT_MAX_HEAD_BYTES).then_some(HeadLimit::Bytes)
}

/// Makes a client's request carry a request id this node keeps (see
/// [`telemetry::keeps_client_request_id`]): its own, or a generated one in its place. Done
/// once, on arrival, so that every answer the router gives itself (a redirect, a `503`)
/// names the same id a served or forwarded request would.
fn ensure_request_id(parts: &mut Parts) {
    let kept = parts
        .headers
        .get(names::REQUEST_ID)
        .is_some_and(|v| telemetry::keeps_client_request_id(v.as_bytes()));
    if !kept {
        let mut text = [0u8; telemetry::REQUEST_ID_LEN];
        telemetry::new_request_id(&mut text);
        // The header's bytes are shared with its forwarded copy from the start: a copied
        // (vector-backed) value allocates again when first cloned.
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from_owner(text)) {
            parts.headers.insert(names::REQUEST_ID, value);
        }
    }
}

/// The request id [`ensure_request_id`] left in place, as text (already header-safe: a
/// kept id is visible text by the same rule).
fn request_id(parts: &Parts) -> &str {
    parts
        .headers
        .get(names::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The client's address as the forwarding header names it (an IP address, or `unknown`
/// when the server gave none), written on the stack: it is signed and sent, never kept.
struct AddressText {
    bytes: [u8; AddressText::CAPACITY],
    len: usize,
}

impl AddressText {
    /// The longest IPv6 text (`ffff:…:255.255.255.255`) is 45 bytes.
    const CAPACITY: usize = 48;

    fn unknown() -> Self {
        Self::from_text("unknown")
    }

    /// `ip` as `Display` writes it; IPv4 without the formatting machinery, which costs
    /// more than the rest of building the forwarding headers.
    fn ip(ip: IpAddr) -> Self {
        let mut text = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(_) => {
                use std::io::Write as _;
                let mut rest = &mut text.bytes[..];
                if write!(rest, "{ip}").is_err() {
                    return Self::from_text("unknown");
                }
                let left = rest.len();
                text.len = Self::CAPACITY - left;
            }
        }
        text
    }

    fn from_text(s: &str) -> Self {
        let mut text = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        for &b in s.as_bytes() {
            text.push(b);
        }
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons, hex letters and `unknown` are written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("unknown")
    }
}

fn strip_forwarding(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(headers::FORWARDED_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and `Connection` names more).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The header names listed in `Connection` (hop-by-hop too).
fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect()
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and those named by `Connection`.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    for name in connection_named(h) {
        h.remove(name);
    }
    let names: Vec<HeaderName> = h.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    for name in names {
        h.remove(name);
    }
}

/// The headers a forwarded request carries: the client's, less hop-by-hop headers, the
/// `Host` (set from the home endpoint) and anything the router itself sets.
fn forward_headers(client: &HeaderMap) -> HeaderMap {
    let named = if client.contains_key(header::CONNECTION) {
        connection_named(client)
    } else {
        Vec::new()
    };
    // Room for what the signer adds.
    let mut h = HeaderMap::with_capacity(client.keys_len() + 6);
    for (name, value) in client {
        let dropped = is_hop_by_hop(name)
            || name == header::HOST
            // The entry node answered any `Expect: 100-continue` itself.
            || name == header::EXPECT
            || name.as_str() == headers::ENTRY_REGION
            || name.as_str().starts_with(headers::FORWARDED_PREFIX)
            || named.contains(name);
        if !dropped {
            h.append(name.clone(), value.clone());
        }
    }
    h
}

/// `home_region` of a `POST /v1/tenants` body, if it names a region.
fn requested_home(body: &[u8]) -> Option<RegionId> {
    #[derive(Deserialize)]
    struct Probe {
        home_region: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    RegionId::parse(&probe.home_region?).ok()
}

#[cfg(test)]
mod tests {
    use http::uri::{PathAndQuery, Scheme};

    use super::*;

    #[test]
    fn client_addresses_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(AddressText::ip(ip).as_str(), ip.to_string());
        }
    }

    #[test]
    fn the_repository_catalogue_gives_every_region_its_endpoints() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../regions");
        let catalog = catalog::Catalog::load_dir(&dir).expect("the repository's catalogue loads");
        let regions = regions_from_catalog(&catalog).expect("endpoints are URLs");
        assert_eq!(regions.len(), catalog.len());
        let eu = regions
            .get(&RegionId::parse("eu-west-1").expect("region"))
            .expect("eu-west-1 is in the catalogue");
        assert_eq!(eu.internal.scheme(), Some(&Scheme::HTTPS));
        let origin = Origin::parse(&eu.public).expect("absolute");
        let joined = origin
            .join(Some(&PathAndQuery::from_static("/v1/tenants/x?y=1")))
            .expect("joined");
        assert_eq!(
            joined.to_string(),
            "https://eu-west-1.api.residency.example.com/v1/tenants/x?y=1"
        );
    }

    #[test]
    fn via_names_the_regions_a_request_passed_through() {
        let us = RegionId::parse("us-east-1").expect("region");
        let via = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for line in lines {
                h.append(header::VIA, HeaderValue::from_str(line).expect("value"));
            }
            has_passed(&h, &us)
        };
        assert!(!via(&[]));
        assert_eq!(via_member(&us), "1.1 us-east-1");
        assert!(via(&["1.1 us-east-1"]));
        assert!(
            via(&["1.0 fred, 1.1 us-east-1 (residency)"]),
            "a member with a comment"
        );
        assert!(
            via(&["1.1 eu-west-1", "HTTP/1.1 us-east-1"]),
            "a later header line"
        );
        assert!(
            !via(&["1.1 us-east-12, 1.1 eu-west-1"]),
            "another region's name"
        );
        assert!(!via(&["us-east-1"]), "a pseudonym needs its protocol");
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("eu.example"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(headers::ENTRY_REGION, HeaderValue::from_static("us-east-1"));
        h.insert(headers::FORWARDED, HeaderValue::from_static("v2;at=1"));
        h.insert(
            "x-residency-forwarded-for",
            HeaderValue::from_static("6.6.6.6"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let out = forward_headers(&h);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn the_requested_home_is_read_from_the_body() {
        assert_eq!(
            requested_home(br#"{"name":"A","home_region":"us-east-1"}"#),
            RegionId::parse("us-east-1").ok()
        );
        assert_eq!(requested_home(br#"{"name":"A"}"#), None);
        assert_eq!(requested_home(br#"{"home_region":"Not A Region"}"#), None);
        assert_eq!(requested_home(b"not json"), None);
    }

    #[test]
    fn a_head_is_measured_as_http_1_1_writes_it() {
        let limit = wire::limits::CLIENT_MAX_HEAD_BYTES;
        // A request whose written head is exactly `size` bytes.
        let head_of = |size: usize| {
            let line = "GET /v1/tenants/t/collections/c?q=1 HTTP/1.1\r\n";
            let fixed = "host: eu.example\r\nx-pad: \r\n\r\n";
            let pad = "a".repeat(size - line.len() - fixed.len());
            let written = format!("{line}host: eu.example\r\nx-pad: {pad}\r\n\r\n");
            assert_eq!(written.len(), size);
            let (parts, ()) = Request::get("/v1/tenants/t/collections/c?q=1")
                .header(header::HOST, "eu.example")
                .header("x-pad", pad)
                .body(())
                .expect("request")
                .into_parts();
            parts
        };
        assert_eq!(head_over_client_limit(&head_of(limit)), None);
        assert_eq!(
            head_over_client_limit(&head_of(limit + 1)),
            Some(HeadLimit::Bytes)
        );

        let fields = |count: usize| {
            let mut builder = Request::get("/");
            for i in 0..count {
                builder = builder.header(format!("x-f{i}"), "1");
            }
            builder.body(()).expect("request").into_parts().0
        };
        let most = wire::limits::CLIENT_MAX_HEADERS;
        assert_eq!(head_over_client_limit(&fields(most)), None);
        assert_eq!(
            head_over_client_limit(&fields(most + 1)),
            Some(HeadLimit::Fields)
        );
    }
}
