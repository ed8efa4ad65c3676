//! The JSON form of an event, exactly API.md's shape:
//! `{"seq","time","region","tenant","actor":{"kind","id"},"action","resource","outcome",
//! "request_id","via_region","prev_hash","hash"}`. Times are RFC 3339 UTC with
//! microseconds, hashes lowercase hex. Parsing refuses unknown fields and any value the
//! model does not accept.

use std::borrow::Cow;

use model::{RegionId, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{Action, Actor, ActorKind, Event, Hash, Outcome};
use crate::time::{self, RFC3339_MICROS_LEN};

/// Why a JSON event was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventJsonError {
    #[error("malformed audit event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed audit event: field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

/// An event as it appears in JSON, borrowing from the input where it can. The verifier
/// works on this form directly so that checking a line allocates nothing.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventJson<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub region: Cow<'a, str>,
    #[serde(borrow)]
    pub tenant: Cow<'a, str>,
    #[serde(borrow)]
    pub actor: ActorJson<'a>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
    #[serde(borrow)]
    pub outcome: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(borrow)]
    pub via_region: Cow<'a, str>,
    #[serde(borrow)]
    pub prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActorJson<'a> {
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

/// Parses one bundle line as an event: the fast path when the line is spelled exactly as
/// this crate writes it, serde otherwise.
pub(crate) fn parse_event_line(line: &[u8]) -> Result<EventJson<'_>, serde_json::Error> {
    match parse_fast(line) {
        Some(event) => Ok(event),
        None => serde_json::from_slice(line),
    }
}

/// The verifier's hot path: an event line spelled exactly as [`Event::to_json`] writes it
/// (keys in order, no whitespace, no escapes, no control characters), parsed without
/// serde's generic machinery. Any other spelling returns `None` and goes to serde, which
/// decides; a line this accepts is one serde parses to the same value (a property test
/// holds it to that).
pub(crate) fn parse_fast(line: &[u8]) -> Option<EventJson<'_>> {
    // One pass the compiler vectorizes: with no backslash and no control character in the
    // line, every string ends at the next quote and is its own value.
    let plain = line
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'\\'));
    if !plain {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut cursor = Cursor { text, pos: 0 };
    cursor.literal("{\"seq\":")?;
    let seq = cursor.integer()?;
    let time = cursor.string(",\"time\":\"")?;
    let region = cursor.string(",\"region\":\"")?;
    let tenant = cursor.string(",\"tenant\":\"")?;
    let kind = cursor.string(",\"actor\":{\"kind\":\"")?;
    let id = cursor.string(",\"id\":\"")?;
    cursor.literal("}")?;
    let action = cursor.string(",\"action\":\"")?;
    let resource = cursor.string(",\"resource\":\"")?;
    let outcome = cursor.string(",\"outcome\":\"")?;
    let request_id = cursor.string(",\"request_id\":\"")?;
    let via_region = cursor.string(",\"via_region\":\"")?;
    let prev_hash = cursor.string(",\"prev_hash\":\"")?;
    let hash = cursor.string(",\"hash\":\"")?;
    cursor.literal("}")?;
    if cursor.pos != text.len() {
        return None;
    }
    Some(EventJson {
        seq,
        time: Cow::Borrowed(time),
        region: Cow::Borrowed(region),
        tenant: Cow::Borrowed(tenant),
        actor: ActorJson {
            kind: Cow::Borrowed(kind),
            id: Cow::Borrowed(id),
        },
        action: Cow::Borrowed(action),
        resource: Cow::Borrowed(resource),
        outcome: Cow::Borrowed(outcome),
        request_id: Cow::Borrowed(request_id),
        via_region: Cow::Borrowed(via_region),
        prev_hash: Cow::Borrowed(prev_hash),
        hash: Cow::Borrowed(hash),
    })
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn literal(&mut self, expected: &str) -> Option<()> {
        let rest = self.text.get(self.pos..)?;
        rest.starts_with(expected)
            .then(|| self.pos += expected.len())
    }

    /// A JSON integer that fits u64: digits, no sign, no leading zero, no fraction.
    fn integer(&mut self) -> Option<u64> {
        let rest = self.text.get(self.pos..)?.as_bytes();
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = &rest[..len];
        if len == 0 || (len > 1 && digits[0] == b'0') {
            return None;
        }
        let value = digits.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        self.pos += len;
        Some(value)
    }

    /// `prefix` (which opens the string), then the string up to its closing quote.
    fn string(&mut self, prefix: &str) -> Option<&'a str> {
        self.literal(prefix)?;
        let rest = self.text.get(self.pos..)?;
        let end = memchr::memchr(b'"', rest.as_bytes())?;
        self.pos += end + 1;
        rest.get(..end)
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    seq: u64,
    time: &'a str,
    region: &'a str,
    tenant: &'a str,
    actor: ActorOut<'a>,
    action: &'static str,
    resource: &'a str,
    outcome: &'static str,
    request_id: &'a str,
    via_region: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

#[derive(Serialize)]
struct ActorOut<'a> {
    kind: &'static str,
    id: &'a str,
}

