//! The PostgreSQL tenant directory (`node::PgDirectory`) keeps the contract every
//! `router::Directory` keeps (`router::testing`), as the in-memory one does in the router's
//! own tests.

use node::directory::PgDirectory;
use store::directory::DirectoryDatabase;

#[tokio::test]
async fn the_postgres_directory_keeps_the_directory_contract() {
    let (database, _region) = store::testing::region_database("eu-central-1").await;
    let endpoint = store::testing::settings(&database).primary;
    let directory = PgDirectory::new(DirectoryDatabase::new(&endpoint).expect("directory pool"));
    router::testing::directory_contract(&*directory).await;
}

#[tokio::test]
async fn a_postgres_directory_that_cannot_be_reached_is_unavailable() {
    let (database, _region) = store::testing::region_database("eu-central-1").await;
    let mut config = store::testing::settings(&database).primary.config.clone();
    // A loopback port nobody listens on.
    config.port(devstack::free_loopback_port().expect("a free port"));
    let endpoint = store::PgEndpoint::new("directory", config);
    let down = PgDirectory::new(DirectoryDatabase::new(&endpoint).expect("directory pool"));
    router::testing::unavailable_directory_contract(&*down).await;
}
