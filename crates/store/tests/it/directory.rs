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
