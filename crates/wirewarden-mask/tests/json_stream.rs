//! The streaming JSON masker against the whole-document one: for generated documents full of
//! PII (Luhn-valid cards, SSNs, emails), escapes, multi-byte text, JSON inside strings and
//! JSON-path rules (some covering whole objects and arrays), cut into chunks at random places
//! and into single bytes, the concatenated stream output and the masked counts must be
//! exactly those of `Profile::mask_json`. Invalid documents must fail in both; arbitrary
//! bytes must never panic, never be held back beyond the limit, and give valid JSON on
//! success.

use std::borrow::Cow;
use std::sync::Arc;

use proptest::prelude::*;
use wirewarden_mask::{
    DetectorSet, Error, Field, FieldRule, JsonStream, Limits, MaskKey, MaskedCounts, Profile,
    Selector, Strategy as Mask,
};

// === profiles ===

fn rules_profile() -> Arc<Profile> {
    let rule = |path: &str, s: Mask| FieldRule::new(Selector::json_path(path).unwrap(), s);
    Arc::new(
        Profile::builder("rules")
            .key(MaskKey::new([9; 32]))
            .strategy("email", Mask::Tokenize)
            .strategy("card_number", Mask::FormatPreserving)
            .strategy("ssn", Mask::keep_last(4))
            .rule(rule("$.user.ssn", Mask::Null))
            .rule(rule("$..password", Mask::redact()))
            .rule(rule("$.items[*].card", Mask::Tokenize))
            // These may hold objects and arrays: masked whole, from their raw text.
            .rule(rule("$..profile", Mask::Hash))
            .rule(rule("$..secret", Mask::keep_last(2)))
            .rule(rule("$..hidden", Mask::Null))
            .build()
            .unwrap(),
    )
}

fn plain_profile() -> Arc<Profile> {
    Arc::new(
        Profile::builder("plain")
            .key(MaskKey::new([4; 32]))
            .strategy("email", Mask::Tokenize)
            .strategy("ssn", Mask::Null)
            .build()
            .unwrap(),
    )
}

fn profiles() -> impl Strategy<Value = Arc<Profile>> {
    prop_oneof![
        Just(()).prop_map(|()| rules_profile()),
        Just(()).prop_map(|()| plain_profile())
    ]
}

// === generated documents ===

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// A number, spelled as it is to be written.
    Num(String),
    Str(String),
    /// A string token written as is (escapes a renderer would not produce: lone surrogates).
    Raw(&'static str),
    /// A JSON document inside a string.
    Nested(Box<J>),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn luhn_complete(mut body: Vec<u8>) -> Vec<u8> {
    let mut sum = 0;
    for (i, d) in body.iter().rev().enumerate() {
        let d = u32::from(*d);
        sum += if i % 2 == 0 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    body.push(((10 - sum % 10) % 10) as u8);
    body
}

fn card() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            (vec![4u8], 16usize),
            (vec![5, 1], 16),
            (vec![3, 7], 15),
        ]),
        prop::collection::vec(0u8..10, 19),
        prop::sample::select(vec!["", " ", "-"]),
    )
        .prop_map(|((prefix, len), rest, sep)| {
            let mut body = prefix.clone();
            body.extend(rest.iter().take(len - 1 - prefix.len()));
            let digits: String = luhn_complete(body)
                .iter()
                .map(|d| char::from(b'0' + d))
                .collect();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && i % 4 == 0 {
                    out.push_str(sep);
                }
                out.push(c);
            }
            out
        })
}

fn card_digits() -> impl Strategy<Value = String> {
    card().prop_map(|c| c.chars().filter(char::is_ascii_digit).collect())
}

fn ssn() -> impl Strategy<Value = String> {
    (1u32..900, 1u32..100, 1u32..10000)
        .prop_filter("666 is never issued", |(a, _, _)| *a != 666)
        .prop_map(|(a, g, s)| format!("{a:03}-{g:02}-{s:04}"))
}

