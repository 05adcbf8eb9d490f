//! Field rules: mask a value because of where it came from (a column, a Redis key, a JSON
//! path, an HTTP header), whatever it contains.

use std::borrow::Cow;
use std::fmt;

use crate::{Error, Result};

/// Where a value came from, as the caller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field<'a> {
    /// No particular source: free text, a message, a body.
    Unknown,
    /// A column of a result set; `table` when the caller knows it.
    Column {
        /// The table (or relation) name, if known.
        table: Option<&'a str>,
        /// The column name.
        column: &'a str,
    },
    /// The value stored under a Redis key.
    RedisKey(&'a [u8]),
    /// An HTTP header value.
    Header(&'a str),
}

/// A glob: `*` any run, `?` one character, `[a-z]`/`[!x]` classes, `\` escapes.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<u8>,
    case_insensitive: bool,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", String::from_utf8_lossy(&self.pattern))
    }
}

impl Glob {
    /// A glob matched byte for byte (Redis keys).
    #[must_use]
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.as_bytes().to_vec(),
            case_insensitive: false,
        }
    }

    /// A glob that ignores ASCII case (SQL identifiers, header names).
    #[must_use]
    pub fn case_insensitive(pattern: &str) -> Self {
        Self {
            pattern: pattern.as_bytes().to_vec(),
            case_insensitive: true,
        }
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> String {
        String::from_utf8_lossy(&self.pattern).into_owned()
    }

    /// Whether `s` matches the whole pattern.
    #[must_use]
    pub fn matches(&self, s: &[u8]) -> bool {
        // Iterative matcher with one backtrack point per star: linear in practice, and
        // never recursive on hostile patterns or keys.
        let p = &self.pattern;
        let (mut pi, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            let sc = s[si];
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                Some(b'?') => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                Some(b'[') => {
                    if let Some((ok, next)) = self.class(pi, sc) {
                        if ok {
                            pi = next;
                            si += 1;
                            continue;
                        }
                    } else if self.eq(b'[', sc) {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                Some(b'\\') if pi + 1 < p.len() && self.eq(p[pi + 1], sc) => {
                    pi += 2;
                    si += 1;
                    continue;
                }
                Some(b'\\') if pi + 1 < p.len() => {}
                Some(&c) if self.eq(c, sc) => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                Some(_) => {}
                None => {}
            }
            match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            }
        }
        while p.get(pi) == Some(&b'*') {
            pi += 1;
        }
        pi == p.len()
    }

    fn eq(&self, a: u8, b: u8) -> bool {
        if self.case_insensitive {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    }

    /// A `[...]` class at `pi`: whether `c` is in it and where the pattern continues, or
    /// `None` if the class is not closed (then `[` is literal).
    fn class(&self, pi: usize, c: u8) -> Option<(bool, usize)> {
        let p = &self.pattern;
        let mut i = pi + 1;
        let negate = matches!(p.get(i), Some(b'!' | b'^'));
        if negate {
            i += 1;
        }
        let mut hit = false;
        let mut first = true;
        loop {
            let x = *p.get(i)?;
            if x == b']' && !first {
                return Some((hit != negate, i + 1));
            }
            first = false;
            let (lo, step) = if x == b'\\' {
                (*p.get(i + 1)?, 2)
            } else {
                (x, 1)
            };
            i += step;
            if p.get(i) == Some(&b'-') && p.get(i + 1).is_some_and(|y| *y != b']') {
                let hi = *p.get(i + 1)?;
                i += 2;
                let (lo, hi, c) = if self.case_insensitive {
                    (
                        lo.to_ascii_lowercase(),
                        hi.to_ascii_lowercase(),
                        c.to_ascii_lowercase(),
                    )
                } else {
                    (lo, hi, c)
                };
                hit |= (lo..=hi).contains(&c);
            } else {
                hit |= self.eq(lo, c);
            }
        }
    }
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// An object member whose name matches (`.name`, `.*`, `['na me']`).
    Key(Glob),
    /// An array element (`[3]`, `[*]`).
    Index(Option<usize>),
}

/// A JSON path: `$.user.ssn`, `$..password`, `$.items[*].card`, `$..*token*`. Member names
/// are globs matched ignoring ASCII case, as column and header names are: a rule on `ssn`
/// masks `SSN` and `Ssn` too, so an API that spells a key differently does not sidestep it;
/// `..` matches at any depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<(bool, Step)>,
}

/// One element of the path to a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathElem<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

