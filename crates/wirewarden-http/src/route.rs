//! Route templates and request → command.
//!
//! A [`Routes`] table is an ordered list of [`Route`]s, each a method (or any) and a template
//! such as `/customers/{id}/orders/{order}` or `/files/{*rest}`. The first route whose method
//! and template match a request names it: its template becomes the command's object, so a
//! policy is written against `/customers/{id}` and not against every customer id.
//!
//! Paths are checked before matching. Anything an upstream might read differently from the
//! matcher — dot segments, encoded slashes or backslashes, encoded unreserved characters,
//! empty segments, `;` path parameters, control bytes, invalid or overlong UTF-8 — is refused
//! with 400 `ambiguous_path`, because a path the matcher sees as `/public/..%2fadmin` and the
//! upstream as `/admin` is a policy bypass.
//!
//! Percent-decoding: literal segments of a template are compared with the path as sent, byte
//! for byte (after the checks above, a segment that contains a percent-encoding can only
//! match a parameter). Parameter values are percent-decoded once into UTF-8, and a value that
//! still holds an encoded dot, slash, backslash or NUL after that (`%252e`) is refused, so a
//! parameter never carries something a second decoding would turn into path syntax. The
//! command text keeps the request target exactly as sent.

use http::{Method, Uri};
use wirewarden_core::{Access, Command, CommandClass, ObjectKind, ObjectRef, Protocol};

use crate::Rejection;

/// A route template could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The template does not start with `/`.
    #[error("route template {template:?} does not start with '/'")]
    NotAbsolute {
        /// The template.
        template: String,
    },
    /// A segment is empty, a dot segment, holds a percent sign or a character outside the
    /// path grammar, or is a malformed `{…}` parameter.
    #[error("route template {template:?}: invalid segment {segment:?}")]
    InvalidSegment {
        /// The template.
        template: String,
        /// The segment.
        segment: String,
    },
    /// Two parameters share a name.
    #[error("route template {template:?}: parameter {name:?} appears twice")]
    DuplicateParam {
        /// The template.
        template: String,
        /// The name.
        name: String,
    },
    /// `{*rest}` is not the last segment.
    #[error("route template {template:?}: a catch-all must be the last segment")]
    CatchAllNotLast {
        /// The template.
        template: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// One route: which method (or any), which template, and how to treat the requests it
/// names.
#[derive(Debug, Clone)]
pub struct Route {
    method: Option<Method>,
    template: String,
    class: Option<CommandClass>,
    masked: bool,
    segments: Vec<Segment>,
}

impl Route {
    /// A route for `method` (`None`: any method) and `template`: `/`-separated segments, each
    /// a literal, a `{name}` parameter (one non-empty segment) or, last, a `{*name}`
    /// catch-all (the rest of the path, possibly empty). A trailing `/` is significant.
    ///
    /// # Errors
    /// [`RouteError`] when the template is not of that form.
    pub fn new(method: Option<Method>, template: &str) -> Result<Self, RouteError> {
        let segments = compile(template)?;
        Ok(Self {
            method,
            template: template.to_owned(),
            class: None,
            // Fail closed: a route's responses are masked unless it says otherwise.
            masked: true,
            segments,
        })
    }

    /// Overrides the class the method would give.
    #[must_use]
    pub fn class(mut self, class: CommandClass) -> Self {
        self.class = Some(class);
        self
    }

    /// Whether the route's responses are masked (the default); `false` for a route whose
    /// responses may leave as the upstream wrote them.
    #[must_use]
    pub fn masked(mut self, masked: bool) -> Self {
        self.masked = masked;
        self
    }

    /// The template as written.
    #[must_use]
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The method, or `None` for any.
    #[must_use]
    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    fn matches(&self, method: &Method, segs: &[&str]) -> Option<Vec<(String, String)>> {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return None;
        }
        let mut params = Vec::new();
        let mut rest = segs;
        for seg in &self.segments {
            match seg {
                Segment::Rest(name) => {
                    params.push((name.clone(), rest.join("/")));
                    return Some(params);
                }
                Segment::Literal(lit) => {
                    let (first, tail) = rest.split_first()?;
                    if *first != lit.as_str() {
                        return None;
                    }
                    rest = tail;
                }
                Segment::Param(name) => {
                    let (first, tail) = rest.split_first()?;
                    if first.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), (*first).to_owned()));
                    rest = tail;
                }
            }
        }
        rest.is_empty().then_some(params)
    }
}

