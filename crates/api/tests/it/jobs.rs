//! The operator's job endpoints: `POST /v1/keys/rewrap`, `GET /v1/jobs` (filters, cursor)
//! and `GET /v1/jobs/{job}`; running jobs in `/readyz`'s operator view.

use std::sync::Arc;
use std::time::Duration;

use model::TenantId;
use reqwest::{Method, StatusCode};
use service::jobs::{JobRunner, JobSettings, RewrapJob};
use store::jobs::{self, JobState};
use store::testing::region_database;
use wire::jobs::{JobPage, JobView};

use crate::OPERATOR_TOKEN;
use crate::tenant_api::{Answer, Served, serve};

fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
}

async fn operator(api: &Served, method: Method, path: &str) -> Answer {
    api.call(method, path, Some(OPERATOR_TOKEN), None, &[])
        .await
}

fn page(answer: &Answer) -> JobPage {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    serde_json::from_slice(&answer.bytes).expect("a job page")
}

fn ids(page: &JobPage) -> Vec<&str> {
    page.jobs.iter().map(|job| job.id.as_str()).collect()
}

#[tokio::test]
async fn job_endpoints_answer_the_operator_only() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (_tenant, admin) = api.tenant().await;
    for (method, path) in [
        (Method::POST, "/v1/keys/rewrap"),
        (Method::GET, "/v1/jobs"),
        (Method::GET, "/v1/jobs/1"),
    ] {
        let anonymous = api.call(method.clone(), path, None, None, &[]).await;
        assert_problem(&anonymous, StatusCode::UNAUTHORIZED);
        let tenant_key = api
            .call(method.clone(), path, Some(&admin), None, &[])
            .await;
        assert_problem(&tenant_key, StatusCode::FORBIDDEN);
    }
    let primary = api
        .node
        .state
        .database()
        .primary()
        .get()
        .await
        .expect("primary");
    assert_eq!(
        jobs::list(&primary, &jobs::JobFilter::default(), 10)
            .await
            .expect("list"),
        [],
        "nobody but the operator started anything"
    );
}

#[tokio::test]
async fn jobs_are_listed_newest_first_by_filter_and_cursor_and_unknown_ones_are_404() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (a, b) = (
        TenantId::from_random_bytes([1; 16]),
        TenantId::from_random_bytes([2; 16]),
    );
    let mut created = Vec::new();
    {
        let primary = api
            .node
            .state
            .database()
            .primary()
            .get()
            .await
            .expect("primary");
        for (kind, tenant) in [
            ("reencrypt", Some(&a)),
            ("reencrypt", Some(&b)),
            ("purge", Some(&a)),
            ("reencrypt", Some(&a)),
        ] {
            created.push(
                jobs::enqueue(&primary, kind, tenant)
                    .await
                    .expect("enqueue")
                    .id
                    .to_string(),
            );
        }
        jobs::lease_next(&primary, &["purge"], "node-x", Duration::from_secs(60))
            .await
            .expect("lease")
            .expect("purge job");
    }

    let first = page(&operator(&api, Method::GET, "/v1/jobs?limit=3").await);
    assert_eq!(
        ids(&first),
        [
            created[3].as_str(),
            created[2].as_str(),
            created[1].as_str()
        ]
    );
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = page(
        &operator(
            &api,
            Method::GET,
            &format!("/v1/jobs?limit=3&cursor={cursor}"),
        )
        .await,
    );
    assert_eq!(ids(&second), [created[0].as_str()]);
    assert_eq!(second.next_cursor, None);

    let of_a = page(
        &operator(
            &api,
            Method::GET,
            &format!("/v1/jobs?tenant={a}&kind=reencrypt"),
        )
        .await,
    );
    assert_eq!(ids(&of_a), [created[3].as_str(), created[0].as_str()]);
    assert!(
        of_a.jobs
            .iter()
            .all(|job| job.tenant.as_deref() == Some(a.as_str()))
    );
    let running = page(&operator(&api, Method::GET, "/v1/jobs?state=running").await);
    assert_eq!(ids(&running), [created[2].as_str()]);
    assert_eq!(running.jobs[0].state, "running");
    assert_eq!(running.jobs[0].attempts, 1);
    let none = page(&operator(&api, Method::GET, "/v1/jobs?kind=relocate").await);
    assert!(none.jobs.is_empty());

    let one = operator(&api, Method::GET, &format!("/v1/jobs/{}", created[1])).await;
    assert_eq!(one.status, StatusCode::OK);
    let view: JobView = serde_json::from_slice(&one.bytes).expect("job view");
    assert_eq!(view.kind, "reencrypt");
    assert_eq!(view.tenant.as_deref(), Some(b.as_str()));
    assert_eq!(view.state, "queued");
    assert_eq!(view.finished_at, None);
    assert_eq!((view.progress.done, view.progress.total), (0, 0));

    for unknown in ["/v1/jobs/999999", "/v1/jobs/not-a-job", "/v1/jobs/0"] {
        assert_problem(
            &operator(&api, Method::GET, unknown).await,
            StatusCode::NOT_FOUND,
        );
    }
    for (query, status) in [
        ("state=sleeping", StatusCode::UNPROCESSABLE_ENTITY),
        ("tenant=not-a-tenant", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=many", StatusCode::UNPROCESSABLE_ENTITY),
        ("colour=blue", StatusCode::UNPROCESSABLE_ENTITY),
        ("cursor=abc", StatusCode::BAD_REQUEST),
    ] {
        let refused = operator(&api, Method::GET, &format!("/v1/jobs?{query}")).await;
        assert_problem(&refused, status);
        assert!(
            !String::from_utf8_lossy(&refused.bytes).contains("sleeping")
                && !String::from_utf8_lossy(&refused.bytes).contains("blue"),
            "a problem never echoes a value: {:?}",
            refused.body
        );
    }
}

