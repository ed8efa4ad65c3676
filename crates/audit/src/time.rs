//! Audit timestamps: whole microseconds since the Unix epoch, written as RFC 3339 UTC with
//! exactly six fractional digits (`2026-03-01T12:34:56.789012Z`). Microseconds are what
//! PostgreSQL's `timestamptz` keeps and what the JSON form can carry, so a time survives
//! the database and the bundle unchanged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::format_description::BorrowedFormatItem;
use ::time::macros::format_description;
use ::time::{OffsetDateTime, PrimitiveDateTime};

/// Length of a formatted timestamp: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub const RFC3339_MICROS_LEN: usize = 27;

const MICROS_PER_SEC: i64 = 1_000_000;

/// The earliest representable instant, `0000-01-01T00:00:00.000000Z`.
pub const MIN_MICROS: i64 = -62_167_219_200 * MICROS_PER_SEC;
/// The latest representable instant, `9999-12-31T23:59:59.999999Z`.
pub const MAX_MICROS: i64 = 253_402_300_800 * MICROS_PER_SEC - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed timestamp: expected RFC 3339 UTC with microseconds, like 2026-03-01T12:34:56.789012Z"
)]
pub struct TimeParseError;

/// Microseconds since the Unix epoch, rounded towards the past and clamped into the years
/// 0000–9999 that RFC 3339 can write.
pub fn to_unix_micros(time: SystemTime) -> i64 {
    let micros = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = before.as_micros() + u128::from(before.subsec_nanos() % 1_000 != 0);
            i64::try_from(whole).map_or(i64::MIN, |m| -m)
        }
    };
    micros.clamp(MIN_MICROS, MAX_MICROS)
}

/// The instant `micros` microseconds after (or before, if negative) the Unix epoch.
pub fn from_unix_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// `time` as RFC 3339 UTC with microseconds (truncated to whole microseconds first).
pub fn format(time: SystemTime) -> String {
    let mut buf = [0u8; RFC3339_MICROS_LEN];
    format_micros(to_unix_micros(time), &mut buf).to_owned()
}

/// Parses exactly the form [`format`] writes; anything else (other offsets, fewer or more
/// fractional digits, leap seconds) is refused, so that one instant has one spelling.
pub fn parse(raw: &str) -> Result<SystemTime, TimeParseError> {
    parse_micros(raw)
        .map(from_unix_micros)
        .ok_or(TimeParseError)
}

/// The one spelling of an audit time: RFC 3339 UTC with exactly six fractional digits.
const AUDIT_FORMAT: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Writes `micros` (within `MIN_MICROS..=MAX_MICROS`, else clamped) into `buf`.
pub(crate) fn format_micros(micros: i64, buf: &mut [u8; RFC3339_MICROS_LEN]) -> &str {
    let micros = micros.clamp(MIN_MICROS, MAX_MICROS);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .expect("the years 0000-9999 are within time's range");
    let mut out = buf.as_mut_slice();
    let written = at
        .format_into(&mut out, AUDIT_FORMAT)
        .expect("a year of four digits makes exactly 27 bytes");
    debug_assert_eq!(written, RFC3339_MICROS_LEN);
    std::str::from_utf8(buf).expect("only ASCII digits and separators were written")
}

/// Microseconds since the epoch of a timestamp in exactly the form of [`format_micros`].
pub(crate) fn parse_micros(raw: &str) -> Option<i64> {
    if raw.len() != RFC3339_MICROS_LEN {
        return None;
    }
    let at = PrimitiveDateTime::parse(raw, AUDIT_FORMAT)
        .ok()?
        .assume_utc();
    let micros = i64::try_from(at.unix_timestamp_nanos() / 1_000).ok()?;
    // One instant, one spelling: whatever else `time` would accept (a sign before the
    // year, say) does not write back to the same bytes.
    let mut buf = [0u8; RFC3339_MICROS_LEN];
    (format_micros(micros, &mut buf) == raw).then_some(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
    /// The Julian day number of 1970-01-01.
    const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let month =
            ::time::Month::try_from(u8::try_from(month).expect("a month")).expect("a month");
        let date = ::time::Date::from_calendar_date(
            i32::try_from(year).expect("a year"),
            month,
            u8::try_from(day).expect("a day"),
        )
        .expect("an existing date");
        i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY
    }

    /// The proleptic Gregorian date `days` after 1970-01-01.
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let julian_day = i32::try_from(days + UNIX_EPOCH_JULIAN_DAY).expect("a julian day");
        let (year, month, day) = ::time::Date::from_julian_day(julian_day)
            .expect("a date within time's range")
            .to_calendar_date();
        (i64::from(year), u32::from(u8::from(month)), u32::from(day))
    }

    #[test]
    fn known_instants_format_and_parse() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1, "1970-01-01T00:00:00.000001Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
            (1_772_368_496_789_012, "2026-03-01T12:34:56.789012Z"),
            (MIN_MICROS, "0000-01-01T00:00:00.000000Z"),
            (MAX_MICROS, "9999-12-31T23:59:59.999999Z"),
        ];
        for (micros, text) in cases {
            let mut buf = [0u8; RFC3339_MICROS_LEN];
            assert_eq!(format_micros(micros, &mut buf), text);
            assert_eq!(parse_micros(text), Some(micros), "{text}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = days_from_civil(1900, 1, 1);
        let end = days_from_civil(2300, 1, 1);
        for days in start..end {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
            let micros = days * MICROS_PER_DAY + 45_296_000_123;
            let mut buf = [0u8; RFC3339_MICROS_LEN];
            let text = format_micros(micros, &mut buf).to_owned();
            assert_eq!(parse_micros(&text), Some(micros), "{text}");
        }
    }

    #[test]
    fn other_spellings_are_refused() {
        for raw in [
            "",
            "2026-03-01T12:34:56Z",
            "2026-03-01T12:34:56.789Z",
            "2026-03-01T12:34:56.7890123Z",
            "2026-03-01T12:34:56.789012+00:00",
            "2026-03-01t12:34:56.789012Z",
            "2026-03-01 12:34:56.789012Z",
            "2026-02-29T12:34:56.789012Z",
            "2026-13-01T12:34:56.789012Z",
            "2026-03-00T12:34:56.789012Z",
            "2026-03-01T24:00:00.000000Z",
            "2026-03-01T23:59:60.000000Z",
            "2026-03-01T12:34:56.78901xZ",
            "+026-03-01T12:34:56.789012Z",
        ] {
            assert_eq!(parse(raw), Err(TimeParseError), "{raw:?}");
        }
    }

    #[test]
    fn system_times_round_trip_at_micro_precision() {
        let t = UNIX_EPOCH + Duration::new(1_772_368_496, 789_012_345);
        assert_eq!(to_unix_micros(t), 1_772_368_496_789_012);
        let before = UNIX_EPOCH - Duration::new(0, 1_500);
        assert_eq!(to_unix_micros(before), -2, "rounds towards the past");
        assert_eq!(
            parse(&format(t)),
            Ok(UNIX_EPOCH + Duration::new(1_772_368_496, 789_012_000))
        );
    }
}