fn field(field: &'static str, reason: impl ToString) -> EventJsonError {
    EventJsonError::Field {
        field,
        reason: reason.to_string(),
    }
}

impl EventJson<'_> {
    /// The owned, validated event.
    pub(crate) fn to_event(&self) -> Result<Event, EventJsonError> {
        Ok(Event {
            seq: self.seq,
            time: time::parse(&self.time).map_err(|e| field("time", e))?,
            region: RegionId::parse(&self.region).map_err(|e| field("region", e))?,
            tenant: TenantId::parse(&self.tenant).map_err(|e| field("tenant", e))?,
            actor: Actor {
                kind: ActorKind::parse(&self.actor.kind).map_err(|e| field("actor.kind", e))?,
                id: self.actor.id.clone().into_owned(),
            },
            action: Action::parse(&self.action).map_err(|e| field("action", e))?,
            resource: self.resource.clone().into_owned(),
            outcome: Outcome::parse(&self.outcome).map_err(|e| field("outcome", e))?,
            request_id: self.request_id.clone().into_owned(),
            via_region: RegionId::parse(&self.via_region).map_err(|e| field("via_region", e))?,
            prev_hash: Hash::from_hex(&self.prev_hash).map_err(|e| field("prev_hash", e))?,
            hash: Hash::from_hex(&self.hash).map_err(|e| field("hash", e))?,
        })
    }
}

