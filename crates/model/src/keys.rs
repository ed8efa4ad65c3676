//! Tenant key metadata: versions, purposes and lifecycle states. The key material itself
//! lives only in `envelope`.

use std::fmt;

/// Version of a tenant's key for one purpose: 1, 2, … (a rotation adds one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion(u32);

impl KeyVersion {
    pub const FIRST: KeyVersion = KeyVersion(1);

    /// `None` for 0: versions start at 1.
    pub fn new(version: u32) -> Option<Self> {
        (version > 0).then_some(Self(version))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0.checked_add(1).expect("fewer than 2^32 rotations"))
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// What a tenant key is for. Each purpose has its own versions and KMS context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPurpose {
    /// Sealing field values and objects.
    Data,
    /// Deriving blind-index keys for exact-match search. Not rotated with data keys:
    /// rotating it means re-indexing.
    Index,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Index => "index",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "data" => Some(Self::Data),
            "index" => Some(Self::Index),
            _ => None,
        }
    }
}

/// Lifecycle of one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Used for new writes (one per tenant and purpose).
    Active,
    /// Opens existing data; no new writes.
    Retired,
    /// Wrapped key erased: data under it is permanently unreadable.
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Destroyed => "destroyed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            "destroyed" => Some(Self::Destroyed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one() {
        assert_eq!(KeyVersion::new(0), None);
        assert_eq!(KeyVersion::FIRST.next().get(), 2);
        assert_eq!(KeyVersion::FIRST.to_string(), "v1");
    }

    #[test]
    fn purposes_and_states_round_trip_their_names() {
        for purpose in [KeyPurpose::Data, KeyPurpose::Index] {
            assert_eq!(KeyPurpose::parse(purpose.as_str()), Some(purpose));
        }
        for state in [KeyState::Active, KeyState::Retired, KeyState::Destroyed] {
            assert_eq!(KeyState::parse(state.as_str()), Some(state));
        }
        assert_eq!(KeyState::parse("gone"), None);
    }
}
