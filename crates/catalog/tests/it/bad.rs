//! One bad edit of a good catalogue at a time: each is refused with an error that names the
//! file and the field.

use catalog::{Catalog, CatalogError};

use crate::{assert_names, edit, good_copy, load_err};

#[test]
fn unknown_key_is_named() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        "data_bucket =",
        "data_bukcet =",
    );
    let err = load_err(dir.path());
    assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
    assert_names(&err, dir.path(), "eu-west-1.toml", "storage.data_bukcet");
}

#[test]
fn unknown_key_in_a_replica_is_named_with_its_index() {
    let dir = good_copy();
    edit(
        dir.path(),
        "us-east-1.toml",
        "host = \"residency-us-east-1-replica-1",
        "hots = \"residency-us-east-1-replica-1",
    );
    let err = load_err(dir.path());
    assert_names(
        &err,
        dir.path(),
        "us-east-1.toml",
        "database.replicas[0].hots",
    );
}

#[test]
fn unknown_top_level_key_is_named() {
    let dir = good_copy();
    edit(
        dir.path(),
        "us-east-1.toml",
        "jurisdiction =",
        "regoin = \"x\"\njurisdiction =",
    );
    let err = load_err(dir.path());
    assert_names(&err, dir.path(), "us-east-1.toml", "regoin");
}

#[test]
fn duplicate_ids_name_both_files() {
    let dir = good_copy();
    std::fs::copy(
        dir.path().join("eu-west-1.toml"),
        dir.path().join("eu-west-1-copy.toml"),
    )
    .expect("copy region file");
    let err = load_err(dir.path());
    let CatalogError::Duplicate { id, first, second } = &err else {
        panic!("expected a duplicate, got {err:?}");
    };
    // `eu-west-1-copy.toml` sorts before `eu-west-1.toml`.
    assert_eq!(id.as_str(), "eu-west-1");
    assert_eq!(first, &dir.path().join("eu-west-1-copy.toml"));
    assert_eq!(second, &dir.path().join("eu-west-1.toml"));
    assert_eq!(err.field(), Some("id"));
    let message = err.to_string();
    assert!(message.contains(&*first.to_string_lossy()), "{message}");
    assert!(message.contains(&*second.to_string_lossy()), "{message}");
}

#[test]
fn plain_http_public_endpoint_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        "public = \"https://",
        "public = \"http://",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-west-1.toml", "endpoints.public");
    assert!(message.contains("https"), "{message}");
}

#[test]
fn public_endpoint_that_is_not_a_url_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        "public = \"https://eu-west-1.api",
        "public = \"eu-west-1.api",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-west-1.toml", "endpoints.public");
    assert!(message.contains("not a valid URL"), "{message}");
}

#[test]
fn public_endpoint_with_credentials_is_refused_without_echoing_them() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        "public = \"https://",
        "public = \"https://ops:hunter2@",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-west-1.toml", "endpoints.public");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn replica_in_another_region_is_refused() {
    let dir = good_copy();
    let text = std::fs::read_to_string(dir.path().join("eu-west-1.toml")).expect("read file");
    let replicas = text.find("[[database.replicas]]").expect("replica table");
    let (head, tail) = text.split_at(replicas);
    let tail = tail.replacen("region = \"eu-west-1\"", "region = \"us-east-1\"", 1);
    std::fs::write(dir.path().join("eu-west-1.toml"), format!("{head}{tail}")).expect("write");
    let err = load_err(dir.path());
    let message = assert_names(
        &err,
        dir.path(),
        "eu-west-1.toml",
        "database.replicas[0].region",
    );
    assert!(
        message.ends_with("replica is in us-east-1, outside region eu-west-1"),
        "{message}"
    );
}

#[test]
fn rds_host_in_another_region_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        ".eu-west-1.rds.amazonaws.com",
        ".us-east-1.rds.amazonaws.com",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-west-1.toml", "database.primary.host");
    assert!(
        message.contains("us-east-1, outside region eu-west-1"),
        "{message}"
    );
}

#[test]
fn file_name_must_match_id() {
    let dir = good_copy();
    std::fs::rename(
        dir.path().join("eu-west-1.toml"),
        dir.path().join("eu-west-3.toml"),
    )
    .expect("rename region file");
    let err = load_err(dir.path());
    assert!(matches!(err, CatalogError::Invalid { .. }), "{err:?}");
    let message = assert_names(&err, dir.path(), "eu-west-3.toml", "id");
    assert!(message.contains("eu-west-1"), "{message}");
}

#[test]
fn unknown_jurisdiction_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-central-1.toml",
        "jurisdiction = \"EU\"",
        "jurisdiction = \"XX\"",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-central-1.toml", "jurisdiction");
    assert!(message.contains("unknown jurisdiction `XX`"), "{message}");
}