impl Event {
    /// The event as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event serializes: strings and integers only")
    }

    /// Parses exactly the form [`Event::to_json`] writes (whitespace aside).
    pub fn from_json(raw: &str) -> Result<Self, EventJsonError> {
        let parsed: EventJson<'_> = serde_json::from_str(raw)?;
        parsed.to_event()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut time_buf = [0u8; RFC3339_MICROS_LEN];
        let mut prev_buf = [0u8; 64];
        let mut hash_buf = [0u8; 64];
        EventOut {
            seq: self.seq,
            time: time::format_micros(time::to_unix_micros(self.time), &mut time_buf),
            region: self.region.as_str(),
            tenant: self.tenant.as_str(),
            actor: ActorOut {
                kind: self.actor.kind.as_str(),
                id: &self.actor.id,
            },
            action: self.action.as_str(),
            resource: &self.resource,
            outcome: self.outcome.as_str(),
            request_id: &self.request_id,
            via_region: self.via_region.as_str(),
            prev_hash: self.prev_hash.write_hex(&mut prev_buf),
            hash: self.hash.write_hex(&mut hash_buf),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parsed = EventJson::deserialize(deserializer)?;
        parsed.to_event().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        serializer.serialize_str(self.write_hex(&mut buf))
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        Hash::from_hex(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::chain::next;
    use crate::event::NewEvent;

    fn sample() -> Event {
        next(
            None,
            NewEvent {
                time: UNIX_EPOCH + Duration::new(1_772_368_496, 789_012_345),
                region: RegionId::parse("eu-central-1").expect("valid region"),
                tenant: TenantId::parse("2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60")
                    .expect("valid tenant"),
                actor: Actor {
                    kind: ActorKind::Operator,
                    id: "ops \"quoted\" é".to_owned(),
                },
                action: Action::SubjectErase,
                resource: "subjects/s-1".to_owned(),
                outcome: Outcome::Denied,
                request_id: "req-9".to_owned(),
                via_region: RegionId::parse("us-east-1").expect("valid region"),
            },
        )
    }

    #[test]
    fn json_has_the_api_shape_and_round_trips() {
        let event = sample();
        let json = event.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "seq",
            "time",
            "region",
            "tenant",
            "actor",
            "action",
            "resource",
            "outcome",
            "request_id",
            "via_region",
            "prev_hash",
            "hash",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(value["time"], "2026-03-01T12:34:56.789012Z");
        assert_eq!(value["actor"]["kind"], "operator");
        assert_eq!(value["action"], "subject.erase");
        assert_eq!(value["outcome"], "denied");
        assert_eq!(value["hash"], event.hash.to_hex());
        assert_eq!(Event::from_json(&json).expect("parses back"), event);
        let via_serde: Event = serde_json::from_value(value).expect("deserializes");
        assert_eq!(via_serde, event);
    }

    #[test]
    fn the_fast_path_takes_lines_as_written_and_leaves_the_rest_to_serde() {
        let line = sample().to_json();
        assert!(
            parse_fast(line.as_bytes()).is_none(),
            "the sample's actor id has escapes"
        );
        let mut plain = sample();
        plain.actor.id = "ops-é".to_owned();
        let line = plain.to_json();
        let fast = parse_fast(line.as_bytes()).expect("written form");
        let slow: EventJson<'_> = serde_json::from_str(&line).expect("valid");
        assert_eq!(fast, slow);
        for other in [
            line.replacen(':', ": ", 1),
            line.replacen("\"seq\":1", "\"seq\":01", 1),
            line.replacen("\"seq\":1", "\"seq\":1.0", 1),
            line.replacen("\"seq\":1", "\"seq\":18446744073709551616", 1),
            format!("{line} "),
            format!("{line}x"),
            line.replacen("ops-é", "ops\\u00e9", 1),
            line.replacen("ops-é", "ops\t", 1),
        ] {
            assert!(parse_fast(other.as_bytes()).is_none(), "{other}");
        }
    }

    use proptest::prelude::any;
    use proptest::sample::Index;

    fn plain_event(id: String, resource: String, seq: u64) -> Event {
        let mut event = sample();
        event.actor.id = id;
        event.resource = resource;
        event.seq = seq;
        event
    }

    proptest::proptest! {
        /// Whatever the fast path accepts, serde accepts too, with the same value: random
        /// strings (quotes, backslashes, control characters, any Unicode) and random byte
        /// edits of the written line.
        #[test]
        fn the_fast_path_agrees_with_serde(
            id in "\\PC{0,12}|[\\x00-\\x7f]{0,12}",
            resource in "[a-z0-9/\\\\\"]{0,16}",
            seq in any::<u64>(),
            edits in proptest::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 0..3),
        ) {
            let mut line = plain_event(id, resource, seq).to_json().into_bytes();
            for (at, byte, how) in edits {
                let i = at.index(line.len());
                match how {
                    0 => line[i] = byte,
                    1 => line.insert(i, byte),
                    _ => { line.remove(i); }
                }
            }
            if let Some(fast) = parse_fast(&line) {
                let slow: EventJson<'_> = serde_json::from_slice(&line)
                    .expect("serde accepts what the fast path accepts");
                proptest::prop_assert_eq!(fast, slow);
            }
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let json = sample().to_json();
        let extra = json.replacen('{', r#"{"extra":1,"#, 1);
        assert!(matches!(
            Event::from_json(&extra),
            Err(EventJsonError::Json(_))
        ));
        let bad_actor = json.replace(r#""kind":"operator""#, r#""kind":"robot""#);
        let err = Event::from_json(&bad_actor).expect_err("unknown actor kind");
        assert!(err.to_string().contains("actor.kind"), "{err}");
        let bad_time = json.replace("56.789012Z", "56.789Z");
        assert!(Event::from_json(&bad_time).is_err());
        let upper = json.replace(
            &sample().hash.to_hex(),
            &sample().hash.to_hex().to_uppercase(),
        );
        assert!(Event::from_json(&upper).is_err());
        let missing = json.replace(r#""request_id":"req-9","#, "");
        assert!(Event::from_json(&missing).is_err());
    }
}
