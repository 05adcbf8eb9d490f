//! Masking an HTTP response body on its way to the client: a ~1 MB JSON API response (a page
//! of customer records), clean (nothing to mask) and PII-dense (every record holds an email,
//! a card number, a phone number and an SSN), sent as is and gzip-compressed. The body is fed
//! to the [`BodyMasker`] in 16 KiB chunks, as hyper delivers it.
//!
//! For scale: `json_stream_only` runs the streaming JSON masker alone on the same chunks,
//! `mask_json_whole` masks the document in one piece with `Profile::mask_json` (no
//! streaming, no coding), and `gzip_recode_only` decodes and re-encodes the gzip body
//! without masking, which is the cost of the coding alone.
//! Throughput is of the decoded JSON. Times are the benchmark thread's on-CPU time.
//!
//! `http_request_scan` is the other direction: what reading a request body for a method
//! override costs (`_method` at the top level of a JSON body, or as a form field), over the
//! same page of records sent as a JSON body, and a form of the same size, both clean and fed
//! in 16 KiB chunks.

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_http::body::{BodyLimits, BodyMasker, mask_response_head};
use wirewarden_http::encoding::{Coding, DecodeLimits, Decoder, Encoder};
use wirewarden_mask::{Field, JsonStream, MaskKey, MaskedCounts, Profile, Strategy};

const CHUNK: usize = 16 << 10;

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

const CITIES: [&str; 6] = ["Berlin", "London", "Lisbon", "Oslo", "Madrid", "Vienna"];
const STATES: [&str; 4] = ["active", "pending_review", "suspended", "closed"];

/// A page of customer records, about `target` bytes.
fn document(target: usize, pii: bool) -> String {
    let mut s = String::from("{\"object\":\"list\",\"data\":[");
    let mut i = 0u64;
    while s.len() < target {
        if i > 0 {
            s.push(',');
        }
        let city = CITIES[(i % 6) as usize];
        let state = STATES[(i % 4) as usize];
        s.push_str(&format!(
            "{{\"id\":\"cus_{i:08}\",\"created\":{},\"status\":\"{state}\",\
             \"address\":{{\"city\":\"{city}\",\"line1\":\"{} Market Street\",\"postal_code\":\"{:05}\"}},\
             \"balance\":{}.{:02},\"currency\":\"eur\",\"tags\":[\"tier-{}\",\"newsletter\"],",
            1_700_000_000 + i * 37,
            i % 300 + 1,
            (i * 7919) % 100_000,
            (i * 31) % 10_000,
            i % 100,
            i % 3,
        ));
        if pii {
            // A valid card number per record (Luhn check digit computed).
            let body = format!("4{:014}", (i * 982_451_653) % 100_000_000_000_000);
            let card = format!("{body}{}", luhn(&body));
            s.push_str(&format!(
                "\"email\":\"customer{i}@example.com\",\"phone\":\"+44 20 7946 {:04}\",\
                 \"card\":\"{} {} {} {}\",\"note\":\"verified with ssn 123-45-{:04}\"}}",
                i % 10_000,
                &card[0..4],
                &card[4..8],
                &card[8..12],
                &card[12..16],
                i % 9000 + 1000,
            ));
        } else {
            s.push_str(&format!(
                "\"email_verified\":true,\"plan\":\"standard\",\
                 \"note\":\"renewal scheduled after the {}th review cycle\"}}",
                i % 28 + 1
            ));
        }
        i += 1;
    }
    s.push_str("],\"has_more\":true}");
    s
}

fn luhn(body: &str) -> u32 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new(coding);
    let mut out = Vec::new();
    e.push(data, &mut out).expect("encodes");
    e.finish(&mut out).expect("encodes");
    out
}

fn masker(profile: &Arc<Profile>, coding: Coding) -> BodyMasker {
    let (mut parts, ()) = http::Response::builder()
        .header("content-type", "application/json")
        .header("content-encoding", coding.as_str())
        .body(())
        .expect("response head")
        .into_parts();
    mask_response_head(
        profile,
        &http::Method::GET,
        &mut parts,
        &BodyLimits::default(),
        &mut MaskedCounts::new(),
    )
    .expect("maskable")
    .expect("has a body")
}

/// Masks `wire` in chunks; returns output length and masked count.
fn mask_body(profile: &Arc<Profile>, coding: Coding, wire: &[u8]) -> (usize, u64) {
    let mut m = masker(profile, coding);
    let mut counts = MaskedCounts::new();
    let mut n = 0;
    for c in wire.chunks(CHUNK) {
        n += m.push(c, &mut counts).expect("masks").len();
    }
    n += m.finish(&mut counts).expect("masks").len();
    (n, counts.total())
}

