//! Built-in detectors and the scanner that finds them in one pass.
//!
//! The scanner skips clean text eight bytes at a time: a SWAR test flags the few bytes that can
//! start or reveal an entity (ASCII digits and `-./:`, `@`, `A`, `B`, `_`, and every
//! non-ASCII byte). Only there does it look closer, and only candidates reach the validators
//! (Luhn, SSN area/group/serial rules, IBAN mod 97, IP address parsing, NANP/E.164 shapes,
//! secret prefixes with their lengths). Non-ASCII bytes take a careful path that decodes the
//! character so that digits of any script count by value and Unicode spaces, dashes and
//! zero-width characters count as separators.

use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::unicode::{char_at, digit_value, is_digit_separator, is_ignorable};

/// A built-in detector: what kind of sensitive value it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Detector {
    /// Payment card numbers: 13–19 digits, issuer prefix 2–6, Luhn checksum; usual groupings.
    CardNumber,
    /// US social security numbers with valid area, group and serial.
    Ssn,
    /// Email addresses.
    Email,
    /// Phone numbers: E.164 (`+` and 8–15 digits) and NANP (`(415) 555-0123`).
    Phone,
    /// International bank account numbers with a valid mod-97 checksum.
    Iban,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// AWS secret access keys, recognised after their usual names.
    AwsSecretAccessKey,
    /// JSON Web Tokens.
    Jwt,
    /// PEM private key blocks.
    PrivateKey,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// Slack tokens (`xoxb-`, `xoxp-`, …).
    SlackToken,
    /// Stripe secret and restricted keys (`sk_live_`, `rk_test_`, …).
    StripeKey,
    /// The credential after `Bearer`.
    BearerToken,
}

impl Detector {
    /// Every built-in detector.
    pub const ALL: [Self; 14] = [
        Self::CardNumber,
        Self::Ssn,
        Self::Email,
        Self::Phone,
        Self::Iban,
        Self::IpAddress,
        Self::AwsAccessKeyId,
        Self::AwsSecretAccessKey,
        Self::Jwt,
        Self::PrivateKey,
        Self::GithubToken,
        Self::SlackToken,
        Self::StripeKey,
        Self::BearerToken,
    ];

    /// The entity name used in strategies, masked counts and configuration.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::CardNumber => "card_number",
            Self::Ssn => "ssn",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Iban => "iban",
            Self::IpAddress => "ip_address",
            Self::AwsAccessKeyId => "aws_access_key_id",
            Self::AwsSecretAccessKey => "aws_secret_access_key",
            Self::Jwt => "jwt",
            Self::PrivateKey => "private_key",
            Self::GithubToken => "github_token",
            Self::SlackToken => "slack_token",
            Self::StripeKey => "stripe_key",
            Self::BearerToken => "bearer_token",
        }
    }

    /// The detector with this entity name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DetectorSet(u32);

impl DetectorSet {
    /// No detector.
    #[must_use]
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every built-in detector.
    #[must_use]
    pub fn all() -> Self {
        Self::ALL_BITS
    }

    const ALL_BITS: Self = {
        let mut bits = 0;
        let mut i = 0;
        while i < Detector::ALL.len() {
            bits |= Detector::ALL[i].bit();
            i += 1;
        }
        Self(bits)
    };

    /// Adds a detector.
    #[must_use]
    pub const fn with(self, d: Detector) -> Self {
        Self(self.0 | d.bit())
    }

    /// Removes a detector.
    #[must_use]
    pub const fn without(self, d: Detector) -> Self {
        Self(self.0 & !d.bit())
    }

    /// Whether `d` is in the set.
    #[must_use]
    pub const fn contains(self, d: Detector) -> bool {
        self.0 & d.bit() != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The detectors in the set.
    pub fn iter(self) -> impl Iterator<Item = Detector> {
        Detector::ALL.into_iter().filter(move |d| self.contains(*d))
    }

    fn any_numeric(self) -> bool {
        self.contains(Detector::CardNumber)
            || self.contains(Detector::Ssn)
            || self.contains(Detector::Phone)
            || self.contains(Detector::Iban)
            || self.contains(Detector::IpAddress)
    }
}

impl FromIterator<Detector> for DetectorSet {
    fn from_iter<T: IntoIterator<Item = Detector>>(iter: T) -> Self {
        iter.into_iter().fold(Self::empty(), Self::with)
    }
}

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Builtin(Detector),
    Custom(usize),
}

/// A sensitive span `start..end` (byte offsets) of the scanned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: Kind,
}

// === validators ===

/// Luhn checksum over digit values.
#[must_use]
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let d = u32::from(d);
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Payment card: 13–19 digits, a plausible issuer prefix (2–6), Luhn.
#[must_use]
pub(crate) fn card_valid(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len())
        && digits.first().is_some_and(|d| (2..=6).contains(d))
        && luhn_valid(digits)
}

/// US SSN: area 001–899 except 666, group 01–99, serial 0001–9999.
#[must_use]
pub(crate) fn ssn_valid(d: &[u8]) -> bool {
    let [a0, a1, a2, g0, g1, s0, s1, s2, s3] = d else {
        return false;
    };
    let area = u32::from(*a0) * 100 + u32::from(*a1) * 10 + u32::from(*a2);
    let group = u32::from(*g0) * 10 + u32::from(*g1);
    let serial =
        u32::from(*s0) * 1000 + u32::from(*s1) * 100 + u32::from(*s2) * 10 + u32::from(*s3);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// NANP number without the country code: NPA and exchange both start with 2–9.
#[must_use]
pub(crate) fn nanp_valid(d: &[u8]) -> bool {
    d.len() == 10
        && d.first().is_some_and(|x| *x >= 2)
        && d.get(3).is_some_and(|x| *x >= 2)
        // N11 codes (411, 911) are services, not area codes.
        && !(d.get(1) == Some(&1) && d.get(2) == Some(&1))
}

/// IBAN lengths per country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

fn iban_length(country: [u8; 2]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == country)
        .map(|(_, n)| *n)
}

/// IBAN mod-97 check over upper-case alphanumerics (`DE89…`).
#[must_use]
pub(crate) fn iban_valid(chars: &[u8]) -> bool {
    let ([c0, c1], rest) = match chars.split_first_chunk::<2>() {
        Some(x) => x,
        None => return false,
    };
    if !(c0.is_ascii_uppercase() && c1.is_ascii_uppercase()) {
        return false;
    }
    if iban_length([*c0, *c1]) != Some(chars.len()) {
        return false;
    }
    if !rest.iter().take(2).all(u8::is_ascii_digit) {
        return false;
    }
    // (a·m + b) mod 97 = ((a mod 97)·m + b) mod 97: reduce only when the next step could
    // overflow, not once per character (a division each).
    const REDUCE_AT: u64 = u64::MAX / 100 - 100;
    let mut rem = 0u64;
    let rearranged = chars.iter().skip(4).chain(chars.iter().take(4));
    for &c in rearranged {
        if rem >= REDUCE_AT {
            rem %= 97;
        }
        match c {
            b'0'..=b'9' => rem = rem * 10 + u64::from(c - b'0'),
            b'A'..=b'Z' => rem = rem * 100 + u64::from(c - b'A') + 10,
            _ => return false,
        }
    }
    let rem = rem % 97;
    rem == 1
}

