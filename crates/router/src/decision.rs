//! The decision: where a request is served. Local tenants and operational paths are served
//! in-process, foreign tenants are forwarded or redirected as their transit says, a
//! forwarded request for a tenant homed elsewhere is answered `421`, `POST /v1/tenants`
//! goes to the home its body asks for, and `GET /v1/tenants?home_region=` to the region
//! whose tenants it lists.
//!
//! The route is decided before any await where the directory cache has the tenant, and
//! only the future that route needs is allocated (see [`RouterCore::handle`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use model::{RegionId, TenantId, Transit};
use serde::Deserialize;
use tower::ServiceExt;

use crate::admission::{Admitted, ensure_request_id, head_over_client_limit};
use crate::body::{self, Prepared};
use crate::directory::{DirectoryEntry, DirectoryError};
use crate::layer::{Inner, InnerBody, Routed};
use crate::metrics::{Decision, status_class};
use crate::names;
use crate::problem;
use crate::router_core::RouterCore;
use crate::routing::{Route, classify, listed_region};
use crate::target::region_value;

/// Bodies up to this size are read before forwarding, so that a `421` can be retried.
const RETRY_BUFFER: usize = 64 * 1024;
/// The most of a `POST /v1/tenants` body read to find `home_region`.
const CREATE_BUFFER: usize = 1024 * 1024;
/// The most of a misdirected request's body read (and discarded) before the `421`.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// The longest wait for it.
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);

impl RouterCore {
    /// Admits and classifies the request here, before any await, and returns the one
    /// future its route needs: a future is as large as its largest branch, and the one
    /// allocated for every request should not carry the others.
    pub(crate) fn handle<S, B>(
        self: Arc<Self>,
        inner: S,
        request: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Routed<S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let (mut parts, body) = request.into_parts();
        let forwarded = self.admit(&mut parts);
        if forwarded.is_none() {
            // Measured as the client sent it, before the router adds a request id.
            let over_limit = head_over_client_limit(&parts);
            ensure_request_id(&mut parts);
            if let Some(limit) = over_limit {
                return Box::pin(std::future::ready(Ok(self.head_too_large(&parts, limit))));
            }
        }
        let (client, origin) = match self.limit_client(&parts, forwarded.is_some(), peer) {
            Ok(client) => client,
            Err(wait) => {
                return Box::pin(std::future::ready(Ok(self.client_limited(&parts, wait))));
            }
        };
        let req = Admitted {
            parts,
            forwarded,
            peer,
            client,
            origin,
        };
        if let Some(region) = listed_region(&req.parts.method, &req.parts.uri)
            && req.forwarded.is_none()
            && region != self.local
            && self.targets.contains_key(&region)
        {
            // Another region's tenants are that region's to list.
            return Box::pin(self.proxy(inner, req, body, None, region));
        }
        match classify(&req.parts.method, req.parts.uri.path()) {
            Route::Local => Box::pin(async move {
                let response = call_local(inner, req, body).await?;
                self.count(Decision::Local, status_class(response.status()));
                Ok(response)
            }),
            Route::CreateTenant => Box::pin(self.create_tenant(inner, req, body)),
            Route::Tenant(tenant) => match self.directory.cached(&tenant) {
                // A fresh entry in hand: the tenant's route is decided here too.
                Some(entry) => self.tenant_at(inner, req, body, tenant, &entry),
                None => Box::pin(self.tenant(inner, req, body, tenant)),
            },
        }
    }

