//! Test support for crates above `store`: a fresh, migrated database per test on the
//! test binary's shared devstack region (primary + streaming replica).

use devstack::testing::{TestDatabase, connect, shared_region};
use model::RegionId;
use tokio::sync::OnceCell;

use crate::{DatabaseSettings, PgEndpoint, RegionDatabase, embedded_migrations, migrate};

/// The migrated template every test database is cloned from (migrations run once per
/// test binary, cloning takes milliseconds).
const TEMPLATE: &str = "residency_template";
static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();

async fn ensure_template() {
    TEMPLATE_READY
        .get_or_init(|| async {
            let region = shared_region();
            let admin = connect(region.primary_config("postgres")).await;
            admin
                .execute(&format!("create database {TEMPLATE}"), &[])
                .await
                .unwrap_or_else(|err| panic!("create template database: {err}"));
            let mut client = connect(region.primary_config(TEMPLATE)).await;
            migrate(&mut client, embedded_migrations())
                .await
                .unwrap_or_else(|err| panic!("migrate template database: {err}"));
        })
        .await;
}

/// A migrated database of this test's own (not yet stamped with a region).
pub async fn migrated_database() -> TestDatabase {
    ensure_template().await;
    TestDatabase::create(Some(TEMPLATE)).await
}

/// Settings for a `RegionDatabase` on `database`: the shared region's primary and replica
/// as the node's login role (`residency_node`), and the superuser as the schema owner
/// that `prepare` migrates with, as a deployment separates them.
pub fn settings(database: &TestDatabase) -> DatabaseSettings {
    DatabaseSettings::new(
        PgEndpoint::new("primary", database.node_primary.clone()),
        vec![PgEndpoint::new("replica-1", database.node_replica.clone())],
    )
    .with_owner(PgEndpoint::new("owner", database.primary.clone()))
}

/// A prepared (migrated and stamped) `RegionDatabase` for `region` on a fresh database.
pub async fn region_database(region: &str) -> (TestDatabase, RegionDatabase) {
    let database = migrated_database().await;
    let region = RegionId::parse(region).unwrap_or_else(|err| panic!("{err}"));
    let db =
        RegionDatabase::new(region, &settings(&database)).unwrap_or_else(|err| panic!("{err}"));
    db.prepare(embedded_migrations())
        .await
        .unwrap_or_else(|err| panic!("prepare database: {err}"));
    (database, db)
}
