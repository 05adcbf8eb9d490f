//! The lexer: PostgreSQL 15's lexical rules (`src/backend/parser/scan.l`), on `&str`.
//!
//! Whitespace and comments are dropped; every other token keeps a borrowed slice of the input,
//! so lexing allocates only the token vector. The sub-lexers are nom parsers over the rest of
//! the input; typed errors travel as `nom::Err::Failure` and carry the length of the rest, from
//! which the byte offset is computed.
//!
//! Differences from the server are all on the side of rejecting: where PostgreSQL 15 reports a
//! lexical error we report one too, and the classifier turns any error into `Unknown`.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while, take_while1};
use nom::character::complete::{char, digit0, digit1, one_of};
use nom::combinator::{opt, recognize};
use nom::error::{ErrorKind, ParseError};
use nom::sequence::pair;
use nom::{IResult, Parser};

use crate::{Error, Result};

/// Identifiers longer than this many bytes are truncated by the server (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Limits checked while lexing, before anything grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest input accepted, in bytes.
    pub max_input_len: usize,
    /// Most tokens (whitespace and comments excluded) in one input.
    pub max_tokens: usize,
    /// Deepest nesting of parentheses, brackets and block comments.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 16 MiB of text, one million tokens, nesting 256 deep.
    fn default() -> Self {
        Self {
            max_input_len: 16 << 20,
            max_tokens: 1_000_000,
            max_depth: 256,
        }
    }
}

/// How to lex: the server settings that change lexing, and the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexOptions {
    /// The server's `standard_conforming_strings`. When off, backslashes are escapes in plain
    /// `'…'` strings too. On by default since PostgreSQL 9.1; a proxy should follow the
    /// `ParameterStatus` messages the server sends for it.
    pub standard_conforming_strings: bool,
    /// Limits on the input.
    pub limits: Limits,
}

impl Default for LexOptions {
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
            limits: Limits::default(),
        }
    }
}

/// The kind of a string constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StringKind {
    /// `'…'` with `standard_conforming_strings` on.
    Standard,
    /// `E'…'`, or `'…'` with `standard_conforming_strings` off: backslash escapes.
    Escape,
    /// `N'…'`.
    National,
    /// `B'…'`.
    Bit,
    /// `X'…'`.
    Hex,
    /// `U&'…'`, with its `UESCAPE` character (`\` unless given).
    Unicode {
        /// The escape character.
        escape: char,
    },
    /// `$tag$…$tag$`.
    Dollar,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// An unquoted identifier or keyword.
    Ident,
    /// A `"quoted"` identifier.
    QuotedIdent,
    /// A `U&"…"` identifier, with its `UESCAPE` character (`\` unless given).
    UnicodeIdent {
        /// The escape character.
        escape: char,
    },
    /// A string constant (consecutive constants separated by a newline are one token, as in
    /// the server).
    String(StringKind),
    /// A numeric constant.
    Number,
    /// A positional parameter `$n`.
    Param,
    /// An operator, including the one-character ones (`+`, `=`, `<>`, `->>`, …).
    Op,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `;`
    Semicolon,
    /// `:`
    Colon,
    /// `.`
    Dot,
    /// `::`
    Typecast,
    /// `..`
    DotDot,
    /// `:=`
    ColonEquals,
    /// Any other character (`$` on its own, `\`, `{`, …); the server's grammar rejects it.
    Other,
}

/// One token: its kind, its text (a slice of the input) and its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// What it is.
    pub kind: TokenKind,
    /// Its exact text in the input.
    pub text: &'a str,
    /// Byte offset of its first character.
    pub offset: usize,
}

impl Token<'_> {
    /// Byte offset just past its last character.
    #[must_use]
    pub fn end(&self) -> usize {
        self.offset.saturating_add(self.text.len())
    }

    /// Whether this is the unquoted keyword `kw` (given in lowercase). Quoted identifiers are
    /// never keywords.
    #[must_use]
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == TokenKind::Ident && self.text.eq_ignore_ascii_case(kw)
    }

    /// Whether this token can name something: an unquoted, quoted or Unicode identifier.
    #[must_use]
    pub fn is_name(&self) -> bool {
        matches!(
            self.kind,
            TokenKind::Ident | TokenKind::QuotedIdent | TokenKind::UnicodeIdent { .. }
        )
    }

    /// The identifier as the server sees it: unquoted ones folded to lowercase (ASCII only,
    /// as for UTF-8 databases), quoted ones with `""` undoubled, Unicode escapes decoded, all
    /// truncated to 63 bytes. `None` if this token is not an identifier.
    #[must_use]
    pub fn ident(&self) -> Option<String> {
        let mut s = match self.kind {
            TokenKind::Ident => self.text.to_ascii_lowercase(),
            TokenKind::QuotedIdent => {
                undouble(self.text.get(1..self.text.len().checked_sub(1)?)?, '"')
            }
            TokenKind::UnicodeIdent { escape } => {
                let close = unicode_body_end(self.text, '"')?;
                let body = undouble(self.text.get(3..close)?, '"');
                decode_unicode_escapes(&body, escape)?
            }
            _ => return None,
        };
        truncate_identifier(&mut s);
        Some(s)
    }

    /// The value of a string constant, when it is simple to know exactly: standard, national
    /// and dollar-quoted strings, and escape strings (all of them only without continuation
    /// lines). `None` otherwise.
    #[must_use]
    pub fn string_value(&self) -> Option<String> {
        let TokenKind::String(kind) = self.kind else {
            return None;
        };
        match kind {
            StringKind::Dollar => {
                let tag_end = self.text.get(1..)?.find('$')?.checked_add(2)?;
                let body_end = self.text.len().checked_sub(tag_end)?;
                self.text.get(tag_end..body_end).map(str::to_owned)
            }
            StringKind::Standard | StringKind::National | StringKind::Escape => {
                let start = self.text.find('\'')?.checked_add(1)?;
                let body = self.text.get(start..self.text.len().checked_sub(1)?)?;
                if kind == StringKind::Escape {
                    decode_escape_string(body)
                } else if body.replace("''", "").contains('\'') || body.contains('\\') {
                    // A continuation line, or (for N'…' with standard_conforming_strings
                    // off) backslashes that may be escapes: not decoded.
                    None
                } else {
                    Some(undouble(body, '\''))
                }
            }
            _ => None,
        }
    }
}

