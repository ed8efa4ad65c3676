//! Three tiny "regional apps" on loopback ports, each behind the router layer, sharing one
//! in-memory tenant directory; plus a dead region (nothing listens) and a black-hole
//! region (accepts, never answers). The apps echo what they saw, count requests and count
//! body bytes as they stream, so tests can check hops, headers and memory bounds.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::ServiceExt as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use bytes::Bytes;
use hop::InternalProtocol;
use http::{HeaderMap, StatusCode, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use model::{RegionId, TenantId, Transit};
use prometheus_client::registry::Registry;
use router::{
    CachedDirectory, Directory, DirectoryEntry, DirectoryLimits, ForwardSigner, ForwardingKey,
    MemoryDirectory, Rate, RegionEndpoints, RouterConfig, RouterMetrics,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::Layer;

pub const EU: &str = "eu-west-1";
pub const US: &str = "us-east-1";
pub const AP: &str = "ap-south-1";
/// In every node's catalogue, but nothing listens on its internal endpoint.
pub const DEAD: &str = "sa-east-1";
/// Accepts connections and never answers.
pub const SILENT: &str = "me-south-1";

pub const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

pub fn region(id: &str) -> RegionId {
    RegionId::parse(id).expect("test region id")
}

pub fn public_url(id: &str) -> String {
    format!("https://{id}.api.example.test")
}

/// Bytes a streaming producer has made and a consumer has read, shared by everything in
/// one cluster (the apps run in the test's process).
#[derive(Debug, Default)]
pub struct Flow {
    pub produced: AtomicU64,
    pub consumed: AtomicU64,
}

impl Flow {
    /// Waits until the consumer is at most `window` bytes behind the producer. A router
    /// that buffered a whole body would never let the consumer see anything: the test
    /// times out instead of passing.
    pub async fn pace(&self, window: u64) {
        while self
            .produced
            .load(Ordering::SeqCst)
            .saturating_sub(self.consumed.load(Ordering::SeqCst))
            > window
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[derive(Debug)]
pub struct AppState {
    pub region: String,
    pub hits: AtomicU64,
    pub flow: Arc<Flow>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub ttl: Duration,
    pub upstream_timeout: Duration,
    /// Regions whose node signs and verifies with another forwarding key than [`KEY`]
    /// (a secret rotated in one region only).
    pub other_keys: HashMap<&'static str, &'static [u8; 32]>,
    /// How each node learns a client's address.
    pub peer_by: PeerBy,
    /// The protocol entries ask homes for.
    pub internal_protocol: InternalProtocol,
    /// What each client address may send to each node.
    pub client_rate: Rate,
    /// Each client address's share of the directory lookups for unknown tenants.
    pub client_directory_misses: Rate,
    /// Whether every node reads its client's address from `X-Forwarded-For`.
    pub behind_load_balancer: bool,
    /// How each node's directory cache treats unknown tenants.
    pub directory_limits: DirectoryLimits,
    pub body_read_timeout: Duration,
}

impl Options {
    /// The defaults, with entries asking homes for `protocol`.
    pub fn over(protocol: InternalProtocol) -> Self {
        Self {
            internal_protocol: protocol,
            ..Self::default()
        }
    }
}

/// Both protocols of the hop between regions, for the tests that run over each.
pub const PROTOCOLS: [InternalProtocol; 2] = [InternalProtocol::Http2, InternalProtocol::Http1];

/// How the server hands a node its client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerBy {
    /// A router service made for each connection (`RouterService::for_peer`), as a node
    /// serves (`hop::serve_connections`).
    Connection,
    /// `ConnectInfo` in every request, as axum's `into_make_service_with_connect_info`
    /// and `hop::serve_service` give it.
    ConnectInfo,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(10),
            other_keys: HashMap::new(),
            peer_by: PeerBy::Connection,
            internal_protocol: InternalProtocol::default(),
            client_rate: Rate::CLIENT_DEFAULT,
            client_directory_misses: Rate::CLIENT_DIRECTORY_MISSES_DEFAULT,
            behind_load_balancer: false,
            directory_limits: DirectoryLimits::default(),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub struct Node {
    pub addr: SocketAddr,
    pub app: Arc<AppState>,
    pub cache: CachedDirectory,
    pub registry: Arc<Mutex<Registry>>,
}

pub struct Cluster {
    pub nodes: HashMap<&'static str, Node>,
    pub directory: Arc<MemoryDirectory>,
    pub flow: Arc<Flow>,
    pub client: Client<HttpConnector, Body>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Cluster {
    pub async fn start() -> Result<Self> {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Result<Self> {
        let directory = Arc::new(MemoryDirectory::new());
        let flow = Arc::new(Flow::default());
        let mut tasks = Vec::new();

        let mut listeners = Vec::new();
        let mut regions = HashMap::new();
        for id in [EU, US, AP] {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            regions.insert(region(id), endpoints(id, addr)?);
            listeners.push((id, listener));
        }
        // A port nothing listens on: bind, note, close.
        let dead = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        regions.insert(region(DEAD), endpoints(DEAD, dead)?);
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        regions.insert(region(SILENT), endpoints(SILENT, silent.local_addr()?)?);
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        }));

        let mut nodes = HashMap::new();
        for (id, listener) in listeners {
            let addr = listener.local_addr()?;
            let app = Arc::new(AppState {
                region: id.to_owned(),
                hits: AtomicU64::new(0),
                flow: Arc::clone(&flow),
            });
            let cache = CachedDirectory::with_limits(
                directory.clone(),
                options.ttl,
                10_000,
                options.directory_limits,
            );
            let mut registry = Registry::default();
            let mut config = RouterConfig::new(
                region(id),
                regions.clone(),
                cache.clone(),
                ForwardSigner::new(
                    ForwardingKey::new(options.other_keys.get(id).copied().unwrap_or(KEY))?,
                    Duration::from_secs(30),
                ),
            );
            config.upstream_timeout = options.upstream_timeout;
            config.connect_timeout = Duration::from_millis(500);
            config.internal_protocol = options.internal_protocol;
            config.metrics = Some(RouterMetrics::new(&mut registry));
            config.client_rate = options.client_rate;
            config.client_directory_misses = options.client_directory_misses;
            config.behind_load_balancer = options.behind_load_balancer;
            config.body_read_timeout = options.body_read_timeout;
            let service = router::layer(config).layer(regional_app(Arc::clone(&app)));
            let peer_by = options.peer_by;
            tasks.push(tokio::spawn(async move {
                let served = match peer_by {
                    PeerBy::ConnectInfo => {
                        let make = service.into_make_service_with_connect_info::<SocketAddr>();
                        axum::serve(listener, make).await
                    }
                    PeerBy::Connection => {
                        let make =
                            tower::service_fn(move |incoming: IncomingStream<'_, TcpListener>| {
                                let service = service.for_peer(*incoming.remote_addr());
                                async move { Ok::<_, Infallible>(service) }
                            });
                        axum::serve(listener, make).await
                    }
                };
                if let Err(err) = served {
                    eprintln!("test server stopped: {err}");
                }
            }));
            nodes.insert(
                id,
                Node {
                    addr,
                    app,
                    cache,
                    registry: Arc::new(Mutex::new(registry)),
                },
            );
        }
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(Self {
            nodes,
            directory,
            flow,
            client,
            tasks,
        })
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes.get(id).expect("a region of the cluster")
    }

    /// A new tenant homed in `home` with `transit`, written to the directory.
    pub async fn tenant(&self, home: &str, transit: Transit) -> Result<TenantId> {
        let tenant = TenantId::from_random_bytes(rand_bytes());
        self.directory
            .upsert(&DirectoryEntry {
                tenant,
                home: region(home),
                allowed: vec![region(home)],
                transit,
                version: 1,
            })
            .await?;
        Ok(tenant)
    }

    pub fn hits(&self) -> HashMap<&'static str, u64> {
        self.nodes
            .iter()
            .map(|(id, node)| (*id, node.app.hits.load(Ordering::SeqCst)))
            .collect()
    }

    pub fn url(&self, id: &str, path: &str) -> Uri {
        format!("http://{}{path}", self.node(id).addr)
            .parse()
            .expect("test uri")
    }

    pub async fn send(&self, request: http::Request<Body>) -> Result<http::Response<Body>> {
        let response = self.client.request(request).await.context("send")?;
        Ok(response.map(Body::new))
    }

    pub async fn get(&self, id: &str, path: &str) -> Result<http::Response<Body>> {
        self.send(
            http::Request::get(self.url(id, path))
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    pub fn metrics(&self, id: &str) -> String {
        let registry = self.node(id).registry.lock().expect("registry lock");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }
}

fn endpoints(id: &str, addr: SocketAddr) -> Result<RegionEndpoints> {
    Ok(RegionEndpoints {
        internal: format!("http://{addr}").parse()?,
        public: public_url(id).parse()?,
    })
}

fn rand_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

pub async fn json(response: http::Response<Body>) -> Result<Value> {
    let bytes = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "response is not JSON: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The regional app: echoes what it saw, streams bodies both ways with byte counters.
fn regional_app(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/tenants", post(create_tenant))
        .fallback(tenant_handler)
        .with_state(state)
}

async fn healthz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    app.hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "region": app.region }))
}

