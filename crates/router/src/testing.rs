//! The directory contract: what every [`Directory`] backend must do, written once and run
//! against each (the in-memory one in this crate's tests, PostgreSQL where the node
//! composes it). Test support only (the `testing` feature); it panics on a broken contract.
//!
//! Every check uses tenants of its own, fresh random ids, so the suite runs on a shared
//! database next to other tests.

use model::{RegionId, TenantId, Transit};

use crate::{Directory, DirectoryEntry, DirectoryError};

/// Runs every check of the contract against a reachable, writable `directory`.
pub async fn directory_contract(directory: &dyn Directory) {
    an_unknown_tenant_has_no_entry(directory).await;
    an_entry_reads_back_as_written(directory).await;
    a_higher_version_replaces_and_a_lower_one_is_ignored(directory).await;
    tenants_are_independent(directory).await;
    a_reachable_directory_answers_its_check_and_says_where_it_is(directory).await;
}

/// The contract of a directory whose backend cannot be reached: every call answers
/// [`DirectoryError::Unavailable`] (so a cached entry may still be served), and it still
/// says where it is.
pub async fn unavailable_directory_contract(directory: &dyn Directory) {
    let tenant = fresh_tenant();
    let lookup = directory.lookup(&tenant).await;
    assert!(
        matches!(lookup, Err(DirectoryError::Unavailable(_))),
        "a lookup of an unreachable directory is unavailable: {lookup:?}"
    );
    let upsert = directory.upsert(&entry(tenant, "eu-central-1", 1)).await;
    assert!(
        matches!(upsert, Err(DirectoryError::Unavailable(_))),
        "an upsert to an unreachable directory is unavailable: {upsert:?}"
    );
    let check = directory.check().await;
    assert!(
        matches!(check, Err(DirectoryError::Unavailable(_))),
        "the check of an unreachable directory is unavailable: {check:?}"
    );
    assert_location(directory);
}

pub async fn an_unknown_tenant_has_no_entry(directory: &dyn Directory) {
    assert_eq!(
        directory.lookup(&fresh_tenant()).await.expect("lookup"),
        None
    );
}

/// Every field survives the round trip: several allowed regions in their order, and
/// both transit modes.
pub async fn an_entry_reads_back_as_written(directory: &dyn Directory) {
    for transit in [Transit::Proxy, Transit::Redirect] {
        let written = DirectoryEntry {
            allowed: vec![region("eu-west-1"), region("eu-central-1")],
            transit,
            ..entry(fresh_tenant(), "eu-west-1", 1)
        };
        directory.upsert(&written).await.expect("upsert");
        assert_eq!(
            directory.lookup(&written.tenant).await.expect("lookup"),
            Some(written.clone())
        );
    }
}

/// A late writer never undoes a relocation: an entry older than the stored one changes
/// nothing, a newer one replaces it. (Equal versions are left to the backend.)
pub async fn a_higher_version_replaces_and_a_lower_one_is_ignored(directory: &dyn Directory) {
    let tenant = fresh_tenant();
    let created = entry(tenant, "eu-central-1", 1);
    let moved = entry(tenant, "us-east-1", 2);
    let moved_again = entry(tenant, "eu-west-1", 3);
    directory.upsert(&created).await.expect("create");
    directory.upsert(&moved).await.expect("relocate");
    assert_eq!(
        directory.lookup(&tenant).await.expect("lookup"),
        Some(moved.clone())
    );
    directory.upsert(&created).await.expect("a stale write");
    assert_eq!(
        directory.lookup(&tenant).await.expect("lookup"),
        Some(moved),
        "a lower version is ignored"
    );
    directory
        .upsert(&moved_again)
        .await
        .expect("relocate again");
    assert_eq!(
        directory.lookup(&tenant).await.expect("lookup"),
        Some(moved_again)
    );
}

pub async fn tenants_are_independent(directory: &dyn Directory) {
    let first = entry(fresh_tenant(), "eu-central-1", 1);
    let second = entry(fresh_tenant(), "us-east-1", 5);
    directory.upsert(&first).await.expect("upsert");
    directory.upsert(&second).await.expect("upsert");
    assert_eq!(
        directory.lookup(&first.tenant).await.expect("lookup"),
        Some(first)
    );
    assert_eq!(
        directory.lookup(&second.tenant).await.expect("lookup"),
        Some(second)
    );
}

pub async fn a_reachable_directory_answers_its_check_and_says_where_it_is(
    directory: &dyn Directory,
) {
    assert_eq!(directory.check().await, Ok(()));
    assert_location(directory);
}

fn assert_location(directory: &dyn Directory) {
    let location = directory.location();
    assert!(
        ["memory", "postgres"].contains(&location.kind),
        "a known backend kind: {location:?}"
    );
    assert!(!location.target.is_empty(), "a target: {location:?}");
}

fn fresh_tenant() -> TenantId {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator is available");
    TenantId::from_random_bytes(bytes)
}

fn region(id: &str) -> RegionId {
    RegionId::parse(id).expect("a valid region id")
}

fn entry(tenant: TenantId, home: &str, version: u64) -> DirectoryEntry {
    DirectoryEntry {
        tenant,
        home: region(home),
        allowed: vec![region(home)],
        transit: Transit::Proxy,
        version,
    }
}
