//! Whatever the input, lexing, splitting and classifying never panic, and what they return
//! is consistent with the input.

use proptest::prelude::*;
use wirewarden_sql::{Classifier, CommandClass, LexOptions, split, tokenize};

/// Pieces of SQL that exercise every lexer state, glued in random order with random text.
fn fragment() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "SELECT ",
        "select",
        " FROM ",
        "t",
        ";",
        "'",
        "''",
        "E'",
        "\\",
        "\\'",
        "\"",
        "\"\"",
        "$$",
        "$a$",
        "$1",
        "$",
        "/*",
        "*/",
        "--",
        "\n",
        "\r",
        " ",
        "(",
        ")",
        "[",
        "]",
        "U&\"",
        "U&'",
        " UESCAPE '!'",
        "B'",
        "X'",
        "N'",
        "1",
        "1.5e",
        ".",
        "..",
        "::",
        "+-",
        "@-",
        "<=>",
        "é",
        "WITH x AS (",
        "DELETE FROM t RETURNING *",
        "INSERT INTO u VALUES (1)",
        "BEGIN ATOMIC",
        "END",
        "CASE",
        "CREATE FUNCTION f() ",
        "pg_read_file(",
        "COPY t TO PROGRAM 'x'",
        "EXPLAIN ANALYZE ",
        "SET ROLE x",
        "PREPARE p AS ",
        "EXECUTE p",
        ",",
    ])
    .prop_map(str::to_owned);
    prop_oneof![4 => pieces, 1 => any::<String>()]
}

fn sql_like() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

fn check_tokens(sql: &str, opts: &LexOptions) {
    if let Ok(tokens) = tokenize(sql, opts) {
        let mut prev_end = 0;
        for t in &tokens {
            assert!(t.offset >= prev_end, "tokens are ordered");
            assert_eq!(sql.get(t.offset..t.end()), Some(t.text));
            assert!(!t.text.is_empty());
            prev_end = t.end();
        }
    }
}

fn check_split(sql: &str, opts: &LexOptions) {
    if let Ok(ranges) = split(sql, opts) {
        let mut prev_end = 0;
        for r in &ranges {
            assert!(r.start < r.end, "statements are not empty");
            assert!(r.start >= prev_end, "ranges are ordered and do not overlap");
            assert!(r.end <= sql.len());
            assert!(
                sql.get(r.clone()).is_some(),
                "ranges fall on character boundaries"
            );
            prev_end = r.end;
        }
    }
}

fn check_classify(sql: &str) {
    let cl = Classifier::new();
    let a = cl.classify(sql);
    let ranges = split(sql, &LexOptions::default());
    match ranges {
        Ok(r) => {
            assert!(a.error.is_none());
            assert_eq!(
                a.statements
                    .iter()
                    .map(|s| s.range.clone())
                    .collect::<Vec<_>>(),
                r
            );
        }
        Err(e) => {
            assert_eq!(a.error, Some(e));
            assert_eq!(a.class(), CommandClass::Unknown);
        }
    }
    let cmd = a.to_command(sql);
    assert_eq!(cmd.class, a.class());
    assert!(!cmd.verb.is_empty());
    for s in &a.statements {
        assert!(!s.to_command(sql).verb.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sql_like_input_never_panics(sql in sql_like()) {
        let off = LexOptions { standard_conforming_strings: false, ..LexOptions::default() };
        check_tokens(&sql, &LexOptions::default());
        check_tokens(&sql, &off);
        check_split(&sql, &LexOptions::default());
        check_split(&sql, &off);
        check_classify(&sql);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let a = Classifier::new().classify_bytes(&bytes);
        if std::str::from_utf8(&bytes).is_err() {
            prop_assert_eq!(a.class(), CommandClass::Unknown);
        }
    }

    #[test]
    fn an_uncertain_setting_never_lowers_the_class(sql in sql_like()) {
        let mut cl = Classifier::new();
        let sure = cl.classify(&sql).class();
        cl.record(&cl.classify("SET standard_conforming_strings = off"));
        prop_assert!(cl.classify(&sql).class() >= sure);
    }
}

/// Removes every occurrence of the patterns, including ones that removal creates.
fn strip(s: &str, pats: &[&str]) -> String {
    let mut s = s.to_owned();
    while let Some(p) = pats.iter().find(|p| s.contains(**p)) {
        s = s.replace(p, "");
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a string, a dollar quote, a quoted identifier or a comment holds, it stays
    /// inside: one statement, classified by what is outside.
    #[test]
    fn quoted_text_never_leaks(payload in sql_like()) {
        let cl = Classifier::new();
        let literal = format!("SELECT '{}'", payload.replace('\'', "''"));
        let dollar = format!("SELECT $q${}$q$", strip(&payload, &["$q$"]));
        let ident = format!("SELECT 1 AS \"{}x\"", payload.replace('"', "\"\""));
        let comment = format!("SELECT 1 /* {} */", strip(&payload, &["/*", "*/"]));
        for sql in [literal, dollar, ident, comment] {
            if sql.contains('\0') {
                continue;
            }
            let a = cl.classify(&sql);
            prop_assert!(a.error.is_none(), "{:?}: {:?}", sql, a.error);
            prop_assert_eq!(a.statements.len(), 1, "{:?}", sql);
            prop_assert_eq!(a.class(), CommandClass::Read, "{:?}", sql);
        }
    }
}
