//! Anchors: signed checkpoints kept outside the database, one immutable object each in
//! the region's write-once audit bucket (`checkpoints/<tenant>/<seq, 20 digits>.json`),
//! and the check of a bundle against them. Whoever can write the database can cut a
//! chain's tail and reset its head so that the bundle still verifies on its own; the
//! anchors they cannot rewrite show it. The object's format and the checks are in
//! `docs/audit.md` ("Anchors"). Pure: the caller lists and reads the objects.

use std::fmt;
use std::io::BufRead;
use std::time::SystemTime;

use model::{RegionId, TenantId};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, verify_checkpoint};
use crate::event::Hash;
use crate::signing::{KeySet, Signature};
use crate::time;
use crate::verify::{Fault, Linked, Summary, VerifyError, Watch, verify_watched};

/// Where anchors rest in the audit bucket: `checkpoints/<tenant>/<seq>.json`.
pub const ANCHOR_PREFIX: &str = "checkpoints/";

/// The only anchor format so far.
const ANCHOR_FORMAT: u32 = 1;

/// An anchor object is a few hundred bytes; a reader refuses more than this.
pub const MAX_ANCHOR_BYTES: usize = 4096;

/// The prefix of `tenant`'s anchors, `checkpoints/<tenant>/`.
pub fn anchor_prefix(tenant: &TenantId) -> String {
    format!("{ANCHOR_PREFIX}{tenant}/")
}

/// The object name of `tenant`'s anchor at `seq`: the seq padded to 20 digits, so names
/// sort by seq.
pub fn anchor_name(tenant: &TenantId, seq: u64) -> String {
    format!("{ANCHOR_PREFIX}{tenant}/{seq:020}.json")
}

/// The tenant and seq an anchor's object name gives; `None` for any other name.
pub fn parse_anchor_name(name: &str) -> Option<(TenantId, u64)> {
    let rest = name.strip_prefix(ANCHOR_PREFIX)?;
    let (tenant, file) = rest.split_once('/')?;
    let digits = file.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((TenantId::parse(tenant).ok()?, digits.parse().ok()?))
}

/// The anchor object of `checkpoint`: one JSON object,
/// `{"format":1,"tenant","region","seq","hash","signed_at","key_id","signature"}`.
pub fn anchor_json(checkpoint: &Checkpoint) -> Vec<u8> {
    serde_json::to_vec(&AnchorJson {
        format: ANCHOR_FORMAT,
        tenant: checkpoint.tenant.to_string(),
        region: checkpoint.region.to_string(),
        seq: checkpoint.seq,
        hash: checkpoint.hash,
        signed_at: time::format(checkpoint.signed_at),
        key_id: checkpoint.key_id.clone(),
        signature: checkpoint.signature,
    })
    .expect("an anchor serializes: strings and integers only")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an anchored checkpoint: {0}")]
pub struct AnchorParseError(String);

/// An anchor object read back (its signature is checked by
/// [`verify_bundle_against_anchors`], not here).
pub fn parse_anchor(bytes: &[u8]) -> Result<Checkpoint, AnchorParseError> {
    if bytes.len() > MAX_ANCHOR_BYTES {
        return Err(AnchorParseError(format!(
            "longer than {MAX_ANCHOR_BYTES} bytes"
        )));
    }
    let raw: AnchorJson =
        serde_json::from_slice(bytes).map_err(|err| AnchorParseError(err.to_string()))?;
    if raw.format != ANCHOR_FORMAT {
        return Err(AnchorParseError(format!("unknown format {}", raw.format)));
    }
    if raw.seq == 0 {
        return Err(AnchorParseError("seq 0".to_owned()));
    }
    let field = |name: &str, err: &dyn fmt::Display| AnchorParseError(format!("{name}: {err}"));
    Ok(Checkpoint {
        tenant: TenantId::parse(&raw.tenant).map_err(|e| field("tenant", &e))?,
        region: RegionId::parse(&raw.region).map_err(|e| field("region", &e))?,
        seq: raw.seq,
        hash: raw.hash,
        signed_at: time::parse(&raw.signed_at).map_err(|e| field("signed_at", &e))?,
        key_id: raw.key_id,
        signature: raw.signature,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorJson {
    format: u32,
    tenant: String,
    region: String,
    seq: u64,
    hash: Hash,
    signed_at: String,
    key_id: String,
    signature: Signature,
}

/// What an intact bundle holds, and how the anchors vouch for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchoredSummary {
    pub summary: Summary,
    /// Anchors whose seq the bundle covers (its first event's predecessor included), each
    /// matching the bundle's hash there.
    pub matched: u64,
    /// The anchor of the highest seq the bundle covers.
    pub newest_matched: Option<(u64, SystemTime)>,
    /// Anchors past the bundle's last event that were signed after its export (the chain
    /// grew since) or that a time-bounded bundle does not reach.
    pub later: u64,
}

impl fmt::Display for AnchoredSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {} anchored checkpoint{} match",
            self.summary,
            self.matched,
            if self.matched == 1 { "" } else { "s" }
        )?;
        if let Some((seq, signed_at)) = self.newest_matched {
            write!(
                f,
                " (newest at seq {seq}, signed {})",
                time::format(signed_at)
            )?;
        }
        if self.later > 0 {
            write!(f, ", {} later than the bundle", self.later)?;
        }
        Ok(())
    }
}

