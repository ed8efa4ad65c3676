//! The router's token buckets: one per client address (the first thing a request meets,
//! so a flood stops in the region where it arrives), and the directory cache's budget of
//! backend lookups for tenants it does not hold. A bucket is one atomic word (GCRA: the
//! time at which it will be full again), so taking a token is a compare-and-swap, with no
//! lock and no allocation.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use model::ClientKey;
use tokio::time::Instant;

/// How fast a bucket refills and how much it holds: `per_second` requests on average,
/// up to `burst` at once after an idle spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// What each client address may send to one node by default: enough for a tenant's
    /// whole backend behind one NAT address (twice what one API key may send, 1,000/s),
    /// while one address can no longer flood a node.
    pub const CLIENT_DEFAULT: Rate = Rate {
        per_second: 2000.0,
        burst: 4000.0,
    };

    /// How many directory lookups for tenants a node's cache does not hold it may make
    /// by default. A node coming up cold warms at this pace (tenants already seen are
    /// served from the cache, or from its stale copy while the budget is spent).
    pub const DIRECTORY_MISSES_DEFAULT: Rate = Rate {
        per_second: 100.0,
        burst: 200.0,
    };

    /// How many of those lookups each client address may cause by default: a client
    /// calls its own tenant or a few, each looked up once a cache lifetime, so one address
    /// flooding random tenant ids takes a sliver of [`Rate::DIRECTORY_MISSES_DEFAULT`]
    /// and leaves the rest to everyone else.
    pub const CLIENT_DIRECTORY_MISSES_DEFAULT: Rate = Rate {
        per_second: 5.0,
        burst: 20.0,
    };
}

/// A [`Rate`] in the units a [`Bucket`] counts: nanoseconds between tokens, and how far
/// ahead of now a bucket may be booked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    interval: u64,
    tolerance: u64,
}

impl Pace {
    pub(crate) fn new(rate: Rate) -> Self {
        // A rate of zero or less, or a burst under one, would refuse everything or divide
        // by zero: at least one request, and one per hour.
        let per_second = rate.per_second.max(1.0 / 3600.0);
        let burst = rate.burst.max(1.0);
        let interval = (1e9 / per_second).max(1.0);
        Self {
            interval: interval as u64,
            tolerance: (interval * burst) as u64,
        }
    }

    /// How long an untouched bucket takes to fill up: past it, a forgotten bucket and a
    /// new one are the same.
    pub(crate) fn refill_time(self) -> Duration {
        Duration::from_nanos(self.tolerance)
    }
}

/// One token bucket: the instant (nanoseconds since its clock's epoch) at which it will be
/// full again.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    full_at: AtomicU64,
}

impl Bucket {
    /// Takes one token at `now`; `Err(wait)` when there is none, `wait` being the time
    /// until there is.
    pub(crate) fn take(&self, now: u64, pace: Pace) -> Result<(), Duration> {
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            let next = full_at.max(now).saturating_add(pace.interval);
            let booked = next - now;
            if booked > pace.tolerance {
                return Err(Duration::from_nanos(booked - pace.tolerance));
            }
            match self.full_at.compare_exchange_weak(
                full_at,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => full_at = current,
            }
        }
    }
}

/// The clock buckets count in: tokio's, so that tests can pause it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now(self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One bucket shared by every caller (the directory cache's miss budget).
#[derive(Debug)]
pub(crate) struct SharedBucket {
    pace: Pace,
    clock: Clock,
    bucket: Bucket,
}

impl SharedBucket {
    pub(crate) fn new(rate: Rate) -> Self {
        Self {
            pace: Pace::new(rate),
            clock: Clock::new(),
            bucket: Bucket::default(),
        }
    }

    pub(crate) fn take(&self) -> Result<(), Duration> {
        self.bucket.take(self.clock.now(), self.pace)
    }
}

/// Who a request comes from, as far as the limit is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client<'a> {
    Ip(IpAddr),
    /// A signed client address that is not an IP address (`unknown`, or a name).
    Named(&'a str),
    /// No address at all (a server that gave none): one bucket for all of them.
    Unknown,
}

/// What a bucket is found by: an IPv4 address, the /64 of an IPv6 address (one
/// subscriber gets a whole /64 and can pick any address in it), or a signed name.
#[derive(Hash)]
enum BucketKey<'a> {
    V4(u32),
    V6(u64),
    Named(&'a str),
    Unknown,
}

impl<'a> From<Client<'a>> for BucketKey<'a> {
    fn from(client: Client<'a>) -> Self {
        match client {
            Client::Ip(IpAddr::V4(v4)) => Self::V4(v4.to_bits()),
            Client::Ip(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.to_bits()),
                None => Self::V6((v6.to_bits() >> 64) as u64),
            },
            Client::Named(name) => Self::Named(name),
            Client::Unknown => Self::Unknown,
        }
    }
}

