//! Request plumbing shared by the tenant API handlers: the per-request context (entry
//! region, bearer token), JSON bodies that fail as problem+json naming the field (never
//! echoing a value), and service errors as problem+json responses: a handler's `?` turns
//! a [`ServiceError`] into an [`ApiError`], whose problem names the request it answers.
//!
//! Authentication comes from the request head, before any body is read: a [`JsonBody`]
//! is only taken (not read) by the extractor, and [`JsonBody::read`] asks for proof of
//! authorization (a [`Caller`] or an [`OperatorGrant`]), so a handler cannot read or
//! parse a body before its caller is authorized; it reads within [`BODY_READ_DEADLINE`].

use std::convert::Infallible;
use std::marker::PhantomData;
use std::time::Duration;

use audit::Action;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::Access;
use serde::de::DeserializeOwned;
use service::{Attempt, Caller, OperatorGrant, RegionService, RequestContext, ServiceError};
use store::ReadConsistency;
use wire::Problem;

use crate::NodeState;
use crate::handlers::{Target, tenant_id};

/// Largest JSON body accepted (files stream separately, with their own limit).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// How long a JSON body may take to arrive, once its caller is authorized.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(10);

/// How long a streamed upload (a file) may go without a byte arriving.
pub const UPLOAD_IDLE_DEADLINE: Duration = Duration::from_secs(30);

/// A streamed body (of an authorized caller: it is taken as a [`Body`] and only polled
/// after authorization) whose chunks must each arrive within `deadline`. When one does
/// not, the stream ends with an error and `stalled` is set, so that the handler answers
/// [`ServiceError::BodyTimeout`] rather than a body that merely ended early.
pub fn within_idle_deadline(
    body: Body,
    deadline: Duration,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, envelope::objects::ObjectStoreError>> {
    use futures::StreamExt as _;
    futures::stream::unfold(Some(body.into_data_stream()), move |stream| {
        let stalled = stalled.clone();
        async move {
            let mut stream = stream?;
            match tokio::time::timeout(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                Ok(Some(Err(err))) => Some((
                    Err(envelope::objects::ObjectStoreError::Body(err.to_string())),
                    None,
                )),
                Ok(None) => None,
                Err(_) => {
                    stalled.store(true, std::sync::atomic::Ordering::SeqCst);
                    Some((
                        Err(envelope::objects::ObjectStoreError::Body(
                            "the upload stalled".to_owned(),
                        )),
                        None,
                    ))
                }
            }
        }
    })
}

/// Who is asking, through which region, and the node that answers.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub bearer: Option<String>,
    pub context: RequestContext,
    state: NodeState,
}

impl Ctx {
    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    /// The region's use cases.
    pub fn service(&self) -> &RegionService {
        self.state.service()
    }

    /// Authenticates and authorizes a call on `target` (denials are audited).
    pub async fn authorize(
        &self,
        target: Target<'_>,
        access: Access,
        action: Action,
    ) -> Result<Caller, ServiceError> {
        let tenant = tenant_id(target.tenant)?;
        self.service()
            .authorize(
                self.bearer(),
                &tenant,
                access,
                Attempt {
                    action,
                    resource: &target.resource,
                },
                &self.context,
            )
            .await
    }

    /// Checks that the caller is the operator.
    pub async fn authorize_operator(&self) -> Result<OperatorGrant, ServiceError> {
        self.service()
            .authorize_operator_from(self.bearer(), self.context.client)
            .await
    }

    /// The read consistency the request asks for with `X-Consistency-Token`, if any.
    pub fn consistency(&self, headers: &HeaderMap) -> Result<ReadConsistency, ServiceError> {
        let token = headers
            .get(wire::headers::CONSISTENCY_TOKEN)
            .map(|value| value.to_str().unwrap_or("\u{0}"));
        self.service().consistency(token)
    }
}

impl FromRequestParts<NodeState> for Ctx {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &NodeState,
    ) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get(wire::headers::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(service::access::bearer_token)
            .map(str::to_owned);
        Ok(Self {
            context: RequestContext {
                request_id,
                via_region: state.entry_region(&parts.headers),
                client: parts.extensions.get::<model::ClientKey>().copied(),
            },
            bearer,
            state: state.clone(),
        })
    }
}