fn compile(template: &str) -> Result<Vec<Segment>, RouteError> {
    let Some(body) = template.strip_prefix('/') else {
        return Err(RouteError::NotAbsolute {
            template: template.to_owned(),
        });
    };
    let invalid = |segment: &str| RouteError::InvalidSegment {
        template: template.to_owned(),
        segment: segment.to_owned(),
    };
    let raw: Vec<&str> = body.split('/').collect();
    let count = raw.len();
    let mut out = Vec::with_capacity(count);
    let mut names: Vec<&str> = Vec::new();
    for (i, seg) in raw.into_iter().enumerate() {
        let last = i + 1 == count;
        let compiled = if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
        {
            let (rest, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            let ident = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ident {
                return Err(invalid(seg));
            }
            if names.contains(&name) {
                return Err(RouteError::DuplicateParam {
                    template: template.to_owned(),
                    name: name.to_owned(),
                });
            }
            names.push(name);
            if rest {
                if !last {
                    return Err(RouteError::CatchAllNotLast {
                        template: template.to_owned(),
                    });
                }
                Segment::Rest(name.to_owned())
            } else {
                Segment::Param(name.to_owned())
            }
        } else {
            // Empty only as the segment after a trailing slash (or the root "/").
            let empty_ok = seg.is_empty() && last;
            let ok = empty_ok
                || (!seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| is_pchar(b) && b != b'%'));
            if !ok {
                return Err(invalid(seg));
            }
            Segment::Literal(seg.to_owned())
        };
        out.push(compiled);
    }
    Ok(out)
}

/// A request matched to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The template that matched, such as `/customers/{id}`.
    pub template: String,
    /// The path parameters, in template order, percent-decoded (a catch-all holds the rest
    /// of the path, its segments decoded one by one and joined with `/`).
    pub params: Vec<(String, String)>,
    /// Whether the route's responses are to be masked.
    pub masked: bool,
}

impl RouteMatch {
    /// The value of parameter `name`.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An ordered table of routes; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// An empty table: every request is unmatched and therefore `Unknown`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a route (matched after the ones before it).
    #[must_use]
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// The routes, in matching order.
    #[must_use]
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The command for a request, and the route it matched.
    ///
    /// The command has protocol HTTP, the method as verb, the text `METHOD target` with the
    /// target exactly as requested (path and query), and one [`ObjectKind::Path`] object: the
    /// matched template, or the path when nothing matched. Its class is the route's override,
    /// else `Read` for `GET`/`HEAD`/`OPTIONS`, `Write` for `POST`/`PUT`/`PATCH`/`DELETE`, and
    /// `Unknown` for any other method and for every request no route matches.
    ///
    /// # Errors
    /// 400 `ambiguous_path` for a path the upstream might read differently (see the module
    /// documentation); 400 `malformed_request` for a target that is not a path (other than
    /// `OPTIONS *`).
    pub fn command(
        &self,
        method: &Method,
        uri: &Uri,
    ) -> Result<(Command, Option<RouteMatch>), Rejection> {
        let path = uri.path();
        let target = uri.path_and_query().map_or(path, |pq| pq.as_str());
        let text = format!("{} {}", method.as_str(), target);

        let matched = if path == "*" && *method == Method::OPTIONS {
            None
        } else {
            let segs = check_path(path)?;
            self.routes
                .iter()
                .find_map(|r| r.matches(method, &segs).map(|raw| (r, raw)))
        };

        let (class, route) = match matched {
            Some((r, raw)) => {
                let mut params = Vec::with_capacity(raw.len());
                for (name, value) in raw {
                    params.push((name, decode_param(&value)?));
                }
                let class = r.class.unwrap_or_else(|| method_class(method));
                let m = RouteMatch {
                    template: r.template.clone(),
                    params,
                    masked: r.masked,
                };
                (class, Some(m))
            }
            None => (CommandClass::Unknown, None),
        };
        let access = if class <= CommandClass::Read {
            Access::Read
        } else {
            Access::Write
        };
        let object = route.as_ref().map_or(path, |m| m.template.as_str());
        let command = Command::new(Protocol::Http, method.as_str(), class, text)
            .map_err(|e| {
                Rejection::new(
                    http::StatusCode::BAD_REQUEST,
                    "malformed_request",
                    e.to_string(),
                )
            })?
            .with_object(ObjectRef::new(ObjectKind::Path, object, access));
        Ok((command, route))
    }
}

/// The class a method gives when the route does not override it.
#[must_use]
pub fn method_class(method: &Method) -> CommandClass {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => CommandClass::Read,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => CommandClass::Write,
        _ => CommandClass::Unknown,
    }
}

/// `pchar` of RFC 3986 minus `;` (a path parameter delimiter to some servers), plus `%`.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@%".contains(&b)
}

