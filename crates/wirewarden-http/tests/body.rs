//! Response masking end to end: bodies compressed by independent encoders (flate2, brotli at
//! high quality), cut into random chunks, masked, and decoded by independent decoders; bombs,
//! truncation and unmaskable responses; the streaming body over real frame streams.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use wirewarden_http::body::{
    BodyError, BodyLimits, BodyMasker, BodyReport, CountingBody, MaskedBody, mask_response_head,
    mask_response_head_for, prepare_request,
};
use wirewarden_http::encoding::{Coding, CodingError, narrow_accept_encoding, narrowed_accepts};
use wirewarden_mask::{FieldRule, MaskedCounts, Profile, Selector, Strategy as Mask};

const CARD: &str = "4111 1111 1111 1111";
const CARD_DIGITS: &str = "4111111111111111";
const EMAIL: &str = "alice.smith@example.com";
const SSN: &str = "123-45-6789";

fn profile() -> Arc<Profile> {
    Arc::new(
        Profile::builder("http")
            .rule(FieldRule::new(
                Selector::json_path("$..password").unwrap(),
                Mask::redact(),
            ))
            .rule(FieldRule::new(
                Selector::header("x-secret-*"),
                Mask::redact(),
            ))
            .build()
            .unwrap(),
    )
}

const CODINGS: [Coding; 4] = [
    Coding::Identity,
    Coding::Gzip,
    Coding::Deflate,
    Coding::Brotli,
];

/// Compresses with the reference encoders, at their default (not our fast) settings.
fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Identity => data.to_vec(),
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
                w.write_all(data).unwrap();
            }
            out
        }
    }
}

/// Decompresses with the reference decoders.
fn decompress(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Identity => out.extend_from_slice(data),
        Coding::Gzip => {
            flate2::read::MultiGzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Coding::Deflate => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Coding::Brotli => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
    }
    out
}

/// A response head for a masked route.
fn head(status: StatusCode, headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn masker_for(coding: Coding, content_type: &str) -> BodyMasker {
    let mut parts = head(
        StatusCode::OK,
        &[
            ("content-type", content_type),
            ("content-encoding", coding.as_str()),
        ],
    );
    mask_get_head(&mut parts).expect("a body masker")
}

/// [`mask_response_head`] of a `GET`'s response head with the default limits.
fn mask_get_head(parts: &mut http::response::Parts) -> Option<BodyMasker> {
    mask_response_head(
        &profile(),
        &Method::GET,
        parts,
        &BodyLimits::default(),
        &mut MaskedCounts::new(),
    )
    .unwrap()
}

/// Deterministic chunk sizes from `seed`, between 1 and `max`.
fn chunks(data: &[u8], seed: u64, max: usize) -> Vec<&[u8]> {
    let mut x = seed | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x as usize % max + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

fn run(masker: &mut BodyMasker, pieces: &[&[u8]]) -> Result<(Vec<u8>, MaskedCounts), BodyError> {
    let mut counts = MaskedCounts::new();
    let mut out = Vec::new();
    for p in pieces {
        out.extend_from_slice(&masker.push(p, &mut counts)?);
    }
    out.extend_from_slice(&masker.finish(&mut counts)?);
    Ok((out, counts))
}

fn api_document(rows: usize) -> String {
    let mut s = String::from("{\"data\":[");
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"customer number {i}\",\"card\":\"{CARD}\",\
             \"contact\":{{\"email\":\"{EMAIL}\",\"note\":\"ssn {SSN} on file\"}},\
             \"password\":\"hunter{i}\",\"active\":true}}"
        ));
    }
    s.push_str("],\"next\":null}");
    s
}

fn assert_clean(text: &str) {
    for pii in [CARD, CARD_DIGITS, EMAIL, SSN, "hunter"] {
        assert!(!text.contains(pii), "{pii} survived masking");
    }
}

#[test]
fn every_coding_round_trips_with_masking() {
    let doc = api_document(400);
    for coding in CODINGS {
        let wire = compress(coding, doc.as_bytes());
        for (seed, max) in [(1, 1), (2, 17), (3, 4096), (4, 1 << 20)] {
            let mut m = masker_for(coding, "application/json; charset=utf-8");
            let (out, counts) = run(&mut m, &chunks(&wire, seed, max)).unwrap();
            let plain = String::from_utf8(decompress(coding, &out)).unwrap();
            assert_clean(&plain);
            let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
            let rows = v["data"].as_array().unwrap();
            assert_eq!(rows.len(), 400);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row["id"], i);
                assert_eq!(row["name"], format!("customer number {i}"));
                assert_eq!(row["active"], true);
                assert_eq!(row["password"], "[REDACTED]");
            }
            assert_eq!(v["next"], serde_json::Value::Null);
            assert_eq!(counts.0["card_number"], 400, "{coding}");
            assert_eq!(counts.0["email"], 400);
            assert_eq!(counts.0["ssn"], 400);
            assert_eq!(counts.0["json_path:$..password"], 400);
        }
    }
}

#[test]
fn json_lines_stream_line_by_line() {
    let mut m = masker_for(Coding::Identity, "application/x-ndjson");
    let mut counts = MaskedCounts::new();
    let mut wire = Vec::new();
    for i in 0..20 {
        let line = format!("{{\"i\":{i},\"email\":\"{EMAIL}\"}}\n");
        let out = m.push(line.as_bytes(), &mut counts).unwrap();
        // Each line comes out as soon as it is complete.
        assert_eq!(out, format!("{{\"i\":{i},\"email\":\"[REDACTED]\"}}\n"));
        wire.extend_from_slice(&out);
    }
    wire.extend_from_slice(&m.finish(&mut counts).unwrap());
    let text = String::from_utf8(wire).unwrap();
    assert_eq!(text.lines().count(), 20);
    assert_clean(&text);
    assert_eq!(counts.0["email"], 20);
    // Compressed NDJSON in random chunks.
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
        let lines: String = (0..50)
            .map(|i| format!("{{\"i\":{i},\"card\":\"{CARD}\"}}\n"))
            .collect();
        let wire = compress(coding, lines.as_bytes());
        let mut m = masker_for(coding, "application/jsonl");
        let (out, counts) = run(&mut m, &chunks(&wire, 9, 64)).unwrap();
        let plain = String::from_utf8(decompress(coding, &out)).unwrap();
        assert_eq!(plain.lines().count(), 50);
        assert_clean(&plain);
        assert_eq!(counts.0["card_number"], 50);
    }
}

