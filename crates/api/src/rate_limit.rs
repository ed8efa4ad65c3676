//! Per-key rate limiting: a token bucket per bearer token (each API key, the operator
//! token), so one noisy key cannot starve a region. Over the limit → 429 with
//! `Retry-After`. Buckets are found by a keyed hash of the whole token (a random key per
//! process): a caller who knows a key's id but not its secret draws from a bucket of its
//! own and cannot drain the key's. No token is kept, only the hash.

use std::hash::{BuildHasher, RandomState};
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
    buckets: moka::sync::Cache<u64, Arc<Mutex<Bucket>>>,
    /// Keys the bucket hash, so that nobody can aim tokens at one bucket.
    hasher: RandomState,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one token from the bucket of `bearer` (the `Authorization: Bearer` value;
    /// `None` shares one bucket among requests without one); `Err(wait)` when it is empty.
    pub fn check(&self, bearer: Option<&str>) -> Result<(), Duration> {
        let limit = self.limit;
        let key = self.hasher.hash_one(bearer);
        let bucket = self.buckets.get_with(key, || {
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

/// The bearer token a request's bucket is found by. Authentication happens later: a
/// wrong token only ever drains its own bucket.
fn bearer_of(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

pub(crate) async fn limit(
    State(state): State<NodeState>,
    request: Request,
    next: Next,
) -> Response {
    match state.rate_limiter().check(bearer_of(&request)) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests for this key; retry after the Retry-After delay",
            );
            let mut response = crate::problem::respond(problem);
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
            assert!(limiter.check(Some("a")).is_ok());
        }
        let wait = limiter.check(Some("a")).expect_err("burst spent");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            limiter.check(Some("b")).is_ok(),
            "keys have their own buckets"
        );
        assert!(
            limiter.check(None).is_ok(),
            "so do requests without a token"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check(Some("a")).is_ok());
    }
}
