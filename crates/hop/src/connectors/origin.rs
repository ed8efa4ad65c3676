//! An absolute http(s) endpoint as the transport dials it and as redirects name it:
//! scheme, authority and a path prefix.

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// An absolute http(s) endpoint: scheme, authority and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// A path prefix without trailing `/` (usually empty).
    prefix: String,
}

impl Origin {
    /// The origin of an absolute `http://` or `https://` URI; `None` for anything else.
    #[must_use]
    pub fn parse(uri: &Uri) -> Option<Self> {
        let scheme = uri.scheme()?.clone();
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return None;
        }
        Some(Self {
            scheme,
            authority: uri.authority()?.clone(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    #[must_use]
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    #[must_use]
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `path` under this origin's prefix.
    #[must_use]
    pub fn path(&self, path: Option<&PathAndQuery>) -> Option<PathAndQuery> {
        match (self.prefix.is_empty(), path) {
            (true, Some(p)) => Some(p.clone()),
            (true, None) => Some(PathAndQuery::from_static("/")),
            (false, p) => {
                let p = p.map_or("/", PathAndQuery::as_str);
                PathAndQuery::try_from(format!("{}{p}", self.prefix)).ok()
            }
        }
    }

    /// The absolute URL of `path` under this origin.
    #[must_use]
    pub fn join(&self, path: Option<&PathAndQuery>) -> Option<Uri> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.path(path)?)
            .build()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_with_a_prefix_keeps_it() {
        let origin =
            Origin::parse(&Uri::from_static("http://10.0.0.1:8443/edge/")).expect("origin");
        let joined = origin
            .join(Some(&PathAndQuery::from_static("/v1/tenants")))
            .expect("joined");
        assert_eq!(joined.to_string(), "http://10.0.0.1:8443/edge/v1/tenants");
        assert!(Origin::parse(&Uri::from_static("/relative")).is_none());
    }
}
