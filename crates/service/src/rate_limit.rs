//! Token buckets for callers: one per *verified* caller (each API key by tenant and key
//! id, the operator token), and one shared by every token that does not verify (malformed,
//! unknown key, wrong secret, revoked). A bucket is found by what authentication proved,
//! never by the string a client sent, so junk tokens cannot each get a fresh burst and a
//! caller who knows a key's id but not its secret cannot drain that key's bucket.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use model::TenantId;

/// Requests per second a bucket refills by, and the burst it may save up.
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

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// The deployment's operator token (verified).
    Operator,
    /// A verified API key.
    ApiKey { tenant: TenantId, key_id: String },
    /// Every token that did not verify, shared: what bounds the database lookups of
    /// uncached key ids that strangers can cause.
    Unverified,
}

#[derive(Debug)]
struct Tokens {
    tokens: f64,
    refilled: Instant,
}

/// Buckets of recently active callers (idle ones expire, so memory stays bounded; the
/// number of buckets is bounded by the number of verified keys plus two).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: moka::sync::Cache<Bucket, Arc<Mutex<Tokens>>>,
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

    /// Takes one token from `bucket`; `Err(wait)` when it is empty.
    pub fn check(&self, bucket: Bucket) -> Result<(), Duration> {
        let limit = self.limit;
        let tokens = self.buckets.get_with(bucket, || {
            Arc::new(Mutex::new(Tokens {
                tokens: limit.burst,
                refilled: Instant::now(),
            }))
        });
        let mut tokens = tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(tokens.refilled).as_secs_f64();
        tokens.tokens = (tokens.tokens + elapsed * limit.per_second).min(limit.burst);
        tokens.refilled = now;
        if tokens.tokens >= 1.0 {
            tokens.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - tokens.tokens) / limit.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Bucket {
        Bucket::ApiKey {
            tenant: TenantId::from_random_bytes([1; 16]),
            key_id: id.to_owned(),
        }
    }

    #[test]
    fn a_bucket_empties_then_refills_and_callers_have_their_own() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert!(limiter.check(key("a")).is_ok());
        }
        let wait = limiter.check(key("a")).expect_err("burst spent");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            limiter.check(key("b")).is_ok(),
            "keys have their own buckets"
        );
        assert!(limiter.check(Bucket::Operator).is_ok());
        assert!(limiter.check(Bucket::Unverified).is_ok());
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check(key("a")).is_ok());
    }

    #[test]
    fn every_unverified_token_shares_one_bucket() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.001,
            burst: 2.0,
        });
        assert!(limiter.check(Bucket::Unverified).is_ok());
        assert!(limiter.check(Bucket::Unverified).is_ok());
        assert!(limiter.check(Bucket::Unverified).is_err());
        assert!(
            limiter.check(key("a")).is_ok(),
            "verified keys are not drained"
        );
    }
}
