//! A real PostgreSQL 15 as the oracle for "the masked value is valid for its type": rows read
//! from the server in text format are masked column by column, then written back into a table
//! of the same column types. The server rejects anything that is not a valid bigint, uuid,
//! date, timestamp, numeric(12,2), jsonb or boolean.

use std::borrow::Cow;

use wirewarden_mask::{
    Field, FieldRule, MaskKey, MaskedCounts, Profile, Selector, Strategy, ValueType,
};
use wirewarden_testkit::Postgres;

const SEED: &str = r#"
CREATE TABLE people (
    id bigint, card_bigint bigint, card_text text, ssn text, uid uuid, born date,
    seen timestamp, amount numeric(12,2), notes jsonb, flag boolean
);
INSERT INTO people VALUES
 (1, 4111111111111111, 'card 4111-1111-1111-1111 ok', '123-45-6789',
  '0b7f8a52-8c3e-4a0e-9a55-3bb2b8c0e0a1', '1980-02-29', '2024-05-01 12:30:00', 9999999999.99,
  '{"ssn": "123-45-6789", "mail": "a@b.io", "n": [4111111111111111], "s": "\u0034111111111111111"}',
  true),
 (2, 5555555555554444, 'mail bob@example.com, call +1 415 555 2671', '234-56-7890',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '2000-01-01', '1999-12-31 23:59:59', 0.01,
  '[{"password": "x"}, "10.0.0.1"]', false),
 (3, 42, 'nothing to see', '345-67-8901',
  '00000000-0000-0000-0000-000000000000', '1970-01-01', '1970-01-01 00:00:00', -123.45,
  '{}', null);
"#;

const COLUMNS: [(&str, ValueType, &str); 10] = [
    ("id", ValueType::Integer, "bigint"),
    ("card_bigint", ValueType::Integer, "bigint"),
    ("card_text", ValueType::Text, "text"),
    ("ssn", ValueType::Text, "text"),
    ("uid", ValueType::Uuid, "uuid"),
    ("born", ValueType::Date, "date"),
    ("seen", ValueType::Timestamp, "timestamp"),
    ("amount", ValueType::Numeric, "numeric(12,2)"),
    ("notes", ValueType::Json, "jsonb"),
    ("flag", ValueType::Boolean, "boolean"),
];

fn profile() -> Profile {
    Profile::builder("typed")
        .key(MaskKey::new([11; 32]))
        .strategy("card_number", Strategy::FormatPreserving)
        .strategy("email", Strategy::Tokenize)
        .rule(FieldRule::new(
            Selector::column("people.ssn"),
            Strategy::FormatPreserving,
        ))
        .rule(FieldRule::new(Selector::column("uid"), Strategy::Tokenize))
        .rule(FieldRule::new(Selector::column("born"), Strategy::Tokenize))
        .rule(FieldRule::new(Selector::column("seen"), Strategy::Hash))
        .rule(FieldRule::new(
            Selector::column("amount"),
            Strategy::FormatPreserving,
        ))
        .rule(FieldRule::new(Selector::column("flag"), Strategy::Tokenize))
        .rule(FieldRule::new(
            Selector::json_path("$..password").unwrap(),
            Strategy::redact(),
        ))
        .build()
        .unwrap()
}

/// `v` as an SQL literal of `ty` (dollar-quoted, so no escaping is needed).
fn literal(v: Option<&str>, ty: &str) -> String {
    match v {
        None => "NULL".to_owned(),
        Some(v) => {
            assert!(!v.contains("$m$"));
            format!("$m${v}$m$::{ty}")
        }
    }
}

#[test]
fn masked_values_stay_valid_for_their_postgres_types() {
    let pg = Postgres::builder()
        .seed_sql(SEED)
        .start()
        .expect("postgres starts");
    let cols: Vec<&str> = COLUMNS
        .iter()
        .map(|(c, _, ty)| if *ty == "jsonb" { "notes::text" } else { c })
        .collect();
    // One row per line; NULL as a marker psql prints for it.
    let out = pg
        .psql(&format!(
            "\\pset null '<NULL>'\n\\pset fieldsep '\\t'\nSELECT {} FROM people ORDER BY id;",
            cols.join(", ")
        ))
        .expect("select");
    let p = profile();
    let mut counts = MaskedCounts::new();
    let mut inserts = Vec::new();
    let mut masked_rows = Vec::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), COLUMNS.len(), "{line:?}");
        let mut lits = Vec::new();
        let mut row = Vec::new();
        for ((name, vt, ty), raw) in COLUMNS.iter().zip(&fields) {
            let value = (*raw != "<NULL>").then_some(*raw);
            let masked = match value {
                None => None,
                Some(v) => {
                    let field = Field::Column {
                        table: Some("people"),
                        column: name,
                    };
                    p.mask_value(&field, *vt, Cow::Borrowed(v.as_bytes()), &mut counts)
                        .unwrap_or_else(|e| panic!("{name} {v:?}: {e}"))
                        .map(|b| String::from_utf8(b.into_owned()).unwrap())
                }
            };
            lits.push(literal(masked.as_deref(), ty));
            row.push((value.map(str::to_owned), masked));
        }
        inserts.push(format!("({})", lits.join(", ")));
        masked_rows.push(row);
    }
    assert_eq!(masked_rows.len(), 3);
    // The server accepts every masked value as its column's type.
    pg.psql(&format!(
        "CREATE TABLE masked (LIKE people); INSERT INTO masked VALUES {};",
        inserts.join(", ")
    ))
    .expect("masked values are valid for their types");
    let stored = pg.psql("SELECT count(*) FROM masked").unwrap();
    assert_eq!(stored.trim(), "3");

    let (card0, card1) = (&masked_rows[0][1], &masked_rows[1][1]);
    // Cards in a bigint column: still digits of the same length, but not the card.
    for (orig, m) in [card0, card1] {
        let m = m.as_deref().unwrap();
        assert_eq!(m.len(), orig.as_deref().unwrap().len());
        assert_ne!(Some(m), orig.as_deref());
    }
    // A clean bigint is untouched.
    assert_eq!(masked_rows[2][1].1.as_deref(), Some("42"));
    // Nothing sensitive remains in text and JSON.
    let all: String = masked_rows
        .iter()
        .flat_map(|r| r.iter().filter_map(|(_, m)| m.clone()))
        .collect();
    for secret in [
        "4111111111111111",
        "4111-1111",
        "123-45-6789",
        "bob@example.com",
        "a@b.io",
        "10.0.0.1",
        "2671",
    ] {
        assert!(!all.contains(secret), "{secret} survived: {all}");
    }
    // Booleans under a rule become NULL; keyed uuids are deterministic per value.
    assert_eq!(masked_rows[0][9].1, None);
    assert_ne!(masked_rows[0][4].1, masked_rows[1][4].1);
    assert!(counts.0["card_number"] >= 4, "{counts:?}");
    assert_eq!(counts.0["column:people.ssn"], 3);
}