/// Email: `local@domain.tld` with a plausible local part and domain.
#[must_use]
pub(crate) fn email_domain_valid(domain: &str) -> bool {
    if domain.len() > 253 {
        return false;
    }
    let mut labels = 0;
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_alphanumeric() || c == '-')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2
        && last.chars().count() >= 2
        && (last.chars().all(char::is_alphabetic) || last.starts_with("xn--"))
}

// === scanner ===

const L: u64 = 0x0101_0101_0101_0101;
const H: u64 = 0x8080_8080_8080_8080;
const M7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// High bit set in every byte `b` of `x` with `m < b < n` (ASCII bytes only).
#[inline(always)]
const fn between(x: u64, m: u64, n: u64) -> u64 {
    let t = x & M7;
    (L * (127 + n)).wrapping_sub(t) & !x & (t + L * (127 - m)) & H
}

/// High bit set in every byte of `x` equal to `b`.
#[inline(always)]
const fn eq(x: u64, b: u8) -> u64 {
    let y = x ^ (L * b as u64);
    !(((y & M7) + M7) | y | M7)
}

#[inline(always)]
const fn trigger_mask(x: u64) -> u64 {
    between(x, 0x2C, 0x3B) | between(x, 0x3F, 0x43) | eq(x, b'_') | (x & H)
}

#[inline(always)]
const fn is_trigger(b: u8) -> bool {
    matches!(b, b'-'..=b':' | b'@'..=b'B' | b'_') || b >= 0x80
}

/// The first byte at or after `i` that may start or reveal an entity.
#[inline]
fn next_trigger(bytes: &[u8], mut i: usize) -> Option<usize> {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = trigger_mask(u64::from_le_bytes(word));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if is_trigger(b) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn byte(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}

fn count_while(bytes: &[u8], from: usize, f: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .map_or(0, |s| s.iter().take_while(|b| f(**b)).count())
}

fn starts_with_ci(bytes: &[u8], at: usize, lit: &[u8]) -> bool {
    bytes
        .get(at..at + lit.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(lit))
}

/// Scanner options: which detectors run and how strict some of them are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanner {
    pub(crate) set: DetectorSet,
    /// Also report nine bare digits with a valid SSN structure (`123456789`).
    pub(crate) ssn_unformatted: bool,
}

struct State<'o> {
    floor: usize,
    token_checked: usize,
    out: &'o mut Vec<Finding>,
}

impl State<'_> {
    fn push(&mut self, start: usize, end: usize, d: Detector) {
        self.out.push(Finding {
            start,
            end,
            kind: Kind::Builtin(d),
        });
        self.floor = end;
    }
}

impl Scanner {
    /// Appends the findings in `bytes` to `out`, in order and without overlaps.
    pub(crate) fn scan(&self, bytes: &[u8], out: &mut Vec<Finding>) {
        if self.set.is_empty() {
            return;
        }
        let mut st = State {
            floor: 0,
            token_checked: 0,
            out,
        };
        // Built on the first digit only, then reused: clean text pays nothing for it.
        let mut seq: Option<Seq> = None;
        let mut i = 0;
        while let Some(p) = next_trigger(bytes, i) {
            let next = self.at(bytes, p, &mut st, &mut seq);
            i = next.max(p + 1).max(st.floor);
        }
    }

    /// Looks at the trigger byte `p`; returns where to continue.
    fn at(&self, bytes: &[u8], p: usize, st: &mut State<'_>, seq: &mut Option<Seq>) -> usize {
        let b = byte(bytes, p);
        if b >= 0x80 {
            let Some((c, len)) = char_at(bytes, p) else {
                return p + 1;
            };
            if digit_value(c).is_some() {
                return self.numeric(bytes, p, st, seq);
            }
            if c == '＠' && self.set.contains(Detector::Email) {
                self.email(bytes, p, len, st);
            }
            return p + len;
        }
        if matches!(b, b'0'..=b'9' | b'_' | b'-' | b'A')
            && p >= st.token_checked
            && self.token(bytes, p, st)
        {
            return st.floor;
        }
        match b {
            b'0'..=b'9' => self.numeric(bytes, p, st, seq),
            b'@' => {
                if self.set.contains(Detector::Email) {
                    self.email(bytes, p, 1, st);
                }
                p + 1
            }
            b':' => {
                if self.set.contains(Detector::IpAddress) {
                    self.ipv6(bytes, p, st);
                }
                p + 1
            }
            b'-' => {
                if self.set.contains(Detector::PrivateKey) {
                    self.pem(bytes, p, st);
                }
                p + 1
            }
            b'.' => {
                if self.set.contains(Detector::Jwt) && starts_with_ci(bytes, p + 1, b"eyJ") {
                    let mut ts = p;
                    while ts > st.floor && is_token_byte(byte(bytes, ts - 1)) {
                        ts -= 1;
                    }
                    if let Some(end) = jwt_at(bytes, ts) {
                        st.push(ts, end, Detector::Jwt);
                    }
                }
                p + 1
            }
            b'B' => {
                if self.set.contains(Detector::BearerToken) {
                    self.bearer(bytes, p, st);
                }
                p + 1
            }
            _ => p + 1,
        }
    }

