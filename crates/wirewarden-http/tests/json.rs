//! The JSON scanner on generated JSON cut into arbitrary chunks: the verdict never depends on
//! where the chunks break, it agrees with a JSON parser's top-level keys, and the bytes it
//! says to hold back always include the body's end while a key is undecided. Arbitrary bytes,
//! JSON or not, are read the same way whatever the chunking.

mod pieces;

use http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;
use wirewarden_http::strict::form::NameMatcher;
use wirewarden_http::strict::json::JsonScanner;

fn scanner() -> JsonScanner {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    JsonScanner::for_request(&h).unwrap().unwrap()
}

/// Feeds `body` in the pieces `cuts` gives; the verdict, and for each piece the number of
/// bytes held back after it.
fn scan(body: &[u8], cuts: &[usize]) -> (Result<(), &'static str>, Vec<usize>) {
    pieces::in_pieces(
        &mut scanner(),
        body,
        cuts,
        JsonScanner::feed,
        JsonScanner::finish,
    )
}

/// JSON string literals, as on the wire, that spell the override or come close.
fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "_",
            "method",
            "METHOD",
            "\\u005f",
            "\\u005F",
            "\\u006Dethod",
            "\\u0065",
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\ud83d\\ude00",
            "é",
            " ",
            ".",
            "[",
            "override",
            "%5F",
            ":",
            ",",
            "{",
            "}",
            "x",
        ]),
        0..6,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()))
}

/// Keys: one of those strings, or a spelling of the override (or close to one), so that
/// overrides at depth 1 are common.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        string(),
        prop::sample::select(vec![
            "\"_method\"",
            "\"\\u005fmethod\"",
            "\"\\u005F\\u006Dethod\"",
            "\"_METHOD\"",
            "\"_method_override\"",
            "\" _method \"",
            "\"_metho\"",
            "\"_methodx\"",
            "\"_method\\u0000\"",
            "\"\\u005f\\u005fmethod\"",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Arbitrary JSON text built from those strings.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        string(),
        Just("1".to_owned()),
        Just("-2.5e3".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|v| {
                let members: Vec<String> =
                    v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{ {} }}", members.join(" ,"))
            }),
        ]
    })
}

/// Whether a decoded key names the override, as the scanner's matcher reads it.
fn is_method_key(key: &str) -> bool {
    let mut m = NameMatcher::new();
    for c in key.chars() {
        m.push_decoded(u8::try_from(c).ok().filter(u8::is_ascii).unwrap_or(0x80));
    }
    m.finish()
}

proptest! {
    #[test]
    fn json_verdicts_do_not_depend_on_chunking_and_match_a_parser(
        body in value(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (whole, _) = scan(body.as_bytes(), &[]);
        let (split, held) = scan(body.as_bytes(), &cuts);
        prop_assert_eq!(whole, split);

        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let oracle = parsed
            .as_object()
            .is_some_and(|o| o.keys().any(|k| is_method_key(k)));
        prop_assert_eq!(whole.is_err(), oracle, "{}", body);
        if whole.is_ok() {
            // A clean body ends with nothing held.
            prop_assert_eq!(held.last().copied(), Some(0));
        }
    }

    #[test]
    fn any_bytes_are_read_the_same_in_any_chunks(
        body in prop::collection::vec(
            prop::sample::select(b"{}[]\":,\\u005f_methodMETHOD 0\n\xffa".to_vec()),
            0..64,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (whole, _) = scan(&body, &[]);
        let (split, held) = scan(&body, &cuts);
        prop_assert_eq!(whole, split);
        // A body refused only at its end had its last byte held back.
        if whole == Err("method_override") && held.len() == cuts.len() + 1 && !body.is_empty() {
            prop_assert!(held.last().copied().unwrap_or(0) > 0);
        }
    }
}
