//! Admission: what the router does to a request before deciding where it goes. The
//! client's head is held to the `CLIENT_` limits, every request gets a request id this node
//! keeps, and forwarding headers stay only with a valid signature (the trusted entry region
//! is set from them); `Via` tells a request that already passed through this region.
//! Every request then takes a token from its client address's bucket.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use model::{ClientKey, RegionId};

use crate::limits::{Client, load_balancer_client};
use crate::router_core::RouterCore;
use crate::signing::{ForwardError, Forwarded};
use crate::target::region_value;
use crate::{headers, names};

/// The facts of one request the router carries through its decision.
pub(crate) struct Admitted {
    pub(crate) parts: Parts,
    /// Set when the request arrived with a valid forwarding signature: the entry region.
    pub(crate) forwarded: Option<HeaderValue>,
    /// The connection's peer, when the server handed it to the service rather than to
    /// the request (see [`RouterService::for_peer`]).
    pub(crate) peer: Option<SocketAddr>,
    /// The client's address as this node determined it (see
    /// [`RouterCore::limit_client`]): what a forwarded request is signed for. `None` on a
    /// request forwarded to this node, and when the server gave no peer.
    pub(crate) client: Option<IpAddr>,
    /// The client as per-client limits know it: from the address a trusted region signed
    /// on a forwarded request, else the one [`RouterCore::limit_client`] determined.
    pub(crate) origin: ClientKey,
}

impl Admitted {
    /// The request for the local app, with `ConnectInfo` for its handlers when the peer
    /// came with the connection.
    pub(crate) fn into_local(self, body: Body) -> Request<Body> {
        let mut parts = self.parts;
        if let Some(peer) = self.peer {
            parts.extensions.insert(ConnectInfo(peer));
        }
        // What the API shares its budget for unverified tokens out by.
        parts.extensions.insert(self.origin);
        Request::from_parts(parts, body)
    }
}

impl RouterCore {
    /// Removes every client copy of the trusted entry-region header, and the forwarding
    /// headers unless their signature verifies. A verified request gets the entry-region
    /// header and a [`Forwarded`] extension.
    pub(crate) fn admit(&self, parts: &mut Parts) -> Option<HeaderValue> {
        parts.headers.remove(names::ENTRY_REGION);
        let has_forwarding = parts
            .headers
            .keys()
            .any(|name| name.as_str().starts_with(headers::FORWARDED_PREFIX));
        if !has_forwarding {
            return None;
        }
        let verified = self
            .signer
            .verify_in_place(parts, &self.local, SystemTime::now())
            .and_then(|verified| {
                // A catalogue region's id and header value are shared, not built per
                // request; the catalogue's few regions are compared, not hashed.
                let (entry_region, entry) = match self
                    .targets
                    .values()
                    .find(|target| target.region.as_str() == verified.entry_region)
                {
                    Some(target) => (target.region.clone(), target.region_header.clone()),
                    None => {
                        let region = RegionId::parse(verified.entry_region)
                            .map_err(|_| ForwardError::Malformed("entry region"))?;
                        let header = region_value(&region);
                        (region, header)
                    }
                };
                let forwarded = Forwarded {
                    entry_region,
                    client_address: verified.client_address.to_owned(),
                    request_id: verified.request_id.to_owned(),
                };
                Ok((forwarded, entry))
            });
        match verified {
            Ok((forwarded, entry)) => {
                parts.headers.insert(names::ENTRY_REGION, entry.clone());
                parts.extensions.insert(forwarded);
                Some(entry)
            }
            Err(err) => {
                tracing::debug!(reason = %err, "stripping untrusted forwarding headers");
                if let Some(m) = &self.metrics {
                    m.refused_signature(err.kind());
                }
                strip_forwarding(&mut parts.headers);
                None
            }
        }
    }

    /// Takes a token from the bucket of the request's client, and returns the client's
    /// address for the signed forwarding header (`None` on a forwarded request, or
    /// without a peer) and its key; `Err(wait)` when the bucket is empty.
    ///
    /// The client is the address a trusted region signed, on a request it forwarded (so
    /// that its clients are not all counted as one); otherwise the load balancer's
    /// `X-Forwarded-For` entry when this node sits behind one; otherwise the TCP peer.
    pub(crate) fn limit_client(
        &self,
        parts: &Parts,
        forwarded: bool,
        peer: Option<SocketAddr>,
    ) -> Result<(Option<IpAddr>, ClientKey), Duration> {
        if forwarded {
            let signed = parts
                .extensions
                .get::<Forwarded>()
                .map(|forwarded| forwarded.client_address.as_str());
            let client = match signed {
                Some(text) => text.parse().map_or(Client::Named(text), Client::Ip),
                None => Client::Unknown,
            };
            let key = self.client_keys.key(client);
            return self.client_limiter.check(key).map(|()| (None, key));
        }
        let peer = peer
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0)
            })
            .map(|peer| peer.ip());
        let client = if self.behind_load_balancer {
            load_balancer_client(&parts.headers).or(peer)
        } else {
            peer
        };
        let limited = client.map_or(Client::Unknown, Client::Ip);
        let key = self.client_keys.key(limited);
        self.client_limiter.check(key).map(|()| (client, key))
    }
}

