//! The HTTP client of the operator commands: one node's endpoint and one bearer
//! credential, a request per command, and every answer that is not the expected success
//! turned into one clear error (unreachable node, refused credential, the node's
//! problem+json with its request id, a redirect to another region).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use catalog::Secret;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

/// The longest wait for a TCP (and TLS) connection to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for a whole answer: every operator endpoint answers at once (long
/// work runs as a job).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: a page of 500 tenants or jobs is well under it.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Who is calling: the deployment's operator, or a tenant's API key.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    OperatorToken(Secret),
    ApiKey(Secret),
}

impl Credential {
    fn secret(&self) -> &Secret {
        match self {
            Self::OperatorToken(secret) | Self::ApiKey(secret) => secret,
        }
    }

    /// What to check when the node refuses it (never its value).
    fn refused(&self, status: StatusCode) -> String {
        let (what, where_from) = match self {
            Self::OperatorToken(_) => (
                "operator token",
                "--token, RESIDENCY_TOKEN or the state directory's operator_token",
            ),
            Self::ApiKey(_) => ("API key", "--key or RESIDENCY_API_KEY"),
        };
        if status == StatusCode::UNAUTHORIZED {
            format!("the node refused the {what} (401): check {where_from}")
        } else {
            format!("the {what} may not do this (403): check {where_from}")
        }
    }
}