    /// Secret tokens that start where the token containing `p` starts, and AWS secret keys
    /// that follow a token naming them. Returns whether something was found.
    fn token(&self, bytes: &[u8], p: usize, st: &mut State<'_>) -> bool {
        let mut ts = p;
        while ts > st.floor && is_token_byte(byte(bytes, ts - 1)) {
            ts -= 1;
        }
        // Every secret prefix and key name starts with a letter: a token that starts with a
        // digit can only be a bearer credential. Numbers are common; skip the rest for them.
        if ts == p && byte(bytes, p).is_ascii_digit() && !bearer_before(bytes, ts, st.floor) {
            return false;
        }
        let te = p + count_while(bytes, p, is_token_byte);
        st.token_checked = te;
        // "bearer <token>" in any case; "Bearer" itself is found from its `B`.
        if set_has(self.set, Detector::BearerToken) && bearer_before(bytes, ts, st.floor) {
            let n = count_while(bytes, ts, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            });
            let pad = count_while(bytes, ts + n, |b| b == b'=');
            if n >= 8 {
                st.push(ts, ts + n + pad, Detector::BearerToken);
                return true;
            }
        }
        let set = self.set;
        let alnum_run = |from: usize| count_while(bytes, from, |b| b.is_ascii_alphanumeric());
        let word_end = |e: usize| !byte(bytes, e).is_ascii_alphanumeric();
        if te - ts >= 15 {
            let t = bytes.get(ts..te).unwrap_or_default();
            let found = if set.contains(Detector::AwsAccessKeyId)
                && t.len() >= 20
                && matches!(
                    t.get(..4),
                    Some(
                        b"AKIA"
                            | b"ASIA"
                            | b"AGPA"
                            | b"AIDA"
                            | b"AROA"
                            | b"AIPA"
                            | b"ANPA"
                            | b"ANVA"
                            | b"ABIA"
                            | b"ACCA"
                    )
                )
                && t.get(4..20).is_some_and(|k| {
                    k.iter()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                })
                && word_end(ts + 20)
            {
                Some((ts + 20, Detector::AwsAccessKeyId))
            } else if set.contains(Detector::GithubToken)
                && matches!(
                    t.get(..4),
                    Some(b"ghp_" | b"gho_" | b"ghu_" | b"ghs_" | b"ghr_")
                )
                && alnum_run(ts + 4) >= 30
            {
                Some((ts + 4 + alnum_run(ts + 4), Detector::GithubToken))
            } else if set.contains(Detector::GithubToken) && t.starts_with(b"github_pat_") {
                let n = count_while(bytes, ts + 11, |b| b.is_ascii_alphanumeric() || b == b'_');
                (n >= 22).then_some((ts + 11 + n, Detector::GithubToken))
            } else if set.contains(Detector::SlackToken)
                && (matches!(
                    t.get(..5),
                    Some(b"xoxb-" | b"xoxp-" | b"xoxa-" | b"xoxr-" | b"xoxs-" | b"xoxe-")
                ) || t.starts_with(b"xapp-"))
            {
                let n = count_while(bytes, ts + 5, |b| b.is_ascii_alphanumeric() || b == b'-');
                (n >= 10).then_some((ts + 5 + n, Detector::SlackToken))
            } else if set.contains(Detector::StripeKey)
                && matches!(
                    t.get(..8),
                    Some(b"sk_live_" | b"sk_test_" | b"rk_live_" | b"rk_test_")
                )
                && alnum_run(ts + 8) >= 10
            {
                Some((ts + 8 + alnum_run(ts + 8), Detector::StripeKey))
            } else if set.contains(Detector::Jwt) && t.starts_with(b"eyJ") {
                jwt_at(bytes, ts).map(|e| (e, Detector::Jwt))
            } else {
                None
            };
            if let Some((end, d)) = found {
                st.push(ts, end, d);
                return true;
            }
        }
        if set.contains(Detector::AwsSecretAccessKey) && te - ts >= 10 {
            let t = bytes.get(ts..te).unwrap_or_default();
            let named = [
                &b"secret_access_key"[..],
                b"secretaccesskey",
                b"aws_secret_key",
                b"aws_secret",
            ]
            .iter()
            .any(|k| t.len() >= k.len() && t[t.len() - k.len()..].eq_ignore_ascii_case(k));
            if named {
                let gap = count_while(bytes, te, |b| {
                    matches!(b, b' ' | b'\t' | b'"' | b'\'' | b':' | b'=')
                });
                let vs = te + gap;
                let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'/' || b == b'+';
                if (1..=8).contains(&gap) && count_while(bytes, vs, b64) == 40 {
                    let ve = vs + 40;
                    if byte(bytes, ve) != b'=' {
                        st.push(vs, ve, Detector::AwsSecretAccessKey);
                        return true;
                    }
                }
            }
        }
        false
    }

    fn bearer(&self, bytes: &[u8], p: usize, st: &mut State<'_>) {
        if p > st.floor && byte(bytes, p - 1).is_ascii_alphanumeric() {
            return;
        }
        if !starts_with_ci(bytes, p, b"bearer") {
            return;
        }
        let gap = count_while(bytes, p + 6, |b| b == b' ' || b == b'\t');
        if gap == 0 {
            return;
        }
        let ts = p + 6 + gap;
        let n = count_while(bytes, ts, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
        let pad = count_while(bytes, ts + n, |b| b == b'=');
        if n >= 8 {
            st.push(ts, ts + n + pad, Detector::BearerToken);
        }
    }

    fn pem(&self, bytes: &[u8], p: usize, st: &mut State<'_>) {
        if !bytes
            .get(p..)
            .is_some_and(|s| s.starts_with(b"-----BEGIN "))
        {
            return;
        }
        let label_start = p + 11;
        let head = bytes.get(label_start..).unwrap_or_default();
        let Some(label_len) = memchr::memmem::find(head.get(..80).unwrap_or(head), b"-----") else {
            return;
        };
        let label = head.get(..label_len).unwrap_or_default();
        if memchr::memmem::find(label, b"PRIVATE KEY").is_none() {
            return;
        }
        let body = label_start + label_len + 5;
        let end = match memchr::memmem::find(bytes.get(body..).unwrap_or_default(), b"-----END ") {
            Some(e) => {
                let after = body + e + 9;
                match memchr::memmem::find(bytes.get(after..).unwrap_or_default(), b"-----") {
                    Some(x) => after + x + 5,
                    // A block that never ends is masked to the end: fail closed.
                    None => bytes.len(),
                }
            }
            None => bytes.len(),
        };
        st.push(p, end, Detector::PrivateKey);
    }

    fn email(&self, bytes: &[u8], at: usize, at_len: usize, st: &mut State<'_>) {
        let local_char = |b: u8| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'..=b'\'' | b'*' | b'+' | b'/' | b'=' | b'?' | b'^'..=b'`' | b'{'..=b'~' | b'.' | b'-'
                )
                || b >= 0x80
        };
        let mut ls = at;
        while ls > st.floor && at - ls < 64 && local_char(byte(bytes, ls - 1)) {
            ls -= 1;
        }
        // Do not start in the middle of a multi-byte character.
        while ls < at && byte(bytes, ls) & 0xC0 == 0x80 {
            ls += 1;
        }
        while ls < at && byte(bytes, ls) == b'.' {
            ls += 1;
        }
        if ls == at {
            return;
        }
        let ds = at + at_len;
        // ASCII domains (nearly all) byte by byte; the character loop takes over at the first
        // non-ASCII byte.
        let mut de = ds
            + count_while(bytes, ds, |b| {
                b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
            });
        while let Some((c, l)) = char_at(bytes, de) {
            if c.is_alphanumeric() || c == '.' || c == '-' {
                de += l;
            } else {
                break;
            }
        }
        while de > ds && matches!(byte(bytes, de - 1), b'.' | b'-') {
            de -= 1;
        }
        let Some(domain) = bytes.get(ds..de).and_then(|d| std::str::from_utf8(d).ok()) else {
            return;
        };
        if email_domain_valid(domain) {
            st.push(ls, de, Detector::Email);
        }
    }

    fn ipv6(&self, bytes: &[u8], p: usize, st: &mut State<'_>) {
        let v6 = |b: u8| b.is_ascii_hexdigit() || b == b':';
        let mut s = p;
        while s > st.floor && p - s < 45 && v6(byte(bytes, s - 1)) {
            s -= 1;
        }
        if s > 0 && (byte(bytes, s - 1).is_ascii_alphanumeric() || byte(bytes, s - 1) == b'_') {
            return;
        }
        let mut e = p + count_while(bytes, p, |b| v6(b) || b == b'.');
        if e - s > 45 {
            return;
        }
        loop {
            let Some(cand) = bytes.get(s..e) else { return };
            // At least one decimal digit: "ab::cd" and "::a" are rarely addresses in text.
            let ok = cand.iter().filter(|b| **b == b':').count() >= 2
                && cand.iter().any(u8::is_ascii_digit)
                && !continues_numeric(bytes, e)
                && std::str::from_utf8(cand)
                    .ok()
                    .is_some_and(|c| Ipv6Addr::from_str(c).is_ok());
            let after = char_at(bytes, e).map_or(' ', |(c, _)| c);
            if ok && !(after.is_alphanumeric() || after == '_') {
                st.push(s, e, Detector::IpAddress);
                return;
            }
            // Sentence punctuation after an address: "… fe80::1." or "… ::1:".
            if e > p + 1 && matches!(byte(bytes, e - 1), b'.' | b':') && !ok {
                e -= 1;
            } else {
                return;
            }
        }
    }

    /// IBAN starting two letters before `p`, if there is one. Returns its end.
    fn iban(&self, bytes: &[u8], p: usize, st: &State<'_>) -> Option<usize> {
        let s = p.checked_sub(2)?;
        if s < st.floor
            || !byte(bytes, s).is_ascii_uppercase()
            || !byte(bytes, s + 1).is_ascii_uppercase()
            || (s > 0 && byte(bytes, s - 1).is_ascii_alphanumeric())
        {
            return None;
        }
        let want = iban_length([byte(bytes, s), byte(bytes, s + 1)])?;
        let mut chars = [0u8; 34];
        let mut n = 0;
        let mut i = s;
        while n < want {
            let b = byte(bytes, i);
            if b.is_ascii_uppercase() || b.is_ascii_digit() {
                *chars.get_mut(n)? = b;
                n += 1;
                i += 1;
            } else if b == b' ' && n > 0 && n % 4 == 0 {
                i += 1;
            } else if let Some((c, l)) = char_at(bytes, i).filter(|(c, _)| is_ignorable(*c)) {
                let _ = c;
                i += l;
            } else {
                return None;
            }
        }
        if byte(bytes, i).is_ascii_alphanumeric() {
            return None;
        }
        iban_valid(chars.get(..n)?).then_some(i)
    }

    /// Digit sequences: cards, SSNs, phones, IPv4 (and IBANs that end in the digits at `p`).
    fn numeric(&self, bytes: &[u8], p: usize, st: &mut State<'_>, seq: &mut Option<Seq>) -> usize {
        if !self.set.any_numeric() {
            return p + 1;
        }
        if self.set.contains(Detector::Iban)
            && let Some(end) = self.iban(bytes, p, st)
        {
            st.push(p - 2, end, Detector::Iban);
            return end;
        }
        // Most numbers in text are short (an id, a quantity, a time): nothing to find, and no
        // need to build the sequence.
        if byte(bytes, p).is_ascii_digit()
            && let Some(end) = short_ascii_sequence(bytes, p)
        {
            return end.max(p + 1);
        }
        let seq = seq.get_or_insert_with(Seq::empty);
        let mut start = p;
        loop {
            seq.parse(bytes, start);
            let plus = if start == p {
                plus_before(bytes, p, st.floor)
            } else {
                None
            };
            let limit = if seq.truncated { HALF } else { seq.n };
            // Every entity needs four groups (IPv4) or eight digits (the shortest phone).
            if seq.n >= 4 || seq.total >= 8 {
                self.windows(seq, plus, limit, st);
            }
            if !seq.truncated {
                return seq.end_all.max(p + 1);
            }
            // Windows that start in the second half were not tried: parse again from there.
            start = seq.start[HALF].max(st.floor);
            if digit_at(bytes, start).is_none() {
                return start.max(p + 1);
            }
        }
    }

    fn windows(&self, seq: &Seq, plus: Option<usize>, limit: usize, st: &mut State<'_>) {
        let set = self.set;
        let mut s = 0;
        while s < limit.min(seq.n) {
            if seq.start[s] < st.floor {
                s += 1;
                continue;
            }
            let m = (set.contains(Detector::IpAddress))
                .then(|| seq.ipv4(s))
                .flatten()
                .map(|e| (seq.start[s], e, Detector::IpAddress))
                .or_else(|| {
                    set.contains(Detector::CardNumber)
                        .then(|| seq.card(s))
                        .flatten()
                        .map(|e| (seq.start[s], e, Detector::CardNumber))
                })
                .or_else(|| {
                    let at = plus.filter(|_| s == 0 && set.contains(Detector::Phone))?;
                    seq.e164(s).map(|e| (at, e, Detector::Phone))
                })
                .or_else(|| {
                    set.contains(Detector::Ssn)
                        .then(|| seq.ssn(s, self.ssn_unformatted))
                        .flatten()
                        .map(|e| (seq.start[s], e, Detector::Ssn))
                })
                .or_else(|| {
                    set.contains(Detector::Phone)
                        .then(|| seq.nanp(s))
                        .flatten()
                        .map(|e| (seq.start[s], e, Detector::Phone))
                });
            // A card that starts inside another match (`111-45-4111 1111 1111 1111`: an SSN
            // whose serial is the card's first group) would otherwise lose its first group
            // to that match and go undetected, its other digits in clear: the two are one
            // finding, a card, from the other match's start to the card's end.
            let m = m.map(|(start, last, d)| {
                if d == Detector::CardNumber || !set.contains(Detector::CardNumber) {
                    return (start, last, d);
                }
                (s + 1..=last)
                    .find_map(|k| seq.card(k))
                    .map_or((start, last, d), |e| (start, e, Detector::CardNumber))
            });
            match m {
                Some((start, last, d)) => {
                    st.push(start, seq.end_of(last), d);
                    s = last + 1;
                }
                None => s += 1,
            }
        }
    }
}

