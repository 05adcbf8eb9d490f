//! What is being asked: a protocol-neutral description of one command.
//!
//! Each codec turns what it decodes into a [`Command`]: a Postgres statement, a Redis command
//! or an HTTP request. Policy decides on it, review binds to its [`CommandDigest`], and the
//! audit trail records it.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Protocol};

/// The kind of a command, ordered by risk: every variant is riskier than the ones before it,
/// and [`CommandClass::Unknown`] is the riskiest of all.
///
/// `Unknown` is what a classifier returns for anything it does not fully understand, so a
/// rule written as "allow up to `Write`" can never let an unparsed statement through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandClass {
    /// Connection housekeeping that touches no data: `PING`, `BEGIN`, `SET application_name`,
    /// `SELECT 1`-style keep-alives, `CLIENT SETNAME`.
    Session,
    /// Reads data: `SELECT`, `GET`, `HGETALL`, `GET /customers`.
    Read,
    /// Changes data: `INSERT`/`UPDATE`/`DELETE`/`MERGE`, `SET`, `DEL`, `POST`.
    Write,
    /// Changes schema: `CREATE`/`ALTER`/`DROP TABLE`, index and view definitions.
    Schema,
    /// Changes who may do what: `GRANT`, `CREATE ROLE`, `SET ROLE`, `ACL SETUSER`.
    Privilege,
    /// Administers the server: `ALTER SYSTEM`, `CONFIG SET`, `SHUTDOWN`, `DEBUG`, `MONITOR`.
    Admin,
    /// Runs code chosen by the client: `DO`, `CREATE FUNCTION`, `COPY … PROGRAM`, `EVAL`,
    /// `FCALL`, `MODULE LOAD`.
    Code,
    /// Not understood. Treated as the riskiest class.
    Unknown,
}

impl CommandClass {
    /// Every class, least risky first.
    pub const ALL: [Self; 8] = [
        Self::Session,
        Self::Read,
        Self::Write,
        Self::Schema,
        Self::Privilege,
        Self::Admin,
        Self::Code,
        Self::Unknown,
    ];

    /// The lowercase name used in configuration and exports.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Read => "read",
            Self::Write => "write",
            Self::Schema => "schema",
            Self::Privilege => "privilege",
            Self::Admin => "admin",
            Self::Code => "code",
            Self::Unknown => "unknown",
        }
    }

    /// A risk rank from 0 (least) to 7 (`Unknown`).
    #[must_use]
    pub const fn risk(self) -> u8 {
        self as u8
    }

    /// The riskier of two classes: combining the classes of a multi-statement query or a
    /// transaction gives the class of its riskiest part.
    #[must_use]
    pub fn max_risk(self, other: Self) -> Self {
        std::cmp::max(self, other)
    }
}

impl fmt::Display for CommandClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandClass {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownName {
                kind: "command class",
                input: s.to_owned(),
            })
    }
}

/// What sort of object a command touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ObjectKind {
    /// A table, view or other relation (`schema.table` when qualified).
    Relation,
    /// A function or procedure that is called.
    Function,
    /// A Redis key.
    Key,
    /// A pub/sub or `LISTEN` channel.
    Channel,
    /// An HTTP path or route template.
    Path,
    /// A database, schema or other namespace.
    Namespace,
    /// A role or user.
    Role,
    /// A server setting.
    Setting,
}

/// How a command uses an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Access {
    /// Reads it.
    Read,
    /// Writes or deletes it.
    Write,
    /// Executes it (functions).
    Execute,
    /// Defines, alters or drops it.
    Define,
}

/// One object a command touches, and how.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// What kind of object.
    pub kind: ObjectKind,
    /// Its name as the command wrote it, normalised by the codec (unquoted identifiers
    /// folded to lowercase for Postgres; keys verbatim, lossily decoded, for Redis).
    pub name: String,
    /// How the command uses it.
    pub access: Access,
}

impl ObjectRef {
    /// The name of the [`ObjectKind::Relation`] a codec reports for relations a command may
    /// reach without naming them: a call to a function whose body it cannot see (a
    /// user-defined function can read or write any table it likes). No SQL name renders as
    /// `*` (a quoted `"*"` keeps its quotes), and no glob but one that matches every name
    /// matches it, so a rule or grant that allows only some relations does not cover such a
    /// command.
    pub const ANY_RELATION: &'static str = "*";

