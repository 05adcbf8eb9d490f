//! Property tests: generated valid card numbers and SSNs, dressed in random separators and
//! digits of other scripts and embedded in random text, never survive masking; clean text is
//! never copied; arbitrary input never panics and JSON output always parses.

use std::borrow::Cow;

use proptest::prelude::*;
use wirewarden_mask::{
    Field, FieldRule, MaskKey, MaskedCounts, Profile, Selector, Strategy as Mask, ValueType,
};

/// Zero code points of the scripts digits are drawn from.
const ZEROS: [u32; 6] = [0x30, 0xFF10, 0x660, 0x966, 0x1D7CE, 0x0E50];

const SEPARATORS: [&str; 14] = [
    "", " ", "-", ".", "\u{00A0}", "\u{2007}", "\u{2013}", "\u{2212}", "\u{200B}", "\u{2060}",
    "\u{FEFF}", "\u{00AD}", "\u{3000}", "\u{FF0D}",
];

fn render(digits: &[u8], groups: &[usize], seps: &[usize], scripts: &[usize]) -> String {
    let mut out = String::new();
    let mut k = 0;
    let mut g = 0;
    let mut in_group = 0;
    for (i, d) in digits.iter().enumerate() {
        if i > 0 && in_group == groups[g % groups.len()] {
            out.push_str(SEPARATORS[seps[k % seps.len()] % SEPARATORS.len()]);
            k += 1;
            g += 1;
            in_group = 0;
        }
        let zero = ZEROS[scripts[i % scripts.len()] % ZEROS.len()];
        out.push(char::from_u32(zero + u32::from(*d)).unwrap());
        in_group += 1;
    }
    out
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

/// A valid card number: an issuer prefix, random digits, a Luhn check digit.
fn card() -> impl Strategy<Value = Vec<u8>> {
    let prefixes: Vec<(Vec<u8>, usize)> = vec![
        (vec![4], 16),
        (vec![4], 13),
        (vec![4], 19),
        (vec![5, 1], 16),
        (vec![5, 5], 16),
        (vec![2, 2, 2, 1], 16),
        (vec![3, 4], 15),
        (vec![3, 7], 15),
        (vec![6, 0, 1, 1], 16),
        (vec![6, 5], 16),
        (vec![3, 5], 16),
        (vec![6, 2], 17),
    ];
    (
        proptest::sample::select(prefixes),
        proptest::collection::vec(0u8..10, 19),
    )
        .prop_map(|((prefix, len), rest)| {
            let mut body = prefix.clone();
            body.extend(rest.iter().take(len - 1 - prefix.len()));
            luhn_complete(body)
        })
}

/// A valid SSN: area 001–899 except 666, group 01–99, serial 0001–9999.
fn ssn() -> impl Strategy<Value = Vec<u8>> {
    (1u32..900, 1u32..100, 1u32..10000)
        .prop_filter("666 is never issued", |(a, _, _)| *a != 666)
        .prop_map(|(a, g, s)| {
            format!("{a:03}{g:02}{s:04}")
                .bytes()
                .map(|b| b - b'0')
                .collect()
        })
}

/// Text around the value: no digits (they would merge with the value's own).
fn filler() -> impl Strategy<Value = String> {
    "[a-zA-Z ,;:!?()\\[\\]\"'éß日本\n\t]{0,24}"
}

fn digits_of(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            // Any script: map each decimal digit to ASCII by its value.
            let cp = c as u32;
            ZEROS
                .iter()
                .find(|z| (**z..**z + 10).contains(&cp))
                .map(|z| char::from(b'0' + (cp - z) as u8))
        })
        .collect()
}

