//! A validated region of the catalogue and the rules one region file must satisfy on its
//! own. Rules that span files (duplicate ids, shared buckets) live in `catalog`.

use std::path::{Path, PathBuf};

use model::{Jurisdiction, RegionId};
use url::Url;

use crate::CatalogError;
use crate::raw::{self, RawDbEndpoint, RawRegion};
use crate::rules::{self, Schemes};
use crate::secret::SecretRef;

/// One region: where its endpoints, database, buckets and key are. Everything in it
/// belongs to `id`; loading refuses a replica, RDS host or KMS ARN of another region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    pub id: RegionId,
    pub jurisdiction: Jurisdiction,
    /// Human-readable name, e.g. `Europe (Frankfurt)`.
    pub display_name: String,
    pub endpoints: Endpoints,
    pub database: DatabaseSpec,
    pub storage: StorageSpec,
    pub kms: KmsSpec,
    pub analytics: AnalyticsSpec,
    /// The region's Ed25519 audit signing key (its text form, see `docs/audit.md`), by
    /// reference. Optional in the file; `residency serve` refuses to start without it.
    pub audit_signing_key: Option<SecretRef>,
    /// The inter-region forwarding secret (HMAC key of signed forwarding headers, at least
    /// 32 bytes, the same in every region), by reference. Optional in the file;
    /// `residency serve` refuses to start without it.
    pub forwarding_secret: Option<SecretRef>,
    /// The file this region was loaded from.
    pub source: PathBuf,
}

/// Base URLs of the regional node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// What clients and 307 redirects use; always https.
    pub public: Url,
    /// What other regions' routers forward to; http or https.
    pub internal: Url,
    /// `true` when the node's listener is reachable only through a load balancer that
    /// appends the address it accepted the connection from to `X-Forwarded-For` (an AWS
    /// ALB does). The router then takes a client's address from that header's last
    /// entry, the one the load balancer wrote, for its per-client-address limit and the
    /// signed forwarding header; otherwise it uses the TCP peer and ignores
    /// `X-Forwarded-For`, which any client can write. Off by default: turning it on for a
    /// listener that clients reach directly would let each of them pick its own address.
    pub behind_load_balancer: bool,
}

/// The region's PostgreSQL primary and its streaming replicas (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    pub primary: DbEndpoint,
    pub replicas: Vec<DbEndpoint>,
}

/// How to reach one PostgreSQL server. The password is a reference, resolved at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEndpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: SecretRef,
    /// Always the region of the spec holding it.
    pub region: RegionId,
    pub tls: DbTls,
}

/// How the connection to a database server is protected (`tls` and `ca_file` in the
/// catalogue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTls {
    /// TLS required, the server's certificate checked against the CA file (for RDS,
    /// Amazon's RDS bundle) or the platform's trust store, and its host name. The default.
    VerifyFull { ca_file: Option<PathBuf> },
    /// Plain TCP, for a database on the same host or a private link only.
    Disable,
}

/// The region's S3 buckets for tenant files and for audit exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSpec {
    pub data_bucket: String,
    pub audit_bucket: String,
}

/// The region's KMS key: an alias or a key/alias ARN in the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsSpec {
    pub key: String,
}

/// Where the region's anonymized export goes: the global analytics bucket, under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsSpec {
    pub bucket: String,
    /// Empty or a relative key prefix such as `eu-central-1/`.
    pub prefix: String,
}

impl RegionSpec {
    /// Parses and validates one region file's text. `source` is the file's path: its stem
    /// must equal the region id, and every error names it.
    pub fn parse(text: &str, source: &Path) -> Result<Self, CatalogError> {
        let raw = raw::parse_region(text, source)?;
        let id = parse_id(&raw.id, source)?;
        let spec = validate(raw, id, source)?;
        check_file_name(&spec.id, source)?;
        Ok(spec)
    }
}

pub(crate) fn parse_id(raw: &str, file: &Path) -> Result<RegionId, CatalogError> {
    RegionId::parse(raw).map_err(|err| CatalogError::invalid(file, "id", err.to_string()))
}

pub(crate) fn check_file_name(id: &RegionId, file: &Path) -> Result<(), CatalogError> {
    let stem = file.file_stem().and_then(|s| s.to_str());
    if stem == Some(id.as_str()) {
        return Ok(());
    }
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Err(CatalogError::invalid(
        file,
        "id",
        format!("id {id} does not match the file name {name}: region files are named <id>.toml"),
    ))
}

