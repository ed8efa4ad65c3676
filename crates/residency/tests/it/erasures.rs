//! `residency erasures reapply` as an operator runs it: it sends
//! `POST /v1/subjects/erasures/reapply` with the operator token, prints what the node
//! re-applied (or the wire JSON with `--json`), and exits 1 on a refusal. Against a test
//! server that answers the documented body and records what it was sent; the endpoint
//! itself is tested against real nodes in `crates/node/tests/it/erasure_ledger.rs`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wire::api::ErasureLedgerReapplied;

use crate::residency;

const TOKEN: &str = "rso.erasures-test-operator-token-0123456789";

/// Method, path and bearer of each request.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

async fn answer(State(seen): State<Seen>, request: Request) -> Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_owned(),
    );
    seen.lock()
        .expect("seen")
        .push((method.clone(), path.clone(), bearer.clone()));
    if bearer.as_deref() != Some(TOKEN) {
        let problem = json!({
            "type": "https://residency.dev/problems/unauthorized", "title": "Unauthorized",
            "status": 401, "detail": "operator token required", "request_id": "req-1"
        });
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/problem+json")],
            problem.to_string(),
        )
            .into_response();
    }
    let body = json!({"entries": 4, "reapplied": 2, "records_erased": 7, "skipped": 1});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn run(args: Vec<String>) -> std::process::Output {
    tokio::process::Command::from(residency())
        .args(args)
        .env_remove("RESIDENCY_ENDPOINT")
        .env_remove("RESIDENCY_TOKEN")
        .output()
        .await
        .expect("run residency")
}

#[tokio::test]
async fn reapply_sends_the_operators_request_and_prints_what_was_reapplied() {
    let seen = Seen::default();
    let app = Router::new().fallback(answer).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let args = |token: &str, json: bool| {
        let mut args: Vec<String> = [
            "erasures",
            "reapply",
            "--endpoint",
            &endpoint,
            "--token",
            token,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if json {
            args.push("--json".to_owned());
        }
        args
    };

    let output = run(args(TOKEN, false)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in ["ledger entries", "re-applied", "records erased", "skipped"] {
        assert!(stdout.contains(line), "{stdout}");
    }
    assert!(stdout.contains('7') && stdout.contains('4'), "{stdout}");
    assert_eq!(
        seen.lock().expect("seen").last().cloned(),
        Some((
            "POST".to_owned(),
            "/v1/subjects/erasures/reapply".to_owned(),
            Some(TOKEN.to_owned())
        ))
    );

    let output = run(args(TOKEN, true)).await;
    let printed: ErasureLedgerReapplied =
        serde_json::from_slice(&output.stdout).expect("--json prints the wire type");
    assert_eq!(
        printed,
        ErasureLedgerReapplied {
            entries: 4,
            reapplied: 2,
            records_erased: 7,
            skipped: 1
        }
    );

    let refused = run(args("rso.not-the-operator-token-0123456789abcdef", false)).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
}