fn as_ascii(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

fn profile() -> Profile {
    Profile::builder("p").build().unwrap()
}

fn keyed() -> Profile {
    Profile::builder("k")
        .key(MaskKey::new([3; 32]))
        .strategy("card_number", Mask::FormatPreserving)
        .strategy("ssn", Mask::keep_last(4))
        .strategy("email", Mask::Tokenize)
        .build()
        .unwrap()
}

fn mask(p: &Profile, s: &str) -> (String, MaskedCounts) {
    let mut c = MaskedCounts::new();
    let out = p
        .mask_text(&Field::Unknown, Cow::Borrowed(s), &mut c)
        .unwrap();
    (out.map(Cow::into_owned).unwrap_or_default(), c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cards_never_survive(
        digits in card(),
        layout in prop_oneof![Just(vec![16]), Just(vec![4]), Just(vec![1]), Just(vec![4, 6, 5])],
        seps in proptest::collection::vec(1usize..SEPARATORS.len(), 1..4),
        scripts in proptest::collection::vec(0usize..ZEROS.len(), 1..3),
        before in filler(),
        after in filler(),
    ) {
        // Amex-style 4-6-5 grouping only exists for 15 digits.
        let layout = match layout.as_slice() {
            [16] => vec![digits.len()],
            [4, 6, 5] if digits.len() != 15 => vec![4],
            _ => layout,
        };
        let value = render(&digits, &layout, &seps, &scripts);
        let text = format!("{before}{value}{after}");
        let (out, counts) = mask(&profile(), &text);
        prop_assert!(!digits_of(&out).contains(&as_ascii(&digits)), "{text:?} -> {out:?}");
        prop_assert_eq!(counts.0.get("card_number"), Some(&1), "{:?} -> {:?}", text, out);
    }

    #[test]
    fn ssns_never_survive(
        digits in ssn(),
        layout in prop_oneof![Just(vec![3, 2, 4]), Just(vec![1])],
        seps in proptest::collection::vec(1usize..SEPARATORS.len(), 1..3),
        scripts in proptest::collection::vec(0usize..ZEROS.len(), 1..3),
        before in filler(),
        after in filler(),
    ) {
        let value = render(&digits, &layout, &seps, &scripts);
        let text = format!("{before}{value}{after}");
        let (out, counts) = mask(&profile(), &text);
        prop_assert!(!digits_of(&out).contains(&as_ascii(&digits)), "{text:?} -> {out:?}");
        prop_assert_eq!(counts.0.get("ssn"), Some(&1), "{:?} -> {:?}", text, out);
    }

    #[test]
    fn keyed_strategies_hide_cards_and_ssns(
        card in card(),
        ssn in ssn(),
        sep in 0usize..SEPARATORS.len(),
        before in filler(),
    ) {
        let c = render(&card, &[4], &[sep], &[0]);
        let s = render(&ssn, &[3, 2, 4], &[1], &[0]);
        let text = format!("{before}{c} / {s}");
        let (out, counts) = mask(&keyed(), &text);
        prop_assert!(!digits_of(&out).contains(&as_ascii(&card)), "{text:?} -> {out:?}");
        // The SSN's digits are looked for in its own masked part: the card's token is
        // digits too, and across the separator the two may line up by chance (a token
        // ending in the SSN's first digits, before the kept last four).
        let masked_ssn = out.rsplit(" / ").next().unwrap_or_default();
        prop_assert!(out.contains(" / "), "{text:?} -> {out:?}");
        prop_assert!(!digits_of(masked_ssn).contains(&as_ascii(&ssn)), "{text:?} -> {out:?}");
        prop_assert_eq!(counts.total(), 2);
        // Deterministic: the same input masks the same way.
        prop_assert_eq!(mask(&keyed(), &text).0, out);
    }

    #[test]
    fn clean_text_is_borrowed(text in "[a-zA-Z ,.;:!?'\"()éüß\u{4e00}-\u{4e0f}\n]{0,300}") {
        let p = keyed();
        let mut c = MaskedCounts::new();
        let out = p.mask_text(&Field::Unknown, Cow::Borrowed(&text), &mut c).unwrap();
        prop_assert!(matches!(out, Some(Cow::Borrowed(x)) if std::ptr::eq(x, text.as_str())));
        prop_assert!(c.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let p = keyed();
        let mut c = MaskedCounts::new();
        for ty in [ValueType::Bytes, ValueType::Text, ValueType::Json, ValueType::Integer, ValueType::Uuid] {
            let _ = p.mask_value(&Field::Unknown, ty, Cow::Borrowed(&data), &mut c);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[0-9 \\-.+@:a-fA-F_\u{200B}\u{FF10}-\u{FF19}{}\\[\\]\",]{0,200}") {
        let p = keyed();
        let mut c = MaskedCounts::new();
        let _ = p.mask_text(&Field::Unknown, Cow::Borrowed(&text), &mut c);
        if let Ok(Some(j)) = p.mask_json(&Field::Unknown, Cow::Borrowed(&text), &mut c) {
            prop_assert!(serde_json::from_str::<serde_json::Value>(&j).is_ok(), "{j:?}");
        }
    }

    #[test]
    fn a_card_joined_to_another_number_never_survives(
        digits in card(),
        prefix in prop_oneof![
            (100u32..900, 10u32..99).prop_map(|(a, g)| format!("{a:03}-{g:02}-")),
            Just("+1 ".to_owned()),
            Just("(415) 555-".to_owned()),
        ],
        before in filler(),
        after in filler(),
    ) {
        // 16 digits in groups of four, the first group also the end of the other number.
        prop_assume!(digits.len() == 16);
        let card = as_ascii(&digits);
        let grouped: Vec<&str> = (0..4).map(|i| &card[i * 4..i * 4 + 4]).collect();
        let text = format!("{before}{prefix}{}{after}", grouped.join(" "));
        // Strategies that keep digits: the last four of an SSN or phone must not be the
        // card's first group with the rest of the card after it.
        let p = Profile::builder("k")
            .strategy("ssn", Mask::keep_last(4))
            .strategy("phone", Mask::keep_last(4))
            .strategy("card_number", Mask::keep_last(4))
            .build()
            .unwrap();
        let (out, _) = mask(&p, &text);
        let shown = digits_of(&out);
        prop_assert!(!shown.contains(&card[..12]), "{text:?} -> {out:?}");
    }

    #[test]
    fn text_and_byte_entry_points_agree(
        text in "[0-9 \\-.+@:a-fA-F_xyz\u{200B}\u{FF10}-\u{FF19}{}\\[\\]\",]{0,120}",
        card in card(),
        ruled in any::<bool>(),
    ) {
        let text = format!("{text} {}", as_ascii(&card));
        let p = Profile::builder("r")
            .key(MaskKey::new([3; 32]))
            .strategy("card_number", Mask::FormatPreserving)
            .strategy("email", Mask::Tokenize)
            .rule(FieldRule::new(Selector::column("t.secret"), Mask::keep_last(2)))
            .build()
            .unwrap();
        let column = if ruled { "secret" } else { "other" };
        let rule = p.rule_for(&Field::Column { table: Some("t"), column });
        for ty in [ValueType::Text, ValueType::Bytes, ValueType::Json, ValueType::Integer, ValueType::Uuid] {
            let (mut a, mut b) = (MaskedCounts::new(), MaskedCounts::new());
            let bytes_ty = if ty == ValueType::Bytes { ValueType::Text } else { ty };
            let via_bytes = p.mask_value_with_rule(rule, bytes_ty, Cow::Borrowed(text.as_bytes()), &mut a);
            let via_str = p.mask_str_with_rule(rule, ty, Cow::Borrowed(&text), &mut b);
            match (via_bytes, via_str) {
                (Ok(x), Ok(y)) => {
                    prop_assert_eq!(x.as_deref(), y.as_deref().map(str::as_bytes), "{:?}", ty);
                    // Unchanged text stays borrowed on both paths.
                    prop_assert_eq!(matches!(x, Some(Cow::Borrowed(_))), matches!(y, Some(Cow::Borrowed(_))));
                    prop_assert_eq!(a, b);
                }
                (Err(_), Err(_)) => {}
                (x, y) => prop_assert!(false, "{ty:?}: {x:?} vs {y:?}"),
            }
        }
    }

    #[test]
    fn masked_json_stays_valid_json(v in json_value(), card in card()) {
        let card = as_ascii(&card);
        let doc = serde_json::json!({ "data": v, "card": card, "nested": serde_json::to_string(&serde_json::json!({"c": card})).unwrap() });
        let text = serde_json::to_string_pretty(&doc).unwrap();
        let p = keyed();
        let mut c = MaskedCounts::new();
        let out = p.mask_json(&Field::Unknown, Cow::Borrowed(&text), &mut c).unwrap().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        prop_assert!(!out.contains(&card));
        prop_assert_ne!(&parsed["card"], &doc["card"]);
        prop_assert!(c.0.get("card_number").is_some_and(|n| *n >= 2));
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "[a-z \u{e9}\"\\\\/\n\u{1F600}]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