/// Every single-file rule except the file name, which `Catalog` checks after duplicates so
/// that a copied file is reported as a duplicate.
pub(crate) fn validate(
    raw: RawRegion,
    id: RegionId,
    file: &Path,
) -> Result<RegionSpec, CatalogError> {
    let invalid = |field: &str, message: String| CatalogError::invalid(file, field, message);

    let jurisdiction = Jurisdiction::parse(&raw.jurisdiction)
        .map_err(|err| invalid("jurisdiction", err.to_string()))?;

    if raw.display_name.trim().is_empty() {
        return Err(invalid("display_name", "display name is empty".to_owned()));
    }

    let public = rules::endpoint(&raw.endpoints.public, Schemes::HttpsOnly)
        .map_err(|m| invalid("endpoints.public", m))?;
    let internal = rules::endpoint(&raw.endpoints.internal, Schemes::HttpOrHttps)
        .map_err(|m| invalid("endpoints.internal", m))?;

    let primary = db_endpoint(
        raw.database.primary,
        "database.primary",
        "primary",
        &id,
        file,
    )?;
    if raw.database.replicas.is_empty() {
        return Err(invalid(
            "database.replicas",
            "no replicas: a region needs at least one read replica".to_owned(),
        ));
    }
    let replicas = raw
        .database
        .replicas
        .into_iter()
        .enumerate()
        .map(|(i, replica)| {
            db_endpoint(
                replica,
                &format!("database.replicas[{i}]"),
                "replica",
                &id,
                file,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let storage = raw.storage;
    rules::bucket_name(&storage.data_bucket).map_err(|m| invalid("storage.data_bucket", m))?;
    rules::bucket_name(&storage.audit_bucket).map_err(|m| invalid("storage.audit_bucket", m))?;
    if storage.data_bucket == storage.audit_bucket {
        return Err(invalid(
            "storage.audit_bucket",
            format!(
                "audit bucket `{}` is also the data bucket; they must differ",
                storage.audit_bucket
            ),
        ));
    }

    rules::kms_key(&raw.kms.key, &id).map_err(|m| invalid("kms.key", m))?;

    let analytics = raw.analytics;
    rules::bucket_name(&analytics.bucket).map_err(|m| invalid("analytics.bucket", m))?;
    // Only anonymized data goes there: it must never be a bucket holding personal data.
    if analytics.bucket == storage.data_bucket || analytics.bucket == storage.audit_bucket {
        return Err(invalid(
            "analytics.bucket",
            format!(
                "analytics bucket `{}` is also one of the region's own buckets; anonymized exports go to a separate bucket",
                analytics.bucket
            ),
        ));
    }
    if analytics.prefix.starts_with('/') {
        return Err(invalid(
            "analytics.prefix",
            format!("prefix `{}` must not start with `/`", analytics.prefix),
        ));
    }

    Ok(RegionSpec {
        id,
        jurisdiction,
        display_name: raw.display_name,
        endpoints: Endpoints {
            public,
            internal,
            behind_load_balancer: raw.endpoints.behind_load_balancer,
        },
        database: DatabaseSpec { primary, replicas },
        storage: StorageSpec {
            data_bucket: storage.data_bucket,
            audit_bucket: storage.audit_bucket,
        },
        kms: KmsSpec { key: raw.kms.key },
        analytics: AnalyticsSpec {
            bucket: analytics.bucket,
            prefix: analytics.prefix,
        },
        audit_signing_key: raw.audit_signing_key.map(|reference| reference.0),
        forwarding_secret: raw.forwarding_secret.map(|reference| reference.0),
        source: file.to_owned(),
    })
}

fn db_endpoint(
    raw: RawDbEndpoint,
    field: &str,
    role: &str,
    region: &RegionId,
    file: &Path,
) -> Result<DbEndpoint, CatalogError> {
    let invalid =
        |key: &str, message: String| CatalogError::invalid(file, format!("{field}.{key}"), message);
    rules::host(&raw.host).map_err(|m| invalid("host", m))?;
    if raw.port == 0 {
        return Err(invalid("port", "port must not be 0".to_owned()));
    }
    if raw.database.is_empty() {
        return Err(invalid("database", "database name is empty".to_owned()));
    }
    if raw.user.is_empty() {
        return Err(invalid("user", "user is empty".to_owned()));
    }
    let endpoint_region =
        RegionId::parse(&raw.region).map_err(|err| invalid("region", err.to_string()))?;
    if &endpoint_region != region {
        return Err(invalid(
            "region",
            format!("{role} is in {endpoint_region}, outside region {region}"),
        ));
    }
    if let Some(label) = rules::rds_region(&raw.host) {
        let label = label.map_err(|m| invalid("host", m))?;
        if label != region.as_str() {
            return Err(invalid(
                "host",
                format!("RDS host is in {label}, outside region {region}"),
            ));
        }
    }
    let tls = match (raw.tls.as_deref(), raw.ca_file) {
        (None | Some("verify-full"), None) => DbTls::VerifyFull { ca_file: None },
        (None | Some("verify-full"), Some(ca_file)) => {
            let ca_file = PathBuf::from(ca_file);
            if !ca_file.is_absolute() {
                return Err(invalid(
                    "ca_file",
                    "the CA file must be an absolute path".to_owned(),
                ));
            }
            DbTls::VerifyFull {
                ca_file: Some(ca_file),
            }
        }
        (Some("disable"), None) => DbTls::Disable,
        (Some("disable"), Some(_)) => {
            return Err(invalid(
                "ca_file",
                "a CA file needs tls = \"verify-full\"".to_owned(),
            ));
        }
        (Some(_), _) => {
            return Err(invalid(
                "tls",
                "tls must be \"verify-full\" (the default) or \"disable\"".to_owned(),
            ));
        }
    };
    Ok(DbEndpoint {
        host: raw.host,
        port: raw.port,
        database: raw.database,
        user: raw.user,
        password: raw.password.0,
        region: endpoint_region,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "eu-west-1"
jurisdiction = "EU"
display_name = "Europe (Ireland)"
audit_signing_key = { file = "/run/secrets/audit-signing-key" }

[endpoints]
public = "https://eu-west-1.api.residency.example.com"
internal = "https://eu-west-1.internal.residency.example.com:8443"

[database.primary]
host = "residency-eu-west-1.c9akciq32.eu-west-1.rds.amazonaws.com"
port = 5432
database = "residency"
user = "residency_api"
password = { env = "RESIDENCY_DB_PASSWORD" }
region = "eu-west-1"

[[database.replicas]]
host = "residency-eu-west-1-replica-1.c9akciq32.eu-west-1.rds.amazonaws.com"
port = 5432
database = "residency"
user = "residency_api"
password = { file = "/run/secrets/db-password" }
region = "eu-west-1"

[storage]
data_bucket = "residency-eu-west-1-data"
audit_bucket = "residency-eu-west-1-audit"

[kms]
key = "alias/residency-eu-west-1"

[analytics]
bucket = "residency-analytics"
prefix = "eu-west-1/"
"#;

    fn parse(text: &str) -> Result<RegionSpec, CatalogError> {
        RegionSpec::parse(text, Path::new("regions/eu-west-1.toml"))
    }

    /// The good file with the first occurrence of `from` replaced by `to`.
    fn edited(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from:?} is not in the good file");
        GOOD.replacen(from, to, 1)
    }

    fn error_at(text: &str) -> (String, String) {
        let err = parse(text).expect_err("the edit makes the file invalid");
        let field = err.field().expect("error names a field").to_owned();
        (field, err.to_string())
    }

    #[test]
    fn good_file_parses() {
        let spec = parse(GOOD).expect("good file");
        assert_eq!(spec.id.as_str(), "eu-west-1");
        assert_eq!(spec.jurisdiction, Jurisdiction::Eu);
        assert_eq!(
            spec.endpoints.public.as_str(),
            "https://eu-west-1.api.residency.example.com/"
        );
        assert_eq!(spec.endpoints.internal.port(), Some(8443));
        assert_eq!(
            spec.database.primary.password,
            SecretRef::Env("RESIDENCY_DB_PASSWORD".into())
        );
        assert_eq!(
            spec.database.replicas[0].password,
            SecretRef::File("/run/secrets/db-password".into())
        );
        assert_eq!(spec.analytics.prefix, "eu-west-1/");
        assert_eq!(
            spec.audit_signing_key,
            Some(SecretRef::File("/run/secrets/audit-signing-key".into()))
        );
        assert_eq!(spec.source, Path::new("regions/eu-west-1.toml"));
        assert_eq!(
            spec.database.primary.tls,
            DbTls::VerifyFull { ca_file: None },
            "TLS with verification unless the catalogue says otherwise"
        );
    }

    #[test]
    fn database_tls_is_verify_full_with_an_optional_ca_file_or_disabled() {
        let with_ca = edited(
            "region = \"eu-west-1\"\n\n[[database.replicas]]",
            "region = \"eu-west-1\"\ntls = \"verify-full\"\nca_file = \"/etc/residency/rds-ca.pem\"\n\n[[database.replicas]]",
        );
        let spec = parse(&with_ca).expect("valid");
        assert_eq!(
            spec.database.primary.tls,
            DbTls::VerifyFull {
                ca_file: Some(PathBuf::from("/etc/residency/rds-ca.pem"))
            }
        );
        let disabled = edited(
            "region = \"eu-west-1\"\n\n[[database.replicas]]",
            "region = \"eu-west-1\"\ntls = \"disable\"\n\n[[database.replicas]]",
        );
        assert_eq!(
            parse(&disabled).expect("valid").database.primary.tls,
            DbTls::Disable
        );
        for (edit, field) in [
            ("tls = \"require\"", "database.primary.tls"),
            ("ca_file = \"rds-ca.pem\"", "database.primary.ca_file"),
            (
                "tls = \"disable\"\nca_file = \"/etc/ca.pem\"",
                "database.primary.ca_file",
            ),
        ] {
            let text = edited(
                "region = \"eu-west-1\"\n\n[[database.replicas]]",
                &format!("region = \"eu-west-1\"\n{edit}\n\n[[database.replicas]]"),
            );
            assert_eq!(error_at(&text).0, field, "{edit}");
        }
    }

    #[test]
    fn the_audit_signing_key_is_optional_and_only_by_reference() {
        let without = edited(
            "audit_signing_key = { file = \"/run/secrets/audit-signing-key\" }\n",
            "",
        );
        assert_eq!(parse(&without).expect("optional").audit_signing_key, None);

        let by_env = edited(
            "{ file = \"/run/secrets/audit-signing-key\" }",
            "{ env = \"RESIDENCY_AUDIT_SIGNING_KEY\" }",
        );
        assert_eq!(
            parse(&by_env).expect("env reference").audit_signing_key,
            Some(SecretRef::Env("RESIDENCY_AUDIT_SIGNING_KEY".into()))
        );

        let inline = edited(
            "{ file = \"/run/secrets/audit-signing-key\" }",
            "\"residency-audit-ed25519:00ff\"",
        );
        let (field, message) = error_at(&inline);
        assert_eq!(field, "audit_signing_key", "{message}");
        assert!(message.contains("by reference"), "{message}");
        assert!(!message.contains("00ff"), "{message}");

        let relative = edited(
            "{ file = \"/run/secrets/audit-signing-key\" }",
            "{ file = \"secrets/audit\" }",
        );
        assert_eq!(error_at(&relative).0, "audit_signing_key");
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (
                edited("jurisdiction = \"EU\"", "jurisdiction = \"XX\""),
                "jurisdiction",
            ),
            (edited("id = \"eu-west-1\"", "id = \"EU-west\""), "id"),
            (edited("\"Europe (Ireland)\"", "\"  \""), "display_name"),
            (
                edited("public = \"https://", "public = \"http://"),
                "endpoints.public",
            ),
            (
                edited("internal = \"https://", "internal = \"ftp://"),
                "endpoints.internal",
            ),
            (
                edited("host = \"residency-eu-west-1.", "host = \"bad host."),
                "database.primary.host",
            ),
            (edited("port = 5432", "port = 0"), "database.primary.port"),
            (
                edited("port = 5432", "port = 70000"),
                "database.primary.port",
            ),
            (
                edited("port = 5432", "port = \"5432\""),
                "database.primary.port",
            ),
            (
                edited("database = \"residency\"", "database = \"\""),
                "database.primary.database",
            ),
            (
                edited("user = \"residency_api\"", "user = \"\""),
                "database.primary.user",
            ),
            (
                edited("{ env = \"RESIDENCY_DB_PASSWORD\" }", "{ env = \"1BAD\" }"),
                "database.primary.password",
            ),
            (
                edited(
                    "{ file = \"/run/secrets/db-password\" }",
                    "{ file = \"relative\" }",
                ),
                "database.replicas[0].password",
            ),
            (
                edited(
                    "{ env = \"RESIDENCY_DB_PASSWORD\" }",
                    "{ env = \"A\", file = \"/b\" }",
                ),
                "database.primary.password",
            ),
            (
                edited("region = \"eu-west-1\"", "region = \"us-east-1\""),
                "database.primary.region",
            ),
            (
                edited(
                    "replica-1.c9akciq32.eu-west-1.rds",
                    "replica-1.c9akciq32.us-east-1.rds",
                ),
                "database.replicas[0].host",
            ),
            (
                edited("residency-eu-west-1-data", "Residency_Data"),
                "storage.data_bucket",
            ),
            (
                edited("residency-eu-west-1-audit", "residency-eu-west-1-data"),
                "storage.audit_bucket",
            ),
            (edited("alias/residency-eu-west-1", "alias/"), "kms.key"),
            (
                edited(
                    "alias/residency-eu-west-1",
                    "arn:aws:kms:us-east-1:123456789012:key/abcd",
                ),
                "kms.key",
            ),
            (
                edited("\"residency-analytics\"", "\"residency-eu-west-1-data\""),
                "analytics.bucket",
            ),
            (
                edited("prefix = \"eu-west-1/\"", "prefix = \"/eu-west-1/\""),
                "analytics.prefix",
            ),
            (edited("[kms]", "[kms]\nrotation = true"), "kms.rotation"),
            (edited("prefix = \"eu-west-1/\"", ""), "analytics.prefix"),
            (
                edited("display_name = \"Europe (Ireland)\"", ""),
                "display_name",
            ),
        ];
        for (text, field) in cases {
            let (got, message) = error_at(&text);
            assert_eq!(got, field, "{message}");
            assert!(message.starts_with("regions/eu-west-1.toml: "), "{message}");
        }
    }

    #[test]
    fn no_replicas_is_refused() {
        let start = GOOD.find("[[database.replicas]]").expect("replica table");
        let end = GOOD.find("[storage]").expect("storage table");
        let text = format!("{}{}", &GOOD[..start], &GOOD[end..]).replace(
            "[database.primary]",
            "[database]\nreplicas = []\n\n[database.primary]",
        );
        let (field, message) = error_at(&text);
        assert_eq!(field, "database.replicas", "{message}");
        assert!(message.contains("at least one"), "{message}");
    }

    #[test]
    fn inline_password_is_refused_without_echoing_it() {
        let text = edited("{ env = \"RESIDENCY_DB_PASSWORD\" }", "\"hunter2\"");
        let (field, message) = error_at(&text);
        assert_eq!(field, "database.primary.password");
        assert!(message.contains("by reference"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");

        let text = edited("{ env = \"RESIDENCY_DB_PASSWORD\" }", "{ hunter2 = \"x\" }");
        let (_, message) = error_at(&text);
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn file_name_must_match_id() {
        let err = RegionSpec::parse(GOOD, Path::new("regions/eu-west-2.toml"))
            .expect_err("stem differs from id");
        assert_eq!(err.field(), Some("id"));
        assert_eq!(
            err.to_string(),
            "regions/eu-west-2.toml: id: id eu-west-1 does not match the file name eu-west-2.toml: region files are named <id>.toml"
        );
    }

    #[test]
    fn replica_outside_region_message() {
        let text = GOOD.replace(
            "replica-1.c9akciq32.eu-west-1.rds.amazonaws.com\"\nport = 5432\ndatabase = \"residency\"\nuser = \"residency_api\"\npassword = { file = \"/run/secrets/db-password\" }\nregion = \"eu-west-1\"",
            "replica-1.c9akciq32.us-east-1.rds.amazonaws.com\"\nport = 5432\ndatabase = \"residency\"\nuser = \"residency_api\"\npassword = { file = \"/run/secrets/db-password\" }\nregion = \"us-east-1\"",
        );
        let err = parse(&text).expect_err("replica elsewhere");
        assert_eq!(
            err.to_string(),
            "regions/eu-west-1.toml: database.replicas[0].region: replica is in us-east-1, outside region eu-west-1"
        );
    }
}
