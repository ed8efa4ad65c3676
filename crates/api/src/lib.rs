//! The regional node's HTTP adapter (axum): `app(state) -> Router` and `serve`.
//! Handlers are thin: parse, call one use case, map the result.
//!
//! Operational endpoints (`/healthz`, `/readyz`, `/metrics`; also alone on the optional
//! operations listener, `operations_app`) and the tenant API of API.md,
//! one handler module per resource (`handlers`). Every tenant-scoped response carries the
//! routing headers; every authenticated request draws from its caller's rate-limit
//! bucket, every token that does not verify from one shared bucket (`rate_limit`); every
//! body is read only once its caller is authorized (`extract::JsonBody`); every problem
//! names the request it answers.

mod extract;
mod handlers;
mod health;
mod middleware;
mod openapi;
mod problem;
pub mod rate_limit;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

pub use extract::BODY_READ_DEADLINE;
pub use health::{
    DEFAULT_HEALTH_POLL_INTERVAL, DirectoryProbe, HealthPolling, MetricsAccess, spawn_health_poller,
};
pub use state::{NodeParts, NodeState};

/// Request ids for requests that arrive without one, from [`telemetry::new_request_id`]
/// (tower-http's `MakeRequestUuid` makes a system call and two allocations per request).
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let mut text = [0u8; telemetry::REQUEST_ID_LEN];
        HeaderValue::from_str(telemetry::new_request_id(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

/// The whole HTTP surface of a regional node.
pub fn app(state: NodeState) -> Router {
    use handlers::{
        api_keys, audit, collections, evidence, files, jobs, keys, records, subjects, tenants,
    };
    let tenant_scoped = Router::new()
        .route(
            "/v1/tenants/{tenant}",
            get(tenants::get_tenant).delete(tenants::offboard_tenant),
        )
        .route(
            "/v1/tenants/{tenant}/offboarding",
            get(tenants::offboarding_certificate),
        )
        .route(
            "/v1/tenants/{tenant}/api-keys",
            post(api_keys::create_api_key),
        )
        .route(
            "/v1/tenants/{tenant}/api-keys/{id}",
            delete(api_keys::delete_api_key),
        )
        .route("/v1/tenants/{tenant}/keys/rotate", post(keys::rotate_keys))
        .route("/v1/tenants/{tenant}/keys", get(keys::key_status))
        .route(
            "/v1/tenants/{tenant}/keys/policy",
            get(keys::key_policy).put(keys::set_key_policy),
        )
        .route(
            "/v1/tenants/{tenant}/keys/{version}",
            delete(keys::destroy_key_version),
        )
        .route(
            "/v1/tenants/{tenant}/collections/{collection}",
            put(collections::put_collection).get(collections::get_collection),
        )
        .route(
            "/v1/tenants/{tenant}/collections/{collection}/records",
            post(records::create_record).get(records::search_records),
        )
        .route(
            "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
            get(records::get_record)
                .put(records::update_record)
                .delete(records::delete_record),
        )
        .route(
            "/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
            put(files::put_file)
                .get(files::get_file)
                .delete(files::delete_file),
        )
        .route(
            "/v1/tenants/{tenant}/audit/events",
            get(audit::audit_events),
        )
        .route(
            "/v1/tenants/{tenant}/audit/export",
            get(audit::audit_export),
        )
        .route(
            "/v1/tenants/{tenant}/residency",
            get(evidence::residency_evidence),
        )
        .route(
            "/v1/tenants/{tenant}/subjects/{subject}/export",
            get(subjects::export_subject),
        )
        .route(
            "/v1/tenants/{tenant}/subjects/{subject}/erase",
            post(subjects::erase_subject),
        )
        // Set on each group of routes before its layers, so that a 405 passes through them
        // like any other answer (routing headers, rate limit); axum applies it to the
        // routes registered so far.
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routing_headers,
        ));
    let v1 = Router::new()
        // A tenant created here was created in its home, and a listing lists the tenants
        // homed here: their answers name the region, as ones forwarded here by another
        // region's router do.
        .route(
            "/v1/tenants",
            post(tenants::create_tenant)
                .get(tenants::list_tenants)
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    routing_headers,
                )),
        )
        .merge(tenant_scoped)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .route("/v1/audit/keys", get(audit::audit_keys))
        .route("/v1/keys/rewrap", post(jobs::start_rewrap))
        .route(
            "/v1/subjects/erasures/reapply",
            post(subjects::reapply_erasures),
        )
        .route("/v1/jobs", get(jobs::list_jobs))
        .route("/v1/jobs/{job}", get(jobs::get_job))
        .route("/v1/audit/keys/rotate", post(audit::rotate_audit_key))
        .route("/v1/openapi.json", get(openapi::openapi_json));
    observed(Router::new().merge(v1).merge(operations_routes()), state)
}

