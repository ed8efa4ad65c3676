//! Integration tests of the database layer on a real primary and streaming replica.

mod directory;
mod export;
mod idempotency;
mod jobs;
mod notifications;
mod object_deletions;
mod pressure;
mod roles;
mod routing;
mod rows;
mod scoped;
mod tenant_tables;
mod tls;

use std::time::Duration;

use devstack::testing::{TestDatabase, connect};
use model::RegionId;
use store::testing::{region_database, settings};
use store::{
    ClusterRole, Migration, MigrationError, PgEndpoint, ProbeFailure, RegionDatabase, ReplicaState,
    StoreError, embedded_migrations, migrate, migrate_with_roles,
};

fn region(id: &str) -> RegionId {
    RegionId::parse(id).expect("valid region id")
}

/// A fresh database, migrated and stamped for `region`, without keeping a
/// `RegionDatabase` (for tests that build theirs with other settings).
async fn migrated(region_id: &str) -> TestDatabase {
    let (database, _db) = region_database(region_id).await;
    database
}

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let database = TestDatabase::create(None).await;
    let mut client = connect(database.primary.clone()).await;
    let all: Vec<u32> = embedded_migrations().iter().map(|m| m.version).collect();

    let first = migrate(&mut client, embedded_migrations())
        .await
        .expect("first run");
    assert_eq!(first.applied, all);
    let second = migrate(&mut client, embedded_migrations())
        .await
        .expect("second run");
    assert!(
        second.applied.is_empty(),
        "nothing left to apply: {second:?}"
    );
    assert_eq!(second.already_applied, all);

    let recorded: i64 = client
        .query_one("select count(*) from schema_migrations", &[])
        .await
        .expect("count history")
        .get(0);
    assert_eq!(recorded, all.len() as i64);
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused_by_name() {
    let database = TestDatabase::create(None).await;
    let mut client = connect(database.primary.clone()).await;
    migrate(&mut client, embedded_migrations())
        .await
        .expect("apply");

    let mut edited: Vec<Migration> = embedded_migrations().to_vec();
    edited[0].sql = "create table something_else (x int);";
    let err = migrate(&mut client, &edited)
        .await
        .expect_err("changed migration");
    assert!(
        matches!(err, MigrationError::Changed { version: 1, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("migration 1 (region_stamp) was changed"),
        "{message}"
    );
    let exists: bool = client
        .query_one("select to_regclass('something_else') is not null", &[])
        .await
        .expect("query")
        .get(0);
    assert!(!exists, "nothing of the edited migration ran");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_release_is_refused() {
    let database = TestDatabase::create(None).await;
    let mut client = connect(database.primary.clone()).await;
    let mut newer: Vec<Migration> = embedded_migrations().to_vec();
    newer.push(Migration {
        version: 9999,
        name: "from_the_future",
        sql: "create table future (x int);",
    });
    migrate(&mut client, &newer)
        .await
        .expect("newer release migrates");

    let err = migrate(&mut client, embedded_migrations())
        .await
        .expect_err("older build");
    assert!(
        matches!(err, MigrationError::Unknown { version: 9999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("from_the_future"), "{err}");
}

/// Roles belong to the whole cluster while the migration lock is per database. Several
/// databases migrating at once, each creating the same new role and granting to it, all
/// succeed. (Without the runner creating the roles first, about one round in ten failed
/// with "role ... does not exist".)
#[tokio::test]
async fn databases_migrating_at_once_all_see_the_roles_they_create() {
    const DATABASES: usize = 6;
    const ROLES: [&str; 10] = [
        "it_shared_role_0",
        "it_shared_role_1",
        "it_shared_role_2",
        "it_shared_role_3",
        "it_shared_role_4",
        "it_shared_role_5",
        "it_shared_role_6",
        "it_shared_role_7",
        "it_shared_role_8",
        "it_shared_role_9",
    ];
    // Migration n creates role n the way the embedded migrations do, then grants to it.
    let migrations: Vec<Migration> = ROLES
        .iter()
        .enumerate()
        .map(|(n, role)| Migration {
            version: u32::try_from(n + 1).expect("small"),
            name: "shared_role",
            sql: format!(
                "do $$ begin
                    if not exists (select from pg_roles where rolname = '{role}') then
                        create role {role} nologin;
                    end if;
                exception when duplicate_object or unique_violation then null;
                end $$;
                do $$ begin
                    execute format('grant usage on schema %I to {role}', current_schema());
                end $$;"
            )
            .leak(),
        })
        .collect();
    let roles: Vec<ClusterRole> = ROLES
        .iter()
        .map(|name| ClusterRole {
            name,
            attributes: "nologin",
        })
        .collect();
    let migrations: &'static [Migration] = migrations.leak();
    let roles: &'static [ClusterRole] = roles.leak();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(DATABASES));
    let mut sessions = tokio::task::JoinSet::new();
    for _ in 0..DATABASES {
        let database = TestDatabase::create(None).await;
        let barrier = barrier.clone();
        sessions.spawn(async move {
            let mut client = connect(database.primary.clone()).await;
            // Round n: every database applies migration n at the same moment.
            for round in 1..=ROLES.len() {
                barrier.wait().await;
                migrate_with_roles(&mut client, &roles[..round], &migrations[..round])
                    .await
                    .unwrap_or_else(|err| panic!("round {round}: {err}"));
            }
            database
        });
    }
    while let Some(session) = sessions.join_next().await {
        session.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    }
}

#[tokio::test]
async fn a_failing_migration_leaves_no_trace() {
    let database = TestDatabase::create(None).await;
    let mut client = connect(database.primary.clone()).await;
    let mut broken: Vec<Migration> = embedded_migrations().to_vec();
    broken.push(Migration {
        version: 500,
        name: "broken",
        sql: "create table half_done (x int); select * from no_such_table;",
    });
    let err = migrate(&mut client, &broken)
        .await
        .expect_err("broken migration");
    assert!(
        matches!(err, MigrationError::Apply { version: 500, .. }),
        "{err:?}"
    );
    let row = client
        .query_one(
            "select to_regclass('half_done') is not null, (select count(*) from schema_migrations where version = 500)",
            &[],
        )
        .await
        .expect("query");
    assert!(
        !row.get::<_, bool>(0),
        "the migration's transaction rolled back"
    );
    assert_eq!(row.get::<_, i64>(1), 0);
}

#[tokio::test]
async fn concurrent_migrators_apply_each_migration_once() {
    let database = TestDatabase::create(None).await;
    let runs = (0..4).map(|_| {
        let config = database.primary.clone();
        tokio::spawn(async move {
            let mut client = connect(config).await;
            migrate(&mut client, embedded_migrations())
                .await
                .expect("migrate")
        })
    });
    let reports = futures::future::join_all(runs).await;
    let applied: usize = reports
        .iter()
        .map(|r| r.as_ref().expect("task").applied.len())
        .sum();
    assert_eq!(
        applied,
        embedded_migrations().len(),
        "each migration applied by exactly one node"
    );
}

#[tokio::test]
async fn a_database_of_another_region_is_refused() {
    let (database, _eu) = region_database("eu-central-1").await;
    let us = RegionDatabase::new(region("us-east-1"), &settings(&database)).expect("pools");
    let err = us
        .prepare(embedded_migrations())
        .await
        .expect_err("wrong region");
    assert!(
        matches!(&err, StoreError::WrongRegion { stamped, configured } if stamped == "eu-central-1" && configured == "us-east-1"),
        "{err:?}"
    );
    let health = us.health(Duration::from_secs(2)).await;
    assert_eq!(health.primary.state, Err(ProbeFailure::WrongRegion));
}

#[tokio::test]
async fn health_reports_primary_and_streaming_replica_with_lag() {
    let (database, db) = region_database("eu-central-1").await;
    connect(database.primary.clone())
        .await
        .batch_execute("create table t (x int); insert into t select generate_series(1, 1000)")
        .await
        .expect("write");
    let health = db.health(Duration::from_secs(2)).await;
    assert!(health.primary_up(), "{health:?}");
    assert_eq!(health.replicas.len(), 1);
    match &health.replicas[0].state {
        ReplicaState::Streaming {
            lag_bytes,
            lag_seconds,
            ..
        } => {
            assert!(
                lag_bytes.is_some(),
                "lag in bytes is known while the primary is up"
            );
            assert!(*lag_seconds >= 0.0);
        }
        other => panic!("replica should be streaming: {other:?}"),
    }
    let port = database.primary.get_ports()[0];
    assert_eq!(
        health.primary.address,
        format!("127.0.0.1:{port}"),
        "addresses carry no credentials"
    );
}

#[tokio::test]
async fn a_dead_replica_and_a_replica_posing_as_primary_are_reported() {
    let database = TestDatabase::create(None).await;
    let mut dead = database.replica.clone();
    dead.port(devstack::free_loopback_port().expect("free port"));
    let settings = store::DatabaseSettings::new(
        // The replica's address configured as the primary: it cannot take writes.
        PgEndpoint::new("primary", database.replica.clone()),
        vec![
            PgEndpoint::new("replica-1", dead),
            PgEndpoint::new("replica-2", database.primary.clone()),
        ],
    );
    let db = RegionDatabase::new(region("eu-central-1"), &settings).expect("pools");
    let health = db.health(Duration::from_secs(2)).await;
    assert_eq!(health.primary.state, Err(ProbeFailure::InRecovery));
    assert_eq!(
        health.replicas[0].state,
        ReplicaState::Down(ProbeFailure::Unreachable)
    );
    assert_eq!(
        health.replicas[1].state,
        ReplicaState::Down(ProbeFailure::NotInRecovery)
    );
}

#[tokio::test]
async fn writes_on_a_replica_map_to_read_only_and_pools_report_usage() {
    let (_database, db) = region_database("eu-central-1").await;
    let replica = db.replicas()[0].get().await.expect("replica connection");
    let err: StoreError = replica
        .execute("insert into residency_region (region_id) values ('x')", &[])
        .await
        .expect_err("replica is read-only")
        .into();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");

    let primary = db.primary().get().await.expect("primary connection");
    let stats = db.pool_stats();
    assert_eq!(stats[0].name, "primary");
    assert_eq!(stats[0].open, 1);
    assert_eq!(stats[0].idle, 0, "the connection is in use");
    drop(primary);
    assert_eq!(db.pool_stats()[0].idle, 1);
}

#[tokio::test]
async fn a_unique_violation_maps_to_conflict() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.as_owner().primary().get().await.expect("primary");
    let err: StoreError = primary
        .execute(
            "insert into residency_region (region_id) values ('eu-central-1')",
            &[],
        )
        .await
        .expect_err("singleton row exists")
        .into();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
}
