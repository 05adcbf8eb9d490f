//! Character references in XML and HTML bodies, read the way a parser reads them, so that a
//! value written as references (`ada&#64;example.com`) is seen by the detectors.
//!
//! Only the references that can stand for a character a detector reads are decoded: every
//! numeric one, and the named ones for ASCII punctuation, spaces, dashes and zero-width
//! characters. Other named references (`&eacute;`, `&copy;`) stay as they are: no letter,
//! digit or separator a detector looks at is spelled by one.

use std::ops::Range;

use wirewarden_mask::Profile;

/// Whether a value `profile` finds in `text` once its character references are decoded is
/// made, in part or whole, of a reference.
pub(crate) fn references_hide_a_value(profile: &Profile, text: &[u8]) -> bool {
    let Some((decoded, refs)) = decode(text) else {
        return false;
    };
    profile.detect(&decoded).into_iter().any(|(found, _)| {
        // The first reference that ends after the finding starts.
        let i = refs.partition_point(|r| r.end <= found.start);
        refs.get(i).is_some_and(|r| r.start < found.end)
    })
}

/// `text` with its character references decoded, and where (in the decoded bytes) each
/// decoded reference lies; `None` when it has none.
fn decode(text: &[u8]) -> Option<(Vec<u8>, Vec<Range<usize>>)> {
    let mut at = memchr::memchr(b'&', text)?;
    let mut decoded = Vec::with_capacity(text.len());
    let mut refs = Vec::new();
    let mut copied = 0;
    loop {
        let tail = text.get(at..).unwrap_or_default();
        let next = match reference(tail) {
            Some((c, len)) => {
                decoded.extend_from_slice(text.get(copied..at).unwrap_or_default());
                let start = decoded.len();
                let mut buf = [0; 4];
                decoded.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                refs.push(start..decoded.len());
                copied = at.saturating_add(len);
                copied
            }
            None => at.saturating_add(1),
        };
        match text.get(next..).and_then(|rest| memchr::memchr(b'&', rest)) {
            Some(i) => at = next.saturating_add(i),
            None => break,
        }
    }
    if refs.is_empty() {
        return None;
    }
    decoded.extend_from_slice(text.get(copied..).unwrap_or_default());
    Some((decoded, refs))
}

/// The character a reference at the start of `s` (which starts with `&`) stands for, and
/// its length. Numeric references are read with or without `;`, as HTML parsers read them;
/// named ones need `;` except the few HTML reads without it.
fn reference(s: &[u8]) -> Option<(char, usize)> {
    if s.get(1) == Some(&b'#') {
        let hex = matches!(s.get(2), Some(b'x' | b'X'));
        let from = if hex { 3 } else { 2 };
        let radix = if hex { 16 } else { 10 };
        let digits = s
            .get(from..)?
            .iter()
            .take_while(|b| char::from(**b).is_digit(radix))
            .count();
        if digits == 0 {
            return None;
        }
        // Saturates far above the last code point: an overlong number is not a character.
        let value = s.get(from..from + digits)?.iter().fold(0u32, |acc, b| {
            let d = char::from(*b).to_digit(radix).unwrap_or(0);
            acc.saturating_mul(radix).saturating_add(d).min(0x11_0000)
        });
        let end = from + digits;
        let len = if s.get(end) == Some(&b';') {
            end + 1
        } else {
            end
        };
        return Some((numeric(value), len));
    }
    let name_len = s
        .get(1..)?
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    let name = s.get(1..1 + name_len)?;
    if s.get(1 + name_len) == Some(&b';')
        && let Some(&(_, c)) = NAMED.iter().find(|(n, _)| n.as_bytes() == name)
    {
        return Some((c, name_len + 2));
    }
    // HTML reads a few legacy names without `;`, even before more letters (`&ampx`).
    LEGACY
        .iter()
        .filter(|(n, _)| name.starts_with(n.as_bytes()))
        .max_by_key(|(n, _)| n.len())
        .map(|&(n, c)| (c, n.len() + 1))
}

/// A numeric reference's character as HTML reads it: `&#128;`–`&#159;` as windows-1252,
/// zero, surrogates and numbers past the last code point as U+FFFD.
fn numeric(value: u32) -> char {
    const C1: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}',
        '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}',
        '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}',
        '\u{9D}', '\u{017E}', '\u{0178}',
    ];
    if let Some(i) = value.checked_sub(0x80)
        && let Some(&c) = usize::try_from(i).ok().and_then(|i| C1.get(i))
    {
        return c;
    }
    match value {
        0 => '\u{FFFD}',
        v => char::from_u32(v).unwrap_or('\u{FFFD}'),
    }
}

/// Names HTML decodes without a `;`, of the characters below.
const LEGACY: [(&str, char); 11] = [
    ("amp", '&'),
    ("AMP", '&'),
    ("lt", '<'),
    ("LT", '<'),
    ("gt", '>'),
    ("GT", '>'),
    ("quot", '"'),
    ("QUOT", '"'),
    ("nbsp", '\u{A0}'),
    ("shy", '\u{AD}'),
    ("middot", '\u{B7}'),
];