    /// An object of `kind` named `name`, used with `access`.
    #[must_use]
    pub fn new(kind: ObjectKind, name: impl Into<String>, access: Access) -> Self {
        Self {
            kind,
            name: name.into(),
            access,
        }
    }

    /// Whether this stands for relations the command may reach without naming them (see
    /// [`ObjectRef::ANY_RELATION`]).
    #[must_use]
    pub fn is_any_relation(&self) -> bool {
        self.kind == ObjectKind::Relation && self.name == Self::ANY_RELATION
    }
}

/// A stable digest of exactly what the client sent: protocol, command text and arguments.
///
/// Reviews bind to it, so an approval for one statement can never be used for another; the
/// same bytes always give the same digest, across processes, machines and versions (the
/// encoding is versioned by its key-derivation context).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandDigest([u8; 32]);

const DIGEST_CONTEXT: &str = "wirewarden 2026-11-25 command digest v1";

/// The stack buffer of [`Fields`]: the fields of most commands fit at once.
const FIELDS_BUF: usize = 256;

/// A hasher fed through a stack buffer, so many small fields cost one `update`.
struct Fields<'h> {
    hasher: &'h mut blake3::Hasher,
    buf: [u8; FIELDS_BUF],
    len: usize,
}

impl Fields<'_> {
    /// `bytes`, length-prefixed.
    fn field(&mut self, bytes: &[u8]) {
        self.put(&(bytes.len() as u64).to_le_bytes());
        self.put(bytes);
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > FIELDS_BUF {
            self.flush();
            if bytes.len() > FIELDS_BUF {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
    }
}

std::thread_local! {
    /// Each thread's digest hasher, reset for every digest. A `blake3::Hasher` is about two
    /// kilobytes; a copy per digest cost more than the hashing of a short command.
    static SCRATCH: Cell<Option<Box<blake3::Hasher>>> = const { Cell::new(None) };
}

/// A hasher in the digest's key-derivation mode, in its initial state: the thread's own when
/// it is free (it is not while an argument iterator computes a digest of its own, or while
/// the thread's locals are being torn down), else a new one.
fn digest_hasher() -> Box<blake3::Hasher> {
    match SCRATCH.try_with(Cell::take) {
        Ok(Some(mut h)) => {
            h.reset();
            h
        }
        _ => {
            static BASE: OnceLock<blake3::Hasher> = OnceLock::new();
            Box::new(
                BASE.get_or_init(|| blake3::Hasher::new_derive_key(DIGEST_CONTEXT))
                    .clone(),
            )
        }
    }
}

impl CommandDigest {
    /// The digest of `text` sent over `protocol` with the given arguments (extended-protocol
    /// parameters, Redis arguments after the command name; `None` is SQL NULL).
    ///
    /// Every part is length-prefixed, so no two different inputs share an encoding.
    pub fn compute<'a, I>(protocol: Protocol, text: &[u8], args: I) -> Self
    where
        I: IntoIterator<Item = Option<&'a [u8]>>,
    {
        // Small fields go through a stack buffer: one `update` per field costs more than the
        // few bytes most of them carry.
        let mut hasher = digest_hasher();
        let mut h = Fields {
            hasher: &mut hasher,
            buf: [0; FIELDS_BUF],
            len: 0,
        };
        h.field(protocol.as_str().as_bytes());
        h.field(text);
        let mut count: u64 = 0;
        for arg in args {
            count += 1;
            match arg {
                None => h.put(&[0]),
                Some(a) => {
                    h.put(&[1]);
                    h.field(a);
                }
            }
        }
        // The count last: a trailing NULL argument cannot be confused with no argument.
        h.put(&count.to_le_bytes());
        h.flush();
        let digest = Self(*hasher.finalize().as_bytes());
        // Back for the next digest (if the thread is tearing down, it is simply dropped).
        let _ = SCRATCH.try_with(|s| s.set(Some(hasher)));
        digest
    }

    /// Wraps raw digest bytes (read back from storage).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CommandDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CommandDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandDigest({self})")
    }
}

impl FromStr for CommandDigest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidDigest {
            input: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(bad());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let (hi, lo) = match pair {
                [hi, lo] => (nibble(*hi).ok_or_else(bad)?, nibble(*lo).ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            *o = hi << 4 | lo;
        }
        Ok(Self(out))
    }
}

