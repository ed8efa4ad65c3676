//! Which requests the router must place: tenant-scoped paths (by their tenant id),
//! tenant creation, and a tenant listing that names another region
//! (`GET /v1/tenants?home_region=`). Everything else is served by the local node.

use std::borrow::Cow;

use http::{Method, Uri};
use model::{RegionId, TenantId};

/// What a request is, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Not tenant-scoped (operational endpoints, `/v1/audit/keys`, the OpenAPI document,
    /// malformed tenant ids): the local node answers.
    Local,
    /// `POST /v1/tenants`: goes to the requested home region.
    CreateTenant,
    /// `/v1/tenants/{tenant}` and everything under it.
    Tenant(TenantId),
}

const TENANTS: &str = "/v1/tenants";

pub(crate) fn classify(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix(TENANTS) else {
        return Route::Local;
    };
    if rest.is_empty() {
        return if method == Method::POST {
            Route::CreateTenant
        } else {
            Route::Local
        };
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Route::Local;
    };
    let segment = rest.split('/').next().unwrap_or_default();
    // axum percent-decodes path parameters, so an encoded id names the same tenant.
    let segment = percent_decode(segment);
    match TenantId::parse(&segment) {
        Ok(tenant) => Route::Tenant(tenant),
        Err(_) => Route::Local,
    }
}

/// The region a `GET /v1/tenants` asks to list (`?home_region=`): that region's node
/// lists its tenants, so the request goes there. `None` for any other request, and for a
/// listing that names no region or not a valid region id (the local node answers it).
pub(crate) fn listed_region(method: &Method, uri: &Uri) -> Option<RegionId> {
    if method != Method::GET || uri.path() != TENANTS {
        return None;
    }
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("home_region="))
        .and_then(|raw| RegionId::parse(&percent_decode(raw)).ok())
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60";

    fn tenant() -> TenantId {
        TenantId::parse(T).expect("tenant")
    }

    #[test]
    fn tenant_scoped_paths_name_their_tenant() {
        for path in [
            format!("/v1/tenants/{T}"),
            format!("/v1/tenants/{T}/"),
            format!("/v1/tenants/{T}/collections/c/records/r/files/f"),
            "/v1/tenants/%32f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60/keys".to_owned(),
        ] {
            assert_eq!(
                classify(&Method::GET, &path),
                Route::Tenant(tenant()),
                "{path}"
            );
        }
    }

    #[test]
    fn a_listing_names_the_region_it_lists() {
        let listed = |method: Method, uri: &str| {
            listed_region(&method, &uri.parse::<Uri>().expect("uri")).map(|r| r.to_string())
        };
        let us = Some("us-east-1".to_owned());
        assert_eq!(listed(Method::GET, "/v1/tenants?home_region=us-east-1"), us);
        assert_eq!(
            listed(
                Method::GET,
                "/v1/tenants?limit=5&home_region=us%2Deast-1&cursor=x"
            ),
            us
        );
        for (method, uri) in [
            (Method::GET, "/v1/tenants"),
            (Method::GET, "/v1/tenants?limit=5"),
            (Method::GET, "/v1/tenants?home_region=Not%20A%20Region"),
            (Method::GET, "/v1/tenants/?home_region=us-east-1"),
            (Method::POST, "/v1/tenants?home_region=us-east-1"),
            (Method::GET, "/healthz?home_region=us-east-1"),
        ] {
            assert_eq!(listed(method.clone(), uri), None, "{method} {uri}");
        }
    }

    #[test]
    fn everything_else_is_local() {
        for (method, path) in [
            (Method::GET, "/healthz"),
            (Method::GET, "/metrics"),
            (Method::GET, "/v1/audit/keys"),
            (Method::GET, "/v1/openapi.json"),
            (Method::GET, "/v1/tenants"),
            (Method::POST, "/v1/tenants/"),
            (Method::POST, "/v1/tenantsx"),
            (Method::GET, "/v1/tenants/not-a-tenant/keys"),
            (Method::GET, "/v1/tenants/%zz"),
        ] {
            assert_eq!(classify(&method, path), Route::Local, "{method} {path}");
        }
        assert_eq!(classify(&Method::POST, "/v1/tenants"), Route::CreateTenant);
    }
}
