//! TLS to PostgreSQL: rustls on aws-lc-rs (the tree's one crypto library), verifying the
//! server's certificate chain and host name, as libpq's `verify-full` does. There is no
//! mode that encrypts without checking who answers: it would stop eavesdroppers but not a
//! server in the middle, which sees the password exchange and every row.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How connections to one PostgreSQL server are protected.
#[derive(Clone)]
pub enum PgTls {
    /// Plain TCP: the loopback servers of `residency dev` and of the tests.
    Disabled,
    /// TLS required; the server's certificate must chain to one of the trusted roots and
    /// name the host connected to.
    VerifyFull(Arc<rustls::ClientConfig>),
}

impl fmt::Debug for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode())
    }
}

/// Why TLS to the database could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("read the database CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: crate::BoxError,
    },
    #[error("the database CA file {path} holds no certificate")]
    NoCertificate { path: String },
    #[error(
        "no trusted CA certificates found on this machine: name the database's CA file (ca_file)"
    )]
    NoPlatformRoots,
    #[error("set up TLS for the database")]
    Config(#[source] rustls::Error),
}

impl PgTls {
    /// `verify-full` against the CA certificates in the PEM file at `ca_file` (for RDS,
    /// Amazon's RDS bundle, which public trust stores do not hold), or against the
    /// platform's trust store when no file is named.
    pub fn verify_full(ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let shown = path.display().to_string();
                let failed = |source: crate::BoxError| TlsSetupError::CaFile {
                    path: shown.clone(),
                    source,
                };
                let certificates = CertificateDer::pem_file_iter(path)
                    .map_err(|err| failed(err.into()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| failed(err.into()))?;
                if certificates.is_empty() {
                    return Err(TlsSetupError::NoCertificate { path: shown });
                }
                for certificate in certificates {
                    roots.add(certificate).map_err(|err| failed(err.into()))?;
                }
            }
            None => {
                // Certificates the platform holds but rustls cannot parse are skipped,
                // as browsers do; an empty store is refused below.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsSetupError::NoPlatformRoots);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::VerifyFull(Arc::new(config)))
    }

    /// The mode's name as the catalogue spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Disabled => "disable",
            Self::VerifyFull(_) => "verify-full",
        }
    }

    /// `config` with the SSL mode this protection needs: TLS required (no fallback to
    /// plain TCP if the server refuses it), or never asked for.
    pub(crate) fn configure(&self, config: &Config) -> Config {
        let mut config = config.clone();
        config.ssl_mode(match self {
            Self::Disabled => SslMode::Disable,
            Self::VerifyFull(_) => SslMode::Require,
        });
        config
    }
}

/// Opens one unpooled connection with `tls` and drives it on a task of its own (the
/// handle: to stop it early; it also ends when the client is dropped).
pub(crate) async fn connect(
    config: &Config,
    tls: &PgTls,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let config = tls.configure(config);
    match tls {
        PgTls::Disabled => {
            let (client, connection) = config.connect(NoTls).await?;
            Ok((client, tokio::spawn(drive(connection))))
        }
        PgTls::VerifyFull(rustls) => {
            let connector = MakeRustlsConnect::new((**rustls).clone());
            let (client, connection) = config.connect(connector).await?;
            Ok((client, tokio::spawn(drive(connection))))
        }
    }
}

async fn drive(connection: impl Future<Output = Result<(), tokio_postgres::Error>>) {
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "database connection ended");
    }
}
