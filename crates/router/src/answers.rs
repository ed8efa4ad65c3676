//! The answers the router gives itself, without the local app or the home: `307`
//! redirects, `429` for a client address over its rate, `431` for a client head over its
//! limits, `400` for an unreadable body and `408` for one too slow, the
//! `503`s of an unreachable home, an unknown region or a routing loop, and the routing
//! headers (`X-Residency-Region`, `X-Residency-Via`) every routed answer carries.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use model::{RegionId, TenantId};

use crate::admission::{Admitted, HeadLimit};
use crate::body::Unread;
use crate::forwarding::{SendError, err_outcome};
use crate::limits::retry_after_secs;
use crate::metrics::Decision;
use crate::names;
use crate::problem;
use crate::router_core::RouterCore;
use crate::target::{Target, region_value};

impl RouterCore {
    pub(crate) fn redirect(&self, req: &Admitted, home: &RegionId) -> Response<Body> {
        let Some(target) = self.targets.get(home) else {
            return self.unknown_home(req, home);
        };
        let location = target
            .public
            .as_ref()
            .and_then(|origin| origin.join(req.parts.uri.path_and_query()))
            .and_then(|uri| HeaderValue::try_from(uri.to_string()).ok());
        let Some(location) = location else {
            tracing::error!(region = %home, "cannot redirect: the region's public endpoint is not an absolute URL");
            return self.unknown_home(req, home);
        };
        self.count(Decision::Redirect, "3xx");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        response.headers_mut().insert(header::LOCATION, location);
        if let Some(id) = req.parts.headers.get(names::REQUEST_ID) {
            response.headers_mut().insert(names::REQUEST_ID, id.clone());
        }
        self.routing_headers(&mut response, &target.region_header, true, None);
        response
    }

    pub(crate) fn unknown_home(&self, req: &Admitted, home: &RegionId) -> Response<Body> {
        tracing::error!(region = %home, "cannot route: the tenant's home region is not in this node's catalogue");
        self.count(Decision::Unrouted, "unknown_region");
        self.home_unreachable(req, &region_value(home))
    }

