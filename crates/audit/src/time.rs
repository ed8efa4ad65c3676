//! Audit timestamps: whole microseconds since the Unix epoch, written as RFC 3339 UTC with
//! exactly six fractional digits (`2026-03-01T12:34:56.789012Z`). Microseconds are what
//! PostgreSQL's `timestamptz` keeps and what the JSON form can carry, so a time survives
//! the database and the bundle unchanged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of a formatted timestamp: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub const RFC3339_MICROS_LEN: usize = 27;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

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

/// Writes `micros` (within `MIN_MICROS..=MAX_MICROS`, else clamped) into `buf`.
pub(crate) fn format_micros(micros: i64, buf: &mut [u8; RFC3339_MICROS_LEN]) -> &str {
    let micros = micros.clamp(MIN_MICROS, MAX_MICROS);
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = of_day / MICROS_PER_SEC;
    let frac = of_day % MICROS_PER_SEC;
    put_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], i64::from(month));
    buf[7] = b'-';
    put_digits(&mut buf[8..10], i64::from(day));
    buf[10] = b'T';
    put_digits(&mut buf[11..13], secs / 3600);
    buf[13] = b':';
    put_digits(&mut buf[14..16], secs / 60 % 60);
    buf[16] = b':';
    put_digits(&mut buf[17..19], secs % 60);
    buf[19] = b'.';
    put_digits(&mut buf[20..26], frac);
    buf[26] = b'Z';
    std::str::from_utf8(buf).expect("only ASCII digits and separators were written")
}

/// Microseconds since the epoch of a timestamp in exactly the form of [`format_micros`].
pub(crate) fn parse_micros(raw: &str) -> Option<i64> {
    let b: &[u8; RFC3339_MICROS_LEN] = raw.as_bytes().try_into().ok()?;
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let frac = digits(&b[20..26])?;
    let month_ok = (1..=12).contains(&month);
    if !month_ok || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = hour * 3600 + minute * 60 + second;
    Some(days * MICROS_PER_DAY + secs * MICROS_PER_SEC + frac)
}

fn put_digits(out: &mut [u8], mut value: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(value % 10).expect("a decimal digit fits a byte");
        value /= 10;
    }
}

fn digits(raw: &[u8]) -> Option<i64> {
    raw.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).expect("a month is 1..=12"),
        u32::try_from(day).expect("a day is 1..=31"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