#[test]
fn json_lines_hold_one_document_per_line() {
    // Blank lines and CRLF pass; a line is masked as one document.
    let mut m = masker_for(Coding::Identity, "application/jsonl");
    let body = format!("{{\"a\":\"{EMAIL}\"}}\r\n\r\n  \n\"{CARD}\"\n4111111111111111");
    let (out, counts) = run(&mut m, &chunks(body.as_bytes(), 4, 5)).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"a\":\"[REDACTED]\"}\r\n\r\n  \n\"[REDACTED]\"\n\"[REDACTED]\""
    );
    assert_eq!(counts.total(), 3);
    // Scalars side by side on one line could spell a card number none of them holds: such a
    // line is not JSON Lines, and is refused.
    for body in [
        "{\"ok\":1}\n4111 1111 1111 1111\n",
        "4111 1111 1111 1111",
        "[1] [2]\n",
    ] {
        let mut m = masker_for(Coding::Identity, "application/x-ndjson");
        let mut counts = MaskedCounts::new();
        let mut out = Vec::new();
        let mut failed = false;
        for c in chunks(body.as_bytes(), 8, 3) {
            match m.push(c, &mut counts) {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            failed = m.finish(&mut counts).is_err();
        }
        assert!(failed, "{body:?} accepted");
        assert!(
            !String::from_utf8_lossy(&out).contains("1111 1111"),
            "{body:?}"
        );
    }
}

#[test]
fn output_is_live_under_compression() {
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
        let mut upstream = wirewarden_http::encoding::Encoder::new(coding);
        let mut m = masker_for(coding, "application/x-ndjson");
        let mut client = wirewarden_http::encoding::Decoder::new(coding, Default::default());
        let mut counts = MaskedCounts::new();
        for i in 0..5 {
            let line = format!("{{\"i\":{i},\"email\":\"{EMAIL}\"}}\n");
            let mut wire = Vec::new();
            upstream.push(line.as_bytes(), &mut wire).unwrap();
            let out = m.push(&wire, &mut counts).unwrap();
            let mut seen = Vec::new();
            client.push(&out, &mut seen).unwrap();
            let seen = String::from_utf8(seen).unwrap();
            assert_eq!(seen, format!("{{\"i\":{i},\"email\":\"[REDACTED]\"}}\n"));
        }
    }
}

#[test]
fn text_bodies_are_masked_whole() {
    let body = format!("Dear customer,\nyour card {CARD} and ssn {SSN}; write to {EMAIL}.\n");
    for (ct, coding) in [
        ("text/plain", Coding::Gzip),
        ("text/html; charset=UTF-8", Coding::Brotli),
        ("application/xml", Coding::Identity),
        ("text/csv; charset=iso-8859-1", Coding::Deflate),
    ] {
        let wire = compress(coding, body.as_bytes());
        let mut m = masker_for(coding, ct);
        let (out, counts) = run(&mut m, &chunks(&wire, 5, 7)).unwrap();
        let plain = String::from_utf8(decompress(coding, &out)).unwrap();
        assert_clean(&plain);
        assert!(
            plain.starts_with("Dear customer,\nyour card "),
            "{ct}: {plain}"
        );
        assert_eq!(counts.total(), 3, "{ct}");
    }
}

#[test]
fn form_bodies_are_masked_on_their_decoded_pairs() {
    let body = "card=4111+1111+1111+1111&email=ada%40example.com&ssn2=123%2D45%2D6789\
                &note=see+you&password=hunter2&a%2Fb=x%2Fy&&flag";
    for coding in CODINGS {
        let wire = compress(coding, body.as_bytes());
        for seed in 1..40 {
            let mut m = masker_for(coding, "application/x-www-form-urlencoded");
            let (out, counts) = run(&mut m, &chunks(&wire, seed, 9)).unwrap();
            let plain = String::from_utf8(decompress(coding, &out)).unwrap();
            let pairs: Vec<&str> = plain.split('&').collect();
            assert_eq!(pairs.len(), 8, "{plain}");
            for (pair, name) in pairs
                .iter()
                .zip(["card=", "email=", "ssn2=", "", "password="])
            {
                assert!(pair.starts_with(name), "{plain}");
            }
            for pii in ["4111", "ada", "%40", "6789", "hunter"] {
                assert!(!plain.contains(pii), "{pii} survived: {plain}");
            }
            // Unchanged pairs go out byte for byte, encoded as they came.
            assert_eq!(pairs[3], "note=see+you");
            assert_eq!(&pairs[5..], ["a%2Fb=x%2Fy", "", "flag"]);
            // A changed value is encoded again, and decodes to the masked value.
            assert_eq!(pairs[1], "email=%5BREDACTED%5D");
            assert_eq!(counts.0["email"], 1, "{counts:?}");
            assert_eq!(counts.0["json_path:$..password"], 1, "{counts:?}");
            assert_eq!(counts.total(), 4, "{counts:?}");
        }
    }
}

#[test]
fn form_names_are_masked_and_pairs_split_anywhere() {
    let body = "ada%40example.com=1&x=4111111111111111";
    for split in 0..=body.len() {
        let mut m = masker_for(Coding::Identity, "application/x-www-form-urlencoded");
        let (a, b) = body.as_bytes().split_at(split);
        let (out, _) = run(&mut m, &[a, b]).unwrap();
        let plain = String::from_utf8(out).unwrap();
        assert!(!plain.contains("ada") && !plain.contains("4111"), "{plain}");
        assert!(plain.ends_with("=1&x=%5BREDACTED%5D"), "{plain}");
    }
}

#[test]
fn unreadable_forms_are_not_passed_through() {
    for body in [
        &b"card=4111%201111%201111%201111%"[..],
        b"card=4111%2",
        b"card=%zz4111111111111111",
        b"card=4111111111111111%FF",
        b"card\xff=1",
        b"a=%C0%AE",
    ] {
        let mut m = masker_for(Coding::Identity, "application/x-www-form-urlencoded");
        let err = run(&mut m, &[body]).unwrap_err();
        assert!(
            matches!(err, BodyError::InvalidForm { .. }),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    // A form in another charset is refused before anything is sent.
    assert!(
        refusal(
            StatusCode::OK,
            Method::GET,
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=iso-8859-1"
            )]
        )
        .is_some()
    );
}

