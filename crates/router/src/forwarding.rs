//! Forwarding: a request for a tenant homed in another region, signed and sent to that
//! region's upstream (`hop`), with the client's hop-by-hop headers removed. A `421` from
//! the home corrects the directory entry and sends the request once more to the corrected
//! home (the correct-and-resend loop); a request that provably never left is sent again.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use hop::UpstreamError;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, header};
use model::{RegionId, TenantId, Transit};

use crate::admission::{Admitted, has_passed, request_id};
use crate::body::Prepared;
use crate::decision::call_local;
use crate::layer::{Inner, InnerBody};
use crate::metrics::{Decision, status_class};
use crate::router_core::RouterCore;
use crate::signing::{ClientAddress, Vouching};
use crate::target::Target;
use crate::{headers, names};

/// Why a forwarding attempt got no response, with the body when it was never sent.
pub(crate) struct SendFailure {
    kind: SendError,
    unsent: Option<Body>,
}

impl From<SendError> for SendFailure {
    fn from(kind: SendError) -> Self {
        Self { kind, unsent: None }
    }
}

/// Why a forwarding attempt got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// No connection could be made: the request provably never left this node.
    Connect,
    /// No response headers within the upstream timeout.
    Timeout,
    /// The connection failed after the request may have been (partly) sent.
    Other,
    /// The home region's internal endpoint is unusable (configuration).
    BadEndpoint,
}

impl SendError {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Other => "other",
            Self::BadEndpoint => "bad_endpoint",
        }
    }
}

