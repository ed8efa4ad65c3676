//! TLS to PostgreSQL against a primary that serves a certificate from a test CA: the
//! pools, the health probe and the export's connection verify the chain and the host
//! name, and refuse a server they cannot verify.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use devstack::{Durability, LocalRegion, LocalRegionOptions, PgBinaries, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use store::export::{ExportConnectError, ExportReplica};
use store::{DatabaseSettings, PgEndpoint, PgTls, RegionDatabase, TlsSetupError};

use crate::region;

/// A certificate authority made for one test.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// A server certificate for `names` (host names or IP addresses), signed by this CA.
    fn server(&self, names: &[&str]) -> ServerTls {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server parameters");
        let key = KeyPair::generate().expect("server key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        ServerTls {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        }
    }

    /// What an operator does: the CA's certificate in a file named by the catalogue.
    fn trusted(&self, dir: &Path, file: &str) -> PgTls {
        let path = dir.join(file);
        std::fs::write(&path, self.issuer.pem()).expect("write the CA file");
        PgTls::verify_full(Some(&path)).expect("a CA file with one certificate")
    }
}

/// `base` (the devstack primary) reached by the name `host`, at 127.0.0.1.
fn reached_as(base: &tokio_postgres::Config, host: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(base.get_ports()[0])
        .user(base.get_user().expect("user"))
        .password(base.get_password().expect("password"))
        .dbname(base.get_dbname().expect("database"))
        .connect_timeout(Duration::from_secs(5));
    config
}

/// Whether the pooled connection to `endpoint` is encrypted, as the server sees it.
async fn ssl_in_use(endpoint: PgEndpoint) -> Result<bool, store::StoreError> {
    let database = RegionDatabase::new(
        region("eu-central-1"),
        &DatabaseSettings::new(endpoint, Vec::new()),
    )?;
    let primary = database.primary().get().await?;
    let row = primary
        .client()
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn database_connections_verify_the_servers_certificate_and_name() {
    let ca = Authority::new("residency test CA");
    let databases = LocalRegion::start(
        &PgBinaries::locate().unwrap_or_else(|err| panic!("{err}")),
        LocalRegionOptions {
            name: "tls".into(),
            durability: Durability::Ephemeral,
            server_tls: Some(ca.server(&["localhost"])),
        },
    )
    .await
    .unwrap_or_else(|err| panic!("start a TLS primary: {err}"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let by_name = reached_as(&databases.primary_config("postgres"), "localhost");

    // The CA named in the catalogue, the name in the certificate: encrypted.
    let trusted = ca.trusted(dir.path(), "ca.pem");
    let endpoint = PgEndpoint::new("primary", by_name.clone()).with_tls(trusted.clone());
    assert_eq!(ssl_in_use(endpoint.clone()).await.ok(), Some(true));
    // Without TLS the same server answers in plain text (so the `true` above is TLS).
    let plain = PgEndpoint::new("primary", by_name.clone());
    assert_eq!(ssl_in_use(plain).await.ok(), Some(false));

    // The health probe and the export's connection take the same road.
    let database = RegionDatabase::new(
        region("eu-central-1"),
        &DatabaseSettings::new(endpoint, Vec::new()),
    )
    .expect("pools");
    let health = database.health(Duration::from_secs(5)).await;
    assert!(health.primary.state.is_ok(), "{:?}", health.primary.state);
    let export = ExportReplica::connect(&by_name, &trusted, "the primary").await;
    assert!(
        matches!(export, Err(ExportConnectError::Primary(_))),
        "connected over TLS, then refused as a primary: {export:?}"
    );

    // Another CA's certificate is refused, and no plain-text fallback happens.
    let impostor = Authority::new("someone else").trusted(dir.path(), "other.pem");
    let err = ssl_in_use(PgEndpoint::new("primary", by_name).with_tls(impostor.clone()))
        .await
        .expect_err("a server the CA did not certify");
    assert!(err.to_string().contains("certificate"), "{err}");
    let export = ExportReplica::connect(
        &reached_as(&databases.primary_config("postgres"), "localhost"),
        &impostor,
        "the primary",
    )
    .await;
    assert!(
        matches!(&export, Err(ExportConnectError::Connect { reason, .. }) if reason.contains("certificate")),
        "{export:?}"
    );
    // The right CA, but a name the certificate does not carry.
    let by_address = reached_as(&databases.primary_config("postgres"), "127.0.0.1");
    let err = ssl_in_use(PgEndpoint::new("primary", by_address).with_tls(trusted))
        .await
        .expect_err("the certificate names localhost only");
    assert!(err.to_string().contains("certificate"), "{err}");

    databases
        .stop()
        .await
        .unwrap_or_else(|err| panic!("stop: {err}"));
}

#[test]
fn a_ca_file_without_a_certificate_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = PgTls::verify_full(Some(&empty)).expect_err("no certificate");
    assert!(
        matches!(&err, TlsSetupError::NoCertificate { path } if path.ends_with("empty.pem")),
        "{err}"
    );
    let missing = dir.path().join("missing.pem");
    let err = PgTls::verify_full(Some(&missing)).expect_err("no file");
    assert!(
        matches!(&err, TlsSetupError::CaFile { path, .. } if path.ends_with("missing.pem")),
        "{err}"
    );
}
