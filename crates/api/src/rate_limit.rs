//! Per-caller rate limiting, applied where the caller is known: while authenticating
//! (`service::RegionService::authenticate`), so that a bucket belongs to what a token
//! proved (a verified key, the operator), and every token that does not verify shares one
//! bucket, drawn from before any database lookup it would cause. Over the limit → 429
//! with `Retry-After` (`ServiceError::RateLimited`, see `extract`).

pub use service::rate_limit::{Bucket, RateLimit, RateLimiter};
