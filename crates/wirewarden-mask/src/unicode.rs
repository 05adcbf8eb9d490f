//! The few Unicode facts the detectors need: decimal digits by numeric value, separators
//! (spaces and dashes of every script) and ignorable format characters that an evasive value
//! may hide between its digits.

/// First code point (value zero) of every run of ten Unicode decimal digits (category Nd)
/// outside ASCII, sorted.
const DIGIT_ZEROS: &[u32] = &[
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

/// The numeric value of a decimal digit of any script (`'7'`, `'７'`, `'٧'`, `'𝟕'`).
#[must_use]
pub(crate) fn digit_value(c: char) -> Option<u8> {
    let cp = c as u32;
    if c.is_ascii_digit() {
        return Some((cp - u32::from(b'0')) as u8);
    }
    if cp < 0x660 {
        return None;
    }
    let idx = DIGIT_ZEROS.partition_point(|&z| z <= cp);
    let zero = *DIGIT_ZEROS.get(idx.checked_sub(1)?)?;
    let v = cp - zero;
    (v < 10).then_some(v as u8)
}

/// The code point of `value` in the same script as the digit `like` (so a masked fullwidth
/// digit stays fullwidth).
#[must_use]
pub(crate) fn digit_like(like: char, value: u8) -> char {
    let cp = like as u32;
    let zero = if like.is_ascii_digit() {
        u32::from(b'0')
    } else {
        match digit_value(like) {
            Some(v) => cp - u32::from(v),
            None => u32::from(b'0'),
        }
    };
    char::from_u32(zero + u32::from(value % 10)).unwrap_or('0')
}

/// Characters that render as nothing (or almost nothing) and may be slipped between digits:
/// format characters (zero-width space/joiners, word joiner, BOM, soft hyphen, bidi marks),
/// variation selectors and combining marks.
#[must_use]
pub(crate) fn is_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{0300}'..='\u{036F}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// Visible characters that may separate groups of digits: spaces of every width, hyphens and
/// dashes, dots and parentheses (ASCII and fullwidth forms).
#[must_use]
pub(crate) fn is_digit_separator(c: char) -> bool {
    matches!(c,
        ' ' | '-' | '.' | '(' | ')'
        | '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
        | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}'
        | '\u{2024}' | '\u{FF0E}' | '\u{3002}' | '\u{FF61}' | '\u{FF08}' | '\u{FF09}' | '\u{30FB}'
        | '\u{00B7}')
}

/// Decodes the character starting at byte `i`, if `bytes[i..]` starts with a well-formed
/// UTF-8 sequence. Works on byte slices that are not known to be UTF-8 (binary values).
#[must_use]
pub(crate) fn char_at(bytes: &[u8], i: usize) -> Option<(char, usize)> {
    let b0 = *bytes.get(i)?;
    if b0 < 0x80 {
        return Some((char::from(b0), 1));
    }
    let len = match b0 {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let end = i.checked_add(len)?;
    let s = std::str::from_utf8(bytes.get(i..end)?).ok()?;
    let c = s.chars().next()?;
    Some((c, len))
}

/// Decodes the character that ends just before byte `end`.
#[must_use]
pub(crate) fn char_before(bytes: &[u8], end: usize) -> Option<(char, usize)> {
    let mut start = end.checked_sub(1)?;
    let mut n = 0;
    while n < 3 && bytes.get(start).is_some_and(|b| b & 0xC0 == 0x80) {
        start = start.checked_sub(1)?;
        n += 1;
    }
    let (c, len) = char_at(bytes, start)?;
    (start + len == end).then_some((c, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_by_value() {
        assert_eq!(digit_value('7'), Some(7));
        assert_eq!(digit_value('７'), Some(7));
        assert_eq!(digit_value('٣'), Some(3));
        assert_eq!(digit_value('३'), Some(3));
        assert_eq!(digit_value('𝟘'), Some(0));
        assert_eq!(digit_value('a'), None);
        assert_eq!(digit_value('½'), None);
        assert_eq!(digit_value('Ⅳ'), None);
        assert_eq!(digit_like('７', 3), '３');
        assert_eq!(digit_like('7', 3), '3');
    }

    #[test]
    fn every_std_numeric_digit_run_is_known() {
        // Every char std considers numeric and that sits in a run of ten with our table must
        // agree with the table: a spot check across the whole range.
        let mut found = 0;
        for cp in 0x80..0x2_0000u32 {
            if let Some(c) = char::from_u32(cp)
                && let Some(v) = digit_value(c)
            {
                assert!(c.is_numeric(), "{cp:#x}");
                assert!(v < 10);
                found += 1;
            }
        }
        assert_eq!(found, DIGIT_ZEROS.len() * 10);
    }

    #[test]
    fn separators_and_ignorables() {
        for c in [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}',
        ] {
            assert!(is_ignorable(c));
            assert!(!is_digit_separator(c));
        }
        for c in [
            ' ', '-', '\u{00A0}', '\u{2007}', '\u{3000}', '\u{2013}', '\u{FF0D}',
        ] {
            assert!(is_digit_separator(c));
        }
        assert!(!is_digit_separator('a'));
    }

    #[test]
    fn decoding() {
        let s = "a７\u{200B}b".as_bytes();
        assert_eq!(char_at(s, 1), Some(('７', 3)));
        assert_eq!(char_at(s, 2), None);
        assert_eq!(char_before(s, 4), Some(('７', 3)));
        assert_eq!(char_before(s, 7), Some(('\u{200B}', 3)));
        assert_eq!(char_at(&[0xFF], 0), None);
    }
}