/// Where the digits end of a sequence at `p` that is plain ASCII and too short for any
/// entity (fewer than four groups and fewer than eight digits); `None` if it is longer, or if
/// a non-ASCII character (a digit or separator of another script, an ignorable) means the
/// full parse must decide. Agrees with [`Seq::parse`] on every sequence it accepts.
fn short_ascii_sequence(bytes: &[u8], p: usize) -> Option<usize> {
    let mut i = p;
    let (mut groups, mut total) = (0, 0);
    loop {
        let len = count_while(bytes, i, |b| b.is_ascii_digit());
        i += len;
        groups += 1;
        total += len;
        if len == 0 || groups >= 4 || total >= 8 {
            return None;
        }
        // The separators `Seq::parse` accepts: at most three visible ones.
        let mut j = i;
        let mut visible = 0;
        loop {
            match bytes.get(j) {
                Some(&b) if b >= 0x80 => return None,
                Some(&b) if visible < 3 && matches!(b, b' ' | b'-' | b'.' | b'(' | b')') => {
                    visible += 1;
                    j += 1;
                }
                _ => break,
            }
        }
        match bytes.get(j) {
            Some(b) if b.is_ascii_digit() && j > i => i = j,
            Some(&b) if b >= 0x80 => return None,
            _ => return Some(i),
        }
    }
}

