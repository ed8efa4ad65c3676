//! The few answers the router gives itself (`421`, `503`, `400`), as
//! `application/problem+json`. Details are fixed sentences: never a path, a body or an
//! internal error's text.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use wire::{PROBLEM_JSON, Problem};

use crate::names;

/// Seconds a client is told to wait before trying again after a `503`.
pub(crate) const RETRY_AFTER_SECS: u64 = 2;

pub(crate) fn response(
    status: StatusCode,
    slug: &str,
    detail: &str,
    request_id: Option<&HeaderValue>,
) -> Response<Body> {
    let id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
    let problem = Problem::new(status, slug, detail).with_request_id(id);
    // Serializing a struct of strings and a number cannot fail; an empty body would still
    // carry the status.
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(id) = request_id {
        h.insert(names::REQUEST_ID, id.clone());
    }
    response
}

/// `503` with `Retry-After`.
pub(crate) fn unavailable(
    slug: &str,
    detail: &str,
    request_id: Option<&HeaderValue>,
) -> Response<Body> {
    let mut response = response(StatusCode::SERVICE_UNAVAILABLE, slug, detail, request_id);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}
