//! User-defined detectors: a shape pattern or a dictionary of words, with an optional
//! validator.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::detect::{Finding, Kind, luhn_valid};
use crate::unicode::{char_at, char_before, digit_value, is_digit_separator, is_ignorable};
use crate::{Error, Result};

/// Checks a candidate found by a custom detector.
#[derive(Clone)]
#[non_exhaustive]
pub enum Validator {
    /// Luhn checksum over the candidate's digits.
    Luhn,
    /// ISO 7064 mod 97-10 over the candidate's letters and digits (letters count 10–35),
    /// moving the first four characters to the end first, as IBANs do.
    Mod97,
    /// Any check written by the embedder.
    Custom(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Luhn => f.write_str("Luhn"),
            Self::Mod97 => f.write_str("Mod97"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Validator {
    /// A validator by configuration name (`luhn`, `mod97`).
    ///
    /// # Errors
    /// [`Error::Config`] for any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "luhn" => Ok(Self::Luhn),
            "mod97" => Ok(Self::Mod97),
            _ => Err(Error::config(
                "validator",
                format!("unknown validator {name:?}"),
            )),
        }
    }

    fn check(&self, s: &str) -> bool {
        match self {
            Self::Luhn => {
                let d: Vec<u8> = s.chars().filter_map(digit_value).collect();
                luhn_valid(&d)
            }
            Self::Mod97 => {
                let chars: Vec<char> = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
                if chars.len() < 5 {
                    return false;
                }
                let mut rem = 0u32;
                for c in chars.iter().skip(4).chain(chars.iter().take(4)) {
                    match c.to_digit(36) {
                        Some(v) if v < 10 => rem = (rem * 10 + v) % 97,
                        Some(v) => rem = (rem * 100 + v) % 97,
                        None => return false,
                    }
                }
                rem == 1
            }
            Self::Custom(f) => f(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Lit(char),
    Digit,
    Letter,
    Word,
    Hex,
    Sep,
}

impl Class {
    fn accepts(self, c: char) -> bool {
        match self {
            Self::Lit(l) => l == c,
            Self::Digit => digit_value(c).is_some(),
            Self::Letter => c.is_alphabetic(),
            Self::Word => c.is_alphanumeric() || c == '_',
            Self::Hex => c.is_ascii_hexdigit() || digit_value(c).is_some(),
            Self::Sep => is_digit_separator(c) || is_ignorable(c),
        }
    }
}

/// A shape pattern: literals and classes with counts.
///
/// `\d` a digit of any script, `\a` a letter, `\w` a letter, digit or `_`, `\x` a hex digit,
/// `\s` a separator (space, dash, dot, zero-width character); any other character is itself
/// (`\\`, `\{` escape). A class or literal may be followed by `{n}`, `{n,m}`, `?` (0–1) or
/// `+` (1–64). Repetitions are greedy and possessive (no backtracking), and a match must start
/// and end at word boundaries. `EMP-\d{6}` finds `EMP-004211`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    elems: Vec<(Class, usize, usize)>,
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// [`Error::Config`] if it is empty, has an unknown escape or a malformed count.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(format!("pattern {text:?}"), why);
        let mut elems: Vec<(Class, usize, usize)> = Vec::new();
        let mut it = text.chars().peekable();
        while let Some(c) = it.next() {
            let class = match c {
                '\\' => match it.next().ok_or_else(|| bad("trailing \\"))? {
                    'd' => Class::Digit,
                    'a' => Class::Letter,
                    'w' => Class::Word,
                    'x' => Class::Hex,
                    's' => Class::Sep,
                    e if !e.is_alphanumeric() => Class::Lit(e),
                    _ => return Err(bad("unknown escape")),
                },
                '{' | '}' | '?' | '+' => return Err(bad("count without an element")),
                c => Class::Lit(c),
            };
            let (min, max) = match it.peek() {
                Some('?') => {
                    it.next();
                    (0, 1)
                }
                Some('+') => {
                    it.next();
                    (1, 64)
                }
                Some('{') => {
                    it.next();
                    let mut spec = String::new();
                    for c in it.by_ref() {
                        if c == '}' {
                            break;
                        }
                        spec.push(c);
                    }
                    let num = |s: &str| s.trim().parse::<usize>().map_err(|_| bad("bad count"));
                    let (a, b) = match spec.split_once(',') {
                        Some((a, b)) => (num(a)?, num(b)?),
                        None => (num(&spec)?, num(&spec)?),
                    };
                    if a > b || b == 0 || b > 256 {
                        return Err(bad("count out of range"));
                    }
                    (a, b)
                }
                _ => (1, 1),
            };
            elems.push((class, min, max));
        }
        if elems.iter().all(|(_, min, _)| *min == 0) {
            return Err(bad("matches the empty string"));
        }
        Ok(Self {
            text: text.to_owned(),
            elems,
        })
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The end of a match starting at byte `i`, if one does.
    fn match_at(&self, b: &[u8], mut i: usize) -> Option<usize> {
        let start = i;
        for (class, min, max) in &self.elems {
            let mut n = 0;
            while n < *max {
                match char_at(b, i) {
                    Some((c, l)) if class.accepts(c) => {
                        i += l;
                        n += 1;
                    }
                    _ => break,
                }
            }
            if n < *min {
                return None;
            }
        }
        let boundary = char_at(b, i).is_none_or(|(c, _)| !c.is_alphanumeric());
        (i > start && boundary).then_some(i)
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    Pattern(Pattern),
    Dictionary {
        words: HashSet<String>,
        min_chars: usize,
        max_chars: usize,
    },
}

/// A detector defined by the embedder or the configuration.
#[derive(Debug, Clone)]
pub struct CustomDetector {
    name: String,
    matcher: Matcher,
    validator: Option<Validator>,
}

impl CustomDetector {
    /// A detector named `name` (its entity name) that finds `pattern`.
    ///
    /// # Errors
    /// [`Error::Config`] if the pattern is malformed or the name empty.
    pub fn pattern(name: &str, pattern: &str) -> Result<Self> {
        Self::named(name, Matcher::Pattern(Pattern::parse(pattern)?))
    }

    /// A detector named `name` that finds any of `words` as a whole word, ignoring case.
    ///
    /// # Errors
    /// [`Error::Config`] if there are no words, a word is not a single word, or the name is
    /// empty.
    pub fn dictionary<I, S>(name: &str, words: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words: HashSet<String> = words
            .into_iter()
            .map(|w| w.as_ref().to_lowercase())
            .collect();
        if words.is_empty() {
            return Err(Error::config(format!("dictionary {name}"), "no words"));
        }
        if let Some(w) = words
            .iter()
            .find(|w| w.is_empty() || !w.chars().all(char::is_alphanumeric))
        {
            return Err(Error::config(
                format!("dictionary {name}"),
                format!("{w:?} is not a single word of letters and digits"),
            ));
        }
        let lens = words.iter().map(|w| w.chars().count());
        let min_chars = lens.clone().min().unwrap_or(0);
        let max_chars = lens.max().unwrap_or(0);
        Self::named(
            name,
            Matcher::Dictionary {
                words,
                min_chars,
                max_chars,
            },
        )
    }

    fn named(name: &str, matcher: Matcher) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::config("custom detector", "empty name"));
        }
        Ok(Self {
            name: name.to_owned(),
            matcher,
            validator: None,
        })
    }

    /// Accept a candidate only if `v` accepts it.
    #[must_use]
    pub fn with_validator(mut self, v: Validator) -> Self {
        self.validator = Some(v);
        self
    }

    /// The entity name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn valid(&self, s: &str) -> bool {
        self.validator.as_ref().is_none_or(|v| v.check(s))
    }