#[test]
fn a_form_pair_over_the_text_limit_fails() {
    let mut parts = head(
        StatusCode::OK,
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    let limits = BodyLimits {
        max_text_body: 1000,
        ..BodyLimits::default()
    };
    let mut m = mask_response_head(
        &profile(),
        &Method::GET,
        &mut parts,
        &limits,
        &mut MaskedCounts::new(),
    )
    .unwrap()
    .unwrap();
    let mut counts = MaskedCounts::new();
    // Complete pairs stream out whatever the body's length.
    for _ in 0..10 {
        let out = m
            .push(&[b'a', b'=', b'1', b'&'].repeat(100), &mut counts)
            .unwrap();
        assert_eq!(out.len(), 400);
    }
    assert!(m.push(&[b'a'; 600], &mut counts).unwrap().is_empty());
    assert!(matches!(
        m.push(&[b'a'; 600], &mut counts),
        Err(BodyError::TextTooLarge { limit: 1000 })
    ));
}

#[test]
fn markup_that_hides_a_value_behind_character_references_is_refused() {
    for (ct, body) in [
        ("application/xml", "<r><ssn>&#x31;23-45-6789</ssn></r>"),
        (
            "text/xml; charset=utf-8",
            "<r><to>ada&#64;example.com</to></r>",
        ),
        (
            "application/atom+xml",
            "<feed><card>4111&#x20;1111 1111 1111</card></feed>",
        ),
        ("text/html", "<p>&#49;23-45-6789</p>"),
        (
            "text/html; charset=windows-1252",
            "<p>ada&commat;example&period;com</p>",
        ),
        ("text/html", "<p>4111&nbsp;1111&nbsp;1111&nbsp;1111</p>"),
    ] {
        for coding in CODINGS {
            let wire = compress(coding, body.as_bytes());
            let mut m = masker_for(coding, ct);
            let err = run(&mut m, &chunks(&wire, 3, 5)).unwrap_err();
            assert!(
                matches!(err, BodyError::CharacterReference),
                "{ct} {coding:?}: {err:?}"
            );
        }
    }
}

#[test]
fn ordinary_character_references_pass() {
    let body = format!(
        "<p title=\"Tom &amp; Jerry\">&lt;b&gt; don&#39;t &quot;quote&quot;&nbsp;me \
         &copy; 2024 &mdash; card {CARD}</p>"
    );
    for ct in ["text/html", "application/xhtml+xml"] {
        let mut m = masker_for(Coding::Identity, ct);
        let (out, counts) = run(&mut m, &[body.as_bytes()]).unwrap();
        let plain = String::from_utf8(out).unwrap();
        assert_clean(&plain);
        assert!(
            plain.starts_with(
                "<p title=\"Tom &amp; Jerry\">&lt;b&gt; don&#39;t &quot;quote&quot;&nbsp;me \
                 &copy; 2024 &mdash; card "
            ),
            "{plain}"
        );
        assert_eq!(counts.total(), 1);
    }
    // Plain text has no character references: `&#64;` there is what it says.
    let mut m = masker_for(Coding::Identity, "text/plain");
    let (out, _) = run(&mut m, &[b"write to ada&#64;example.com"]).unwrap();
    assert_eq!(out, b"write to ada&#64;example.com");
}

#[test]
fn event_streams_are_masked_event_by_event() {
    let mut m = masker_for(Coding::Identity, "text/event-stream");
    let mut counts = MaskedCounts::new();
    // An event cut in the middle of a JSON string waits for its blank line.
    let out = m
        .push(
            b"event: update\r\nid: 1\r\ndata: {\"email\":\"alice.smith@",
            &mut counts,
        )
        .unwrap();
    assert!(out.is_empty());
    let out = m
        .push(
            b"example.com\",\r\ndata: \"password\":\"hunter2\"}\r\n\r\n\
              data: pay with 4111 1111 1111 1111\n\n: note for alice.smith@example.com\n",
            &mut counts,
        )
        .unwrap();
    // The two data lines are one JSON document to the client: masked as one, key rules
    // included.
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "event: update\nid: 1\ndata: {\"email\":\"[REDACTED]\",\ndata: \"password\":\"[REDACTED]\"}\n\n\
         data: pay with [REDACTED]\n\n"
    );
    // The rest (no blank line yet) comes out at the end.
    let out = m.finish(&mut counts).unwrap();
    assert_eq!(&out[..], b": note for [REDACTED]\n");
    assert_eq!(counts.0["email"], 2);
    assert_eq!(counts.0["card_number"], 1);
    assert_eq!(counts.0["json_path:$..password"], 1);
}

#[test]
fn event_streams_stay_live_under_gzip() {
    let mut upstream = wirewarden_http::encoding::Encoder::new(Coding::Gzip);
    let mut m = masker_for(Coding::Gzip, "text/event-stream; charset=utf-8");
    let mut client = wirewarden_http::encoding::Decoder::new(Coding::Gzip, Default::default());
    let mut counts = MaskedCounts::new();
    for i in 0..5 {
        let event = format!("data: {{\"n\":{i},\"to\":\"{EMAIL}\"}}\n\n");
        let mut wire = Vec::new();
        upstream.push(event.as_bytes(), &mut wire).unwrap();
        let mut seen = Vec::new();
        client
            .push(&m.push(&wire, &mut counts).unwrap(), &mut seen)
            .unwrap();
        assert_eq!(
            String::from_utf8(seen).unwrap(),
            format!("data: {{\"n\":{i},\"to\":\"[REDACTED]\"}}\n\n")
        );
    }
}

#[test]
fn an_endless_event_is_cut_at_the_text_limit() {
    let mut parts = head(StatusCode::OK, &[("content-type", "text/event-stream")]);
    let limits = BodyLimits {
        max_text_body: 4096,
        ..BodyLimits::default()
    };
    let mut m = mask_response_head(
        &profile(),
        &Method::GET,
        &mut parts,
        &limits,
        &mut MaskedCounts::new(),
    )
    .unwrap()
    .unwrap();
    let mut counts = MaskedCounts::new();
    let mut err = None;
    for _ in 0..10 {
        if let Err(e) = m.push(&[b'x'; 1000], &mut counts) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(BodyError::TextTooLarge { limit: 4096 })));
}

#[test]
fn text_body_over_its_limit_fails() {
    let mut parts = head(StatusCode::OK, &[("content-type", "text/plain")]);
    let limits = BodyLimits {
        max_text_body: 1000,
        ..BodyLimits::default()
    };
    let mut m = mask_response_head(
        &profile(),
        &Method::GET,
        &mut parts,
        &limits,
        &mut MaskedCounts::new(),
    )
    .unwrap()
    .unwrap();
    let mut counts = MaskedCounts::new();
    assert!(m.push(&[b'a'; 600], &mut counts).unwrap().is_empty());
    assert!(matches!(
        m.push(&[b'a'; 600], &mut counts),
        Err(BodyError::TextTooLarge { limit: 1000 })
    ));
    assert!(matches!(m.finish(&mut counts), Err(BodyError::Finished)));
}

