//! A node told to stop under load, behind a simulated load balancer that keeps routing to
//! it until its health check has seen `/readyz` fail (and a propagation delay after): the
//! node answers `503 draining` at once and serves on for its deregistration delay, so no
//! client request fails; its audit queue is written before it exits, so every read it
//! answered has its `record.read` event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use envelope::kms::local::LocalKms;
use model::RegionId;
use node::{ApiSettings, ShutdownSettings};
use reqwest::Method;
use serde_json::json;

use crate::jobs::{call, start_with_api, tenant_with_record};

/// How long the stopping node serves on after `/readyz` fails.
const DEREGISTRATION_DELAY: Duration = Duration::from_secs(3);
/// How long the load balancer keeps routing to a node after its health check failed
/// (inside the delay, as a real one's deregistration is).
const PROPAGATION: Duration = Duration::from_millis(1500);
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);
const CLIENTS: usize = 6;

/// Two targets; requests go to the first while it is in rotation, else to the second.
struct LoadBalancer {
    leaving: String,
    staying: String,
    leaving_in_rotation: AtomicBool,
}

impl LoadBalancer {
    fn target(&self) -> &str {
        if self.leaving_in_rotation.load(Ordering::Acquire) {
            &self.leaving
        } else {
            &self.staying
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    reads: AtomicU64,
    writes: AtomicU64,
    /// Requests that failed: anything but the expected status, or no answer at all.
    failures: std::sync::Mutex<Vec<String>>,
}

#[tokio::test]
async fn a_node_stopping_under_load_fails_no_request_and_writes_every_read_event() {
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let database = TestDatabase::create(None).await;
    let kms = Arc::new(LocalKms::open_or_create(&dir.path().join("kms"), id.clone()).expect("kms"));
    let stopping_slowly = ApiSettings {
        shutdown: ShutdownSettings {
            deregistration_delay: DEREGISTRATION_DELAY,
            drain_timeout: Duration::from_secs(10),
        },
        ..ApiSettings::default()
    };
    let leaving = start_with_api(&id, &database, kms.clone(), dir.path(), stopping_slowly).await;
    let staying = start_with_api(&id, &database, kms, dir.path(), ApiSettings::default()).await;
    let lb = Arc::new(LoadBalancer {
        leaving: format!("http://{}", leaving.address),
        staying: format!("http://{}", staying.address),
        leaving_in_rotation: AtomicBool::new(true),
    });
    let (tenant, admin, record) =
        tenant_with_record(&lb.leaving, "Staying up", "ada@example.com").await;
    let record_path = format!("/v1/tenants/{tenant}/collections/people/records/{record}");
    let create_path = format!("/v1/tenants/{tenant}/collections/people/records");

    // The record has reached the replica both nodes read from (reads without a
    // consistency token may be served by it).
    let mut setup_reads = 0u64;
    for target in [&lb.leaving, &lb.staying] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) =
                call(Method::GET, &format!("{target}{record_path}"), &admin, None).await;
            if status == 200 {
                setup_reads += 1;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the record is not readable: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The clients: reads and writes through the load balancer until told to stop.
    let outcomes = Arc::new(Outcomes::default());
    let done = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (lb, outcomes, done, http) =
                (lb.clone(), outcomes.clone(), done.clone(), http.clone());
            let (record_path, create_path, admin) =
                (record_path.clone(), create_path.clone(), admin.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !done.load(Ordering::Acquire) {
                    n += 1;
                    let write = n.is_multiple_of(4);
                    let request = if write {
                        http.request(Method::POST, format!("{}{create_path}", lb.target()))
                            .json(&json!({"data": {"email": format!("c{client}-{n}@example.com")}}))
                    } else {
                        http.request(Method::GET, format!("{}{record_path}", lb.target()))
                    };
                    let expected = if write { 201 } else { 200 };
                    match request.bearer_auth(&admin).send().await {
                        Ok(response) if response.status().as_u16() == expected => {
                            let _ = response.bytes().await;
                            let count = if write {
                                &outcomes.writes
                            } else {
                                &outcomes.reads
                            };
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            outcomes
                                .failures
                                .lock()
                                .expect("lock")
                                .push(format!("{status} (write: {write}): {body}"));
                        }
                        Err(err) => outcomes
                            .failures
                            .lock()
                            .expect("lock")
                            .push(format!("{err:#}")),
                    }
                }
            })
        })
        .collect();

    // The load balancer's health check of the leaving node: once `/readyz` fails, the
    // node leaves rotation after the propagation delay.
    let checker = {
        let (lb, http) = (lb.clone(), http.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(response) = http.get(format!("{}/readyz", lb.leaving)).send().await
                    && response.status().as_u16() == 503
                {
                    let readiness: serde_json::Value =
                        response.json().await.expect("readiness json");
                    let seen = Instant::now();
                    tokio::time::sleep(PROPAGATION).await;
                    lb.leaving_in_rotation.store(false, Ordering::Release);
                    return (seen, readiness);
                }
                tokio::time::sleep(HEALTH_INTERVAL).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reads_before_stop = outcomes.reads.load(Ordering::Relaxed);
    assert!(reads_before_stop > 0, "the clients read before the stop");
    let told = Instant::now();
    let stopping = tokio::spawn(leaving.stop());
    let (seen, readiness) = tokio::time::timeout(Duration::from_secs(5), checker)
        .await
        .expect("/readyz fails soon after the node is told to stop")
        .expect("join the health check");
    assert!(
        seen.duration_since(told) < Duration::from_secs(1),
        "readiness failed {:?} after the stop began",
        seen.duration_since(told)
    );
    assert_eq!(readiness["reason"], "draining", "{readiness}");
    stopping
        .await
        .expect("join the stop")
        .expect("the node stops cleanly");
    assert!(
        told.elapsed() >= DEREGISTRATION_DELAY,
        "the node stopped {:?} after being told, before its deregistration delay",
        told.elapsed()
    );
    // Load on the staying node for a moment, then the clients stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Release);
    for client in clients {
        client.await.expect("join a client");
    }
    let failures = outcomes.failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let reads = outcomes.reads.load(Ordering::Relaxed);
    assert!(
        reads > reads_before_stop,
        "the clients read during the stop"
    );
    assert!(outcomes.writes.load(Ordering::Relaxed) > 0);

    // Every answered read has its event, once both nodes have written their queues.
    staying.stop().await.expect("stop the other node");
    let client = connect(database.primary.clone()).await;
    let events: i64 = client
        .query_one(
            "select count(*) from audit_events
              where tenant_id = $1 and action = 'record.read' and resource = $2
                and outcome = 'success'",
            &[&tenant, &format!("collections/people/records/{record}")],
        )
        .await
        .expect("count read events")
        .get(0);
    assert_eq!(
        u64::try_from(events).expect("a count"),
        reads + setup_reads,
        "every answered read has its audit event, none more"
    );
}
