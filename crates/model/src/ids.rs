//! Identifiers of a tenant's resources, parsed once at the edge: record ids, file names,
//! API key ids, and a new tenant's settings. Each holds only text that passed its rule,
//! so code past the edge never re-checks a bare `&str`.

use std::fmt;

use crate::{RegionId, ResidencyPolicy, TenantId, Transit};

/// Why an identifier or a new tenant's setting was refused: the request field it came
/// from and what it must be. Never carries the refused text (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct IdError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl IdError {
    const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}

/// A record: a lowercase UUID (the same form as a [`TenantId`]), chosen by the node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(TenantId);

impl RecordId {
    /// A record id from 16 random bytes (UUID version 4 layout).
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        Self(TenantId::from_random_bytes(bytes))
    }

    /// `None` when `raw` is not a lowercase UUID: such a record cannot exist, so callers
    /// answer "not found" without asking the database.
    pub fn parse(raw: &str) -> Option<Self> {
        TenantId::parse(raw).ok().map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.as_str())
    }
}

/// The name a tenant gave a file of a record: 1 to 255 bytes, not `.` or `..`, without
/// `/` or control characters. It may be personal data: it is stored only as a keyed
/// token, and its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

impl FileName {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_BYTES
            && raw != "."
            && raw != ".."
            && !raw.chars().any(|c| c == '/' || c.is_control());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::new(
                "name",
                "must be 1 to 255 bytes without `/` or control characters",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileName({} bytes)", self.0.len())
    }
}

/// An API key's public id: 16 lowercase hex digits (8 random bytes), the third part of
/// a key token `rsk.<tenant>.<key id>.<secret>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyId([u8; ApiKeyId::LEN]);

impl ApiKeyId {
    /// Random bytes behind an id.
    pub const BYTES: usize = 8;
    const LEN: usize = Self::BYTES * 2;

    /// Hex digits of either case are accepted and kept lowercase, so one key has one id.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut text = <[u8; Self::LEN]>::try_from(raw.as_bytes()).ok()?;
        if !text.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        text.make_ascii_lowercase();
        Some(Self(text))
    }

    pub fn from_bytes(bytes: [u8; Self::BYTES]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; Self::LEN];
        for (at, byte) in bytes.into_iter().enumerate() {
            text[2 * at] = HEX[usize::from(byte >> 4)];
            text[2 * at + 1] = HEX[usize::from(byte & 0x0f)];
        }
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated as ASCII hex when parsed")
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyId({})", self.as_str())
    }
}

/// A display name (of a tenant or an API key): 1 to 200 characters once trimmed.
fn display_name(field: &'static str, raw: &str) -> Result<String, IdError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(IdError::new(field, "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// An API key's name, as its admin gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        display_name("name", raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The settings of a tenant to create, checked for form: a name, a residency policy whose
/// regions are well-formed ids and whose home is among the allowed regions, and whether
/// its anonymized data may be exported. Whether the regions are in the catalogue is the
/// node's to check ([`NewTenant::regions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub name: String,
    pub policy: ResidencyPolicy,
    pub analytics_export: bool,
}

/// The request's fields of a tenant to create, as sent.
#[derive(Debug, Clone, Copy)]
pub struct NewTenantFields<'a> {
    pub name: &'a str,
    pub home_region: &'a str,
    pub allowed_regions: Option<&'a [String]>,
    pub transit: Option<&'a str>,
    pub analytics_export: bool,
}

/// Why a new tenant's settings were refused. `field` names the request field (for an
/// allowed region, its index); `reason` says what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct NewTenantError {
    pub field: String,
    pub reason: &'static str,
}

const NOT_IN_CATALOGUE: &str = "is not a region of the catalogue";