fn ambiguous(message: &str) -> Rejection {
    Rejection::new(
        http::StatusCode::BAD_REQUEST,
        "ambiguous_path",
        format!("ambiguous path: {message}"),
    )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks a path and splits it into raw segments (without the leading `/`).
fn check_path(path: &str) -> Result<Vec<&str>, Rejection> {
    let Some(body) = path.strip_prefix('/') else {
        return Err(Rejection::new(
            http::StatusCode::BAD_REQUEST,
            "malformed_request",
            "request target is not an absolute path",
        ));
    };
    let segs: Vec<&str> = body.split('/').collect();
    let count = segs.len();
    for (i, seg) in segs.iter().enumerate() {
        if seg.is_empty() && i + 1 != count {
            return Err(ambiguous("empty segment"));
        }
        if *seg == "." || *seg == ".." {
            return Err(ambiguous("dot segment"));
        }
        let b = seg.as_bytes();
        let mut j = 0;
        let mut decoded = Vec::new();
        while let Some(&c) = b.get(j) {
            if c == b';' {
                return Err(ambiguous("';' path parameter"));
            }
            if c == b'\\' {
                return Err(ambiguous("backslash"));
            }
            if !is_pchar(c) {
                return Err(ambiguous("character outside the path grammar"));
            }
            if c == b'%' {
                let (Some(h), Some(l)) = (
                    b.get(j + 1).copied().and_then(hex),
                    b.get(j + 2).copied().and_then(hex),
                ) else {
                    return Err(ambiguous("invalid percent-encoding"));
                };
                let v = h << 4 | l;
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    return Err(ambiguous("percent-encoded unreserved character"));
                }
                match v {
                    b'/' => return Err(ambiguous("encoded slash")),
                    b'\\' => return Err(ambiguous("encoded backslash")),
                    0..=0x1f | 0x7f => return Err(ambiguous("encoded control byte")),
                    _ => {}
                }
                decoded.push(v);
                j += 3;
            } else {
                decoded.push(c);
                j += 1;
            }
        }
        // Overlong forms (`%C0%AE` for '.') and other invalid UTF-8 are refused here.
        if std::str::from_utf8(&decoded).is_err() {
            return Err(ambiguous("percent-encoding is not valid UTF-8"));
        }
    }
    Ok(segs)
}

