//! Streaming verification of an export bundle: line by line, holding one line, one
//! canonical-encoding buffer and the previous head, never the events. The checks and
//! their order are listed in `docs/audit.md`; the first failure is reported with the seq
//! it was found at.

use std::fmt;
use std::io::{BufRead, Read as _};
use std::time::SystemTime;

use model::{RegionId, TenantId};

use crate::bundle::{Manifest, ManifestLine, manifest_payload};
use crate::chain::{Fields, Head, chain_hash, encode, genesis};
use crate::event::{Action, ActorKind, Hash, Outcome};
use crate::json::{self, EventJson};
use crate::signing::{self, KeySet};
use crate::time;

/// The longest line a bundle may have, newline excluded. Events are well under 4 KiB; the
/// bound keeps a hostile bundle from exhausting memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How many distinct `via_region` values the verifier remembers as valid.
const MAX_REMEMBERED_REGIONS: usize = 64;

/// What an intact bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub tenant: TenantId,
    pub region: RegionId,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub count: u64,
    pub head_hash: Option<Hash>,
    pub key_id: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bundle intact: tenant {}, region {}, {} event{}",
            self.tenant,
            self.region,
            self.count,
            if self.count == 1 { "" } else { "s" }
        )?;
        if let (Some(first), Some(last)) = (self.first_seq, self.last_seq) {
            write!(f, " (seq {first} to {last})")?;
        }
        if let Some(head) = &self.head_hash {
            write!(f, ", head {head}")?;
        }
        let range = |t: Option<SystemTime>| t.map_or_else(|| "open".to_owned(), time::format);
        write!(
            f,
            ", time range {} to {}, signed by {}",
            range(self.from),
            range(self.to),
            self.key_id
        )
    }
}

/// The first problem found in a bundle, and the seq of the event it was found at (`None`
/// for problems of the bundle as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub seq: Option<u64>,
    pub fault: Fault,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "event seq {seq}: {}", self.fault),
            None => write!(f, "{}", self.fault),
        }
    }
}

impl std::error::Error for VerifyError {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("line {line}: read failed: {reason}")]
    Read { line: u64, reason: String },
    #[error("line {line}: malformed: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("belongs to another tenant than the bundle")]
    WrongTenant,
    #[error("was recorded in another region than the bundle's")]
    WrongRegion,
    #[error(
        "prev_hash does not match the previous event's hash (an event was removed, inserted or reordered)"
    )]
    BrokenLink,
    #[error("expected seq {expected}, found {found} (seq skipped)")]
    SeqGap { expected: u64, found: u64 },
    #[error("expected seq {expected}, found {found} (seq repeated or going backwards)")]
    SeqOutOfOrder { expected: u64, found: u64 },
    #[error("hash does not match its contents (edited)")]
    HashMismatch,
    #[error("the bundle ends without a manifest (truncated)")]
    MissingManifest,
    #[error("line {line}: data after the manifest")]
    TrailingData { line: u64 },
    #[error(
        "manifest signed by key `{key_id}`, which is not a trusted key of the manifest's region"
    )]
    UnknownKey { key_id: String },
    #[error("manifest signature does not verify (manifest edited or signed by another key)")]
    BadSignature,
    #[error(
        "manifest lists {manifest} events, the bundle holds {actual} (events removed or added)"
    )]
    CountMismatch { manifest: u64, actual: u64 },
    #[error(
        "manifest lists {}, the bundle holds {} (events removed or added)",
        SeqRange(*manifest),
        SeqRange(*actual)
    )]
    RangeMismatch {
        manifest: Option<(u64, u64)>,
        actual: Option<(u64, u64)>,
    },
    #[error("manifest head_hash or checkpoint does not match the last event")]
    HeadMismatch,
    /// An anchor (a checkpoint from the audit bucket) that is not the region's word.
    #[error("anchored checkpoint at seq {seq} rejected: {reason}")]
    AnchorInvalid {
        seq: u64,
        reason: crate::checkpoint::CheckpointError,
    },
    #[error("anchored checkpoint at seq {seq} is of another tenant or region than the bundle")]
    AnchorOfAnotherChain { seq: u64 },
    /// The bundle claims to reach the chain's head, but a checkpoint anchored before the
    /// export names a later seq: the chain's tail was cut (and its head reset).
    #[error(
        "events {first_missing}..{anchored_seq} are missing: anchored checkpoint at seq {anchored_seq} (the chain's tail was cut)"
    )]
    TailMissing {
        first_missing: u64,
        anchored_seq: u64,
    },
    /// The bundle's hash at an anchored seq is not the anchored one.
    #[error(
        "hash differs from the anchored checkpoint {anchored} (the chain was rewritten at or before this seq)"
    )]
    AnchorMismatch { anchored: Hash },
}