    /// Appends this detector's findings in `text` (tagged with `index`) to `out`.
    pub(crate) fn scan(&self, index: usize, text: &[u8], out: &mut Vec<Finding>) {
        let at_boundary = |i: usize| char_before(text, i).is_none_or(|(c, _)| !c.is_alphanumeric());
        let mut push = |s: usize, e: usize| {
            let ok = text
                .get(s..e)
                .and_then(|t| std::str::from_utf8(t).ok())
                .is_some_and(|t| self.valid(t));
            if ok {
                out.push(Finding {
                    start: s,
                    end: e,
                    kind: Kind::Custom(index),
                });
            }
            ok
        };
        match &self.matcher {
            Matcher::Pattern(p) => {
                let first_lit = match p.elems.first() {
                    Some((Class::Lit(c), min, _)) if *min >= 1 => Some(*c),
                    _ => None,
                };
                let mut i = 0;
                while i < text.len() {
                    if let Some(c) = first_lit {
                        let mut buf = [0u8; 4];
                        let lit = c.encode_utf8(&mut buf).as_bytes();
                        match memchr::memmem::find(text.get(i..).unwrap_or_default(), lit) {
                            Some(off) => i += off,
                            None => return,
                        }
                    }
                    let step = char_at(text, i).map_or(1, |(_, l)| l);
                    if at_boundary(i)
                        && let Some(e) = p.match_at(text, i)
                        && push(i, e)
                    {
                        i = e;
                        continue;
                    }
                    i += step;
                }
            }
            Matcher::Dictionary {
                words,
                min_chars,
                max_chars,
            } => {
                let mut i = 0;
                let mut word = String::new();
                while i < text.len() {
                    let Some((c, l)) = char_at(text, i) else {
                        i += 1;
                        continue;
                    };
                    if !c.is_alphanumeric() {
                        i += l;
                        continue;
                    }
                    let s = i;
                    let mut n = 0;
                    while let Some((c, l)) = char_at(text, i).filter(|(c, _)| c.is_alphanumeric()) {
                        let _ = c;
                        i += l;
                        n += 1;
                    }
                    if (*min_chars..=*max_chars).contains(&n) {
                        word.clear();
                        if let Some(w) = text.get(s..i).and_then(|t| std::str::from_utf8(t).ok()) {
                            word.extend(w.chars().flat_map(char::to_lowercase));
                            if words.contains(&word) {
                                push(s, i);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(d: &CustomDetector, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        d.scan(0, text.as_bytes(), &mut out);
        out.iter()
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    }

    #[test]
    fn patterns() {
        let d = CustomDetector::pattern("employee_id", r"EMP-\d{6}").unwrap();
        assert_eq!(
            found(&d, "id EMP-004211, EMP-12 and EMP-１２３４５６."),
            ["EMP-004211", "EMP-１２３４５６"]
        );
        assert!(found(&d, "XEMP-004211 EMP-0042111").is_empty());
        let d = CustomDetector::pattern("ticket", r"\a{2,4}\s?\d+").unwrap();
        assert_eq!(found(&d, "see AB 12 or ABCD1234"), ["AB 12", "ABCD1234"]);
        let d = CustomDetector::pattern("luhny", r"\d{4}-\d{4}")
            .unwrap()
            .with_validator(Validator::Luhn);
        assert_eq!(found(&d, "1234-5678 4111-1113"), ["4111-1113"]);
        for bad in ["", r"\q", "{3}", r"a{x}", r"a{5,2}", "a?", r"\"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dictionaries() {
        let d = CustomDetector::dictionary("codename", ["Nightjar", "bluebird"]).unwrap();
        assert_eq!(
            found(&d, "Project NIGHTJAR met bluebirds and bluebird."),
            ["NIGHTJAR", "bluebird"]
        );
        assert!(CustomDetector::dictionary("x", Vec::<String>::new()).is_err());
        assert!(CustomDetector::dictionary("x", ["two words"]).is_err());
    }

    #[test]
    fn validators() {
        assert!(Validator::Mod97.check("GB82WEST12345698765432"));
        assert!(!Validator::Mod97.check("GB82WEST12345698765433"));
        let v = Validator::Custom(Arc::new(|s: &str| s.ends_with('7')));
        assert!(v.check("17") && !v.check("18"));
        assert!(Validator::from_name("luhn").is_ok());
        assert!(Validator::from_name("crc").is_err());
    }
}
