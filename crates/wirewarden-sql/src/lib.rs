#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;

pub use error::{Error, Result};
pub use wirewarden_core::CommandClass;

pub mod lexer;

pub use lexer::{LexOptions, Limits, StringKind, Token, TokenKind, tokenize};
mod split;

pub use split::split;
mod classify;
mod tables;

pub use classify::{Analysis, Classifier, Prepared, PreparedEffect, Statement};

#[doc(hidden)]
pub mod fuzzing {
    //! Entry point for the cargo-fuzz target `sql_classify`. Not part of the public API.

    use crate::{Classifier, CommandClass, LexOptions, split, tokenize};

    /// Lexes, splits and classifies `data` under both `standard_conforming_strings` settings
    /// and with the setting unknown, and checks what must hold whatever the input.
    pub fn classify(data: &[u8]) {
        let mut cl = Classifier::new();
        let a = cl.classify_bytes(data);
        let Ok(sql) = std::str::from_utf8(data) else {
            assert_eq!(a.class(), CommandClass::Unknown);
            return;
        };
        for scs in [true, false] {
            let opts = LexOptions {
                standard_conforming_strings: scs,
                ..LexOptions::default()
            };
            if let Ok(tokens) = tokenize(sql, &opts) {
                let mut end = 0;
                for t in &tokens {
                    assert!(t.offset >= end && !t.text.is_empty());
                    assert_eq!(sql.get(t.offset..t.end()), Some(t.text));
                    end = t.end();
                }
            }
            match split(sql, &opts) {
                Ok(ranges) => {
                    let mut end = 0;
                    for r in &ranges {
                        assert!(r.start >= end && r.start < r.end && sql.get(r.clone()).is_some());
                        end = r.end;
                    }
                    if scs {
                        let got: Vec<_> = a.statements.iter().map(|s| s.range.clone()).collect();
                        assert_eq!(got, ranges);
                    }
                }
                Err(e) => {
                    if scs {
                        assert_eq!(a.error.as_ref(), Some(&e));
                        assert_eq!(a.class(), CommandClass::Unknown);
                    }
                }
            }
        }
        let cmd = a.to_command(sql);
        assert_eq!(cmd.class, a.class());
        assert!(!cmd.verb.is_empty());
        for s in &a.statements {
            assert!(!s.to_command(sql).verb.is_empty());
            assert!(s.error.is_some() == a.error.is_some());
        }
        // Recording effects and re-classifying with the setting unknown never lowers a class.
        cl.record(&a);
        cl.record(&cl.classify("SET standard_conforming_strings = off"));
        let b = cl.classify(sql);
        if a.statements.iter().all(|s| s.prepared.is_none()) {
            assert!(b.class() >= a.class() || a.statements.iter().any(|s| s.verb == "EXECUTE"));
        }
    }
}