fn email() -> impl Strategy<Value = String> {
    ("[a-z]{1,8}", "[a-z]{1,8}").prop_map(|(u, d)| format!("{u}.x@{d}.example.com"))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z ]{0,12}",
        "[a-zé日😀\"\\\\/\n\t\u{1}\u{7f}]{0,8}",
        (card(), "[a-z ]{0,6}").prop_map(|(c, t)| format!("{t}card {c} end")),
        (ssn(), "[a-z ]{0,6}").prop_map(|(s, t)| format!("{t}{s}")),
        (email(), "[a-zé ]{0,6}").prop_map(|(e, t)| format!("{t} <{e}>")),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        card_digits(),
        "-?(0|[1-9][0-9]{0,12})",
        "-?(0|[1-9][0-9]{0,3})\\.[0-9]{1,4}",
        "-?[1-9][0-9]{0,2}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "user", "ssn", "password", "items", "card", "profile", "secret", "hidden", "name",
            "a", "x y", "passwörd", "",
        ])
        .prop_map(str::to_owned),
        1 => email(),
        1 => "[a-z]{1,6}",
    ]
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        1 => Just(J::Null),
        1 => any::<bool>().prop_map(J::Bool),
        3 => number().prop_map(J::Num),
        6 => text().prop_map(J::Str),
        1 => prop::sample::select(vec![
            r#""\ud800""#,
            r#""a\uDBFFb""#,
            r#""\ud83d\ude00 \uD800\u0041""#,
            r#""\udc00\ud800""#,
            r#""\udbff\udfff \uD800\uDC00 \ud7ff\ue000""#,
            r#""\u0034\u0031\u0031\u0031 1111 1111 1111""#,
        ])
        .prop_map(J::Raw),
    ]
}

fn value() -> impl Strategy<Value = J> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            4 => prop::collection::vec((key(), inner.clone()), 0..5).prop_map(J::Obj),
            1 => inner.prop_map(|j| J::Nested(Box::new(j))),
        ]
    })
}

/// A document that gives the path rules something to match, around a random value.
fn document() -> impl Strategy<Value = J> {
    (
        prop_oneof![ssn().prop_map(J::Str), value()],
        prop::collection::vec((card().prop_map(J::Str), value()), 0..3),
        value(),
        value(),
        any::<u8>(),
    )
        .prop_map(|(ssn, items, profile, rest, pick)| {
            let items = items
                .into_iter()
                .map(|(c, v)| J::Obj(vec![("card".into(), c), ("other".into(), v)]))
                .collect();
            let doc = J::Obj(vec![
                (
                    "user".into(),
                    J::Obj(vec![
                        ("ssn".into(), ssn),
                        ("profile".into(), profile),
                        ("password".into(), J::Str("hunter2".into())),
                    ]),
                ),
                ("items".into(), J::Arr(items)),
                ("data".into(), rest.clone()),
            ]);
            match pick % 4 {
                0 => rest,
                _ => doc,
            }
        })
}

/// Random choices for the renderer: whitespace and how each character is escaped.
struct Dice<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl Dice<'_> {
    fn roll(&mut self) -> u8 {
        let b = self
            .bytes
            .get(self.i % self.bytes.len().max(1))
            .copied()
            .unwrap_or(0);
        self.i += 1;
        b.wrapping_add((self.i / self.bytes.len().max(1)) as u8)
    }

    fn ws(&mut self, out: &mut String) {
        const WS: [&str; 8] = ["", "", "", " ", "\n", "\t", "  \r\n  ", ""];
        out.push_str(WS[usize::from(self.roll()) % WS.len()]);
    }
}

