//! Token buckets for callers: one per *verified* caller (each API key by tenant and key
//! id, the operator token), and one shared by every token that does not verify (malformed,
//! unknown key, wrong secret, revoked). A bucket is found by what authentication proved,
//! never by the string a client sent, so junk tokens cannot each get a fresh burst and a
//! caller who knows a key's id but not its secret cannot drain that key's bucket. A token
//! that does not verify first draws from its client's share ([`UNVERIFIED_PER_CLIENT`],
//! by the [`ClientKey`] the region router set), so one client flooding junk tokens meets
//! its own limit long before it could spend what every client shares.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use model::{ClientKey, TenantId};

/// Requests per second a bucket refills by, and the burst it may save up.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// What one client may spend of the bucket every unverified token shares: enough for a
/// client whose key was just revoked or mistyped to get its `401`s, a sliver of the
/// shared bucket for a client sending nothing but junk.
pub const UNVERIFIED_PER_CLIENT: RateLimit = RateLimit {
    per_second: 20.0,
    burst: 40.0,
};

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
    /// One client's share of [`Bucket::Unverified`], drawn first (at
    /// [`UNVERIFIED_PER_CLIENT`]).
    UnverifiedFrom(ClientKey),
}

#[derive(Debug)]
struct Tokens {
    tokens: f64,
    refilled: Instant,
}

/// Buckets of recently active callers (idle ones expire, so memory stays bounded: at most
/// 100,000, verified keys and recent clients with unverified tokens).
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

    /// Takes a token for a token that did not verify: from its client's share (when the
    /// router named the client), then from the bucket all such tokens share.
    pub fn check_unverified(&self, client: Option<ClientKey>) -> Result<(), Duration> {
        if let Some(client) = client {
            self.check(Bucket::UnverifiedFrom(client))?;
        }
        self.check(Bucket::Unverified)
    }

    /// Takes one token from `bucket`; `Err(wait)` when it is empty.
    pub fn check(&self, bucket: Bucket) -> Result<(), Duration> {
        let limit = match bucket {
            Bucket::UnverifiedFrom(_) => UNVERIFIED_PER_CLIENT,
            _ => self.limit,
        };
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

    #[test]
    fn one_client_spends_only_its_share_of_the_unverified_bucket() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.001,
            burst: 1000.0,
        });
        let flooder = Some(ClientKey::from_hash(1));
        let share = UNVERIFIED_PER_CLIENT.burst as usize;
        for _ in 0..share {
            assert!(limiter.check_unverified(flooder).is_ok());
        }
        let wait = limiter
            .check_unverified(flooder)
            .expect_err("the client's share is spent");
        assert!(wait <= Duration::from_millis(60), "{wait:?}");
        assert!(
            limiter
                .check_unverified(Some(ClientKey::from_hash(2)))
                .is_ok(),
            "another client still has its own share and the shared bucket"
        );
        assert!(
            limiter.check_unverified(None).is_ok(),
            "a request the router did not name a client for draws from the shared bucket"
        );
    }
}