    /// `431` for a client's request over a `CLIENT_` limit, wherever it would be served: the
    /// node's server reads more, to leave room for the forwarding headers.
    pub(crate) fn head_too_large(&self, parts: &Parts, limit: HeadLimit) -> Response<Body> {
        self.count(Decision::Unrouted, "head_too_large");
        let detail = match limit {
            HeadLimit::Fields => format!(
                "the request carries more than {} header fields",
                wire::limits::CLIENT_MAX_HEADERS
            ),
            HeadLimit::Bytes => format!(
                "the request line and header fields are larger than {} bytes",
                wire::limits::CLIENT_MAX_HEAD_BYTES
            ),
        };
        problem::response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request-header-fields-too-large",
            &detail,
            parts.headers.get(names::REQUEST_ID),
        )
    }

    /// `400` for a body that failed, `408` for one not sent within the read deadline.
    pub(crate) fn unread_body(&self, parts: &Parts, unread: Unread) -> Response<Body> {
        let id = parts.headers.get(names::REQUEST_ID);
        match unread {
            Unread::Failed => {
                self.count(Decision::Unrouted, "bad_body");
                problem::response(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "the request body could not be read",
                    id,
                )
            }
            Unread::TimedOut => {
                self.count(Decision::Unrouted, "body_timeout");
                let mut response = problem::response(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "the request body was not received in time",
                    id,
                );
                // The rest of the body may still be on its way: this connection is done.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
        }
    }

    /// `429` with `Retry-After` for a client address over its rate.
    pub(crate) fn client_limited(&self, parts: &Parts, wait: Duration) -> Response<Body> {
        self.too_many(
            parts,
            wait,
            "client_address",
            "too many requests from this client address; retry after the Retry-After delay",
        )
    }

    /// `429` with `Retry-After` for a client address over its share of the lookups for
    /// tenants this node does not hold: no lookup is made.
    pub(crate) fn client_misses_limited(&self, parts: &Parts, wait: Duration) -> Response<Body> {
        self.too_many(
            parts,
            wait,
            "client_directory_misses",
            "too many requests for tenants this node does not hold from this client address; retry after the Retry-After delay",
        )
    }

    fn too_many(
        &self,
        parts: &Parts,
        wait: Duration,
        limit: &'static str,
        detail: &'static str,
    ) -> Response<Body> {
        self.count(Decision::Unrouted, "rate_limited");
        if let Some(m) = &self.metrics {
            m.limited(limit);
        }
        let mut response = problem::response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            detail,
            parts.headers.get(names::REQUEST_ID),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(wait)),
        );
        response
    }

    /// `503` with `Retry-After` for a tenant this node does not know while its budget of
    /// directory lookups is spent: no lookup is made.
    pub(crate) fn directory_busy(&self, req: &Admitted) -> Response<Body> {
        self.count(Decision::Unrouted, "directory_busy");
        if let Some(m) = &self.metrics {
            m.limited("directory_misses");
        }
        self.unavailable(
            req,
            "directory-busy",
            "too many lookups of tenants this node does not hold; try again shortly",
            &self.local_header,
        )
    }

    /// A request that already passed through this region on its way here: two regions
    /// each send the tenant to the other. That happens only while their directory caches
    /// disagree and neither trusts the other's forwarding signature (a forwarding secret
    /// or header version that differs between regions mid-deployment); a trusted
    /// forwarded request is answered `421` instead. Forwarding again would pass it back
    /// and forth until the upstream timeout, a new connection at every hop, so the chain
    /// ends here with a 503 and this node re-reads the tenant's entry.
    pub(crate) async fn routing_loop(
        self: &Arc<Self>,
        req: &Admitted,
        tenant: Option<TenantId>,
        home: &RegionId,
    ) -> Response<Body> {
        tracing::warn!(tenant = ?tenant, "routing loop: the request already passed through this region");
        self.count(Decision::Unrouted, "loop");
        if let Some(tenant) = tenant {
            Box::pin(Arc::clone(self).refresh_after_failure(tenant, home.clone())).await;
        }
        self.unavailable(
            req,
            "routing-loop",
            "the regions do not agree yet where the tenant is homed; try again shortly",
            &self.local_header,
        )
    }

    pub(crate) fn upstream_failed(
        &self,
        req: &Admitted,
        target: &Target,
        err: SendError,
    ) -> Response<Body> {
        if err == SendError::BadEndpoint {
            tracing::error!(region = %target.region, "cannot forward: the region's internal endpoint is not an absolute http URL");
        } else {
            tracing::warn!(region = %target.region, kind = err.kind(), "home region unreachable");
        }
        self.count(Decision::Forward, err_outcome(err));
        self.home_unreachable(req, &target.region_header)
    }

    /// `503` for a request that cannot reach `home`, the tenant's region.
    pub(crate) fn home_unreachable(&self, req: &Admitted, home: &HeaderValue) -> Response<Body> {
        self.unavailable(
            req,
            "home-region-unreachable",
            "the tenant's home region cannot be reached; try again shortly",
            home,
        )
    }

    /// `503` with `Retry-After`, naming `home` as the region that serves the tenant.
    pub(crate) fn unavailable(
        &self,
        req: &Admitted,
        slug: &str,
        detail: &str,
        home: &HeaderValue,
    ) -> Response<Body> {
        let mut response =
            problem::unavailable(slug, detail, req.parts.headers.get(names::REQUEST_ID));
        self.routing_headers(&mut response, home, true, None);
        response
    }

    /// `X-Residency-Region` (the home) and `X-Residency-Via` (the entry region: this one,
    /// or the signed entry region of a forwarded request). `force` overwrites what the
    /// app set; otherwise only missing headers are added, except that a forwarded
    /// request's `Via` is always the entry region.
    pub(crate) fn routing_headers(
        &self,
        response: &mut Response<Body>,
        home: &HeaderValue,
        force: bool,
        forwarded: Option<&HeaderValue>,
    ) {
        let h = response.headers_mut();
        let (region, via) = (names::RESIDENCY_REGION, names::RESIDENCY_VIA);
        if force {
            h.insert(region, home.clone());
        } else {
            h.entry(region).or_insert_with(|| home.clone());
        }
        match forwarded {
            Some(entry) => {
                h.insert(via, entry.clone());
                // The answer goes back to the entry node, over HTTP/2 when the link is
                // busy: its request id, different every time, as a literal never
                // indexed (see `signing::never_indexed`).
                if let Some(id) = h.get_mut(names::REQUEST_ID) {
                    id.set_sensitive(true);
                }
            }
            None if force => {
                h.insert(via, self.local_header.clone());
            }
            None => {
                h.entry(via).or_insert_with(|| self.local_header.clone());
            }
        }
    }
}
