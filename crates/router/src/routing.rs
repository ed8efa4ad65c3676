//! Which requests the router must place: tenant-scoped paths (by their tenant id) and
//! tenant creation. Everything else is served by the local node.

use std::borrow::Cow;

use http::Method;
use model::TenantId;

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
