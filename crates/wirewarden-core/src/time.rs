//! Wall-clock timestamps with nanosecond precision.
//!
//! Audit records, expiries and grants need one time representation that is exact (an
//! integer, so the canonical encoding of an audit record never depends on float
//! formatting), totally ordered, and readable in exported JSON. [`Timestamp`] is nanoseconds
//! since the Unix epoch in an `i64` (years 1677–2262), serialised as RFC 3339 in UTC.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A point in time: nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Self = Self(0);

    /// The current wall-clock time. A clock set before 1970 or after 2262 saturates.
    #[must_use]
    pub fn now() -> Self {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Self(i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n)),
        }
    }

    /// From nanoseconds since the epoch; `None` outside the representable range.
    #[must_use]
    pub fn from_unix_nanos(nanos: i128) -> Option<Self> {
        i64::try_from(nanos).ok().map(Self)
    }

    /// From whole seconds since the epoch; `None` outside the representable range.
    #[must_use]
    pub fn from_unix_secs(secs: i64) -> Option<Self> {
        secs.checked_mul(NANOS_PER_SEC).map(Self)
    }

    /// From milliseconds since the epoch; `None` outside the representable range.
    #[must_use]
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        millis.checked_mul(1_000_000).map(Self)
    }

    /// Nanoseconds since the epoch.
    #[must_use]
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the epoch, rounded towards negative infinity (OCSF `time`).
    #[must_use]
    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Whole seconds since the epoch, rounded towards negative infinity (JWT `exp`).
    #[must_use]
    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(NANOS_PER_SEC)
    }

    /// `self + d`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        let n = i64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(n).map(Self)
    }

    /// `self - d`, or `None` on overflow.
    #[must_use]
    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        let n = i64::try_from(d.as_nanos()).ok()?;
        self.0.checked_sub(n).map(Self)
    }

    /// `self + d`, clamped to the representable range.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        self.checked_add(d).unwrap_or(Self(i64::MAX))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        let diff = i128::from(self.0) - i128::from(earlier.0);
        if diff <= 0 {
            Duration::ZERO
        } else {
            // diff fits: at most 2 * i64::MAX nanoseconds, well inside u64 seconds.
            let secs = (diff / i128::from(NANOS_PER_SEC)) as u64;
            let nanos = (diff % i128::from(NANOS_PER_SEC)) as u32;
            Duration::new(secs, nanos)
        }
    }
}

// === impl Display / FromStr ===

/// Days since the epoch → (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since the epoch.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with nine fractional digits: `2026-11-25T23:52:59.123456789Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC);
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// Parses RFC 3339 with a `Z` offset and 0–9 fractional digits.
    fn from_str(s: &str) -> Result<Self, Error> {
        let err = |reason| Error::InvalidTimestamp {
            input: s.to_owned(),
            reason,
        };
        let b = s.as_bytes();
        if b.len() < 20 || !s.is_ascii() {
            return Err(err("too short"));
        }
        let num = |range: std::ops::Range<usize>| -> Result<i64, Error> {
            let part = s.get(range).ok_or_else(|| err("truncated"))?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err("expected digits"));
            }
            part.parse::<i64>().map_err(|_| err("expected digits"))
        };
        let sep = |i: usize, c: u8| -> Result<(), Error> {
            if b.get(i) == Some(&c) || (c == b'T' && b.get(i) == Some(&b't')) {
                Ok(())
            } else {
                Err(err("misplaced separator"))
            }
        };
        let y = num(0..4)?;
        sep(4, b'-')?;
        let mo = num(5..7)?;
        sep(7, b'-')?;
        let d = num(8..10)?;
        sep(10, b'T')?;
        let h = num(11..13)?;
        sep(13, b':')?;
        let mi = num(14..16)?;
        sep(16, b':')?;
        let se = num(17..19)?;
        if !(1..=12).contains(&mo) {
            return Err(err("month out of range"));
        }
        let (mo, d32) = (mo as u32, d as u32);
        if d32 == 0 || d32 > days_in_month(y, mo) {
            return Err(err("day out of range"));
        }
        if h > 23 || mi > 59 || se > 59 {
            return Err(err("time out of range"));
        }
        let mut i = 19;
        let mut frac: i64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = i - start;
            if digits == 0 || digits > 9 {
                return Err(err("fraction must have 1 to 9 digits"));
            }
            frac = num(start..i)? * 10_i64.pow(9 - digits as u32);
        }
        if !matches!(s.get(i..), Some("Z" | "z")) {
            return Err(err("offset must be Z"));
        }
        let days = days_from_civil(y, mo, d32);
        let secs = days * SECS_PER_DAY + h * 3600 + mi * 60 + se;
        secs.checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(frac))
            .map(Self)
            .ok_or_else(|| err("out of range"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format() {
        assert_eq!(
            Timestamp::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000000000Z"
        );
        let t = Timestamp::from_unix_nanos(1_764_114_779_123_456_789).unwrap();
        assert_eq!(t.to_string(), "2025-11-25T23:52:59.123456789Z");
        let leap = Timestamp::from_unix_secs(951_782_400).unwrap();
        assert_eq!(leap.to_string(), "2000-02-29T00:00:00.000000000Z");
        let before = Timestamp::from_unix_nanos(-1).unwrap();
        assert_eq!(before.to_string(), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn parses_short_fractions_and_lowercase() {
        let t: Timestamp = "2025-11-25t23:52:59.5z".parse().unwrap();
        assert_eq!(t.unix_nanos(), 1_764_114_779_500_000_000);
        let t: Timestamp = "2025-11-25T23:52:59Z".parse().unwrap();
        assert_eq!(t.unix_secs(), 1_764_114_779);
    }

    #[test]
    fn rejects_invalid_dates_and_offsets() {
        for bad in [
            "",
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:00:00+01:00",
            "2025-01-01T00:00:00.Z",
            "2025-01-01T00:00:00.1234567890Z",
            "2025-01-01 00:00:00Z",
            "+025-01-01T00:00:00Z",
            "2025-01-01T00:00:00Zjunk",
            "２025-01-01T00:00:00Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn millis_round_down() {
        let t = Timestamp::from_unix_nanos(-1).unwrap();
        assert_eq!(t.unix_millis(), -1);
        assert_eq!(
            Timestamp::from_unix_nanos(1_999_999).unwrap().unix_millis(),
            1
        );
    }

    #[test]
    fn durations() {
        let a = Timestamp::from_unix_secs(10).unwrap();
        let b = a.checked_add(Duration::from_millis(1500)).unwrap();
        assert_eq!(b.saturating_duration_since(a), Duration::from_millis(1500));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(b.checked_sub(Duration::from_millis(1500)), Some(a));
        let max = Timestamp::from_unix_nanos(i128::from(i64::MAX)).unwrap();
        assert_eq!(max.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(max.saturating_add(Duration::from_secs(1)), max);
    }
}
