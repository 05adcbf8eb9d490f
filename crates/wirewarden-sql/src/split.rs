//! Statement splitting on top-level `;`.
//!
//! The server parses a whole simple-query string and runs its statements one by one; a `;`
//! ends a statement unless it sits inside a string, a comment, a dollar quote (all already one
//! token), parentheses or brackets, or the `BEGIN ATOMIC … END` body of a SQL-standard
//! function or procedure. The last case follows psql's rule: inside a statement that starts
//! `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, `BEGIN` opens a block, `CASE` opens one when
//! already inside a block, and `END` closes one.

use std::ops::Range;

use crate::lexer::{Token, TokenKind};
use crate::{LexOptions, Result, tokenize};

/// Splits `sql` into statements and returns each one's byte range, from its first token to
/// the end of its last one (leading comments and the `;` excluded). Empty statements are
/// skipped.
///
/// # Errors
/// The lexer's error when `sql` cannot be lexed.
pub fn split(sql: &str, opts: &LexOptions) -> Result<Vec<Range<usize>>> {
    let tokens = tokenize(sql, opts)?;
    Ok(split_tokens(&tokens)
        .into_iter()
        .filter_map(|r| {
            let first = tokens.get(r.start)?;
            let last = tokens.get(r.end.checked_sub(1)?)?;
            Some(first.offset..last.end())
        })
        .collect())
}

/// Splits a token list into statements, as ranges of token indexes (never empty, `;` not
/// included).
pub(crate) fn split_tokens(tokens: &[Token<'_>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut paren: usize = 0;
    let mut begin_depth: usize = 0;
    // The first words of the statement, to spot CREATE [OR REPLACE] FUNCTION|PROCEDURE.
    let mut head: [u8; 4] = [0; 4];
    let mut words: usize = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            TokenKind::LParen | TokenKind::LBracket => paren = paren.saturating_add(1),
            TokenKind::RParen | TokenKind::RBracket => paren = paren.saturating_sub(1),
            TokenKind::Semicolon if paren == 0 && begin_depth == 0 => {
                if i > start {
                    out.push(start..i);
                }
                start = i.saturating_add(1);
                head = [0; 4];
                words = 0;
            }
            TokenKind::Ident => {
                if let Some(slot) = head.get_mut(words) {
                    *slot = match t.text.to_ascii_lowercase().as_str() {
                        "create" => b'c',
                        "or" => b'o',
                        "replace" => b'r',
                        "function" => b'f',
                        "procedure" => b'p',
                        _ => b'?',
                    };
                }
                words = words.saturating_add(1);
                let routine = matches!(
                    head,
                    [b'c', b'f' | b'p', ..] | [b'c', b'o', b'r', b'f' | b'p']
                );
                if routine && paren == 0 {
                    if t.is_kw("begin") || (t.is_kw("case") && begin_depth > 0) {
                        begin_depth = begin_depth.saturating_add(1);
                    } else if t.is_kw("end") {
                        begin_depth = begin_depth.saturating_sub(1);
                    }
                }
            }
            _ => {
                words = words.saturating_add(1);
            }
        }
    }
    if tokens.len() > start {
        out.push(start..tokens.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(sql: &str) -> Vec<&str> {
        split(sql, &LexOptions::default())
            .unwrap()
            .into_iter()
            .map(|r| &sql[r])
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(parts("SELECT 1; SELECT 2"), vec!["SELECT 1", "SELECT 2"]);
        assert_eq!(parts(";; SELECT 1 ;;"), vec!["SELECT 1"]);
        assert_eq!(
            parts("SELECT ';'; SELECT \";\""),
            vec!["SELECT ';'", "SELECT \";\""]
        );
        assert_eq!(
            parts("SELECT $$;$$ -- ;\n; /* ; */ SELECT 2"),
            vec!["SELECT $$;$$", "SELECT 2"]
        );
        assert_eq!(
            parts("SELECT (1;2); SELECT ARRAY[1;2]"),
            vec!["SELECT (1;2)", "SELECT ARRAY[1;2]"]
        );
        assert_eq!(
            parts(r"SELECT E'\';'; SELECT 2"),
            vec![r"SELECT E'\';'", "SELECT 2"]
        );
        assert!(parts("  -- nothing\n /* here */ ").is_empty());
    }

    #[test]
    fn begin_atomic_bodies_stay_whole() {
        let f = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END";
        assert_eq!(parts(&format!("{f}; SELECT 3")), vec![f, "SELECT 3"]);
        let p = "create procedure p() begin atomic insert into t values (1); end";
        assert_eq!(parts(&format!("{p};select 1")), vec![p, "select 1"]);
        // BEGIN outside a routine definition is a transaction start.
        assert_eq!(
            parts("BEGIN; SELECT 1; END"),
            vec!["BEGIN", "SELECT 1", "END"]
        );
    }
}
