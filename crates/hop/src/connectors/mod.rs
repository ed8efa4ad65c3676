//! The dial side of the transport: requests to another region's upstream over pooled
//! HTTP/1.1 connections with an HTTP/2 overflow ([`Upstream`]), over plain TCP or TLS
//! ([`Connectors`]). It passes bodies on and never reads, keeps or logs them.

mod origin;
mod protocol;
mod self_wake;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

pub use origin::Origin;
pub use protocol::{DEFAULT_HTTP1_CONNECTIONS, InternalProtocol};
pub use upstream::{Upstream, UpstreamError};

/// The connectors an upstream dials with: over TLS, one offers only HTTP/1.1 by ALPN and
/// the other HTTP/2 too (over plain TCP they are the same). Cheap to clone: every upstream
/// of a node shares them.
#[derive(Clone)]
pub struct Connectors {
    http1: HttpsConnector<HttpConnector>,
    any_version: HttpsConnector<HttpConnector>,
    /// HTTP/2's header-list size setting of a connection: the largest response head
    /// accepted.
    max_header_list_size: u32,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors")
            .field("max_header_list_size", &self.max_header_list_size)
            .finish_non_exhaustive()
    }
}

impl Connectors {
    /// http and https (rustls with aws-lc-rs, the platform's roots) to other regions'
    /// internal endpoints, TCP_NODELAY, TCP keep-alive, and `connect_timeout`: one
    /// connector whose TLS offers only HTTP/1.1 by ALPN, one that offers HTTP/2 too. Both
    /// share one TLS configuration, so the platform's roots are read once.
    /// `max_header_list_size` is what an HTTP/2 connection accepts of a response head.
    #[must_use]
    pub fn new(connect_timeout: Duration, max_header_list_size: u32) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let versions = || {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports rustls' default protocol versions")
        };
        let tls = match versions().with_native_roots() {
            Ok(roots) => roots.with_no_client_auth(),
            Err(err) => {
                // Without trust roots https cannot be verified: https endpoints then fail
                // to connect (503), http ones still work.
                tracing::error!(error = %err, "no usable TLS trust roots: forwarding over https is disabled");
                versions()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }
        };
        let builder = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
        };
        Self {
            http1: builder().enable_http1().wrap_connector(http.clone()),
            any_version: builder().enable_all_versions().wrap_connector(http),
            max_header_list_size,
        }
    }
}
