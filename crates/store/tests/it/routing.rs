//! Consistency routing on a real primary and replica: bounded reads go to a replica in
//! rotation (observed healthy, within the lag bound, reachable), token reads to a server
//! that has replayed the token (a paused replica sends them to the primary), and nothing
//! is served from a server that cannot honour the read.

use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use model::{Lsn, RegionId};
use serde_json::json;
use store::testing::{region_database, settings};
use store::{
    DatabaseHealth, DatabaseSettings, PrimaryHealth, ProbeFailure, ReadConsistency, RegionDatabase,
    ReplicaHealth, ReplicaState, ServedBy, StoreError,
};

use crate::rows::{TENANT_A, insert_record, tenant, tenant_with_collection};

pub(crate) const REGION: &str = "eu-central-1";

pub(crate) fn region() -> RegionId {
    RegionId::parse(REGION).expect("region")
}

/// A health report of the primary and `replica-1`, as the poller would observe it.
pub(crate) fn report(primary_up: bool, replica: ReplicaState) -> DatabaseHealth {
    DatabaseHealth {
        primary: PrimaryHealth {
            name: "primary".into(),
            address: String::new(),
            state: if primary_up {
                Ok(Lsn(0))
            } else {
                Err(ProbeFailure::Unreachable)
            },
        },
        replicas: vec![ReplicaHealth {
            name: "replica-1".into(),
            address: String::new(),
            state: replica,
        }],
    }
}

pub(crate) fn streaming(lag_bytes: Option<u64>, lag_seconds: f64) -> ReplicaState {
    ReplicaState::Streaming {
        replay_lsn: Lsn(1),
        lag_bytes,
        lag_seconds,
    }
}

/// A `RegionDatabase` on `database` with `tweak` applied to its settings.
pub(crate) fn with_settings(
    database: &TestDatabase,
    tweak: impl FnOnce(&mut DatabaseSettings),
) -> RegionDatabase {
    let mut settings = settings(database);
    tweak(&mut settings);
    RegionDatabase::new(region(), &settings).expect("pools")
}

/// `config` pointed at a loopback port nobody listens on.
pub(crate) fn dead(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut dead = tokio_postgres::Config::new();
    dead.host("127.0.0.1")
        .port(devstack::free_loopback_port().expect("free port"))
        .user(config.get_user().expect("user"))
        .dbname(config.get_dbname().expect("dbname"));
    if let Some(password) = config.get_password() {
        dead.password(password);
    }
    dead
}

pub(crate) async fn served_by(db: &RegionDatabase, consistency: ReadConsistency) -> ServedBy {
    db.reader(consistency).await.expect("reader").served_by()
}

#[tokio::test]
async fn bounded_reads_use_a_replica_only_while_it_is_observed_within_the_bound() {
    let (database, db) = region_database(REGION).await;
    assert_eq!(db.rotation(), [("replica-1".to_owned(), false)]);
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Primary,
        "an unobserved replica's lag is unknown"
    );

    db.observe(&db.health(Duration::from_secs(2)).await);
    assert_eq!(db.rotation(), [("replica-1".to_owned(), true)]);
    let reader = db.reader(ReadConsistency::Bounded).await.expect("reader");
    assert_eq!(reader.served_by(), ServedBy::Replica);
    assert_eq!(reader.served_by().as_str(), "replica");
    drop(reader);

    db.observe(&report(true, streaming(Some(0), 6.0)));
    assert_eq!(
        db.rotation(),
        [("replica-1".to_owned(), false)],
        "too far behind"
    );
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Primary
    );

    db.observe(&report(true, streaming(Some(0), 0.0)));
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Replica
    );
    db.observe(&report(true, ReplicaState::Down(ProbeFailure::Timeout)));
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Primary
    );

    // The lag bound in bytes, when configured.
    let by_bytes = with_settings(&database, |s| s.max_replica_lag_bytes = Some(1024));
    by_bytes.observe(&report(true, streaming(Some(4096), 0.0)));
    assert_eq!(by_bytes.rotation(), [("replica-1".to_owned(), false)]);
    by_bytes.observe(&report(true, streaming(Some(512), 0.0)));
    assert_eq!(by_bytes.rotation(), [("replica-1".to_owned(), true)]);

    // An observation older than the bound proves nothing: a stuck poller must not keep a
    // replica in rotation.
    let quick = with_settings(&database, |s| {
        s.max_replica_lag = Duration::from_millis(200)
    });
    quick.observe(&report(true, streaming(Some(0), 0.0)));
    assert_eq!(quick.rotation(), [("replica-1".to_owned(), true)]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(quick.rotation(), [("replica-1".to_owned(), false)]);
    assert_eq!(
        served_by(&quick, ReadConsistency::Bounded).await,
        ServedBy::Primary
    );
}

