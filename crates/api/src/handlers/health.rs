//! Operations: liveness (`GET /healthz`), readiness (`GET /readyz`, from the health
//! poller's last snapshot: no request probes anything) and metrics (`GET /metrics`). The
//! detailed readiness body, and `/metrics` unless configured public, are for the operator
//! token or the node's operations listener only.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use wire::{Liveness, Problem, Readiness};

use crate::health::{ReadinessForm, record_audit, record_pools};
use crate::{MetricsAccess, NodeState};

/// Marks a request that reached the node through its operations listener
/// (`operations_app`), which only operators can reach.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OperationsListener;

/// Whether the caller may see operational detail: it came through the operations
/// listener, or presents the operator token. Costs at most one hash.
fn operator_or_operations_listener(
    state: &NodeState,
    listener: Option<&Extension<OperationsListener>>,
    headers: &HeaderMap,
) -> bool {
    listener.is_some() || bearer(headers).is_some_and(|token| state.is_operator(token))
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `GET /healthz`: the process is alive. Touches no dependency.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Liveness)),
)]
pub(crate) async fn healthz(State(state): State<NodeState>) -> Json<Liveness> {
    Json(Liveness {
        status: "ok".into(),
        region: state.region().to_string(),
    })
}

/// `GET /readyz`: 200 while the primary takes writes (replicas may be out of rotation,
/// the audit queue may be over 80% full, the tenant directory may be unreachable:
/// `degraded`), 503 when it does not, when the health poller's snapshot is missing or
/// too old (`reason`: `starting`, `stale`), or once the node began to stop (`draining`:
/// it still serves for its deregistration delay, see docs/operations.md).
///
/// Answered from the snapshot the health poller publishes every interval: a request
/// probes nothing. Anyone gets each dependency's status; the operator token
/// (`Authorization: Bearer …`) or the node's operations listener also gets where each
/// dependency is, WAL positions, lags, why one is down, and the audit backlog. Another
/// token gets the public form.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The primary takes writes (`ready` or `degraded`). \
            Public form: per dependency `status` only; detailed form (operator token or \
            operations listener): also addresses, WAL positions, lags, reasons, backlog.",
            body = Readiness),
        (status = 503, description = "The primary does not take writes, the health \
            snapshot is missing or too old, or the node is stopping (`not_ready`, `reason` \
            `starting`, `stale` or `draining`).",
            body = Readiness),
    ),
)]
pub(crate) async fn readyz(
    State(state): State<NodeState>,
    listener: Option<Extension<OperationsListener>>,
    headers: HeaderMap,
) -> Response {
    let form = if operator_or_operations_listener(&state, listener.as_ref(), &headers) {
        ReadinessForm::Detailed
    } else {
        ReadinessForm::Public
    };
    let (status, readiness) = state.health().answer(tokio::time::Instant::now(), form);
    (status, Json(readiness)).into_response()
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
///
/// Who may read it on the main listener is configured: anyone, the operator token (the
/// default: 401 without it), or nobody (404: scrape the operations listener, which always
/// serves it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus (OpenMetrics) text.", body = String,
            content_type = "application/openmetrics-text"),
        // Without the operator token, when it is needed (the default).
        (status = 401, response = crate::openapi::problems::Unauthorized),
        // When metrics are served on the operations listener only.
        (status = 404, response = crate::openapi::problems::NotFound),
    ),
)]
pub(crate) async fn metrics(
    State(state): State<NodeState>,
    listener: Option<Extension<OperationsListener>>,
    headers: HeaderMap,
) -> Response {
    if listener.is_none() {
        match state.metrics_access() {
            MetricsAccess::Public => {}
            MetricsAccess::OperatorToken
                if operator_or_operations_listener(&state, None, &headers) => {}
            MetricsAccess::OperatorToken => return operator_token_needed(),
            MetricsAccess::OperationsListener => {
                // As for any path this listener does not serve.
                return crate::problem::not_found(Method::GET).await;
            }
        }
    }
    record_pools(&state);
    record_audit(&state);
    (
        [(header::CONTENT_TYPE, telemetry::OPENMETRICS_CONTENT_TYPE)],
        state.metrics().encode(),
    )
        .into_response()
}

fn operator_token_needed() -> Response {
    let mut response = crate::problem::respond(Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "metrics need the operator token",
    ));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