/// A service error as the answer to the request being served.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = match &self.0 {
            ServiceError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ServiceError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            ServiceError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ServiceError::VersionMismatch { .. } => {
                (StatusCode::PRECONDITION_FAILED, "version-mismatch")
            }
            ServiceError::Conflict(_) | ServiceError::StateConflict(_) => {
                (StatusCode::CONFLICT, "conflict")
            }
            ServiceError::SchemaConflict { .. } => (StatusCode::CONFLICT, "schema-conflict"),
            ServiceError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
            }
            ServiceError::Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, "misdirected"),
            ServiceError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            ServiceError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ServiceError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request-timeout"),
            ServiceError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ServiceError::TransactionConflict { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "transaction-conflict")
            }
            ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let detail = match &self.0 {
            ServiceError::Internal(cause) => {
                let request_id = crate::problem::request_id().unwrap_or_default();
                let chain = store::with_causes(cause.as_ref());
                tracing::error!(request_id = %request_id, "failed to answer: {chain}");
                "internal error; the request id identifies it in the logs".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = crate::problem::respond(Problem::new(status, slug, detail));
        let headers = response.headers_mut();
        match &self.0 {
            ServiceError::Unavailable { retry_after, .. }
            | ServiceError::TransactionConflict { retry_after }
            | ServiceError::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            ServiceError::Misdirected { home } => {
                if let Ok(value) = HeaderValue::from_str(home.as_str()) {
                    headers.insert(wire::headers::RESIDENCY_REGION, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// A JSON body of at most [`MAX_JSON_BODY`] bytes, not read yet: the extractor only
/// takes it, [`JsonBody::read`] reads and parses it for an authorized caller. Malformed
/// JSON is 400, a body that does not fit the type is 422 naming the field, an oversized
/// body 413, a body slower than [`BODY_READ_DEADLINE`] 408; no message repeats a value
/// from the body.
#[derive(Debug)]
pub struct JsonBody<T> {
    body: Body,
    of: PhantomData<fn() -> T>,
}

/// Proof that a request's caller is authorized: only these let a body be read.
pub trait Authorized: sealed::Sealed {}

impl Authorized for Caller {}
impl Authorized for OperatorGrant {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for service::Caller {}
    impl Sealed for service::OperatorGrant {}
}

impl<T, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Infallible;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            body: request.into_body(),
            of: PhantomData,
        })
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// Reads and parses the body, once `authorized` proves the caller may make the call.
    pub async fn read(self, authorized: &impl Authorized) -> Result<T, ServiceError> {
        let _ = authorized;
        let bytes = read_within(self.body, MAX_JSON_BODY, BODY_READ_DEADLINE).await?;
        parse_json(&bytes)
    }
}

/// The whole body, at most `limit` bytes, arriving within `deadline`.
async fn read_within(
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, ServiceError> {
    tokio::time::timeout(deadline, read_limited(body, limit))
        .await
        .map_err(|_| ServiceError::BodyTimeout { limit: deadline })?
}

async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ServiceError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ServiceError::TooLarge {
                limit: limit as u64,
            }
        } else {
            ServiceError::BadRequest("the request body could not be read".to_owned())
        }
    })
}

/// Deserializes JSON, describing failures by path and kind only.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut deserializer);
    let not_json = || ServiceError::BadRequest("the body is not valid JSON".to_owned());
    match parsed {
        Ok(value) => {
            deserializer.end().map_err(|_| not_json())?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(not_json());
            }
            let message = inner.to_string();
            let (field, reason) =
                if let Some(missing) = between_backticks(&message, "missing field") {
                    let field = if path == "." || path.is_empty() {
                        missing.to_owned()
                    } else {
                        format!("{path}.{missing}")
                    };
                    (field, "is required".to_owned())
                } else if message.starts_with("unknown field") {
                    (path, "is not an allowed field".to_owned())
                } else {
                    (path, "has the wrong type or value".to_owned())
                };
            Err(ServiceError::invalid(field, reason))
        }
    }
}

fn between_backticks<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    let start = rest.find('`')? + 1;
    let end = rest[start..].find('`')? + start;
    Some(&rest[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends its first bytes and then nothing, for ever.
    fn stalled_body() -> Body {
        let first = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"data\": "))
        });
        Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stalls_ends_with_an_error_and_says_so() {
        use futures::StreamExt as _;
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stream = std::pin::pin!(within_idle_deadline(
            stalled_body(),
            UPLOAD_IDLE_DEADLINE,
            stalled.clone()
        ));
        let started = tokio::time::Instant::now();
        assert!(
            matches!(stream.next().await, Some(Ok(_))),
            "the first chunk"
        );
        assert!(
            matches!(stream.next().await, Some(Err(_))),
            "then the deadline"
        );
        assert!(stream.next().await.is_none());
        assert_eq!(started.elapsed(), UPLOAD_IDLE_DEADLINE);
        assert!(stalled.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_deadline_is_a_timeout() {
        let started = tokio::time::Instant::now();
        let err = read_within(stalled_body(), MAX_JSON_BODY, BODY_READ_DEADLINE)
            .await
            .expect_err("never finishes");
        assert!(matches!(err, ServiceError::BodyTimeout { .. }), "{err:?}");
        assert_eq!(started.elapsed(), BODY_READ_DEADLINE);
        let response = ApiError(err).into_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        age: u32,
    }

    fn field_of(err: ServiceError) -> (String, String) {
        match err {
            ServiceError::Invalid { field, reason } => (field, reason),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field_and_never_the_value() {
        let (field, reason) = field_of(
            parse_json::<Sample>(br#"{"name": "SECRET-VALUE", "age": "SECRET-2"}"#)
                .expect_err("refused"),
        );
        assert_eq!(field, "age");
        assert!(!reason.contains("SECRET"), "{reason}");
        let (field, reason) =
            field_of(parse_json::<Sample>(br#"{"name": "x"}"#).expect_err("refused"));
        assert_eq!((field.as_str(), reason.as_str()), ("age", "is required"));
        let (field, _) = field_of(
            parse_json::<Sample>(br#"{"name": "x", "age": 1, "extra": 2}"#).expect_err("refused"),
        );
        assert_eq!(field, "extra");
        assert!(matches!(
            parse_json::<Sample>(b"{not json"),
            Err(ServiceError::BadRequest(_))
        ));
    }
}
