//! Durable jobs: leases, heartbeats, checkpoints, expiry and takeover, the operator's
//! listing, on a real primary.

use std::time::Duration;

use model::TenantId;
use store::jobs::{self, JobFilter, JobProgress, JobState};
use store::testing::region_database;

const KINDS: &[&str] = &["rewrap", "reencrypt"];
const LONG: Duration = Duration::from_secs(60);

/// A tenant id of its own (each test has a fresh database).
/// A new region-wide `rewrap` job, leased by `node-a` for [`LONG`].
async fn rewrap_leased_by_node_a(primary: &store::Primary) -> jobs::Job {
    let job = jobs::enqueue(primary, "rewrap", None)
        .await
        .expect("enqueue");
    jobs::lease_next(primary, KINDS, "node-a", LONG)
        .await
        .expect("lease")
        .expect("job");
    job
}

fn tenant(n: u8) -> TenantId {
    TenantId::from_random_bytes([n; 16])
}

#[tokio::test]
async fn a_lease_is_exclusive_until_it_expires_and_only_its_holder_moves_the_job() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.primary().get().await.expect("primary");
    let queued = jobs::enqueue(&primary, "rewrap", None)
        .await
        .expect("enqueue");
    assert_eq!(queued.state, JobState::Queued);
    let twice = jobs::enqueue(&primary, "rewrap", None)
        .await
        .expect_err("one region-wide rewrap at a time");
    assert!(matches!(twice, store::StoreError::Conflict), "{twice:?}");
    assert_eq!(
        jobs::active(&primary, "rewrap", None)
            .await
            .expect("active")
            .map(|job| job.id),
        Some(queued.id)
    );
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.tenant, None);

    let short = Duration::from_millis(700);
    let leased = jobs::lease_next(&primary, KINDS, "node-a", short)
        .await
        .expect("lease")
        .expect("a queued job");
    assert_eq!(leased.id, queued.id);
    assert_eq!(leased.state, JobState::Running);
    assert_eq!(leased.attempts, 1);
    assert_eq!(leased.lease_holder.as_deref(), Some("node-a"));
    assert_eq!(
        jobs::lease_next(&primary, KINDS, "node-b", LONG)
            .await
            .expect("lease"),
        None,
        "a held lease is not leased again"
    );

    let progress = JobProgress {
        done: 10,
        total: 30,
        failed: 1,
    };
    let position = serde_json::json!({"after": "key-10"});
    assert!(
        !jobs::checkpoint(&primary, leased.id, "node-b", short, progress, &position)
            .await
            .expect("checkpoint"),
        "only the holder checkpoints"
    );
    assert!(
        !jobs::heartbeat(&primary, leased.id, "node-b", short)
            .await
            .expect("heartbeat")
    );
    assert!(
        jobs::checkpoint(&primary, leased.id, "node-a", short, progress, &position)
            .await
            .expect("checkpoint")
    );
    let seen = jobs::get(&primary, leased.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(seen.progress, progress);
    assert_eq!(seen.checkpoint, Some(position.clone()));

    // A heartbeat keeps the lease past its first expiry.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        jobs::heartbeat(&primary, leased.id, "node-a", short)
            .await
            .expect("heartbeat")
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        jobs::lease_next(&primary, KINDS, "node-b", LONG)
            .await
            .expect("lease"),
        None,
        "the heartbeat extended the lease"
    );

    // Node A stops heartbeating: its lease expires and node B resumes at the checkpoint.
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    let resumed = jobs::lease_next(&primary, KINDS, "node-b", LONG)
        .await
        .expect("lease")
        .expect("the expired lease is taken over");
    assert_eq!(resumed.id, leased.id);
    assert_eq!(resumed.attempts, 2);
    assert_eq!(resumed.progress, progress);
    assert_eq!(resumed.checkpoint, Some(position));

    // Node A, late, can no longer move the job.
    let late = JobProgress {
        done: 30,
        total: 30,
        failed: 0,
    };
    assert!(
        !jobs::checkpoint(
            &primary,
            leased.id,
            "node-a",
            LONG,
            late,
            &serde_json::json!({})
        )
        .await
        .expect("checkpoint")
    );
    assert!(
        !jobs::finish(&primary, leased.id, "node-a", late)
            .await
            .expect("finish")
    );
    assert!(
        !jobs::fail(&primary, leased.id, "node-a", "late")
            .await
            .expect("fail")
    );
    assert!(
        jobs::finish(&primary, leased.id, "node-b", late)
            .await
            .expect("finish")
    );
    let done = jobs::get(&primary, leased.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.progress, late);
    assert_eq!(done.lease_holder, None);
    assert_eq!(done.lease_expires_at, None);
    assert!(done.finished_at.is_some());
    assert_eq!(
        jobs::lease_next(&primary, KINDS, "node-c", LONG)
            .await
            .expect("lease"),
        None,
        "a finished job is never leased again"
    );
    assert_eq!(
        jobs::active(&primary, "rewrap", None)
            .await
            .expect("active"),
        None
    );
    jobs::enqueue(&primary, "rewrap", None)
        .await
        .expect("a new rewrap once the last one ended");
}

