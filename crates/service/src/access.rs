//! Who is calling: the operator token and tenant API keys. A key is a 256-bit random
//! secret shown once; the database keeps only its SHA-256. The token a client sends names
//! its tenant and a public key id, so lookup is one indexed row, and the secret is
//! compared in constant time.
//!
//! Token form: `rsk.<tenant uuid>.<key id: 16 hex>.<secret: 43 base64url chars>`.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use model::{Role, TenantId};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

const PREFIX: &str = "rsk";
const KEY_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// How long a node trusts a verified key without re-reading it. A key revoked on this node
/// stops working at once; on other nodes within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The deployment's operator: manages tenants, never reads their data.
    Operator,
    /// A tenant API key.
    ApiKey {
        tenant: TenantId,
        key_id: String,
        role: Role,
    },
}

/// A freshly issued key: the token is shown to the client once and never stored.
pub struct IssuedKey {
    pub key_id: String,
    pub token: Zeroizing<String>,
    pub secret_hash: [u8; 32],
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Generates a new key for `tenant`.
pub fn issue_key(tenant: &TenantId) -> IssuedKey {
    let rng = SystemRandom::new();
    let mut id = [0u8; KEY_ID_BYTES];
    let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
    rng.fill(&mut id).expect("the system CSPRNG does not fail");
    rng.fill(secret.as_mut())
        .expect("the system CSPRNG does not fail");
    let key_id = hex::encode(id);
    let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
    let token = Zeroizing::new(format!(
        "{PREFIX}.{}.{key_id}.{}",
        tenant.as_str(),
        encoded.as_str()
    ));
    IssuedKey {
        secret_hash: hash_secret(secret.as_ref()),
        key_id,
        token,
    }
}

impl IssuedKey {
    /// The issued key a token names, again (an idempotent creation's replay, whose token
    /// was kept sealed); `None` when it is not an API key token.
    pub fn from_token(token: Zeroizing<String>) -> Option<Self> {
        let presented = PresentedKey::parse(&token)?;
        Some(Self {
            secret_hash: hash_secret(&presented.secret),
            key_id: presented.key_id,
            token,
        })
    }
}

/// A token as presented, parsed but not yet verified.
pub struct PresentedKey {
    pub tenant: TenantId,
    pub key_id: String,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("tenant", &self.tenant)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PresentedKey {
    /// Parses a bearer token; `None` when it is not an API key token at all.
    pub fn parse(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(tenant), Some(key_id), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let tenant = TenantId::parse(tenant).ok()?;
        if key_id.len() != KEY_ID_BYTES * 2 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let secret = Zeroizing::new(URL_SAFE_NO_PAD.decode(secret).ok()?);
        if secret.len() != SECRET_BYTES {
            return None;
        }
        Some(Self {
            tenant,
            key_id: key_id.to_ascii_lowercase(),
            secret,
        })
    }

    /// Whether the secret matches `stored_hash`, compared in constant time.
    pub fn matches(&self, stored_hash: &[u8; 32]) -> bool {
        bool::from(hash_secret(&self.secret).ct_eq(stored_hash))
    }
}

/// The token of an `Authorization` header value, canonicalized before it is hashed or
/// looked up: the scheme is `Bearer` in any letter case (RFC 9110 §11.1), surrounding
/// and separating spaces and tabs are ignored. `None` for another scheme or an empty
/// token (no token at all). A token with whitespace inside stays as it is (it will not
/// verify).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let value = authorization.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches([' ', '\t']);
    (!token.is_empty()).then_some(token)
}

/// SHA-256 of a high-entropy secret: a password KDF buys nothing for 256 random bits.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The deployment's operator token, kept as a hash.
#[derive(Clone)]
pub struct OperatorToken {
    hash: [u8; 32],
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

impl OperatorToken {
    pub fn new(token: &str) -> Self {
        Self {
            hash: hash_secret(token.as_bytes()),
        }
    }

    /// Whether `presented` is the operator token, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(hash_secret(presented.as_bytes()).ct_eq(&self.hash))
    }

    /// A new random operator token (for `residency dev`).
    pub fn generate() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .expect("the system CSPRNG does not fail");
        Zeroizing::new(format!("rso.{}", URL_SAFE_NO_PAD.encode(bytes.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("0b6f7a52-4a8e-4c39-9a53-0c1f7d0a1e42").expect("valid id")
    }

    #[test]
    fn issued_keys_parse_and_match_only_their_hash() {
        let issued = issue_key(&tenant());
        let presented = PresentedKey::parse(&issued.token).expect("own token parses");
        assert_eq!(presented.tenant, tenant());
        assert_eq!(presented.key_id, issued.key_id);
        assert!(presented.matches(&issued.secret_hash));
        let other = issue_key(&tenant());
        assert!(!presented.matches(&other.secret_hash));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let issued = issue_key(&tenant());
        let good: &str = &issued.token;
        let short_secret = &good[..good.len() - 2];
        for bad in [
            "",
            "rsk",
            "rsk.a.b.c",
            short_secret,
            &good.replacen("rsk", "xyz", 1),
            &format!("{good}.extra"),
        ] {
            assert!(PresentedKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn bearer_tokens_are_canonical_whatever_the_spacing_and_the_schemes_case() {
        for header in [
            "Bearer rsk.a.b.c",
            "bearer rsk.a.b.c",
            "BEARER  rsk.a.b.c",
            "  Bearer\trsk.a.b.c  ",
            "Bearer rsk.a.b.c\t",
        ] {
            assert_eq!(bearer_token(header), Some("rsk.a.b.c"), "{header:?}");
        }
        for header in [
            "",
            "Bearer",
            "Bearer   ",
            "Basic rsk.a.b.c",
            "Bearerrsk.a.b.c",
        ] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
        assert_eq!(
            bearer_token("Bearer a b"),
            Some("a b"),
            "not a token: refused later"
        );
    }

    #[test]
    fn operator_token_compares_by_value() {
        let token = OperatorToken::generate();
        let operator = OperatorToken::new(&token);
        assert!(operator.matches(&token));
        assert!(!operator.matches("rso.guess"));
        assert!(!format!("{operator:?}").contains(token.as_str()));
    }
}
