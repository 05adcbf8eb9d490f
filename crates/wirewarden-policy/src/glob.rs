//! Glob patterns for names in rules: `*` matches any run of characters (including none and
//! including `.` and `/`), `?` matches exactly one character, everything else matches itself.
//!
//! Matching is iterative with a single backtrack point, so it runs in O(pattern × name) time
//! and never recurses, whatever a hostile pattern or name looks like.

use serde::Serialize;

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Glob(String);

impl Glob {
    /// A pattern from its text.
    #[must_use]
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes(), false)
    }

    /// Whether `name` matches, ASCII letters compared without regard to case.
    #[must_use]
    pub fn matches_ignore_ascii_case(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes(), true)
    }
}

/// Whether `name` matches the glob `pattern`, without compiling it first.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    glob_match(pattern.as_bytes(), name.as_bytes(), false)
}

/// Byte-wise glob matching. Patterns and names are UTF-8, and `?` is used for single ASCII
/// characters in practice; matching bytes keeps the algorithm free of index arithmetic on
/// char boundaries.
fn glob_match(pattern: &[u8], name: &[u8], fold: bool) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // Where the last `*` was seen, and the name position it is currently assumed to cover up
    // to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match (pattern.get(p), name.get(n)) {
            (Some(b'*'), _) => {
                star = Some((p, n));
                p += 1;
            }
            (Some(b'?'), Some(_)) => {
                p += 1;
                n += 1;
            }
            (Some(pc), Some(nc)) if pc == nc || (fold && pc.eq_ignore_ascii_case(nc)) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more byte and retry after it.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_stars_and_question_marks() {
        let g = |p: &str, n: &str| Glob::new(p).matches(n);
        assert!(g("crm", "crm"));
        assert!(!g("crm", "crm2"));
        assert!(!g("crm2", "crm"));
        assert!(g("*", ""));
        assert!(g("*", "anything/at.all"));
        assert!(g("public.*", "public.customers"));
        assert!(!g("public.*", "hr.salaries"));
        assert!(g("session:*:token", "session:42:token"));
        assert!(!g("session:*:token", "session:42:tokens"));
        assert!(g("a*b*c", "aXXbYYbZZc"));
        assert!(!g("a*b*c", "aXXbYYbZZ"));
        assert!(g("user:?", "user:7"));
        assert!(!g("user:?", "user:77"));
        assert!(g("**a", "a"));
        assert!(!g("", "a"));
        assert!(g("", ""));
    }

    #[test]
    fn pathological_patterns_finish() {
        let name = "a".repeat(5_000);
        let pattern = "*a".repeat(200) + "b";
        assert!(!Glob::new(pattern).matches(&name));
    }
}
