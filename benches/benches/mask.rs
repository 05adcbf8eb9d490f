//! The masking engine runs on every value that leaves a database. Side by side with regular
//! expressions of equivalent patterns on the same corpora: clean text (prose with a few
//! numbers, nothing to mask) and PII-dense text (every line holds several entities).
//!
//! Three regex baselines, each the honest counterpart of one engine figure:
//!
//! - `regex_mask` is what a regex-based masker must do to produce the same output as
//!   `engine`: a `RegexSet` says which patterns occur, and each pattern that does is applied
//!   with `Regex::replace_all`, with the engine's strategies (card numbers keep their last four
//!   digits, emails become a keyed blake3 token of the lower-cased address, the rest
//!   `[REDACTED]`). It validates nothing (no Luhn, SSN rules, mod 97 or address parsing), so
//!   it still does less than the engine.
//! - `regex_locate` is the counterpart of `engine_detect_only`: the `RegexSet`, then
//!   `Regex::find_iter` for each pattern that occurs, counting the matches.
//! - `regex_set` is `RegexSet::matches` alone: it only answers "which patterns occur
//!   somewhere", locating and replacing nothing — a lower bound for any regex masker.
//!
//! Times are the benchmark thread's on-CPU time (see `cpu_time`).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regex::{Captures, NoExpand, Regex, RegexSet};
use wirewarden_mask::{Field, MaskKey, MaskedCounts, Profile, Strategy};

const WORDS: &[&str] = &[
    "the",
    "agent",
    "asked",
    "for",
    "a",
    "summary",
    "of",
    "recent",
    "orders",
    "and",
    "the",
    "database",
    "returned",
    "rows",
    "with",
    "customer",
    "names",
    "shipping",
    "notes",
    "about",
    "delivery",
    "windows",
    "warehouse",
    "status",
    "pending",
    "review",
    "by",
    "support",
    "team",
    "before",
    "Friday",
    "Berlin",
    "London",
    "refund",
    "approved",
    "escalated",
    "ticket",
    "closed",
    "invoice",
    "sent",
    "to",
    "billing",
    "contact",
    "requested",
    "callback",
    "after",
    "lunch",
];

/// About 1 MiB of prose: sentences, punctuation and the odd small number or date.
fn clean_corpus() -> String {
    let mut s = String::with_capacity(1 << 20);
    let mut x: u32 = 12345;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut n = 0usize;
    while s.len() < 1 << 20 {
        let w = WORDS[next() as usize % WORDS.len()];
        s.push_str(w);
        n += 1;
        match next() % 40 {
            0 => s.push_str(". "),
            1 => s.push_str(", "),
            2 => {
                s.push(' ');
                s.push_str(&(next() % 100).to_string());
                s.push(' ');
            }
            3 if n.is_multiple_of(7) => s.push_str(" on 2024-05-01 "),
            _ => s.push(' '),
        }
    }
    s
}