#[test]
fn inline_password_is_refused_without_echoing_it() {
    const SECRET: &str = "correct-horse-battery-staple";
    let dir = good_copy();
    edit(
        dir.path(),
        "us-east-1.toml",
        "password = { env = \"RESIDENCY_DB_PASSWORD\" }",
        &format!("password = \"{SECRET}\""),
    );
    let err = load_err(dir.path());
    let message = assert_names(
        &err,
        dir.path(),
        "us-east-1.toml",
        "database.primary.password",
    );
    assert!(message.contains("by reference"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
    assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
}

#[test]
fn missing_key_is_named() {
    let dir = good_copy();
    edit(
        dir.path(),
        "ap-southeast-1.toml",
        "audit_bucket = \"residency-ap-southeast-1-audit\"\n",
        "",
    );
    let err = load_err(dir.path());
    assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
    let message = assert_names(
        &err,
        dir.path(),
        "ap-southeast-1.toml",
        "storage.audit_bucket",
    );
    assert!(
        message.contains("missing field `audit_bucket`"),
        "{message}"
    );
}

#[test]
fn missing_table_is_named() {
    let dir = good_copy();
    edit(
        dir.path(),
        "ap-southeast-1.toml",
        "[kms]\nkey = \"alias/residency-ap-southeast-1\"\n",
        "",
    );
    let err = load_err(dir.path());
    assert_names(&err, dir.path(), "ap-southeast-1.toml", "kms");
}

#[test]
fn wrong_type_is_named() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-central-1.toml",
        "port = 5432",
        "port = \"5432\"",
    );
    let err = load_err(dir.path());
    assert_names(
        &err,
        dir.path(),
        "eu-central-1.toml",
        "database.primary.port",
    );
}

#[test]
fn bad_bucket_name_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-central-1.toml",
        "\"residency-eu-central-1-data\"",
        "\"Residency_EU_Data\"",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-central-1.toml", "storage.data_bucket");
    assert!(message.contains("Residency_EU_Data"), "{message}");
}

#[test]
fn bucket_shared_between_regions_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "us-east-1.toml",
        "\"residency-us-east-1-audit\"",
        "\"residency-eu-west-1-audit\"",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "us-east-1.toml", "storage.audit_bucket");
    assert!(message.contains("region eu-west-1"), "{message}");
}

#[test]
fn overlapping_analytics_prefixes_are_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "us-east-1.toml",
        "prefix = \"us-east-1/\"",
        "prefix = \"\"",
    );
    let err = load_err(dir.path());
    // ap-southeast-1 sorts first, so us-east-1's empty prefix is the one found overlapping.
    let message = assert_names(&err, dir.path(), "us-east-1.toml", "analytics.prefix");
    assert!(message.contains("overlaps"), "{message}");
}

#[test]
fn kms_arn_from_another_region_is_refused() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        "key = \"alias/residency-eu-west-1\"",
        "key = \"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\"",
    );
    let err = load_err(dir.path());
    let message = assert_names(&err, dir.path(), "eu-west-1.toml", "kms.key");
    assert!(
        message.contains("us-east-1, outside region eu-west-1"),
        "{message}"
    );
}

#[test]
fn kms_arn_of_the_region_is_accepted() {
    let dir = good_copy();
    edit(
        dir.path(),
        "eu-west-1.toml",
        "key = \"alias/residency-eu-west-1\"",
        "key = \"arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\"",
    );
    Catalog::load_dir(dir.path()).expect("an ARN in the region is fine");
}

#[test]
fn toml_syntax_error_names_the_position() {
    let dir = good_copy();
    let text = std::fs::read_to_string(dir.path().join("eu-west-1.toml")).expect("read file");
    let line = 1 + text
        .lines()
        .position(|line| line.starts_with("port = 5432"))
        .expect("a port line");
    edit(dir.path(), "eu-west-1.toml", "port = 5432", "port = ");
    let err = load_err(dir.path());
    assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
    let field = err.field().expect("a position");
    assert!(field.starts_with(&format!("line {line}, column ")), "{err}");
    assert_eq!(
        err.file(),
        Some(dir.path().join("eu-west-1.toml").as_path())
    );
}

#[test]
fn empty_directory_is_refused() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let err = load_err(dir.path());
    assert!(matches!(err, CatalogError::Empty { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", dir.path().display())),
        "{err}"
    );

    std::fs::write(dir.path().join("README.md"), "no regions here").expect("write readme");
    assert!(matches!(load_err(dir.path()), CatalogError::Empty { .. }));
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let missing = dir.path().join("absent");
    let err = load_err(&missing);
    assert!(matches!(err, CatalogError::Io { .. }), "{err:?}");
    assert_eq!(err.file(), Some(missing.as_path()));
    assert_eq!(err.to_string(), format!("read {}", missing.display()));
}

#[test]
fn behind_load_balancer_must_be_a_boolean() {
    let dir = good_copy();
    edit(
        dir.path(),
        "us-east-1.toml",
        "behind_load_balancer = true",
        "behind_load_balancer = \"yes\"",
    );
    let err = load_err(dir.path());
    assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
    assert_names(
        &err,
        dir.path(),
        "us-east-1.toml",
        "endpoints.behind_load_balancer",
    );
}