/// The most client addresses a node keeps a bucket for.
const CLIENT_BUCKETS: u64 = 100_000;

/// Derives a request's [`ClientKey`] from its client address: a keyed hash (a random key
/// per process, so nobody can aim addresses at one slot, and no address is kept).
pub(crate) struct ClientKeys {
    hasher: RandomState,
}

impl ClientKeys {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn key(&self, client: Client<'_>) -> ClientKey {
        ClientKey::from_hash(self.hasher.hash_one(BucketKey::from(client)))
    }
}

/// A token bucket per client, found by its [`ClientKey`], bounded in number, and
/// forgotten once idle long enough to have filled up.
pub(crate) struct ClientLimiter {
    pace: Pace,
    clock: Clock,
    buckets: moka::sync::Cache<ClientKey, Arc<Bucket>>,
}

impl ClientLimiter {
    pub(crate) fn new(rate: Rate) -> Self {
        let pace = Pace::new(rate);
        Self {
            pace,
            clock: Clock::new(),
            buckets: moka::sync::Cache::builder()
                .max_capacity(CLIENT_BUCKETS)
                .time_to_idle(
                    pace.refill_time()
                        .clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                )
                .build(),
        }
    }

    /// Takes one token from `client`'s bucket; `Err(wait)` when it is empty.
    pub(crate) fn check(&self, client: ClientKey) -> Result<(), Duration> {
        let bucket = self.buckets.get_with(client, Arc::default);
        bucket.take(self.clock.now(), self.pace)
    }
}

/// The address a load balancer in front of the node appended to `X-Forwarded-For`: the
/// last entry of the last line (what came before it, the client wrote).
pub(crate) fn load_balancer_client(headers: &HeaderMap) -> Option<IpAddr> {
    let last_line = headers
        .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .next_back()?;
    let last = last_line.to_str().ok()?.rsplit(',').next()?.trim();
    last.parse().ok()
}

/// Whole seconds to tell a client to wait (at least one): `Retry-After` has no fractions.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> Client<'static> {
        Client::Ip(text.parse().expect("address"))
    }

    /// A limiter with its own key derivation, checked by client address.
    struct ByAddress {
        keys: ClientKeys,
        limiter: ClientLimiter,
    }

    impl ByAddress {
        fn new(rate: Rate) -> Self {
            Self {
                keys: ClientKeys::new(),
                limiter: ClientLimiter::new(rate),
            }
        }

        fn check(&self, client: Client<'_>) -> Result<(), Duration> {
            self.limiter.check(self.keys.key(client))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_gives_its_burst_then_its_rate() {
        let limiter = ByAddress::new(Rate {
            per_second: 10.0,
            burst: 3.0,
        });
        let client = ip("203.0.113.7");
        for _ in 0..3 {
            assert_eq!(limiter.check(client), Ok(()));
        }
        let wait = limiter.check(client).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(limiter.check(ip("203.0.113.8")), Ok(()), "its own bucket");

        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(limiter.check(client), Ok(()), "one token back");
        assert!(limiter.check(client).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert_eq!(limiter.check(client), Ok(()), "full again, never more");
        }
        assert!(limiter.check(client).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_subscriber_has_one_bucket_for_its_64() {
        let limiter = ByAddress::new(Rate {
            per_second: 1.0,
            burst: 1.0,
        });
        assert_eq!(limiter.check(ip("2001:db8:1:2::1")), Ok(()));
        assert!(limiter.check(ip("2001:db8:1:2::ffff")).is_err(), "same /64");
        assert_eq!(limiter.check(ip("2001:db8:1:3::1")), Ok(()), "another /64");
        assert_eq!(limiter.check(ip("198.51.100.1")), Ok(()));
        assert!(
            limiter.check(ip("::ffff:198.51.100.1")).is_err(),
            "a mapped IPv4 address is that address"
        );
        assert_eq!(limiter.check(Client::Named("unknown")), Ok(()));
        assert_eq!(limiter.check(Client::Unknown), Ok(()));
        assert!(limiter.check(Client::Unknown).is_err(), "one shared bucket");
    }

    #[test]
    fn the_load_balancers_entry_is_the_last_one() {
        let mut headers = HeaderMap::new();
        assert_eq!(load_balancer_client(&headers), None);
        let name = "x-forwarded-for";
        headers.append(name, HeaderValue::from_static("10.0.0.1, 10.0.0.2"));
        headers.append(name, HeaderValue::from_static("1.1.1.1 , 192.0.2.4"));
        assert_eq!(load_balancer_client(&headers), "192.0.2.4".parse().ok());
        headers.append(name, HeaderValue::from_static("192.0.2.9, not-an-ip"));
        assert_eq!(load_balancer_client(&headers), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