/// Whether separators and then a digit follow `i`: the digits before `i` belong to a longer
/// sequence (a card after `::`), which the numeric detectors must see whole.
fn continues_numeric(bytes: &[u8], from: usize) -> bool {
    let mut i = from;
    let mut visible = 0;
    while let Some((c, l)) = char_at(bytes, i) {
        if is_ignorable(c) || (visible < 3 && is_digit_separator(c)) {
            visible += usize::from(!is_ignorable(c));
            i += l;
        } else {
            break;
        }
    }
    i > from && digit_at(bytes, i).is_some()
}

fn set_has(set: DetectorSet, d: Detector) -> bool {
    set.contains(d)
}

/// Whether `bearer` and blanks end just before `ts`.
fn bearer_before(bytes: &[u8], ts: usize, floor: usize) -> bool {
    let mut j = ts;
    while j > floor && matches!(byte(bytes, j - 1), b' ' | b'\t') {
        j -= 1;
    }
    j < ts
        && j >= floor + 6
        && bytes
            .get(j - 6..j)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
        && (j == 6 || !byte(bytes, j - 7).is_ascii_alphanumeric())
}

/// The `+` (ASCII or fullwidth) that starts an E.164 number just before `p`.
fn plus_before(bytes: &[u8], p: usize, floor: usize) -> Option<usize> {
    if p > floor && byte(bytes, p - 1) == b'+' {
        return Some(p - 1);
    }
    // U+FF0B FULLWIDTH PLUS SIGN.
    if p >= floor + 3 && bytes.get(p - 3..p) == Some("＋".as_bytes()) {
        return Some(p - 3);
    }
    None
}

/// Jwt `eyJ….eyJ….sig` at `ts`; returns its end.
fn jwt_at(bytes: &[u8], ts: usize) -> Option<usize> {
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !bytes.get(ts..)?.starts_with(b"eyJ") {
        return None;
    }
    let h = count_while(bytes, ts, b64);
    let dot1 = ts + h;
    if h < 10 || byte(bytes, dot1) != b'.' || !bytes.get(dot1 + 1..)?.starts_with(b"eyJ") {
        return None;
    }
    let pl = count_while(bytes, dot1 + 1, b64);
    let dot2 = dot1 + 1 + pl;
    if byte(bytes, dot2) != b'.' {
        return None;
    }
    let sig = count_while(bytes, dot2 + 1, b64);
    Some(dot2 + 1 + sig)
}

const MAX_GROUPS: usize = 40;
const HALF: usize = 20;
const MAX_GROUP_DIGITS: usize = 19;

/// The separators between two groups of digits.
#[derive(Debug, Clone, Copy, Default)]
struct Sep {
    /// Visible separator characters (spaces, dashes, dots, parentheses).
    visible: u8,
    /// The first visible one.
    first: char,
    /// Whether a non-ASCII separator or an ignorable character was used: evidence of a value
    /// dressed up to evade detection.
    exotic: bool,
}

/// A sequence of digit groups joined by separators: `4111 1111-1111\u{200B}1111`.
struct Seq {
    n: usize,
    start: [usize; MAX_GROUPS],
    end: [usize; MAX_GROUPS],
    len: [usize; MAX_GROUPS],
    exotic_digits: [bool; MAX_GROUPS],
    /// `sep[k]` precedes group `k`; `sep[0]` is unused.
    sep: [Sep; MAX_GROUPS],
    digits: [[u8; MAX_GROUP_DIGITS]; MAX_GROUPS],
    truncated: bool,
    /// End of the last group's digits.
    end_all: usize,
    /// Digits in all groups.
    total: usize,
}

fn digit_at(bytes: &[u8], i: usize) -> Option<(u8, usize, bool)> {
    let b = *bytes.get(i)?;
    if b.is_ascii_digit() {
        return Some((b - b'0', 1, false));
    }
    if b < 0x80 {
        return None;
    }
    let (c, l) = char_at(bytes, i)?;
    digit_value(c).map(|v| (v, l, true))
}

impl Seq {
    fn empty() -> Self {
        Self {
            n: 0,
            start: [0; MAX_GROUPS],
            end: [0; MAX_GROUPS],
            len: [0; MAX_GROUPS],
            exotic_digits: [false; MAX_GROUPS],
            sep: [Sep::default(); MAX_GROUPS],
            digits: [[0; MAX_GROUP_DIGITS]; MAX_GROUPS],
            truncated: false,
            end_all: 0,
            total: 0,
        }
    }