impl Serialize for CommandDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CommandDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One command as policy sees it: which protocol, what verb, how risky, the text, what it
/// touches, and the digest of exactly what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The protocol it arrived on.
    pub protocol: Protocol,
    /// The verb in uppercase: `SELECT`, `CREATE TABLE`, `CONFIG SET`, `GET` (an HTTP method).
    pub verb: String,
    /// Its risk class.
    pub class: CommandClass,
    /// The statement or command as text: SQL, a Redis command line with arguments quoted, or
    /// `METHOD /path?query`.
    pub text: String,
    /// The objects it touches, in the order found, without duplicates.
    #[serde(default)]
    pub objects: Vec<ObjectRef>,
    /// The digest of what was sent (see [`CommandDigest::compute`]).
    pub digest: CommandDigest,
}

impl Command {
    /// A command with no arguments: the digest covers `protocol` and `text`.
    ///
    /// # Errors
    /// [`Error::Empty`] if `verb` is empty.
    pub fn new(
        protocol: Protocol,
        verb: impl Into<String>,
        class: CommandClass,
        text: impl Into<String>,
    ) -> Result<Self, Error> {
        let text = text.into();
        let digest = CommandDigest::compute(protocol, text.as_bytes(), []);
        Self::with_digest(protocol, verb, class, text, digest)
    }

    /// A command whose digest the codec computed itself (over arguments or parameters that
    /// are not part of `text`).
    ///
    /// # Errors
    /// [`Error::Empty`] if `verb` is empty.
    pub fn with_digest(
        protocol: Protocol,
        verb: impl Into<String>,
        class: CommandClass,
        text: impl Into<String>,
        digest: CommandDigest,
    ) -> Result<Self, Error> {
        let verb = verb.into();
        if verb.is_empty() {
            return Err(Error::Empty {
                what: "command verb",
            });
        }
        Ok(Self {
            protocol,
            verb,
            class,
            text: text.into(),
            objects: Vec::new(),
            digest,
        })
    }

    /// Adds an object, keeping the list free of duplicates.
    #[must_use]
    pub fn with_object(mut self, object: ObjectRef) -> Self {
        self.push_object(object);
        self
    }

    /// Adds an object in place, keeping the list free of duplicates.
    pub fn push_object(&mut self, object: ObjectRef) {
        if !self.objects.contains(&object) {
            self.objects.push(object);
        }
    }

