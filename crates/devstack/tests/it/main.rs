//! Integration tests of the local PostgreSQL stack: real primaries and streaming replicas;
//! and of the moto harness (`moto`).

mod moto;

use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect, processes_mentioning, shared_region};
use devstack::{Durability, LocalRegion, LocalRegionOptions, PgBinaries};

fn binaries() -> PgBinaries {
    PgBinaries::locate().unwrap_or_else(|err| panic!("{err}"))
}

async fn in_recovery(config: tokio_postgres::Config) -> bool {
    let client = connect(config).await;
    client
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .expect("query recovery state")
        .get(0)
}

#[tokio::test]
async fn the_replica_is_a_streaming_standby_of_the_primary() {
    let region = shared_region();
    assert!(
        !in_recovery(region.primary_config("postgres")).await,
        "primary must not be in recovery"
    );
    assert!(
        in_recovery(region.replica_config("postgres")).await,
        "replica must be in recovery"
    );

    let primary = connect(region.primary_config("postgres")).await;
    let row = primary
        .query_one(
            "select count(*) from pg_stat_replication where state = 'streaming' and application_name = 'replica_1'",
            &[],
        )
        .await
        .expect("query replication state");
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "the primary streams to exactly one replica"
    );
}

#[tokio::test]
async fn a_row_written_on_the_primary_appears_on_the_replica() {
    let database = TestDatabase::create(None).await;
    let primary = connect(database.primary.clone()).await;
    primary
        .batch_execute("create table probe (id int primary key, note text); insert into probe values (1, 'hello')")
        .await
        .expect("write on primary");

    let replica = connect(database.replica.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(row) = replica
            .query_one("select note from probe where id = 1", &[])
            .await
        {
            assert_eq!(row.get::<_, String>(0), "hello");
            break;
        }
        assert!(Instant::now() < deadline, "row never replicated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_fails_with(
        &replica,
        "insert into probe values (2, 'nope')",
        &tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION,
        "the replica is read-only",
    )
    .await;
}

#[tokio::test]
async fn each_test_database_is_separate() {
    let a = TestDatabase::create(None).await;
    let b = TestDatabase::create(None).await;
    assert_ne!(a.name, b.name);
    connect(a.primary.clone())
        .await
        .batch_execute("create table only_in_a (x int)")
        .await
        .expect("create");
    assert_fails_with(
        &connect(b.primary.clone()).await,
        "select * from only_in_a",
        &tokio_postgres::error::SqlState::UNDEFINED_TABLE,
        "b must not see a's table",
    )
    .await;
}

#[tokio::test]
async fn stopping_a_region_leaves_no_postgres_process_and_no_files() {
    let options = LocalRegionOptions::ephemeral("stop-test");
    let region = LocalRegion::start(&binaries(), options)
        .await
        .expect("start region");
    let dirs = [region.primary().data_dir(), region.replica().data_dir()];
    for dir in &dirs {
        assert!(
            !processes_mentioning(dir).is_empty(),
            "postgres should run on {}",
            dir.display()
        );
    }
    region.stop().await.expect("stop region");
    for dir in &dirs {
        assert_eq!(
            processes_mentioning(dir),
            Vec::<u32>::new(),
            "processes left on {}",
            dir.display()
        );
    }
    // Ephemeral clusters are deleted by their guardians once PostgreSQL has stopped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dir in &dirs {
        assert!(!dir.exists(), "{} should be removed", dir.display());
    }
}

#[tokio::test]
async fn dropping_a_region_without_stop_still_stops_postgres() {
    let options = LocalRegionOptions::ephemeral("drop-test");
    let region = LocalRegion::start(&binaries(), options)
        .await
        .expect("start region");
    let dirs = [region.primary().data_dir(), region.replica().data_dir()];
    drop(region);
    for dir in &dirs {
        assert_eq!(
            processes_mentioning(dir),
            Vec::<u32>::new(),
            "processes left on {}",
            dir.display()
        );
    }
}

#[tokio::test]
async fn a_durable_region_keeps_its_data_across_restarts() {
    let state = tempfile::tempdir().expect("temp dir");
    let root = state.path().join("eu-central-1");
    let options = || LocalRegionOptions {
        name: "eu-central-1".into(),
        durability: Durability::Durable { root: root.clone() },
        server_tls: None,
    };
    let region = LocalRegion::start(&binaries(), options())
        .await
        .expect("first start");
    let primary_port = region.primary().port();
    connect(region.primary_config("postgres"))
        .await
        .batch_execute("create table kept (v text); insert into kept values ('survives')")
        .await
        .expect("write");
    region.stop().await.expect("stop");
    assert!(
        root.join("postgres/primary/data/PG_VERSION").is_file(),
        "data stays on disk"
    );

    let region = LocalRegion::start(&binaries(), options())
        .await
        .expect("second start");
    assert_eq!(
        region.primary().port(),
        primary_port,
        "a free saved port is reused"
    );
    // The replica is asynchronous: it may have stopped before receiving the last write and
    // replays it only after the restart, so give it a moment.
    let replica = connect(region.replica_config("postgres")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        match replica.query_one("select v from kept", &[]).await {
            Ok(row) => break row,
            Err(err) if Instant::now() >= deadline => {
                panic!("row is on the replica after restart: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(row.get::<_, String>(0), "survives");
    region.stop().await.expect("stop again");
}

/// Runs `statement`, which must fail with `state` (`why` it must).
async fn assert_fails_with(
    client: &tokio_postgres::Client,
    statement: &str,
    state: &tokio_postgres::error::SqlState,
    why: &str,
) {
    let err = client.execute(statement, &[]).await.expect_err(why);
    assert_eq!(err.code(), Some(state), "{why}: {err}");
}