#[test]
fn invalid_utf8_text_is_not_passed_through() {
    let mut m = masker_for(Coding::Identity, "text/plain; charset=utf-8");
    let mut counts = MaskedCounts::new();
    assert!(
        m.push(b"card 4111 1111 \xff 1111 1111", &mut counts)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(m.finish(&mut counts), Err(BodyError::Mask(_))));
}

/// 100 MiB of JSON (`[0,0,0,…]`) as a multi-member gzip of about 100 KiB.
fn json_bomb() -> Vec<u8> {
    let zeros = "0,".repeat(512 << 10);
    let member = compress(Coding::Gzip, zeros.as_bytes());
    let mut wire = compress(Coding::Gzip, b"[");
    for _ in 0..100 {
        wire.extend_from_slice(&member);
    }
    wire.extend(compress(Coding::Gzip, b"0]"));
    wire
}

#[test]
fn a_gzip_bomb_fails_before_it_is_buffered() {
    let wire = json_bomb();
    assert!(wire.len() < 200 << 10);
    let mut m = masker_for(Coding::Gzip, "application/json");
    let mut counts = MaskedCounts::new();
    let mut fed = 0usize;
    let mut sent = 0usize;
    let err = loop {
        let Some(c) = wire.get(fed..(fed + 4096).min(wire.len())) else {
            panic!("the bomb went through");
        };
        fed += c.len();
        match m.push(c, &mut counts) {
            Ok(out) => sent += out.len(),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            BodyError::Coding(CodingError::Ratio { limit: 100, .. })
        ),
        "{err:?}"
    );
    // The ratio trips just past the 1 MiB floor: a few KiB of the input, nowhere near
    // 100 MiB decoded.
    assert!(fed < 16 << 10, "fed {fed}");
    assert!(sent < 64 << 10, "sent {sent}");
    assert!(matches!(m.push(b"", &mut counts), Err(BodyError::Finished)));
}

#[test]
fn the_size_cap_holds_without_a_ratio_cap() {
    let wire = json_bomb();
    let mut parts = head(
        StatusCode::OK,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    );
    let limits = BodyLimits {
        max_decoded_bytes: 4 << 20,
        max_ratio: u64::MAX,
        ..BodyLimits::default()
    };
    let mut m = mask_response_head(
        &profile(),
        &Method::GET,
        &mut parts,
        &limits,
        &mut MaskedCounts::new(),
    )
    .unwrap()
    .unwrap();
    let mut counts = MaskedCounts::new();
    let mut sent = 0usize;
    let mut err = None;
    for c in wire.chunks(1024) {
        match m.push(c, &mut counts) {
            Ok(out) => sent += out.len(),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(matches!(
        err,
        Some(BodyError::Coding(CodingError::TooLarge { limit })) if limit == 4 << 20
    ));
    assert!(sent <= 4 << 20);
}

#[test]
fn ratio_cap_is_configurable() {
    let doc: String = std::iter::once("[".to_owned())
        .chain((0..80_000).map(|i| format!("{{\"id\":{i},\"state\":\"active\"}},")))
        .chain(std::iter::once("0]".to_owned()))
        .collect();
    let wire = compress(Coding::Gzip, doc.as_bytes());
    let ratio = (doc.len() / wire.len()) as u64;
    assert!(
        doc.len() > 2 << 20 && (4..100).contains(&ratio),
        "ratio {ratio}"
    );
    let mut parts = head(
        StatusCode::OK,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    );
    let limits = BodyLimits {
        max_ratio: ratio / 2,
        ..BodyLimits::default()
    };
    let mut m = mask_response_head(
        &profile(),
        &Method::GET,
        &mut parts,
        &limits,
        &mut MaskedCounts::new(),
    )
    .unwrap()
    .unwrap();
    let r = run(&mut m, &chunks(&wire, 3, 2048));
    assert!(
        matches!(r, Err(BodyError::Coding(CodingError::Ratio { limit, .. })) if limit == ratio / 2),
        "{r:?}"
    );
    // The default cap (100) lets the same body through.
    let mut m = masker_for(Coding::Gzip, "application/json");
    let (out, _) = run(&mut m, &chunks(&wire, 3, 2048)).unwrap();
    assert_eq!(decompress(Coding::Gzip, &out), doc.as_bytes());
}

#[test]
fn truncated_bodies_fail_at_the_end() {
    let doc = api_document(20);
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
        let wire = compress(coding, doc.as_bytes());
        let cut = &wire[..wire.len() - 3];
        let mut m = masker_for(coding, "application/json");
        let mut counts = MaskedCounts::new();
        let mut out = Vec::new();
        for c in cut.chunks(100) {
            out.extend_from_slice(&m.push(c, &mut counts).unwrap());
        }
        let err = m.finish(&mut counts).unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::Coding(CodingError::Truncated { .. } | CodingError::Corrupt { .. })
            ),
            "{coding}: {err:?}"
        );
        // What went out before the error was masked.
        let mut partial = Vec::new();
        let mut d = wirewarden_http::encoding::Decoder::new(coding, Default::default());
        d.push(&out, &mut partial).unwrap();
        assert_clean(&String::from_utf8_lossy(&partial));
    }
    // A JSON document cut short, without compression.
    let mut m = masker_for(Coding::Identity, "application/json");
    let r = run(&mut m, &[&doc.as_bytes()[..doc.len() - 2]]);
    assert!(matches!(r, Err(BodyError::Mask(_))));
}

#[test]
fn empty_bodies_stay_empty() {
    for coding in CODINGS {
        for ct in ["application/json", "text/plain", "application/x-ndjson"] {
            let mut m = masker_for(coding, ct);
            let (out, counts) = run(&mut m, &[]).unwrap();
            assert!(out.is_empty(), "{coding} {ct}");
            assert!(counts.is_empty());
        }
    }
    // gzip of nothing: a complete (empty) gzip stream comes back.
    let mut m = masker_for(Coding::Gzip, "application/json");
    let (out, _) = run(&mut m, &[&compress(Coding::Gzip, b"")]).unwrap();
    assert!(!out.is_empty());
    assert!(decompress(Coding::Gzip, &out).is_empty());
}

fn refusal(status: StatusCode, method: Method, headers: &[(&str, &str)]) -> Option<String> {
    let mut parts = head(status, headers);
    match mask_response_head(
        &profile(),
        &method,
        &mut parts,
        &BodyLimits::default(),
        &mut MaskedCounts::new(),
    ) {
        Ok(_) => None,
        Err(r) => {
            assert_eq!(r.status, StatusCode::BAD_GATEWAY);
            assert_eq!(r.code, "unmaskable_response");
            Some(r.message)
        }
    }
}

