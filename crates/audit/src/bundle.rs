//! Export bundles (`GET /v1/tenants/{tenant}/audit/export`): NDJSON, one event a line in
//! seq order, then one last line `{"manifest": {...}}` signed by the home region's key.
//! Writing streams: only the first seq, the last head and a count are kept.

use std::borrow::Cow;
use std::time::SystemTime;

use model::{RegionId, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chain::{Head, put_str, truncate_to_micros};
use crate::event::{Event, Hash};
use crate::signing::{Signature, SigningKey};
use crate::time;

/// Domain string of a manifest's signed payload.
const MANIFEST_DOMAIN: &str = "residency/audit/manifest/v1";

/// The last line of a bundle: what the bundle holds, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub tenant: TenantId,
    /// The region whose key signed the manifest: the tenant's home region.
    pub region: RegionId,
    /// The requested time range, `from` inclusive, `to` exclusive; `None` when open.
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    /// `None` (JSON null) when the bundle holds no events, like `last_seq` and `head_hash`.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub count: u64,
    /// The hash of the last event of the bundle.
    pub head_hash: Option<Hash>,
    /// The chain head the region vouches for at export time: `(last_seq, head_hash)`.
    /// `None` when the bundle holds no events. Covered by the manifest's signature.
    pub checkpoint: Option<ManifestCheckpoint>,
    pub key_id: String,
    pub signature: Signature,
}

/// `{"seq","hash","signed_at"}` of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestCheckpoint {
    pub seq: u64,
    pub hash: Hash,
    /// Whole microseconds.
    pub signed_at: SystemTime,
}

/// What [`build_manifest`] needs to know about an export.
#[derive(Debug, Clone)]
pub struct ManifestInput {
    pub tenant: TenantId,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    /// The seq of the first event written, `None` if none was.
    pub first_seq: Option<u64>,
    /// The last event written, `None` if none was.
    pub last: Option<Head>,
    pub count: u64,
    pub signed_at: SystemTime,
}

/// The manifest of an export, signed by `key`; its region is the key's region. Times are
/// truncated to microseconds.
pub fn build_manifest(key: &SigningKey, input: ManifestInput) -> Manifest {
    let mut manifest = Manifest {
        tenant: input.tenant,
        region: key.region().clone(),
        from: input.from.map(truncate_to_micros),
        to: input.to.map(truncate_to_micros),
        first_seq: input.first_seq,
        last_seq: input.last.map(|h| h.seq),
        count: input.count,
        head_hash: input.last.map(|h| h.hash),
        checkpoint: input.last.map(|h| ManifestCheckpoint {
            seq: h.seq,
            hash: h.hash,
            signed_at: truncate_to_micros(input.signed_at),
        }),
        key_id: key.key_id().to_owned(),
        signature: Signature::from_bytes([0; 64]),
    };
    manifest.signature = key.sign(&manifest_payload(&manifest));
    manifest
}

/// The bytes a manifest's signature covers: every other field, in order (see
/// `docs/audit.md`).
pub fn manifest_payload(manifest: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_str(&mut out, MANIFEST_DOMAIN);
    put_str(&mut out, manifest.tenant.as_str());
    put_str(&mut out, manifest.region.as_str());
    put_opt(
        &mut out,
        manifest.from.map(|t| time::to_unix_micros(t).to_be_bytes()),
    );
    put_opt(
        &mut out,
        manifest.to.map(|t| time::to_unix_micros(t).to_be_bytes()),
    );
    put_opt(&mut out, manifest.first_seq.map(u64::to_be_bytes));
    put_opt(&mut out, manifest.last_seq.map(u64::to_be_bytes));
    out.extend_from_slice(&manifest.count.to_be_bytes());
    put_opt(&mut out, manifest.head_hash.map(|h| *h.as_bytes()));
    put_opt(
        &mut out,
        manifest.checkpoint.map(|c| {
            let mut bytes = [0u8; 48];
            bytes[..8].copy_from_slice(&c.seq.to_be_bytes());
            bytes[8..40].copy_from_slice(c.hash.as_bytes());
            bytes[40..].copy_from_slice(&time::to_unix_micros(c.signed_at).to_be_bytes());
            bytes
        }),
    );
    put_str(&mut out, &manifest.key_id);
    out
}

