//! The method override a JSON body carries: a `_method` member of the top-level object.
//!
//! Laravel reads a JSON body's top-level object where Symfony's `Request::getMethod` looks for
//! `_method` (with `httpMethodParameterOverride`), and Express `method-override` with a
//! `req.body._method` getter reads the object `body-parser` made of it, so
//! `POST /customers/1` with `{"_method":"DELETE"}` would be decided as a `POST` and carried
//! out as a `DELETE`. [`JsonScanner`] reads a request body as it streams, without copying
//! it, and stops at the first top-level key that names the override; the caller
//! ([`crate::inspect`]) treats it as it treats a form field ([`super::form`]).
//!
//! Keys are read with their JSON escapes decoded (`\u005fmethod`, `\/`, and `\q` as `q`, as a
//! lenient parser reads it), with no percent-decoding, and matched by the form scanner's
//! [`NameMatcher`]: so ASCII case, leading spaces, `.method`, `_method[` and
//! `_method_override` are refused too, more than the servers read, which only costs a key
//! nobody uses. A `\u` escape that stops before its fourth hex digit makes the key no match,
//! and the byte that stopped it is read as string content (a `"` ends the string), where
//! `JSON.parse` also sees the string end.
//!
//! Only depth-1 keys of an object count; values, nested objects and arrays are skipped.
//! What is not valid JSON is read on, never refused for itself (the upstream answers it), in
//! a way that lets no invalid prefix hide a key a lenient parser would find: brackets of
//! either kind are counted without checking that they pair, a closing bracket too many is
//! ignored, every object that opens at depth 0 is a top-level object (after a garbage prefix,
//! an XSSI guard such as `)]}'`, or another value), a string in key position after a value
//! with no comma is a key, and an unquoted key (`{_method: "DELETE"}`) is a key. Single
//! quotes and comments (JSON5) are not read as such.
//!
//! Which bodies are JSON ([`JsonScanner::for_request`]): those whose `Content-Type` contains
//! `/json` or `+json` anywhere, in any case, as Laravel's `isJson()` decides. Bodies this
//! byte-wise reading would not see as the server does are refused: a content coding
//! (`body-parser` inflates one), a charset that is not ASCII-compatible (`body-parser`
//! decodes UTF-16), and a body that begins like UTF-16 or UTF-32 (a NUL byte in its first
//! four bytes, or a UTF-16 byte order mark, as RFC 4627 and Python's `json` detect them).

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::form::{NameMatcher, is_ascii_compatible};
use crate::Rejection;

/// Most bytes of a top-level key left undecided (`"_method` and a run of spaces, say): what
/// the caller holds back stays bounded.
pub const MAX_KEY: usize = 16 * 1024;

/// The refusal for a top-level key that would override the method.
fn key_refused() -> Rejection {
    Rejection::new(
        StatusCode::BAD_REQUEST,
        "method_override",
        "JSON member _method would make the upstream act on another method than the one decided on",
    )
}

fn unsupported_json(message: impl Into<String>) -> Rejection {
    Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_json",
        message,
    )
}

/// Where the scanner is, lexically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between tokens.
    Between,
    /// In a bare token: a number, a literal, garbage or an unquoted key.
    Bare,
    /// In a string.
    Str,
    /// In a string, after a backslash.
    Escape,
    /// In a string, after `\u` and `n` hex digits making `acc`.
    Unicode { n: u8, acc: u32 },
}

/// What comes next at depth 1 of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Key,
    Value,
}

/// The top-level key being read.
#[derive(Debug, Clone, Copy)]
struct Key {
    name: NameMatcher,
    /// Where it started (its opening quote), in stream offsets.
    start: u64,
}

/// Scans a request body that a server would read as JSON for a top-level `_method` key.
#[derive(Debug, Clone)]
pub struct JsonScanner {
    /// Bytes fed so far.
    offset: u64,
    /// Open brackets, of either kind.
    depth: u32,
    /// Whether the bracket that opened depth 1 was `{`.
    top_object: bool,
    slot: Slot,
    lex: Lex,
    /// The top-level key being read, while it is undecided.
    key: Option<Key>,
    /// The body's first byte, for a byte order mark.
    first: u8,
}