fn render_str(s: &str, d: &mut Dice<'_>, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let mode = d.roll() % 8;
        match c {
            '"' => out.push_str(if mode < 4 { "\\\"" } else { "\\u0022" }),
            '\\' => out.push_str(if mode < 4 { "\\\\" } else { "\\u005C" }),
            '\n' if mode < 4 => out.push_str("\\n"),
            '\t' if mode < 4 => out.push_str("\\t"),
            '/' if mode < 2 => out.push_str("\\/"),
            c if (c as u32) < 0x20 || mode == 0 => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    if d.roll().is_multiple_of(2) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn render(j: &J, d: &mut Dice<'_>, out: &mut String) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s) => render_str(s, d, out),
        J::Raw(r) => out.push_str(r),
        J::Nested(inner) => {
            let mut doc = String::new();
            render(inner, d, &mut doc);
            render_str(&doc, d, out);
        }
        J::Arr(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                d.ws(out);
                render(v, d, out);
                d.ws(out);
            }
            d.ws(out);
            out.push(']');
        }
        J::Obj(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                d.ws(out);
                render_str(k, d, out);
                d.ws(out);
                out.push(':');
                d.ws(out);
                render(v, d, out);
                d.ws(out);
            }
            d.ws(out);
            out.push('}');
        }
    }
}