    /// Parses the sequence at `p` into `self` (earlier contents are overwritten as needed:
    /// only groups `..n` and digits `..len[k]` are ever read).
    fn parse(&mut self, bytes: &[u8], p: usize) {
        let s = self;
        s.n = 0;
        s.total = 0;
        s.truncated = false;
        s.end_all = p;
        let mut i = p;
        let mut sep = Sep::default();
        while s.n < MAX_GROUPS {
            let k = s.n;
            s.start[k] = i;
            s.sep[k] = sep;
            let mut len = 0usize;
            let mut exotic = false;
            // ASCII digits first, eight bytes at a time while the group's buffer has room:
            // the common case needs no decoding.
            while let Some(chunk) = bytes.get(i..i + 8) {
                let Some(slot) = s.digits[k].get_mut(len..len + 8) else {
                    break;
                };
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let x = u64::from_le_bytes(word);
                let run = (!between(x, 0x2F, 0x3A) & H).trailing_zeros() as usize / 8;
                // Digit bytes are at least 0x30, so the subtraction borrows only from the
                // bytes after the run, which are not kept.
                slot.copy_from_slice(&x.wrapping_sub(L * 0x30).to_le_bytes());
                len += run;
                i += run;
                if run < 8 {
                    break;
                }
            }
            while let Some(b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
                if let Some(slot) = s.digits[k].get_mut(len) {
                    *slot = b - b'0';
                }
                len += 1;
                i += 1;
            }
            while let Some((v, l, ex)) = digit_at(bytes, i) {
                if let Some(slot) = s.digits[k].get_mut(len) {
                    *slot = v;
                }
                len += 1;
                exotic |= ex;
                i += l;
            }
            s.len[k] = len;
            s.end[k] = i;
            s.exotic_digits[k] = exotic;
            s.n += 1;
            s.total += len;
            // The separators up to the next digit, if any.
            let mut j = i;
            sep = Sep::default();
            loop {
                let (c, l) = match bytes.get(j) {
                    Some(&b) if b < 0x80 => {
                        if sep.visible < 3 && matches!(b, b' ' | b'-' | b'.' | b'(' | b')') {
                            if sep.visible == 0 {
                                sep.first = char::from(b);
                            }
                            sep.visible += 1;
                            j += 1;
                            continue;
                        }
                        break;
                    }
                    _ => match char_at(bytes, j) {
                        Some(x) => x,
                        None => break,
                    },
                };
                if is_ignorable(c) {
                    sep.exotic = true;
                } else if sep.visible < 3 && is_digit_separator(c) {
                    if sep.visible == 0 {
                        sep.first = c;
                    }
                    sep.visible += 1;
                    sep.exotic |= !c.is_ascii();
                } else {
                    break;
                }
                j += l;
            }
            if j == i || digit_at(bytes, j).is_none() {
                break;
            }
            if s.n == MAX_GROUPS {
                s.truncated = true;
                break;
            }
            i = j;
        }
        s.end_all = i;
    }

    fn end_of(&self, last: usize) -> usize {
        self.end.get(last).copied().unwrap_or(self.end_all)
    }

