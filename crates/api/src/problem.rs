//! Turning errors into `application/problem+json` responses, each carrying the id of the
//! request it answers.
//!
//! The id is in scope for the whole of a request ([`answering`], entered by the
//! `observe` layer around everything `app` routes), so that whatever makes a problem
//! (a handler's `?`, an extractor, the rate limiter, a fallback) needs no access to the
//! request to name it.

use std::future::Future;

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wire::{PROBLEM_JSON, Problem};

tokio::task_local! {
    /// The id of the request being answered.
    static REQUEST_ID: String;
}

/// Runs `answer` (the rest of the request's layers and its handler) with `request_id` in
/// scope for the problems it makes.
pub(crate) async fn answering<F: Future>(request_id: String, answer: F) -> F::Output {
    REQUEST_ID.scope(request_id, answer).await
}

/// The id of the request being answered; `None` outside [`answering`].
pub(crate) fn request_id() -> Option<String> {
    REQUEST_ID.try_with(String::clone).ok()
}

/// A problem response carrying the id of the request being answered.
pub(crate) fn respond(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(problem.with_request_id(request_id()))).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// A known path called with a method it does not have. axum adds the `Allow` header
/// (the path's methods) to this response. The detail names the method only.
pub(crate) async fn method_not_allowed(method: Method) -> Response {
    respond(Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on this resource; the Allow header lists what is"),
    ))
}

/// Unknown paths. The detail names the method only: paths may carry identifiers.
pub(crate) async fn not_found(method: Method) -> Response {
    respond(Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no such resource for {method}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request_id_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a buffered body");
        let problem: serde_json::Value = serde_json::from_slice(&bytes).expect("a problem");
        problem["request_id"].clone()
    }

    #[tokio::test]
    async fn a_problem_names_the_request_it_answers_and_only_that_one() {
        let problem = || Problem::new(StatusCode::NOT_FOUND, "not-found", "no such thing");
        let answered = answering("req-7".to_owned(), async { respond(problem()) }).await;
        assert_eq!(answered.status(), StatusCode::NOT_FOUND);
        assert_eq!(answered.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(request_id_of(answered).await, "req-7");
        let outside = respond(problem());
        assert_eq!(request_id_of(outside).await, serde_json::Value::Null);
    }
}