/// A node's API, called with one credential.
pub(crate) struct Api {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: Url,
    credential: Credential,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A successful answer: parsed, and as the node sent it (what `--json` prints).
#[derive(Debug)]
pub(crate) struct Answer<T> {
    pub(crate) value: T,
    pub(crate) raw: String,
}

impl Api {
    /// A client of `endpoint` (`http://` or `https://`, verified against the platform's
    /// trust roots). Redirects are not followed: a `307` names the region to call instead.
    pub(crate) fn new(endpoint: &str, credential: Credential) -> anyhow::Result<Self> {
        let base = Url::parse(endpoint)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| anyhow!("the endpoint is not an http:// or https:// URL"))?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            base,
            credential,
        })
    }

    /// `segments` below the endpoint's path, each percent-encoded as one segment (an id
    /// can never reach another path), with `query` pairs whose value is set. An empty,
    /// `.` or `..` segment (which URLs drop or resolve) is refused.
    pub(crate) fn url(
        &self,
        segments: &[&str],
        query: &[(&str, Option<String>)],
    ) -> anyhow::Result<Url> {
        if segments
            .iter()
            .any(|segment| matches!(*segment, "" | "." | ".."))
        {
            bail!("an id cannot be empty, `.` or `..`");
        }
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("an http(s) URL has a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .filter_map(|(name, value)| value.as_deref().map(|value| (*name, value)))
            .collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        Ok(url)
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        url: Url,
        expected: StatusCode,
    ) -> anyhow::Result<Answer<T>> {
        self.call(Method::GET, url, None::<&()>, expected).await
    }

    /// Sends one request and reads its answer: `T` when the status is `expected`, an
    /// error saying what went wrong otherwise.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
        expected: StatusCode,
    ) -> anyhow::Result<Answer<T>> {
        let (_, answer) = self.call_accepting(method, url, body, &[expected]).await?;
        Ok(answer)
    }

    /// [`Api::call`] for an endpoint with more than one success (`200` done, `202` going
    /// on as a job): the status with the answer.
    pub(crate) async fn call_accepting<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
        accepted: &[StatusCode],
    ) -> anyhow::Result<(StatusCode, Answer<T>)> {
        let endpoint = self.endpoint_name();
        let (status, headers, bytes) = self.exchange(&endpoint, method, url, body).await?;
        if accepted.contains(&status) {
            let raw = String::from_utf8(bytes.to_vec())
                .map_err(|_| anyhow!("{endpoint}: the answer is not UTF-8 JSON"))?;
            let value = serde_json::from_str(&raw).map_err(|err| {
                anyhow!("{endpoint}: the answer ({status}) is not what this version of the CLI expects: {err}")
            })?;
            return Ok((status, Answer { value, raw }));
        }
        Err(self.failure(&endpoint, status, &headers, &bytes))
    }

    /// Sends one request whose successful answer, `expected`, has no body (a `204`).
    pub(crate) async fn call_without_answer(
        &self,
        method: Method,
        url: Url,
        expected: StatusCode,
    ) -> anyhow::Result<()> {
        let endpoint = self.endpoint_name();
        let (status, headers, bytes) = self.exchange(&endpoint, method, url, None::<&()>).await?;
        if status == expected {
            return Ok(());
        }
        Err(self.failure(&endpoint, status, &headers, &bytes))
    }

    /// Sends one request and reads its whole answer, within [`REQUEST_TIMEOUT`].
    async fn exchange(
        &self,
        endpoint: &str,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let request = self.request(method, &url, body)?;
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| no_answer(endpoint, &err))?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|err| anyhow!("{endpoint}: the answer could not be read: {err}"))?
                .to_bytes();
            anyhow::Ok((parts.status, parts.headers, bytes))
        })
        .await
        .map_err(|_| {
            anyhow!(
                "cannot reach the node at {endpoint}: no answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
    }

    /// The request, with the credential as a header marked sensitive.
    fn request(
        &self,
        method: Method,
        url: &Url,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", self.credential.secret().expose()))
                .map_err(|_| anyhow!("the token or key holds characters a header cannot carry"))?;
        bearer.set_sensitive(true);
        let builder = Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(AUTHORIZATION, bearer)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("residency/", env!("CARGO_PKG_VERSION")));
        let request = match body {
            Some(body) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(body)?))),
            None => builder.body(Full::default()),
        };
        request.context("build the request")
    }

    /// The endpoint as errors name it: scheme, host and port (never a path or query).
    fn endpoint_name(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    fn failure(
        &self,
        endpoint: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> anyhow::Error {
        let header = |name| {
            headers
                .get(name)
                .and_then(|value: &HeaderValue| value.to_str().ok())
        };
        if status.is_redirection() {
            let to = header(LOCATION).and_then(|location| Url::parse(location).ok());
            let target = to.map_or_else(
                || "another endpoint".to_owned(),
                |url| url.origin().ascii_serialization(),
            );
            return anyhow!(
                "{endpoint} redirects this request to {target} (the tenant's home region answers there): pass --endpoint {target}"
            );
        }
        let problem = serde_json::from_slice::<wire::Problem>(body).ok();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let request_id = problem
                .and_then(|problem| problem.request_id)
                .map(|id| format!(" (request id {id})"))
                .unwrap_or_default();
            return anyhow!("{}{request_id}", self.credential.refused(status));
        }
        match problem {
            Some(problem) => {
                let request_id = problem
                    .request_id
                    .map(|id| format!(" (request id {id})"))
                    .unwrap_or_default();
                // A busy or unreachable home region (503) and a rate limit (429) say when.
                let retry = header(RETRY_AFTER)
                    .map(|seconds| format!("; try again in {seconds} s"))
                    .unwrap_or_default();
                anyhow!(
                    "{endpoint} answered {}: {}: {}{request_id}{retry}",
                    problem.status,
                    problem.title,
                    problem.detail
                )
            }
            None => anyhow!("{endpoint} answered {status} (not a problem+json body)"),
        }
    }
}

/// Why no answer came, naming the endpoint (never the request's path or query, which
/// may carry ids).
fn no_answer(endpoint: &str, err: &hyper_util::client::legacy::Error) -> anyhow::Error {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut innermost = None;
    while let Some(inner) = cause {
        innermost = Some(inner.to_string());
        cause = inner.source();
    }
    let why = if err.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    let because = innermost
        .map(|text| format!(" ({text})"))
        .unwrap_or_default();
    anyhow!("cannot reach the node at {endpoint}: {why}{because}")
}

/// rustls with aws-lc-rs and the platform's trust roots. Without usable roots an https
/// endpoint fails to connect (named in the error) and http ones still work.
fn tls_config() -> rustls::ClientConfig {
    let versions = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports rustls' default protocol versions")
    };
    match versions().with_native_roots() {
        Ok(roots) => roots.with_no_client_auth(),
        Err(_) => versions()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}
