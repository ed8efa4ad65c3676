//! The repository's own catalogue loads, with the regions the product runs in.

use catalog::{Catalog, SecretRef};
use model::{Jurisdiction, RegionId};

use crate::{good_copy, regions_dir};

fn region(id: &str) -> RegionId {
    RegionId::parse(id).expect("valid region id")
}

#[test]
fn repository_catalogue_has_the_four_regions() {
    let catalog = Catalog::load_dir(&regions_dir()).expect("regions/ is valid");
    let ids: Vec<&str> = catalog.ids().map(RegionId::as_str).collect();
    assert_eq!(
        ids,
        ["ap-southeast-1", "eu-central-1", "eu-west-1", "us-east-1"]
    );
    assert_eq!(catalog.len(), 4);

    let jurisdictions: Vec<(&str, Jurisdiction)> = catalog
        .regions()
        .map(|spec| (spec.id.as_str(), spec.jurisdiction))
        .collect();
    assert_eq!(
        jurisdictions,
        [
            ("ap-southeast-1", Jurisdiction::Sg),
            ("eu-central-1", Jurisdiction::Eu),
            ("eu-west-1", Jurisdiction::Eu),
            ("us-east-1", Jurisdiction::Us),
        ]
    );
}

#[test]
fn every_region_is_self_contained() {
    let catalog = Catalog::load_dir(&regions_dir()).expect("regions/ is valid");
    for spec in catalog.regions() {
        let id = spec.id.as_str();
        assert_eq!(
            spec.source.file_name().and_then(|n| n.to_str()),
            Some(&*format!("{id}.toml"))
        );
        assert_eq!(spec.endpoints.public.scheme(), "https", "{id}");
        assert!(!spec.database.replicas.is_empty(), "{id}");
        for db in std::iter::once(&spec.database.primary).chain(&spec.database.replicas) {
            assert_eq!(db.region, spec.id);
            assert!(
                db.host.contains(&format!(".{id}.rds.amazonaws.com")),
                "{}",
                db.host
            );
            assert!(matches!(db.password, SecretRef::Env(_)), "{id}");
        }
        assert!(spec.storage.data_bucket.contains(id));
        assert!(spec.storage.audit_bucket.contains(id));
        assert_eq!(spec.kms.key, format!("alias/residency-{id}"));
        assert_eq!(spec.analytics.prefix, format!("{id}/"));
        assert!(
            matches!(spec.audit_signing_key, Some(SecretRef::Env(_))),
            "{id}: `residency serve` needs an audit signing key reference"
        );
    }
}

#[test]
fn lookup_by_id() {
    let catalog = Catalog::load_dir(&regions_dir()).expect("regions/ is valid");
    let frankfurt = catalog
        .region(&region("eu-central-1"))
        .expect("eu-central-1 is in the catalogue");
    assert_eq!(frankfurt.display_name, "Europe (Frankfurt)");
    assert_eq!(
        frankfurt.endpoints.public.host_str(),
        Some("eu-central-1.api.residency.example.com")
    );
    assert_eq!(frankfurt.endpoints.internal.port(), Some(8443));
    assert!(catalog.region(&region("sa-east-1")).is_none());
}

#[test]
fn other_files_are_ignored() {
    let dir = good_copy();
    std::fs::write(dir.path().join("README.md"), "not a region").expect("write readme");
    std::fs::write(dir.path().join(".eu-west-1.toml.swp"), "junk").expect("write swap file");
    std::fs::write(dir.path().join(".#eu-west-1.toml"), "junk").expect("write lock file");
    std::fs::create_dir(dir.path().join("old.toml")).expect("create directory");
    let catalog = Catalog::load_dir(dir.path()).expect("only region files are read");
    assert_eq!(catalog.len(), 4);
    assert_eq!(catalog.dir(), dir.path());
}

/// The repository's regions sit behind their ALB (tasks accept its traffic only), so
/// their routers read the client's address from `X-Forwarded-For`; a region file that
/// does not say so keeps the default, the TCP peer.
#[test]
fn whether_a_region_sits_behind_a_load_balancer_is_read_and_off_by_default() {
    let catalog = Catalog::load_dir(&regions_dir()).expect("regions/ is valid");
    for spec in catalog.regions() {
        assert!(spec.endpoints.behind_load_balancer, "{}", spec.id);
    }

    let dir = good_copy();
    crate::edit(
        dir.path(),
        "eu-west-1.toml",
        "behind_load_balancer = true\n",
        "",
    );
    let catalog = Catalog::load_dir(dir.path()).expect("the key is optional");
    let eu = catalog.region(&region("eu-west-1")).expect("eu-west-1");
    assert!(!eu.endpoints.behind_load_balancer, "off unless written");
    let us = catalog.region(&region("us-east-1")).expect("us-east-1");
    assert!(us.endpoints.behind_load_balancer, "other files unchanged");
}
