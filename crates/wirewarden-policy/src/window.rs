//! Durations written in rules (`90s`, `5m`, `1h30m`, `2d`) and UTC time windows (days of the
//! week and hours of the day).

use std::time::Duration;

use serde::Serialize;
use wirewarden_core::Timestamp;

const SECS_PER_DAY: i64 = 86_400;

/// Parses a duration such as `30s`, `5m`, `1h30m` or `2d`. At least one part; every part is
/// a number followed by `s`, `m`, `h` or `d`. Bare numbers are seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    if s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse::<u64>().ok().map(Duration::from_secs);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in s.bytes() {
        match c {
            b'0'..=b'9' => {
                let digit = u64::from(c - b'0');
                number = Some(number.unwrap_or(0).checked_mul(10)?.checked_add(digit)?);
            }
            b's' | b'm' | b'h' | b'd' => {
                let unit = match c {
                    b's' => 1,
                    b'm' => 60,
                    b'h' => 3_600,
                    _ => 86_400,
                };
                total = total.checked_add(number.take()?.checked_mul(unit)?)?;
            }
            _ => return None,
        }
    }
    if number.is_some() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Days of the week, Monday first.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The day of the week of `t` in UTC, 0 = Monday.
pub(crate) fn weekday(t: Timestamp) -> usize {
    let days = t.unix_secs().div_euclid(SECS_PER_DAY);
    // 1970-01-01 was a Thursday (3).
    days.wrapping_add(3).rem_euclid(7) as usize
}

/// Minutes since midnight UTC.
pub(crate) fn minute_of_day(t: Timestamp) -> u32 {
    (t.unix_secs().rem_euclid(SECS_PER_DAY) / 60) as u32
}

/// When a rule applies: a set of UTC weekdays and a range of minutes of the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TimeWindow {
    /// Bit `i` set: weekday `i` (0 = Monday) is in the window.
    days: u8,
    /// `[from, until)` in minutes since midnight; `from > until` wraps past midnight.
    minutes: Option<(u32, u32)>,
}

impl TimeWindow {
    /// Builds a window from `days` (`["mon-fri", "sun"]`) and `hours` (`"09:00-17:30"`).
    /// Either may be absent; both absent means no window.
    pub(crate) fn parse(
        days: Option<&[String]>,
        hours: Option<&str>,
    ) -> Result<Option<Self>, String> {
        if days.is_none() && hours.is_none() {
            return Ok(None);
        }
        let mut mask = 0x7f;
        if let Some(days) = days {
            mask = 0;
            if days.is_empty() {
                return Err("`days` must not be empty".into());
            }
            for d in days {
                mask |= parse_days(d).ok_or_else(|| format!("invalid day or day range {d:?}"))?;
            }
        }
        let minutes = match hours {
            None => None,
            Some(h) => Some(parse_hours(h).ok_or_else(|| {
                format!("invalid hours {h:?}: expected HH:MM-HH:MM with different ends")
            })?),
        };
        Ok(Some(Self {
            days: mask,
            minutes,
        }))
    }

    /// Whether `t` falls in the window. Days are the calendar day of `t` itself, also for a
    /// range that wraps past midnight.
    pub(crate) fn contains(&self, t: Timestamp) -> bool {
        if self.days & (1 << weekday(t)) == 0 {
            return false;
        }
        match self.minutes {
            None => true,
            Some((from, until)) => {
                let m = minute_of_day(t);
                if from < until {
                    from <= m && m < until
                } else {
                    m >= from || m < until
                }
            }
        }
    }
}

fn day_index(s: &str) -> Option<usize> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(s.trim()))
}

fn parse_days(s: &str) -> Option<u8> {
    match s.split_once('-') {
        None => day_index(s).map(|i| 1 << i),
        Some((a, b)) => {
            let (a, b) = (day_index(a)?, day_index(b)?);
            let mut mask = 0u8;
            let mut i = a;
            // Walks forward, wrapping after Sunday: `fri-mon` is Fri, Sat, Sun, Mon.
            loop {
                mask |= 1 << i;
                if i == b {
                    break;
                }
                i = (i + 1) % 7;
            }
            Some(mask)
        }
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    // 24:00 is allowed as the end of the day.
    if (h < 24 && m < 60) || (h == 24 && m == 0) {
        Some(h * 60 + m)
    } else {
        None
    }
}

fn parse_hours(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (parse_hhmm(a)?, parse_hhmm(b)?);
    if a == b || a >= 24 * 60 {
        return None;
    }
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in [
            "",
            "m",
            "5x",
            "5m3",
            "-5m",
            "99999999999999999999s",
            "1h 30m",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn weekdays_and_minutes() {
        // 2026-11-26 is a Thursday.
        assert_eq!(weekday(at("2026-11-26T10:00:00Z")), 3);
        assert_eq!(weekday(at("2026-11-30T00:00:00Z")), 0);
        assert_eq!(weekday(at("1969-12-31T23:59:59Z")), 2);
        assert_eq!(minute_of_day(at("2026-11-26T10:07:59Z")), 607);
    }

    #[test]
    fn office_hours_and_wrapping_windows() {
        let office = TimeWindow::parse(Some(&["mon-fri".into()]), Some("09:00-17:00"))
            .unwrap()
            .unwrap();
        assert!(office.contains(at("2026-11-26T09:00:00Z")));
        assert!(office.contains(at("2026-11-26T16:59:59Z")));
        assert!(!office.contains(at("2026-11-26T17:00:00Z")));
        assert!(!office.contains(at("2026-11-28T10:00:00Z")), "saturday");
        let night = TimeWindow::parse(None, Some("22:00-06:00"))
            .unwrap()
            .unwrap();
        assert!(night.contains(at("2026-11-26T23:30:00Z")));
        assert!(night.contains(at("2026-11-26T05:59:00Z")));
        assert!(!night.contains(at("2026-11-26T06:00:00Z")));
        let weekend = TimeWindow::parse(Some(&["sat-sun".into()]), None)
            .unwrap()
            .unwrap();
        assert!(weekend.contains(at("2026-11-29T12:00:00Z")));
        assert!(!weekend.contains(at("2026-11-30T12:00:00Z")));
        let wrap = TimeWindow::parse(Some(&["fri-mon".into()]), None)
            .unwrap()
            .unwrap();
        assert!(wrap.contains(at("2026-11-30T12:00:00Z")));
        assert!(!wrap.contains(at("2026-11-26T12:00:00Z")));
    }

    #[test]
    fn invalid_windows() {
        assert!(TimeWindow::parse(Some(&[]), None).is_err());
        assert!(TimeWindow::parse(Some(&["funday".into()]), None).is_err());
        for bad in [
            "9-17",
            "09:00-09:00",
            "25:00-01:00",
            "09:60-10:00",
            "24:00-01:00",
            "",
        ] {
            assert!(TimeWindow::parse(None, Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(TimeWindow::parse(None, None).unwrap(), None);
    }
}