#[test]
fn unmaskable_responses_are_refused() {
    let json = ("content-type", "application/json");
    let cases: &[(&[(&str, &str)], StatusCode)] = &[
        (&[json, ("content-encoding", "zstd")], StatusCode::OK),
        (&[json, ("content-encoding", "compress")], StatusCode::OK),
        (&[json, ("content-encoding", "gzip, br")], StatusCode::OK),
        (
            &[
                json,
                ("content-encoding", "gzip"),
                ("content-encoding", "gzip"),
            ],
            StatusCode::OK,
        ),
        (
            &[("content-type", "application/octet-stream")],
            StatusCode::OK,
        ),
        (&[("content-type", "image/png")], StatusCode::OK),
        (
            &[("content-type", "multipart/form-data; boundary=x")],
            StatusCode::OK,
        ),
        (&[("content-type", "application/json-seq")], StatusCode::OK),
        (
            &[("content-type", "application/json; charset=utf-16")],
            StatusCode::OK,
        ),
        (
            &[("content-type", "text/plain; charset=utf-16le")],
            StatusCode::OK,
        ),
        (&[("content-type", "nonsense")], StatusCode::OK),
        (&[], StatusCode::OK),
        (
            &[
                ("content-type", "text/plain"),
                ("content-type", "application/json"),
            ],
            StatusCode::OK,
        ),
        (
            &[json, ("content-range", "bytes 0-9/100")],
            StatusCode::PARTIAL_CONTENT,
        ),
        (&[("upgrade", "websocket")], StatusCode::SWITCHING_PROTOCOLS),
    ];
    for (headers, status) in cases {
        assert!(
            refusal(*status, Method::GET, headers).is_some(),
            "{status} {headers:?} was not refused"
        );
    }
    assert!(refusal(StatusCode::OK, Method::CONNECT, &[]).is_some());
    // The message names the problem, not the body.
    let m = refusal(
        StatusCode::OK,
        Method::GET,
        &[("content-type", "image/png")],
    )
    .unwrap();
    assert!(m.contains("image/png"), "{m}");
}

#[test]
fn maskable_types_are_accepted() {
    for ct in [
        "application/json",
        "Application/JSON; charset=\"UTF-8\"",
        "application/problem+json",
        "application/vnd.api+json",
        "application/x-ndjson",
        "application/jsonl",
        "text/plain",
        "text/event-stream",
        "application/xml",
        "application/atom+xml",
        "application/x-www-form-urlencoded",
        "application/javascript",
        "text/html; charset=windows-1252",
    ] {
        assert!(
            refusal(StatusCode::OK, Method::GET, &[("content-type", ct)]).is_none(),
            "{ct} refused"
        );
    }
    for coding in ["gzip", "x-gzip", "deflate", "br", "identity", "GZIP"] {
        assert!(
            refusal(
                StatusCode::OK,
                Method::GET,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", coding)
                ]
            )
            .is_none(),
            "{coding} refused"
        );
    }
}

#[test]
fn responses_without_a_body_get_no_masker() {
    let p = profile();
    let json = [
        ("content-type", "application/json"),
        ("content-length", "120"),
    ];
    for (method, status) in [
        (Method::HEAD, StatusCode::OK),
        (Method::GET, StatusCode::NO_CONTENT),
        (Method::GET, StatusCode::NOT_MODIFIED),
        (Method::GET, StatusCode::CONTINUE),
    ] {
        let mut parts = head(status, &json);
        let m = mask_response_head(
            &p,
            &method,
            &mut parts,
            &BodyLimits::default(),
            &mut MaskedCounts::new(),
        )
        .unwrap();
        assert!(m.is_none(), "{method} {status}");
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
    }
    // Content-Length: 0 with any type (even one that would be refused) has nothing to mask.
    let mut parts = head(
        StatusCode::CREATED,
        &[
            ("content-type", "application/octet-stream"),
            ("content-length", "0"),
        ],
    );
    let m = mask_response_head(
        &p,
        &Method::POST,
        &mut parts,
        &BodyLimits::default(),
        &mut MaskedCounts::new(),
    )
    .unwrap();
    assert!(m.is_none());
    assert_eq!(parts.headers[header::CONTENT_LENGTH], "0");
    // HEAD is answered even for a type whose body would be refused.
    assert!(
        refusal(
            StatusCode::OK,
            Method::HEAD,
            &[("content-type", "image/png")]
        )
        .is_none()
    );
}

#[test]
fn headers_are_masked_and_body_validators_removed() {
    let mut parts = head(
        StatusCode::OK,
        &[
            ("content-type", "application/json"),
            ("content-length", "1234"),
            ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
            (
                "digest",
                "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
            ),
            (
                "content-digest",
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            ),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc123\""),
            ("x-customer-email", EMAIL),
            ("x-note", "card on file 4111-1111-1111-1111, thanks"),
            ("x-secret-token", "opaque-value"),
            ("x-secret-other", "more"),
            ("x-request-id", "r-42"),
            ("set-cookie", "a=1"),
            ("set-cookie", "id=7; Path=/; x alice.smith@example.com"),
        ],
    );
    let mut counts = MaskedCounts::new();
    let m = mask_response_head(
        &profile(),
        &Method::GET,
        &mut parts,
        &BodyLimits::default(),
        &mut counts,
    )
    .unwrap();
    assert!(m.is_some());
    let h = &parts.headers;
    for gone in [
        "content-length",
        "content-md5",
        "digest",
        "content-digest",
        "accept-ranges",
    ] {
        assert!(h.get(gone).is_none(), "{gone} kept");
    }
    assert_eq!(h["etag"], "W/\"abc123\"");
    assert_eq!(h["x-customer-email"], "[REDACTED]");
    assert_eq!(h["x-note"], "card on file [REDACTED], thanks");
    assert_eq!(h["x-secret-token"], "[REDACTED]");
    assert_eq!(h["x-secret-other"], "[REDACTED]");
    assert_eq!(h["x-request-id"], "r-42");
    assert_eq!(h["content-type"], "application/json");
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "id=7; Path=/; x [REDACTED]"]);
    assert_eq!(counts.0["email"], 2);
    assert_eq!(counts.0["card_number"], 1);
    assert_eq!(counts.0["header:x-secret-*"], 2);
}