/// Named references (XML's five and HTML's) for ASCII punctuation, spaces, dashes, dots and
/// zero-width characters: those a detector may read as part of a value.
const NAMED: &[(&str, char)] = &[
    ("amp", '&'),
    ("AMP", '&'),
    ("lt", '<'),
    ("LT", '<'),
    ("gt", '>'),
    ("GT", '>'),
    ("quot", '"'),
    ("QUOT", '"'),
    ("apos", '\''),
    ("Tab", '\t'),
    ("NewLine", '\n'),
    ("excl", '!'),
    ("num", '#'),
    ("dollar", '$'),
    ("percnt", '%'),
    ("lpar", '('),
    ("rpar", ')'),
    ("ast", '*'),
    ("midast", '*'),
    ("plus", '+'),
    ("comma", ','),
    ("period", '.'),
    ("sol", '/'),
    ("colon", ':'),
    ("semi", ';'),
    ("equals", '='),
    ("quest", '?'),
    ("commat", '@'),
    ("lsqb", '['),
    ("lbrack", '['),
    ("bsol", '\\'),
    ("rsqb", ']'),
    ("rbrack", ']'),
    ("Hat", '^'),
    ("lowbar", '_'),
    ("UnderBar", '_'),
    ("grave", '`'),
    ("DiacriticalGrave", '`'),
    ("lcub", '{'),
    ("lbrace", '{'),
    ("verbar", '|'),
    ("vert", '|'),
    ("VerticalLine", '|'),
    ("rcub", '}'),
    ("rbrace", '}'),
    ("nbsp", '\u{A0}'),
    ("NonBreakingSpace", '\u{A0}'),
    ("shy", '\u{AD}'),
    ("middot", '\u{B7}'),
    ("centerdot", '\u{B7}'),
    ("CenterDot", '\u{B7}'),
    ("ensp", '\u{2002}'),
    ("emsp", '\u{2003}'),
    ("emsp13", '\u{2004}'),
    ("emsp14", '\u{2005}'),
    ("numsp", '\u{2007}'),
    ("puncsp", '\u{2008}'),
    ("thinsp", '\u{2009}'),
    ("ThinSpace", '\u{2009}'),
    ("hairsp", '\u{200A}'),
    ("VeryThinSpace", '\u{200A}'),
    ("ZeroWidthSpace", '\u{200B}'),
    ("NegativeVeryThinSpace", '\u{200B}'),
    ("NegativeThinSpace", '\u{200B}'),
    ("NegativeMediumSpace", '\u{200B}'),
    ("NegativeThickSpace", '\u{200B}'),
    ("zwnj", '\u{200C}'),
    ("zwj", '\u{200D}'),
    ("lrm", '\u{200E}'),
    ("rlm", '\u{200F}'),
    ("hyphen", '\u{2010}'),
    ("dash", '\u{2010}'),
    ("ndash", '\u{2013}'),
    ("mdash", '\u{2014}'),
    ("horbar", '\u{2015}'),
    ("nldr", '\u{2025}'),
    ("hellip", '\u{2026}'),
    ("mldr", '\u{2026}'),
    ("MediumSpace", '\u{205F}'),
    ("NoBreak", '\u{2060}'),
    ("ApplyFunction", '\u{2061}'),
    ("af", '\u{2061}'),
    ("InvisibleTimes", '\u{2062}'),
    ("it", '\u{2062}'),
    ("InvisibleComma", '\u{2063}'),
    ("ic", '\u{2063}'),
    ("minus", '\u{2212}'),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> String {
        decode(text.as_bytes())
            .map(|(d, _)| String::from_utf8(d).unwrap())
            .unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn references_decode_as_parsers_read_them() {
        assert_eq!(decoded("&#x31;23-45-6789"), "123-45-6789");
        assert_eq!(decoded("&#49;23&#X2d;45"), "123-45");
        assert_eq!(decoded("ada&#64;example&period;com"), "ada@example.com");
        assert_eq!(
            decoded("a&commat;b&num;&hyphen;&dash;"),
            "a@b#\u{2010}\u{2010}"
        );
        assert_eq!(decoded("&#49&#50 x"), "12 x");
        assert_eq!(decoded("4111&nbsp;1&nbsp1"), "4111\u{A0}1\u{A0}1");
        assert_eq!(decoded("&amp;&lt;&gt;&quot;&apos;&#39;"), "&<>\"''");
        assert_eq!(
            decoded("&#150;&#0;&#xD800;&#99999999999;"),
            "\u{2013}\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        // Not references, or not ones a detector cares about: left as they are.
        assert_eq!(
            decoded("a & b &# &#x; &eacute; &unknown;"),
            "a & b &# &#x; &eacute; &unknown;"
        );
        assert_eq!(decoded("&ampx &notalegacy"), "&x &notalegacy");
    }

    #[test]
    fn a_value_made_of_references_is_found() {
        let p = Profile::builder("t").build().unwrap();
        for hidden in [
            "<ssn>&#x31;23-45-6789</ssn>",
            "<p>ada&#64;example.com</p>",
            "<p>ada&commat;example&period;com</p>",
            "4111&#x20;1111 1111 1111",
            "4111&nbsp;1111&nbsp;1111&nbsp;1111",
            "&#49;23-45-6789",
            "&#52;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;",
            "123&hyphen;45&dash;6789",
            "4111&#150;1111&#150;1111&#150;1111",
        ] {
            assert!(references_hide_a_value(&p, hidden.as_bytes()), "{hidden}");
        }
        for plain in [
            "<p>Tom &amp; Jerry &lt;3 &quot;cats&quot; don&#39;t&nbsp;care</p>",
            "<p>no refs at all, [REDACTED] and 42</p>",
            "<a href=\"?a=1&amp;b=2\">x</a> &copy; 2024&nbsp;&mdash; all rights",
        ] {
            assert!(!references_hide_a_value(&p, plain.as_bytes()), "{plain}");
        }
    }
}