impl JsonPath {
    /// Parses a JSON path.
    ///
    /// # Errors
    /// [`Error::Config`] if the path does not start with `$` or a step is malformed.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(format!("json path {text:?}"), why);
        let rest = text
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with $"))?;
        let b = rest.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let mut deep = false;
            match b[i] {
                b'.' => {
                    i += 1;
                    if b.get(i) == Some(&b'.') {
                        deep = true;
                        i += 1;
                    }
                    if b.get(i) == Some(&b'[') {
                        continue_bracket(b, &mut i, deep, &mut steps).map_err(bad)?;
                        continue;
                    }
                    let start = i;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        i += 1;
                    }
                    let name = rest.get(start..i).ok_or_else(|| bad("bad name"))?;
                    if name.is_empty() {
                        return Err(bad("empty member name"));
                    }
                    steps.push((deep, Step::Key(Glob::case_insensitive(name))));
                }
                b'[' => continue_bracket(b, &mut i, false, &mut steps).map_err(bad)?,
                _ => return Err(bad("expected . or [")),
            }
        }
        if steps.is_empty() {
            return Err(bad("the whole document is not a field"));
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    /// The path as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn matches(&self, path: &[PathElem<'_>]) -> bool {
        fn go(steps: &[(bool, Step)], path: &[PathElem<'_>]) -> bool {
            let Some(((deep, step), rest)) = steps.split_first() else {
                return path.is_empty();
            };
            let hit = |e: &PathElem<'_>| match (step, e) {
                (Step::Key(g), PathElem::Key(k)) => g.matches(k.as_bytes()),
                (Step::Index(None), PathElem::Index(_)) => true,
                (Step::Index(Some(n)), PathElem::Index(i)) => n == i,
                _ => false,
            };
            if *deep {
                (0..path.len()).any(|skip| {
                    path.get(skip).is_some_and(hit) && go(rest, path.get(skip + 1..).unwrap_or(&[]))
                })
            } else {
                path.first().is_some_and(hit) && go(rest, path.get(1..).unwrap_or(&[]))
            }
        }
        go(&self.steps, path)
    }
}

fn continue_bracket(
    b: &[u8],
    i: &mut usize,
    deep: bool,
    steps: &mut Vec<(bool, Step)>,
) -> Result<(), &'static str> {
    // At '['.
    let close = b
        .get(*i..)
        .and_then(|s| s.iter().position(|c| *c == b']'))
        .ok_or("unclosed [")?;
    let inner = b.get(*i + 1..*i + close).ok_or("bad [")?;
    let inner = std::str::from_utf8(inner).map_err(|_| "bad [")?;
    let step = if inner == "*" {
        Step::Index(None)
    } else if let Ok(n) = inner.parse::<usize>() {
        Step::Index(Some(n))
    } else if let Some(q) = inner
        .strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
    {
        Step::Key(Glob::case_insensitive(q))
    } else {
        return Err("expected [n], [*] or ['name']");
    };
    steps.push((deep, step));
    *i += close + 1;
    Ok(())
}

/// What a field rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// Columns whose name matches `column` (and whose table matches `table`, when given and
    /// known), ignoring ASCII case. `*ssn*` masks every column with `ssn` in its name.
    Column {
        /// Table name pattern; `None` for any table.
        table: Option<Glob>,
        /// Column name pattern.
        column: Glob,
    },
    /// Values of Redis keys matching the glob (case-sensitive, as in Redis).
    RedisKey(Glob),
    /// JSON values at the path, in any JSON the profile masks.
    JsonPath(JsonPath),
    /// HTTP header values by header name pattern (case-insensitive).
    Header(Glob),
}

impl Selector {
    /// A column selector from `column` or `table.column`, each part a glob.
    #[must_use]
    pub fn column(spec: &str) -> Self {
        match spec.rsplit_once('.') {
            Some((t, c)) => Self::Column {
                table: Some(Glob::case_insensitive(t)),
                column: Glob::case_insensitive(c),
            },
            None => Self::Column {
                table: None,
                column: Glob::case_insensitive(spec),
            },
        }
    }

    /// A Redis key selector.
    #[must_use]
    pub fn redis_key(glob: &str) -> Self {
        Self::RedisKey(Glob::new(glob))
    }

    /// A header selector.
    #[must_use]
    pub fn header(name: &str) -> Self {
        Self::Header(Glob::case_insensitive(name))
    }

    /// A JSON path selector.
    ///
    /// # Errors
    /// [`Error::Config`] if the path is malformed.
    pub fn json_path(path: &str) -> Result<Self> {
        JsonPath::parse(path).map(Self::JsonPath)
    }