    pub(crate) async fn create_tenant<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        if req.forwarded.is_some() {
            // Already forwarded once: this node is the requested home (or will say why not).
            let response = call_local(inner, req, body).await?;
            self.count(Decision::Local, status_class(response.status()));
            return Ok(response);
        }
        let mut prepared =
            match body::prepare_within(body, CREATE_BUFFER, self.body_read_timeout).await {
                Ok(prepared) => prepared,
                Err(unread) => return Ok(self.unread_body(&req.parts, unread)),
            };
        let home = match &prepared {
            Prepared::Buffered(bytes) => requested_home(bytes),
            _ => None,
        };
        match home {
            Some(home) if home != self.local && self.targets.contains_key(&home) => {
                Ok(Box::pin(self.forward(inner, req, prepared, None, home)).await?)
            }
            _ => {
                let body = prepared.take().unwrap_or_default();
                let response = call_local(inner, req, body).await?;
                self.count(Decision::Local, status_class(response.status()));
                Ok(response)
            }
        }
    }

    pub(crate) async fn tenant<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        tenant: TenantId,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        // A client's own share of the lookups for tenants this node does not hold, taken
        // before the shared budget. A forwarded request was held to it where it arrived.
        if req.forwarded.is_none()
            && !self.directory.known_unknown(&tenant)
            && let Err(wait) = self.directory_miss_limiter.check(req.origin)
        {
            return Ok(self.client_misses_limited(&req.parts, wait));
        }
        let entry = match self.directory.lookup_shared(&tenant).await {
            Ok(entry) => entry,
            Err(_) if req.forwarded.is_some() => {
                // Another region's directory sent it here; the local node serves only
                // tenants it holds (404 otherwise), so nothing is served from elsewhere.
                return self.local_tenant(inner, req, body).await;
            }
            Err(DirectoryError::Busy) => {
                // A flood of tenants nobody here knows: counted, not logged per request.
                return Ok(self.directory_busy(&req));
            }
            Err(err) => {
                tracing::warn!(tenant = %tenant, error = %err, "cannot route: tenant directory unavailable");
                self.count(Decision::Unrouted, "directory_unavailable");
                let mut response = problem::unavailable(
                    "directory-unavailable",
                    "the tenant directory cannot be reached; try again shortly",
                    req.parts.headers.get(names::REQUEST_ID),
                );
                self.routing_headers(&mut response, &self.local_header, false, None);
                return Ok(response);
            }
        };
        let Some(entry) = entry else {
            // Unknown here: the local node answers (404) with its own checks.
            return self.local_tenant(inner, req, body).await;
        };
        self.tenant_at(inner, req, body, tenant, &entry).await
    }

    /// The future of a request for a tenant whose directory entry is known.
    pub(crate) fn tenant_at<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        tenant: TenantId,
        entry: &Arc<DirectoryEntry>,
    ) -> Routed<S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        if entry.home == self.local {
            return Box::pin(self.local_tenant(inner, req, body));
        }
        if req.forwarded.is_some() {
            let entry = Arc::clone(entry);
            return Box::pin(async move { self.misdirected(inner, req, body, &entry).await });
        }
        match entry.transit {
            Transit::Redirect => {
                let response = self.redirect(&req, &entry.home);
                Box::pin(std::future::ready(Ok(response)))
            }
            Transit::Proxy => {
                Box::pin(self.proxy(inner, req, body, Some(tenant), entry.home.clone()))
            }
        }
    }

    /// Reads what of the body can be kept for a resend, then forwards to `home`.
    async fn proxy<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        tenant: Option<TenantId>,
        home: RegionId,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let prepared = match body::prepare_within(body, RETRY_BUFFER, self.body_read_timeout).await
        {
            Ok(prepared) => prepared,
            Err(unread) => return Ok(self.unread_body(&req.parts, unread)),
        };
        self.forward(inner, req, prepared, tenant, home).await
    }

    /// A forwarded request for a tenant this node's cache places elsewhere. The home
    /// region is the authority for its tenants, so the cache is re-read first: if the
    /// tenant has just moved here, it is served; otherwise `421` names the home.
    pub(crate) async fn misdirected<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
        cached: &DirectoryEntry,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let home = match self.directory.refresh(&cached.tenant).await {
            Ok(Some(fresh)) => fresh.home,
            Ok(None) => return self.local_tenant(inner, req, body).await,
            Err(_) => cached.home.clone(),
        };
        if home == self.local {
            return self.local_tenant(inner, req, body).await;
        }
        // The forwarding node is still sending the body; let it finish before answering.
        body::drain(body, DRAIN_LIMIT, DRAIN_PATIENCE).await;
        self.count(Decision::Misdirected, "4xx");
        let mut response = problem::response(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            "the tenant is homed in another region",
            req.parts.headers.get(names::REQUEST_ID),
        );
        let home = region_value(&home);
        self.routing_headers(&mut response, &home, true, req.forwarded.as_ref());
        Ok(response)
    }

    pub(crate) async fn local_tenant<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        body: Body,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        let forwarded = req.forwarded.clone();
        let mut response = call_local(inner, req, body).await?;
        self.count(Decision::Local, status_class(response.status()));
        self.routing_headers(&mut response, &self.local_header, false, forwarded.as_ref());
        Ok(response)
    }
}

pub(crate) async fn call_local<S, B>(
    inner: S,
    req: Admitted,
    body: Body,
) -> Result<Response<Body>, S::Error>
where
    S: Inner<B>,
    B: InnerBody,
{
    let response = inner.oneshot(req.into_local(body)).await?;
    Ok(response.map(Body::new))
}

/// `home_region` of a `POST /v1/tenants` body, if it names a region.
fn requested_home(body: &[u8]) -> Option<RegionId> {
    #[derive(Deserialize)]
    struct Probe {
        home_region: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    RegionId::parse(&probe.home_region?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requested_home_is_read_from_the_body() {
        assert_eq!(
            requested_home(br#"{"name":"A","home_region":"us-east-1"}"#),
            RegionId::parse("us-east-1").ok()
        );
        assert_eq!(requested_home(br#"{"name":"A"}"#), None);
        assert_eq!(requested_home(br#"{"home_region":"Not A Region"}"#), None);
        assert_eq!(requested_home(b"not json"), None);
    }
}