    /// The objects of one kind.
    pub fn objects_of(&self, kind: ObjectKind) -> impl Iterator<Item = &ObjectRef> {
        self.objects.iter().filter(move |o| o.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_by_risk_with_unknown_last() {
        let mut sorted = CommandClass::ALL;
        sorted.sort();
        assert_eq!(sorted, CommandClass::ALL);
        assert!(
            CommandClass::ALL
                .iter()
                .all(|c| *c <= CommandClass::Unknown)
        );
        assert_eq!(
            CommandClass::Read.max_risk(CommandClass::Unknown),
            CommandClass::Unknown
        );
        assert_eq!(CommandClass::Unknown.risk(), 7);
        for c in CommandClass::ALL {
            assert_eq!(c.as_str().parse::<CommandClass>().unwrap(), c);
        }
    }

    #[test]
    fn digest_is_stable_and_known() {
        let d = CommandDigest::compute(Protocol::Postgres, b"SELECT 1", []);
        assert_eq!(
            d,
            CommandDigest::compute(Protocol::Postgres, b"SELECT 1", [])
        );
        // Pinned: a change here breaks every stored approval.
        assert_eq!(
            d.to_string(),
            "81e9824832647c93d3d70d34f1c57f48d77e038358a0f9cbc82472a2089c61d1"
        );
        assert_eq!(d.to_string().parse::<CommandDigest>().unwrap(), d);
    }

    #[test]
    fn digest_is_its_definition_whatever_the_field_sizes() {
        // The definition, one `update` per part, against the buffered computation, with
        // fields around and beyond the stack buffer.
        fn by_definition(protocol: Protocol, text: &[u8], args: &[Option<Vec<u8>>]) -> [u8; 32] {
            let mut h = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
            let field = |h: &mut blake3::Hasher, bytes: &[u8]| {
                h.update(&(bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            };
            field(&mut h, protocol.as_str().as_bytes());
            field(&mut h, text);
            for arg in args {
                match arg {
                    None => {
                        h.update(&[0]);
                    }
                    Some(a) => {
                        h.update(&[1]);
                        field(&mut h, a);
                    }
                }
            }
            h.update(&(args.len() as u64).to_le_bytes());
            *h.finalize().as_bytes()
        }
        for sizes in [
            &[][..],
            &[0],
            &[1, 2, 3],
            &[200, 40],
            &[FIELDS_BUF - 9],
            &[FIELDS_BUF - 8, 1],
            &[FIELDS_BUF, FIELDS_BUF + 1],
            &[3, 5000, 7],
            &[1, 2, 3, 4, 5, 300, 0, 0],
        ] {
            let args: Vec<Option<Vec<u8>>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (i % 4 != 3).then(|| vec![(i as u8).wrapping_add(n as u8); n]))
                .collect();
            for text in [&b"GET"[..], &[b'x'; 300][..]] {
                let got = CommandDigest::compute(
                    Protocol::Redis,
                    text,
                    args.iter().map(|a| a.as_deref()),
                );
                assert_eq!(
                    *got.as_bytes(),
                    by_definition(Protocol::Redis, text, &args),
                    "{sizes:?}"
                );
            }
        }
    }

    #[test]
    fn digest_inside_an_argument_iterator_is_its_own() {
        // The thread's hasher is in use by the outer digest while the iterator computes an
        // inner one: both must come out as if computed alone.
        let alone_inner = CommandDigest::compute(Protocol::Redis, b"inner", [Some(&b"x"[..])]);
        let alone_outer = CommandDigest::compute(Protocol::Redis, b"outer", [Some(&b"a"[..])]);
        let mut inner = None;
        let outer = CommandDigest::compute(
            Protocol::Redis,
            b"outer",
            std::iter::once(()).map(|()| {
                inner = Some(CommandDigest::compute(
                    Protocol::Redis,
                    b"inner",
                    [Some(&b"x"[..])],
                ));
                Some(&b"a"[..])
            }),
        );
        assert_eq!(outer, alone_outer);
        assert_eq!(inner, Some(alone_inner));
        assert_eq!(
            CommandDigest::compute(Protocol::Redis, b"outer", [Some(&b"a"[..])]),
            alone_outer
        );
    }

    #[test]
    fn digest_separates_protocol_text_and_arguments() {
        let base = CommandDigest::compute(Protocol::Redis, b"GET", [Some(&b"a"[..])]);
        assert_ne!(
            base,
            CommandDigest::compute(Protocol::Postgres, b"GET", [Some(&b"a"[..])])
        );
        assert_ne!(base, CommandDigest::compute(Protocol::Redis, b"GETa", []));
        assert_ne!(
            base,
            CommandDigest::compute(Protocol::Redis, b"GET", [Some(&b"a"[..]), None])
        );
        assert_ne!(
            CommandDigest::compute(Protocol::Redis, b"SET", [Some(&b"ab"[..]), Some(&b"c"[..])]),
            CommandDigest::compute(Protocol::Redis, b"SET", [Some(&b"a"[..]), Some(&b"bc"[..])]),
        );
        assert_ne!(
            CommandDigest::compute(Protocol::Postgres, b"SELECT $1", [None]),
            CommandDigest::compute(Protocol::Postgres, b"SELECT $1", [Some(&b""[..])]),
        );
    }

    #[test]
    fn digest_parse_rejects_bad_hex() {
        assert!("00".parse::<CommandDigest>().is_err());
        assert!("G".repeat(64).parse::<CommandDigest>().is_err());
        assert!(
            "A".repeat(64).parse::<CommandDigest>().is_err(),
            "uppercase is not canonical"
        );
        assert!("é".repeat(32).parse::<CommandDigest>().is_err());
    }

    #[test]
    fn command_objects_are_deduplicated() {
        let cmd = Command::new(
            Protocol::Postgres,
            "SELECT",
            CommandClass::Read,
            "select * from a, a",
        )
        .unwrap()
        .with_object(ObjectRef::new(ObjectKind::Relation, "a", Access::Read))
        .with_object(ObjectRef::new(ObjectKind::Relation, "a", Access::Read))
        .with_object(ObjectRef::new(ObjectKind::Function, "now", Access::Execute));
        assert_eq!(cmd.objects.len(), 2);
        assert_eq!(cmd.objects_of(ObjectKind::Relation).count(), 1);
        let back: Command = serde_json::from_str(&serde_json::to_string(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
        assert!(Command::new(Protocol::Redis, "", CommandClass::Read, "").is_err());
    }
}
