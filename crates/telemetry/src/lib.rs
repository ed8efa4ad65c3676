//! Logs and metrics: the tracing subscriber, and each node's Prometheus registry.
//!
//! Never record personal data here: metric labels are route templates, region and
//! endpoint names, never path values, query strings or bodies.

mod logging;
mod metrics;
mod request_id;

pub use logging::{LogFormat, init_tracing};
pub use metrics::{NodeMetrics, OPENMETRICS_CONTENT_TYPE};
pub use request_id::{
    MAX_CLIENT_REQUEST_ID_LEN, REQUEST_ID_LEN, keeps_client_request_id, new_request_id,
};