#[test]
fn a_header_that_masks_to_null_is_removed() {
    let p = Arc::new(
        Profile::builder("null")
            .strategy("email", Mask::Null)
            .build()
            .unwrap(),
    );
    let mut parts = head(
        StatusCode::NO_CONTENT,
        &[
            ("x-owner", EMAIL),
            ("x-keep", "plain"),
            ("etag", "W/\"weak\""),
        ],
    );
    let m = mask_response_head(
        &p,
        &Method::DELETE,
        &mut parts,
        &BodyLimits::default(),
        &mut MaskedCounts::new(),
    )
    .unwrap();
    assert!(m.is_none());
    assert!(parts.headers.get("x-owner").is_none());
    assert_eq!(parts.headers["x-keep"], "plain");
    assert_eq!(parts.headers["etag"], "W/\"weak\"");
}

#[test]
fn range_requests_are_refused_and_accept_encoding_narrowed() {
    for (name, value) in [("range", "bytes=0-99"), ("if-range", "\"abc\"")] {
        let (mut parts, ()) = Request::get("/x")
            .header(name, value)
            .body(())
            .unwrap()
            .into_parts();
        let r = prepare_request(&mut parts).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.code, "range_not_supported");
    }
    let (mut parts, ()) = Request::get("/x")
        .header("accept-encoding", "zstd, br;q=0.9")
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap()
        .into_parts();
    prepare_request(&mut parts).unwrap();
    let ae: Vec<_> = parts.headers.get_all("accept-encoding").iter().collect();
    assert_eq!(ae, ["gzip, br;q=0.900"]);
    let (mut parts, ()) = Request::get("/x").body(()).unwrap().into_parts();
    prepare_request(&mut parts).unwrap();
    assert_eq!(parts.headers["accept-encoding"], "identity");
}

// === streaming bodies ===

type Reports = Arc<Mutex<Vec<BodyReport>>>;

fn recorder() -> (Reports, impl FnOnce(BodyReport) + Send + 'static) {
    let reports: Reports = Arc::default();
    let r = Arc::clone(&reports);
    (reports, move |report| r.lock().unwrap().push(report))
}

type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

type FrameStream = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
>;

fn stream_body(frames: Frames) -> FrameStream {
    StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test]
async fn masked_body_over_many_frames() {
    let doc = api_document(300);
    for coding in CODINGS {
        let wire = compress(coding, doc.as_bytes());
        let mut frames: Frames = chunks(&wire, 11, 64)
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let mut trailers = HeaderMap::new();
        trailers.insert(
            "x-summary",
            HeaderValue::from_static("sent to alice.smith@example.com"),
        );
        frames.push(Ok(Frame::trailers(trailers)));
        let (reports, done) = recorder();
        let body = MaskedBody::new(
            stream_body(frames),
            masker_for(coding, "application/json"),
            done,
        );
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["x-summary"], "sent to [REDACTED]");
        let out = collected.to_bytes();
        let plain = String::from_utf8(decompress(coding, &out)).unwrap();
        assert_clean(&plain);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&plain).unwrap()["data"][299]["id"],
            299
        );
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 1, "done called once");
        let r = &reports[0];
        assert_eq!(r.error, None);
        assert_eq!(r.bytes_in, wire.len() as u64);
        assert_eq!(r.bytes_out, out.len() as u64);
        assert_eq!(r.masked.0["card_number"], 300);
        assert_eq!(
            r.masked.0["email"], 301,
            "300 in the body, one in the trailers"
        );
    }
}

#[tokio::test]
async fn a_failure_mid_stream_ends_the_body_with_an_error() {
    let frames: Frames = vec![
        Ok(Frame::data(Bytes::from(format!(
            "[{{\"card\":\"{CARD}\"}},"
        )))),
        Ok(Frame::data(Bytes::from_static(b"{\"ok\":tru"))),
        Ok(Frame::data(Bytes::from_static(
            b"X}, {\"email\":\"alice.smith@example.com\"}]",
        ))),
    ];
    let (reports, done) = recorder();
    let mut body = MaskedBody::new(
        stream_body(frames),
        masker_for(Coding::Identity, "application/json"),
        done,
    );
    let mut sent = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => sent.extend_from_slice(f.data_ref().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("the body ended normally"),
        }
    };
    assert!(matches!(err, BodyError::Mask(_)), "{err:?}");
    assert!(body.frame().await.is_none());
    let sent = String::from_utf8(sent).unwrap();
    assert_clean(&sent);
    assert!(!sent.contains("alice"));
    drop(body);
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].error.as_deref().unwrap().contains("JSON"));
}

#[tokio::test]
async fn an_upstream_error_is_reported() {
    let frames: Frames = vec![
        Ok(Frame::data(Bytes::from_static(b"[1,"))),
        Err(std::io::Error::other("connection reset")),
    ];
    let (reports, done) = recorder();
    let body = MaskedBody::new(
        stream_body(frames),
        masker_for(Coding::Identity, "application/json"),
        done,
    );
    let err = body.collect().await.unwrap_err();
    assert!(matches!(err, BodyError::Upstream(_)));
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0]
            .error
            .as_deref()
            .unwrap()
            .contains("connection reset")
    );
    assert_eq!(reports[0].bytes_in, 3);
}

#[tokio::test]
async fn done_is_called_exactly_once_even_on_drop() {
    let calls = Arc::new(AtomicUsize::new(0));
    let frames = || -> Frames {
        (0..10)
            .map(|i| {
                Ok(Frame::data(Bytes::from(if i == 0 {
                    "[".to_owned()
                } else {
                    format!("{i},")
                })))
            })
            .collect()
    };
    // Dropped after two frames.
    let (reports, done) = recorder();
    let c = Arc::clone(&calls);
    let mut body = MaskedBody::new(
        stream_body(frames()),
        masker_for(Coding::Identity, "application/json"),
        move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            done(r);
        },
    );
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let r = reports.lock().unwrap()[0].clone();
    assert!(r.error.unwrap().contains("dropped"));
    assert_eq!(r.bytes_in, 3);

    // Dropped unpolled.
    let (reports, done) = recorder();
    drop(MaskedBody::new(
        stream_body(frames()),
        masker_for(Coding::Identity, "application/json"),
        done,
    ));
    assert_eq!(reports.lock().unwrap().len(), 1);

    // Run to its end (an error, since `[1,2,…,9,` is not a document), then dropped.
    let (reports, done) = recorder();
    let c = Arc::clone(&calls);
    let body = MaskedBody::new(
        stream_body(frames()),
        masker_for(Coding::Identity, "application/json"),
        move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            done(r);
        },
    );
    assert!(body.collect().await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(reports.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn counting_body_passes_frames_through() {
    let frames: Frames = vec![
        Ok(Frame::data(Bytes::from_static(b"card 4111 1111 1111 1111"))),
        Ok(Frame::data(Bytes::from_static(b" unmasked route"))),
    ];
    let (reports, done) = recorder();
    let out = CountingBody::new(stream_body(frames), done)
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&out[..], b"card 4111 1111 1111 1111 unmasked route");
    {
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].bytes_in, 39);
        assert_eq!(reports[0].bytes_out, 39);
        assert_eq!(reports[0].error, None);
    }

    // An empty body dropped unpolled ended normally; a started one dropped did not.
    let (reports, done) = recorder();
    drop(CountingBody::new(
        http_body_util::Empty::<Bytes>::new(),
        done,
    ));
    assert_eq!(reports.lock().unwrap()[0].error, None);
    let (reports, done) = recorder();
    let mut body = CountingBody::new(
        stream_body(vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ]),
        done,
    );
    body.frame().await.unwrap().unwrap();
    drop(body);
    let r = reports.lock().unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].error.is_some());
}

