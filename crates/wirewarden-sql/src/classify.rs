//! Per-statement classification: class, verb, and the objects a statement touches.
//!
//! This is not a full SQL parser. It reads the token stream of each statement the way the
//! grammar would for the statements it knows, and anything it does not recognise is
//! [`CommandClass::Unknown`] — a policy that allows "up to `Write`" never lets an unparsed
//! statement through. What it can and cannot see:
//!
//! - Relations are found after `FROM`, `JOIN`, `INTO`, `UPDATE`, `DELETE FROM`, `MERGE INTO`,
//!   `USING`, `TABLE`, `COPY`, `TRUNCATE`, `LOCK` and in DDL, in subqueries and CTEs at any
//!   depth; CTE names are scoped as the server scopes them and are not reported as relations.
//! - Function calls are reported wherever they are written `name(…)`. Functions can also run
//!   through operators, casts, triggers, defaults and views, which no text-only classifier
//!   can see; a user-defined function is assumed to do what its name does not say, so policy
//!   should restrict the [`ObjectKind::Function`] objects it allows.
//! - Calls to known dangerous functions raise the class (see `tables.rs`).
//! - A statement that calls a function other than the built-ins known to read no relation
//!   (`count`, `lower`, `now`, `jsonb_build_object`, … unqualified or in `pg_catalog`) also
//!   reads and writes [`ObjectRef::ANY_RELATION`]: a user-defined function can reach any
//!   table, so a policy that allows some relations does not thereby allow it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use wirewarden_core::{Access, Command, CommandClass, ObjectKind, ObjectRef, Protocol};

use crate::lexer::{Token, TokenKind};
use crate::split::split_tokens;
use crate::tables::{self, NameKind};
use crate::{Error, LexOptions, tokenize};

use CommandClass::{Admin, Code, Privilege, Read, Schema, Session, Unknown, Write};

// === public types ===

/// One classified statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Byte range of the statement in the analysed text.
    pub range: Range<usize>,
    /// Its risk class.
    pub class: CommandClass,
    /// Its verb in uppercase (`SELECT`, `CREATE TABLE`, `SET ROLE`, `SELECT INTO`, …).
    pub verb: String,
    /// The objects it touches: relations read and written, functions executed, roles,
    /// settings, channels, in the order found, without duplicates.
    pub objects: Vec<ObjectRef>,
    /// What it does to the session's prepared statements, if anything.
    pub prepared: Option<PreparedEffect>,
    /// Why the lexer rejected it (its class is then `Unknown`).
    pub error: Option<Error>,
}

impl Statement {
    /// Whether running it may change `standard_conforming_strings`, and so how the text
    /// after it lexes: a `SET`, `RESET` or `set_config` of it, `RESET ALL`, `DISCARD ALL`.
    ///
    /// What writes the setting counts ([`Access::Write`]: the session's value, or the
    /// server's with `ALTER SYSTEM`, which a reload applies to this session too). A default
    /// stored for a role or database (`ALTER ROLE … SET`, `ALTER DATABASE … SET`) is
    /// [`Access::Define`]: it applies to sessions that start later, never to this one, so
    /// this session's text lexes as before.
    #[must_use]
    pub fn changes_lexing(&self) -> bool {
        self.objects.iter().any(|o| {
            o.kind == ObjectKind::Setting
                && o.access == Access::Write
                && o.name == "standard_conforming_strings"
        }) || matches!(self.verb.as_str(), "RESET ALL" | "DISCARD ALL")
    }

    fn names(&self, kind: ObjectKind, access: Access) -> impl Iterator<Item = &str> {
        self.objects
            .iter()
            .filter(move |o| o.kind == kind && o.access == access)
            .map(|o| o.name.as_str())
    }

    /// Relations it reads.
    pub fn reads(&self) -> impl Iterator<Item = &str> {
        self.names(ObjectKind::Relation, Access::Read)
    }

    /// Relations it writes (inserts into, updates, deletes from, truncates, locks, fills).
    pub fn writes(&self) -> impl Iterator<Item = &str> {
        self.names(ObjectKind::Relation, Access::Write)
    }

    /// Functions and procedures it calls.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.names(ObjectKind::Function, Access::Execute)
    }

    /// This statement as a [`Command`] (its text taken from `sql`, the text it was found in).
    #[must_use]
    pub fn to_command(&self, sql: &str) -> Command {
        let text = sql.get(self.range.clone()).unwrap_or(sql);
        let mut cmd = Command::new(
            Protocol::Postgres,
            verb_or_unknown(&self.verb),
            self.class,
            text,
        )
        .unwrap_or_else(|_| unknown_command(text));
        // Already free of duplicates.
        cmd.objects.clone_from(&self.objects);
        cmd
    }
}

fn verb_or_unknown(verb: &str) -> &str {
    if verb.is_empty() { "UNKNOWN" } else { verb }
}

fn unknown_command(text: &str) -> Command {
    // "UNKNOWN" is never empty, so this cannot fail; fall back to the digest of the text.
    match Command::new(Protocol::Postgres, "UNKNOWN", Unknown, text) {
        Ok(c) => c,
        Err(_) => Command {
            protocol: Protocol::Postgres,
            verb: "UNKNOWN".to_owned(),
            class: Unknown,
            text: text.to_owned(),
            objects: Vec::new(),
            digest: wirewarden_core::CommandDigest::compute(
                Protocol::Postgres,
                text.as_bytes(),
                [],
            ),
        },
    }
}

/// What a statement does to the session's names: its prepared statements, cursors and
/// savepoints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreparedEffect {
    /// `PREPARE name AS …`: `name` will run a statement classified as `statement`.
    Prepare {
        /// The prepared statement's name (folded like an identifier).
        name: String,
        /// What executing it does.
        statement: Prepared,
    },
    /// `DEALLOCATE name`, or `DEALLOCATE ALL` when `name` is `None`.
    Deallocate {
        /// The name, or `None` for all.
        name: Option<String>,
    },
    /// `DECLARE name CURSOR FOR …`: a `FETCH` from `name` reads what `statement` reads.
    DeclareCursor {
        /// The cursor's name (folded like an identifier).
        name: String,
        /// What its query does.
        statement: Prepared,
        /// Declared `WITH HOLD`: it outlives the transaction that declared it (once that
        /// commits); any other cursor ends with its transaction.
        hold: bool,
    },
    /// `CLOSE name`, or `CLOSE ALL` when `name` is `None`.
    CloseCursor {
        /// The name, or `None` for all.
        name: Option<String>,
    },
    /// `SAVEPOINT name`.
    Savepoint {
        /// The savepoint's name (folded like an identifier).
        name: String,
    },
    /// `ROLLBACK TO [SAVEPOINT] name`: undoes what the transaction did since the newest
    /// savepoint of that name (closing the cursors it declared), and keeps the savepoint.
    RollbackToSavepoint {
        /// The savepoint's name (folded like an identifier).
        name: String,
    },
    /// `RELEASE [SAVEPOINT] name`: forgets the newest savepoint of that name and every
    /// later one, and keeps what was done since.
    ReleaseSavepoint {
        /// The savepoint's name (folded like an identifier).
        name: String,
    },
}

/// What executing a prepared statement does, as registered with
/// [`Classifier::register_prepared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Its class.
    pub class: CommandClass,
    /// Its verb.
    pub verb: String,
    /// The objects it touches.
    pub objects: Vec<ObjectRef>,
}

impl From<&Statement> for Prepared {
    fn from(s: &Statement) -> Self {
        Self {
            class: s.class,
            verb: s.verb.clone(),
            objects: s.objects.clone(),
        }
    }
}

/// The classification of a whole query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Its statements, in order (none for an empty query).
    pub statements: Vec<Statement>,
    /// Why the text could not be lexed; then there is one `Unknown` statement spanning it.
    pub error: Option<Error>,
}

impl Analysis {
    /// The class of the riskiest statement; an empty query is `Session`.
    #[must_use]
    pub fn class(&self) -> CommandClass {
        self.statements
            .iter()
            .map(|s| s.class)
            .fold(Session, CommandClass::max_risk)
    }

    /// The whole text as one [`Command`]: the class of its riskiest statement, the verb of the
    /// first statement of that class, and every object of every statement. An empty query
    /// has the verb `EMPTY`.
    #[must_use]
    pub fn to_command(&self, sql: &str) -> Command {
        let class = self.class();
        let verb = self
            .statements
            .iter()
            .find(|s| s.class == class)
            .map_or("EMPTY", |s| verb_or_unknown(&s.verb));
        let mut cmd = Command::new(Protocol::Postgres, verb, class, sql)
            .unwrap_or_else(|_| unknown_command(sql));
        let mut seen = HashSet::new();
        for s in &self.statements {
            for o in &s.objects {
                if seen.insert(o) {
                    cmd.objects.push(o.clone());
                }
            }
        }
        cmd
    }
}

/// Classifies SQL for one session: remembers the settings that change lexing and what each
/// named prepared statement does.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    opts: LexOptions,
    /// `None` after the session changed `standard_conforming_strings` and the server has not
    /// yet confirmed the new value: then text is lexed both ways.
    scs: Option<bool>,
    prepared: HashMap<String, Prepared>,
    /// What each cursor the session declared reads: a `FETCH` from it is decided on the
    /// relations of its query, not as a bare read.
    cursors: HashMap<String, Prepared>,
}

impl Classifier {
    /// A classifier with default options (`standard_conforming_strings` on).
    #[must_use]
    pub fn new() -> Self {
        Self::with_options(LexOptions::default())
    }

    /// A classifier with the given lexing options.
    #[must_use]
    pub fn with_options(opts: LexOptions) -> Self {
        Self {
            opts,
            scs: Some(opts.standard_conforming_strings),
            prepared: HashMap::new(),
            cursors: HashMap::new(),
        }
    }

    /// Sets `standard_conforming_strings` as the server reported it (`ParameterStatus`).
    pub fn set_standard_conforming_strings(&mut self, on: bool) {
        self.scs = Some(on);
    }

    /// Makes `standard_conforming_strings` unknown, so text is lexed both ways until
    /// [`Classifier::set_standard_conforming_strings`]: for a statement that may change it
    /// ([`Statement::changes_lexing`]) at a time the classifier does not see, such as a
    /// prepared statement's later execution.
    pub fn forget_standard_conforming_strings(&mut self) {
        self.scs = None;
    }

    /// Whether `standard_conforming_strings` is known, and its value.
    #[must_use]
    pub fn standard_conforming_strings(&self) -> Option<bool> {
        self.scs
    }

    /// Registers what the prepared statement `name` does (for statements prepared with the
    /// extended protocol's Parse message; `PREPARE` is recorded by [`Classifier::record`]).
    pub fn register_prepared(&mut self, name: &str, statement: Prepared) {
        self.prepared.insert(name.to_owned(), statement);
    }

    /// Forgets a prepared statement (Close, or `DEALLOCATE`).
    pub fn forget_prepared(&mut self, name: &str) {
        self.prepared.remove(name);
    }

    /// Registers what a `FETCH` from the cursor `name` reads (to give a name back what it
    /// read before a `DECLARE` the server did not run).
    pub fn register_cursor(&mut self, name: &str, statement: Prepared) {
        self.cursors.insert(name.to_owned(), statement);
    }

