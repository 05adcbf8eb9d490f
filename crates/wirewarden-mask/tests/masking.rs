//! End-to-end behaviour of profiles and the engine: content, field rules, types, JSON,
//! configuration, errors.

use std::borrow::Cow;

use wirewarden_core::{AuthMethod, Principal, Protocol, Target};
use wirewarden_mask::{
    CustomDetector, Detector, DetectorSet, Engine, Error, Field, FieldRule, Limits, MaskKey,
    MaskedCounts, Profile, Selection, Selector, Strategy, Validator, ValueType,
};

fn key() -> MaskKey {
    MaskKey::new([9; 32])
}

fn profile() -> Profile {
    Profile::builder("test")
        .key(key())
        .strategy("card_number", Strategy::keep_last(4))
        .strategy("email", Strategy::Tokenize)
        .strategy("ssn", Strategy::FormatPreserving)
        .rule(FieldRule::new(Selector::column("*ssn*"), Strategy::Null))
        .rule(FieldRule::new(
            Selector::column("customers.email"),
            Strategy::Tokenize,
        ))
        .rule(FieldRule::new(
            Selector::redis_key("session:*"),
            Strategy::redact(),
        ))
        .rule(FieldRule::new(
            Selector::header("x-api-key"),
            Strategy::redact(),
        ))
        .rule(FieldRule::new(
            Selector::json_path("$..password").unwrap(),
            Strategy::redact(),
        ))
        .rule(FieldRule::new(
            Selector::json_path("$.profile.dob").unwrap(),
            Strategy::Null,
        ))
        .build()
        .unwrap()
}

fn text(p: &Profile, s: &str) -> (Option<String>, MaskedCounts) {
    let mut c = MaskedCounts::new();
    let out = p
        .mask_text(&Field::Unknown, Cow::Borrowed(s), &mut c)
        .unwrap()
        .map(Cow::into_owned);
    (out, c)
}

fn json(p: &Profile, s: &str) -> String {
    let mut c = MaskedCounts::new();
    let out = p
        .mask_json(&Field::Unknown, Cow::Borrowed(s), &mut c)
        .unwrap()
        .unwrap()
        .into_owned();
    serde_json::from_str::<serde_json::Value>(&out).expect("masked JSON parses");
    out
}

#[test]
fn clean_values_are_borrowed_and_uncounted() {
    let p = profile();
    let mut c = MaskedCounts::new();
    let s = "Order 12 shipped on 2024-05-01 to Berlin; total 99.50 EUR.";
    let out = p
        .mask_text(&Field::Unknown, Cow::Borrowed(s), &mut c)
        .unwrap();
    assert!(matches!(out, Some(Cow::Borrowed(x)) if std::ptr::eq(x, s)));
    let owned = String::from("also clean");
    let ptr = owned.as_ptr();
    let out = p
        .mask_text(&Field::Unknown, Cow::Owned(owned), &mut c)
        .unwrap();
    assert!(matches!(out, Some(Cow::Owned(ref x)) if x.as_ptr() == ptr));
    let j = r#"{"a": [1, 2.5, true, null, "x"], "b": {"c": "d"}}"#;
    let out = p
        .mask_json(&Field::Unknown, Cow::Borrowed(j), &mut c)
        .unwrap();
    assert!(matches!(out, Some(Cow::Borrowed(x)) if std::ptr::eq(x, j)));
    let b: &[u8] = b"\xff\xfe binary 12";
    let out = p
        .mask_value(&Field::Unknown, ValueType::Bytes, Cow::Borrowed(b), &mut c)
        .unwrap();
    assert!(matches!(out, Some(Cow::Borrowed(x)) if std::ptr::eq(x, b)));
    assert!(c.is_empty());
}

#[test]
fn content_is_masked_with_each_entity_strategy() {
    let p = profile();
    let (out, c) = text(
        &p,
        "pay 4111-1111-1111-1111 mail Bob@Example.com ssn 123-45-6789 ip 10.1.2.3",
    );
    let out = out.unwrap();
    assert!(
        out.starts_with("pay ****-****-****-1111 mail tok_"),
        "{out}"
    );
    assert!(
        !out.contains("123-45-6789") && !out.contains("10.1.2.3"),
        "{out}"
    );
    assert!(out.ends_with("ip [REDACTED]"), "{out}");
    assert_eq!(c.0["card_number"], 1);
    assert_eq!(c.0["email"], 1);
    assert_eq!(c.0["ssn"], 1);
    assert_eq!(c.0["ip_address"], 1);
    // Format-preserving SSN: digits and dashes kept in place.
    let ssn = out.split("ssn ").nth(1).unwrap().get(..11).unwrap();
    assert!(
        ssn.chars().enumerate().all(|(i, c)| if i == 3 || i == 6 {
            c == '-'
        } else {
            c.is_ascii_digit()
        }),
        "{ssn}"
    );
    // Tokens are deterministic and case-insensitive for emails: joins still work.
    let (a, _) = text(&p, "bob@example.com");
    let (b, _) = text(&p, "BOB@EXAMPLE.COM");
    assert_eq!(a, b);
}

