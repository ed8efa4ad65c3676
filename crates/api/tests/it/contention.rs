//! One tenant's stuck writes against the region's shared resources: a lock held on its
//! chain head makes its writes answer 503 with `Retry-After` within the session's lock
//! bound (never a hang, never a 500), while another tenant's writes go on undisturbed,
//! because one tenant's writers hold at most its share of the pooled connections.

use std::time::{Duration, Instant};

use devstack::testing::connect;
use http::StatusCode;
use model::RegionId;
use store::testing::{migrated_database, settings};
use store::{RegionDatabase, SessionTimeouts, embedded_migrations};

use crate::node;
use crate::tenant_api::{person, serve_node};

const LOCK_BOUND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_tenant_whose_chain_is_locked_gets_503_within_the_bound_while_another_writes() {
    let database = migrated_database().await;
    let mut settings = settings(&database);
    settings.session_timeouts = SessionTimeouts {
        lock: LOCK_BOUND,
        ..SessionTimeouts::APPLICATION
    };
    let region = RegionId::parse("eu-central-1").expect("region");
    let db = RegionDatabase::new(region, &settings).expect("pools");
    db.prepare(embedded_migrations()).await.expect("prepare");
    let api = std::sync::Arc::new(serve_node(node(db)).await);

    let (stuck, stuck_admin) = api.tenant().await;
    api.people(&stuck, &stuck_admin).await;
    let stuck_writer = api.key(&stuck, &stuck_admin, "writer").await;
    let (other, other_admin) = api.tenant().await;
    api.people(&other, &other_admin).await;
    let other_writer = api.key(&other, &other_admin, "writer").await;

    // Someone holds the stuck tenant's chain head (a long transaction, a stuck writer).
    let mut holder = connect(database.primary.clone()).await;
    let holding = holder.transaction().await.expect("begin");
    holding
        .execute(
            "select 1 from audit_heads where tenant_id = $1 for update",
            &[&stuck],
        )
        .await
        .expect("lock the head");

    // More writers of the stuck tenant than the pool has connections.
    let mut stuck_writes = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (api, stuck, writer) = (api.clone(), stuck.clone(), stuck_writer.clone());
        stuck_writes.spawn(async move {
            let started = Instant::now();
            let answer = api
                .create_person(&stuck, &writer, person(&format!("s{n}@example.com")))
                .await;
            (answer, started.elapsed())
        });
    }
    // Meanwhile the other tenant writes as usual.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..10 {
        let started = Instant::now();
        let created = api
            .create_person(&other, &other_writer, person(&format!("o{n}@example.com")))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert!(
            started.elapsed() < LOCK_BOUND,
            "another tenant's write waited {:?}",
            started.elapsed()
        );
    }
    while let Some(done) = stuck_writes.join_next().await {
        let (answer, took) = done.expect("a writer");
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{:?}",
            answer.body
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            answer.header("retry-after").is_some(),
            "{:?}",
            answer.headers
        );
        // Its lock wait, after at most one wait for a slot and another lock wait.
        assert!(
            took < LOCK_BOUND * 2 + Duration::from_secs(3),
            "took {took:?}"
        );
    }

    // Nothing of the refused writes stayed; once the lock is gone, the tenant writes.
    holding.rollback().await.expect("release");
    let stored: i64 = holder
        .query_one(
            "select count(*) from records where tenant_id = $1",
            &[&stuck],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0);
    let created = api
        .create_person(&stuck, &stuck_writer, person("after@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}