/// Verifies the bundle `reader` yields, as [`crate::verify_bundle`] does, and then against
/// `anchors`, the anchored checkpoints of its tenant (any order):
///
/// 1. every anchor verifies with `keys` (its region's key) → else `AnchorInvalid`;
/// 2. every anchor is of the bundle's tenant and region → else `AnchorOfAnotherChain`;
/// 3. when the bundle claims to reach the head (no `to`), no anchor signed before its
///    export names a later seq → else `TailMissing` naming the missing range (reported
///    before a mismatch: a cut tail is often followed by new events at the cut seqs);
/// 4. at every anchored seq the bundle covers (from its first event's predecessor to its
///    last event), the bundle's hash is the anchored one → else `AnchorMismatch` at the
///    first such seq (a head reset, or events rewritten).
pub fn verify_bundle_against_anchors(
    reader: impl BufRead,
    keys: &KeySet,
    anchors: &[Checkpoint],
) -> Result<AnchoredSummary, VerifyError> {
    // Anchor problems name the anchor's seq in their message; the error's own seq (an
    // event of the bundle) stays unset.
    let invalid = |fault: Fault| VerifyError { seq: None, fault };
    for anchor in anchors {
        verify_checkpoint(keys, anchor).map_err(|reason| {
            invalid(Fault::AnchorInvalid {
                seq: anchor.seq,
                reason,
            })
        })?;
    }
    let mut sorted: Vec<&Checkpoint> = anchors.iter().collect();
    sorted.sort_by_key(|anchor| anchor.seq);
    let mut cursor = AnchorCursor {
        anchors: &sorted,
        next: 0,
        first_seen: false,
        matched: 0,
        newest_matched: None,
        mismatch: None,
    };
    let verified = verify_watched(reader, keys, &mut cursor)?;
    let summary = verified.summary;
    if let Some(stranger) = sorted
        .iter()
        .find(|a| a.tenant != summary.tenant || a.region != summary.region)
    {
        return Err(invalid(Fault::AnchorOfAnotherChain { seq: stranger.seq }));
    }
    let last_seq = summary.last_seq.unwrap_or(0);
    let past_end = || sorted.iter().filter(move |a| a.seq > last_seq);
    let cut_at = if summary.to.is_none() {
        past_end()
            .filter(|a| verified.exported_at.is_none_or(|at| a.signed_at <= at))
            .map(|a| a.seq)
            .max()
    } else {
        None
    };
    if let Some(anchored_seq) = cut_at {
        return Err(invalid(Fault::TailMissing {
            first_missing: last_seq + 1,
            anchored_seq,
        }));
    }
    if let Some(mismatch) = cursor.mismatch {
        return Err(mismatch);
    }
    Ok(AnchoredSummary {
        later: u64::try_from(past_end().count()).unwrap_or(u64::MAX),
        summary,
        matched: cursor.matched,
        newest_matched: cursor.newest_matched,
    })
}