    /// Digits of groups `s..=e` (when every group is short enough), into `buf`.
    fn collect<'b>(&self, s: usize, e: usize, buf: &'b mut [u8; 24]) -> Option<&'b [u8]> {
        let mut n = 0;
        for k in s..=e {
            let len = *self.len.get(k)?;
            let d = self.digits.get(k)?.get(..len)?;
            buf.get_mut(n..n + len)?.copy_from_slice(d);
            n += len;
        }
        buf.get(..n)
    }

    fn exotic(&self, s: usize, e: usize) -> bool {
        (s..=e).any(|k| self.exotic_digits[k] || (k > s && self.sep[k].exotic))
    }

    fn ascii_sep(&self, k: usize, c: char) -> bool {
        let sep = self.sep[k];
        sep.visible == 1 && sep.first == c && !sep.exotic
    }

    fn ipv4(&self, s: usize) -> Option<usize> {
        let e = s + 3;
        if e >= self.n || self.exotic(s, e) {
            return None;
        }
        if s > 0 && self.ascii_sep(s, '.') {
            return None;
        }
        if e + 1 < self.n && self.ascii_sep(e + 1, '.') {
            return None;
        }
        for k in s..=e {
            if (k > s && !self.ascii_sep(k, '.')) || !(1..=3).contains(&self.len[k]) {
                return None;
            }
            let v = self.digits[k]
                .iter()
                .take(self.len[k])
                .fold(0u32, |a, d| a * 10 + u32::from(*d));
            if v > 255 {
                return None;
            }
        }
        Some(e)
    }

    fn ssn(&self, s: usize, unformatted: bool) -> Option<usize> {
        let mut total = 0;
        let mut e = s;
        while e < self.n {
            total += self.len[e];
            if total >= 9 {
                break;
            }
            e += 1;
        }
        if total != 9 {
            return None;
        }
        let shape: &[usize] = self.len.get(s..=e)?;
        let ok_shape = shape == [3, 2, 4]
            || (shape.len() == 1 && unformatted)
            || shape.len() == 9
            || self.exotic(s, e);
        // "123-45-6789" but not the tail of "12-123-45-6789".
        let mut buf = [0u8; 24];
        (ok_shape && ssn_valid(self.collect(s, e, &mut buf)?)).then_some(e)
    }

    fn card(&self, s: usize) -> Option<usize> {
        let mut total = 0;
        let mut best = None;
        let mut e = s;
        while e < self.n {
            total += self.len[e];
            if total > 19 {
                break;
            }
            if total >= 13 {
                let shape = &self.len[s..=e];
                let ok_shape = shape.len() == 1
                    || shape.iter().all(|l| *l == 1)
                    || (shape.len() >= 3
                        && shape[..shape.len() - 1].iter().all(|l| *l == 4)
                        && (1..=4).contains(&shape[shape.len() - 1]))
                    || shape == [4, 6, 5]
                    || shape == [4, 6, 4]
                    || self.exotic(s, e);
                let mut buf = [0u8; 24];
                if ok_shape && self.collect(s, e, &mut buf).is_some_and(card_valid) {
                    best = Some(e);
                }
            }
            e += 1;
        }
        best
    }

    fn e164(&self, s: usize) -> Option<usize> {
        let mut total = 0;
        let mut best = None;
        let mut e = s;
        while e < self.n {
            total += self.len[e];
            if total > 15 {
                break;
            }
            if total >= 8 {
                best = Some(e);
            }
            e += 1;
        }
        let first = *self.digits[s].first()?;
        (first != 0).then_some(best).flatten()
    }

    fn nanp(&self, s: usize) -> Option<usize> {
        let mut buf = [0u8; 24];
        let shape = |k: usize, want: &[usize]| self.len.get(k..k + want.len()) == Some(want);
        if s + 2 < self.n && shape(s, &[3, 3, 4]) {
            let d = self.collect(s, s + 2, &mut buf)?;
            if nanp_valid(d) {
                return Some(s + 2);
            }
        }
        if s + 3 < self.n && shape(s, &[1, 3, 3, 4]) && self.digits[s][0] == 1 {
            let d = self.collect(s + 1, s + 3, &mut buf)?;
            if nanp_valid(d) {
                return Some(s + 3);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<(String, &'static str)> {
        let sc = Scanner {
            set: DetectorSet::all(),
            ssn_unformatted: false,
        };
        let mut out = Vec::new();
        sc.scan(text.as_bytes(), &mut out);
        out.iter()
            .map(|f| {
                let Kind::Builtin(d) = f.kind else { panic!() };
                (text[f.start..f.end].to_owned(), d.name())
            })
            .collect()
    }

    fn one(text: &str, want: &str, kind: &str) {
        let got = find(text);
        assert_eq!(got, vec![(want.to_owned(), kind)], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(find(text), vec![], "in {text:?}");
    }

    #[test]
    fn swar_matches_scalar() {
        for b in 0..=255u8 {
            let x = u64::from_le_bytes([b'x', b'y', b, b'z', b' ', b'q', b'r', b's']);
            let m = trigger_mask(x);
            assert_eq!(m != 0, is_trigger(b), "byte {b:#x}");
            if m != 0 {
                assert_eq!(m.trailing_zeros() / 8, 2);
            }
        }
    }

    #[test]
    fn a_card_behind_another_match_is_found_whole() {
        // The SSN's serial is the card's first group.
        let f = find("ref 111-45-4111 1111 1111 1111 end");
        assert_eq!(
            f,
            vec![("111-45-4111 1111 1111 1111".to_owned(), "card_number")],
            "{f:?}"
        );
        // A phone number whose last groups begin a card.
        let f = find("call +1 4111 1111 1111 1111 now");
        assert!(
            f.iter()
                .any(|(t, k)| *k == "card_number" && t.contains("4111 1111 1111 1111")),
            "{f:?}"
        );
        // An SSN next to a number that is not a card stays an SSN.
        assert_eq!(
            find("ref 123-45-6789 1111"),
            vec![("123-45-6789".to_owned(), "ssn")]
        );
    }

    #[test]
    fn digit_runs_read_eight_at_a_time_match_the_bytes() {
        for run in 0..=30usize {
            for tail in [
                &b""[..],
                b" ",
                b"x",
                b"/",
                b":",
                "\u{ff11}".as_bytes(),
                b"-12",
            ] {
                let digits: Vec<u8> = (0..run)
                    .map(|j| b'0' + ((j * 7 + run) % 10) as u8)
                    .collect();
                let mut text = b"a ".to_vec();
                text.extend_from_slice(&digits);
                text.extend_from_slice(tail);
                text.extend_from_slice(b" zzzzzzzz");
                let mut seq = Seq::empty();
                seq.parse(&text, 2);
                assert_eq!(
                    seq.len[0],
                    run + usize::from(tail.starts_with("\u{ff11}".as_bytes()))
                );
                let kept = run.min(MAX_GROUP_DIGITS);
                let want: Vec<u8> = digits.iter().take(kept).map(|b| b - b'0').collect();
                assert_eq!(
                    &seq.digits[0][..kept],
                    &want[..],
                    "run {run}, tail {tail:?}"
                );
                assert_eq!(
                    seq.end[0],
                    2 + run
                        + if tail.starts_with("\u{ff11}".as_bytes()) {
                            3
                        } else {
                            0
                        }
                );
            }
        }
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&[
            4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
        ]));
        assert!(!luhn_valid(&[
            4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2
        ]));
        assert!(!luhn_valid(&[]));
    }

    #[test]
    fn cards() {
        one(
            "card 4111 1111 1111 1111 ok",
            "4111 1111 1111 1111",
            "card_number",
        );
        one("4111-1111-1111-1111", "4111-1111-1111-1111", "card_number");
        one("x4111111111111111y", "4111111111111111", "card_number");
        one(
            "amex 3782 822463 10005.",
            "3782 822463 10005",
            "card_number",
        );
        one("mc:5555555555554444", "5555555555554444", "card_number");
        one("d 6011111111111117 d", "6011111111111117", "card_number");
        one("visa13 4222222222222", "4222222222222", "card_number");
        // Fullwidth digits and zero-width separators.
        one(
            "ｃａｒｄ ４１１１１１１１１１１１１１１１",
            "４１１１１１１１１１１１１１１１",
            "card_number",
        );
        let zw = "4\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1\u{200B}1";
        one(&format!("n {zw} ."), zw, "card_number");
        one(
            "4111\u{00A0}1111\u{2007}1111\u{2013}1111",
            "4111\u{00A0}1111\u{2007}1111\u{2013}1111",
            "card_number",
        );
        one("٤١١١١١١١١١١١١١١١", "٤١١١١١١١١١١١١١١١", "card_number");
        one(
            "4111 1111 1111 1111 2 items",
            "4111 1111 1111 1111",
            "card_number",
        );
        // Near misses: Luhn off by one, bad prefix, too short, too long, odd grouping.
        none("4111 1111 1111 1112");
        none("1111 1111 1111 1117");
        none("4111 1111 1111");
        none("41111111111111111111");
        none("41 11 11 11 11 11 11 11");
        none("order 12 34 56 78 91 23 45 67 89");
    }

    #[test]
    fn ssns() {
        one("ssn 123-45-6789.", "123-45-6789", "ssn");
        one("123 45 6789", "123 45 6789", "ssn");
        one("１２３-４５-６７８９", "１２３-４５-６７８９", "ssn");
        one(
            "123\u{200B}45\u{200B}6789",
            "123\u{200B}45\u{200B}6789",
            "ssn",
        );
        one("12\u{200B}3-45-6789", "12\u{200B}3-45-6789", "ssn");
        one("1 2 3 4 5 6 7 8 9", "1 2 3 4 5 6 7 8 9", "ssn");
        none("000-12-3456");
        none("666-12-3456");
        none("900-12-3456");
        none("999-12-3456");
        none("123-00-4567");
        none("123-45-0000");
        none("123456789");
        none("123-456789");
    }

    #[test]
    fn bare_ssn_when_asked() {
        let sc = Scanner {
            set: DetectorSet::all(),
            ssn_unformatted: true,
        };
        let mut out = Vec::new();
        sc.scan(b"id 123456789", &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        sc.scan(b"id 666456789", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn phones() {
        one("call +1 415 555 2671 now", "+1 415 555 2671", "phone");
        one("call +14155552671", "+14155552671", "phone");
        one("tel +44 20 7946 0958", "+44 20 7946 0958", "phone");
        one("(415) 555-2671", "415) 555-2671", "phone");
        one("415.555.2671", "415.555.2671", "phone");
        one("1-800-555-0199", "1-800-555-0199", "phone");
        one(
            "＋４９ ３０ １２３４５６７",
            "＋４９ ３０ １２３４５６７",
            "phone",
        );
        none("415-155-2671");
        none("115-555-2671");
        none("911-555-2671");
        none("+0 123 456 789");
        none("+12 34");
    }

    #[test]
    fn ibans() {
        one(
            "iban DE89 3704 0044 0532 0130 00 ok",
            "DE89 3704 0044 0532 0130 00",
            "iban",
        );
        one("GB82WEST12345698765432", "GB82WEST12345698765432", "iban");
        one(
            "FR1420041010050500013M02606",
            "FR1420041010050500013M02606",
            "iban",
        );
        let near = find("DE89 3704 0044 0532 0130 01");
        assert!(near.iter().all(|(_, k)| *k != "iban"), "{near:?}");
        none("GB82WEST12345698765433");
        none("ZZ82WEST12345698765432");
        none("xDE89370400440532013000");
    }

    #[test]
    fn short_sequences_agree_with_the_full_parse() {
        const PIECES: &[&str] = &[
            "0", "1", "7", "42", "123", "9999", " ", "-", ".", "(", ")", "a", "+", ":", "\u{200B}",
            "٣", "\u{00A0}", "\u{2013}", "x", "12345678",
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut seq = Seq::empty();
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(x % 9 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
            }
            let bytes = text.as_bytes();
            for p in 0..bytes.len() {
                if !bytes[p].is_ascii_digit() {
                    continue;
                }
                if let Some(end) = short_ascii_sequence(bytes, p) {
                    seq.parse(bytes, p);
                    assert!(seq.n < 4 && seq.total < 8, "{text:?} at {p}");
                    assert_eq!(end, seq.end_all, "{text:?} at {p}");
                    accepted += 1;
                }
            }
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn iban_checksum_agrees_with_stepwise_mod_97() {
        fn reference(chars: &[u8]) -> bool {
            let mut rem = 0u32;
            for &c in chars.iter().skip(4).chain(chars.iter().take(4)) {
                match c {
                    b'0'..=b'9' => rem = (rem * 10 + u32::from(c - b'0')) % 97,
                    b'A'..=b'Z' => rem = (rem * 100 + u32::from(c - b'A') + 10) % 97,
                    _ => return false,
                }
            }
            rem == 1
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut valid = 0;
        for (country, len) in IBAN_LENGTHS {
            for round in 0..400 {
                let mut v = country.to_vec();
                while v.len() < *len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let letters = round % 2 == 0 || v.len() < 4;
                    v.push(if letters && x.is_multiple_of(3) && v.len() >= 4 {
                        b'A' + (x % 26) as u8
                    } else {
                        b'0' + (x % 10) as u8
                    });
                }
                assert_eq!(
                    iban_valid(&v),
                    reference(&v),
                    "{}",
                    String::from_utf8_lossy(&v)
                );
                valid += usize::from(reference(&v));
            }
        }
        // About one in 97 random check digits is right: both sides of the comparison were
        // exercised.
        assert!(valid > 100, "{valid}");
    }

    #[test]
    fn ips() {
        one("from 192.168.1.20:5432", "192.168.1.20", "ip_address");
        one("host 10.0.0.1.", "10.0.0.1", "ip_address");
        one(
            "addr 2001:db8::8a2e:370:7334 up",
            "2001:db8::8a2e:370:7334",
            "ip_address",
        );
        one("lo ::1", "::1", "ip_address");
        one("v6 fe80::1.", "fe80::1", "ip_address");
        one("m ::ffff:192.0.2.128 x", "::ffff:192.0.2.128", "ip_address");
        one(
            "[2001:0db8:0000:0000:0000:ff00:0042:8329]",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
            "ip_address",
        );
        none("version 1.2.3.4.5");
        none("256.1.1.1");
        none("at 10:30:45 today");
        none("std::vector<int>");
        none("Note: see 00:1a:2b:3c:4d:5e");
    }

    #[test]
    fn emails() {
        one(
            "mail john.smith+x@example.co.uk.",
            "john.smith+x@example.co.uk",
            "email",
        );
        one("<a@b.io>", "a@b.io", "email");
        one("jörg@bücher.de", "jörg@bücher.de", "email");
        one("x ｊｏｈｎ＠example.com", "ｊｏｈｎ＠example.com", "email");
        none("@handle");
        none("user@localhost");
        none("a@b.c");
        none("user@-bad.com");
        none("price @ 5.00");
    }

    #[test]
    fn secrets() {
        one(
            "key=AKIAIOSFODNN7EXAMPLE;",
            "AKIAIOSFODNN7EXAMPLE",
            "aws_access_key_id",
        );
        one(
            "AKIAIOSFODNNXEXAMPLE",
            "AKIAIOSFODNNXEXAMPLE",
            "aws_access_key_id",
        );
        none("AKIAIOSFODNN7EXAMPL");
        none("AKIAIOSFODNN7EXAMPLEX");
        one(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key",
        );
        one(
            r#"{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key",
        );
        none("secret_access_key = short");
        let gh = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
        one(&format!("token {gh} x"), gh, "github_token");
        none("ghp_short");
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz";
        one(pat, pat, "github_token");
        one(
            "xoxb-1234567890-abcdefghij",
            "xoxb-1234567890-abcdefghij",
            "slack_token",
        );
        none("xoxq-1234567890-abcdefghij");
        one(
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "stripe_key",
        );
        none("sk_live_short");
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        one(&format!("jwt={jwt}&x"), jwt, "jwt");
        let jwt_nodigit = "eyJhbGciOiJub25lIn.eyJzdWIiOiJhYmMifQ.";
        one(jwt_nodigit, jwt_nodigit, "jwt");
        none("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9 only");
        one(
            "Authorization: Bearer abcdefghijkl.mnop",
            "abcdefghijkl.mnop",
            "bearer_token",
        );
        one(
            "authorization: bearer abcDEF123456==",
            "abcDEF123456==",
            "bearer_token",
        );
        none("a bearer of bad news");
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        one(&format!("x\n{pem}\ny"), pem, "private_key");
        let open = "-----BEGIN PRIVATE KEY-----\nMIIEow";
        one(open, open, "private_key");
        none("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----");
    }

    #[test]
    fn clean_text_has_no_findings() {
        none(
            "The quick brown fox jumps over the lazy dog. Bob's 3 cats ate 12 fish on 2024-05-01.",
        );
        none("Es war einmal ein kleines Mädchen — « très jolie » — 日本語のテキスト。");
        none("");
    }

    #[test]
    fn several_in_one_sequence() {
        let got = find("123-45-6789 987-65-4321 4111111111111111");
        assert_eq!(got.len(), 2, "{got:?}");
        let got = find("a 123-45-6789, 234-56-7890.");
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn long_sequences_are_rescanned() {
        let mut s = "1 ".repeat(50);
        s.push_str("4111 1111 1111 1111");
        let got = find(&s);
        assert!(got.iter().any(|(_, k)| *k == "card_number"), "{got:?}");
    }
}