/// `0x00`, or `0x01` followed by the bytes.
fn put_opt<const N: usize>(out: &mut Vec<u8>, value: Option<[u8; N]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&bytes);
        }
    }
}

/// One bundle line for `event`, newline included.
pub fn event_line(event: &Event) -> String {
    let mut line = event.to_json();
    line.push('\n');
    line
}

/// The last bundle line, `{"manifest": {...}}`, newline included.
pub fn manifest_line(manifest: &Manifest) -> String {
    let mut line = serde_json::to_string(&ManifestLine {
        manifest: manifest.clone(),
    })
    .expect("a manifest serializes: strings and integers only");
    line.push('\n');
    line
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("event seq {seq} belongs to another tenant than the bundle")]
    WrongTenant { seq: u64 },
    #[error("event seq {seq} was recorded in another region than the bundle's")]
    WrongRegion { seq: u64 },
    #[error("the signing key is of region {key_region}, the bundle of region {bundle_region}")]
    KeyRegion {
        key_region: RegionId,
        bundle_region: RegionId,
    },
}

/// Writes a bundle while events stream from the store: feed events in seq order, then
/// [`BundleWriter::finish`] for the manifest line. Events are written as they are, even
/// if the chain they come from is broken, so that an export never hides tampering; only
/// an event of another tenant or region is refused (it would leak into the wrong bundle).
#[derive(Debug)]
pub struct BundleWriter {
    tenant: TenantId,
    region: RegionId,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
    first_seq: Option<u64>,
    last: Option<Head>,
    count: u64,
}

impl BundleWriter {
    pub fn new(
        tenant: TenantId,
        region: RegionId,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
    ) -> Self {
        Self {
            tenant,
            region,
            from,
            to,
            first_seq: None,
            last: None,
            count: 0,
        }
    }

    /// Appends `event`'s line (newline included) to `out`.
    pub fn write_event(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), BundleError> {
        self.accept(event)?;
        serde_json::to_writer(&mut *out, event).expect("writing JSON into a Vec cannot fail");
        out.push(b'\n');
        Ok(())
    }

    /// `event`'s line, newline included.
    pub fn event_line(&mut self, event: &Event) -> Result<String, BundleError> {
        self.accept(event)?;
        Ok(event_line(event))
    }

    fn accept(&mut self, event: &Event) -> Result<(), BundleError> {
        if event.tenant != self.tenant {
            return Err(BundleError::WrongTenant { seq: event.seq });
        }
        if event.region != self.region {
            return Err(BundleError::WrongRegion { seq: event.seq });
        }
        self.first_seq.get_or_insert(event.seq);
        self.last = Some(event.head());
        self.count += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The manifest, signed by `key` at `signed_at`.
    pub fn manifest(
        &self,
        key: &SigningKey,
        signed_at: SystemTime,
    ) -> Result<Manifest, BundleError> {
        if key.region() != &self.region {
            return Err(BundleError::KeyRegion {
                key_region: key.region().clone(),
                bundle_region: self.region.clone(),
            });
        }
        Ok(build_manifest(
            key,
            ManifestInput {
                tenant: self.tenant,
                from: self.from,
                to: self.to,
                first_seq: self.first_seq,
                last: self.last,
                count: self.count,
                signed_at,
            },
        ))
    }

    /// The manifest line (newline included) that ends the bundle.
    pub fn finish(self, key: &SigningKey, signed_at: SystemTime) -> Result<String, BundleError> {
        Ok(manifest_line(&self.manifest(key, signed_at)?))
    }
}

/// `{"manifest": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestLine {
    pub manifest: Manifest,
}

#[derive(Serialize)]
struct ManifestOut<'a> {
    tenant: &'a str,
    region: &'a str,
    from: Option<String>,
    to: Option<String>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    count: u64,
    head_hash: Option<Hash>,
    checkpoint: Option<CheckpointOut>,
    key_id: &'a str,
    signature: Signature,
}

#[derive(Serialize)]
struct CheckpointOut {
    seq: u64,
    hash: Hash,
    signed_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestIn<'a> {
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    region: Cow<'a, str>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    count: u64,
    head_hash: Option<Hash>,
    #[serde(borrow)]
    checkpoint: Option<CheckpointIn<'a>>,
    #[serde(borrow)]
    key_id: Cow<'a, str>,
    signature: Signature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointIn<'a> {
    seq: u64,
    hash: Hash,
    #[serde(borrow)]
    signed_at: Cow<'a, str>,
}

