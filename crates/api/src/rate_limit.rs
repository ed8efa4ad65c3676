//! Per-key rate limiting: a token bucket per API key id (or per operator / anonymous
//! caller), so one noisy key cannot starve a region. Over the limit → 429 with
//! `Retry-After`. The key id is the public part of a token; the bucket never sees secrets.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use wire::Problem;

use crate::NodeState;

/// Requests per second each key may make on average, and the burst it may save up.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 1000.0,
            burst: 2000.0,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Buckets of recently active keys (idle ones expire, so memory stays bounded).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// Takes one token from `key`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let limit = self.limit;
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: limit.burst,
                refilled: Instant::now(),
            }))
        });
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / limit.per_second,
            ))
        }
    }
}

/// Which bucket a request draws from: the key id of an API-key token, else the caller
/// kind. Parsing is syntactic only; authentication happens later.
fn bucket_of(request: &Request) -> String {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match bearer.and_then(service::access::PresentedKey::parse) {
        Some(key) => format!("key:{}", key.key_id),
        None if bearer.is_some() => "bearer".to_owned(),
        None => "anonymous".to_owned(),
    }
}

pub(crate) async fn limit(
    State(state): State<NodeState>,
    request: Request,
    next: Next,
) -> Response {
    let bucket = bucket_of(&request);
    match state.rate_limiter().check(&bucket) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests for this key; retry after the Retry-After delay",
            );
            let mut response = crate::problem::respond(problem, request.headers());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_then_refills() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").expect_err("burst spent");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "keys have their own buckets");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check("a").is_ok());
    }
}
