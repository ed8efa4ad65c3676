//! Roles of tenant API keys and what each may do.

use std::fmt;
use std::str::FromStr;

/// The role of a tenant API key (API.md "Authentication"). The key an operator's
/// `POST /v1/tenants` returns is an `admin` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Administers the tenant (API keys, collections, keys, subjects) and reads and
    /// writes data.
    Admin,
    /// Reads and writes records and files.
    Writer,
    /// Reads records and files.
    Reader,
    /// Reads the audit API and residency evidence, and nothing else: auditors see ids,
    /// never data.
    Auditor,
}

/// A kind of access a request needs; see [`Role::may`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read records and files, search.
    ReadData,
    /// Create, update and delete records and files.
    WriteData,
    /// Manage API keys, collection schemas, key rotation, subject export and erasure.
    Administer,
    /// The audit API and residency evidence.
    Audit,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected one of admin, writer, reader, auditor")]
pub struct RoleParseError(pub String);

impl Role {
    pub const ALL: [Role; 4] = [Self::Admin, Self::Writer, Self::Reader, Self::Auditor];

    pub fn parse(raw: &str) -> Result<Self, RoleParseError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| RoleParseError(raw.chars().take(64).collect()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Writer => "writer",
            Self::Reader => "reader",
            Self::Auditor => "auditor",
        }
    }

    /// Whether a key of this role may have `access`. Audit is the auditor's alone: an
    /// admin cannot read the trail of its own actions through the audit API.
    pub fn may(self, access: Access) -> bool {
        use Access::*;
        match self {
            Self::Admin => matches!(access, ReadData | WriteData | Administer),
            Self::Writer => matches!(access, ReadData | WriteData),
            Self::Reader => matches!(access, ReadData),
            Self::Auditor => matches!(access, Audit),
        }
    }
}

impl FromStr for Role {
    type Err = RoleParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        for bad in ["", "Admin", "owner", "operator"] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn access_matrix() {
        use Access::*;
        let matrix = [
            (Role::Admin, [true, true, true, false]),
            (Role::Writer, [true, true, false, false]),
            (Role::Reader, [true, false, false, false]),
            (Role::Auditor, [false, false, false, true]),
        ];
        for (role, allowed) in matrix {
            for (access, expected) in [ReadData, WriteData, Administer, Audit]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(role.may(access), expected, "{role} {access:?}");
            }
        }
    }
}