fn undouble(s: &str, q: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == q && chars.peek() == Some(&q) {
            chars.next();
        }
    }
    out
}

/// Truncates to 63 bytes at a character boundary, as the server does (with a NOTICE).
pub(crate) fn truncate_identifier(s: &mut String) {
    if s.len() > MAX_IDENTIFIER_LEN {
        let mut cut = MAX_IDENTIFIER_LEN;
        while !s.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        s.truncate(cut);
    }
}

/// Decodes the few escapes an escape string may hold; `None` for anything unusual (octal or
/// hex bytes that are not ASCII, a quote that is not doubled), so that callers fail closed.
fn decode_escape_string(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    '0'..='7' | 'x' | 'u' | 'U' => return None,
                    other => out.push(other),
                }
            }
            '\'' => {
                if chars.next()? != '\'' {
                    return None;
                }
                out.push('\'');
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Index of the closing quote of a `U&'…'` or `U&"…"` token (before any UESCAPE clause).
fn unicode_body_end(text: &str, q: char) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 3;
    loop {
        let b = *bytes.get(i)?;
        if b == q as u8 {
            if bytes.get(i.checked_add(1)?) == Some(&(q as u8)) {
                i = i.checked_add(2)?;
                continue;
            }
            return Some(i);
        }
        i = i.checked_add(1)?;
    }
}

/// Decodes `\XXXX`, `\+XXXXXX` and `\\` (with `escape` in place of `\`), pairing
/// surrogates; `None` where the server raises "invalid Unicode escape".
fn decode_unicode_escapes(body: &str, escape: char) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| -> Option<u32> {
        let mut v: u32 = 0;
        for _ in 0..n {
            v = v
                .checked_mul(16)?
                .checked_add(chars.next()?.to_digit(16)?)?;
        }
        Some(v)
    };
    let mut pending_high: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != escape {
            if pending_high.is_some() {
                return None;
            }
            out.push(c);
            continue;
        }
        let cp = match chars.peek() {
            Some(&n) if n == escape => {
                chars.next();
                if pending_high.is_some() {
                    return None;
                }
                out.push(escape);
                continue;
            }
            Some('+') => {
                chars.next();
                hex(&mut chars, 6)?
            }
            _ => hex(&mut chars, 4)?,
        };
        match (pending_high.take(), cp) {
            (None, 0xD800..=0xDBFF) => pending_high = Some(cp),
            (Some(hi), 0xDC00..=0xDFFF) => {
                let full = 0x10000u32
                    .checked_add((hi.checked_sub(0xD800)?) << 10)?
                    .checked_add(cp.checked_sub(0xDC00)?)?;
                out.push(char::from_u32(full)?);
            }
            (Some(_), _) => return None,
            (None, 0) => return None,
            (None, _) => out.push(char::from_u32(cp)?),
        }
    }
    if pending_high.is_some() {
        return None;
    }
    Some(out)
}

// === nom plumbing ===

/// Error of the sub-lexers: either "this parser does not apply here" or a typed failure whose
/// position is the length of the remaining input.
#[derive(Debug)]
enum LexFail {
    NoMatch,
    Fatal(Fatal),
}