#[tokio::test]
async fn concurrent_leases_take_different_jobs_and_only_kinds_the_node_runs() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.primary().get().await.expect("primary");
    let other_kind = jobs::enqueue(&primary, "purge", Some(&tenant(1)))
        .await
        .expect("enqueue");
    for n in 0..4 {
        jobs::enqueue(&primary, "reencrypt", Some(&tenant(n)))
            .await
            .expect("enqueue");
    }
    let leases = (0..4).map(|n| {
        let db = db.clone();
        async move {
            let primary = db.primary().get().await.expect("primary");
            jobs::lease_next(&primary, KINDS, &format!("node-{n}"), LONG)
                .await
                .expect("lease")
                .expect("a job for every node")
                .id
        }
    });
    let mut taken = futures::future::join_all(leases).await;
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 4, "no job was leased twice");
    assert_eq!(
        jobs::lease_next(&primary, KINDS, "node-x", LONG)
            .await
            .expect("lease"),
        None,
        "a kind the node does not run is left alone"
    );
    let untouched = jobs::get(&primary, other_kind.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(untouched.state, JobState::Queued);
}

#[tokio::test]
async fn failed_batches_are_counted_until_a_checkpoint_and_a_failed_job_keeps_its_error() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.primary().get().await.expect("primary");
    let job = rewrap_leased_by_node_a(&primary).await;
    for expected in 1..=2 {
        assert_eq!(
            jobs::batch_failed(&primary, job.id, "node-a", LONG, "kms unavailable")
                .await
                .expect("record"),
            Some(expected)
        );
    }
    assert_eq!(
        jobs::batch_failed(&primary, job.id, "node-b", LONG, "kms unavailable")
            .await
            .expect("record"),
        None,
        "not the holder"
    );
    jobs::checkpoint(
        &primary,
        job.id,
        "node-a",
        LONG,
        JobProgress::default(),
        &serde_json::json!(null),
    )
    .await
    .expect("checkpoint");
    assert_eq!(
        jobs::batch_failed(&primary, job.id, "node-a", LONG, "kms denied")
            .await
            .expect("record"),
        Some(1),
        "a checkpoint ends the run of failures"
    );
    assert!(
        jobs::fail(&primary, job.id, "node-a", "kms denied")
            .await
            .expect("fail")
    );
    let failed = jobs::get(&primary, job.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("kms denied"));
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.lease_holder, None);

    // Bad kinds are refused by the schema.
    let err = jobs::enqueue(&primary, "Rewrap; drop table jobs", None)
        .await
        .expect_err("bad kind");
    assert!(matches!(err, store::StoreError::Check { .. }), "{err:?}");
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.primary().get().await.expect("primary");
    let job = rewrap_leased_by_node_a(&primary).await;
    assert!(
        jobs::release(&primary, job.id, "node-a")
            .await
            .expect("release")
    );
    let taken = jobs::lease_next(&primary, KINDS, "node-b", LONG)
        .await
        .expect("lease")
        .expect("released job");
    assert_eq!(taken.id, job.id);
    assert_eq!(taken.lease_holder.as_deref(), Some("node-b"));
}

#[tokio::test]
async fn listings_filter_by_kind_state_and_tenant_newest_first_with_a_cursor() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.primary().get().await.expect("primary");
    let (a, b) = (tenant(1), tenant(2));
    let mut ids = Vec::new();
    for (kind, owner) in [
        ("rewrap", None),
        ("reencrypt", Some(&a)),
        ("reencrypt", Some(&b)),
        ("reencrypt", Some(&a)),
        ("purge", Some(&a)),
    ] {
        ids.push(
            jobs::enqueue(&primary, kind, owner)
                .await
                .expect("enqueue")
                .id,
        );
    }
    let running = jobs::lease_next(&primary, &["rewrap"], "node-a", LONG)
        .await
        .expect("lease")
        .expect("rewrap");

    let all = jobs::list(&primary, &JobFilter::default(), 100)
        .await
        .expect("list");
    let listed: Vec<_> = all.iter().map(|job| job.id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    let of_a = JobFilter {
        tenant: Some(&a),
        ..JobFilter::default()
    };
    let page1 = jobs::list(&primary, &of_a, 2).await.expect("page 1");
    assert_eq!(
        page1.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let page2 = jobs::list(
        &primary,
        &JobFilter {
            before: Some(ids[3]),
            ..of_a
        },
        2,
    )
    .await
    .expect("page 2");
    assert_eq!(page2.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[1]]);

    let reencrypt_of_a = JobFilter {
        kind: Some("reencrypt"),
        tenant: Some(&a),
        ..JobFilter::default()
    };
    assert_eq!(
        jobs::list(&primary, &reencrypt_of_a, 10)
            .await
            .expect("list")
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [ids[3], ids[1]]
    );
    let running_only = JobFilter {
        state: Some(JobState::Running),
        ..JobFilter::default()
    };
    assert_eq!(
        jobs::list(&primary, &running_only, 10)
            .await
            .expect("list")
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [running.id]
    );

    let counts = jobs::counts(&primary).await.expect("counts");
    let of = |kind: &str, state: JobState| {
        counts
            .iter()
            .find(|c| c.kind == kind && c.state == state)
            .map_or(0, |c| c.count)
    };
    assert_eq!(of("reencrypt", JobState::Queued), 3);
    assert_eq!(of("rewrap", JobState::Running), 1);
    assert_eq!(of("rewrap", JobState::Queued), 0);
    assert_eq!(of("purge", JobState::Queued), 1);
}