/// Walks the sorted anchors along the bundle's events.
struct AnchorCursor<'a> {
    anchors: &'a [&'a Checkpoint],
    /// The first anchor not yet passed.
    next: usize,
    first_seen: bool,
    matched: u64,
    newest_matched: Option<(u64, SystemTime)>,
    /// The first anchored seq where the bundle's hash differs.
    mismatch: Option<VerifyError>,
}

impl AnchorCursor<'_> {
    /// Compares the anchors at `seq` (skipping those before it) with `hash`.
    fn compare(&mut self, seq: u64, hash: &Hash) {
        while let Some(anchor) = self.anchors.get(self.next) {
            if anchor.seq > seq {
                break;
            }
            self.next += 1;
            if anchor.seq < seq {
                // Before the bundle's range: nothing to compare it with.
                continue;
            }
            if anchor.hash != *hash {
                // Kept, not returned: a cut tail found at the end says more.
                self.mismatch.get_or_insert(VerifyError {
                    seq: Some(seq),
                    fault: Fault::AnchorMismatch {
                        anchored: anchor.hash,
                    },
                });
                continue;
            }
            self.matched += 1;
            self.newest_matched = Some((anchor.seq, anchor.signed_at));
        }
    }
}

impl Watch for AnchorCursor<'_> {
    fn event(&mut self, event: &Linked<'_>) -> Result<(), VerifyError> {
        if !self.first_seen {
            self.first_seen = true;
            // Checked here too, so that another chain's anchor is never reported as a
            // rewritten event.
            if let Some(stranger) = self
                .anchors
                .iter()
                .find(|a| a.tenant != *event.tenant || a.region != *event.region)
            {
                return Err(VerifyError {
                    seq: None,
                    fault: Fault::AnchorOfAnotherChain { seq: stranger.seq },
                });
            }
            if let Some(before) = event.seq.checked_sub(1).filter(|&s| s > 0) {
                self.compare(before, event.prev_hash);
            }
        }
        self.compare(event.seq, event.hash);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::checkpoint::sign_checkpoint;
    use crate::signing::SigningKey;

    #[test]
    fn anchor_names_sort_by_seq_and_parse_back() {
        let tenant = TenantId::from_random_bytes([7; 16]);
        let name = anchor_name(&tenant, 42);
        assert_eq!(
            name,
            format!("checkpoints/{tenant}/00000000000000000042.json")
        );
        assert!(anchor_name(&tenant, 9) < anchor_name(&tenant, 10));
        assert!(name.starts_with(&anchor_prefix(&tenant)));
        assert_eq!(parse_anchor_name(&name), Some((tenant, 42)));
        assert_eq!(
            parse_anchor_name(&anchor_name(&tenant, u64::MAX)),
            Some((tenant, u64::MAX))
        );
        for bad in [
            format!("checkpoints/{tenant}/42.json"),
            format!("checkpoints/{tenant}/0000000000000000004x.json"),
            format!("erasures/{tenant}/00000000000000000042.json"),
            "checkpoints/not-a-tenant/00000000000000000042.json".to_owned(),
        ] {
            assert_eq!(parse_anchor_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn anchor_objects_round_trip_and_refuse_other_shapes() {
        let key = SigningKey::generate(RegionId::parse("eu-central-1").expect("valid region"));
        let at = UNIX_EPOCH + Duration::new(1_772_368_496, 123_456_000);
        let checkpoint = sign_checkpoint(
            &key,
            &TenantId::from_random_bytes([3; 16]),
            42,
            &Hash::from_bytes([5; 32]),
            at,
        );
        let bytes = anchor_json(&checkpoint);
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(value["format"], 1);
        assert_eq!(value["seq"], 42);
        assert_eq!(value["signed_at"], "2026-03-01T12:34:56.123456Z");
        assert_eq!(value["hash"], "05".repeat(32));
        assert_eq!(parse_anchor(&bytes), Ok(checkpoint));

        let mut extra = value.clone();
        extra["note"] = "x".into();
        let mut future = value.clone();
        future["format"] = 2.into();
        let mut zero = value;
        zero["seq"] = 0.into();
        for bad in [extra, future, zero] {
            let bytes = serde_json::to_vec(&bad).expect("JSON");
            assert!(parse_anchor(&bytes).is_err(), "{bad}");
        }
        assert!(parse_anchor(&vec![b' '; MAX_ANCHOR_BYTES + 1]).is_err());
    }
}
