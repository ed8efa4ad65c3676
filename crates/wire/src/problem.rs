//! `application/problem+json` bodies (RFC 9457). `detail` is written for the client and
//! must never carry personal data or an internal error's text.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// A problem whose type is `https://residency.dev/problems/<slug>`.
    pub fn new(status: http::StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("https://residency.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_rfc_9457_member_names() {
        let problem = Problem::new(
            http::StatusCode::NOT_FOUND,
            "not-found",
            "no route for GET /nope",
        )
        .with_request_id(Some("req-1".into()));
        let json = serde_json::to_value(&problem).expect("serialize");
        assert_eq!(json["type"], "https://residency.dev/problems/not-found");
        assert_eq!(json["title"], "Not Found");
        assert_eq!(json["status"], 404);
        assert_eq!(json["request_id"], "req-1");
    }
}
