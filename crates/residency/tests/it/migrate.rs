//! `residency migrate` against a real primary: applies once, is idempotent, refuses a
//! changed migration and another region's database with a clear message.

use devstack::testing::{TestDatabase, connect, shared_region};

use crate::residency;

fn database_url(database: &TestDatabase) -> String {
    // The shared test region's URL with this test's database.
    shared_region().primary_url(&database.name)
}

fn migrate(region: &str, url: &str) -> (bool, String) {
    crate::outcome(residency().args(["migrate", "--region", region, "--database-url", url]))
}

#[tokio::test]
async fn migrate_applies_once_then_refuses_changed_history_and_foreign_regions() {
    let database = TestDatabase::create(None).await;
    let url = database_url(&database);

    let applied = store::embedded_migrations().len();
    let (ok, out) = migrate("eu-central-1", &url);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "eu-central-1: {applied} migration(s) applied (1, "
        )),
        "{out}"
    );
    let (ok, out) = migrate("eu-central-1", &url);
    assert!(
        ok && out.contains("0 migration(s) applied"),
        "idempotent: {out}"
    );

    let (ok, out) = migrate("us-east-1", &url);
    assert!(!ok, "another region's database is refused");
    assert!(
        out.contains("stamped for region eu-central-1, not us-east-1"),
        "{out}"
    );

    // What a node sees when a migration file was edited after it was applied.
    connect(database.primary.clone())
        .await
        .execute(
            "update schema_migrations set checksum = 'edited' where version = 1",
            &[],
        )
        .await
        .expect("tamper with history");
    let (ok, out) = migrate("eu-central-1", &url);
    assert!(!ok, "a changed migration stops the node");
    assert!(
        out.contains("migration 1 (region_stamp) was changed after it was applied"),
        "{out}"
    );
    let password =
        String::from_utf8_lossy(database.primary.get_password().expect("password")).into_owned();
    assert!(!out.contains(&password), "errors never print credentials");
}

#[test]
fn a_malformed_database_url_is_refused_without_echoing_it() {
    let (ok, out) = migrate("eu-central-1", "postgres://user:s3cr3t-pw@[bad");
    assert!(!ok);
    assert!(
        out.contains("--database-url is not a valid PostgreSQL URL"),
        "{out}"
    );
    assert!(!out.contains("s3cr3t-pw"), "{out}");
}