struct SeqRange(Option<(u64, u64)>);

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((first, last)) => write!(f, "seq {first} to {last}"),
            None => f.write_str("no events"),
        }
    }
}

fn fail(seq: Option<u64>, fault: Fault) -> VerifyError {
    VerifyError { seq, fault }
}

/// Verifies the bundle `reader` yields against `keys`, streaming. Returns what it holds
/// when every event and the manifest check out, else the first problem.
pub fn verify_bundle(reader: impl BufRead, keys: &KeySet) -> Result<Summary, VerifyError> {
    verify_watched(reader, keys, &mut NoWatch).map(|verified| verified.summary)
}

/// An event whose link and hash checked out.
pub(crate) struct Linked<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) region: &'a RegionId,
    pub(crate) seq: u64,
    /// The hash of event `seq - 1` as the event names it (for the bundle's first event,
    /// the only word the bundle has on it).
    pub(crate) prev_hash: &'a Hash,
    pub(crate) hash: &'a Hash,
}

/// Told of every event that checked out, in seq order, while a bundle streams (the
/// anchors' check holds the few hashes it needs this way, never the events).
pub(crate) trait Watch {
    fn event(&mut self, event: &Linked<'_>) -> Result<(), VerifyError>;
}

struct NoWatch;

impl Watch for NoWatch {
    fn event(&mut self, _: &Linked<'_>) -> Result<(), VerifyError> {
        Ok(())
    }
}

/// An intact bundle's summary, and when its manifest vouched for its head (the export
/// time; `None` for a bundle without events).
pub(crate) struct Verified {
    pub(crate) summary: Summary,
    pub(crate) exported_at: Option<SystemTime>,
}

/// [`verify_bundle`], telling `watch` of each event that checked out.
pub(crate) fn verify_watched(
    mut reader: impl BufRead,
    keys: &KeySet,
    watch: &mut impl Watch,
) -> Result<Verified, VerifyError> {
    let mut line = Vec::with_capacity(1024);
    let mut canonical = Vec::with_capacity(512);
    let mut chain = Chain::default();
    let mut line_no = 0u64;
    loop {
        line_no += 1;
        // Hot path: an event line wholly in the reader's buffer is checked where it lies.
        let buffered = reader.fill_buf().map_err(|err| read_error(line_no, &err))?;
        if let Some(end) = memchr::memchr(b'\n', buffered).filter(|&end| end <= MAX_LINE_BYTES)
            && let Some(event) = json::parse_fast(trim_newline(&buffered[..end]))
        {
            chain.push(&event, line_no, &mut canonical, watch)?;
            reader.consume(end + 1);
            continue;
        }
        if !read_line(&mut reader, &mut line, line_no)? {
            return Err(fail(None, Fault::MissingManifest));
        }
        let text = trim_newline(&line);
        let event_error = match json::parse_event_line(text) {
            Ok(event) => {
                chain.push(&event, line_no, &mut canonical, watch)?;
                continue;
            }
            Err(err) => err,
        };
        let manifest = match serde_json::from_slice::<ManifestLine>(text) {
            Ok(parsed) => parsed.manifest,
            Err(manifest_error) => {
                let reason = if looks_like_manifest(text) {
                    format!("manifest: {manifest_error}")
                } else {
                    format!("not an event: {event_error}")
                };
                return Err(fail(
                    None,
                    Fault::Malformed {
                        line: line_no,
                        reason,
                    },
                ));
            }
        };
        expect_end(&mut reader, &mut line, line_no)?;
        return chain.finish(manifest, keys);
    }
}

fn read_error(line: u64, err: &std::io::Error) -> VerifyError {
    fail(
        None,
        Fault::Read {
            line,
            reason: err.to_string(),
        },
    )
}

/// Reads one line (newline included) into `buf`; `false` at the end of input.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, line: u64) -> Result<bool, VerifyError> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE_BYTES).expect("the line bound fits u64") + 1;
    let read = reader
        .by_ref()
        .take(limit)
        .read_until(b'\n', buf)
        .map_err(|err| read_error(line, &err))?;
    if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
        return Err(fail(
            None,
            Fault::Malformed {
                line,
                reason: format!("longer than {MAX_LINE_BYTES} bytes"),
            },
        ));
    }
    Ok(read > 0)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn looks_like_manifest(line: &[u8]) -> bool {
    let rest = line.trim_ascii_start();
    rest.strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"manifest\""))
}