impl Serialize for Manifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ManifestOut {
            tenant: self.tenant.as_str(),
            region: self.region.as_str(),
            from: self.from.map(time::format),
            to: self.to.map(time::format),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            count: self.count,
            head_hash: self.head_hash,
            checkpoint: self.checkpoint.map(|c| CheckpointOut {
                seq: c.seq,
                hash: c.hash,
                signed_at: time::format(c.signed_at),
            }),
            key_id: &self.key_id,
            signature: self.signature,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = ManifestIn::deserialize(deserializer)?;
        let time = |field: &str, raw: &str| {
            time::parse(raw).map_err(|e| D::Error::custom(format!("field `{field}`: {e}")))
        };
        Ok(Manifest {
            tenant: TenantId::parse(&raw.tenant).map_err(D::Error::custom)?,
            region: RegionId::parse(&raw.region).map_err(D::Error::custom)?,
            from: raw.from.map(|t| time("from", &t)).transpose()?,
            to: raw.to.map(|t| time("to", &t)).transpose()?,
            first_seq: raw.first_seq,
            last_seq: raw.last_seq,
            count: raw.count,
            head_hash: raw.head_hash,
            checkpoint: match raw.checkpoint {
                None => None,
                Some(c) => Some(ManifestCheckpoint {
                    seq: c.seq,
                    hash: c.hash,
                    signed_at: time("checkpoint.signed_at", &c.signed_at)?,
                }),
            },
            key_id: raw.key_id.into_owned(),
            signature: raw.signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn manifest_json_has_the_api_shape_and_round_trips() {
        let key = SigningKey::generate(RegionId::parse("eu-central-1").expect("valid region"));
        let at = UNIX_EPOCH + Duration::new(1_772_368_496, 1_999);
        let manifest = build_manifest(
            &key,
            ManifestInput {
                tenant: TenantId::from_random_bytes([1; 16]),
                from: Some(UNIX_EPOCH + Duration::from_secs(1_772_000_000)),
                to: None,
                first_seq: Some(3),
                last: Some(Head {
                    seq: 9,
                    hash: Hash::from_bytes([2; 32]),
                }),
                count: 7,
                signed_at: at,
            },
        );
        let line = manifest_line(&manifest);
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        let inner = value["manifest"].as_object().expect("an object");
        let mut keys: Vec<&str> = inner.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = [
            "tenant",
            "region",
            "from",
            "to",
            "first_seq",
            "last_seq",
            "count",
            "head_hash",
            "checkpoint",
            "key_id",
            "signature",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(inner["to"], serde_json::Value::Null);
        assert_eq!(inner["from"], "2026-02-25T06:13:20.000000Z");
        assert_eq!(
            inner["checkpoint"]["signed_at"],
            "2026-03-01T12:34:56.000001Z"
        );
        assert_eq!(inner["checkpoint"]["seq"], 9);
        let back: ManifestLine = serde_json::from_str(&line).expect("parses back");
        assert_eq!(back.manifest, manifest);
    }

    #[test]
    fn writer_refuses_events_of_another_tenant_or_key_region() {
        let region = RegionId::parse("eu-central-1").expect("valid region");
        let mut writer = BundleWriter::new(
            TenantId::from_random_bytes([1; 16]),
            region.clone(),
            None,
            None,
        );
        let stranger = crate::chain::next(
            None,
            crate::event::NewEvent {
                time: UNIX_EPOCH,
                region: region.clone(),
                tenant: TenantId::from_random_bytes([2; 16]),
                actor: crate::event::Actor {
                    kind: crate::event::ActorKind::System,
                    id: "test".to_owned(),
                },
                action: crate::event::Action::RecordRead,
                resource: "records/1".to_owned(),
                outcome: crate::event::Outcome::Success,
                request_id: "r".to_owned(),
                via_region: region,
            },
        );
        assert_eq!(
            writer.event_line(&stranger),
            Err(BundleError::WrongTenant { seq: 1 })
        );
        assert_eq!(writer.count(), 0);
        let foreign = SigningKey::generate(RegionId::parse("us-east-1").expect("valid region"));
        assert!(matches!(
            writer.finish(&foreign, UNIX_EPOCH),
            Err(BundleError::KeyRegion { .. })
        ));
    }
}
