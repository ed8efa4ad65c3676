//! The tenant directory's rows: lookup, and upserts that only ever move forward in version.

use model::TenantId;
use store::directory::{self, DirectoryRow};
use store::testing::{region_database, settings};

fn entry(tenant: TenantId, home: &str, version: i64) -> DirectoryRow {
    DirectoryRow {
        tenant,
        home_region: home.to_owned(),
        allowed_regions: vec!["eu-central-1".to_owned(), "eu-west-1".to_owned()],
        transit: "proxy".to_owned(),
        version,
    }
}

#[tokio::test]
async fn directory_entries_only_move_forward_in_version() {
    let (db, database) = region_database("eu-central-1").await;
    let primary = database.primary().get().await.expect("primary");
    let tenant = TenantId::from_random_bytes([3; 16]);
    assert_eq!(
        directory::lookup(primary.client(), &tenant)
            .await
            .expect("lookup"),
        None
    );
    let first = entry(tenant, "eu-central-1", 1);
    assert!(
        directory::upsert(primary.client(), &first)
            .await
            .expect("insert")
    );
    assert_eq!(
        directory::lookup(primary.client(), &tenant)
            .await
            .expect("lookup"),
        Some(first.clone())
    );
    let moved = entry(tenant, "eu-west-1", 2);
    assert!(
        directory::upsert(primary.client(), &moved)
            .await
            .expect("move")
    );
    // A late write of an older version changes nothing.
    assert!(
        !directory::upsert(primary.client(), &first)
            .await
            .expect("stale write")
    );
    assert_eq!(
        directory::lookup(primary.client(), &tenant)
            .await
            .expect("lookup"),
        Some(moved)
    );

    // The directory's own pool (how nodes of every region reach it) sees the same entry.
    let pool = store::directory::DirectoryDatabase::new(&settings(&db).primary).expect("pool");
    let seen = pool.lookup(&tenant).await.expect("lookup").expect("entry");
    assert_eq!(seen.home_region, "eu-west-1");
    let other = TenantId::from_random_bytes([4; 16]);
    assert!(
        pool.upsert(&entry(other, "eu-central-1", 1))
            .await
            .expect("insert")
    );
    assert!(pool.lookup(&other).await.expect("lookup").is_some());
}

#[tokio::test]
async fn the_directory_pool_reports_whether_it_answers_and_where_it_is() {
    let (db, _database) = region_database("eu-central-1").await;
    let endpoint = settings(&db).primary;
    let up = store::directory::DirectoryDatabase::new(&endpoint).expect("pool");
    up.check().await.expect("a reachable directory answers");
    let database = endpoint.config.get_dbname().expect("a database name");
    assert_eq!(up.location(), format!("{}/{database}", endpoint.address()));
    let password = String::from_utf8(endpoint.config.get_password().expect("password").to_vec())
        .expect("utf-8");
    assert!(!up.location().contains(&password), "{}", up.location());

    let mut config = endpoint.config.clone();
    config.port(devstack::free_loopback_port().expect("free port"));
    let down =
        store::directory::DirectoryDatabase::new(&store::PgEndpoint::new("directory", config))
            .expect("pool");
    let err = down.check().await.expect_err("nothing listens there");
    assert!(
        matches!(err, store::StoreError::Unavailable(_)),
        "an unreachable directory is unavailable, not another failure: {err:?}"
    );
    assert!(!err.to_string().contains(&password), "{err}");
}