#[derive(Debug, Clone, Copy)]
enum Fatal {
    Unterminated(&'static str, usize),
    Invalid(&'static str, usize),
    TooDeep(usize),
}

impl<'a> ParseError<&'a str> for LexFail {
    fn from_error_kind(_input: &'a str, _kind: ErrorKind) -> Self {
        Self::NoMatch
    }
    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

type Res<'a, O = &'a str> = IResult<&'a str, O, LexFail>;

fn fatal<'a, O>(f: Fatal) -> Res<'a, O> {
    Err(nom::Err::Failure(LexFail::Fatal(f)))
}

fn no_match<'a, O>() -> Res<'a, O> {
    Err(nom::Err::Error(LexFail::NoMatch))
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}')
}
fn is_horiz_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}
fn is_newline(c: char) -> bool {
    matches!(c, '\n' | '\r')
}
/// `ident_start`: letters, `_` and every non-ASCII character (bytes \200-\377 in scan.l).
pub(crate) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}
/// `ident_cont`: also digits and `$`.
pub(crate) fn is_ident_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}
fn is_dolq_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}
fn is_op_char(c: char) -> bool {
    matches!(
        c,
        '~' | '!'
            | '@'
            | '#'
            | '^'
            | '&'
            | '|'
            | '`'
            | '?'
            | '+'
            | '-'
            | '*'
            | '/'
            | '%'
            | '<'
            | '>'
            | '='
    )
}

/// `--` to the end of the line (the newline is not part of it).
fn line_comment(i: &str) -> Res<'_> {
    recognize(pair(tag("--"), take_till(is_newline))).parse(i)
}

/// A block comment, nesting as the server does.
fn block_comment(max_depth: usize) -> impl Fn(&str) -> Res<'_> {
    move |i: &str| {
        let (mut rest, _) = tag("/*").parse(i)?;
        let mut depth: usize = 1;
        while depth > 0 {
            if rest.starts_with("/*") {
                depth = depth.saturating_add(1);
                if depth > max_depth {
                    return fatal(Fatal::TooDeep(rest.len()));
                }
                rest = rest.get(2..).unwrap_or("");
            } else if rest.starts_with("*/") {
                depth = depth.saturating_sub(1);
                rest = rest.get(2..).unwrap_or("");
            } else {
                let mut chars = rest.chars();
                if chars.next().is_none() {
                    return fatal(Fatal::Unterminated("block comment", i.len()));
                }
                rest = chars.as_str();
            }
        }
        let used = i.len().saturating_sub(rest.len());
        Ok((rest, i.get(..used).unwrap_or("")))
    }
}

/// Whitespace and comments.
fn trivia(max_depth: usize) -> impl Fn(&str) -> Res<'_> {
    move |i: &str| {
        alt((
            take_while1(is_space),
            line_comment,
            block_comment(max_depth),
        ))
        .parse(i)
    }
}

/// `{whitespace_with_newline}{quote}` after a closing quote: the next line continues the
/// same string constant. Returns the input after the opening quote of the continuation.
fn quote_continuation(i: &str) -> Option<&str> {
    // horiz_whitespace*: horizontal spaces and `--` comments.
    let mut rest = i;
    loop {
        if let Ok((r, _)) = take_while1::<_, _, LexFail>(is_horiz_space).parse(rest) {
            rest = r;
        } else if let Ok((r, _)) = line_comment(rest) {
            rest = r;
        } else {
            break;
        }
    }
    // One newline.
    let (mut rest, _) = one_of::<_, _, LexFail>("\n\r").parse(rest).ok()?;
    // special_whitespace*: spaces (newlines included), or `--` comments ended by a newline.
    loop {
        if let Ok((r, _)) = take_while1::<_, _, LexFail>(is_space).parse(rest) {
            rest = r;
        } else if let Ok((r, _)) = pair(line_comment, one_of::<_, _, LexFail>("\n\r")).parse(rest) {
            rest = r;
        } else {
            break;
        }
    }
    char::<_, LexFail>('\'').parse(rest).ok().map(|(r, _)| r)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum QuoteMode {
    /// `''` doubles a quote (xq, xus).
    Doubling,
    /// Backslash escapes anything, and `''` doubles (xe).
    Backslash,
    /// Nothing escapes (xb, xh).
    Plain,
}

/// The body of a quoted string after its opening quote, through the closing quote and any
/// continuation lines. `start_len` is the length of the input at the token's start.
fn quoted_body(i: &str, mode: QuoteMode, start_len: usize) -> Res<'_, ()> {
    let mut rest = i;
    loop {
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next() {
                None => return fatal(Fatal::Unterminated("quoted string", start_len)),
                Some((_, '\\')) if mode == QuoteMode::Backslash => {
                    if chars.next().is_none() {
                        return fatal(Fatal::Unterminated("quoted string", start_len));
                    }
                }
                Some((at, '\'')) => {
                    let after = rest.get(at.saturating_add(1)..).unwrap_or("");
                    if mode != QuoteMode::Plain && after.starts_with('\'') {
                        chars.next();
                        continue;
                    }
                    break after;
                }
                Some(_) => {}
            }
        };
        match quote_continuation(close) {
            Some(r) => rest = r,
            None => return Ok((close, ())),
        }
    }
}