/// Only whitespace may follow the manifest line.
fn expect_end(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    manifest_line: u64,
) -> Result<(), VerifyError> {
    let mut line_no = manifest_line;
    loop {
        line_no += 1;
        let more = read_line(reader, buf, line_no).map_err(|err| match err.fault {
            Fault::Malformed { line, .. } => fail(None, Fault::TrailingData { line }),
            _ => err,
        })?;
        if !more {
            return Ok(());
        }
        if !buf.trim_ascii().is_empty() {
            return Err(fail(None, Fault::TrailingData { line: line_no }));
        }
    }
}

/// What the verifier keeps between lines.
#[derive(Debug)]
struct Chain {
    tenant: Option<TenantId>,
    region: Option<RegionId>,
    /// `via_region` values already validated: a tenant's requests arrive through a few
    /// regions only.
    via_regions: Vec<String>,
    first_seq: Option<u64>,
    last: Option<Head>,
    /// `last.hash` as the lowercase hex its line spelled it in.
    last_hex: [u8; 64],
    count: u64,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            tenant: None,
            region: None,
            via_regions: Vec::new(),
            first_seq: None,
            last: None,
            last_hex: [0; 64],
            count: 0,
        }
    }
}

impl Chain {
    fn push(
        &mut self,
        event: &EventJson<'_>,
        line: u64,
        canonical: &mut Vec<u8>,
        watch: &mut impl Watch,
    ) -> Result<(), VerifyError> {
        let seq = event.seq;
        let malformed = |field: &str, reason: &dyn fmt::Display| {
            fail(
                Some(seq),
                Fault::Malformed {
                    line,
                    reason: format!("field `{field}`: {reason}"),
                },
            )
        };
        if seq == 0 {
            return Err(malformed("seq", &"seqs start at 1"));
        }
        let time_micros = time::parse_micros(&event.time)
            .ok_or_else(|| malformed("time", &time::TimeParseError))?;
        let tenant = match self.tenant {
            Some(tenant) if tenant.as_str() == event.tenant => tenant,
            Some(_) => return Err(fail(Some(seq), Fault::WrongTenant)),
            None => *self
                .tenant
                .insert(TenantId::parse(&event.tenant).map_err(|e| malformed("tenant", &e))?),
        };
        match &self.region {
            Some(region) if region.as_str() == event.region => {}
            Some(_) => return Err(fail(Some(seq), Fault::WrongRegion)),
            None => {
                let region = RegionId::parse(&event.region).map_err(|e| malformed("region", &e))?;
                self.region = Some(region);
            }
        }
        if !self.via_regions.iter().any(|r| *r == event.via_region) {
            RegionId::parse(&event.via_region).map_err(|e| malformed("via_region", &e))?;
            if self.via_regions.len() < MAX_REMEMBERED_REGIONS {
                self.via_regions.push(event.via_region.clone().into_owned());
            }
        }
        ActorKind::parse(&event.actor.kind).map_err(|e| malformed("actor.kind", &e))?;
        Action::parse(&event.action).map_err(|e| malformed("action", &e))?;
        Outcome::parse(&event.outcome).map_err(|e| malformed("outcome", &e))?;
        // Most events name the previous line's `hash` as their `prev_hash`: compare the hex
        // and skip decoding it.
        let prev_hash = match self.last {
            Some(last) if event.prev_hash.as_bytes() == self.last_hex.as_slice() => last.hash,
            _ => Hash::from_hex(&event.prev_hash).map_err(|e| malformed("prev_hash", &e))?,
        };
        let hash = Hash::from_hex(&event.hash).map_err(|e| malformed("hash", &e))?;

        match self.last {
            Some(last) => {
                if prev_hash != last.hash {
                    return Err(fail(Some(seq), Fault::BrokenLink));
                }
                let expected = last.seq.saturating_add(1);
                if seq > expected {
                    return Err(fail(
                        Some(seq),
                        Fault::SeqGap {
                            expected,
                            found: seq,
                        },
                    ));
                }
                if seq < expected {
                    return Err(fail(
                        Some(seq),
                        Fault::SeqOutOfOrder {
                            expected,
                            found: seq,
                        },
                    ));
                }
            }
            None => {
                // A bundle may start mid-chain (a time range); only a chain's first event
                // has a known predecessor.
                if seq == 1 && prev_hash != genesis(&tenant) {
                    return Err(fail(Some(seq), Fault::BrokenLink));
                }
                self.first_seq = Some(seq);
            }
        }

        let fields = Fields {
            seq,
            time_micros,
            region: &event.region,
            tenant: &event.tenant,
            actor_kind: &event.actor.kind,
            actor_id: &event.actor.id,
            action: &event.action,
            resource: &event.resource,
            outcome: &event.outcome,
            request_id: &event.request_id,
            via_region: &event.via_region,
        };
        encode(&fields, canonical);
        if chain_hash(&prev_hash, canonical) != hash {
            return Err(fail(Some(seq), Fault::HashMismatch));
        }
        if let Some(region) = &self.region {
            watch.event(&Linked {
                tenant: &tenant,
                region,
                seq,
                prev_hash: &prev_hash,
                hash: &hash,
            })?;
        }
        self.last = Some(Head { seq, hash });
        self.last_hex.copy_from_slice(event.hash.as_bytes());
        self.count += 1;
        Ok(())
    }