impl JsonScanner {
    /// The scanner for a request with these headers, or `None` when a server would not read
    /// its body as JSON.
    ///
    /// # Errors
    /// `415 unsupported_json` for a JSON body with a content coding or a charset that is not
    /// ASCII-compatible.
    pub fn for_request(headers: &HeaderMap) -> Result<Option<Self>, Rejection> {
        let mut json = false;
        for v in headers.get_all(header::CONTENT_TYPE) {
            let lower = v.as_bytes().to_ascii_lowercase();
            if memchr::memmem::find(&lower, b"/json").is_none()
                && memchr::memmem::find(&lower, b"+json").is_none()
            {
                continue;
            }
            json = true;
            let text = String::from_utf8_lossy(&lower);
            for p in text.split(';').skip(1) {
                let Some((k, c)) = p.split_once('=') else {
                    continue;
                };
                let c = c.trim();
                let c = c
                    .strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'))
                    .unwrap_or(c);
                if matches!(k.trim(), "charset" | "charset*") && !is_ascii_compatible(c) {
                    return Err(unsupported_json(
                        "a JSON body in a charset that is not ASCII-compatible cannot be checked for a method override",
                    ));
                }
            }
        }
        if !json {
            return Ok(None);
        }
        let coded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
            })
        });
        if coded {
            return Err(unsupported_json(
                "a JSON body with a content coding cannot be checked for a method override",
            ));
        }
        Ok(Some(Self {
            offset: 0,
            depth: 0,
            top_object: false,
            slot: Slot::Value,
            lex: Lex::Between,
            key: None,
            first: 0,
        }))
    }

    /// Reads the next bytes of the body. Returns how many bytes at the end of everything fed
    /// so far belong to a top-level key not decided yet; the caller must not release those
    /// before a later call returns a smaller number (or [`finish`](Self::finish) succeeds),
    /// as with [`super::form::FormScanner::feed`].
    ///
    /// # Errors
    /// `400 method_override` at the first top-level key that names the method override;
    /// `400 malformed_request` for a key undecided after [`MAX_KEY`] bytes;
    /// `415 unsupported_json` for a body that begins like UTF-16 or UTF-32. The scanner is
    /// not to be fed after an error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<usize, Rejection> {
        let start = self.offset;
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            let pos = start.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
            if pos < 4 {
                self.check_lead(pos, b)?;
            }
            if pos >= 4 && self.lex == Lex::Str && self.key.is_none() {
                // Nothing in a value or a nested key to look at before its end or an escape.
                let rest = chunk.get(i..).unwrap_or_default();
                match memchr::memchr2(b'"', b'\\', rest) {
                    Some(at) if at > 0 => {
                        i = i.saturating_add(at);
                        continue;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            self.byte(b, pos)?;
            i = i.saturating_add(1);
        }
        self.offset = start.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        let undecided = self.key.map_or(0, |k| {
            usize::try_from(self.offset.saturating_sub(k.start)).unwrap_or(usize::MAX)
        });
        if undecided > MAX_KEY {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                format!("a JSON key undecided after {MAX_KEY} bytes"),
            ));
        }
        Ok(undecided)
    }

    /// Ends the body.
    ///
    /// # Errors
    /// `400 method_override` when the body ends in a top-level key (quoted or not) that names
    /// the method override.
    pub fn finish(&mut self) -> Result<(), Rejection> {
        self.lex = Lex::Between;
        match self.key.take() {
            Some(k) if k.name.finish() => Err(key_refused()),
            _ => Ok(()),
        }
    }

    /// A NUL byte in the first four, or a UTF-16 byte order mark: not UTF-8.
    fn check_lead(&mut self, pos: u64, b: u8) -> Result<(), Rejection> {
        let bom = pos == 1 && matches!((self.first, b), (0xfe, 0xff) | (0xff, 0xfe));
        if pos == 0 {
            self.first = b;
        }
        if b == 0 || bom {
            return Err(unsupported_json(
                "a JSON body in UTF-16 or UTF-32 cannot be checked for a method override",
            ));
        }
        Ok(())
    }

    /// Whether a string or bare token starting now is a top-level key.
    fn key_position(&self) -> bool {
        self.depth == 1 && self.top_object && self.slot == Slot::Key
    }

    /// A value ended at depth 1: what follows is read as a key, comma or not.
    fn value_ended(&mut self) {
        if self.depth == 1 {
            self.slot = Slot::Key;
        }
    }

    /// Ends the key being read; refuses it if it names the override.
    fn key_ended(&mut self) -> Result<(), Rejection> {
        match self.key.take() {
            Some(k) if k.name.finish() => Err(key_refused()),
            Some(_) => Ok(()),
            None => {
                self.value_ended();
                Ok(())
            }
        }
    }

    /// Reads one decoded character of a key.
    fn key_char(&mut self, c: u8) -> Result<(), Rejection> {
        if let Some(k) = self.key.as_mut() {
            k.name.push_decoded(c);
            if k.name.is_hit() {
                return Err(key_refused());
            }
            if !k.name.is_undecided() {
                self.key = None;
            }
        }
        Ok(())
    }

    fn byte(&mut self, b: u8, pos: u64) -> Result<(), Rejection> {
        match self.lex {
            Lex::Str => match b {
                b'"' => {
                    self.lex = Lex::Between;
                    return self.key_ended();
                }
                b'\\' => self.lex = Lex::Escape,
                c => return self.key_char(c),
            },
            Lex::Escape => {
                self.lex = Lex::Str;
                let c = match b {
                    b'u' => {
                        self.lex = Lex::Unicode { n: 0, acc: 0 };
                        return Ok(());
                    }
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    c => c,
                };
                return self.key_char(c);
            }
            Lex::Unicode { n, acc } => match char::from(b).to_digit(16) {
                Some(d) if n < 3 => {
                    self.lex = Lex::Unicode {
                        n: n.saturating_add(1),
                        acc: acc.wrapping_mul(16).wrapping_add(d),
                    };
                }
                Some(d) => {
                    self.lex = Lex::Str;
                    let unit = acc.wrapping_mul(16).wrapping_add(d);
                    // Only ASCII can spell the name; a surrogate or any other unit ends it.
                    let c = u8::try_from(unit).ok().filter(u8::is_ascii).unwrap_or(0x80);
                    return self.key_char(c);
                }
                None => {
                    self.lex = Lex::Str;
                    self.key_char(0x80)?;
                    return self.byte(b, pos);
                }
            },
            Lex::Between | Lex::Bare => self.structure(b, pos)?,
        }
        Ok(())
    }

    /// A byte outside strings.
    fn structure(&mut self, b: u8, pos: u64) -> Result<(), Rejection> {
        let bare = !matches!(
            b,
            b'"' | b'{' | b'[' | b'}' | b']' | b':' | b',' | b' ' | b'\t' | b'\r' | b'\n'
        );
        if bare {
            if self.lex == Lex::Between {
                self.lex = Lex::Bare;
                if self.key_position() {
                    self.key = Some(Key {
                        name: NameMatcher::new(),
                        start: pos,
                    });
                }
            }
            return self.key_char(b);
        }
        if self.lex == Lex::Bare {
            self.lex = Lex::Between;
            self.key_ended()?;
        }
        match b {
            b'"' => {
                self.lex = Lex::Str;
                if self.key_position() {
                    self.key = Some(Key {
                        name: NameMatcher::new(),
                        start: pos,
                    });
                }
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                if self.depth == 1 {
                    self.top_object = b == b'{';
                    self.slot = Slot::Key;
                }
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.top_object = false;
                }
                self.value_ended();
            }
            b':' if self.depth == 1 => self.slot = Slot::Value,
            b',' if self.depth == 1 => self.slot = Slot::Key,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> JsonScanner {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        JsonScanner::for_request(&h).unwrap().unwrap()
    }

    /// The verdict on `body` fed whole, and checks that every split into two and three
    /// pieces, and into single bytes, gives the same verdict.
    fn verdict(body: &[u8]) -> Result<(), &'static str> {
        let run = |pieces: &[&[u8]]| {
            let mut s = scanner();
            pieces
                .iter()
                .try_for_each(|p| s.feed(p).map(drop))
                .and_then(|()| s.finish())
                .map_err(|r| r.code)
        };
        let whole = run(&[body]);
        for a in 0..=body.len() {
            let (x, rest) = body.split_at(a);
            assert_eq!(
                run(&[x, rest]),
                whole,
                "split at {a} of {:?}",
                String::from_utf8_lossy(body)
            );
            for b in 0..=rest.len() {
                let (y, z) = rest.split_at(b);
                assert_eq!(
                    run(&[x, y, z]),
                    whole,
                    "split at {a}, {} of {:?}",
                    a + b,
                    String::from_utf8_lossy(body)
                );
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn top_level_method_keys_are_found() {
        for body in [
            r#"{"_method":"DELETE"}"#,
            r#" { "note" : "hi" , "_method" : "DELETE" } "#,
            r#"{"a":{"b":[1,{"c":2}]},"_method":"DELETE"}"#,
            r#"{"\u005fmethod":"DELETE"}"#,
            r#"{"\u005F\u006Dethod":"DELETE"}"#,
            r#"{"_\u006d\u0065\u0074\u0068\u006f\u0064":"DELETE"}"#,
            r#"{"_METHOD":"delete"}"#,
            r#"{"_method_override":"DELETE"}"#,
            r#"{"_meth\od":"DELETE"}"#,
            r#"{"_method\u005b]":1}"#,
            r#"{"a":"\"}\"","_method":1}"#,
            r#"{"a":"\\","_method":1}"#,
            r#"{"a":"\ud83d\ude00","_method":1}"#,
            r#"{"_method":null}"#,
            r#"{"_method""#,
            r#"{"_method"#,
            // Invalid JSON a lenient parser reads the key in.
            r#"garbage {"_method":"DELETE"}"#,
            ")]}',\n{\"_method\":\"DELETE\"}",
            "\u{feff}{\"_method\":\"DELETE\"}",
            r#"[1,2] {"_method":"DELETE"}"#,
            r#"}}]{"_method":"DELETE"}"#,
            r#"{"a":[1}, "_method":"DELETE"}"#,
            r#"{"a":1 "_method":"DELETE"}"#,
            r#"{"a":"x" "_method":"DELETE"}"#,
            r#"{"a" "_method":"DELETE"}"#,
            r#"{"a\q":1,"_method":"DELETE"}"#,
            r#"{_method:"DELETE"}"#,
            r#"{a:1, _method :"DELETE"}"#,
        ] {
            assert_eq!(verdict(body.as_bytes()), Err("method_override"), "{body}");
        }
    }

    #[test]
    fn values_nested_keys_and_strings_pass() {
        for body in [
            "",
            "{}",
            "[]",
            r#"{"note":"_method"}"#,
            r#"{"note":"\"_method\":\"DELETE\""}"#,
            r#"{"note":"{\"_method\":\"DELETE\"}"}"#,
            r#"{"a":{"_method":"DELETE"}}"#,
            r#"{"a":[{"_method":"DELETE"}],"b":{"c":{"_method":1}}}"#,
            r#"[{"_method":"DELETE"}]"#,
            r#"["_method","DELETE"]"#,
            r#""_method""#,
            r#"{"method":"DELETE","x_method":1,"_methods":2}"#,
            r#"{"%5Fmethod":"DELETE"}"#,
            r#"{"+_method":"DELETE"}"#,
            r#"{"\/_method":1}"#,
            r#"{"_method\u00":1}"#,
            r#"{"\u005f\u0000method":1}"#,
            r#"{"\ud83d\ude00_method":1}"#,
            r#"{"_method\u0041":1}"#,
            r#"{"a":_method}"#,
            r#"{"a":true,"b":-1.5e3,"c":null}"#,
            r#""unterminated {"_method":"DELETE"}"#,
        ] {
            assert_eq!(verdict(body.as_bytes()), Ok(()), "{body}");
        }
    }

    #[test]
    fn only_an_undecided_key_is_held_back() {
        let mut s = scanner();
        assert_eq!(s.feed(br#"{"note":"a long value"#).unwrap(), 0);
        // `"_me` could still be `"_method"`: those four bytes wait.
        assert_eq!(s.feed(br#"","_me"#).unwrap(), 4);
        assert_eq!(s.feed(b"ta\":1,\"\\u00").unwrap(), 5);
        assert_eq!(s.feed(b"41\":1").unwrap(), 0);
        // A nested key or a value is never held.
        assert_eq!(s.feed(br#","a":{"_method"#).unwrap(), 0);
        assert_eq!(s.feed(br#"":1},"b":"_method"#).unwrap(), 0);
        assert_eq!(s.feed(br#"","_method"#).unwrap(), 8);
        assert_eq!(s.feed(b"\"").unwrap_err().code, "method_override");
        // What is held stays bounded.
        let mut s = scanner();
        assert_eq!(s.feed(br#"{"_method"#).unwrap(), 8);
        let spaces = vec![b' '; MAX_KEY];
        assert_eq!(s.feed(&spaces).unwrap_err().code, "malformed_request");
    }

    #[test]
    fn bodies_in_utf16_or_utf32_are_refused() {
        for body in [
            &b"{\0\"\0_\0"[..],
            b"\0{\0\"",
            b"\xff\xfe{\0",
            b"\xfe\xff\0{",
            b" \0",
        ] {
            let mut s = scanner();
            let split = body.split_at(1);
            let r = s.feed(split.0).and_then(|_| s.feed(split.1));
            assert_eq!(r.unwrap_err().code, "unsupported_json", "{body:?}");
        }
        // A NUL later on is the upstream's problem.
        assert_eq!(verdict(b"{\"a\":1,\"b\0\":2}"), Ok(()));
    }

    #[test]
    fn which_bodies_are_json() {
        let for_headers = |ct: Option<&str>, ce: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            if let Some(ce) = ce {
                h.insert(header::CONTENT_ENCODING, ce.parse().unwrap());
            }
            JsonScanner::for_request(&h)
                .map(|s| s.is_some())
                .map_err(|r| r.code)
        };
        for (ct, json) in [
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some("application/vnd.api+json"), true),
            (Some("text/json"), true),
            (Some("application/problem+JSON"), true),
            // Laravel looks for `/json` in the whole value.
            (Some("text/plain; x=/json"), true),
            (Some("application/jsonp"), true),
            (None, false),
            (Some("text/plain"), false),
            (Some("application/x-www-form-urlencoded"), false),
        ] {
            assert_eq!(for_headers(ct, None), Ok(json), "{ct:?}");
        }
        assert_eq!(
            for_headers(Some("application/json; charset=utf-16"), None),
            Err("unsupported_json")
        );
        assert_eq!(
            for_headers(Some("application/json; charset=\"UTF-32LE\""), None),
            Err("unsupported_json")
        );
        assert_eq!(
            for_headers(Some("application/json"), Some("gzip")),
            Err("unsupported_json")
        );
        assert_eq!(
            for_headers(Some("application/json"), Some("identity")),
            Ok(true)
        );
        assert_eq!(for_headers(Some("text/plain"), Some("gzip")), Ok(false));
    }
}