    /// Forgets a cursor: a `FETCH` from it is then unknown. For a `DECLARE` the server did
    /// not run (it failed, or an earlier statement did), since the name keeps whatever it
    /// had, which the classifier cannot know.
    pub fn forget_cursor(&mut self, name: &str) {
        self.cursors.remove(name);
    }

    /// What the prepared statement `name` does, if registered.
    #[must_use]
    pub fn prepared(&self, name: &str) -> Option<&Prepared> {
        self.prepared.get(name)
    }

    /// What a `FETCH` from the cursor `name` reads, if the session declared it.
    #[must_use]
    pub fn cursor(&self, name: &str) -> Option<&Prepared> {
        self.cursors.get(name)
    }

    /// Applies the effects of statements that were sent to the server: `PREPARE` and
    /// `DEALLOCATE`, and changes of `standard_conforming_strings` (which make it unknown
    /// until [`Classifier::set_standard_conforming_strings`] is called again).
    pub fn record(&mut self, analysis: &Analysis) {
        for s in &analysis.statements {
            self.record_statement(s);
        }
    }

    /// Applies the effects of one statement sent to the server (see [`Classifier::record`]),
    /// for a caller that looks at each statement's effect as it goes.
    pub fn record_statement(&mut self, s: &Statement) {
        match &s.prepared {
            Some(PreparedEffect::Prepare { name, statement }) => {
                // If the name is taken, the server keeps the old statement: keep the
                // riskier of the two.
                let merged = match self.prepared.get(name) {
                    Some(old) if old.class > statement.class => old.clone(),
                    _ => statement.clone(),
                };
                self.prepared.insert(name.clone(), merged);
            }
            Some(PreparedEffect::Deallocate { name: Some(n) }) => {
                self.prepared.remove(n);
            }
            Some(PreparedEffect::Deallocate { name: None }) => self.prepared.clear(),
            Some(PreparedEffect::DeclareCursor {
                name, statement, ..
            }) => {
                self.cursors.insert(name.clone(), statement.clone());
            }
            Some(PreparedEffect::CloseCursor { name: Some(n) }) => {
                self.cursors.remove(n);
            }
            Some(PreparedEffect::CloseCursor { name: None }) => self.cursors.clear(),
            // Which cursors a rollback closes is the server's answer to tell: see
            // [`Classifier::forget_cursor`].
            Some(
                PreparedEffect::Savepoint { .. }
                | PreparedEffect::RollbackToSavepoint { .. }
                | PreparedEffect::ReleaseSavepoint { .. },
            )
            | None => {}
        }
        if s.verb == "DISCARD ALL" {
            // Deallocates every prepared statement and closes every cursor.
            self.prepared.clear();
            self.cursors.clear();
        }
        if s.changes_lexing() {
            self.scs = None;
        }
    }

    /// Classifies query bytes: text that is not UTF-8 is `Unknown`.
    #[must_use]
    pub fn classify_bytes(&self, sql: &[u8]) -> Analysis {
        match std::str::from_utf8(sql) {
            Ok(s) => self.classify(s),
            Err(e) => failed(
                0..sql.len(),
                Error::InvalidUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            ),
        }
    }

    /// Lexes, splits and classifies `sql`.
    #[must_use]
    pub fn classify(&self, sql: &str) -> Analysis {
        match self.scs {
            Some(on) => self.classify_with(sql, on),
            None => {
                let on = self.classify_with(sql, true);
                let off = self.classify_with(sql, false);
                merge_ambiguous(on, off, sql.len())
            }
        }
    }

    fn classify_with(&self, sql: &str, scs: bool) -> Analysis {
        let opts = LexOptions {
            standard_conforming_strings: scs,
            ..self.opts
        };
        let tokens = match tokenize(sql, &opts) {
            Ok(t) => t,
            Err(e) => return failed(0..sql.len(), e),
        };
        // A statement sees what the ones before it in the same text prepare or declare
        // (`DECLARE c …; FETCH 1 FROM c`): their effects go on a copy, made only when a
        // statement follows that could see them.
        let mut ahead: Option<Classifier> = None;
        let ranges = split_tokens(&tokens);
        let final_statement = ranges.len().saturating_sub(1);
        let statements = ranges
            .into_iter()
            .enumerate()
            .filter_map(|(n, r)| {
                let toks = tokens.get(r)?;
                let first = toks.first()?;
                let last = toks.last()?;
                let out = ahead.as_ref().unwrap_or(self).statement(toks);
                let statement = Statement {
                    range: first.offset..last.end(),
                    class: out.class,
                    verb: out.verb.unwrap_or_default(),
                    objects: out.objects,
                    prepared: out.prepared,
                    error: None,
                };
                if statement.prepared.is_some() && n < final_statement {
                    ahead
                        .get_or_insert_with(|| self.clone())
                        .record_statement(&statement);
                }
                // A statement that may end or roll back the transaction (a `COMMIT`, a
                // rollback, a procedure or `DO` block that may commit) may close cursors,
                // and which it closes is the server's to tell: later statements of the
                // text know none, and a `FETCH` among them is `Unknown`.
                if ends_transaction(&statement) && n < final_statement {
                    ahead.get_or_insert_with(|| self.clone()).cursors.clear();
                }
                Some(statement)
            })
            .collect();
        Analysis {
            statements,
            error: None,
        }
    }