#[test]
fn unicode_look_alikes_are_masked() {
    let p = profile();
    for s in [
        "４１１１ １１１１ １１１１ １１１１",
        "4111\u{200B}1111\u{200B}1111\u{200B}1111",
        "4111\u{2060}1111\u{FEFF}1111\u{00AD}1111",
        "4\u{200C}1\u{200D}11 1111 1111 1111",
        "٤١١١-١١١١-١١١١-١١١١",
        "𝟒𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏",
        "4111\u{3000}1111\u{3000}1111\u{3000}1111",
    ] {
        let (out, c) = text(&p, s);
        assert_eq!(c.0.get("card_number"), Some(&1), "{s:?}");
        let out = out.unwrap();
        let digits: String = out.chars().filter(|c| c.is_numeric()).collect();
        assert_eq!(digits.chars().count(), 4, "{s:?} -> {out:?}");
    }
}

#[test]
fn field_rules_mask_whatever_the_content() {
    let p = profile();
    let mut c = MaskedCounts::new();
    let col = Field::Column {
        table: Some("people"),
        column: "ssn_last4",
    };
    let v = p
        .mask_value(
            &col,
            ValueType::Text,
            Cow::Borrowed(b"nothing sensitive"),
            &mut c,
        )
        .unwrap();
    assert_eq!(v, None);
    let email = Field::Column {
        table: Some("customers"),
        column: "email",
    };
    let v = p
        .mask_value(
            &email,
            ValueType::Text,
            Cow::Borrowed(b"not-an-email"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    assert!(v.starts_with(b"tok_"));
    let other = Field::Column {
        table: Some("orders"),
        column: "email",
    };
    let v = p
        .mask_value(
            &other,
            ValueType::Text,
            Cow::Borrowed(b"not-an-email"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    assert_eq!(&*v, b"not-an-email");
    let v = p
        .mask_value(
            &Field::RedisKey(b"session:abc"),
            ValueType::Bytes,
            Cow::Borrowed(b"\x00\x01"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    assert_eq!(&*v, b"[REDACTED]");
    let v = p
        .mask_value(
            &Field::RedisKey(b"cache:abc"),
            ValueType::Bytes,
            Cow::Borrowed(b"ok"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    assert_eq!(&*v, b"ok");
    let v = p
        .mask_value(
            &Field::Header("X-API-Key"),
            ValueType::Text,
            Cow::Borrowed(b"abc"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    assert_eq!(&*v, b"[REDACTED]");
    assert_eq!(c.0["column:*ssn*"], 1);
    assert_eq!(c.0["column:customers.email"], 1);
    assert_eq!(c.0["redis_key:session:*"], 1);
    assert_eq!(c.0["header:x-api-key"], 1);
}

#[test]
fn typed_values_stay_valid() {
    let p = Profile::builder("typed")
        .key(key())
        .strategy("card_number", Strategy::FormatPreserving)
        .rule(FieldRule::new(Selector::column("uid"), Strategy::Tokenize))
        .rule(FieldRule::new(Selector::column("born"), Strategy::Tokenize))
        .rule(FieldRule::new(Selector::column("flag"), Strategy::Tokenize))
        .rule(FieldRule::new(Selector::column("blob"), Strategy::redact()))
        .build()
        .unwrap();
    let mut c = MaskedCounts::new();
    let col = |name| Field::Column {
        table: None,
        column: name,
    };
    // A card stored in a bigint column: digits of the same length, never larger.
    let v = p
        .mask_value(
            &col("n"),
            ValueType::Integer,
            Cow::Borrowed(b"4111111111111111"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    let n: u64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
    assert!(n <= 4_111_111_111_111_111 && v.len() == 16);
    assert_ne!(&*v, b"4111111111111111");
    // A clean integer is untouched.
    let v = p
        .mask_value(&col("n"), ValueType::Integer, Cow::Borrowed(b"42"), &mut c)
        .unwrap()
        .unwrap();
    assert_eq!(&*v, b"42");
    let u = p
        .mask_value(
            &col("uid"),
            ValueType::Uuid,
            Cow::Borrowed(b"0b7f8a52-8c3e-4a0e-9a55-3bb2b8c0e0a1"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    let u = String::from_utf8(u.into_owned()).unwrap();
    assert_eq!(u.len(), 36);
    assert_eq!(u.matches('-').count(), 4);
    let d = p
        .mask_value(
            &col("born"),
            ValueType::Date,
            Cow::Borrowed(b"1970-01-01"),
            &mut c,
        )
        .unwrap()
        .unwrap();
    assert_eq!(d.len(), 10);
    assert_eq!(
        p.mask_value(
            &col("flag"),
            ValueType::Boolean,
            Cow::Borrowed(b"t"),
            &mut c
        )
        .unwrap(),
        None
    );
    let e = p.mask_value(
        &col("blob"),
        ValueType::Opaque,
        Cow::Borrowed(b"\x01"),
        &mut c,
    );
    assert!(matches!(e, Err(Error::Unrepresentable { .. })), "{e:?}");
    // An opaque value whose content holds an entity cannot be masked in place: refuse.
    let e = p.mask_value(
        &col("addr"),
        ValueType::Opaque,
        Cow::Borrowed(b"10.0.0.1"),
        &mut c,
    );
    assert!(matches!(e, Err(Error::Unrepresentable { .. })), "{e:?}");
}

#[test]
fn json_by_path_and_content() {
    let p = profile();
    let out = json(
        &p,
        r#"{"user": {"password": "hunter2", "name": "x"}, "profile": {"dob": "1980-01-01"}, "n": 1}"#,
    );
    assert_eq!(
        out,
        r#"{"user": {"password": "[REDACTED]", "name": "x"}, "profile": {"dob": null}, "n": 1}"#
    );
    // Escapes are decoded before matching.
    let out = json(
        &p,
        r#"{"c": "\u0034111 1111 1111 1111", "e": "bob\u0040example.com"}"#,
    );
    assert!(out.contains(r#""c": "**** **** **** 1111""#), "{out}");
    assert!(out.contains(r#""e": "tok_"#), "{out}");
    // A whole subtree under a rule.
    let out = json(&p, r#"[{"password": {"a": [1, "4111111111111111"]}}]"#);
    assert_eq!(out, r#"[{"password": "[REDACTED]"}]"#);
    // Numbers holding a card.
    let out = json(&p, r#"{"card": 4111111111111111, "qty": 3}"#);
    assert_eq!(out, r#"{"card": "************1111", "qty": 3}"#);
    // Member names are content too.
    let out = json(&p, r#"{"4111111111111111": 1}"#);
    assert_eq!(out, r#"{"************1111": 1}"#);
    // JSON inside a string is unpacked, masked, and packed again.
    let inner = r#"{"payload": "{\"password\": \"x\", \"card\": \"4111111111111111\"}"}"#;
    let out = json(&p, inner);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let payload: serde_json::Value = serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["password"], "[REDACTED]");
    assert_eq!(payload["card"], "************1111");
    // Key order, spacing and number spelling elsewhere are untouched.
    let out = json(&p, "{\"z\":1.50e+3,\"a\":\"4111111111111111\"}");
    assert_eq!(out, "{\"z\":1.50e+3,\"a\":\"************1111\"}");
}

#[test]
fn json_inside_text_values() {
    let p = profile();
    let (out, c) = text(&p, r#" {"password": "hunter2"} "#);
    assert_eq!(out.unwrap(), r#" {"password": "[REDACTED]"} "#);
    assert_eq!(c.0["json_path:$..password"], 1);
    // Text that only looks like JSON is scanned as text.
    let (out, _) = text(&p, "{not json 4111111111111111}");
    assert_eq!(out.unwrap(), "{not json ************1111}");
}

#[test]
fn what_cannot_be_processed_is_an_error() {
    let p = profile();
    let mut c = MaskedCounts::new();
    let e = p.mask_value(
        &Field::Unknown,
        ValueType::Text,
        Cow::Borrowed(b"ok \xff"),
        &mut c,
    );
    assert_eq!(e, Err(Error::InvalidUtf8 { offset: 3 }));
    let e = p.mask_json(&Field::Unknown, Cow::Borrowed("{\"a\": }"), &mut c);
    assert!(matches!(e, Err(Error::InvalidJson { .. })), "{e:?}");
    for bad in [
        "",
        "{",
        "[1,]",
        "{\"a\" 1}",
        "01",
        "1.",
        "\"\\x\"",
        "\"a\nb\"",
        "[1] x",
        "tru",
    ] {
        let e = p.mask_json(&Field::Unknown, Cow::Borrowed(bad), &mut c);
        assert!(
            matches!(e, Err(Error::InvalidJson { .. })),
            "{bad:?}: {e:?}"
        );
    }
    let deep = "[".repeat(100) + &"]".repeat(100);
    let e = p.mask_json(&Field::Unknown, Cow::Borrowed(&deep), &mut c);
    assert_eq!(e, Err(Error::JsonTooDeep { limit: 64 }));
    // JSON nested in strings beyond the limit.
    let mut nested = String::from("{\"a\": 1}");
    for _ in 0..6 {
        nested = format!("{{\"x\": {}}}", serde_json::to_string(&nested).unwrap());
    }
    let e = p.mask_json(&Field::Unknown, Cow::Borrowed(&nested), &mut c);
    assert!(matches!(e, Err(Error::JsonTooDeep { .. })), "{e:?}");
    let small = Profile::builder("s")
        .limits(Limits {
            max_value_len: 4,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let e = small.mask_text(&Field::Unknown, Cow::Borrowed("12345"), &mut c);
    assert_eq!(e, Err(Error::ValueTooLarge { len: 5, limit: 4 }));
    let huge = Limits {
        max_json_depth: 100_000,
        ..Limits::default()
    };
    assert!(Profile::builder("h").limits(huge).build().is_err());
}

#[test]
fn null_strategy_nulls_the_whole_value() {
    let p = Profile::builder("n")
        .strategy("ssn", Strategy::Null)
        .build()
        .unwrap();
    let (out, c) = text(&p, "ssn 123-45-6789");
    assert_eq!(out, None);
    assert_eq!(c.0["ssn"], 1);
    let mut c = MaskedCounts::new();
    let out = p
        .mask_json(
            &Field::Unknown,
            Cow::Borrowed(r#"{"s": "123-45-6789"}"#),
            &mut c,
        )
        .unwrap();
    assert_eq!(out.unwrap(), r#"{"s": null}"#);
}

#[test]
fn detector_selection_and_custom_detectors() {
    let p = Profile::builder("only-email")
        .detectors(DetectorSet::empty().with(Detector::Email))
        .custom(CustomDetector::pattern("employee_id", r"EMP-\d{6}").unwrap())
        .custom(CustomDetector::dictionary("codename", ["nightjar"]).unwrap())
        .custom(
            CustomDetector::pattern("acct", r"\d{4}-\d{4}")
                .unwrap()
                .with_validator(Validator::Luhn),
        )
        .build()
        .unwrap();
    let (out, c) = text(
        &p,
        "card 4111111111111111 by a@b.io for EMP-004211 on Nightjar, acct 4111-1113 not 4111-1114",
    );
    assert_eq!(
        out.unwrap(),
        "card 4111111111111111 by [REDACTED] for [REDACTED] on [REDACTED], acct [REDACTED] not 4111-1114"
    );
    assert_eq!(c.0.len(), 4);
    assert!(
        Profile::builder("x")
            .strategy("nope", Strategy::Null)
            .build()
            .is_err()
    );
    assert!(
        Profile::builder("x")
            .default_strategy(Strategy::Tokenize)
            .build()
            .is_err()
    );
}

fn principal(subject: &str, group: &str) -> Principal {
    Principal::new(
        subject,
        AuthMethod::StaticToken {
            token_id: "t".into(),
        },
    )
    .unwrap()
    .with_group(group)
}

#[test]
fn engine_selects_profiles_per_target_and_principal() {
    let e = Engine::builder()
        .key(key())
        .profile(Profile::builder("support").strategy("card_number", Strategy::keep_last(4)))
        .profile(Profile::builder("analytics").default_strategy(Strategy::Tokenize))
        .select(
            Selection::profile("support")
                .target("crm-*")
                .group("support"),
        )
        .select(
            Selection::profile("analytics")
                .protocol(Protocol::Redis)
                .subject("etl-*"),
        )
        .build()
        .unwrap();
    let crm = Target::new("crm-db", Protocol::Postgres).unwrap();
    let cache = Target::new("cache", Protocol::Redis).unwrap();
    assert_eq!(e.select(&crm, &principal("a", "support")).name(), "support");
    assert_eq!(e.select(&crm, &principal("a", "sales")).name(), "default");
    assert_eq!(
        e.select(&cache, &principal("etl-7", "x")).name(),
        "analytics"
    );
    assert_eq!(e.select(&cache, &principal("bob", "x")).name(), "default");
    assert_eq!(e.profile("support").unwrap().name(), "support");
    assert!(matches!(
        e.profile("nope"),
        Err(Error::UnknownProfile { .. })
    ));
    assert!(
        Engine::builder()
            .select(Selection::profile("ghost"))
            .build()
            .is_err()
    );
}

#[test]
fn engine_from_toml() {
    let cfg = format!(
        r#"
key = "{}"
default_profile = "strict"

[[profile]]
name = "strict"
default_strategy = "null"

[[profile]]
name = "support"
detectors = ["card_number", "ssn", "email"]
strategies = {{ card_number = {{ kind = "partial", keep_last = 4 }}, email = "tokenize" }}
rules = [
  {{ column = "*ssn*", strategy = "null" }},
  {{ json_path = "$..password", entity = "password" }},
  {{ header = "authorization" }},
  {{ redis_key = "session:*", strategy = "hash" }},
]
custom = [
  {{ name = "employee_id", pattern = 'EMP-\d{{6}}' }},
  {{ name = "codename", dictionary = ["nightjar"] }},
  {{ name = "acct", pattern = '\d{{4}}-\d{{4}}', validator = "luhn" }},
]

[[select]]
profile = "support"
targets = ["crm-*"]
groups = ["support"]
"#,
        "ab".repeat(32)
    );
    let e = Engine::from_toml(&cfg).unwrap();
    let crm = Target::new("crm-db", Protocol::Postgres).unwrap();
    let p = e.select(&crm, &principal("a", "support"));
    assert_eq!(p.name(), "support");
    let (out, _) = text(p, "4111 1111 1111 1111, 10.0.0.1, EMP-123456");
    assert_eq!(out.unwrap(), "**** **** **** 1111, 10.0.0.1, [REDACTED]");
    let mut c = MaskedCounts::new();
    let out = p
        .mask_json(
            &Field::Unknown,
            Cow::Borrowed(r#"{"password":"x"}"#),
            &mut c,
        )
        .unwrap();
    assert_eq!(out.unwrap(), r#"{"password":"[REDACTED]"}"#);
    assert_eq!(c.0["password"], 1);
    let strict = e.select(&crm, &principal("a", "sales"));
    assert_eq!(strict.name(), "strict");
    assert_eq!(text(strict, "ip 10.0.0.1").0, None);

    for bad in [
        "key = \"xyz\"",
        "[[profile]]\nname = \"a\"\ndetectors = [\"nope\"]",
        "[[profile]]\nname = \"a\"\nrules = [{ column = \"x\", header = \"y\" }]",
        "[[profile]]\nname = \"a\"\nrules = [{ json_path = \"x\" }]",
        "[[profile]]\nname = \"a\"\ncustom = [{ name = \"c\" }]",
        "[[profile]]\nname = \"a\"\ndefault_strategy = \"tokenize\"",
        "[[profile]]\nname = \"a\"\n[[profile]]\nname = \"a\"",
        "default_profile = \"ghost\"",
        "unknown = 1",
        "key_env = \"WIREWARDEN_MASK_TEST_KEY_THAT_IS_NOT_SET\"",
    ] {
        assert!(Engine::from_toml(bad).is_err(), "{bad}");
    }
}

#[test]
fn detection_without_masking() {
    let p = profile();
    let text = "a 4111 1111 1111 1111 b bob@example.com";
    let found = p.detect(text.as_bytes());
    assert_eq!(found, vec![(2..21, "card_number"), (24..39, "email")]);
    assert!(p.detect(b"nothing").is_empty());
}

#[test]
fn secrets_in_headers_and_bodies() {
    let p = profile();
    let (out, c) = text(
        &p,
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\nX-Key: AKIAIOSFODNN7EXAMPLE\n\
         token=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    );
    let out = out.unwrap();
    assert!(
        !out.contains("eyJ") && !out.contains("AKIA") && !out.contains("ghp_"),
        "{out}"
    );
    assert_eq!(c.0.len(), 3, "{c:?}");
}