impl NewTenant {
    /// Checks the fields in the order a client reads its errors: name, home region,
    /// allowed regions, transit, then that the home is allowed. `known` says whether a
    /// region is in the catalogue; a malformed or unknown region is refused alike.
    pub fn parse(
        fields: NewTenantFields<'_>,
        known: impl Fn(&RegionId) -> bool,
    ) -> Result<Self, NewTenantError> {
        let refuse = |field: String, reason| NewTenantError { field, reason };
        let name =
            display_name("name", fields.name).map_err(|e| refuse(e.field.into(), e.reason))?;
        let region = |field: String, raw: &str| {
            RegionId::parse(raw)
                .ok()
                .filter(|region| known(region))
                .ok_or_else(|| refuse(field, NOT_IN_CATALOGUE))
        };
        let home = region("home_region".to_owned(), fields.home_region)?;
        let allowed = fields
            .allowed_regions
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, raw)| region(format!("allowed_regions[{i}]"), raw))
            .collect::<Result<Vec<_>, _>>()?;
        let transit = match fields.transit {
            None => Transit::Proxy,
            Some(raw) => Transit::parse(raw)
                .map_err(|_| refuse("transit".to_owned(), "must be `proxy` or `redirect`"))?,
        };
        let policy = ResidencyPolicy::new(home, allowed, transit)
            .map_err(|_| refuse("allowed_regions".to_owned(), "must include the home region"))?;
        Ok(Self {
            name,
            policy,
            analytics_export: fields.analytics_export,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_lowercase_uuids() {
        let id = RecordId::from_random_bytes([7; 16]);
        assert_eq!(RecordId::parse(id.as_str()), Some(id));
        for raw in ["", "1", "../x", "2F1C6A0E-8D4B-4F7E-9A51-0C3D2B1E4F60"] {
            assert_eq!(RecordId::parse(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn file_names_refuse_paths_and_control_characters() {
        assert_eq!(
            FileName::parse("scan.pdf").map(|n| n.as_str().to_owned()),
            Ok("scan.pdf".into())
        );
        assert!(FileName::parse(&"a".repeat(255)).is_ok());
        for raw in ["", ".", "..", "a/b", "a\nb", "\u{7f}", &"a".repeat(256)] {
            let err = FileName::parse(raw).expect_err(raw);
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn file_names_are_not_shown_by_debug() {
        let name = FileName::parse("ada-lovelace-passport.pdf").expect("valid");
        assert!(!format!("{name:?}").contains("ada"));
    }

    #[test]
    fn api_key_ids_are_sixteen_hex_digits_kept_lowercase() {
        let id = ApiKeyId::from_bytes([0xab, 0xcd, 0, 1, 2, 3, 4, 0xff]);
        assert_eq!(id.as_str(), "abcd0001020304ff");
        assert_eq!(ApiKeyId::parse("ABCD0001020304FF"), Some(id));
        for raw in ["", "abcd", "abcd0001020304fg", "abcd0001020304ff0"] {
            assert_eq!(ApiKeyId::parse(raw), None, "{raw:?}");
        }
    }

    fn fields<'a>(home: &'a str, allowed: Option<&'a [String]>) -> NewTenantFields<'a> {
        NewTenantFields {
            name: "  Acme  ",
            home_region: home,
            allowed_regions: allowed,
            transit: None,
            analytics_export: false,
        }
    }

    fn catalogue(region: &RegionId) -> bool {
        ["eu-central-1", "us-east-1"].contains(&region.as_str())
    }

    #[test]
    fn a_new_tenant_is_checked_field_by_field() {
        let new = NewTenant::parse(fields("eu-central-1", None), catalogue).expect("valid");
        assert_eq!(new.name, "Acme");
        assert_eq!(new.policy.home().as_str(), "eu-central-1");
        assert_eq!(new.policy.transit(), Transit::Proxy);

        let err = NewTenant::parse(fields("mars-1", None), catalogue).expect_err("unknown");
        assert_eq!(
            (err.field.as_str(), err.reason),
            ("home_region", NOT_IN_CATALOGUE)
        );

        let allowed = ["us-east-1".to_owned(), "Bad Region".to_owned()];
        let err = NewTenant::parse(fields("eu-central-1", Some(&allowed)), catalogue)
            .expect_err("malformed allowed region");
        assert_eq!(err.field, "allowed_regions[1]");

        let allowed = ["us-east-1".to_owned()];
        let err = NewTenant::parse(fields("eu-central-1", Some(&allowed)), catalogue)
            .expect_err("home not allowed");
        assert_eq!(err.field, "allowed_regions");

        let mut bad_transit = fields("eu-central-1", None);
        bad_transit.transit = Some("teleport");
        let err = NewTenant::parse(bad_transit, catalogue).expect_err("transit");
        assert_eq!(err.field, "transit");

        let mut nameless = fields("eu-central-1", None);
        nameless.name = "   ";
        let err = NewTenant::parse(nameless, catalogue).expect_err("name");
        assert_eq!(err.field, "name");
    }
}
