//! A tenant's residency policy: its home region, the regions it may be moved to, and how
//! requests that arrive at a foreign region travel home.

use std::fmt;

use crate::RegionId;

/// How a request for a tenant reaches its home region when it arrives elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transit {
    /// The receiving region forwards the request over the inter-region link.
    #[default]
    Proxy,
    /// The receiving region answers `307` with the home region's public endpoint.
    Redirect,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transit `{0}`: expected `proxy` or `redirect`")]
pub struct TransitParseError(pub String);

impl Transit {
    pub fn parse(raw: &str) -> Result<Self, TransitParseError> {
        match raw {
            "proxy" => Ok(Self::Proxy),
            "redirect" => Ok(Self::Redirect),
            other => Err(TransitParseError(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Redirect => "redirect",
        }
    }
}

impl fmt::Display for Transit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Home region, allowed regions and transit mode of one tenant. The home region is always
/// one of the allowed regions; construction enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidencyPolicy {
    home: RegionId,
    allowed: Vec<RegionId>,
    transit: Transit,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidencyPolicyError {
    #[error("home region {home} is not among the allowed regions")]
    HomeNotAllowed { home: RegionId },
}

impl ResidencyPolicy {
    /// `allowed` defaults to just the home region when empty; duplicates are removed.
    pub fn new(
        home: RegionId,
        allowed: Vec<RegionId>,
        transit: Transit,
    ) -> Result<Self, ResidencyPolicyError> {
        let mut allowed = if allowed.is_empty() {
            vec![home.clone()]
        } else {
            allowed
        };
        allowed.sort();
        allowed.dedup();
        if !allowed.contains(&home) {
            return Err(ResidencyPolicyError::HomeNotAllowed { home });
        }
        Ok(Self {
            home,
            allowed,
            transit,
        })
    }

    pub fn home(&self) -> &RegionId {
        &self.home
    }

    pub fn allowed(&self) -> &[RegionId] {
        &self.allowed
    }

    pub fn transit(&self) -> Transit {
        self.transit
    }

    pub fn allows(&self, region: &RegionId) -> bool {
        self.allowed.contains(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: &str) -> RegionId {
        RegionId::parse(id).expect("valid region id")
    }

    #[test]
    fn allowed_defaults_to_home() {
        let policy = ResidencyPolicy::new(region("eu-central-1"), vec![], Transit::Proxy)
            .expect("valid policy");
        assert_eq!(policy.allowed(), &[region("eu-central-1")]);
        assert!(!policy.allows(&region("us-east-1")));
    }

    #[test]
    fn home_outside_allowed_is_refused() {
        let err = ResidencyPolicy::new(
            region("eu-central-1"),
            vec![region("eu-west-1")],
            Transit::Redirect,
        )
        .expect_err("home must be allowed");
        assert_eq!(
            err,
            ResidencyPolicyError::HomeNotAllowed {
                home: region("eu-central-1")
            }
        );
    }

    #[test]
    fn transit_parses_only_known_modes() {
        assert_eq!(Transit::parse("redirect"), Ok(Transit::Redirect));
        assert!(Transit::parse("teleport").is_err());
    }
}