/// Which client limit of [`wire::limits`] a request head is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadLimit {
    Fields,
    Bytes,
}

/// Whether a client's request head is over a `CLIENT_` limit. Its size is counted as
/// HTTP/1.1 writes it (`name: value` lines), which is at most what the client sent.
pub(crate) fn head_over_client_limit(parts: &Parts) -> Option<HeadLimit> {
    if parts.headers.len() > wire::limits::CLIENT_MAX_HEADERS {
        return Some(HeadLimit::Fields);
    }
    // "METHOD target HTTP/1.1\r\n" (the space after the method is the `+ 1`) and the
    // blank line that ends the head.
    let line = parts.method.as_str().len()
        + 1
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n\r\n".len();
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    (line + fields > wire::limits::CLIENT_MAX_HEAD_BYTES).then_some(HeadLimit::Bytes)
}

/// Makes a client's request carry a request id this node keeps (see
/// [`telemetry::keeps_client_request_id`]): its own, or a generated one in its place. Done
/// once, on arrival, so that every answer the router gives itself (a redirect, a `503`)
/// names the same id a served or forwarded request would.
pub(crate) fn ensure_request_id(parts: &mut Parts) {
    let kept = parts
        .headers
        .get(names::REQUEST_ID)
        .is_some_and(|v| telemetry::keeps_client_request_id(v.as_bytes()));
    if !kept {
        let mut text = [0u8; telemetry::REQUEST_ID_LEN];
        telemetry::new_request_id(&mut text);
        // The header's bytes are shared with its forwarded copy from the start: a copied
        // (vector-backed) value allocates again when first cloned.
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from_owner(text)) {
            parts.headers.insert(names::REQUEST_ID, value);
        }
    }
}

/// The request id [`ensure_request_id`] left in place, as text (already header-safe: a
/// kept id is visible text by the same rule).
pub(crate) fn request_id(parts: &Parts) -> &str {
    parts
        .headers
        .get(names::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn strip_forwarding(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(headers::FORWARDED_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// `1.1 <region>`: a region's member of the `Via` header. Region ids are public names, so
/// nothing about the deployment's hosts leaks.
pub(crate) fn via_member(region: &RegionId) -> HeaderValue {
    HeaderValue::from_str(&format!("1.1 {region}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 invalid"))
}

/// Whether `Via` names `region` as a recipient: the request was forwarded by that region's
/// node before. Members are `protocol pseudonym [comment]`, comma-separated, in any number
/// of header lines.
pub(crate) fn has_passed(headers: &HeaderMap, region: &RegionId) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|member| member.split_whitespace().nth(1) == Some(region.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_names_the_regions_a_request_passed_through() {
        let us = RegionId::parse("us-east-1").expect("region");
        let via = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for line in lines {
                h.append(header::VIA, HeaderValue::from_str(line).expect("value"));
            }
            has_passed(&h, &us)
        };
        assert!(!via(&[]));
        assert_eq!(via_member(&us), "1.1 us-east-1");
        assert!(via(&["1.1 us-east-1"]));
        assert!(
            via(&["1.0 fred, 1.1 us-east-1 (residency)"]),
            "a member with a comment"
        );
        assert!(
            via(&["1.1 eu-west-1", "HTTP/1.1 us-east-1"]),
            "a later header line"
        );
        assert!(
            !via(&["1.1 us-east-12, 1.1 eu-west-1"]),
            "another region's name"
        );
        assert!(!via(&["us-east-1"]), "a pseudonym needs its protocol");
    }

    #[test]
    fn a_head_is_measured_as_http_1_1_writes_it() {
        let limit = wire::limits::CLIENT_MAX_HEAD_BYTES;
        // A request whose written head is exactly `size` bytes.
        let head_of = |size: usize| {
            let line = "GET /v1/tenants/t/collections/c?q=1 HTTP/1.1\r\n";
            let fixed = "host: eu.example\r\nx-pad: \r\n\r\n";
            let pad = "a".repeat(size - line.len() - fixed.len());
            let written = format!("{line}host: eu.example\r\nx-pad: {pad}\r\n\r\n");
            assert_eq!(written.len(), size);
            let (parts, ()) = Request::get("/v1/tenants/t/collections/c?q=1")
                .header(header::HOST, "eu.example")
                .header("x-pad", pad)
                .body(())
                .expect("request")
                .into_parts();
            parts
        };
        assert_eq!(head_over_client_limit(&head_of(limit)), None);
        assert_eq!(
            head_over_client_limit(&head_of(limit + 1)),
            Some(HeadLimit::Bytes)
        );

        let fields = |count: usize| {
            let mut builder = Request::get("/");
            for i in 0..count {
                builder = builder.header(format!("x-f{i}"), "1");
            }
            builder.body(()).expect("request").into_parts().0
        };
        let most = wire::limits::CLIENT_MAX_HEADERS;
        assert_eq!(head_over_client_limit(&fields(most)), None);
        assert_eq!(
            head_over_client_limit(&fields(most + 1)),
            Some(HeadLimit::Fields)
        );
    }
}