// === property ===

fn luhn(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn card_number() -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, 14).prop_map(|mut d| {
        d.insert(0, 4);
        let check = luhn(&d);
        d.push(check);
        d.iter().map(|x| char::from(b'0' + x)).collect()
    })
}

#[derive(Debug, Clone)]
enum Pii {
    Card(String),
    Email(String),
}

fn pii() -> impl Strategy<Value = Pii> {
    prop_oneof![
        card_number().prop_map(Pii::Card),
        "[a-z]{1,10}\\.[a-z]{1,10}@[a-z]{2,10}\\.(com|org|net)".prop_map(Pii::Email),
    ]
}

fn json_with(pii: Vec<Pii>, filler: Vec<String>) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let mut s = String::from("{\"items\":[");
    for (i, p) in pii.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let f = filler
            .get(i % filler.len().max(1))
            .cloned()
            .unwrap_or_default();
        match p {
            Pii::Card(c) => {
                s.push_str(&format!("{{\"n\":{i},\"note\":\"{f} pay with {c} ok\"}}"));
                secrets.push(c.clone());
            }
            Pii::Email(e) => {
                s.push_str(&format!("{{\"n\":{i},\"to\":[\"{e}\"],\"x\":\"{f}\"}}"));
                secrets.push(e.clone());
            }
        }
    }
    s.push_str("]}");
    (s, secrets)
}