    fn finish(self, manifest: Manifest, keys: &KeySet) -> Result<Verified, VerifyError> {
        let key = keys
            .find(&manifest.key_id, manifest.region.as_str())
            .ok_or_else(|| {
                fail(
                    None,
                    Fault::UnknownKey {
                        key_id: manifest.key_id.clone(),
                    },
                )
            })?;
        if !signing::verify(key, &manifest_payload(&manifest), &manifest.signature) {
            return Err(fail(None, Fault::BadSignature));
        }
        if self.tenant.is_some_and(|t| t != manifest.tenant) {
            return Err(fail(self.first_seq, Fault::WrongTenant));
        }
        if self.region.as_ref().is_some_and(|r| *r != manifest.region) {
            return Err(fail(self.first_seq, Fault::WrongRegion));
        }
        let actual = self.first_seq.zip(self.last.map(|h| h.seq));
        let listed = manifest.first_seq.zip(manifest.last_seq);
        let listed_ok = manifest.first_seq.is_some() == manifest.last_seq.is_some();
        if manifest.count != self.count {
            return Err(fail(
                first_difference(listed, actual),
                Fault::CountMismatch {
                    manifest: manifest.count,
                    actual: self.count,
                },
            ));
        }
        if listed != actual || !listed_ok {
            return Err(fail(
                first_difference(listed, actual),
                Fault::RangeMismatch {
                    manifest: listed,
                    actual,
                },
            ));
        }
        let head_ok = manifest.head_hash == self.last.map(|h| h.hash);
        let checkpoint_ok = match (manifest.checkpoint, self.last) {
            (None, None) => true,
            (Some(c), Some(last)) => c.seq == last.seq && c.hash == last.hash,
            _ => false,
        };
        if !head_ok || !checkpoint_ok {
            return Err(fail(manifest.last_seq, Fault::HeadMismatch));
        }
        Ok(Verified {
            exported_at: manifest.checkpoint.map(|c| c.signed_at),
            summary: Summary {
                tenant: manifest.tenant,
                region: manifest.region,
                from: manifest.from,
                to: manifest.to,
                first_seq: manifest.first_seq,
                last_seq: manifest.last_seq,
                count: manifest.count,
                head_hash: manifest.head_hash,
                key_id: manifest.key_id,
            },
        })
    }
}

/// The first seq one of the two ranges holds and the other does not.
fn first_difference(listed: Option<(u64, u64)>, actual: Option<(u64, u64)>) -> Option<u64> {
    match (listed, actual) {
        (Some((lf, _)), Some((af, _))) if lf != af => Some(lf.min(af)),
        (Some((_, ll)), Some((_, al))) if ll != al => Some(ll.min(al).saturating_add(1)),
        (Some((lf, _)), None) => Some(lf),
        (None, Some((af, _))) => Some(af),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_first_missing_or_extra_seq() {
        assert_eq!(first_difference(Some((1, 50)), Some((1, 45))), Some(46));
        assert_eq!(first_difference(Some((1, 50)), Some((2, 50))), Some(1));
        assert_eq!(first_difference(Some((3, 50)), Some((1, 50))), Some(1));
        assert_eq!(first_difference(Some((1, 50)), None), Some(1));
        assert_eq!(first_difference(None, Some((7, 9))), Some(7));
        assert_eq!(first_difference(Some((1, 5)), Some((1, 5))), None);
    }

    #[test]
    fn manifest_lines_are_recognised() {
        assert!(looks_like_manifest(br#"{"manifest":{}}"#));
        assert!(looks_like_manifest(br#" {  "manifest" : 1}"#));
        assert!(!looks_like_manifest(br#"{"seq":1}"#));
    }

    #[test]
    fn empty_input_has_no_manifest() {
        let err = verify_bundle(&b""[..], &KeySet::new()).expect_err("empty");
        assert_eq!(err.fault, Fault::MissingManifest);
        assert_eq!(
            err.to_string(),
            "the bundle ends without a manifest (truncated)"
        );
    }
}