    fn statement(&self, toks: &[Token<'_>]) -> Out {
        let mut out = Out::default();
        if !balanced(toks) {
            out.verb(first_word(toks));
            out.raise(Unknown);
            return out;
        }
        classify_statement(self, toks, &mut out, 0);
        if out.verb.is_none() {
            out.verb(first_word(toks));
        }
        out.unseen_reach();
        out
    }
}

fn failed(range: Range<usize>, e: Error) -> Analysis {
    Analysis {
        statements: vec![Statement {
            range,
            class: Unknown,
            verb: "UNKNOWN".to_owned(),
            objects: Vec::new(),
            prepared: None,
            error: Some(e.clone()),
        }],
        error: Some(e),
    }
}

/// With `standard_conforming_strings` unknown: if both lexings split alike, each statement
/// gets the riskier class and every object; otherwise the whole text is `Unknown`.
fn merge_ambiguous(on: Analysis, off: Analysis, len: usize) -> Analysis {
    let same_split = on.statements.len() == off.statements.len()
        && on
            .statements
            .iter()
            .zip(&off.statements)
            .all(|(a, b)| a.range == b.range);
    if !same_split || on.error.is_some() || off.error.is_some() {
        let e = on.error.or(off.error).unwrap_or(Error::Invalid {
            what: "text splits differently depending on standard_conforming_strings",
            offset: 0,
        });
        return failed(0..len, e);
    }
    let statements = on
        .statements
        .into_iter()
        .zip(off.statements)
        .map(|(mut a, b)| {
            if b.class > a.class {
                a.class = b.class;
                a.verb = b.verb;
            }
            for o in b.objects {
                if !a.objects.contains(&o) {
                    a.objects.push(o);
                }
            }
            if a.prepared != b.prepared {
                a.prepared = None;
                a.class = Unknown;
            }
            a
        })
        .collect();
    Analysis {
        statements,
        error: None,
    }
}

// === internals ===

#[derive(Debug)]
struct Out {
    class: CommandClass,
    verb: Option<String>,
    objects: Vec<ObjectRef>,
    /// The same objects, to keep the list free of duplicates in constant time.
    seen: HashSet<ObjectRef>,
    prepared: Option<PreparedEffect>,
}

/// A statement naming more distinct objects than this is not understood: the list would
/// grow with hostile input, and no application statement needs it.
pub(crate) const MAX_OBJECTS: usize = 1024;

impl Default for Out {
    fn default() -> Self {
        Self {
            class: Session,
            verb: None,
            objects: Vec::new(),
            seen: HashSet::new(),
            prepared: None,
        }
    }
}

impl Out {
    fn raise(&mut self, c: CommandClass) {
        self.class = self.class.max_risk(c);
    }
    fn verb(&mut self, v: impl Into<String>) {
        if self.verb.is_none() {
            self.verb = Some(v.into());
        }
    }
    /// A function the classifier cannot see into may read or write any relation: a
    /// statement that calls one also touches [`ObjectRef::ANY_RELATION`], both ways.
    fn unseen_reach(&mut self) {
        let opaque = self
            .objects
            .iter()
            .any(|o| o.kind == ObjectKind::Function && !tables::reaches_no_relation(&o.name));
        if opaque {
            for access in [Access::Read, Access::Write] {
                self.obj(
                    ObjectKind::Relation,
                    ObjectRef::ANY_RELATION.to_owned(),
                    access,
                );
            }
        }
    }
    fn obj(&mut self, kind: ObjectKind, name: String, access: Access) {
        self.push(ObjectRef::new(kind, name, access));
    }
    fn push(&mut self, o: ObjectRef) {
        if self.seen.len() >= MAX_OBJECTS {
            self.raise(Unknown);
            return;
        }
        if self.seen.insert(o.clone()) {
            self.objects.push(o);
        }
    }
    fn extend(&mut self, objects: impl IntoIterator<Item = ObjectRef>) {
        for o in objects {
            self.push(o);
        }
    }
}

fn balanced(toks: &[Token<'_>]) -> bool {
    let mut depth: i64 = 0;
    for t in toks {
        match t.kind {
            TokenKind::LParen | TokenKind::LBracket => depth = depth.saturating_add(1),
            TokenKind::RParen | TokenKind::RBracket => {
                depth = depth.saturating_sub(1);
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// The first word as the verb of a statement not understood; a word longer than any SQL
/// keyword (a hostile client's megabyte identifier) is not copied into audit records.
fn first_word(toks: &[Token<'_>]) -> String {
    match toks.first() {
        Some(t) if t.kind == TokenKind::Ident && t.text.len() <= 32 => t.text.to_ascii_uppercase(),
        _ => "UNKNOWN".to_owned(),
    }
}

/// A keyword folded to lowercase without allocating. Words longer than any keyword are
/// kept as an empty string, which matches no keyword.
#[derive(Debug, Clone, Copy, Default)]
struct Kw {
    buf: [u8; 24],
    len: usize,
}

impl Kw {
    fn new(text: &str) -> Self {
        let mut k = Self::default();
        if text.len() <= k.buf.len() && text.is_ascii() {
            for (d, s) in k.buf.iter_mut().zip(text.bytes()) {
                *d = s.to_ascii_lowercase();
            }
            k.len = text.len();
        }
        k
    }

    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl std::ops::Deref for Kw {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for Kw {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The lowercase keyword at `i`, if that token is an unquoted identifier.
fn kw(toks: &[Token<'_>], i: usize) -> Option<Kw> {
    toks.get(i)
        .filter(|t| t.kind == TokenKind::Ident)
        .map(|t| Kw::new(t.text))
}

fn is_kw(toks: &[Token<'_>], i: usize, w: &str) -> bool {
    toks.get(i).is_some_and(|t| t.is_kw(w))
}

fn kind_at(toks: &[Token<'_>], i: usize) -> Option<TokenKind> {
    toks.get(i).map(|t| t.kind)
}

/// Index of the `)` or `]` matching the opener at `open`.
fn matching(toks: &[Token<'_>], open: usize) -> Option<usize> {
    let mut depth: usize = 0;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t.kind {
            TokenKind::LParen | TokenKind::LBracket => depth = depth.saturating_add(1),
            TokenKind::RParen | TokenKind::RBracket => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// Renders one identifier so that equal names render equally: bare when it is a plain
/// lowercase identifier, otherwise in double quotes with `"` doubled (as `quote_ident` does).
fn render_part(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// The index after a possibly qualified name at `i`, without building it.
fn name_end(toks: &[Token<'_>], i: usize) -> Option<usize> {
    if !toks.get(i)?.is_name() {
        return None;
    }
    let mut j = i.checked_add(1)?;
    while kind_at(toks, j) == Some(TokenKind::Dot)
        && toks.get(j.checked_add(1)?).is_some_and(Token::is_name)
    {
        j = j.checked_add(2)?;
    }
    Some(j)
}

/// A possibly qualified name at `i`: its rendered form, its last part unrendered, and the
/// index after it.
fn qualified_name(toks: &[Token<'_>], i: usize) -> Option<(String, String, usize)> {
    let first = toks.get(i)?;
    let mut last = first.ident()?;
    let mut rendered = render_part(&last);
    let mut j = i.checked_add(1)?;
    while kind_at(toks, j) == Some(TokenKind::Dot) {
        let Some(part) = toks.get(j.checked_add(1)?).and_then(Token::ident) else {
            break;
        };
        rendered.push('.');
        rendered.push_str(&render_part(&part));
        last = part;
        j = j.checked_add(2)?;
    }
    Some((rendered, last, j))
}

/// CTE names visible at some point of a statement, as identifier values (folded as the
/// server folds them, unrendered).
#[derive(Debug, Default)]
struct Scope<'p> {
    names: Vec<String>,
    parent: Option<&'p Scope<'p>>,
}

impl Scope<'_> {
    fn contains(&self, n: &str) -> bool {
        self.names.iter().any(|x| x == n) || self.parent.is_some_and(|p| p.contains(n))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Main {
    Select,
    SelectInto,
    Insert,
    Update,
    Delete,
    Merge,
}

impl Main {
    fn verb(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::SelectInto => "SELECT INTO",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Merge => "MERGE",
        }
    }
}

fn is_query_start(toks: &[Token<'_>], i: usize) -> bool {
    matches!(
        kw(toks, i).as_deref(),
        Some("select" | "values" | "with" | "table")
    )
}

/// Records the relation named at `i` with `access`, unless it is a CTE in scope. Returns the
/// index after the name (after a trailing `*`).
fn relation_at(
    toks: &[Token<'_>],
    i: usize,
    access: Access,
    scope: &Scope<'_>,
    out: &mut Out,
) -> Option<usize> {
    let (name, last, mut j) = qualified_name(toks, i)?;
    // A CTE is named by one identifier: compare its value as the server folds it, never
    // the rendered form (`"Secret"` is the table Secret, not a CTE named `"Secret"`).
    let unqualified = name_end(toks, i) == Some(i.saturating_add(1));
    if !(unqualified && scope.contains(&last) && access == Access::Read) {
        out.obj(ObjectKind::Relation, name, access);
    }
    if toks
        .get(j)
        .is_some_and(|t| t.kind == TokenKind::Op && t.text == "*")
    {
        j = j.saturating_add(1);
    }
    Some(j)
}

/// A table named as the grammar's `relation_expr` at `i` (`name`, `name *`, `ONLY name` or
/// `ONLY ( name )`), recorded as [`relation_at`] records it; the index after it. `None` for
/// what the grammar does not allow there (`ONLY name *`, `ONLY ( name * )`, `ONLY ((name))`).
fn relation_expr_at(
    toks: &[Token<'_>],
    i: usize,
    access: Access,
    scope: &Scope<'_>,
    out: &mut Out,
) -> Option<usize> {
    // ONLY is reserved: unquoted, it never names a table.
    if !is_kw(toks, i, "only") {
        return relation_at(toks, i, access, scope, out);
    }
    let (_, after) = relation_expr(toks, i)?;
    let parens = kind_at(toks, i.saturating_add(1)) == Some(TokenKind::LParen);
    // `ONLY name *` is a syntax error: only one of the two may be said.
    if !parens
        && toks
            .get(after)
            .is_some_and(|t| t.kind == TokenKind::Op && t.text == "*")
    {
        return None;
    }
    let at = i.saturating_add(if parens { 2 } else { 1 });
    relation_at(toks, at, access, scope, out)?;
    Some(after)
}

fn skip_kw(toks: &[Token<'_>], mut i: usize, words: &[&str]) -> usize {
    while words.iter().any(|w| is_kw(toks, i, w)) {
        i = i.saturating_add(1);
    }
    i
}

/// Records a call of the function `name` (rendered) whose last part is `last`, and raises
/// the class for known dangerous functions. `args` is the index of its `(`.
fn function_call(toks: &[Token<'_>], name: String, last: &str, args: usize, out: &mut Out) {
    if let Some(c) = tables::function_class(last, &name) {
        out.raise(c);
    }
    if last == "set_config" {
        // set_config('name', value, is_local): as risky as SET of that name.
        let literal = toks
            .get(args.saturating_add(1))
            .filter(|_| kind_at(toks, args.saturating_add(2)) == Some(TokenKind::Comma))
            .and_then(Token::string_value);
        match literal {
            Some(setting) => {
                out.raise(tables::setting_class(&setting));
                out.obj(
                    ObjectKind::Setting,
                    setting.to_ascii_lowercase(),
                    Access::Write,
                );
            }
            None => out.raise(Unknown),
        }
    }
    out.obj(ObjectKind::Function, name, Access::Execute);
}

/// Whether the unquoted word at `i`, followed by `(`, is grammar rather than a call of a
/// function of that name. Reserved words and those that cannot name a function are
/// grammar (or a type); a word that may name a function is grammar only where the
/// server's grammar takes it as such (`FILTER (` after a call, `FETCH FIRST (`,
/// `GROUP BY CUBE (`, `ON CONFLICT (`, an UPDATE's `SET (`…), and a call everywhere else:
/// `first(x)` may be any user's function. `set_clause` says whether a `SET (` of UPDATE
/// or ALTER may stand here.
fn keyword_call_is_syntax(toks: &[Token<'_>], i: usize, set_clause: bool) -> bool {
    let Some(w) = kw(toks, i) else {
        return false;
    };
    let prev = i.checked_sub(1).and_then(|p| toks.get(p));
    let prev_kw = |words: &[&str]| {
        prev.filter(|p| p.kind == TokenKind::Ident)
            .is_some_and(|p| words.iter().any(|w| p.text.eq_ignore_ascii_case(w)))
    };
    let after_paren = prev.is_some_and(|p| p.kind == TokenKind::RParen);
    match w.as_str() {
        // Infix operators after an operand; at the start of an expression, a call.
        "like" | "ilike" | "overlaps" | "join" => prev.is_some_and(ends_operand),
        w if tables::is_type_function_keyword(w) => false,
        w if tables::is_reserved_keyword(w) || tables::is_column_name_keyword(w) => true,
        "filter" | "over" | "include" => after_paren,
        "first" | "next" => prev_kw(&["fetch"]),
        "by" => prev_kw(&["order", "group", "partition"]),
        "cube" | "rollup" => prev_kw(&["by"]),
        "sets" => prev_kw(&["grouping"]),
        "conflict" => prev_kw(&["on"]),
        "key" => prev_kw(&["primary", "foreign"]),
        "materialized" => prev_kw(&["as", "not"]),
        "varying" => prev_kw(&["character", "char", "bit", "nchar"]),
        // `UPDATE t [AS] x SET (a, b) = …`, `ALTER TABLE t SET (…)`.
        "set" => set_clause && prev.is_some_and(ends_set_target),
        _ => false,
    }
}

/// Whether a token can end an operand, so that a following `LIKE (` is the operator.
fn ends_operand(t: &Token<'_>) -> bool {
    match t.kind {
        TokenKind::Ident => {
            let w = Kw::new(t.text);
            !tables::is_reserved_keyword(&w) || matches!(w.as_str(), "null" | "true" | "false")
        }
        TokenKind::QuotedIdent
        | TokenKind::UnicodeIdent { .. }
        | TokenKind::String(_)
        | TokenKind::Number
        | TokenKind::Param
        | TokenKind::RParen
        | TokenKind::RBracket => true,
        _ => false,
    }
}

/// Whether a token can end the target of an UPDATE or ALTER (`update`, a name, `*`), so
/// that a following `SET (` is its SET clause and not a call of `set`.
fn ends_set_target(t: &Token<'_>) -> bool {
    match t.kind {
        TokenKind::Ident => {
            let w = Kw::new(t.text);
            w == "update"
                || !(tables::is_reserved_keyword(&w)
                    || tables::is_column_name_keyword(&w)
                    // Words an expression may follow.
                    || matches!(
                        w.as_str(),
                        "by" | "escape"
                            | "zone"
                            | "document"
                            | "content"
                            | "ref"
                            | "value"
                            | "first"
                            | "next"
                            | "rows"
                            | "range"
                            | "groups"
                            | "set"
                            | ""
                    ))
        }
        TokenKind::QuotedIdent | TokenKind::UnicodeIdent { .. } => true,
        TokenKind::Op => t.text == "*",
        _ => false,
    }
}

/// Scans tokens for function calls only (DDL bodies, option lists, EXECUTE arguments).
fn scan_functions(toks: &[Token<'_>], out: &mut Out) {
    let mut i = 0usize;
    while i < toks.len() {
        if i > 0 && kind_at(toks, i.saturating_sub(1)) == Some(TokenKind::Typecast) {
            i = i.saturating_add(1);
            continue;
        }
        if let Some((name, last, j)) = qualified_name(toks, i) {
            let bare_kw = j == i.saturating_add(1) && keyword_call_is_syntax(toks, i, true);
            let declared = i > 0
                && kw(toks, i.saturating_sub(1)).is_some_and(|w| {
                    matches!(
                        w.as_str(),
                        "on" | "references"
                            | "table"
                            | "index"
                            | "view"
                            | "function"
                            | "procedure"
                            | "routine"
                            | "aggregate"
                            | "into"
                            | "only"
                            | "exists"
                            | "trigger"
                            | "type"
                            | "domain"
                            | "sequence"
                            | "using"
                            | "like"
                            | "of"
                    )
                });
            // A dangerous name is a call even where a declaration could stand.
            let declared =
                declared && tables::function_class(&last, &name).is_none() && last != "set_config";
            if kind_at(toks, j) == Some(TokenKind::LParen) && !bare_kw && !declared {
                function_call(toks, name, &last, j, out);
            }
            i = j;
            continue;
        }
        i = i.saturating_add(1);
    }
}

/// The parser state of one parenthesis level of a query.
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    /// Inside a FROM list (or a USING list that works like one).
    from: bool,
    /// The next name is a FROM item.
    expect_item: bool,
}

/// Analyses a query (SELECT, VALUES, TABLE, INSERT, UPDATE, DELETE, MERGE, with or without
/// a WITH clause). Returns `None` when it does not recognise the statement.
fn analyze_query(toks: &[Token<'_>], scope: &Scope<'_>, out: &mut Out) -> Option<Main> {
    let mut i = 0usize;
    let mut local = Scope {
        names: Vec::new(),
        parent: Some(scope),
    };
    if is_kw(toks, 0, "with") {
        i = 1;
        let recursive = is_kw(toks, i, "recursive");
        if recursive {
            i = i.saturating_add(1);
        }
        // Collect names first: WITH RECURSIVE makes every name visible in every body.
        let mut ctes: Vec<(String, Range<usize>)> = Vec::new();
        loop {
            let name = toks.get(i)?.ident()?;
            i = i.saturating_add(1);
            if kind_at(toks, i) == Some(TokenKind::LParen) {
                i = matching(toks, i)?.saturating_add(1);
            }
            if !is_kw(toks, i, "as") {
                return None;
            }
            i = skip_kw(toks, i.saturating_add(1), &["not", "materialized"]);
            if kind_at(toks, i) != Some(TokenKind::LParen) {
                return None;
            }
            let close = matching(toks, i)?;
            ctes.push((name, i.saturating_add(1)..close));
            i = close.saturating_add(1);
            // SEARCH / CYCLE clauses: skip to the next CTE or the main statement.
            if is_kw(toks, i, "search") || is_kw(toks, i, "cycle") {
                while i < toks.len() && !is_main_start(toks, i) && !is_cte_start(toks, i) {
                    i = i.saturating_add(1);
                }
            }
            if kind_at(toks, i) == Some(TokenKind::Comma) {
                i = i.saturating_add(1);
                continue;
            }
            break;
        }
        if recursive {
            local.names = ctes.iter().map(|(n, _)| n.clone()).collect();
        }
        for (k, (name, body)) in ctes.iter().enumerate() {
            let visible = Scope {
                names: if recursive {
                    Vec::new()
                } else {
                    ctes.iter().take(k).map(|(n, _)| n.clone()).collect()
                },
                parent: Some(if recursive { &local } else { scope }),
            };
            let _ = name;
            // A CTE body may itself be INSERT/UPDATE/DELETE … RETURNING: a write.
            analyze_query(toks.get(body.clone())?, &visible, out)?;
        }
        local.names = ctes.into_iter().map(|(n, _)| n).collect();
    }
    let scope = &local;
    let rest = toks.get(i..)?;
    // Leading parentheses: `(SELECT …) UNION (SELECT …)`.
    let mut lead = 0usize;
    while kind_at(rest, lead) == Some(TokenKind::LParen) {
        lead = lead.saturating_add(1);
    }
    let main_kw = kw(rest, lead)?;
    let mut frame = Frame::default();
    let (main, start) = match main_kw.as_str() {
        // `TABLE name` is read by the scan, as it is where it follows UNION or INSERT.
        "select" | "values" | "table" => {
            out.raise(Read);
            (Main::Select, 0)
        }
        "insert" if lead == 0 => {
            out.raise(Write);
            if !is_kw(rest, 1, "into") {
                return None;
            }
            (
                Main::Insert,
                relation_at(rest, 2, Access::Write, scope, out)?,
            )
        }
        "update" if lead == 0 => {
            out.raise(Write);
            (
                Main::Update,
                relation_expr_at(rest, 1, Access::Write, scope, out)?,
            )
        }
        "delete" if lead == 0 => {
            out.raise(Write);
            if !is_kw(rest, 1, "from") {
                return None;
            }
            (
                Main::Delete,
                relation_expr_at(rest, 2, Access::Write, scope, out)?,
            )
        }
        "merge" if lead == 0 => {
            out.raise(Write);
            if !is_kw(rest, 1, "into") {
                return None;
            }
            let mut j = relation_expr_at(rest, 2, Access::Write, scope, out)?;
            // [AS] alias, then USING <source>.
            j = skip_kw(rest, j, &["as"]);
            if !is_kw(rest, j, "using") {
                j = j.saturating_add(1);
            }
            if !is_kw(rest, j, "using") {
                return None;
            }
            frame = Frame {
                from: true,
                expect_item: true,
            };
            (Main::Merge, j.saturating_add(1))
        }
        _ => return None,
    };
    scan_query(rest, start, frame, main, scope, out)
}

fn is_main_start(toks: &[Token<'_>], i: usize) -> bool {
    matches!(
        kw(toks, i).as_deref(),
        Some("select" | "values" | "table" | "insert" | "update" | "delete" | "merge")
    ) || kind_at(toks, i) == Some(TokenKind::LParen)
}

/// `, name AS (` or `, name (cols) AS (` — the start of the next CTE after a comma.
fn is_cte_start(toks: &[Token<'_>], i: usize) -> bool {
    if kind_at(toks, i) != Some(TokenKind::Comma) {
        return false;
    }
    let n = i.saturating_add(1);
    if !toks.get(n).is_some_and(Token::is_name) {
        return false;
    }
    let mut a = n.saturating_add(1);
    if kind_at(toks, a) == Some(TokenKind::LParen) {
        match matching(toks, a) {
            Some(c) => a = c.saturating_add(1),
            None => return false,
        }
    }
    is_kw(toks, a, "as")
}

/// The linear scan of one query level from `start`: FROM items, subqueries (recursively),
/// function calls, SELECT INTO and locking clauses.
fn scan_query(
    toks: &[Token<'_>],
    start: usize,
    first: Frame,
    mut main: Main,
    scope: &Scope<'_>,
    out: &mut Out,
) -> Option<Main> {
    let mut stack: Vec<Frame> = vec![first];
    let mut i = start;
    while i < toks.len() {
        let t = toks.get(i)?;
        let depth0 = stack.len() == 1;
        match t.kind {
            TokenKind::LParen => {
                let close = matching(toks, i)?;
                let top = stack.last_mut()?;
                if is_query_start(toks, i.saturating_add(1)) {
                    analyze_query(toks.get(i.saturating_add(1)..close)?, scope, out)?;
                    top.expect_item = false;
                    i = close.saturating_add(1);
                    continue;
                }
                let inherit = top.from && top.expect_item;
                top.expect_item = false;
                stack.push(Frame {
                    from: inherit,
                    expect_item: inherit,
                });
            }
            TokenKind::LBracket => stack.push(Frame::default()),
            TokenKind::RParen | TokenKind::RBracket => {
                if stack.len() > 1 {
                    stack.pop();
                }
            }
            TokenKind::Comma => {
                let top = stack.last_mut()?;
                top.expect_item = top.from;
            }
            TokenKind::Ident | TokenKind::QuotedIdent | TokenKind::UnicodeIdent { .. } => {
                let word = kw(toks, i);
                let top = *stack.last()?;
                if word.as_deref() == Some("table") {
                    // `TABLE name [*]`, `TABLE ONLY name` or `TABLE ONLY (name)` is a query
                    // wherever it stands: a statement, an operand of UNION, INTERSECT or
                    // EXCEPT, the source of an INSERT, a parenthesised subquery. TABLE is
                    // reserved, so it is nothing else here.
                    let j = i.saturating_add(1);
                    let name = skip_kw(toks, j, &["only"]);
                    if toks.get(name).is_some_and(|t| {
                        t.kind == TokenKind::Ident && tables::is_reserved_keyword(&Kw::new(t.text))
                    }) {
                        return None;
                    }
                    i = relation_expr_at(toks, j, Access::Read, scope, out)?;
                    set_top(&mut stack, false, false);
                    continue;
                }
                match word.as_deref() {
                    Some("from") if depth0 && !is_kw(toks, i.wrapping_sub(1), "distinct") => {
                        set_top(&mut stack, true, true);
                        i = i.saturating_add(1);
                        continue;
                    }
                    // `FROM join(x)` calls a function named join.
                    Some("join") if top.from && !top.expect_item => {
                        set_top(&mut stack, true, true);
                        i = i.saturating_add(1);
                        continue;
                    }
                    Some("lateral" | "only") if top.expect_item => {
                        i = i.saturating_add(1);
                        continue;
                    }
                    Some("rows") if top.expect_item && is_kw(toks, i.saturating_add(1), "from") => {
                        set_top(&mut stack, true, false);
                        i = i.saturating_add(2);
                        continue;
                    }
                    Some("on" | "using") if top.from => {
                        if main == Main::Delete && depth0 && word.as_deref() == Some("using") {
                            set_top(&mut stack, true, true);
                        } else {
                            set_top(&mut stack, true, false);
                        }
                        i = i.saturating_add(1);
                        continue;
                    }
                    Some("using") if depth0 && main == Main::Delete => {
                        set_top(&mut stack, true, true);
                        i = i.saturating_add(1);
                        continue;
                    }
                    Some(
                        "where" | "group" | "having" | "window" | "order" | "limit" | "offset"
                        | "fetch" | "union" | "intersect" | "except" | "returning" | "when"
                        | "then" | "set" | "values" | "select" | "into" | "for",
                    ) if top.from && !top.expect_item => {
                        set_top(&mut stack, false, false);
                    }
                    _ => {}
                }
                if word.as_deref() == Some("for")
                    && matches!(
                        kw(toks, i.saturating_add(1)).as_deref(),
                        Some("update" | "share" | "no" | "key")
                    )
                {
                    // Row locks need UPDATE privilege and block writers: a write.
                    out.raise(Write);
                }
                if word.as_deref() == Some("into") && depth0 && main == Main::Select {
                    let j = skip_kw(
                        toks,
                        i.saturating_add(1),
                        &["temporary", "temp", "unlogged", "local", "global", "table"],
                    );
                    let (name, _, after) = qualified_name(toks, j)?;
                    out.raise(Schema);
                    out.obj(ObjectKind::Relation, name.clone(), Access::Define);
                    out.obj(ObjectKind::Relation, name, Access::Write);
                    main = Main::SelectInto;
                    i = after;
                    continue;
                }
                let top = *stack.last()?;
                if i > 0 && kind_at(toks, i.saturating_sub(1)) == Some(TokenKind::Typecast) {
                    i = i.saturating_add(1);
                    continue;
                }
                let j = name_end(toks, i)?;
                let is_call = kind_at(toks, j) == Some(TokenKind::LParen);
                // An unquoted keyword: what it is depends on what follows. Before `(`, it is
                // grammar or a call of a function of that name; otherwise it is a relation
                // where one is expected unless PostgreSQL reserves it (`FROM position`,
                // `JOIN key` name tables).
                let bare_kw = t.kind == TokenKind::Ident
                    && j == i.saturating_add(1)
                    && if is_call {
                        keyword_call_is_syntax(toks, i, main != Main::Select)
                    } else {
                        word.as_deref().is_some_and(tables::is_reserved_keyword)
                    };
                if bare_kw {
                    set_top(&mut stack, top.from, false);
                    i = j;
                    continue;
                }
                if is_call {
                    let (name, last, _) = qualified_name(toks, i)?;
                    function_call(toks, name, &last, j, out);
                } else if top.expect_item {
                    relation_at(toks, i, Access::Read, scope, out)?;
                }
                set_top(&mut stack, top.from, false);
                i = j;
                continue;
            }
            _ => {
                let top = stack.last_mut()?;
                top.expect_item = false;
            }
        }
        i = i.saturating_add(1);
    }
    Some(main)
}

fn set_top(stack: &mut [Frame], from: bool, expect_item: bool) {
    if let Some(top) = stack.last_mut() {
        top.from = from;
        top.expect_item = expect_item;
    }
}

/// Finds `word` at parenthesis depth 0 at or after `from`.
fn find_kw_depth0(toks: &[Token<'_>], from: usize, word: &str) -> Option<usize> {
    let mut depth: usize = 0;
    for (j, t) in toks.iter().enumerate().skip(from) {
        match t.kind {
            TokenKind::LParen | TokenKind::LBracket => depth = depth.saturating_add(1),
            TokenKind::RParen | TokenKind::RBracket => depth = depth.saturating_sub(1),
            _ if depth == 0 && t.is_kw(word) => return Some(j),
            _ => {}
        }
    }
    None
}

/// A table named as the grammar's `relation_expr` at `i`: `name`, `name *`, `ONLY name` or
/// `ONLY ( name )`. Its rendered name and the index after it.
fn relation_expr(toks: &[Token<'_>], i: usize) -> Option<(String, usize)> {
    // ONLY is reserved: unquoted, it never names a table.
    if is_kw(toks, i, "only") {
        let j = i + 1;
        if kind_at(toks, j) == Some(TokenKind::LParen) {
            let (n, _, k) = qualified_name(toks, j + 1)?;
            return (kind_at(toks, k) == Some(TokenKind::RParen)).then(|| (n, k + 1));
        }
        let (n, _, k) = qualified_name(toks, j)?;
        return Some((n, k));
    }
    let (n, _, mut k) = qualified_name(toks, i)?;
    if toks
        .get(k)
        .is_some_and(|t| t.kind == TokenKind::Op && t.text == "*")
    {
        k += 1;
    }
    Some((n, k))
}

/// The tables of a `TRUNCATE` or `LOCK` (the grammar's `relation_expr_list`) from `i`, each
/// recorded as written; `Unknown` if none can be read.
fn relation_expr_list(toks: &[Token<'_>], mut i: usize, access: Access, out: &mut Out) {
    let mut any = false;
    while let Some((n, j)) = relation_expr(toks, i) {
        out.obj(ObjectKind::Relation, n, access);
        any = true;
        i = j;
        if kind_at(toks, i) == Some(TokenKind::Comma) {
            i += 1;
        } else {
            break;
        }
    }
    if !any || kind_at(toks, i) == Some(TokenKind::Comma) {
        out.raise(Unknown);
    }
}

/// A comma-separated list of names from `i` until a non-name, each recorded as `kind`.
fn name_list(
    toks: &[Token<'_>],
    mut i: usize,
    kind: ObjectKind,
    access: Access,
    out: &mut Out,
) -> usize {
    while let Some((name, _, j)) = qualified_name(toks, i) {
        out.obj(kind, name, access);
        i = j;
        if toks
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Op && t.text == "*")
        {
            i = i.saturating_add(1);
        }
        if kind_at(toks, i) == Some(TokenKind::Comma) {
            i = i.saturating_add(1);
        } else {
            break;
        }
    }
    i
}

fn query_statement(toks: &[Token<'_>], out: &mut Out) {
    let scope = Scope::default();
    match analyze_query(toks, &scope, out) {
        Some(Main::Select) => {
            let locking = out.class >= Write && find_for_locking(toks);
            out.verb(if locking {
                "SELECT FOR UPDATE"
            } else {
                "SELECT"
            });
        }
        Some(m) => out.verb(m.verb()),
        None => out.raise(Unknown),
    }
}

fn find_for_locking(toks: &[Token<'_>]) -> bool {
    toks.windows(2).any(|w| {
        matches!(w, [a, b] if a.is_kw("for") && (b.is_kw("update") || b.is_kw("share") || b.is_kw("no") || b.is_kw("key")))
    })
}

/// Statements nest only through EXPLAIN, PREPARE and CREATE TABLE AS EXECUTE; the server
/// allows a few levels, anything deeper is not understood.
const MAX_STATEMENT_NESTING: usize = 4;

fn classify_statement(cl: &Classifier, toks: &[Token<'_>], out: &mut Out, depth: usize) {
    if depth > MAX_STATEMENT_NESTING {
        out.raise(Unknown);
        return;
    }
    let Some(first) = kw(toks, 0) else {
        if kind_at(toks, 0) == Some(TokenKind::LParen) {
            query_statement(toks, out);
        } else {
            out.raise(Unknown);
        }
        return;
    };
    match first.as_str() {
        "select" | "values" | "table" | "with" | "insert" | "update" | "delete" | "merge" => {
            query_statement(toks, out);
        }
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            transaction(toks, &first, out);
        }
        "prepare" if is_kw(toks, 1, "transaction") => {
            out.verb("PREPARE TRANSACTION");
            out.raise(Session);
        }
        "set" => set_statement(toks, out),
        "reset" => reset_statement(toks, out),
        "show" => {
            out.verb("SHOW");
            out.raise(Session);
            if let Some(name) = setting_name(toks, 1) {
                out.obj(ObjectKind::Setting, name, Access::Read);
            }
        }
        "explain" => explain(cl, toks, out, depth),
        "copy" => copy(toks, out),
        "do" => {
            out.verb("DO");
            out.raise(Code);
        }
        "call" => {
            out.verb("CALL");
            out.raise(Code);
            if let Some((name, last, j)) = qualified_name(toks, 1) {
                function_call(toks, name, &last, j, out);
            }
            scan_functions(toks.get(2..).unwrap_or(&[]), out);
        }
        "listen" | "notify" | "unlisten" => {
            let (verb, class, access) = match first.as_str() {
                "listen" => ("LISTEN", Read, Access::Read),
                "notify" => ("NOTIFY", Write, Access::Write),
                _ => ("UNLISTEN", Session, Access::Read),
            };
            out.verb(verb);
            out.raise(class);
            if let Some(name) = toks.get(1).and_then(Token::ident) {
                out.obj(ObjectKind::Channel, name, access);
            }
        }
        "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "checkpoint" | "load" => {
            out.verb(if first == "analyse" {
                "ANALYZE".to_owned()
            } else {
                first.to_ascii_uppercase()
            });
            out.raise(Admin);
        }
        "refresh" if is_kw(toks, 1, "materialized") => {
            out.verb("REFRESH MATERIALIZED VIEW");
            out.raise(Write);
            let j = skip_kw(toks, 3, &["concurrently"]);
            if let Some((name, _, _)) = qualified_name(toks, j) {
                out.obj(ObjectKind::Relation, name, Access::Write);
            }
        }
        "truncate" => {
            out.verb("TRUNCATE TABLE");
            out.raise(Write);
            let j = if is_kw(toks, 1, "table") { 2 } else { 1 };
            relation_expr_list(toks, j, Access::Write, out);
        }
        "lock" => {
            out.verb("LOCK TABLE");
            out.raise(Write);
            let j = if is_kw(toks, 1, "table") { 2 } else { 1 };
            relation_expr_list(toks, j, Access::Write, out);
        }
        "grant" | "revoke" => grant(toks, &first, out),
        "reassign" => {
            out.verb("REASSIGN OWNED");
            out.raise(Privilege);
        }
        "security" => {
            out.verb("SECURITY LABEL");
            out.raise(Privilege);
        }
        "comment" => {
            out.verb("COMMENT");
            out.raise(Schema);
        }
        "discard" => {
            let what = kw(toks, 1).unwrap_or_default();
            match what.as_str() {
                "all" => {
                    // Also ends any SET ROLE the gateway may have applied.
                    out.verb("DISCARD ALL");
                    out.raise(Privilege);
                }
                "plans" | "sequences" | "temp" | "temporary" => {
                    let w = if what == "temporary" { "TEMP" } else { &what };
                    out.verb(format!("DISCARD {}", w.to_ascii_uppercase()));
                    out.raise(Session);
                }
                _ => out.raise(Unknown),
            }
        }
        "declare" => {
            out.verb("DECLARE CURSOR");
            let name = toks.get(1).and_then(Token::ident);
            match (name, find_kw_depth0(toks, 1, "for")) {
                (Some(name), Some(f)) => {
                    let mut inner = Out::default();
                    query_statement(toks.get(f.saturating_add(1)..).unwrap_or(&[]), &mut inner);
                    let class = inner.class.max_risk(Read);
                    out.raise(class);
                    let statement = Prepared {
                        class,
                        verb: "FETCH".into(),
                        objects: inner.objects.clone(),
                    };
                    out.extend(inner.objects);
                    let hold = (2..f).any(|i| is_kw(toks, i, "with") && is_kw(toks, i + 1, "hold"));
                    out.prepared = Some(PreparedEffect::DeclareCursor {
                        name,
                        statement,
                        hold,
                    });
                }
                _ => out.raise(Unknown),
            }
        }
        "fetch" => {
            // FETCH [direction] [FROM | IN] name: the name ends the statement. A cursor the
            // session declared reads what its query reads; any other (one a function opened,
            // say) is not understood.
            out.verb("FETCH");
            out.raise(Read);
            let name = toks
                .iter()
                .rev()
                .find(|t| t.kind != TokenKind::Semicolon)
                .and_then(Token::ident);
            match name.as_deref().and_then(|n| cl.cursors.get(n)) {
                Some(c) => {
                    out.raise(c.class);
                    out.extend(c.objects.iter().cloned());
                }
                None => out.raise(Unknown),
            }
        }
        "move" => {
            out.verb("MOVE");
            out.raise(Session);
        }
        "close" => {
            if is_kw(toks, 1, "all") {
                out.verb("CLOSE CURSOR ALL");
                out.prepared = Some(PreparedEffect::CloseCursor { name: None });
            } else {
                out.verb("CLOSE CURSOR");
                match toks.get(1).and_then(Token::ident) {
                    Some(n) => out.prepared = Some(PreparedEffect::CloseCursor { name: Some(n) }),
                    None => out.raise(Unknown),
                }
            }
            out.raise(Session);
        }
        "prepare" => prepare(cl, toks, out, depth),
        "execute" => {
            out.verb("EXECUTE");
            let name = toks.get(1).and_then(Token::ident);
            match name.as_deref().and_then(|n| cl.prepared.get(n)) {
                Some(p) => {
                    out.raise(p.class);
                    out.verb = Some(p.verb.clone());
                    out.extend(p.objects.iter().cloned());
                }
                None => out.raise(Unknown),
            }
            scan_functions(toks.get(2..).unwrap_or(&[]), out);
        }
        "deallocate" => {
            let j = skip_kw(toks, 1, &["prepare"]);
            if is_kw(toks, j, "all") {
                out.verb("DEALLOCATE ALL");
                out.prepared = Some(PreparedEffect::Deallocate { name: None });
            } else {
                out.verb("DEALLOCATE");
                match toks.get(j).and_then(Token::ident) {
                    Some(n) => out.prepared = Some(PreparedEffect::Deallocate { name: Some(n) }),
                    None => out.raise(Unknown),
                }
            }
            out.raise(Session);
        }
        "create" => create(cl, toks, out, depth),
        "alter" => alter(toks, out),
        "drop" => drop_statement(toks, out),
        "import" => {
            out.verb("IMPORT FOREIGN SCHEMA");
            out.raise(Admin);
        }
        _ => out.raise(Unknown),
    }
}

/// Whether `s` may end or roll back (part of) the transaction, and so close cursors.
fn ends_transaction(s: &Statement) -> bool {
    matches!(
        s.verb.as_str(),
        "COMMIT" | "ROLLBACK" | "PREPARE TRANSACTION" | "CALL" | "DO"
    ) || matches!(s.prepared, Some(PreparedEffect::RollbackToSavepoint { .. }))
}

fn transaction(toks: &[Token<'_>], first: &str, out: &mut Out) {
    let verb = match first {
        "begin" => "BEGIN",
        "start" if is_kw(toks, 1, "transaction") => "START TRANSACTION",
        "commit" if is_kw(toks, 1, "prepared") => {
            // Makes durable what another session may have prepared.
            out.raise(Write);
            "COMMIT PREPARED"
        }
        "rollback" if is_kw(toks, 1, "prepared") => {
            out.raise(Write);
            "ROLLBACK PREPARED"
        }
        "commit" | "end" => "COMMIT",
        "rollback" | "abort" => "ROLLBACK",
        "savepoint" => "SAVEPOINT",
        "release" => "RELEASE",
        _ => {
            out.raise(Unknown);
            return;
        }
    };
    out.verb(verb);
    out.raise(Session);
    read_write_mode(toks, out);
    // `SAVEPOINT name`, `RELEASE [SAVEPOINT] name`, `ROLLBACK [WORK | TRANSACTION] TO
    // [SAVEPOINT] name` (`SAVEPOINT` is not reserved: it may be the name).
    let savepoint_at = |i: usize| {
        let i = if is_kw(toks, i, "savepoint") && toks.get(i + 1).and_then(Token::ident).is_some() {
            i + 1
        } else {
            i
        };
        toks.get(i).and_then(Token::ident)
    };
    out.prepared = match first {
        "savepoint" => toks
            .get(1)
            .and_then(Token::ident)
            .map(|name| PreparedEffect::Savepoint { name }),
        "release" => savepoint_at(1).map(|name| PreparedEffect::ReleaseSavepoint { name }),
        "rollback" => {
            let to = skip_kw(toks, 1, &["work", "transaction"]);
            if is_kw(toks, to, "to") {
                savepoint_at(to + 1).map(|name| PreparedEffect::RollbackToSavepoint { name })
            } else {
                None
            }
        }
        _ => None,
    };
}

/// `READ WRITE` transaction modes undo a read-only default the gateway may have set.
fn read_write_mode(toks: &[Token<'_>], out: &mut Out) {
    if toks
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.is_kw("read") && b.is_kw("write")))
    {
        out.raise(Privilege);
    }
}

/// A setting name at `i` (possibly `a.b`) as the server looks it up: by the value of each
/// part, quoted or not, with ASCII letters lowercased (`"Search_Path"` is `search_path`).
/// Returns the index after it too.
fn setting_name_at(toks: &[Token<'_>], i: usize) -> Option<(String, usize)> {
    let end = name_end(toks, i)?;
    let mut name = String::new();
    let mut k = i;
    while k < end {
        if k > i {
            name.push('.');
        }
        name.push_str(&toks.get(k)?.ident()?.to_ascii_lowercase());
        k += 2;
    }
    Some((name, end))
}

fn setting_name(toks: &[Token<'_>], i: usize) -> Option<String> {
    setting_name_at(toks, i).map(|(name, _)| name)
}

fn set_statement(toks: &[Token<'_>], out: &mut Out) {
    // `SESSION` and `LOCAL` are not reserved: in `SET local.x = 1` LOCAL starts the name.
    let modifier = (is_kw(toks, 1, "session") || is_kw(toks, 1, "local"))
        && !is_setting_assignment(toks, 1)
        && kind_at(toks, 2) != Some(TokenKind::Dot);
    let i = if modifier { 2 } else { 1 };
    // `SET SESSION AUTHORIZATION` / `SET SESSION CHARACTERISTICS` start with SESSION too.
    let i = if is_kw(toks, 1, "session")
        && (is_kw(toks, 2, "authorization") || is_kw(toks, 2, "characteristics"))
    {
        2
    } else if is_kw(toks, 1, "local")
        && is_kw(toks, 2, "session")
        && is_kw(toks, 3, "authorization")
    {
        3
    } else {
        i
    };
    let word = kw(toks, i).unwrap_or_default();
    match word.as_str() {
        "role"
            if !is_setting_assignment(toks, i) || kind_at(toks, i.saturating_add(1)).is_some() =>
        {
            out.verb("SET ROLE");
            out.raise(Privilege);
            let j = i.saturating_add(1);
            let j = if matches!(kind_at(toks, j), Some(TokenKind::Op)) || is_kw(toks, j, "to") {
                j.saturating_add(1)
            } else {
                j
            };
            out.obj(ObjectKind::Setting, "role".to_owned(), Access::Write);
            if let Some(r) = role_at(toks, j) {
                out.obj(ObjectKind::Role, r, Access::Define);
            }
        }
        "authorization" => {
            out.verb("SET SESSION AUTHORIZATION");
            out.raise(Privilege);
            out.obj(
                ObjectKind::Setting,
                "session_authorization".to_owned(),
                Access::Write,
            );
            if let Some(r) = role_at(toks, i.saturating_add(1)) {
                out.obj(ObjectKind::Role, r, Access::Define);
            }
        }
        "transaction" | "characteristics" => {
            out.verb("SET TRANSACTION");
            out.raise(Session);
            read_write_mode(toks, out);
            // `SET TRANSACTION SNAPSHOT` imports another session's snapshot: still a session
            // property.
        }
        "constraints" => {
            out.verb("SET CONSTRAINTS");
            out.raise(Session);
        }
        "time" if is_kw(toks, i.saturating_add(1), "zone") => {
            out.verb("SET");
            out.raise(Session);
            out.obj(ObjectKind::Setting, "timezone".to_owned(), Access::Write);
        }
        "names" => {
            out.verb("SET");
            out.raise(Session);
            out.obj(
                ObjectKind::Setting,
                "client_encoding".to_owned(),
                Access::Write,
            );
        }
        "schema"
            if kind_at(toks, i.saturating_add(1)) != Some(TokenKind::Op)
                && !is_kw(toks, i.saturating_add(1), "to") =>
        {
            out.verb("SET");
            out.raise(Privilege);
            out.obj(ObjectKind::Setting, "search_path".to_owned(), Access::Write);
        }
        "xml" if is_kw(toks, i.saturating_add(1), "option") => {
            out.verb("SET");
            out.raise(Session);
            out.obj(ObjectKind::Setting, "xmloption".to_owned(), Access::Write);
        }
        _ => match setting_name_at(toks, i) {
            Some((name, end)) => {
                out.verb("SET");
                let class = tables::setting_class(&name);
                out.raise(class);
                // `SET "ROLE" = x` sets the same setting as `SET ROLE x`.
                let verb = match name.as_str() {
                    "role" => Some("SET ROLE"),
                    "session_authorization" => Some("SET SESSION AUTHORIZATION"),
                    _ => None,
                };
                out.obj(ObjectKind::Setting, name, Access::Write);
                if let Some(verb) = verb {
                    out.verb = Some(verb.to_owned());
                    if is_setting_assignment(toks, end.saturating_sub(1))
                        && let Some(r) = role_at(toks, end.saturating_add(1))
                    {
                        out.obj(ObjectKind::Role, r, Access::Define);
                    }
                }
                // The value may call functions only in odd cases; check anyway.
                scan_functions(toks.get(i.saturating_add(1)..).unwrap_or(&[]), out);
            }
            None => out.raise(Unknown),
        },
    }
}

/// The role named at `i` (identifier or string), but not `DEFAULT` or `NONE`.
fn role_at(toks: &[Token<'_>], i: usize) -> Option<String> {
    if is_kw(toks, i, "default") || is_kw(toks, i, "none") {
        return None;
    }
    toks.get(i)
        .and_then(|t| t.ident().or_else(|| t.string_value()))
}

/// `name =` or `name TO` at `i`: the generic SET form.
fn is_setting_assignment(toks: &[Token<'_>], i: usize) -> bool {
    let j = i.saturating_add(1);
    is_kw(toks, j, "to")
        || toks
            .get(j)
            .is_some_and(|t| t.kind == TokenKind::Op && t.text == "=")
}

fn reset_statement(toks: &[Token<'_>], out: &mut Out) {
    let word = kw(toks, 1).unwrap_or_default();
    match word.as_str() {
        "role" => {
            // Back to the session user: undoes a SET ROLE the gateway may rely on.
            out.verb("RESET ROLE");
            out.raise(Privilege);
            out.obj(ObjectKind::Setting, "role".to_owned(), Access::Write);
        }
        "session" if is_kw(toks, 2, "authorization") => {
            out.verb("RESET SESSION AUTHORIZATION");
            out.raise(Privilege);
            out.obj(
                ObjectKind::Setting,
                "session_authorization".to_owned(),
                Access::Write,
            );
        }
        "all" => {
            out.verb("RESET ALL");
            out.raise(Privilege);
        }
        _ => match setting_name(toks, 1) {
            Some(name) => {
                out.verb("RESET");
                out.raise(tables::setting_class(&name));
                out.obj(ObjectKind::Setting, name, Access::Write);
            }
            None => out.raise(Unknown),
        },
    }
}

fn explain(cl: &Classifier, toks: &[Token<'_>], out: &mut Out, depth: usize) {
    out.verb("EXPLAIN");
    let mut i = 1usize;
    let mut analyze = false;
    if kind_at(toks, 1) == Some(TokenKind::LParen) {
        let Some(close) = matching(toks, 1) else {
            out.raise(Unknown);
            return;
        };
        analyze = explain_analyzes(toks.get(2..close).unwrap_or(&[]));
        i = close.saturating_add(1);
    } else {
        while let Some(w) = kw(toks, i) {
            match w.as_str() {
                "analyze" | "analyse" => analyze = true,
                "verbose" => {}
                _ => break,
            }
            i = i.saturating_add(1);
        }
    }
    let mut inner = Out::default();
    classify_statement(
        cl,
        toks.get(i..).unwrap_or(&[]),
        &mut inner,
        depth.saturating_add(1),
    );
    let inner_class = inner.class;
    let class = if inner_class == Unknown {
        Unknown
    } else if analyze {
        // EXPLAIN ANALYZE runs the statement.
        inner_class.max_risk(Read)
    } else {
        // Planning only: but constant folding may call functions, so keep what calls raised.
        let mut calls = Out::default();
        scan_functions(toks.get(i..).unwrap_or(&[]), &mut calls);
        Read.max_risk(calls.class)
    };
    out.raise(class);
    out.extend(inner.objects);
}

/// Whether an `EXPLAIN (…)` option list (the tokens between the parentheses) may run the
/// statement. Options are `name [value]` separated by commas; the server matches the name
/// `analyze` after folding, whether written unquoted, quoted or as `U&"…"`, and takes the
/// last ANALYZE given. Any ANALYZE option whose value is not certainly false, and any list
/// not read to the end, counts as ANALYZE: a wrong guess then overstates the class.
fn explain_analyzes(toks: &[Token<'_>]) -> bool {
    let mut analyze = false;
    for option in toks.split(|t| t.kind == TokenKind::Comma) {
        let Some(name) = option.first().and_then(Token::ident) else {
            return true;
        };
        // `"ANALYZE"` and `"analyse"` are options the server rejects: nothing runs, but
        // taking them as ANALYZE is the side to err on.
        if !(name.eq_ignore_ascii_case("analyze") || name.eq_ignore_ascii_case("analyse")) {
            continue;
        }
        let off = match option.get(1..) {
            Some([]) => false,
            Some([value]) => is_false_option(value),
            Some([sign, value]) => {
                sign.kind == TokenKind::Op
                    && matches!(sign.text, "-" | "+")
                    && value.kind == TokenKind::Number
                    && is_false_option(value)
            }
            _ => false,
        };
        analyze |= !off;
    }
    analyze
}

/// Whether an option value is one the server reads as the Boolean false (`defGetBoolean`):
/// the integer 0, or `false` or `off` in any case, as a keyword, identifier or string.
fn is_false_option(t: &Token<'_>) -> bool {
    let text = match t.kind {
        TokenKind::Number => {
            return !t.text.is_empty() && t.text.bytes().all(|b| b == b'0');
        }
        TokenKind::String(_) => t.string_value(),
        _ => t.ident(),
    };
    text.is_some_and(|v| v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("off"))
}

fn copy(toks: &[Token<'_>], out: &mut Out) {
    out.verb("COPY");
    let mut i = skip_kw(toks, 1, &["binary"]);
    let mut inner = Out::default();
    let mut table: Option<String> = None;
    if kind_at(toks, i) == Some(TokenKind::LParen) {
        let Some(close) = matching(toks, i) else {
            out.raise(Unknown);
            return;
        };
        query_statement(
            toks.get(i.saturating_add(1)..close).unwrap_or(&[]),
            &mut inner,
        );
        i = close.saturating_add(1);
    } else {
        let Some((name, _, j)) = qualified_name(toks, i) else {
            out.raise(Unknown);
            return;
        };
        table = Some(name);
        i = j;
        if kind_at(toks, i) == Some(TokenKind::LParen) {
            match matching(toks, i) {
                Some(c) => i = c.saturating_add(1),
                None => {
                    out.raise(Unknown);
                    return;
                }
            }
        }
    }
    let direction = kw(toks, i).unwrap_or_default();
    let from = match direction.as_str() {
        "from" => true,
        "to" => false,
        _ => {
            out.raise(Unknown);
            return;
        }
    };
    if from && table.is_none() {
        out.raise(Unknown);
        return;
    }
    out.raise(inner.class);
    out.extend(inner.objects);
    if let Some(t) = table {
        if from {
            out.raise(Write);
            out.obj(ObjectKind::Relation, t, Access::Write);
        } else {
            out.raise(Read);
            out.obj(ObjectKind::Relation, t, Access::Read);
        }
    }
    let target = i.saturating_add(1);
    match kind_at(toks, target) {
        _ if is_kw(toks, target, "program") => out.raise(Code),
        _ if is_kw(toks, target, "stdin") || is_kw(toks, target, "stdout") => {}
        // A file on the server: needs pg_read/write_server_files.
        Some(TokenKind::String(_)) => out.raise(Admin),
        _ => out.raise(Unknown),
    }
    // WHERE clause of COPY FROM and options may call functions.
    scan_functions(toks.get(target.saturating_add(1)..).unwrap_or(&[]), out);
}

fn grant(toks: &[Token<'_>], first: &str, out: &mut Out) {
    out.raise(Privilege);
    let on = find_kw_depth0(toks, 1, "on");
    // Without ON it grants membership in a role: the server's tag is `GRANT ROLE`.
    out.verb(if on.is_some() {
        first.to_ascii_uppercase()
    } else {
        format!("{} ROLE", first.to_ascii_uppercase())
    });
    let to_kw = if first == "grant" { "to" } else { "from" };
    if let Some(on) = on {
        let j = on.saturating_add(1);
        let table_like = is_kw(toks, j, "table")
            || (!is_kw(toks, j, "all")
                && !matches!(
                    kw(toks, j).as_deref(),
                    Some(
                        "sequence"
                            | "function"
                            | "procedure"
                            | "routine"
                            | "schema"
                            | "database"
                            | "language"
                            | "type"
                            | "domain"
                            | "tablespace"
                            | "foreign"
                            | "large"
                            | "parameter"
                    )
                ));
        if table_like {
            let j = skip_kw(toks, j, &["table"]);
            name_list(toks, j, ObjectKind::Relation, Access::Define, out);
        }
    }
    if let Some(t) = find_kw_depth0(toks, on.unwrap_or(1), to_kw) {
        let j = skip_kw(toks, t.saturating_add(1), &["group"]);
        name_list(toks, j, ObjectKind::Role, Access::Define, out);
    }
}

fn prepare(cl: &Classifier, toks: &[Token<'_>], out: &mut Out, depth: usize) {
    out.verb("PREPARE");
    out.raise(Session);
    let Some(name) = toks.get(1).and_then(Token::ident) else {
        out.raise(Unknown);
        return;
    };
    let Some(as_at) = find_kw_depth0(toks, 2, "as") else {
        out.raise(Unknown);
        return;
    };
    let body = toks.get(as_at.saturating_add(1)..).unwrap_or(&[]);
    let mut inner = Out::default();
    classify_statement(cl, body, &mut inner, depth.saturating_add(1));
    if inner.verb.is_none() {
        inner.verb(first_word(body));
    }
    let statement = Prepared {
        class: inner.class,
        verb: inner.verb.unwrap_or_default(),
        objects: inner.objects,
    };
    if statement.class == Unknown {
        // Preparing something not understood is itself not understood.
        out.raise(Unknown);
    }
    out.prepared = Some(PreparedEffect::Prepare { name, statement });
}

/// The object type after CREATE/ALTER/DROP at `i`, skipping modifiers.
fn object_type(
    toks: &[Token<'_>],
    mut i: usize,
) -> Option<(usize, &'static [&'static str], CommandClass, NameKind)> {
    i = skip_kw(
        toks,
        i,
        &[
            "or",
            "replace",
            "temporary",
            "temp",
            "local",
            "global",
            "unlogged",
            "unique",
            "trusted",
            "procedural",
            "recursive",
            "default",
            "constraint",
        ],
    );
    match_object_type(toks, i)
}

fn match_object_type(
    toks: &[Token<'_>],
    i: usize,
) -> Option<(usize, &'static [&'static str], CommandClass, NameKind)> {
    tables::OBJECT_TYPES
        .iter()
        .find_map(|(words, class, kind)| {
            let all = words
                .iter()
                .enumerate()
                .all(|(k, w)| is_kw(toks, i.saturating_add(k), w));
            all.then(|| (i.saturating_add(words.len()), *words, *class, *kind))
        })
}

/// The verb the server reports as the command tag: `CREATE USER` and `CREATE GROUP` are
/// `CREATE ROLE`.
fn verb_of(prefix: &str, words: &[&str]) -> String {
    let mut v = prefix.to_owned();
    let words = match words {
        ["user"] | ["group"] => &["role"],
        w => w,
    };
    for w in words {
        v.push(' ');
        v.push_str(&w.to_ascii_uppercase());
    }
    v
}

fn name_kind(k: NameKind) -> Option<ObjectKind> {
    match k {
        NameKind::Relation => Some(ObjectKind::Relation),
        NameKind::Function => Some(ObjectKind::Function),
        NameKind::Role => Some(ObjectKind::Role),
        NameKind::Namespace => Some(ObjectKind::Namespace),
        NameKind::Other => None,
    }
}

fn create(cl: &Classifier, toks: &[Token<'_>], out: &mut Out, depth: usize) {
    let Some((after, words, class, nk)) = object_type(toks, 1) else {
        out.raise(Unknown);
        return;
    };
    out.verb(verb_of("CREATE", words));
    out.raise(class);
    let mut j = skip_kw(toks, after, &["concurrently"]);
    // `IF` is not reserved: `CREATE TABLE if (…)` creates the table if.
    if is_kw(toks, j, "if") && is_kw(toks, j + 1, "not") && is_kw(toks, j + 2, "exists") {
        j += 3;
    }
    let name = qualified_name(toks, j).filter(|_| !is_kw(toks, j, "on"));
    if let (Some((n, _, _)), Some(kind)) = (&name, name_kind(nk)) {
        out.obj(kind, n.clone(), Access::Define);
    }
    let scope = Scope::default();
    match words {
        ["table"] | ["materialized", "view"] | ["view"] => {
            if let Some(as_at) = find_kw_depth0(toks, j, "as") {
                if words == ["table"] {
                    out.verb = Some("CREATE TABLE AS".to_owned());
                }
                if let Some((n, _, _)) = &name
                    && words != ["view"]
                {
                    out.obj(ObjectKind::Relation, n.clone(), Access::Write);
                }
                let body = toks.get(as_at.saturating_add(1)..).unwrap_or(&[]);
                if is_kw(body, 0, "execute") {
                    let mut inner = Out::default();
                    classify_statement(cl, body, &mut inner, depth.saturating_add(1));
                    out.raise(inner.class);
                    out.extend(inner.objects);
                } else {
                    let mut inner = Out::default();
                    match analyze_query(body, &scope, &mut inner) {
                        // A view stores the query; a table or materialized view runs it.
                        Some(_) => {
                            if words != ["view"] {
                                out.raise(inner.class);
                            } else {
                                out.raise(fn_only_class(body));
                            }
                            out.extend(inner.objects);
                        }
                        None => out.raise(Unknown),
                    }
                }
            } else {
                scan_functions(toks, out);
                like_and_references(toks, out);
            }
        }
        ["index"] => {
            if let Some(on) = find_kw_depth0(toks, after, "on") {
                let k = skip_kw(toks, on.saturating_add(1), &["only"]);
                if let Some((n, _, _)) = qualified_name(toks, k) {
                    out.obj(ObjectKind::Relation, n, Access::Read);
                }
            }
            // Index expressions run at build time.
            scan_functions(toks, out);
        }
        ["function"] | ["procedure"] => {
            // The body is code: no need to look inside.
        }
        ["rule"] | ["trigger"] | ["policy"] | ["event", "trigger"] => {
            if let Some(on) = find_kw_depth0(toks, after, "on") {
                let k = skip_kw(toks, on.saturating_add(1), &["only"]);
                if let Some((n, _, _)) = qualified_name(toks, k)
                    && words != ["event", "trigger"]
                    && words != ["rule"]
                {
                    out.obj(ObjectKind::Relation, n, Access::Define);
                }
            }
            scan_functions(toks, out);
        }
        ["role"] | ["user"] | ["group"] => {
            // CREATE ROLE … SUPERUSER etc.: all privilege.
        }
        _ => scan_functions(toks, out),
    }
}

/// The class raised by dangerous calls alone (for text stored but not run, like a view).
fn fn_only_class(toks: &[Token<'_>]) -> CommandClass {
    let mut o = Out::default();
    scan_functions(toks, &mut o);
    o.class
}

/// `LIKE src` and `REFERENCES other` in a table definition read those relations' definitions.
fn like_and_references(toks: &[Token<'_>], out: &mut Out) {
    for (k, t) in toks.iter().enumerate() {
        let like = t.is_kw("like") && kind_at(toks, k.wrapping_sub(1)) == Some(TokenKind::LParen);
        if (t.is_kw("references") || like)
            && let Some((n, _, _)) = qualified_name(toks, k.saturating_add(1))
        {
            out.obj(ObjectKind::Relation, n, Access::Read);
        }
    }
    // `REFERENCES other (col)` looked like a call of `other`: it is not one.
    let refs: Vec<String> = out
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Relation && o.access == Access::Read)
        .map(|o| o.name.clone())
        .collect();
    out.objects
        .retain(|o| !(o.kind == ObjectKind::Function && refs.contains(&o.name)));
}

fn alter(toks: &[Token<'_>], out: &mut Out) {
    if is_kw(toks, 1, "system") {
        out.verb("ALTER SYSTEM");
        out.raise(Admin);
        // `SET` is not reserved: `ALTER SYSTEM SET set.x = 1` sets `set.x`.
        let j = if is_kw(toks, 2, "set") || is_kw(toks, 2, "reset") {
            3
        } else {
            2
        };
        if let Some(n) = setting_name(toks, j) {
            out.obj(ObjectKind::Setting, n, Access::Write);
        }
        return;
    }
    if is_kw(toks, 1, "default") && is_kw(toks, 2, "privileges") {
        out.verb("ALTER DEFAULT PRIVILEGES");
        out.raise(Privilege);
        return;
    }
    let Some((after, words, class, nk)) = match_object_type(toks, 1) else {
        out.raise(Unknown);
        return;
    };
    out.verb(verb_of("ALTER", words));
    // Altering a routine cannot change its body; an extension update runs its script.
    let class = match words {
        ["function"] | ["procedure"] | ["routine"] | ["rule"] | ["transform"] => Schema,
        _ => class,
    };
    out.raise(class);
    // Only the grammar's own sequences are skipped: `IF`, `EXISTS` and `TABLESPACE` are not
    // reserved, so `ALTER TABLE if RENAME TO x` renames the table if.
    let mut j = after;
    if is_kw(toks, j, "if") && is_kw(toks, j + 1, "exists") {
        j += 2;
    }
    let mut name_end = None;
    if is_kw(toks, j, "all") {
        // `ALTER TABLE|INDEX|MATERIALIZED VIEW ALL IN TABLESPACE ts …` moves every relation
        // in `ts`; `ALTER ROLE ALL` names no role. `ALL` is reserved: never a name.
        if nk == NameKind::Relation {
            if is_kw(toks, j + 1, "in") && is_kw(toks, j + 2, "tablespace") {
                out.obj(
                    ObjectKind::Relation,
                    ObjectRef::ANY_RELATION.to_owned(),
                    Access::Define,
                );
            } else {
                out.raise(Unknown);
            }
        }
    } else if nk == NameKind::Relation {
        if let Some((n, k)) = relation_expr(toks, j) {
            out.obj(ObjectKind::Relation, n, Access::Define);
            name_end = Some(k);
        } else {
            // A relation this does not read could be any.
            out.raise(Unknown);
        }
    } else if let (Some((n, _, k)), Some(kind)) = (qualified_name(toks, j), name_kind(nk)) {
        out.obj(kind, n, Access::Define);
        name_end = Some(k);
    }
    if let Some(k) = name_end
        && matches!(words, ["table"] | ["foreign", "table"] | ["index"])
    {
        partition_and_parent(toks, k, out);
    }
    if matches!(words, ["trigger"] | ["policy"] | ["rule"])
        && let Some(on) = find_kw_depth0(toks, after, "on")
        && let Some((n, _)) = relation_expr(toks, on + 1)
    {
        // `ALTER TRIGGER|POLICY|RULE name ON table …` changes what happens on that table.
        out.obj(ObjectKind::Relation, n, Access::Define);
    }
    if matches!(words, ["table"] | ["foreign", "table"]) {
        // `ADD … REFERENCES other` reads other to validate the rows.
        like_and_references(toks, out);
    }
    if let Some(k) = stored_setting_at(toks, after, words) {
        set_reset_clause(toks, k, out);
    }
    if matches!(words, ["function"] | ["procedure"] | ["routine"]) {
        routine_settings(toks, after, out);
    }
    let has = |w: &str| find_kw_depth0(toks, after, w).is_some();
    if has("owner")
        || (has("security") && matches!(words, ["function"] | ["procedure"] | ["routine"]))
        || (has("row") && has("level"))
        || (has("policy") && words == ["table"])
    {
        // New owner, SECURITY DEFINER, row-level security: who may do what.
        out.raise(Privilege);
    }
    if words == ["extension"] && has("update") {
        out.raise(Admin);
    }
    // ADD COLUMN … DEFAULT f() runs f for every existing row.
    scan_functions(toks, out);
}

/// The settings an `ALTER FUNCTION|PROCEDURE|ROUTINE name [(args)] action …` stores for
/// the routine's runs: each `SET x = v`, `SET x FROM CURRENT` and `RESET x` among its
/// actions, recorded as [`set_reset_clause`] records a role's default ([`Access::Define`]:
/// they apply while the routine runs, not to the session that alters it). `SET SCHEMA s`
/// moves the routine to another schema and stores nothing; `RESET ALL` names none. The name
/// and its argument list are skipped first, so a routine named `set` is not a clause.
fn routine_settings(toks: &[Token<'_>], after: usize, out: &mut Out) {
    let Some((_, _, mut i)) = qualified_name(toks, after) else {
        return;
    };
    let mut depth = 0usize;
    while let Some(t) = toks.get(i) {
        match t.kind {
            TokenKind::LParen | TokenKind::LBracket => depth = depth.saturating_add(1),
            TokenKind::RParen | TokenKind::RBracket => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            _ if is_kw(toks, i, "reset") => set_reset_clause(toks, i, out),
            _ if is_kw(toks, i, "set") => {
                let next = i.saturating_add(1);
                if !is_kw(toks, next, "schema") || is_setting_assignment(toks, next) {
                    set_reset_clause(toks, i, out);
                }
            }
            _ => {}
        }
        i = i.saturating_add(1);
    }
}

/// Where the `SET` or `RESET` of an `ALTER ROLE|USER role_spec [IN DATABASE db]` or `ALTER
/// DATABASE name` that stores a setting's default starts, the object type's words ending
/// at `after`; `None` for the other forms (`ALTER DATABASE … SET TABLESPACE` moves the
/// database). Role and database names are one token, so the clause is found by position:
/// a role named `set` is not taken for the clause.
fn stored_setting_at(toks: &[Token<'_>], after: usize, words: &[&str]) -> Option<usize> {
    let mut k = after.saturating_add(1);
    match words {
        ["role"] | ["user"] => {
            if is_kw(toks, k, "in") && is_kw(toks, k.saturating_add(1), "database") {
                k = k.saturating_add(3);
            }
        }
        ["database"] => {
            let next = k.saturating_add(1);
            if is_kw(toks, k, "set")
                && is_kw(toks, next, "tablespace")
                && !is_setting_assignment(toks, next)
            {
                return None;
            }
        }
        _ => return None,
    }
    (is_kw(toks, k, "set") || is_kw(toks, k, "reset")).then_some(k)
}

/// The grammar's `SetResetClause` at `k` (its `SET` or `RESET`), as `ALTER ROLE` and `ALTER
/// DATABASE` use it: the default it stores for later sessions is recorded as the setting,
/// [`Access::Define`] rather than [`Access::Write`], since it does not change the session
/// that runs it (see [`Statement::changes_lexing`]), and raises the class as setting it
/// would. The forms that store nothing (`SET TRANSACTION …`, `RESET ALL`) name none; a
/// setting that cannot be named is not understood.
fn set_reset_clause(toks: &[Token<'_>], k: usize, out: &mut Out) {
    let i = k.saturating_add(1);
    let next = i.saturating_add(1);
    // The SQL-standard forms are keywords followed by a value; `names = x`, `schema.x = 1`
    // or `role FROM CURRENT` are the generic form of a setting so named.
    let special = !is_setting_assignment(toks, i)
        && kind_at(toks, next) != Some(TokenKind::Dot)
        && !is_kw(toks, next, "from");
    let word = kw(toks, i).unwrap_or_default();
    let fixed = |name: &str| Some(Some(name.to_owned()));
    let name = match word.as_str() {
        "time" if special && is_kw(toks, next, "zone") => fixed("timezone"),
        "session" if special && is_kw(toks, next, "authorization") => {
            fixed("session_authorization")
        }
        _ if is_kw(toks, k, "reset") => match word.as_str() {
            "all" if special => Some(None),
            "transaction" if special && is_kw(toks, next, "isolation") => {
                fixed("transaction_isolation")
            }
            _ => setting_name(toks, i).map(Some),
        },
        "transaction" | "session" if special => Some(None),
        "names" if special => fixed("client_encoding"),
        "schema" if special => fixed("search_path"),
        "xml" if special && is_kw(toks, next, "option") => fixed("xmloption"),
        "role" if special => fixed("role"),
        _ => setting_name(toks, i).map(Some),
    };
    match name {
        Some(Some(name)) => {
            out.raise(tables::setting_class(&name));
            out.obj(ObjectKind::Setting, name, Access::Define);
        }
        Some(None) => {}
        None => out.raise(Unknown),
    }
}

/// `ATTACH PARTITION p`, `DETACH PARTITION p` and `[NO] INHERIT parent` of an ALTER TABLE
/// whose name ends at `i`: they touch a second relation.
fn partition_and_parent(toks: &[Token<'_>], i: usize, out: &mut Out) {
    if (is_kw(toks, i, "attach") || is_kw(toks, i, "detach")) && is_kw(toks, i + 1, "partition") {
        if let Some((n, _, _)) = qualified_name(toks, i + 2) {
            out.obj(ObjectKind::Relation, n, Access::Define);
        } else {
            out.raise(Unknown);
        }
        return;
    }
    // Actions are a comma-separated list: INHERIT starts one.
    let mut depth: usize = 0;
    for (k, t) in toks.iter().enumerate().skip(i) {
        match t.kind {
            TokenKind::LParen | TokenKind::LBracket => depth = depth.saturating_add(1),
            TokenKind::RParen | TokenKind::RBracket => depth = depth.saturating_sub(1),
            _ if depth == 0 && t.is_kw("inherit") => {
                let prev = if k > 0 && is_kw(toks, k - 1, "no") {
                    k - 1
                } else {
                    k
                };
                let starts =
                    prev == i || kind_at(toks, prev.wrapping_sub(1)) == Some(TokenKind::Comma);
                if starts {
                    match qualified_name(toks, k + 1) {
                        Some((n, _, _)) => out.obj(ObjectKind::Relation, n, Access::Define),
                        None => out.raise(Unknown),
                    }
                }
            }
            _ => {}
        }
    }
}

fn drop_statement(toks: &[Token<'_>], out: &mut Out) {
    if is_kw(toks, 1, "owned") {
        out.verb("DROP OWNED");
        out.raise(Privilege);
        return;
    }
    let Some((after, words, class, nk)) = match_object_type(toks, 1) else {
        out.raise(Unknown);
        return;
    };
    out.verb(verb_of("DROP", words));
    // Dropping code does not run it.
    out.raise(if class == Code { Schema } else { class });
    let mut j = skip_kw(toks, after, &["concurrently"]);
    // `DROP TABLE if` drops the table if.
    if is_kw(toks, j, "if") && is_kw(toks, j + 1, "exists") {
        j += 2;
    }
    if let Some(kind) = name_kind(nk) {
        name_list(toks, j, kind, Access::Define, out);
    }
}

#[cfg(test)]
mod tests;