/// Decodes a checked parameter value; refuses a value that a second decoding would turn into
/// path syntax.
fn decode_param(raw: &str) -> Result<String, Rejection> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut j = 0;
    while let Some(&c) = b.get(j) {
        if c == b'%'
            && let (Some(h), Some(l)) = (
                b.get(j + 1).copied().and_then(hex),
                b.get(j + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            j += 3;
        } else {
            out.push(c);
            j += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| ambiguous("percent-encoding is not valid UTF-8"))?;
    let lower = s.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|e| lower.contains(e))
    {
        return Err(ambiguous("double percent-encoding"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Routes {
        Routes::new()
            .route(
                Route::new(Some(Method::GET), "/customers/{id}")
                    .unwrap()
                    .masked(true),
            )
            .route(
                Route::new(None, "/customers/{id}/orders/{order}")
                    .unwrap()
                    .masked(false),
            )
            .route(
                Route::new(Some(Method::POST), "/search")
                    .unwrap()
                    .class(CommandClass::Read),
            )
            .route(Route::new(None, "/files/{*rest}").unwrap())
            .route(Route::new(Some(Method::GET), "/").unwrap())
    }

    fn cmd(m: Method, uri: &str) -> Result<(Command, Option<RouteMatch>), Rejection> {
        table().command(&m, &uri.parse().unwrap())
    }

    #[test]
    fn matches_and_builds_the_command() {
        let (c, m) = cmd(Method::GET, "/customers/42?fields=name&x=%20").unwrap();
        let m = m.unwrap();
        assert_eq!(c.protocol, Protocol::Http);
        assert_eq!(c.verb, "GET");
        assert_eq!(c.class, CommandClass::Read);
        assert_eq!(c.text, "GET /customers/42?fields=name&x=%20");
        assert_eq!(
            c.objects,
            vec![ObjectRef::new(
                ObjectKind::Path,
                "/customers/{id}",
                Access::Read
            )]
        );
        assert_eq!(m.template, "/customers/{id}");
        assert_eq!(m.param("id"), Some("42"));
        assert!(m.masked);

        let (c, m) = cmd(Method::DELETE, "/customers/7/orders/a%20b").unwrap();
        let m = m.unwrap();
        assert_eq!(c.class, CommandClass::Write);
        assert_eq!(c.objects[0].access, Access::Write);
        assert_eq!(
            m.params,
            vec![("id".into(), "7".into()), ("order".into(), "a b".into())]
        );
        assert!(!m.masked);

        let (c, _) = cmd(Method::POST, "/search").unwrap();
        assert_eq!(c.class, CommandClass::Read, "route override");

        let (_, m) = cmd(Method::GET, "/files/a/b%C3%A9/c.txt").unwrap();
        assert_eq!(m.unwrap().param("rest"), Some("a/bé/c.txt"));
        let (_, m) = cmd(Method::GET, "/files/").unwrap();
        assert_eq!(m.unwrap().param("rest"), Some(""));
        let (_, m) = cmd(Method::GET, "/").unwrap();
        assert_eq!(m.unwrap().template, "/");
    }

    #[test]
    fn unmatched_and_odd_methods_are_unknown() {
        let (c, m) = cmd(Method::GET, "/nowhere").unwrap();
        assert!(m.is_none());
        assert_eq!(c.class, CommandClass::Unknown);
        assert_eq!(c.objects[0].name, "/nowhere");
        assert_eq!(c.objects[0].access, Access::Write);
        // A GET-only route does not match PUT.
        let (c, m) = cmd(Method::PUT, "/customers/1").unwrap();
        assert!(m.is_none());
        assert_eq!(c.class, CommandClass::Unknown);
        // Trailing slash is a different path.
        assert!(cmd(Method::GET, "/customers/1/").unwrap().1.is_none());
        // Matched route, method without known semantics.
        let (c, m) = cmd(Method::TRACE, "/customers/1/orders/2").unwrap();
        assert!(m.is_some());
        assert_eq!(c.class, CommandClass::Unknown);
        let ext = Method::from_bytes(b"PURGE").unwrap();
        let (c, _) = cmd(ext, "/files/x").unwrap();
        assert_eq!(c.class, CommandClass::Unknown);
        let (c, m) = cmd(Method::OPTIONS, "*").unwrap();
        assert!(m.is_none());
        assert_eq!(c.text, "OPTIONS *");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/customers/../admin",
            "/customers/./1",
            "/customers/%2e%2e/admin",
            "/customers/%2E",
            "/customers/1%2fadmin",
            "/customers/1%2Fadmin",
            "/customers/1%5cadmin",
            "/customers//1",
            "//customers/1",
            "/customers/%00",
            "/customers/%0a",
            "/customers/%zz",
            "/customers/%4",
            "/customers/%C0%AE%C0%AE",
            "/customers/%ff",
            "/customers/%61dmin",
            "/customers/1;jsessionid=x",
            "/files/%252e%252e/etc",
            "/files/%252F",
        ] {
            let err = cmd(Method::GET, p).unwrap_err();
            assert_eq!(err.code, "ambiguous_path", "{p}");
            assert_eq!(err.status, 400);
        }
        // The http crate already refuses raw backslashes and control bytes in a target.
        assert!("/a\\b".parse::<Uri>().is_err() || cmd(Method::GET, "/a\\b").is_err());
    }

    #[test]
    fn templates_are_validated() {
        assert!(Route::new(None, "customers").is_err());
        assert!(Route::new(None, "/a//b").is_err());
        assert!(Route::new(None, "/a/../b").is_err());
        assert!(Route::new(None, "/a/%2f").is_err());
        assert!(Route::new(None, "/a/{}").is_err());
        assert!(Route::new(None, "/a/{x}/{x}").is_err());
        assert!(Route::new(None, "/a/{*x}/b").is_err());
        assert!(Route::new(None, "/a/{x y}").is_err());
        assert!(Route::new(None, "/a;b").is_err());
        assert!(Route::new(None, "/a/").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn accepted_paths_have_nothing_an_upstream_could_normalise(
            path in "/[a-zA-Z0-9%./\\\\;:@!$&'()*+,=~_-]{0,40}",
        ) {
            let Ok(uri) = path.parse::<Uri>() else { return Ok(()); };
            if let Ok((cmd, m)) = table().command(&Method::GET, &uri) {
                let p = uri.path();
                let lower = p.to_ascii_lowercase();
                proptest::prop_assert!(!p.contains("//") && !p.contains(';') && !p.contains('\\'));
                proptest::prop_assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
                proptest::prop_assert!(p.split('/').all(|seg| seg != "." && seg != ".."));
                proptest::prop_assert_eq!(cmd.text, format!("GET {}", uri.path_and_query().unwrap().as_str()));
                if let Some(m) = m {
                    proptest::prop_assert!(m.params.iter().all(|(_, v)| !v.split('/').any(|s| s == ".." || s == ".")));
                }
            }
        }
    }
}
