//! Bodies of the operator's job endpoints: `GET /v1/jobs` and `GET /v1/jobs/{job}`. A job is
//! a region's durable, resumable long-running work (re-encryption, rewrap, purge, erasure,
//! relocation); its view carries ids, counts and states, never a value.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One durable job of the region that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// What the job does, e.g. `reencrypt`, `rewrap`, `purge`.
    pub kind: String,
    /// The tenant the job works on; `null` for region-wide work (a rewrap).
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub progress: JobProgress,
    /// How many times a node has leased the job (a lease that expired and was taken over
    /// counts again).
    pub attempts: u32,
    /// The last error, as a short fixed text (never a value or a caller's text).
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339; `null` while the job is queued or running.
    #[schema(required = true)]
    pub finished_at: Option<String>,
}

/// Items done, the total known when the job started, and items that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub done: u64,
    pub total: u64,
    pub failed: u64,
}

/// `GET /v1/jobs`: the region's jobs, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}
