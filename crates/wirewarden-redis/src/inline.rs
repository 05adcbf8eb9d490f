//! Inline commands: a line of text instead of a RESP array (`SET k "a b"\r\n`), split with
//! the server's own rules (`sdssplitargs` in `sds.c`, framing from `processInlineBuffer`):
//!
//! - blanks (C `isspace`: space, `\t`, `\n`, `\v`, `\f`, `\r`) separate arguments; an unquoted
//!   argument ends at space, `\t`, `\n`, `\r` or NUL;
//! - double quotes: `\xHH` (two hex digits) is a byte, `\n \r \t \b \a` the control
//!   characters, a backslash before anything else is that character;
//! - single quotes: only `\'` is an escape; everything else is literal;
//! - a quote may open in the middle of an argument (`a"b c"` is `ab c`), and a closing quote
//!   must be followed by a blank or the end of the line, otherwise the request is an error;
//! - an unterminated quote is an error;
//! - the line ends at `\n`, and a `\r` just before it is dropped; a NUL ends the string the
//!   splitter sees, exactly as in C.

use bytes::Bytes;

use crate::error::{Error, Result};

fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits one inline command line (without its line terminator) into arguments.
///
/// Arguments without quotes or escapes are zero-copy slices of `line`.
///
/// # Errors
/// [`Error::UnbalancedQuotes`] for an unterminated quote or a closing quote followed by
/// something other than a blank.
pub fn split_args(line: &Bytes) -> Result<Vec<Bytes>> {
    // The C code sees a NUL-terminated string.
    let end = memchr::memchr(0, line).unwrap_or(line.len());
    let s = line.get(..end).unwrap_or_default();
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0usize;
    loop {
        while p < s.len() && c_isspace(at(p)) {
            p += 1;
        }
        if p >= s.len() {
            return Ok(args);
        }
        let token_start = p;
        let mut owned: Option<Vec<u8>> = None;
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = at(p);
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && let (Some(h), Some(l)) = (hex(at(p + 2)), hex(at(p + 3)))
                {
                    owned.get_or_insert_with(Vec::new).push(h * 16 + l);
                    p += 4;
                    continue;
                }
                if c == b'\\' && at(p + 1) != 0 {
                    let e = match at(p + 1) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    };
                    owned.get_or_insert_with(Vec::new).push(e);
                    p += 2;
                } else if c == b'"' {
                    if at(p + 1) != 0 && !c_isspace(at(p + 1)) {
                        return Err(Error::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(Error::UnbalancedQuotes);
                } else {
                    owned.get_or_insert_with(Vec::new).push(c);
                    p += 1;
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    owned.get_or_insert_with(Vec::new).push(b'\'');
                    p += 2;
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !c_isspace(at(p + 1)) {
                        return Err(Error::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(Error::UnbalancedQuotes);
                } else {
                    owned.get_or_insert_with(Vec::new).push(c);
                    p += 1;
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        // The C loop steps past the terminator unless it is the NUL.
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' | b'\'' => {
                        // Switching to quoted mode: what came before is copied once.
                        let buf = owned.get_or_insert_with(Vec::new);
                        if buf.is_empty() {
                            buf.extend_from_slice(s.get(token_start..p).unwrap_or_default());
                        }
                        if c == b'"' {
                            in_dq = true;
                        } else {
                            in_sq = true;
                        }
                        p += 1;
                    }
                    _ => {
                        if let Some(buf) = owned.as_mut() {
                            buf.push(c);
                        }
                        p += 1;
                    }
                }
            }
        }
        let arg = match owned {
            Some(buf) => Bytes::from(buf),
            None => {
                // Plain token: the bytes up to (not including) its terminator.
                let stop = s
                    .get(token_start..)
                    .and_then(|t| {
                        t.iter()
                            .position(|&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
                    })
                    .map_or(s.len(), |i| token_start + i);
                line.slice(token_start..stop)
            }
        };
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &[u8]) -> Result<Vec<Vec<u8>>> {
        split_args(&Bytes::copy_from_slice(s)).map(|v| v.into_iter().map(|b| b.to_vec()).collect())
    }

    fn ok(s: &[u8], want: &[&[u8]]) {
        let got = split(s).unwrap();
        assert_eq!(
            got,
            want.iter().map(|w| w.to_vec()).collect::<Vec<_>>(),
            "{:?}",
            String::from_utf8_lossy(s)
        );
    }

    #[test]
    fn splits_like_sdssplitargs() {
        ok(b"SET k v", &[b"SET", b"k", b"v"]);
        ok(b"  PING  ", &[b"PING"]);
        ok(b"", &[]);
        ok(b"\x0b\x0c ", &[]);
        ok(b"a\x0bb", &[b"a\x0bb"]);
        ok(b"SET k \"a b\"", &[b"SET", b"k", b"a b"]);
        ok(b"SET k \"\\x41\\x4a\\x4\"", &[b"SET", b"k", b"AJx4"]);
        ok(b"\"\\n\\r\\t\\b\\a\\q\\\\\\\"\"", &[b"\n\r\t\x08\x07q\\\""]);
        ok(b"'it\\'s' '\\n'", &[b"it's", b"\\n"]);
    }

    #[test]
    fn quote_rules() {
        assert_eq!(
            split(b"a\"b c\" d").unwrap(),
            vec![b"ab c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(split(b"\"ab\"c"), Err(Error::UnbalancedQuotes));
        assert_eq!(split(b"'ab'c"), Err(Error::UnbalancedQuotes));
        assert_eq!(split(b"\"ab"), Err(Error::UnbalancedQuotes));
        assert_eq!(split(b"'ab"), Err(Error::UnbalancedQuotes));
        assert_eq!(split(b"\"ab\\"), Err(Error::UnbalancedQuotes));
        assert_eq!(split(b"\"\"").unwrap(), vec![Vec::<u8>::new()]);
        assert_eq!(split(b"''x'").unwrap_err(), Error::UnbalancedQuotes);
        // A NUL ends the string the C splitter sees.
        assert_eq!(
            split(b"GET a\0b").unwrap(),
            vec![b"GET".to_vec(), b"a".to_vec()]
        );
        assert_eq!(split(b"\"a\0\"").unwrap_err(), Error::UnbalancedQuotes);
    }

    #[test]
    fn plain_arguments_are_not_copied() {
        let line = Bytes::from_static(b"GET somekey");
        let args = split_args(&line).unwrap();
        assert_eq!(args[1].as_ptr(), line[4..].as_ptr());
    }
}