    /// The entity name reported for values this selector masks (`column:*ssn*`).
    #[must_use]
    pub fn entity(&self) -> String {
        match self {
            Self::Column { table, column } => match table {
                Some(t) => format!("column:{}.{}", t.as_str(), column.as_str()),
                None => format!("column:{}", column.as_str()),
            },
            Self::RedisKey(g) => format!("redis_key:{}", g.as_str()),
            Self::JsonPath(p) => format!("json_path:{}", p.as_str()),
            Self::Header(g) => format!("header:{}", g.as_str()),
        }
    }

    pub(crate) fn matches_field(&self, field: &Field<'_>) -> bool {
        match (self, field) {
            (
                Self::Column { table, column },
                Field::Column {
                    table: t,
                    column: c,
                },
            ) => {
                column.matches(c.as_bytes())
                    && match (table, t) {
                        (None, _) => true,
                        (Some(g), Some(t)) => g.matches(t.as_bytes()),
                        // A rule for one table cannot tell whether an unqualified column is
                        // that table's: mask it (fail closed).
                        (Some(_), None) => true,
                    }
            }
            (Self::RedisKey(g), Field::RedisKey(k)) => g.matches(k),
            (Self::Header(g), Field::Header(h)) => g.matches(h.as_bytes()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = Glob::case_insensitive("*ssn*");
        assert!(g.matches(b"customer_SSN"));
        assert!(g.matches(b"ssn"));
        assert!(!g.matches(b"sn"));
        let r = Glob::new("session:*:token");
        assert!(r.matches(b"session:42:token"));
        assert!(!r.matches(b"session:42:Token"));
        assert!(!r.matches(b"session:42:token2"));
        assert!(Glob::new("user:[0-9]?").matches(b"user:7x"));
        assert!(!Glob::new("user:[!0-9]").matches(b"user:7"));
        assert!(Glob::new(r"a\*b").matches(b"a*b"));
        assert!(!Glob::new(r"a\*b").matches(b"axb"));
        assert!(Glob::new("[").matches(b"["));
        assert!(Glob::new("*a*a*a*a*b").matches(b"aaaaaaaaaaaaaaaaaaaaab"));
        assert!(!Glob::new("*a*a*a*a*b").matches(&[b'a'; 4000]));
        assert!(Glob::new("").matches(b""));
    }

    #[test]
    fn json_paths() {
        use PathElem::Index;
        #[allow(non_snake_case)]
        fn Key(k: &str) -> PathElem<'_> {
            PathElem::Key(Cow::Borrowed(k))
        }
        let p = JsonPath::parse("$.user.ssn").unwrap();
        assert!(p.matches(&[Key("user"), Key("ssn")]));
        assert!(!p.matches(&[Key("user")]));
        assert!(!p.matches(&[Key("x"), Key("user"), Key("ssn")]));
        // Member names ignore ASCII case, as column and header names do.
        assert!(p.matches(&[Key("User"), Key("SSN")]));
        let p = JsonPath::parse("$..password").unwrap();
        assert!(p.matches(&[Key("a"), Index(3), Key("password")]));
        assert!(p.matches(&[Key("PassWord")]));
        assert!(p.matches(&[Key("password")]));
        let p = JsonPath::parse("$.items[*].card").unwrap();
        assert!(p.matches(&[Key("items"), Index(0), Key("card")]));
        assert!(!p.matches(&[Key("items"), Key("card")]));
        let p = JsonPath::parse("$['odd key'][2]").unwrap();
        assert!(p.matches(&[Key("odd key"), Index(2)]));
        assert!(
            JsonPath::parse("$..*token*")
                .unwrap()
                .matches(&[Key("x"), Key("api_token")])
        );
        for bad in ["user.ssn", "$", "$.", "$[x]", "$[1"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors() {
        let s = Selector::column("customers.email");
        assert!(s.matches_field(&Field::Column {
            table: Some("Customers"),
            column: "EMAIL"
        }));
        assert!(!s.matches_field(&Field::Column {
            table: Some("orders"),
            column: "email"
        }));
        assert!(s.matches_field(&Field::Column {
            table: None,
            column: "email"
        }));
        assert!(!s.matches_field(&Field::Header("email")));
        let h = Selector::header("authorization");
        assert!(h.matches_field(&Field::Header("Authorization")));
        assert_eq!(h.entity(), "header:authorization");
        assert!(Selector::redis_key("sess:*").matches_field(&Field::RedisKey(b"sess:1")));
    }
}