async fn create_tenant(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    app.hits.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (
        StatusCode::CREATED,
        axum::Json(json!({ "served_by": app.region, "request": request })),
    )
        .into_response()
}

async fn tenant_handler(State(app): State<Arc<AppState>>, request: Request) -> Response {
    app.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = request.into_parts();
    let seen = |name: &str| header(&parts.headers, name).map(str::to_owned);
    let path = parts.uri.path().to_owned();

    if path.ends_with("/blob") {
        let size: u64 = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("size="))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let flow = Arc::clone(&app.flow);
        return Response::new(paced_body(flow, size, PACE_WINDOW));
    }
    // `?wait_ms=N`: a slow handler.
    if let Some(wait) = parts
        .uri
        .query()
        .and_then(|q| q.strip_prefix("wait_ms="))
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }

    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    app.flow
                        .consumed
                        .fetch_add(data.len() as u64, Ordering::SeqCst);
                }
            }
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let status = if parts.method == http::Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        axum::Json(json!({
            "region": app.region,
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query(),
            "bytes": bytes,
            "entry_region": seen(router::headers::ENTRY_REGION),
            "forwarded_for": parts
                .extensions
                .get::<router::Forwarded>()
                .map(|forwarded| forwarded.client_address.clone()),
            "forwarding_header": seen(router::headers::FORWARDED),
            // What a handler reads as its client's address.
            "peer": parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip().to_string()),
            // The connection it came on.
            "peer_address": parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.to_string()),
            "request_id": seen(router::headers::REQUEST_ID),
            // The protocol the request arrived in.
            "version": format!("{:?}", parts.version),
        })),
    )
        .into_response()
}

/// How far a paced producer may run ahead of its consumer.
pub const PACE_WINDOW: u64 = 2 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// A body of `size` bytes produced in chunks, never more than `window` ahead of what the
/// consumer has counted in `flow.consumed`. Its length is not declared.
pub fn paced_body(flow: Arc<Flow>, size: u64, window: u64) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![0x5a; CHUNK]);
        let mut left = size;
        while left > 0 {
            flow.pace(window).await;
            let n = left.min(CHUNK as u64);
            let piece = chunk.slice(..n as usize);
            flow.produced.fetch_add(n, Ordering::SeqCst);
            if tx.send(piece).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    Body::new(ChannelBody(rx))
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// Reads a response body chunk by chunk, counting bytes into `flow.consumed`.
pub async fn count_body(flow: &Flow, body: Body) -> Result<u64> {
    let mut body = body;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            total += data.len() as u64;
            flow.consumed.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
    }
    Ok(total)
}