/// The items of `json_with` as JSON Lines, server-sent events or plain text.
fn shaped(shape: usize, pii: &[Pii], filler: &[String]) -> (&'static str, String) {
    let f = |i: usize| {
        filler
            .get(i % filler.len().max(1))
            .cloned()
            .unwrap_or_default()
    };
    let item = |i: usize, p: &Pii| match p {
        Pii::Card(c) => format!("{{\"n\":{i},\"note\":\"{} pay with {c} ok\"}}", f(i)),
        Pii::Email(e) => format!("{{\"n\":{i},\"to\":[\"{e}\"],\"x\":\"{}\"}}", f(i)),
    };
    let lines = pii.iter().enumerate().map(|(i, p)| item(i, p));
    match shape {
        0 => ("application/x-ndjson", lines.map(|l| l + "\n").collect()),
        1 => (
            "text/event-stream",
            lines
                .map(|l| format!("event: item\ndata: {l}\n\n"))
                .collect(),
        ),
        _ => (
            "text/plain",
            pii.iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Pii::Card(c) => format!("line {i}: {} paid with {c}.\n", f(i)),
                    Pii::Email(e) => format!("line {i}: {} wrote to {e}.\n", f(i)),
                })
                .collect(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_pii_survives_any_coding_or_chunking(
        pii in proptest::collection::vec(pii(), 1..20),
        filler in proptest::collection::vec("[a-zA-Z ]{0,30}", 1..5),
        coding in proptest::sample::select(CODINGS.to_vec()),
        seed in any::<u64>(),
        max in 1usize..600,
    ) {
        let (doc, secrets) = json_with(pii, filler);
        let wire = compress(coding, doc.as_bytes());
        let mut m = masker_for(coding, "application/json");
        let (out, counts) = run(&mut m, &chunks(&wire, seed, max)).unwrap();
        let plain = String::from_utf8(decompress(coding, &out)).unwrap();
        for s in &secrets {
            prop_assert!(!plain.contains(s.as_str()), "{} survived in {}", s, plain);
        }
        prop_assert_eq!(counts.total(), secrets.len() as u64);
        let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
        prop_assert_eq!(v["items"].as_array().unwrap().len(), secrets.len());
    }

    #[test]
    fn no_pii_survives_in_lines_events_or_text(
        pii in proptest::collection::vec(pii(), 1..20),
        filler in proptest::collection::vec("[a-zA-Z ]{0,30}", 1..5),
        shape in 0usize..3,
        coding in proptest::sample::select(CODINGS.to_vec()),
        seed in any::<u64>(),
        max in 1usize..600,
    ) {
        let (content_type, doc) = shaped(shape, &pii, &filler);
        let wire = compress(coding, doc.as_bytes());
        let mut m = masker_for(coding, content_type);
        let (out, counts) = run(&mut m, &chunks(&wire, seed, max)).unwrap();
        let plain = String::from_utf8(decompress(coding, &out)).unwrap();
        for p in &pii {
            let (Pii::Card(s) | Pii::Email(s)) = p;
            prop_assert!(!plain.contains(s.as_str()), "{} survived in {}", s, plain);
        }
        prop_assert_eq!(counts.total(), pii.len() as u64);
        prop_assert_eq!(plain.lines().filter(|l| l.contains("\"n\":") || l.starts_with("line ")).count(), pii.len());
    }
}

// === over real connections ===

mod loopback {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;

    use futures_util::StreamExt;
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type Served = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

    /// A server answering every request with what `respond` builds, on loopback, HTTP/1.1
    /// and HTTP/2 (prior knowledge).
    async fn serve(
        respond: impl Fn() -> Response<Served> + Send + Sync + Clone + 'static,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let respond = respond.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let respond = respond.clone();
                        async move { Ok::<_, Infallible>(respond()) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// The masked response of a JSON API: gzip frames from `frames`, masked on the way.
    fn masked_response(
        frames: Frames,
        reports: &Reports,
        extra: impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + 'static,
    ) -> Response<Served> {
        let mut parts = head(
            StatusCode::OK,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
                ("content-length", "999"),
                ("x-owner", EMAIL),
            ],
        );
        let masker = mask_response_head(
            &profile(),
            &Method::GET,
            &mut parts,
            &BodyLimits::default(),
            &mut MaskedCounts::new(),
        )
        .unwrap()
        .unwrap();
        let r = Arc::clone(reports);
        let inner = StreamBody::new(futures_util::stream::iter(frames).chain(extra));
        let body = MaskedBody::new(inner, masker, move |report| {
            r.lock().unwrap().push(report);
        });
        Response::from_parts(parts, body.boxed_unsync())
    }

    fn gzip_frames(doc: &str) -> Frames {
        chunks(&compress(Coding::Gzip, doc.as_bytes()), 21, 200)
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect()
    }

    async fn wait_for_report(reports: &Reports) -> BodyReport {
        // Bounded so that a bug fails the test instead of hanging it; not a timing assertion.
        for _ in 0..500 {
            if let Some(r) = reports.lock().unwrap().first().cloned() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no report");
    }

    #[tokio::test]
    async fn http1_and_h2_clients_get_a_masked_gzip_body() {
        let doc = api_document(200);
        for h2 in [false, true] {
            let reports: Reports = Arc::default();
            let (r, d) = (Arc::clone(&reports), doc.clone());
            let addr = serve(move || {
                let mut frames = gzip_frames(&d);
                let mut t = HeaderMap::new();
                t.insert("x-audit", HeaderValue::from_static("ssn 123-45-6789"));
                frames.push(Ok(Frame::trailers(t)));
                masked_response(frames, &r, futures_util::stream::empty())
            })
            .await;
            let tcp = TokioIo::new(TcpStream::connect(addr).await.unwrap());
            let req = Request::get("/customers")
                .header("host", "localhost")
                .header("te", "trailers")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let resp = if h2 {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), tcp)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                send.send_request(req).await.unwrap()
            } else {
                let (mut send, conn) = hyper::client::conn::http1::handshake(tcp).await.unwrap();
                tokio::spawn(conn);
                send.send_request(req).await.unwrap()
            };
            assert_eq!(resp.status(), StatusCode::OK);
            let h = resp.headers().clone();
            assert!(h.get("content-length").is_none(), "h2={h2}");
            assert_eq!(h["content-encoding"], "gzip");
            assert_eq!(h["x-owner"], "[REDACTED]");
            if !h2 {
                assert_eq!(h["transfer-encoding"], "chunked");
            }
            let collected = resp.into_body().collect().await.unwrap();
            if h2 {
                // HTTP/1.1 trailers need the client to have asked for them and hyper's
                // client does not expose them; HTTP/2 carries them.
                let t = collected.trailers().cloned().expect("trailers");
                assert_eq!(t["x-audit"], "ssn [REDACTED]");
            }
            let plain = String::from_utf8(decompress(Coding::Gzip, &collected.to_bytes())).unwrap();
            assert_clean(&plain);
            let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
            assert_eq!(v["data"].as_array().unwrap().len(), 200);
            let report = wait_for_report(&reports).await;
            assert_eq!(report.error, None, "h2={h2}");
            assert_eq!(report.masked.0["card_number"], 200);
            assert_eq!(reports.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn a_client_that_goes_away_is_reported_once() {
        let reports: Reports = Arc::default();
        let r = Arc::clone(&reports);
        let addr = serve(move || {
            // One frame, then an upstream that never finishes.
            let frames = gzip_frames("[1,2,3,");
            masked_response(frames, &r, futures_util::stream::pending())
        })
        .await;
        let tcp = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", "localhost")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let mut body = send.send_request(req).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        drop(send);
        conn.abort();
        let report = wait_for_report(&reports).await;
        assert!(report.error.unwrap().contains("dropped"));
        assert!(report.bytes_in > 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reports.lock().unwrap().len(), 1);
    }
}

#[test]
fn a_coding_the_client_did_not_accept_is_decoded_and_sent_plain() {
    let doc = format!(r#"{{"card":"{CARD}","note":"plain"}}"#);
    for (client, upstream, want) in [
        // The upstream ignored the narrowed list: the client gets no coding.
        ("gzip", Coding::Brotli, Coding::Identity),
        ("identity", Coding::Gzip, Coding::Identity),
        ("br;q=0.5, deflate", Coding::Gzip, Coding::Identity),
        // What the client accepts is kept.
        ("gzip, br", Coding::Brotli, Coding::Brotli),
        ("deflate", Coding::Deflate, Coding::Deflate),
    ] {
        let accepted = narrow_accept_encoding(Some(&HeaderValue::from_static(client)));
        let mut headers = vec![("content-type", "application/json")];
        if upstream != Coding::Identity {
            headers.push(("content-encoding", upstream.as_str()));
        }
        let mut parts = head(StatusCode::OK, &headers);
        let mut m = mask_response_head_for(
            &profile(),
            &Method::GET,
            &mut parts,
            &BodyLimits::default(),
            &mut MaskedCounts::new(),
            Some(&accepted),
        )
        .unwrap()
        .unwrap();
        let sent = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_owned());
        let want_header = (want != Coding::Identity).then(|| want.as_str().to_owned());
        assert_eq!(
            sent, want_header,
            "client {client:?}, upstream {upstream:?}"
        );
        let mut counts = MaskedCounts::new();
        let mut out = m
            .push(&compress(upstream, doc.as_bytes()), &mut counts)
            .unwrap()
            .to_vec();
        out.extend_from_slice(&m.finish(&mut counts).unwrap());
        let plain = decompress(want, &out);
        let text = String::from_utf8(plain).unwrap();
        assert!(text.contains("plain") && !text.contains(CARD), "{text}");
        assert_eq!(counts.total(), 1);
    }
}

#[test]
fn narrowed_lists_name_what_they_accept() {
    let n = |s: &str| narrow_accept_encoding(Some(&HeaderValue::from_str(s).unwrap()));
    assert!(narrowed_accepts(&n("gzip;q=0.3, br"), Coding::Gzip));
    assert!(narrowed_accepts(&n("gzip;q=0.3, br"), Coding::Brotli));
    assert!(!narrowed_accepts(&n("gzip;q=0.3, br"), Coding::Deflate));
    assert!(!narrowed_accepts(&n("gzip;q=0"), Coding::Gzip));
    assert!(narrowed_accepts(&n("gzip;q=0"), Coding::Identity));
    assert!(!narrowed_accepts(&n("x-custom"), Coding::Gzip));
}

/// A reason phrase other than the status's own is upstream text the masker does not see:
/// the response goes on with the status's own (clients ignore the phrase, RFC 9112 §4).
#[test]
fn an_upstream_reason_phrase_is_not_passed_on() {
    let mut parts = head(StatusCode::OK, &[("content-type", "application/json")]);
    parts
        .extensions
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"ssn 123-45-6789 is here",
        ));
    mask_get_head(&mut parts);
    assert!(parts.extensions.get::<hyper::ext::ReasonPhrase>().is_none());
}
