//! Per-request observation: a tracing span with the route template and request id, the
//! request counter and latency histogram, and the request id in scope for the problems
//! made while answering. Never records concrete paths, query strings or bodies: they may
//! carry personal data.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::NodeState;

pub(crate) async fn observe(
    State(state): State<NodeState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get(wire::headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let span = tracing::info_span!("request", %method, route = %route, request_id = %request_id);
    let started = Instant::now();
    let response = crate::problem::answering(request_id, next.run(request))
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered"));
    state
        .metrics()
        .record_http(&route, method.as_str(), status, elapsed);
    response
}