/// `"…"` with `""` doubling; the server rejects `""`.
fn quoted_ident_body(i: &str, start_len: usize) -> Res<'_, ()> {
    let mut pos = 0usize;
    let bytes = i.as_bytes();
    loop {
        match bytes.get(pos) {
            None => return fatal(Fatal::Unterminated("quoted identifier", start_len)),
            Some(b'"') => {
                if bytes.get(pos.saturating_add(1)) == Some(&b'"') {
                    pos = pos.saturating_add(2);
                    continue;
                }
                if pos == 0 {
                    return fatal(Fatal::Invalid(
                        "zero-length delimited identifier",
                        start_len,
                    ));
                }
                return Ok((i.get(pos.saturating_add(1)..).unwrap_or(""), ()));
            }
            Some(_) => pos = pos.saturating_add(1),
        }
    }
}

/// `$tag$` or `$$`.
fn dollar_delim(i: &str) -> Res<'_> {
    recognize((
        char('$'),
        opt(pair(take_while1(is_ident_start), take_while(is_dolq_cont))),
        char('$'),
    ))
    .parse(i)
}

fn dollar_string(i: &str) -> Res<'_, ()> {
    let (body, delim) = dollar_delim(i)?;
    match body.find(delim) {
        Some(at) => Ok((body.get(at.saturating_add(delim.len())..).unwrap_or(""), ())),
        None => fatal(Fatal::Unterminated("dollar-quoted string", i.len())),
    }
}

fn param(i: &str) -> Res<'_, ()> {
    let (rest, _) = pair(char('$'), digit1).parse(i)?;
    if rest.starts_with(is_ident_start) {
        return fatal(Fatal::Invalid("trailing junk after parameter", i.len()));
    }
    Ok((rest, ()))
}

/// integer, decimal or real; PostgreSQL 15 rejects an identifier character right after one.
fn number(i: &str) -> Res<'_, ()> {
    let int_then_frac = |i| -> Res<'_> {
        let (rest, _) = digit1(i)?;
        if rest.starts_with("..") {
            // `1..2`: the integer, then `..` (decimalfail).
            return Ok((rest, ""));
        }
        let (rest, _) = opt(pair(char('.'), digit0)).parse(rest)?;
        Ok((rest, ""))
    };
    let (rest, _) = alt((int_then_frac, recognize(pair(char('.'), digit1)))).parse(i)?;
    let rest = if rest.starts_with(['e', 'E']) {
        match recognize((one_of::<_, _, LexFail>("eE"), opt(one_of("+-")), digit1)).parse(rest) {
            Ok((r, _)) => r,
            Err(_) => {
                return fatal(Fatal::Invalid(
                    "trailing junk after numeric literal",
                    i.len(),
                ));
            }
        }
    } else {
        rest
    };
    if rest.starts_with(is_ident_start) {
        return fatal(Fatal::Invalid(
            "trailing junk after numeric literal",
            i.len(),
        ));
    }
    Ok((rest, ()))
}

/// An operator run, cut as the server cuts it: at `/*` or `--`, and without trailing `+`/`-`
/// unless it contains a character that SQL's own operators never use.
fn operator(i: &str) -> Res<'_, ()> {
    let (_, run) = take_while1(is_op_char).parse(i)?;
    let mut n = run.len();
    for pat in ["/*", "--"] {
        if let Some(at) = run.find(pat) {
            n = n.min(at);
        }
    }
    if n == 0 {
        return no_match();
    }
    let b = run.as_bytes();
    let last = |n: usize| n.checked_sub(1).and_then(|k| b.get(k)).copied();
    if n > 1 && matches!(last(n), Some(b'+' | b'-')) {
        let head = b.get(..n.saturating_sub(1)).unwrap_or(&[]);
        let special = head.iter().any(|c| {
            matches!(
                c,
                b'~' | b'!' | b'@' | b'#' | b'^' | b'&' | b'|' | b'`' | b'?' | b'%'
            )
        });
        if !special {
            while n > 1 && matches!(last(n), Some(b'+' | b'-')) {
                n = n.saturating_sub(1);
            }
        }
    }
    if n > MAX_IDENTIFIER_LEN {
        return fatal(Fatal::Invalid("operator too long", i.len()));
    }
    Ok((i.get(n..).unwrap_or(""), ()))
}

/// Whitespace and comments, possibly none.
fn skip_trivia(mut r: &str, max_depth: usize) -> Res<'_, ()> {
    loop {
        match trivia(max_depth)(r) {
            Ok((next, _)) => r = next,
            Err(nom::Err::Error(_)) => return Ok((r, ())),
            Err(e) => return Err(e),
        }
    }
}

/// `UESCAPE 'c'` after a Unicode string or identifier: the input after it and the character.
fn uescape(i: &str, max_depth: usize) -> Res<'_, Option<char>> {
    let skip = |r| skip_trivia(r, max_depth);
    let (after_ws, _) = skip(i)?;
    let Ok((after_kw, kw)) = take_while1::<_, _, LexFail>(is_ident_cont).parse(after_ws) else {
        return Ok((i, None));
    };
    if !kw.eq_ignore_ascii_case("uescape") {
        return Ok((i, None));
    }
    let (r, _) = skip(after_kw)?;
    let bad = Fatal::Invalid(
        "UESCAPE must be followed by a simple string literal",
        after_ws.len(),
    );
    let Ok((body, _)) = char::<_, LexFail>('\'').parse(r) else {
        return fatal(bad);
    };
    let mut chars = body.chars();
    let (Some(c), Some('\'')) = (chars.next(), chars.next()) else {
        return fatal(bad);
    };
    if c.is_ascii_hexdigit() || matches!(c, '+' | '\'' | '"') || is_space(c) {
        return fatal(Fatal::Invalid(
            "invalid Unicode escape character",
            after_ws.len(),
        ));
    }
    Ok((chars.as_str(), Some(c)))
}