/// About 1 MiB of lines that each hold a card, an SSN, an email, a phone, an IP address and
/// often a secret.
fn dense_corpus() -> String {
    let cards = [
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "378282246310005",
        "6011 1111 1111 1117",
    ];
    let mut s = String::with_capacity(1 << 20);
    let mut i = 0usize;
    while s.len() < 1 << 20 {
        let ssn = format!(
            "{:03}-{:02}-{:04}",
            100 + i % 500,
            10 + i % 80,
            1000 + i % 8000
        );
        s.push_str(&format!(
            "customer {i}: card {}, ssn {ssn}, mail user{i}@example.com, phone +1 415 555 {:04}, ip 10.{}.{}.{}",
            cards[i % cards.len()],
            i % 10000,
            i % 256,
            (i / 256) % 256,
            i % 200
        ));
        match i % 3 {
            0 => s.push_str(", key AKIAIOSFODNN7EXAMPLE"),
            1 => s.push_str(", token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
            _ => s.push_str(", iban DE89 3704 0044 0532 0130 00"),
        }
        s.push('\n');
        i += 1;
    }
    s
}

/// The same entities as the engine's built-in detectors, as regular expressions.
const PATTERNS: [&str; 15] = [
    r"\b(?:\d[ -]?){12,18}\d\b",
    r"\b\d{3}[- ]\d{2}[- ]\d{4}\b",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"\+\d[\d ().-]{6,18}\d|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
    r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    r"(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}|::[0-9A-Fa-f]{1,4}",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b",
    r"(?i)(?:aws_secret_access_key|secretaccesskey)\W{1,8}[A-Za-z0-9/+]{40}",
    r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
    r"\bxox[baprse]-[A-Za-z0-9-]{10,}",
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{8,}=*",
];
const CARD: usize = 0;
const EMAIL: usize = 2;

/// A masker built from regular expressions, with the engine's strategies.
struct RegexMasker {
    set: RegexSet,
    each: Vec<Regex>,
    key: [u8; 32],
}

impl RegexMasker {
    fn new(key: [u8; 32]) -> Self {
        Self {
            set: RegexSet::new(PATTERNS).expect("patterns compile"),
            each: PATTERNS
                .iter()
                .map(|p| Regex::new(p).expect("pattern compiles"))
                .collect(),
            key,
        }
    }

    /// How many matches the patterns that occur have (the counterpart of `Profile::detect`).
    fn locate(&self, text: &str) -> usize {
        let hits = self.set.matches(text);
        hits.iter()
            .map(|i| self.each.get(i).map_or(0, |re| re.find_iter(text).count()))
            .sum()
    }

    /// The masked text (the counterpart of `Profile::mask_text`): borrowed when nothing
    /// matched, as the engine's.
    fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let hits = self.set.matches(text);
        let mut out = Cow::Borrowed(text);
        for i in hits.iter() {
            let Some(re) = self.each.get(i) else { continue };
            let replaced = match i {
                CARD => re.replace_all(&out, |c: &Captures<'_>| keep_last_four(&c[0])),
                EMAIL => re.replace_all(&out, |c: &Captures<'_>| self.token(&c[0])),
                _ => re.replace_all(&out, NoExpand("[REDACTED]")),
            };
            if let Cow::Owned(s) = replaced {
                out = Cow::Owned(s);
            }
        }
        out
    }

    /// `tok_` and 16 hex digits of a keyed blake3 hash of the lower-cased value.
    fn token(&self, value: &str) -> String {
        let h = blake3::keyed_hash(&self.key, value.to_ascii_lowercase().as_bytes());
        let mut t = String::with_capacity(20);
        t.push_str("tok_");
        for b in h.as_bytes().iter().take(8) {
            t.push_str(&format!("{b:02x}"));
        }
        t
    }
}

/// Every digit but the last four masked with `*`; separators kept.
fn keep_last_four(card: &str) -> String {
    let digits = card.bytes().filter(u8::is_ascii_digit).count();
    let mut k = 0;
    card.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                k += 1;
                if k + 4 <= digits { '*' } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// Time this thread has spent on a CPU, from `/proc/thread-self/schedstat` (nanoseconds).
/// The bench machine is shared: wall time would count the time other builds hold the core.
fn on_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` `iters` times; returns the on-CPU time (wall time where that is unavailable).
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let (c0, w0) = (on_cpu(), Instant::now());
    for _ in 0..iters {
        f();
    }
    match (c0, on_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => w0.elapsed(),
    }
}

fn mask(c: &mut Criterion) {
    let profile = Profile::builder("bench")
        .key(MaskKey::new([5; 32]))
        .strategy("card_number", Strategy::keep_last(4))
        .strategy("email", Strategy::Tokenize)
        .build()
        .expect("profile builds");
    let regex = RegexMasker::new([5; 32]);
    for (name, corpus) in [
        ("clean_text", clean_corpus()),
        ("pii_dense", dense_corpus()),
    ] {
        // Sanity: the clean corpus has nothing to mask, the dense one plenty, for both.
        let mut counts = MaskedCounts::new();
        let out = profile
            .mask_text(&Field::Unknown, Cow::Borrowed(corpus.as_str()), &mut counts)
            .expect("masks");
        let clean = name == "clean_text";
        assert_eq!(matches!(out, Some(Cow::Borrowed(_))), clean);
        assert_eq!(matches!(regex.mask(&corpus), Cow::Borrowed(_)), clean);
        assert_eq!(regex.locate(&corpus) == 0, clean);

        let mut g = c.benchmark_group(format!("mask/{name}"));
        g.throughput(Throughput::Bytes(corpus.len() as u64));
        g.sample_size(20).measurement_time(Duration::from_secs(4));
        g.bench_function("engine", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    let mut counts = MaskedCounts::new();
                    let out = profile.mask_text(
                        &Field::Unknown,
                        Cow::Borrowed(black_box(corpus.as_str())),
                        &mut counts,
                    );
                    let len = out.expect("masks").map(|o| o.len());
                    black_box((len, counts.total()));
                })
            })
        });
        g.bench_function("regex_mask", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    black_box(regex.mask(black_box(corpus.as_str())).len());
                })
            })
        });
        g.bench_function("engine_detect_only", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    black_box(profile.detect(black_box(corpus.as_bytes())).len());
                })
            })
        });
        g.bench_function("regex_locate", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    black_box(regex.locate(black_box(corpus.as_str())));
                })
            })
        });
        g.bench_function("regex_set", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    black_box(regex.set.matches(black_box(corpus.as_str())).matched_any());
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, mask);
criterion_main!(benches);