#[tokio::test]
async fn an_unreachable_replica_leaves_the_rotation_and_reads_go_to_the_primary() {
    let database = crate::migrated(REGION).await;
    let db = with_settings(&database, |s| {
        s.replicas[0].config = dead(&s.replicas[0].config);
        s.pool_timeout = Duration::from_secs(2);
    });
    // The poller saw it healthy a moment ago; it has just gone away.
    db.observe(&report(true, streaming(Some(0), 0.0)));
    assert_eq!(db.rotation(), [("replica-1".to_owned(), true)]);
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Primary
    );
    assert_eq!(db.rotation(), [("replica-1".to_owned(), false)]);

    db.observe(&report(true, streaming(Some(0), 0.0)));
    assert_eq!(
        served_by(&db, ReadConsistency::AtLeast(Lsn(1))).await,
        ServedBy::Primary
    );
    assert_eq!(db.rotation(), [("replica-1".to_owned(), false)]);
}

#[tokio::test]
async fn without_a_primary_reads_go_on_from_a_replica_and_writes_are_unavailable() {
    let database = crate::migrated(REGION).await;
    let db = with_settings(&database, |s| {
        s.primary.config = dead(&s.primary.config);
        s.token_wait = Duration::from_millis(50);
    });
    let err = db.primary().get().await.expect_err("no primary");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = db
        .reader(ReadConsistency::Bounded)
        .await
        .expect_err("nothing in rotation");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    // The replica was within the bound when last measured against the primary; the age
    // of its last replayed transaction grows while nothing can commit, which does not
    // take it out of rotation.
    db.observe(&report(true, streaming(Some(0), 0.0)));
    let health = db.health(Duration::from_secs(2)).await;
    assert!(!health.primary_up());
    db.observe(&report(false, streaming(None, 600.0)));
    db.observe(&health);
    assert_eq!(db.rotation(), [("replica-1".to_owned(), true)]);
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Replica
    );
    // A token the replica has replayed is served; one it has not cannot be.
    assert_eq!(
        served_by(&db, ReadConsistency::AtLeast(Lsn(1))).await,
        ServedBy::Replica
    );
    let err = db
        .reader(ReadConsistency::AtLeast(Lsn(u64::MAX)))
        .await
        .expect_err("nobody has that");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    // A node that starts during the outage has no judgement to keep: only the age counts.
    let fresh = with_settings(&database, |s| s.primary.config = dead(&s.primary.config));
    fresh.observe(&report(false, streaming(None, 600.0)));
    assert_eq!(fresh.rotation(), [("replica-1".to_owned(), false)]);
    let err = fresh
        .reader(ReadConsistency::Bounded)
        .await
        .expect_err("nothing to serve from");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_token_read_sees_its_write_from_a_replica_that_has_replayed_it() {
    let (database, _) = region_database(REGION).await;
    let db = with_settings(&database, |s| s.token_wait = Duration::from_secs(10));
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;
    db.observe(&db.health(Duration::from_secs(2)).await);

    for n in 0..5 {
        let id = format!("rec-{n}");
        let lsn = insert_record(&db, a, &id, json!({"n": n}), &[]).await;
        let mut reader = db
            .reader(ReadConsistency::AtLeast(lsn))
            .await
            .expect("reader");
        assert_eq!(
            reader.served_by(),
            ServedBy::Replica,
            "the replica catches up"
        );
        let tx = reader.begin_tenant(&a).await.expect("begin");
        let row = store::records::get(tx.client(), &a, "people", &id)
            .await
            .expect("get");
        assert!(row.is_some(), "read-your-writes on the replica");
        tx.finish().await.expect("finish");
    }
}

#[tokio::test]
async fn a_token_read_goes_to_the_primary_while_replay_is_paused() {
    let (database, db) = region_database(REGION).await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;
    db.observe(&db.health(Duration::from_secs(2)).await);
    let replica_admin = connect(database.replica.clone()).await;

    // The replica is shared with other tests: pause replay only for the few hundred
    // milliseconds this takes, and resume before asserting anything.
    replica_admin
        .execute("select pg_wal_replay_pause()", &[])
        .await
        .expect("pause replay");
    let outcome = async {
        let lsn = insert_record(&db, a, "rec-1", json!({}), &[]).await;
        let started = Instant::now();
        let mut reader = db.reader(ReadConsistency::AtLeast(lsn)).await?;
        let waited = started.elapsed();
        let served_by = reader.served_by();
        let tx = reader.begin_tenant(&a).await?;
        let seen = store::records::get(tx.client(), &a, "people", "rec-1")
            .await?
            .is_some();
        Ok::<_, StoreError>((served_by, seen, waited))
    }
    .await;
    replica_admin
        .execute("select pg_wal_replay_resume()", &[])
        .await
        .expect("resume replay");

    let (served_by, seen, waited) = outcome.expect("token read");
    assert_eq!(
        served_by,
        ServedBy::Primary,
        "the paused replica cannot serve it"
    );
    assert!(seen, "the primary has the write");
    assert!(
        waited >= Duration::from_millis(200),
        "waited for the replica first: {waited:?}"
    );
}
