//! The regional node's HTTP adapter (axum): `app(state) -> Router` and `serve`.
//! Handlers are thin: parse, call one use case, map the result.
//!
//! Today the node serves the operational endpoints (`/healthz`, `/readyz`, `/metrics`);
//! the tenant API joins as its use cases land.

mod health;
mod middleware;
mod problem;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use health::spawn_health_poller;
pub use state::{NodeParts, NodeState};

/// The whole HTTP surface of a regional node.
pub fn app(state: NodeState) -> Router {
    let request_id = http::HeaderName::from_static(wire::headers::REQUEST_ID);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(problem::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        // Outermost: every response, errors included, carries the request id.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then drains in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    state: NodeState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long a readiness probe may wait on one database.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