fn http_body(c: &mut Criterion) {
    let profile = Arc::new(
        Profile::builder("bench")
            .key(MaskKey::new([5; 32]))
            .strategy("card_number", Strategy::keep_last(4))
            .strategy("email", Strategy::Tokenize)
            .build()
            .expect("profile builds"),
    );
    for (name, pii) in [("clean", false), ("pii_dense", true)] {
        let doc = document(1 << 20, pii);
        let gz = encode(Coding::Gzip, doc.as_bytes());
        // Sanity: the clean document has nothing to mask, the dense one plenty.
        let (_, masked) = mask_body(&profile, Coding::Identity, doc.as_bytes());
        assert_eq!(masked == 0, !pii, "{name}: {masked} masked");
        assert_eq!(mask_body(&profile, Coding::Gzip, &gz).1, masked);

        let mut g = c.benchmark_group(format!("http_body/{name}"));
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.sample_size(20).measurement_time(Duration::from_secs(5));
        g.bench_function("identity", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    black_box(mask_body(
                        &profile,
                        Coding::Identity,
                        black_box(doc.as_bytes()),
                    ));
                })
            })
        });
        g.bench_function("gzip", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    black_box(mask_body(&profile, Coding::Gzip, black_box(&gz)));
                })
            })
        });
        g.bench_function("json_stream_only", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    let mut s = JsonStream::new(Arc::clone(&profile));
                    let mut counts = MaskedCounts::new();
                    let mut out = Vec::new();
                    for c in black_box(doc.as_bytes()).chunks(CHUNK) {
                        s.push(c, &mut out, &mut counts).expect("masks");
                    }
                    s.finish(&mut out, &mut counts).expect("masks");
                    black_box((out.len(), counts.total()));
                })
            })
        });
        g.bench_function("mask_json_whole", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    let mut counts = MaskedCounts::new();
                    let out = profile
                        .mask_json(&Field::Unknown, Cow::Borrowed(black_box(&doc)), &mut counts)
                        .expect("masks");
                    black_box((out.map(|o| o.len()), counts.total()));
                })
            })
        });
        g.bench_function("gzip_recode_only", |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    let mut d = Decoder::new(Coding::Gzip, DecodeLimits::default());
                    let mut e = Encoder::new(Coding::Gzip);
                    let (mut plain, mut out) = (Vec::new(), Vec::new());
                    for c in black_box(&gz).chunks(CHUNK) {
                        plain.clear();
                        d.push(c, &mut plain).expect("decodes");
                        e.push(&plain, &mut out).expect("encodes");
                    }
                    plain.clear();
                    d.finish(&mut plain).expect("decodes");
                    e.push(&plain, &mut out).expect("encodes");
                    e.finish(&mut out).expect("encodes");
                    black_box(out.len());
                })
            })
        });
        g.finish();
    }
}

/// A form body of about `target` bytes: `field<n>=<value>` pairs, some values
/// percent-encoded.
fn form(target: usize) -> String {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < target {
        if i > 0 {
            s.push('&');
        }
        s.push_str(&format!(
            "note_{i}=called+about+invoice+{i}%2C+refund%20pending&amount_{i}={}.{:02}",
            i * 7 % 1000,
            i % 100
        ));
        i += 1;
    }
    s
}

/// Feeds `body` in chunks to a fresh scanner from `make`, and ends it.
fn scan<S>(
    body: &[u8],
    make: impl Fn() -> S,
    feed: impl Fn(&mut S, &[u8]) -> bool,
    finish: impl Fn(&mut S) -> bool,
) -> bool {
    let mut s = make();
    body.chunks(CHUNK).all(|c| feed(&mut s, c)) && finish(&mut s)
}

fn http_request_scan(c: &mut Criterion) {
    use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
    use wirewarden_http::strict::form::FormScanner;
    use wirewarden_http::strict::json::JsonScanner;
    let headers = |ty: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ty));
        h
    };
    let (json_headers, form_headers) = (
        headers("application/json"),
        headers("application/x-www-form-urlencoded"),
    );
    let json = document(1 << 20, true);
    let form = form(1 << 20);
    let scan_json = |body: &[u8]| {
        scan(
            body,
            || JsonScanner::for_request(&json_headers).unwrap().unwrap(),
            |s, c| s.feed(c).is_ok(),
            |s| s.finish().is_ok(),
        )
    };
    let scan_form = |body: &[u8]| {
        scan(
            body,
            || FormScanner::for_request(&form_headers).unwrap().unwrap(),
            |s, c| s.feed(c).is_ok(),
            |s| s.finish().is_ok(),
        )
    };
    // Sanity: both are clean, and a trailing override is found.
    assert!(scan_json(json.as_bytes()));
    assert!(scan_form(form.as_bytes()));
    let mut hostile = json.clone();
    hostile.truncate(hostile.len() - 1);
    hostile.push_str(",\"_method\":\"DELETE\"}");
    assert!(!scan_json(hostile.as_bytes()));
    assert!(!scan_form(format!("{form}&_method=DELETE").as_bytes()));

    let mut g = c.benchmark_group("http_request_scan");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("json", |b| {
        b.iter_custom(|iters| cpu_time(iters, || assert!(scan_json(black_box(json.as_bytes())))))
    });
    g.throughput(Throughput::Bytes(form.len() as u64));
    g.bench_function("form", |b| {
        b.iter_custom(|iters| cpu_time(iters, || assert!(scan_form(black_box(form.as_bytes())))))
    });
    g.finish();
}

criterion_group!(benches, http_body, http_request_scan);
criterion_main!(benches);