fn rendered() -> impl Strategy<Value = String> {
    (document(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(j, dice)| {
        let mut d = Dice { bytes: &dice, i: 0 };
        let mut out = String::new();
        d.ws(&mut out);
        render(&j, &mut d, &mut out);
        d.ws(&mut out);
        out
    })
}

// === running both maskers ===

fn whole(p: &Profile, text: &str) -> (Result<Vec<u8>, Error>, MaskedCounts) {
    let mut counts = MaskedCounts::new();
    let out = p
        .mask_json(&Field::Unknown, Cow::Borrowed(text), &mut counts)
        .map(|j| j.map_or_else(|| b"null".to_vec(), |j| j.into_owned().into_bytes()));
    (out, counts)
}

/// Cuts `input` at `cuts` (indices, any order, clamped) and streams the pieces.
fn streamed(
    mut s: JsonStream,
    input: &[u8],
    cuts: &[usize],
) -> (Result<Vec<u8>, Error>, MaskedCounts) {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut counts = MaskedCounts::new();
    let limit = s_limit(&s);
    for w in at.windows(2) {
        if let Err(e) = s.push(&input[w[0]..w[1]], &mut out, &mut counts) {
            // Poisoned: the next call fails the same way.
            assert_eq!(s.push(b"{}", &mut out, &mut counts), Err(e.clone()));
            assert_eq!(s.finish(&mut out, &mut counts), Err(e.clone()));
            return (Err(e), counts);
        }
        assert!(s.pending() <= limit);
    }
    let r = s.finish(&mut out, &mut counts).map(|()| out);
    (r, counts)
}

/// The limit on held-back bytes of the generated profiles (the default).
fn s_limit(_: &JsonStream) -> usize {
    Limits::default().max_value_len
}

fn single_bytes(len: usize) -> Vec<usize> {
    (0..=len).collect()
}

fn check_same(p: &Arc<Profile>, text: &str, cuts: &[usize]) -> Result<(), TestCaseError> {
    let (want, want_counts) = whole(p, text);
    for cuts in [cuts.to_vec(), single_bytes(text.len()), Vec::new()] {
        let (got, got_counts) = streamed(JsonStream::new(Arc::clone(p)), text.as_bytes(), &cuts);
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                prop_assert_eq!(
                    String::from_utf8_lossy(g),
                    String::from_utf8_lossy(w),
                    "cuts {:?} of {:?}",
                    cuts,
                    text
                );
                prop_assert_eq!(&got_counts, &want_counts);
            }
            (Err(w), Err(g)) => {
                prop_assert_eq!(
                    std::mem::discriminant(w),
                    std::mem::discriminant(g),
                    "{:?} vs {:?} for {:?}",
                    w,
                    g,
                    text
                );
            }
            _ => prop_assert!(
                false,
                "whole {want:?}, streamed {got:?} for {text:?} cut at {cuts:?}"
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn streamed_equals_whole(
        p in profiles(),
        text in rendered(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (want, _) = whole(&p, &text);
        prop_assert!(want.is_ok(), "generated document is invalid: {text:?}: {want:?}");
        check_same(&p, &text, &cuts)?;
    }

    #[test]
    fn broken_documents_fail_in_both(
        p in profiles(),
        text in rendered(),
        edits in prop::collection::vec((any::<usize>(), 0u8..4, prop::sample::select(vec![
            '{', '}', '[', ']', ',', ':', '"', '\\', 'a', 'u', '1', '0', '-', '.', 'e', '+', ' ',
            't', 'n', '\u{1}', 'é',
        ])), 1..3),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, op, c) in edits {
            let at = at % (chars.len() + 1);
            match op {
                0 if at < chars.len() => { chars.remove(at); }
                1 => chars.insert(at, c),
                2 if at < chars.len() => chars[at] = c,
                _ => chars.truncate(at),
            }
        }
        let text: String = chars.into_iter().collect();
        check_same(&p, &text, &cuts)?;
    }

    #[test]
    fn sequences_mask_each_document(
        p in profiles(),
        docs in prop::collection::vec(rendered(), 0..4),
        seps in prop::collection::vec(prop::sample::select(vec!["\n", "\r\n", " ", "\n\n", "\t\n"]), 4),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut input = String::new();
        let mut want = Vec::new();
        let mut want_counts = MaskedCounts::new();
        for (i, d) in docs.iter().enumerate() {
            input.push_str(seps[i]);
            want.extend_from_slice(seps[i].as_bytes());
            let mut c = MaskedCounts::new();
            let m = p.mask_json(&Field::Unknown, Cow::Borrowed(d), &mut c).unwrap().unwrap();
            want_counts.merge(&c);
            input.push_str(d);
            want.extend_from_slice(m.as_bytes());
        }
        input.push_str(seps[3]);
        want.extend_from_slice(seps[3].as_bytes());
        for cuts in [cuts, single_bytes(input.len())] {
            let (got, counts) = streamed(JsonStream::sequence(Arc::clone(&p)), input.as_bytes(), &cuts);
            let got = got.unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            prop_assert_eq!(&counts, &want_counts);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        p in profiles(),
        input in prop::collection::vec(prop_oneof![
            3 => prop::sample::select(b"{}[],:\"\\ \n0123456789-+.eEtrufalsn".to_vec()),
            1 => any::<u8>(),
        ], 0..160),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
        sequence in any::<bool>(),
    ) {
        let s = if sequence { JsonStream::sequence(Arc::clone(&p)) } else { JsonStream::new(Arc::clone(&p)) };
        let (got, _) = streamed(s, &input, &cuts);
        if let Ok(out) = &got {
            if sequence {
                for doc in serde_json::Deserializer::from_slice(out).into_iter::<serde::de::IgnoredAny>() {
                    prop_assert!(doc.is_ok(), "{:?}", String::from_utf8_lossy(out));
                }
            } else {
                let ok = serde_json::from_slice::<serde::de::IgnoredAny>(out).is_ok();
                prop_assert!(ok, "{:?}", String::from_utf8_lossy(out));
            }
        }
        if !sequence && let Ok(text) = std::str::from_utf8(&input) {
            let (want, _) = whole(&p, text);
            prop_assert_eq!(want.is_ok(), got.is_ok(), "{:?}: {:?} vs {:?}", text, want, got);
            if let (Ok(w), Ok(g)) = (want, got) {
                prop_assert_eq!(w, g);
            }
        }
    }
}

fn no_detectors() -> Arc<Profile> {
    Arc::new(
        Profile::builder("none")
            .detectors(DetectorSet::empty())
            .build()
            .unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With nothing to mask, everything pushed goes straight out except the token still in
    /// progress, which is all that `pending` holds.
    #[test]
    fn clean_documents_stream_through_at_once(
        text in rendered(),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let input = text.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        at.extend([0, input.len()]);
        at.sort_unstable();
        at.dedup();
        let mut s = JsonStream::new(no_detectors());
        let mut out = Vec::new();
        let mut counts = MaskedCounts::new();
        for w in at.windows(2) {
            s.push(&input[w[0]..w[1]], &mut out, &mut counts).unwrap();
            let held = s.pending();
            prop_assert_eq!(out.len() + held, w[1]);
            prop_assert_eq!(&out[..], &input[..out.len()]);
            if held > 0 {
                // What is held back starts a string, a number or a literal.
                prop_assert!(matches!(
                    input[out.len()],
                    b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
                ));
                // And no structure outside a string is held back with it.
                if input[out.len()] != b'"' {
                    prop_assert!(input[out.len()..w[1]].iter().all(|b| b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'+' | b'.')));
                }
            }
        }
        s.finish(&mut out, &mut counts).unwrap();
        prop_assert_eq!(out, input);
        prop_assert!(counts.is_empty());
    }
}

// === behaviour at the edges ===

fn push_all(s: &mut JsonStream, chunks: &[&[u8]]) -> Result<(Vec<u8>, MaskedCounts), Error> {
    let mut out = Vec::new();
    let mut counts = MaskedCounts::new();
    for c in chunks {
        s.push(c, &mut out, &mut counts)?;
    }
    s.finish(&mut out, &mut counts)?;
    Ok((out, counts))
}

#[test]
fn structure_passes_through_at_once() {
    let mut s = JsonStream::new(plain_profile());
    let mut out = Vec::new();
    let mut counts = MaskedCounts::new();
    s.push(b"{\"list\": [1, 2", &mut out, &mut counts).unwrap();
    // `2` may continue (`23`, `2.5`): it is held back; the rest is out.
    assert_eq!(out, b"{\"list\": [1, ");
    assert_eq!(s.pending(), 1);
    s.push(b"], \"mail\": \"bob@exa", &mut out, &mut counts)
        .unwrap();
    assert_eq!(out, b"{\"list\": [1, 2], \"mail\": ");
    assert_eq!(s.pending(), 8);
    s.push(b"mple.com\"}", &mut out, &mut counts).unwrap();
    assert_eq!(s.pending(), 0);
    s.finish(&mut out, &mut counts).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with("{\"list\": [1, 2], \"mail\": \"tok_"),
        "{out}"
    );
    assert_eq!(counts.0["email"], 1);
}

#[test]
fn rules_mask_whole_objects_and_arrays() {
    let p = rules_profile();
    let doc = r#"{"user": {"ssn": 123456789, "profile": {"cards": ["4111111111111111"], "n": 1}},
        "items": [{"card": "x"}, {"card": {"deep": true}}], "secret": [1, 22, 333],
        "hidden": {"x": "y"}, "password": "p\u00e4ss"}"#;
    let (want, want_counts) = whole(&p, doc);
    let want = want.unwrap();
    let (got, counts) = push_all(&mut JsonStream::new(Arc::clone(&p)), &[doc.as_bytes()]).unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        String::from_utf8(want).unwrap()
    );
    assert_eq!(counts, want_counts);
    assert_eq!(counts.0["json_path:$.items[*].card"], 2);
    // Inside a value masked whole, nothing else is counted.
    assert!(!counts.0.contains_key("card_number"));

    // A content-dependent rule holds the object back (bounded); a redaction does not.
    let mut s = JsonStream::new(Arc::clone(&p));
    let mut out = Vec::new();
    let mut c = MaskedCounts::new();
    s.push(br#"{"profile": {"a": "#, &mut out, &mut c).unwrap();
    assert_eq!(out, br#"{"profile": "#);
    assert_eq!(s.pending(), 6);
    let mut s = JsonStream::new(p);
    let mut out = Vec::new();
    s.push(br#"{"hidden": {"a": [1, 2, "#, &mut out, &mut c)
        .unwrap();
    assert_eq!(out, br#"{"hidden": "#);
    assert_eq!(s.pending(), 0);
    s.push(b"3]}}", &mut out, &mut c).unwrap();
    assert_eq!(out, br#"{"hidden": null}"#);
}

#[test]
fn escapes_and_utf8_split_anywhere() {
    let p = plain_profile();
    let doc = "{\"k\u{e9}y\": \"\\u0031\\u00323-45-6789 \u{65e5}\u{1F600} \\ud83d\\ude00\"}";
    let (want, _) = whole(&p, doc);
    let want = want.unwrap();
    assert!(!String::from_utf8_lossy(&want).contains("6789"));
    let b = doc.as_bytes();
    for i in 0..=b.len() {
        for j in i..=b.len() {
            let (got, _) = push_all(
                &mut JsonStream::new(Arc::clone(&p)),
                &[&b[..i], &b[i..j], &b[j..]],
            )
            .unwrap();
            assert_eq!(got, want, "cut at {i}, {j}");
        }
    }
}

#[test]
fn invalid_utf8_is_an_error_wherever_it_is_cut() {
    let p = plain_profile();
    let doc = b"[\"ab\xc3\x28\"]";
    for i in 0..=doc.len() {
        let r = push_all(
            &mut JsonStream::new(Arc::clone(&p)),
            &[&doc[..i], &doc[i..]],
        );
        assert_eq!(
            r.unwrap_err(),
            Error::InvalidUtf8 { offset: 4 },
            "cut at {i}"
        );
    }
    let r = push_all(&mut JsonStream::new(p), &[b"[\xff]"]);
    assert!(
        matches!(r, Err(Error::InvalidJson { offset: 1, .. })),
        "{r:?}"
    );
}

#[test]
fn tokens_beyond_the_limit_are_refused_not_buffered() {
    let limits = Limits {
        max_value_len: 64,
        ..Limits::default()
    };
    let p = Arc::new(Profile::builder("small").limits(limits).build().unwrap());
    let mut s = JsonStream::new(Arc::clone(&p));
    let mut out = Vec::new();
    let mut c = MaskedCounts::new();
    s.push(b"[\"", &mut out, &mut c).unwrap();
    let mut err = None;
    for _ in 0..100 {
        match s.push(b"abcdefgh", &mut out, &mut c) {
            Ok(()) => assert!(s.pending() <= 64),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(err, Some(Error::ValueTooLarge { limit: 64, .. })),
        "{err:?}"
    );
    assert_eq!(out, b"[");
    // A long document of short tokens is fine.
    let long = format!("[{}1]", "1, ".repeat(1000));
    assert!(push_all(&mut JsonStream::new(Arc::clone(&p)), &[long.as_bytes()]).is_ok());
    // One chunk holding a whole long token is refused too.
    let long = format!("[\"{}\"]", "x".repeat(100));
    let r = push_all(&mut JsonStream::new(p), &[long.as_bytes()]);
    assert!(
        matches!(r, Err(Error::ValueTooLarge { limit: 64, .. })),
        "{r:?}"
    );
}

#[test]
fn nesting_is_bounded_like_the_whole_document_masker() {
    let p = plain_profile();
    let limit = p.limits().max_json_depth;
    let ok = format!("{}{}", "[".repeat(limit), "]".repeat(limit));
    assert!(push_all(&mut JsonStream::new(Arc::clone(&p)), &[ok.as_bytes()]).is_ok());
    let deep = "[{\"a\":".repeat(limit);
    let r = push_all(&mut JsonStream::new(Arc::clone(&p)), &[deep.as_bytes()]);
    assert_eq!(r.unwrap_err(), Error::JsonTooDeep { limit });
    // Hostile depth costs an error, not the stack.
    let hostile = "[".repeat(1 << 20);
    let r = push_all(&mut JsonStream::new(p), &[hostile.as_bytes()]);
    assert_eq!(r.unwrap_err(), Error::JsonTooDeep { limit });
}

#[test]
fn json_in_strings_is_unpacked_to_the_limit() {
    let p = plain_profile();
    let limit = p.limits().max_nested_json;
    let mut doc = r#"{"ssn": "078-05-1120"}"#.to_owned();
    for _ in 0..limit {
        doc = format!("[{}]", serde_json::to_string(&doc).unwrap());
    }
    let (want, want_counts) = whole(&p, &doc);
    let (got, counts) = streamed(
        JsonStream::new(Arc::clone(&p)),
        doc.as_bytes(),
        &[7, 19, 40],
    );
    assert_eq!(got.unwrap(), want.unwrap());
    assert_eq!(counts, want_counts);
    assert_eq!(counts.0["ssn"], 1);
    // One level more is refused by both, never passed through.
    let deeper = format!("[{}]", serde_json::to_string(&doc).unwrap());
    let limit_err = Error::JsonTooDeep { limit };
    assert_eq!(whole(&p, &deeper).0, Err(limit_err.clone()));
    let (got, _) = streamed(JsonStream::new(p), deeper.as_bytes(), &[3, 50]);
    assert_eq!(got, Err(limit_err));
}

#[test]
fn literal_errors_point_at_the_literal() {
    let mut s = JsonStream::new(plain_profile());
    let mut out = Vec::new();
    let mut c = MaskedCounts::new();
    s.push(b"[tr", &mut out, &mut c).unwrap();
    let e = s.push(b"ux]", &mut out, &mut c).unwrap_err();
    assert!(matches!(e, Error::InvalidJson { offset: 1, .. }), "{e:?}");
}

#[test]
fn truncated_and_trailing_input_are_errors_and_poison() {
    let p = plain_profile();
    for bad in [
        &b""[..],
        b"  ",
        b"{\"a\": 1",
        b"[1,",
        b"\"abc",
        b"\"ab\\u00",
        b"tru",
        b"-",
        b"1.",
        b"1e+",
        b"{} x",
        b"1 2",
        b"[1,]",
        b"{\"a\":1,}",
        b"[01]",
    ] {
        let mut s = JsonStream::new(Arc::clone(&p));
        let mut out = Vec::new();
        let mut c = MaskedCounts::new();
        let e = s
            .push(bad, &mut out, &mut c)
            .and_then(|()| s.finish(&mut out, &mut c))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidJson { .. }), "{bad:?}: {e:?}");
        assert_eq!(s.push(b"[]", &mut out, &mut c), Err(e.clone()));
        assert_eq!(s.finish(&mut out, &mut c), Err(e));
    }
    // A complete document: finish is idempotent, more input is refused.
    let mut s = JsonStream::new(p);
    let (out, _) = push_all(&mut s, &[b"12", b"34 "]).unwrap();
    assert_eq!(out, b"1234 ");
    let mut out = Vec::new();
    let mut c = MaskedCounts::new();
    assert_eq!(s.finish(&mut out, &mut c), Ok(()));
    assert!(s.push(b"1", &mut out, &mut c).is_err());
}

#[test]
fn sequences() {
    let p = plain_profile();
    let (out, counts) = push_all(
        &mut JsonStream::sequence(Arc::clone(&p)),
        &[
            b"{\"ssn\": \"123-45-",
            b"6789\"}\n[1]{}\"a\"\n1",
            b"2 true\n",
        ],
    )
    .unwrap();
    assert_eq!(out, b"{\"ssn\": null}\n[1]{}\"a\"\n12 true\n");
    assert_eq!(counts.0["ssn"], 1);
    assert!(push_all(&mut JsonStream::sequence(Arc::clone(&p)), &[b""]).is_ok());
    assert!(push_all(&mut JsonStream::sequence(Arc::clone(&p)), &[b" \n "]).is_ok());
    for bad in [&b"truefalse"[..], b"1[]", b"null\"x\"", b"{\"a\":", b"]"] {
        let r = push_all(&mut JsonStream::sequence(Arc::clone(&p)), &[bad]);
        assert!(r.is_err(), "{bad:?}");
    }
}

#[test]
fn debug_never_shows_held_bytes() {
    let mut s = JsonStream::new(plain_profile());
    let mut out = Vec::new();
    let mut c = MaskedCounts::new();
    s.push(b"{\"k\": \"078-05-11", &mut out, &mut c).unwrap();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("078"), "{dbg}");
    assert!(dbg.contains("pending: 10"), "{dbg}");
}

#[test]
fn is_send_and_static() {
    fn check<T: Send + 'static + std::fmt::Debug>() {}
    check::<JsonStream>();
}