// === the lexer ===

/// Lexes `sql` into tokens, dropping whitespace and comments.
///
/// # Errors
/// A typed [`Error`] for input the server would reject while lexing (unterminated strings,
/// comments, dollar quotes and quoted identifiers, trailing junk after numbers, `""`, bad
/// Unicode escapes), for a NUL byte, and when a [`Limits`] value is exceeded.
pub fn tokenize<'a>(sql: &'a str, opts: &LexOptions) -> Result<Vec<Token<'a>>> {
    let limits = &opts.limits;
    if sql.len() > limits.max_input_len {
        return Err(Error::InputTooLong {
            len: sql.len(),
            limit: limits.max_input_len,
        });
    }
    if let Some(offset) = sql.bytes().position(|b| b == 0) {
        return Err(Error::NulByte { offset });
    }
    let total = sql.len();
    let at = |rest_len: usize| total.saturating_sub(rest_len);
    let to_error = |f: Fatal| match f {
        Fatal::Unterminated(what, r) => Error::Unterminated {
            what,
            offset: at(r),
        },
        Fatal::Invalid(what, r) => Error::Invalid {
            what,
            offset: at(r),
        },
        Fatal::TooDeep(r) => Error::NestingTooDeep {
            offset: at(r),
            limit: limits.max_depth,
        },
    };
    let lift = |e: nom::Err<LexFail>| match e {
        nom::Err::Failure(LexFail::Fatal(f)) | nom::Err::Error(LexFail::Fatal(f)) => to_error(f),
        // Every caller below only runs a sub-lexer where it must match.
        _ => Error::Invalid {
            what: "internal lexer mismatch",
            offset: 0,
        },
    };

    let mut tokens = Vec::new();
    let mut rest = sql;
    let mut depth: usize = 0;
    let plain_mode = if opts.standard_conforming_strings {
        QuoteMode::Doubling
    } else {
        QuoteMode::Backslash
    };
    while let Some(&b0) = rest.as_bytes().first() {
        // Only these bytes can start whitespace or a comment: skip the attempt otherwise.
        let maybe_trivia = matches!(b0, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | b'-' | b'/');
        match if maybe_trivia {
            trivia(limits.max_depth)(rest)
        } else {
            Err(nom::Err::Error(LexFail::NoMatch))
        } {
            Ok((r, _)) => {
                rest = r;
                continue;
            }
            Err(nom::Err::Error(_)) => {}
            Err(e) => return Err(lift(e)),
        }
        let start_len = rest.len();
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        let c2 = chars.next();
        let c3 = chars.next();
        let after1 = rest.get(c.len_utf8()..).unwrap_or("");
        let quoted_string = |body: &'a str, mode| quoted_body(body, mode, start_len).map_err(lift);
        let (next, kind): (&str, TokenKind) = match (c, c2) {
            ('b' | 'B', Some('\'')) => {
                let (r, ()) = quoted_string(rest.get(2..).unwrap_or(""), QuoteMode::Plain)?;
                (r, TokenKind::String(StringKind::Bit))
            }
            ('x' | 'X', Some('\'')) => {
                let (r, ()) = quoted_string(rest.get(2..).unwrap_or(""), QuoteMode::Plain)?;
                (r, TokenKind::String(StringKind::Hex))
            }
            ('e' | 'E', Some('\'')) => {
                let (r, ()) = quoted_string(rest.get(2..).unwrap_or(""), QuoteMode::Backslash)?;
                (r, TokenKind::String(StringKind::Escape))
            }
            ('n' | 'N', Some('\'')) => {
                let (r, ()) = quoted_string(rest.get(2..).unwrap_or(""), plain_mode)?;
                (r, TokenKind::String(StringKind::National))
            }
            ('u' | 'U', Some('&')) if matches!(c3, Some('\'' | '"')) => {
                let body = rest.get(3..).unwrap_or("");
                let is_string = c3 == Some('\'');
                let r = if is_string {
                    if !opts.standard_conforming_strings {
                        return Err(to_error(Fatal::Invalid(
                            "unsafe use of string constant with Unicode escapes",
                            start_len,
                        )));
                    }
                    quoted_string(body, QuoteMode::Doubling)?.0
                } else {
                    quoted_ident_body(body, start_len).map_err(lift)?.0
                };
                let (r, esc) = uescape(r, limits.max_depth).map_err(lift)?;
                let escape = esc.unwrap_or('\\');
                let kind = if is_string {
                    TokenKind::String(StringKind::Unicode { escape })
                } else {
                    TokenKind::UnicodeIdent { escape }
                };
                let used = start_len.saturating_sub(r.len());
                let text = rest.get(..used).unwrap_or("");
                let close = unicode_body_end(text, if is_string { '\'' } else { '"' });
                let decodes = close
                    .and_then(|e| text.get(3..e))
                    .map(|b| undouble(b, if is_string { '\'' } else { '"' }))
                    .and_then(|b| decode_unicode_escapes(&b, escape));
                // A Unicode string with continuation lines is kept as lexed; identifiers and
                // single-line strings must decode, as the server checks.
                if decodes.is_none() && (!is_string || !text.get(3..).unwrap_or("").contains('\n'))
                {
                    return Err(to_error(Fatal::Invalid(
                        "invalid Unicode escape",
                        start_len,
                    )));
                }
                (r, kind)
            }
            (c, _) if is_ident_start(c) => {
                let (r, _) = take_while1::<_, _, LexFail>(is_ident_cont)
                    .parse(rest)
                    .map_err(lift)?;
                (r, TokenKind::Ident)
            }
            ('"', _) => (
                quoted_ident_body(after1, start_len).map_err(lift)?.0,
                TokenKind::QuotedIdent,
            ),
            ('\'', _) => {
                let kind = if opts.standard_conforming_strings {
                    StringKind::Standard
                } else {
                    StringKind::Escape
                };
                (
                    quoted_string(after1, plain_mode)?.0,
                    TokenKind::String(kind),
                )
            }
            ('$', _) => match dollar_string(rest) {
                Ok((r, ())) => (r, TokenKind::String(StringKind::Dollar)),
                Err(nom::Err::Error(_)) => match param(rest) {
                    Ok((r, ())) => (r, TokenKind::Param),
                    Err(nom::Err::Error(_)) => (after1, TokenKind::Other),
                    Err(e) => return Err(lift(e)),
                },
                Err(e) => return Err(lift(e)),
            },
            ('0'..='9', _) | ('.', Some('0'..='9')) => {
                (number(rest).map_err(lift)?.0, TokenKind::Number)
            }
            ('.', Some('.')) => (rest.get(2..).unwrap_or(""), TokenKind::DotDot),
            ('.', _) => (after1, TokenKind::Dot),
            (':', Some(':')) => (rest.get(2..).unwrap_or(""), TokenKind::Typecast),
            (':', Some('=')) => (rest.get(2..).unwrap_or(""), TokenKind::ColonEquals),
            (':', _) => (after1, TokenKind::Colon),
            ('(', _) | ('[', _) => {
                depth = depth.saturating_add(1);
                if depth > limits.max_depth {
                    return Err(to_error(Fatal::TooDeep(start_len)));
                }
                (
                    after1,
                    if c == '(' {
                        TokenKind::LParen
                    } else {
                        TokenKind::LBracket
                    },
                )
            }
            (')', _) | (']', _) => {
                depth = depth.saturating_sub(1);
                (
                    after1,
                    if c == ')' {
                        TokenKind::RParen
                    } else {
                        TokenKind::RBracket
                    },
                )
            }
            (',', _) => (after1, TokenKind::Comma),
            (';', _) => (after1, TokenKind::Semicolon),
            (c, _) if is_op_char(c) => (operator(rest).map_err(lift)?.0, TokenKind::Op),
            _ => (after1, TokenKind::Other),
        };
        if tokens.len() >= limits.max_tokens {
            return Err(Error::TooManyTokens {
                limit: limits.max_tokens,
            });
        }
        let used = start_len.saturating_sub(next.len());
        tokens.push(Token {
            kind,
            text: rest.get(..used).unwrap_or(""),
            offset: at(start_len),
        });
        rest = next;
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        tokenize(sql, &LexOptions::default())
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    fn err(sql: &str) -> Error {
        tokenize(sql, &LexOptions::default()).unwrap_err()
    }

    fn off() -> LexOptions {
        LexOptions {
            standard_conforming_strings: false,
            ..LexOptions::default()
        }
    }

    use TokenKind as K;

    #[test]
    fn identifiers_keywords_and_punctuation() {
        assert_eq!(
            kinds("sElEcT a$b, _x1 FROM \"T\"\"q\".c;"),
            vec![
                (K::Ident, "sElEcT"),
                (K::Ident, "a$b"),
                (K::Comma, ","),
                (K::Ident, "_x1"),
                (K::Ident, "FROM"),
                (K::QuotedIdent, "\"T\"\"q\""),
                (K::Dot, "."),
                (K::Ident, "c"),
                (K::Semicolon, ";"),
            ]
        );
        let t = tokenize("\"T\"\"q\" FooBar", &LexOptions::default()).unwrap();
        assert_eq!(t[0].ident().unwrap(), "T\"q");
        assert_eq!(t[1].ident().unwrap(), "foobar");
        assert_eq!(kinds("ÉtÉ")[0], (K::Ident, "ÉtÉ"));
        assert_eq!(
            tokenize("ÉtÉ", &LexOptions::default()).unwrap()[0]
                .ident()
                .unwrap(),
            "ÉtÉ"
        );
    }

    #[test]
    fn long_identifiers_are_truncated_like_the_server() {
        let long = "a".repeat(70);
        let t = tokenize(&long, &LexOptions::default()).unwrap();
        assert_eq!(t[0].ident().unwrap().len(), 63);
        let multi = format!("\"{}\"", "é".repeat(40));
        let t = tokenize(&multi, &LexOptions::default()).unwrap();
        assert_eq!(t[0].ident().unwrap().len(), 62);
    }

    #[test]
    fn comments_nest_and_hide_everything() {
        assert_eq!(
            kinds("/* a /* b */ ; DROP */ SELECT -- ; x\n1"),
            vec![(K::Ident, "SELECT"), (K::Number, "1")]
        );
        assert!(matches!(
            err("/* /* */"),
            Error::Unterminated {
                what: "block comment",
                offset: 0
            }
        ));
        assert_eq!(kinds("/**/1/***/"), vec![(K::Number, "1")]);
        assert_eq!(kinds("--only a comment"), vec![]);
    }

    #[test]
    fn comment_nesting_is_limited() {
        let sql = "/*".repeat(300);
        assert!(matches!(
            tokenize(&sql, &LexOptions::default()),
            Err(Error::NestingTooDeep { limit: 256, .. })
        ));
    }

    #[test]
    fn standard_strings_double_quotes() {
        assert_eq!(
            kinds("'it''s'"),
            vec![(K::String(StringKind::Standard), "'it''s'")]
        );
        // With standard_conforming_strings on, a backslash is just a character.
        assert_eq!(
            kinds(r"'a\' ; 'b'"),
            vec![
                (K::String(StringKind::Standard), r"'a\'"),
                (K::Semicolon, ";"),
                (K::String(StringKind::Standard), "'b'"),
            ]
        );
        assert!(matches!(
            err("'abc"),
            Error::Unterminated {
                what: "quoted string",
                offset: 0
            }
        ));
    }

    #[test]
    fn escape_strings_honour_backslashes() {
        assert_eq!(
            kinds(r"E'\''"),
            vec![(K::String(StringKind::Escape), r"E'\''")]
        );
        assert_eq!(
            kinds(r"e'a\\' x"),
            vec![(K::String(StringKind::Escape), r"e'a\\'"), (K::Ident, "x")]
        );
        assert!(matches!(
            err(r"E'\'; DROP TABLE t; --"),
            Error::Unterminated { .. }
        ));
        assert!(matches!(err(r"E'\"), Error::Unterminated { .. }));
        let t = tokenize(r"E'a\'b\nc'", &LexOptions::default()).unwrap();
        assert_eq!(t[0].string_value().unwrap(), "a'b\nc");
        // An identifier ending in e is not an escape-string prefix.
        assert_eq!(kinds("xe'a'")[0], (K::Ident, "xe"));
    }

    #[test]
    fn standard_conforming_strings_off_makes_plain_strings_escape_strings() {
        let sql = r"SELECT 'a\'; DROP TABLE t; --'";
        let on = tokenize(sql, &LexOptions::default()).unwrap();
        assert_eq!(on.len(), 7);
        let t = tokenize(sql, &off()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].kind, K::String(StringKind::Escape));
        assert!(tokenize("U&'x'", &off()).is_err());
    }

    #[test]
    fn continuation_lines_join_strings_in_the_same_mode() {
        // The continuation of an E string is still an E string: `\'` does not end it.
        let sql = "E'a'\n'\\' ; DROP TABLE t; --'";
        let t = tokenize(sql, &LexOptions::default()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].text, sql);
        // Without a newline there is no continuation.
        assert_eq!(kinds("'a' 'b'").len(), 2);
        // A comment line may sit between the parts.
        assert_eq!(kinds("'a' -- c\n  -- d\n'b'").len(), 1);
        // ... but not a block comment.
        assert_eq!(kinds("'a'\n/* c */'b'").len(), 2);
    }

    #[test]
    fn bit_and_hex_strings_do_not_double() {
        assert_eq!(
            kinds("B'01''10' X'1F'"),
            vec![
                (K::String(StringKind::Bit), "B'01'"),
                (K::String(StringKind::Standard), "'10'"),
                (K::String(StringKind::Hex), "X'1F'"),
            ]
        );
        assert_eq!(
            kinds("N'x'"),
            vec![(K::String(StringKind::National), "N'x'")]
        );
    }

    #[test]
    fn unicode_strings_and_identifiers() {
        let t = tokenize(
            r#"U&"d\0061t\+000061" U&'\0441' u&"d!0061t!0061" UESCAPE '!'"#,
            &LexOptions::default(),
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].ident().unwrap(), "data");
        assert_eq!(t[1].kind, K::String(StringKind::Unicode { escape: '\\' }));
        assert_eq!(t[2].kind, K::UnicodeIdent { escape: '!' });
        assert_eq!(t[2].ident().unwrap(), "data");
        assert!(tokenize(r#"U&"\zzzz""#, &LexOptions::default()).is_err());
        assert!(tokenize(r#"U&"x" UESCAPE 'a'"#, &LexOptions::default()).is_err());
        assert!(tokenize(r#"U&"x" UESCAPE"#, &LexOptions::default()).is_err());
        // Surrogate pairs.
        let t = tokenize(r#"U&"\D83D\DE00""#, &LexOptions::default()).unwrap();
        assert_eq!(t[0].ident().unwrap(), "😀");
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        assert_eq!(
            kinds("$$a;b$$ $fn$ $$ ; $fn$ $1 $23"),
            vec![
                (K::String(StringKind::Dollar), "$$a;b$$"),
                (K::String(StringKind::Dollar), "$fn$ $$ ; $fn$"),
                (K::Param, "$1"),
                (K::Param, "$23"),
            ]
        );
        // `$` inside an identifier does not start a dollar quote.
        assert_eq!(
            kinds("a$$ b$x$"),
            vec![(K::Ident, "a$$"), (K::Ident, "b$x$")]
        );
        assert_eq!(
            kinds("$q$x$a$q$"),
            vec![(K::String(StringKind::Dollar), "$q$x$a$q$")]
        );
        assert!(matches!(
            err("$a$ ; "),
            Error::Unterminated {
                what: "dollar-quoted string",
                ..
            }
        ));
        assert!(matches!(err("$1abc"), Error::Invalid { .. }));
        assert_eq!(kinds("$ x"), vec![(K::Other, "$"), (K::Ident, "x")]);
        let t = tokenize("$body$ x $body$", &LexOptions::default()).unwrap();
        assert_eq!(t[0].string_value().unwrap(), " x ");
    }

    #[test]
    fn numbers_and_junk() {
        assert_eq!(
            kinds("1 1.5 .5 1. 1e10 1.5E-3 1..2"),
            vec![
                (K::Number, "1"),
                (K::Number, "1.5"),
                (K::Number, ".5"),
                (K::Number, "1."),
                (K::Number, "1e10"),
                (K::Number, "1.5E-3"),
                (K::Number, "1"),
                (K::DotDot, ".."),
                (K::Number, "2"),
            ]
        );
        assert!(matches!(
            err("SELECT 123abc"),
            Error::Invalid { offset: 7, .. }
        ));
        assert!(err("SELECT 1e").to_string().contains("trailing junk"));
        assert!(err("SELECT 0x1F").to_string().contains("trailing junk"));
    }

    #[test]
    fn operators_follow_the_server_rules() {
        assert_eq!(
            kinds("a+-b"),
            vec![(K::Ident, "a"), (K::Op, "+"), (K::Op, "-"), (K::Ident, "b")]
        );
        // `@-` keeps its minus: `@` is not an SQL operator character.
        assert_eq!(
            kinds("a@-b"),
            vec![(K::Ident, "a"), (K::Op, "@-"), (K::Ident, "b")]
        );
        assert_eq!(
            kinds("a<=b"),
            vec![(K::Ident, "a"), (K::Op, "<="), (K::Ident, "b")]
        );
        assert_eq!(
            kinds("x::int"),
            vec![(K::Ident, "x"), (K::Typecast, "::"), (K::Ident, "int")]
        );
        assert_eq!(kinds("a := b").get(1), Some(&(K::ColonEquals, ":=")));
        // An operator stops at a comment start.
        assert_eq!(
            kinds("1+--c\n2"),
            vec![(K::Number, "1"), (K::Op, "+"), (K::Number, "2")]
        );
        assert_eq!(
            kinds("1*/*c*/2"),
            vec![(K::Number, "1"), (K::Op, "*"), (K::Number, "2")]
        );
        assert_eq!(kinds("j->>'k'").get(1), Some(&(K::Op, "->>")));
        assert!(tokenize(&format!("1 {} 2", "<".repeat(64)), &LexOptions::default()).is_err());
    }

    #[test]
    fn limits_and_hostile_bytes() {
        let opts = LexOptions {
            limits: Limits {
                max_input_len: 10,
                max_tokens: 3,
                max_depth: 2,
            },
            ..LexOptions::default()
        };
        assert!(matches!(
            tokenize("SELECT 1, 2, 3", &opts),
            Err(Error::InputTooLong { len: 14, limit: 10 })
        ));
        assert!(matches!(
            tokenize("1,2,3", &opts),
            Err(Error::TooManyTokens { limit: 3 })
        ));
        assert!(matches!(
            tokenize("(((1)))", &opts),
            Err(Error::NestingTooDeep { .. })
        ));
        assert!(matches!(
            tokenize("SELECT\0 1", &LexOptions::default()),
            Err(Error::NulByte { offset: 6 })
        ));
        assert!(matches!(err("\"\""), Error::Invalid { .. }));
        assert!(matches!(
            err("\"abc"),
            Error::Unterminated {
                what: "quoted identifier",
                ..
            }
        ));
        assert_eq!(kinds("\\ {")[0].0, K::Other);
    }
}