/// `/healthz`, `/readyz` and `/metrics`, which both listeners serve.
fn operations_routes() -> Router<NodeState> {
    Router::new()
        .route("/healthz", get(handlers::health::healthz))
        .route("/readyz", get(handlers::health::readyz))
        .route("/metrics", get(handlers::health::metrics))
}

/// `routes` with the problems for unknown paths and methods, the request observation and
/// the request id, as every listener answers.
fn observed(routes: Router<NodeState>, state: NodeState) -> Router {
    let request_id = http::HeaderName::from_static(wire::headers::REQUEST_ID);
    routes
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        // Outermost: every response, errors included, carries the request id.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RandomRequestId))
        // Before an id is set: a client's id that no node keeps is replaced.
        .layer(axum::middleware::map_request(drop_unkept_request_id))
        .with_state(state)
}

/// The operations listener's surface: `/healthz`, and `/readyz` and `/metrics` in their
/// operator form whatever [`MetricsAccess`] says. Nothing of the tenant API: bind it to an
/// address only operators and their scrapers reach.
pub fn operations_app(state: NodeState) -> Router {
    observed(
        operations_routes().layer(axum::Extension(handlers::health::OperationsListener)),
        state,
    )
}

/// Removes a client's `X-Request-Id` that [`telemetry::keeps_client_request_id`] refuses
/// (empty, too long, not visible text), so that one is generated instead: the same rule
/// as the router's for a request it forwards.
async fn drop_unkept_request_id(mut request: Request) -> Request {
    let unkept = request
        .headers()
        .get(wire::headers::REQUEST_ID)
        .is_some_and(|id| !telemetry::keeps_client_request_id(id.as_bytes()));
    if unkept {
        request.headers_mut().remove(wire::headers::REQUEST_ID);
    }
    request
}

/// Adds `X-Residency-Region` (the home region, which served it) and `X-Residency-Via`
/// (the region whose endpoint received it) to tenant-scoped responses.
async fn routing_headers(State(state): State<NodeState>, request: Request, next: Next) -> Response {
    let via = state.entry_region(request.headers());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(region) = HeaderValue::from_str(state.region().as_str()) {
        headers
            .entry(wire::headers::RESIDENCY_REGION)
            .or_insert(region);
    }
    if let Ok(via) = HeaderValue::from_str(via.as_str()) {
        headers.entry(wire::headers::RESIDENCY_VIA).or_insert(via);
    }
    response
}

/// What a node's server reads of a request head: more than a client may send (the router
/// holds clients to `wire::limits`' `CLIENT_` limits), so that a forwarded request, which
/// carries the forwarding headers too, always fits.
pub const SERVER_HEAD_LIMITS: hop::HeadLimits = hop::HeadLimits {
    max_headers: wire::limits::SERVER_MAX_HEADERS,
    max_head_bytes: wire::limits::SERVER_MAX_HEAD_BYTES,
    max_header_list_size: wire::limits::SERVER_MAX_HEADER_LIST_SIZE,
};

/// Serves `app(state)` on `listener` (through [`hop`], with [`SERVER_HEAD_LIMITS`]) until
/// `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: NodeState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    hop::serve_service(listener, SERVER_HEAD_LIMITS, app(state), shutdown).await
}

/// Serves [`operations_app`] on `listener` until `shutdown` resolves.
pub async fn serve_operations(
    listener: TcpListener,
    state: NodeState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    hop::serve_service(
        listener,
        SERVER_HEAD_LIMITS,
        operations_app(state),
        shutdown,
    )
    .await
}

/// How long a health probe may wait on one dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
