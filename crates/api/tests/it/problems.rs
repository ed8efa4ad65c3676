//! Every problem names the request it answers, whichever part of the node makes it: a
//! handler's service error, a body the extractor refuses, the rate limiter, the fallback.

use api::rate_limit::RateLimit;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use store::testing::region_database;
use tower::ServiceExt;
use wire::Problem;

use crate::{OPERATOR_TOKEN, body_text, node_with};

/// A syntactically valid tenant id that names no tenant.
const NO_SUCH_TENANT: &str = "/v1/tenants/2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60";

/// One request that fails, and what fails it.
struct Case<'a> {
    maker: &'a str,
    method: Method,
    path: &'a str,
    bearer: Option<&'a str>,
    body: &'static str,
    status: StatusCode,
}

#[tokio::test]
async fn every_problem_names_the_request_it_answers() {
    let (_db, database) = region_database("eu-central-1").await;
    // One request a key, so that the second one of a key is over the limit.
    let node = node_with(
        database,
        RateLimit {
            per_second: 0.001,
            burst: 1.0,
        },
    );
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let cases = [
        Case {
            maker: "a handler's service error",
            method: Method::GET,
            path: NO_SUCH_TENANT,
            bearer: None,
            body: "",
            status: StatusCode::UNAUTHORIZED,
        },
        Case {
            maker: "a tenant id that does not parse",
            method: Method::GET,
            path: "/v1/tenants/not-a-tenant-id",
            bearer: Some("Bearer rso.first-of-its-bucket"),
            body: "",
            status: StatusCode::NOT_FOUND,
        },
        Case {
            maker: "the JSON body extractor",
            method: Method::POST,
            path: "/v1/tenants",
            bearer: Some(operator.as_str()),
            body: "{not json",
            status: StatusCode::BAD_REQUEST,
        },
        Case {
            maker: "the rate limiter lets the first one through",
            method: Method::GET,
            path: NO_SUCH_TENANT,
            bearer: Some("Bearer rso.flood"),
            body: "",
            status: StatusCode::UNAUTHORIZED,
        },
        Case {
            maker: "the rate limiter",
            method: Method::GET,
            path: NO_SUCH_TENANT,
            bearer: Some("Bearer rso.flood"),
            body: "",
            status: StatusCode::TOO_MANY_REQUESTS,
        },
        Case {
            maker: "the fallback",
            method: Method::GET,
            path: "/nowhere",
            bearer: None,
            body: "",
            status: StatusCode::NOT_FOUND,
        },
    ];
    for (index, case) in cases.into_iter().enumerate() {
        let Case {
            maker,
            method,
            path,
            bearer,
            body,
            status,
        } = case;
        let request_id = format!("req-problem-{index}");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("x-request-id", &request_id)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        let response = crate::app(node.state.clone())
            .oneshot(request.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), status, "{maker}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json",
            "{maker}"
        );
        assert_eq!(response.headers()["x-request-id"], request_id.as_str());
        let text = body_text(response).await;
        let problem: Problem = serde_json::from_str(&text).expect("problem json");
        assert_eq!(
            problem.request_id.as_deref(),
            Some(request_id.as_str()),
            "{maker}: {text}"
        );
    }
}
