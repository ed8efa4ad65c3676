//! The committed bad catalogues under `tests/fixtures/` fail naming the file and field that
//! other tests (`residency dev --catalog`) rely on.

use catalog::CatalogError;

use crate::{assert_names, fixture_dir, load_err};

#[test]
fn bad_replica_fixture_names_file_and_field() {
    let dir = fixture_dir("regions-bad-replica");
    let err = load_err(&dir);
    assert!(matches!(err, CatalogError::Invalid { .. }), "{err:?}");
    let message = assert_names(&err, &dir, "eu-west-1.toml", "database.replicas[0].region");
    assert!(
        message.ends_with("replica is in us-east-1, outside region eu-west-1"),
        "{message}"
    );
}

#[test]
fn unknown_key_fixture_names_file_and_field() {
    let dir = fixture_dir("regions-unknown-key");
    let err = load_err(&dir);
    assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
    let message = assert_names(&err, &dir, "eu-central-1.toml", "storage.data_bukcet");
    assert!(message.contains("unknown field `data_bukcet`"), "{message}");
}
