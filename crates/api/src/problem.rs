//! Turning errors into `application/problem+json` responses.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wire::{PROBLEM_JSON, Problem};

/// A problem response carrying the request id.
pub(crate) fn respond(problem: Problem, headers: &HeaderMap) -> Response {
    let request_id = headers
        .get(wire::headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    respond_with_id(problem, request_id)
}

/// A problem response carrying `request_id`.
pub(crate) fn respond_with_id(problem: Problem, request_id: Option<String>) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(problem.with_request_id(request_id))).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// A known path called with a method it does not have. axum adds the `Allow` header
/// (the path's methods) to this response. The detail names the method only.
pub(crate) async fn method_not_allowed(method: Method, headers: HeaderMap) -> Response {
    respond(
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{method} is not allowed on this resource; the Allow header lists what is"),
        ),
        &headers,
    )
}

/// Unknown paths. The detail names the method only: paths may carry identifiers.
pub(crate) async fn not_found(method: Method, headers: HeaderMap) -> Response {
    respond(
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such resource for {method}"),
        ),
        &headers,
    )
}
