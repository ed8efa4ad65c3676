//! The router's configuration: where every region's node listens, and what the router
//! needs to start ([`RouterConfig`]).

use std::collections::HashMap;
use std::time::Duration;

use hop::InternalProtocol;
use http::Uri;
use model::RegionId;

use crate::cache::CachedDirectory;
use crate::limits::Rate;
use crate::metrics::RouterMetrics;
use crate::signing::ForwardSigner;

/// Where another region's node listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionEndpoints {
    /// What routers forward to (http or https; an origin such as
    /// `https://eu-west-1.internal.example.com:8443`).
    pub internal: Uri,
    /// What clients and `307` redirects use.
    pub public: Uri,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("region {region}: {which} endpoint is not an absolute http(s) URL")]
    Endpoint {
        region: RegionId,
        which: &'static str,
    },
}

impl RegionEndpoints {
    /// The endpoints of a catalogue region.
    pub fn from_catalog(
        region: &RegionId,
        endpoints: &catalog::Endpoints,
    ) -> Result<Self, ConfigError> {
        let parse = |text: &str, which| {
            Uri::try_from(text).map_err(|_| ConfigError::Endpoint {
                region: region.clone(),
                which,
            })
        };
        Ok(Self {
            internal: parse(endpoints.internal.as_str(), "internal")?,
            public: parse(endpoints.public.as_str(), "public")?,
        })
    }
}

/// The endpoints of every region of the catalogue.
pub fn regions_from_catalog(
    catalog: &catalog::Catalog,
) -> Result<HashMap<RegionId, RegionEndpoints>, ConfigError> {
    catalog
        .regions()
        .map(|spec| {
            Ok((
                spec.id.clone(),
                RegionEndpoints::from_catalog(&spec.id, &spec.endpoints)?,
            ))
        })
        .collect()
}

/// Everything the router needs. Build with [`RouterConfig::new`] and adjust the public
/// fields.
#[derive(Debug)]
pub struct RouterConfig {
    /// This node's region.
    pub local: RegionId,
    /// Every region of the catalogue (this one may be included).
    pub regions: HashMap<RegionId, RegionEndpoints>,
    pub directory: CachedDirectory,
    pub signer: ForwardSigner,
    /// Longest wait for a forwarded request's response headers (default 30 s).
    pub upstream_timeout: Duration,
    /// Longest wait for a connection to another region (default 2 s).
    pub connect_timeout: Duration,
    /// The protocol asked of other regions' internal endpoints (default HTTP/1.1 on up to
    /// [`crate::DEFAULT_HTTP1_CONNECTIONS`] per region, HTTP/2 past them).
    pub internal_protocol: InternalProtocol,
    pub metrics: Option<RouterMetrics>,
    /// What each client address may send to this node (default [`Rate::CLIENT_DEFAULT`]):
    /// checked before anything else is done for the request, so a flood is refused
    /// (`429`) in the region where it arrives. A request forwarded by another region is
    /// counted against the client address that region signed, never against the region.
    pub client_rate: Rate,
    /// How many lookups of tenants this node does not hold each client address may cause
    /// (default [`Rate::CLIENT_DIRECTORY_MISSES_DEFAULT`]); past it, `429`. The node's
    /// own budget for all of them is the directory cache's.
    pub client_directory_misses: Rate,
    /// Whether this node is reached only through a load balancer that appends the client's
    /// address to `X-Forwarded-For` (the catalogue's `endpoints.behind_load_balancer`;
    /// default `false`). Only then is that header's last entry the client's address;
    /// otherwise it is the TCP peer and the header is ignored.
    pub behind_load_balancer: bool,
    /// Longest wait for a request body the router reads before forwarding it (up to
    /// 64 KiB, or 1 MiB of a `POST /v1/tenants`) (default 10 s); a slower body is
    /// answered `408`.
    pub body_read_timeout: Duration,
}

impl RouterConfig {
    pub fn new(
        local: RegionId,
        regions: HashMap<RegionId, RegionEndpoints>,
        directory: CachedDirectory,
        signer: ForwardSigner,
    ) -> Self {
        Self {
            local,
            regions,
            directory,
            signer,
            upstream_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            internal_protocol: InternalProtocol::default(),
            metrics: None,
            client_rate: Rate::CLIENT_DEFAULT,
            client_directory_misses: Rate::CLIENT_DIRECTORY_MISSES_DEFAULT,
            behind_load_balancer: false,
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::uri::{PathAndQuery, Scheme};

    use hop::Origin;

    use super::*;

    #[test]
    fn the_repository_catalogue_gives_every_region_its_endpoints() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../regions");
        let catalog = catalog::Catalog::load_dir(&dir).expect("the repository's catalogue loads");
        let regions = regions_from_catalog(&catalog).expect("endpoints are URLs");
        assert_eq!(regions.len(), catalog.len());
        let eu = regions
            .get(&RegionId::parse("eu-west-1").expect("region"))
            .expect("eu-west-1 is in the catalogue");
        assert_eq!(eu.internal.scheme(), Some(&Scheme::HTTPS));
        let origin = Origin::parse(&eu.public).expect("absolute");
        let joined = origin
            .join(Some(&PathAndQuery::from_static("/v1/tenants/x?y=1")))
            .expect("joined");
        assert_eq!(
            joined.to_string(),
            "https://eu-west-1.api.residency.example.com/v1/tenants/x?y=1"
        );
    }
}