impl RouterCore {
    /// Proxies the request to `home` (a region other than this one). `tenant` is set for
    /// tenant-scoped requests, whose `421` answers are corrected once.
    pub(crate) async fn forward<S, B>(
        self: Arc<Self>,
        inner: S,
        req: Admitted,
        mut prepared: Prepared,
        tenant: Option<TenantId>,
        mut home: RegionId,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Inner<B>,
        B: InnerBody,
    {
        if has_passed(&req.parts.headers, &self.local) {
            return Ok(self.routing_loop(&req, tenant, &home).await);
        }
        let client = req
            .client
            .map_or_else(ClientAddress::unknown, ClientAddress::ip);
        let forwarded = Vouching {
            entry_region: &self.local,
            client_address: client.as_str(),
            request_id: request_id(&req.parts),
        };
        let mut corrected = false;
        let mut resent = false;
        loop {
            let Some(target) = self.targets.get(&home) else {
                return Ok(self.unknown_home(&req, &home));
            };
            let Some(body) = prepared.take() else {
                // Only a replayable body is ever sent twice; this cannot happen.
                return Ok(self.upstream_failed(&req, target, SendError::Other));
            };
            match self.send(&req.parts, body, target, forwarded).await {
                Ok(response)
                    if response.status() == StatusCode::MISDIRECTED_REQUEST && !corrected =>
                {
                    let Some(tenant) = tenant else {
                        return Ok(self.proxied(response, target));
                    };
                    corrected = true;
                    let fresh = match Box::pin(self.directory.refresh(&tenant)).await {
                        Ok(Some(fresh)) if fresh.home != home => fresh,
                        _ => return Ok(self.proxied(response, target)),
                    };
                    tracing::info!(tenant = %tenant, stale = %home, home = %fresh.home, "directory entry corrected after 421");
                    if !prepared.is_replayable() {
                        // The body was streamed and is gone: the client retries, and its
                        // next request goes to the corrected home.
                        return Ok(self.proxied(response, target));
                    }
                    if let Some(m) = &self.metrics {
                        m.retry("misdirected");
                    }
                    if fresh.home == self.local {
                        let body = prepared.take().unwrap_or_default();
                        let mut response = Box::pin(call_local(inner, req, body)).await?;
                        self.count(Decision::Local, status_class(response.status()));
                        self.routing_headers(&mut response, &self.local_header, false, None);
                        return Ok(response);
                    }
                    if fresh.transit == Transit::Redirect {
                        return Ok(self.redirect(&req, &fresh.home));
                    }
                    home = fresh.home;
                }
                Ok(response) => return Ok(self.proxied(response, target)),
                Err(SendFailure { kind: err, unsent }) => {
                    if let Some(body) = unsent {
                        // Never sent: the body (even a streamed one) can go again.
                        prepared.restore(body);
                    }
                    let retry = !resent
                        && prepared.is_sendable()
                        && match err {
                            SendError::Connect => true,
                            SendError::Other => is_idempotent(&req.parts.method),
                            SendError::Timeout | SendError::BadEndpoint => false,
                        };
                    if !retry {
                        let response = self.upstream_failed(&req, target, err);
                        if let Some(tenant) = tenant {
                            Box::pin(Arc::clone(&self).refresh_after_failure(tenant, home)).await;
                        }
                        return Ok(response);
                    }
                    resent = true;
                    if let Some(m) = &self.metrics {
                        m.retry(err.kind());
                    }
                }
            }
        }
    }

    /// One attempt: the request, signed, to the target's internal endpoint.
    pub(crate) async fn send(
        &self,
        parts: &Parts,
        body: Body,
        target: &Target,
        forwarded: Vouching<'_>,
    ) -> Result<Response<Body>, SendFailure> {
        let Some(upstream) = &target.internal else {
            return Err(SendError::BadEndpoint.into());
        };
        let Some(uri) = upstream.target(parts.uri.path_and_query()) else {
            return Err(SendError::BadEndpoint.into());
        };
        let (mut out, ()) = Request::new(()).into_parts();
        out.method = parts.method.clone();
        out.uri = uri;
        out.version = http::Version::HTTP_11;
        out.headers = forward_headers(&parts.headers);
        out.headers.insert(header::HOST, upstream.host().clone());
        // Appended after the client's (and earlier regions') members, as RFC 9110 §7.6.3
        // asks of a proxy; `has_passed` reads them to stop a loop.
        out.headers.append(header::VIA, self.via.clone());
        self.signer.sign(&mut out, forwarded, &target.region);
        let request = Request::from_parts(out, body);

        let started = Instant::now();
        let result = upstream
            .send(request, started + self.upstream_timeout)
            .await;
        let outcome = match result {
            Err(UpstreamError::TimedOut) => Err(SendError::Timeout.into()),
            Err(UpstreamError::NotSent(request)) => Err(SendFailure {
                kind: SendError::Connect,
                unsent: Some(request.into_body()),
            }),
            Err(UpstreamError::Failed) => Err(SendError::Other.into()),
            Ok(response) => Ok(response),
        };
        if let Some(m) = &self.metrics {
            match &outcome {
                Ok(_) => {
                    if let Some(histogram) = &target.forward_duration {
                        histogram.observe(started.elapsed().as_secs_f64());
                    }
                }
                Err(failure) => m.upstream_error(target.region.as_str(), failure.kind.kind()),
            }
        }
        outcome
    }

    /// Re-reads the tenant's directory entry in the background after its home region
    /// failed one of its requests (at most once per
    /// [`FAILURE_REFRESH_INTERVAL`](crate::router_core::FAILURE_REFRESH_INTERVAL)). A home
    /// that no longer holds the tenant answers `421`, but when it closes the connection
    /// before the answer is read (a large streamed body), the failure is all this node
    /// sees; without the refresh its stale entry would send every request to the old
    /// home until the entry's TTL ran out. The client still gets the 503 it got.
    pub(crate) async fn refresh_after_failure(self: Arc<Self>, tenant: TenantId, failed: RegionId) {
        let first = self
            .refreshed_after_failure
            .entry(tenant)
            .or_insert(())
            .await
            .is_fresh();
        if !first {
            return;
        }
        tokio::spawn(async move {
            if let Ok(Some(fresh)) = self.directory.refresh(&tenant).await
                && fresh.home != failed
            {
                tracing::info!(tenant = %tenant, stale = %failed, home = %fresh.home, "directory entry corrected after an upstream failure");
            }
        });
    }

    /// The home region's response, streamed back with the routing headers.
    pub(crate) fn proxied(&self, response: Response<Body>, target: &Target) -> Response<Body> {
        self.count(Decision::Forward, status_class(response.status()));
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let mut response = Response::from_parts(parts, body);
        self.routing_headers(&mut response, &target.region_header, false, None);
        response
            .headers_mut()
            .insert(names::RESIDENCY_VIA, self.local_header.clone());
        response
    }
}

pub(crate) fn err_outcome(err: SendError) -> &'static str {
    match err {
        SendError::Connect | SendError::Other => "unreachable",
        SendError::Timeout => "timeout",
        SendError::BadEndpoint => "bad_endpoint",
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and `Connection` names more).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The header names listed in `Connection` (hop-by-hop too).
fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect()
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and those named by `Connection`.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    for name in connection_named(h) {
        h.remove(name);
    }
    let names: Vec<HeaderName> = h.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    for name in names {
        h.remove(name);
    }
}

/// The headers a forwarded request carries: the client's, less hop-by-hop headers, the
/// `Host` (set from the home endpoint) and anything the router itself sets.
fn forward_headers(client: &HeaderMap) -> HeaderMap {
    let named = if client.contains_key(header::CONNECTION) {
        connection_named(client)
    } else {
        Vec::new()
    };
    // Room for what the signer adds.
    let mut h = HeaderMap::with_capacity(client.keys_len() + 6);
    for (name, value) in client {
        let dropped = is_hop_by_hop(name)
            || name == header::HOST
            // The entry node answered any `Expect: 100-continue` itself.
            || name == header::EXPECT
            || name.as_str() == headers::ENTRY_REGION
            || name.as_str().starts_with(headers::FORWARDED_PREFIX)
            || named.contains(name);
        if !dropped {
            h.append(name.clone(), value.clone());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("eu.example"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(headers::ENTRY_REGION, HeaderValue::from_static("us-east-1"));
        h.insert(headers::FORWARDED, HeaderValue::from_static("v2;at=1"));
        h.insert(
            "x-residency-forwarded-for",
            HeaderValue::from_static("6.6.6.6"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let out = forward_headers(&h);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out.contains_key(header::AUTHORIZATION));
    }
}