#[tokio::test]
async fn a_rewrap_starts_once_runs_as_a_job_and_shows_in_readiness_while_it_runs() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    api.tenant().await;
    api.tenant().await;

    let started = operator(&api, Method::POST, "/v1/keys/rewrap").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let job: JobView = serde_json::from_slice(&started.bytes).expect("job view");
    assert_eq!(job.kind, "rewrap");
    assert_eq!(job.tenant, None);
    assert_eq!(job.state, "queued");
    let again = operator(&api, Method::POST, "/v1/keys/rewrap").await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    let again: JobView = serde_json::from_slice(&again.bytes).expect("job view");
    assert_eq!(again.id, job.id, "one rewrap at a time: the queued one");

    // A node leases it: the operator's readiness view shows it running, the public one
    // says nothing of it.
    let state = &api.node.state;
    {
        let primary = state.database().primary().get().await.expect("primary");
        jobs::lease_next(&primary, &["rewrap"], "node-x", Duration::from_millis(200))
            .await
            .expect("lease")
            .expect("the rewrap");
    }
    api::HealthPolling::default().poll_once(state).await;
    let detailed = operator(&api, Method::GET, "/readyz").await;
    let running = detailed.body["jobs"].as_array().expect("running jobs");
    assert_eq!(running.len(), 1, "{:?}", detailed.body);
    assert_eq!(running[0]["id"], job.id.as_str());
    assert_eq!(running[0]["kind"], "rewrap");
    assert_eq!(running[0]["progress"]["done"], 0);
    let public = api.call(Method::GET, "/readyz", None, None, &[]).await;
    assert!(public.body.get("jobs").is_none(), "{:?}", public.body);

    // node-x dies; this node's runner takes the job over once the lease expires.
    let settings = JobSettings {
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_secs(5),
        ..JobSettings::default()
    };
    let runner = JobRunner::new(
        state.database().clone(),
        vec![Arc::new(RewrapJob::new(
            state.keyring().clone(),
            state.database().clone(),
        ))],
        settings,
        Arc::new(telemetry::NodeMetrics::new("eu-central-1")),
    )
    .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let seen = operator(&api, Method::GET, &format!("/v1/jobs/{}", job.id)).await;
        let view: JobView = serde_json::from_slice(&seen.bytes).expect("job view");
        if view.state == JobState::Done.as_str() {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "{view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    runner.stop().await;
    // Nothing changed behind the local KMS, so each key is found already current.
    assert_eq!(done.progress.done, 4, "2 tenants × (data + index)");
    assert_eq!(done.progress.failed, 0);
    assert_eq!(done.attempts, 2);
    assert!(done.finished_at.is_some());
    api::HealthPolling::default().poll_once(state).await;
    let after = operator(&api, Method::GET, "/readyz").await;
    assert_eq!(after.body["jobs"], serde_json::json!([]));
}
