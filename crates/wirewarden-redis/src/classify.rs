//! From arguments to a protocol-neutral [`Command`]: the command (and subcommand) is looked up
//! in the generated table, given a [`CommandClass`], its keys and channels are extracted with
//! the server's own key-spec algorithm, and [`Risk`] marks what a policy should look at twice.
//!
//! Fail closed: a command or subcommand the table does not know is
//! [`CommandClass::Unknown`]; a command with the wrong number of arguments keeps its class
//! and gets [`Risk::BAD_ARITY`].

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use wirewarden_core::{
    Access, Command, CommandClass, CommandDigest, ObjectKind, ObjectRef, Protocol,
};

use crate::spec::{
    self, AclCategories, BeginSearch, CommandFlags, CommandSpec, FindKeys, KeySpecFlags,
};

bitset! {
    /// What makes a command risky beyond its class.
    Risk: u16 {
        /// Runs code sent by the client (`EVAL`, `FCALL`, `FUNCTION LOAD`, `SCRIPT LOAD`).
        SCRIPTING = 0 => "scripting",
        /// In the server's `@admin` category.
        ADMIN = 1 => "admin",
        /// In the server's `@dangerous` category.
        DANGEROUS = 2 => "dangerous",
        /// Reads or writes keys its arguments do not name (`SORT … BY/GET`, scripts,
        /// functions).
        UNDECLARED_KEYS = 3 => "undeclared_keys",
        /// Enumerates or changes the whole keyspace (`KEYS`, `SCAN`, `RANDOMKEY`, `FLUSHALL`,
        /// `FLUSHDB`, `SWAPDB`).
        WHOLE_KEYSPACE = 4 => "whole_keyspace",
        /// Sees or changes the whole server (`MONITOR`, `DEBUG`, `MODULE`, `CONFIG SET`,
        /// `SHUTDOWN`, `REPLICAOF`, `FAILOVER`, `SYNC`).
        WHOLE_SERVER = 5 => "whole_server",
        /// Moves serialized values that masking cannot inspect (`DUMP`, `RESTORE`, `MIGRATE`).
        SERIALIZED = 6 => "serialized",
        /// Sends data to another server (`MIGRATE`, `REPLICAOF`).
        REMOTE = 7 => "remote",
        /// May block the connection.
        BLOCKING = 8 => "blocking",
        /// Wrong number of arguments: the server will reject it.
        BAD_ARITY = 9 => "bad_arity",
        /// Key extraction may have missed keys.
        INCOMPLETE_KEYS = 10 => "incomplete_keys",
        /// Carries a password or credential (redacted in the command text).
        CREDENTIALS = 11 => "credentials",
        /// Returns a piece of a value, or facts about its bits, rather than the value
        /// (`GETRANGE`, `SUBSTR`, `GETBIT`, `BITFIELD`, `BITFIELD_RO`, `BITPOS`, `BITCOUNT`
        /// over a range, `LCS`). A piece cannot be masked: content detectors see a card
        /// number or a JSON document only whole, and a piece of one matches nothing, so the
        /// value can be read out piece by piece in clear.
        PARTIAL_VALUE = 12 => "partial_value",
    }
}

/// A classified command: the protocol-neutral [`Command`], its [`Risk`], and the table entry
/// it matched.
#[derive(Debug, Clone)]
pub struct Classified {
    /// What policy and audit see.
    pub command: Command,
    /// Risk markers.
    pub risk: Risk,
    /// The command or subcommand entry, if the table knows it.
    pub spec: Option<&'static CommandSpec>,
    /// The keys the command copies data between, if it reads some keys and writes what it
    /// read into others.
    pub flow: Option<Flow>,
}

/// Data a command moves from one key into another (`COPY`, `RENAME`, `LMOVE`, `SMOVE`,
/// `BITOP`, `SUNIONSTORE`, `PFMERGE`, `GEORADIUS … STORE`, `SORT … STORE` …): found from the
/// key specs, as a spec whose keys the command reads (`access`) and another spec whose keys
/// it writes into (`insert`, `update`, `OW`). A key of both (the destination of `PFMERGE`)
/// is in both lists. Commands that read and write the same keys (`LMPOP`, `SET … GET`,
/// `XREADGROUP`) move nothing between keys and have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    /// Keys whose data is read.
    pub sources: Vec<Bytes>,
    /// Keys written with it.
    pub destinations: Vec<Bytes>,
}

/// Key-spec flags of a key whose data the command reads.
const SOURCE: KeySpecFlags = KeySpecFlags::ACCESS;
/// Key-spec flags of a key the command puts data into.
const DESTINATION: KeySpecFlags =
    KeySpecFlags::of(&[KeySpecFlags::OW, KeySpecFlags::INSERT, KeySpecFlags::UPDATE]);

/// The flow of a command whose keys `idx` found: `(argument, flags, spec)`.
fn flow_of(args: &[Bytes], idx: &[(usize, KeySpecFlags, usize)]) -> Option<Flow> {
    let moves = idx.iter().any(|(_, from, a)| {
        from.intersects(SOURCE)
            && idx
                .iter()
                .any(|(_, to, b)| a != b && to.intersects(DESTINATION))
    });
    if !moves {
        return None;
    }
    let keys = |want: KeySpecFlags| {
        idx.iter()
            .filter(|(_, f, _)| f.intersects(want) && !f.contains(KeySpecFlags::NOT_KEY))
            .filter_map(|(i, _, _)| args.get(*i).cloned())
            .collect::<Vec<_>>()
    };
    Some(Flow {
        sources: keys(SOURCE),
        destinations: keys(DESTINATION),
    })
}

/// Longest argument shown in full in the command text; longer ones are cut and their size
/// noted (the digest still covers every byte).
const TEXT_ARG_MAX: usize = 128;
/// Longest command text.
const TEXT_MAX: usize = 4096;

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// `b` as text, invalid UTF-8 replaced. Almost every name and argument is valid UTF-8:
/// `from_utf8` checks that in one pass, and only a failure takes the replacing walk.
fn text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

fn lossy(b: &[u8]) -> String {
    text(b).into_owned()
}

fn quote_into(out: &mut String, arg: &[u8]) {
    let plain = !arg.is_empty()
        && arg
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
    let shown = arg.get(..TEXT_ARG_MAX.min(arg.len())).unwrap_or(arg);
    let cut = shown.len() < arg.len();
    if plain && !cut {
        out.push_str(&text(arg));
        return;
    }
    out.push('"');
    for &b in shown {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            b' '..=b'~' => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if cut {
        let _ = write!(out, "...({} bytes)", arg.len());
    }
}

/// Which argument indexes carry credentials that must not appear in the text.
fn secret_args(name: &str, args: &[Bytes]) -> Vec<usize> {
    let mut out = Vec::new();
    match name {
        "auth" => out.extend(1..args.len()),
        "hello" => {
            let mut i = 2;
            while i < args.len() {
                if args.get(i).is_some_and(|a| eq(a, "AUTH")) {
                    out.push(i + 2);
                    i += 3;
                } else {
                    i += 1;
                }
            }
        }
        "migrate" => {
            let mut i = 6;
            while i < args.len() {
                let a = args.get(i).map(|b| &b[..]).unwrap_or_default();
                if eq(a, "AUTH") {
                    out.push(i + 1);
                    i += 2;
                } else if eq(a, "AUTH2") {
                    out.push(i + 2);
                    i += 3;
                } else if eq(a, "KEYS") {
                    break;
                } else {
                    i += 1;
                }
            }
        }
        "acl|setuser" => out.extend((3..args.len()).filter(|&i| {
            args.get(i)
                .and_then(|a| a.first())
                .is_some_and(|c| matches!(c, b'>' | b'<' | b'#' | b'!'))
        })),
        "config|set" => {
            let mut i = 2;
            while i + 1 < args.len() {
                if args.get(i).is_some_and(|a| {
                    eq(a, "requirepass") || eq(a, "masterauth") || eq(a, "masteruser")
                }) {
                    out.push(i + 1);
                }
                i += 2;
            }
        }
        _ => {}
    }
    out
}

/// The class a command or subcommand has, from the server's flags and categories plus the
/// few names that need a human decision.
fn base_class(spec: &CommandSpec) -> CommandClass {
    let acl = spec.acl;
    let flags = spec.flags;
    match spec.name {
        "auth" | "acl|setuser" | "acl|deluser" | "acl|load" | "acl|save" => {
            return CommandClass::Privilege;
        }
        "acl|cat" | "acl|genpass" | "acl|help" | "acl|whoami" => return CommandClass::Session,
        "module|load" | "module|loadex" => return CommandClass::Code,
        "script|exists" | "function|list" | "function|stats" | "function|dump" => {
            return CommandClass::Read;
        }
        "script|help" | "function|help" => return CommandClass::Session,
        "script|kill" | "function|kill" => return CommandClass::Admin,
        "publish" | "spublish" => return CommandClass::Write,
        "flushall" | "flushdb" | "swapdb" => return CommandClass::Admin,
        _ => {}
    }
    if acl.contains(AclCategories::SCRIPTING) {
        return CommandClass::Code;
    }
    if flags.contains(CommandFlags::ADMIN) || acl.contains(AclCategories::ADMIN) {
        return CommandClass::Admin;
    }
    let keyed = !spec.key_specs.is_empty();
    let writes = flags.contains(CommandFlags::WRITE) || acl.contains(AclCategories::WRITE);
    let reads = flags.contains(CommandFlags::READONLY) || acl.contains(AclCategories::READ);
    if acl.contains(AclCategories::DANGEROUS) {
        // Dangerous data commands (SORT, RESTORE, MIGRATE, KEYS) keep their data class and
        // carry risk markers; the rest administer the server.
        return match (writes, reads || keyed) {
            (true, _) if keyed => CommandClass::Write,
            (false, true) => CommandClass::Read,
            _ => CommandClass::Admin,
        };
    }
    if writes {
        return CommandClass::Write;
    }
    if reads {
        return CommandClass::Read;
    }
    if acl.contains(AclCategories::PUBSUB) {
        return CommandClass::Read;
    }
    if acl.intersects(AclCategories::of(&[
        AclCategories::CONNECTION,
        AclCategories::TRANSACTION,
    ])) {
        return CommandClass::Session;
    }
    match spec.name {
        // Introspection of the server's clock, the command table and the client itself.
        "time"
        | "lolwut"
        | "command|count"
        | "command|docs"
        | "command|getkeys"
        | "command|getkeysandflags"
        | "command|help"
        | "command|info"
        | "command|list"
        | "asking"
        | "readonly"
        | "readwrite"
        | "cluster|keyslot" => CommandClass::Session,
        n if n.ends_with("|help") => CommandClass::Session,
        // Key names of a hash slot.
        "cluster|countkeysinslot" | "cluster|getkeysinslot" => CommandClass::Read,
        // Server internals: topology, allocator and memory state.
        n if n.starts_with("cluster|") || n.starts_with("memory|") => CommandClass::Admin,
        _ => CommandClass::Unknown,
    }
}

fn extra_risk(name: &str) -> Risk {
    match name {
        "keys" | "scan" | "randomkey" | "flushall" | "flushdb" | "swapdb" => Risk::WHOLE_KEYSPACE,
        "monitor" | "debug" | "shutdown" | "failover" | "sync" | "psync" | "config|set"
        | "config|rewrite" => Risk::WHOLE_SERVER,
        "replicaof" | "slaveof" => Risk::of(&[Risk::WHOLE_SERVER, Risk::REMOTE]),
        "dump" | "restore" | "restore-asking" => Risk::SERIALIZED,
        "migrate" => Risk::of(&[Risk::SERIALIZED, Risk::REMOTE]),
        "eval" | "eval_ro" | "evalsha" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            Risk::UNDECLARED_KEYS
        }
        n if n.starts_with("module") => Risk::WHOLE_SERVER,
        "getrange" | "substr" | "getbit" | "bitfield" | "bitfield_ro" | "bitpos" | "lcs" => {
            Risk::PARTIAL_VALUE
        }
        _ => Risk::EMPTY,
    }
}

/// Risks that depend on the arguments, not only on the command.
fn argument_risk(name: &str, args: &[Bytes]) -> Risk {
    match name {
        // `BITCOUNT key start end [BYTE|BIT]`: over a range of one bit, it is that bit.
        "bitcount" if args.len() > 2 => Risk::PARTIAL_VALUE,
        _ => Risk::EMPTY,
    }
}

fn access_of(flags: KeySpecFlags) -> (bool, bool) {
    let read = flags.intersects(KeySpecFlags::of(&[KeySpecFlags::RO, KeySpecFlags::ACCESS]));
    let write = flags.intersects(KeySpecFlags::of(&[
        KeySpecFlags::RW,
        KeySpecFlags::OW,
        KeySpecFlags::RM,
        KeySpecFlags::UPDATE,
        KeySpecFlags::INSERT,
        KeySpecFlags::DELETE,
    ]));
    (read, write || !read)
}

fn push_key(cmd: &mut Command, kind: ObjectKind, name: &[u8], flags: KeySpecFlags) {
    let (read, write) = access_of(flags);
    if read {
        cmd.push_object(ObjectRef::new(kind, lossy(name), Access::Read));
    }
    if write {
        cmd.push_object(ObjectRef::new(kind, lossy(name), Access::Write));
    }
}

/// The server's `getKeysUsingKeySpecs`: the argument indexes of keys, with their spec's flags
/// and its index.
/// Returns false if some spec could not be applied (unknown, or arguments out of range).
fn key_indexes(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<(usize, KeySpecFlags, usize)>,
) -> bool {
    let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
    let mut complete = true;
    for (n, ks) in spec.key_specs.iter().enumerate() {
        if ks.flags.contains(KeySpecFlags::INCOMPLETE) {
            complete = false;
        }
        let first: i64 = match ks.begin {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword { keyword, startfrom } => {
                let startfrom = i64::from(startfrom);
                let (start, end) = if startfrom > 0 {
                    (startfrom, argc - 1)
                } else {
                    (argc + startfrom, 0)
                };
                let mut found = 0;
                let mut i = start;
                loop {
                    if i >= argc || i < 1 {
                        break;
                    }
                    let arg = usize::try_from(i).ok().and_then(|i| args.get(i));
                    if arg.is_some_and(|a| eq(a, keyword)) {
                        found = i + 1;
                        break;
                    }
                    if i == end {
                        break;
                    }
                    i = if start <= end { i + 1 } else { i - 1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
            BeginSearch::Unknown => {
                complete = false;
                continue;
            }
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                lastkey,
                keystep,
                limit,
            } => {
                let lastkey = i64::from(lastkey);
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit <= 1 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / i64::from(limit) + lastkey)
                };
                (first, last, i64::from(keystep))
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                let idx = first + i64::from(keynumidx);
                let numkeys = usize::try_from(idx)
                    .ok()
                    .and_then(|i| args.get(i))
                    .and_then(|a| crate::wire::parse_i64(a))
                    .filter(|n| *n >= 0 && *n <= argc);
                let Some(numkeys) = numkeys else {
                    complete = false;
                    continue;
                };
                let first = first + i64::from(firstkey);
                let step = i64::from(keystep).max(1);
                (first, first + (numkeys - 1) * step, step)
            }
            FindKeys::Unknown => {
                complete = false;
                continue;
            }
        };
        if last < first {
            continue;
        }
        if first < 1 || last >= argc || step < 1 {
            // The server reports a syntax error for these arguments.
            complete = false;
            continue;
        }
        let mut i = first;
        while i <= last {
            if let Ok(i) = usize::try_from(i) {
                out.push((i, ks.flags, n));
            }
            i += step;
        }
    }
    complete
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern …] [ASC|DESC] [ALPHA]
/// [STORE destination]`: the server's `sortGetKeys`.
fn sort_keys(cmd: &mut Command, args: &[Bytes], risk: &mut Risk) -> Option<Flow> {
    let mut flow = None;
    if let Some(k) = args.get(1) {
        push_key(
            cmd,
            ObjectKind::Key,
            k,
            KeySpecFlags::of(&[KeySpecFlags::RO, KeySpecFlags::ACCESS]),
        );
    }
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i).map(|b| &b[..]).unwrap_or_default();
        if eq(a, "LIMIT") {
            i += 3;
        } else if eq(a, "GET") || eq(a, "BY") {
            // The pattern names other keys, read through the sorted values.
            *risk = Risk::of(&[*risk, Risk::UNDECLARED_KEYS]);
            i += 2;
        } else if eq(a, "STORE") {
            if let Some(dest) = args.get(i + 1) {
                push_key(
                    cmd,
                    ObjectKind::Key,
                    dest,
                    KeySpecFlags::of(&[KeySpecFlags::OW, KeySpecFlags::UPDATE]),
                );
                flow = args.get(1).map(|source| Flow {
                    sources: vec![source.clone()],
                    destinations: vec![dest.clone()],
                });
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    flow
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw]
/// [KEYS key …]`: the server's `migrateGetKeys`.
fn migrate_keys(cmd: &mut Command, args: &[Bytes]) {
    let flags = KeySpecFlags::of(&[KeySpecFlags::RW, KeySpecFlags::ACCESS, KeySpecFlags::DELETE]);
    let mut i = 6;
    let mut keys_at = None;
    while i < args.len() {
        let a = args.get(i).map(|b| &b[..]).unwrap_or_default();
        if eq(a, "AUTH") {
            i += 2;
        } else if eq(a, "AUTH2") {
            i += 3;
        } else if eq(a, "KEYS") {
            keys_at = Some(i + 1);
            break;
        } else {
            i += 1;
        }
    }
    match keys_at {
        Some(start) if args.get(3).is_some_and(|k| k.is_empty()) => {
            for k in args.get(start..).unwrap_or_default() {
                push_key(cmd, ObjectKind::Key, k, flags);
            }
        }
        _ => {
            if let Some(k) = args.get(3) {
                push_key(cmd, ObjectKind::Key, k, flags);
            }
        }
    }
}

fn channels(cmd: &mut Command, name: &str, args: &[Bytes]) {
    let (from, access) = match name {
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" => (1, Access::Read),
        "publish" => {
            if let Some(ch) = args.get(1) {
                cmd.push_object(ObjectRef::new(
                    ObjectKind::Channel,
                    lossy(ch),
                    Access::Write,
                ));
            }
            return;
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => (2, Access::Read),
        _ => return,
    };
    for ch in args.get(from..).unwrap_or_default() {
        cmd.push_object(ObjectRef::new(ObjectKind::Channel, lossy(ch), access));
    }
}

fn settings_and_roles(cmd: &mut Command, name: &str, args: &[Bytes]) {
    match name {
        "config|set" => {
            for (n, p) in args.iter().enumerate().skip(2).step_by(2) {
                let _ = n;
                cmd.push_object(ObjectRef::new(
                    ObjectKind::Setting,
                    lossy(p).to_ascii_lowercase(),
                    Access::Write,
                ));
            }
        }
        "config|get" => {
            for p in args.get(2..).unwrap_or_default() {
                cmd.push_object(ObjectRef::new(
                    ObjectKind::Setting,
                    lossy(p).to_ascii_lowercase(),
                    Access::Read,
                ));
            }
        }
        "acl|setuser" => {
            if let Some(u) = args.get(2) {
                cmd.push_object(ObjectRef::new(ObjectKind::Role, lossy(u), Access::Define));
            }
        }
        "acl|deluser" => {
            for u in args.get(2..).unwrap_or_default() {
                cmd.push_object(ObjectRef::new(ObjectKind::Role, lossy(u), Access::Define));
            }
        }
        "acl|getuser" => {
            if let Some(u) = args.get(2) {
                cmd.push_object(ObjectRef::new(ObjectKind::Role, lossy(u), Access::Read));
            }
        }
        "auth" => {
            if args.len() == 3
                && let Some(u) = args.get(1)
            {
                cmd.push_object(ObjectRef::new(ObjectKind::Role, lossy(u), Access::Execute));
            }
        }
        "select" => {
            if let Some(db) = args.get(1) {
                cmd.push_object(ObjectRef::new(
                    ObjectKind::Namespace,
                    lossy(db),
                    Access::Read,
                ));
            }
        }
        "fcall" | "fcall_ro" => {
            if let Some(f) = args.get(1) {
                cmd.push_object(ObjectRef::new(
                    ObjectKind::Function,
                    lossy(f),
                    Access::Execute,
                ));
            }
        }
        "evalsha" | "evalsha_ro" => {
            if let Some(f) = args.get(1) {
                cmd.push_object(ObjectRef::new(
                    ObjectKind::Function,
                    lossy(f).to_ascii_lowercase(),
                    Access::Execute,
                ));
            }
        }
        _ => {}
    }
}

/// Classifies one command given its arguments (the command name first). Names are matched
/// case-insensitively.
#[must_use]
pub fn classify(args: &[Bytes]) -> Classified {
    let name = args.first().map(|b| &b[..]).unwrap_or_default();
    let top = spec::lookup(name);
    let (spec, words) = match top {
        Some(t) if !t.subcommands.is_empty() => match args.get(1) {
            Some(sub) => (t.subcommand(sub), 2),
            None => (None, 1),
        },
        Some(t) => (Some(t), 1),
        None => (None, 1),
    };
    let verb = match (spec, top) {
        (Some(s), _) => s.verb(),
        (None, Some(t)) => {
            let mut v = t.verb();
            if let Some(sub) = args.get(1) {
                v.push(' ');
                v.push_str(
                    &lossy(sub.get(..64.min(sub.len())).unwrap_or_default()).to_ascii_uppercase(),
                );
            }
            v
        }
        (None, None) if name.is_empty() => "\"\"".to_owned(),
        (None, None) => {
            lossy(name.get(..64.min(name.len())).unwrap_or_default()).to_ascii_uppercase()
        }
    };
    let spec_name = spec.map_or("", |s| s.name);

    let secrets = secret_args(spec_name, args);
    let mut text = String::with_capacity(
        verb.len()
            + args
                .iter()
                .skip(words)
                .map(|a| a.len() + 1)
                .sum::<usize>()
                .min(TEXT_MAX)
            + 8,
    );
    text.push_str(&verb);
    for (i, a) in args.iter().enumerate().skip(words) {
        if text.len() >= TEXT_MAX {
            text.push_str(" ...");
            break;
        }
        text.push(' ');
        if secrets.contains(&i) {
            text.push_str("(redacted)");
        } else {
            quote_into(&mut text, a);
        }
    }

    // The digest covers the command name in uppercase (so case does not change an approval)
    // and every other argument exactly.
    let mut short = [0u8; 32];
    let long;
    let digest_name: &[u8] = match short.get_mut(..name.len()) {
        Some(b) => {
            b.copy_from_slice(name);
            b.make_ascii_uppercase();
            b
        }
        None => {
            long = name.to_ascii_uppercase();
            &long
        }
    };
    let digest = CommandDigest::compute(
        Protocol::Redis,
        digest_name,
        args.iter().skip(1).map(|a| Some(&a[..])),
    );

    let mut risk = Risk::EMPTY;
    let class = match spec {
        Some(s) => {
            if !s.arity_ok(args.len()) {
                risk = Risk::of(&[risk, Risk::BAD_ARITY]);
            }
            if s.acl.contains(AclCategories::ADMIN) || s.flags.contains(CommandFlags::ADMIN) {
                risk = Risk::of(&[risk, Risk::ADMIN]);
            }
            if s.acl.contains(AclCategories::DANGEROUS) {
                risk = Risk::of(&[risk, Risk::DANGEROUS]);
            }
            if s.acl.contains(AclCategories::SCRIPTING)
                || s.name == "module|load"
                || s.name == "module|loadex"
            {
                risk = Risk::of(&[risk, Risk::SCRIPTING]);
            }
            if s.flags.contains(CommandFlags::BLOCKING) || s.acl.contains(AclCategories::BLOCKING) {
                risk = Risk::of(&[risk, Risk::BLOCKING]);
            }
            if !secrets.is_empty() {
                risk = Risk::of(&[risk, Risk::CREDENTIALS]);
            }
            risk = Risk::of(&[risk, extra_risk(s.name), argument_risk(s.name, args)]);
            let mut class = base_class(s);
            if s.name == "hello" && !secrets.is_empty() {
                class = CommandClass::Privilege;
            }
            class
        }
        None => {
            if top.is_some() && args.len() < 2 {
                risk = Risk::of(&[risk, Risk::BAD_ARITY]);
            }
            CommandClass::Unknown
        }
    };

    let mut command = Command {
        protocol: Protocol::Redis,
        verb,
        class,
        text,
        objects: Vec::new(),
        digest,
    };

    let mut flow = None;
    if let Some(s) = spec {
        match s.name {
            "sort" | "sort_ro" => flow = sort_keys(&mut command, args, &mut risk),
            "migrate" => migrate_keys(&mut command, args),
            _ => {
                let mut idx = Vec::new();
                if !key_indexes(s, args, &mut idx) {
                    risk = Risk::of(&[risk, Risk::INCOMPLETE_KEYS]);
                }
                flow = flow_of(args, &idx);
                for (i, flags, _) in idx {
                    let Some(k) = args.get(i) else { continue };
                    let kind = if flags.contains(KeySpecFlags::NOT_KEY) {
                        ObjectKind::Channel
                    } else {
                        ObjectKind::Key
                    };
                    push_key(&mut command, kind, k, flags);
                }
            }
        }
        channels(&mut command, s.name, args);
        settings_and_roles(&mut command, s.name, args);
    }
    Classified {
        command,
        risk,
        spec,
        flow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(args: &[&str]) -> Classified {
        let args: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        classify(&args)
    }

    fn keys(cl: &Classified) -> Vec<(String, Access)> {
        cl.command
            .objects_of(ObjectKind::Key)
            .map(|o| (o.name.clone(), o.access))
            .collect()
    }

    #[test]
    fn classes() {
        for (args, class) in [
            (&["get", "k"][..], CommandClass::Read),
            (&["SET", "k", "v"], CommandClass::Write),
            (&["PING"], CommandClass::Session),
            (&["client", "setname", "x"], CommandClass::Session),
            (&["CONFIG", "SET", "maxmemory", "1"], CommandClass::Admin),
            (&["config", "get", "maxmemory"], CommandClass::Admin),
            (&["CLIENT", "KILL", "ID", "1"], CommandClass::Admin),
            (
                &["acl", "setuser", "bob", "on", ">pw"],
                CommandClass::Privilege,
            ),
            (&["auth", "pw"], CommandClass::Privilege),
            (&["hello", "3"], CommandClass::Session),
            (&["hello", "3", "AUTH", "u", "p"], CommandClass::Privilege),
            (&["eval", "return 1", "0"], CommandClass::Code),
            (&["FCALL", "f", "0"], CommandClass::Code),
            (&["function", "load", "x"], CommandClass::Code),
            (&["module", "load", "/x.so"], CommandClass::Code),
            (&["monitor"], CommandClass::Admin),
            (&["debug", "sleep", "0"], CommandClass::Admin),
            (&["flushall"], CommandClass::Admin),
            (&["keys", "*"], CommandClass::Read),
            (&["sort", "k"], CommandClass::Write),
            (&["restore", "k", "0", "x"], CommandClass::Write),
            (&["publish", "ch", "m"], CommandClass::Write),
            (&["subscribe", "ch"], CommandClass::Read),
            (&["multi"], CommandClass::Session),
            (&["object", "encoding", "k"], CommandClass::Read),
            (&["nosuch", "k"], CommandClass::Unknown),
            (&["config", "nosuch"], CommandClass::Unknown),
            (&["config"], CommandClass::Unknown),
        ] {
            assert_eq!(c(args).command.class, class, "{args:?}");
        }
    }

    #[test]
    fn every_table_entry_has_a_known_class() {
        fn walk(specs: &'static [CommandSpec], out: &mut Vec<&'static str>) {
            for s in specs {
                if s.subcommands.is_empty() && base_class(s) == CommandClass::Unknown {
                    out.push(s.name);
                }
                walk(s.subcommands, out);
            }
        }
        let mut unknown = Vec::new();
        walk(crate::table::COMMANDS, &mut unknown);
        assert!(unknown.is_empty(), "unclassified: {unknown:?}");
    }

    #[test]
    fn verbs_keys_and_subcommands() {
        let cl = c(&["object", "ENCODING", "mykey"]);
        assert_eq!(cl.command.verb, "OBJECT ENCODING");
        assert_eq!(keys(&cl), vec![("mykey".into(), Access::Read)]);
        let cl = c(&["mset", "a", "1", "b", "2"]);
        assert_eq!(
            keys(&cl),
            vec![("a".into(), Access::Write), ("b".into(), Access::Write)]
        );
        let cl = c(&["EVAL", "return 1", "2", "k1", "k2", "argv1"]);
        assert_eq!(keys(&cl).len(), 4, "{:?}", keys(&cl));
        assert!(cl.risk.contains(Risk::SCRIPTING));
        assert!(cl.risk.contains(Risk::UNDECLARED_KEYS));
        let cl = c(&["eval", "return 1", "0"]);
        assert!(keys(&cl).is_empty());
        assert!(!cl.risk.contains(Risk::INCOMPLETE_KEYS));
        let cl = c(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "s1",
            "s2",
            ">",
            ">",
        ]);
        let names: Vec<_> = keys(&cl).into_iter().map(|k| k.0).collect();
        assert!(names.contains(&"s1".to_owned()) && names.contains(&"s2".to_owned()));
        assert!(!names.contains(&">".to_owned()), "{names:?}");
        let cl = c(&["getdel", "k"]);
        assert_eq!(
            keys(&cl),
            vec![("k".into(), Access::Read), ("k".into(), Access::Write)]
        );
        let cl = c(&["LMOVE", "src", "dst", "LEFT", "RIGHT"]);
        assert!(keys(&cl).contains(&("dst".into(), Access::Write)));
        let cl = c(&["ZUNIONSTORE", "out", "2", "a", "b", "WEIGHTS", "1", "2"]);
        let names: Vec<_> = keys(&cl).into_iter().map(|k| k.0).collect();
        assert_eq!(names, vec!["out", "a", "b"]);
    }

    #[test]
    fn partial_reads_are_marked() {
        for args in [
            &["GETRANGE", "k", "0", "3"][..],
            &["substr", "k", "0", "3"],
            &["GETBIT", "k", "7"],
            &["BITFIELD", "k", "GET", "u8", "0"],
            &["BITFIELD", "k", "SET", "u8", "0", "1"],
            &["BITFIELD_RO", "k", "GET", "u8", "0"],
            &["BITPOS", "k", "1"],
            &["BITCOUNT", "k", "0", "0"],
            &["BITCOUNT", "k", "5", "5", "BIT"],
            &["LCS", "a", "b"],
        ] {
            assert!(c(args).risk.contains(Risk::PARTIAL_VALUE), "{args:?}");
        }
        for args in [
            &["GET", "k"][..],
            &["BITCOUNT", "k"],
            &["STRLEN", "k"],
            &["SETRANGE", "k", "0", "x"],
        ] {
            assert!(!c(args).risk.contains(Risk::PARTIAL_VALUE), "{args:?}");
        }
    }

    #[test]
    fn commands_that_copy_between_keys_have_a_flow() {
        let flow = |args: &[&str]| c(args).flow;
        let names = |v: &[Bytes]| v.iter().map(|b| lossy(b)).collect::<Vec<_>>();
        for (args, sources, destinations) in [
            (&["COPY", "a", "b"][..], &["a"][..], &["b"][..]),
            (&["RENAME", "a", "b"], &["a"], &["b"]),
            (&["RENAMENX", "a", "b"], &["a"], &["b"]),
            (&["BITOP", "OR", "d", "a", "b"], &["a", "b"], &["d"]),
            (&["LMOVE", "a", "b", "LEFT", "LEFT"], &["a"], &["b"]),
            (&["BLMOVE", "a", "b", "LEFT", "LEFT", "0"], &["a"], &["b"]),
            (&["RPOPLPUSH", "a", "b"], &["a"], &["b"]),
            (&["BRPOPLPUSH", "a", "b", "0"], &["a"], &["b"]),
            (&["SMOVE", "a", "b", "m"], &["a"], &["b"]),
            (&["SUNIONSTORE", "d", "a", "b"], &["a", "b"], &["d"]),
            (&["SINTERSTORE", "d", "a"], &["a"], &["d"]),
            (&["SDIFFSTORE", "d", "a"], &["a"], &["d"]),
            (&["ZUNIONSTORE", "d", "2", "a", "b"], &["a", "b"], &["d"]),
            (&["ZINTERSTORE", "d", "1", "a"], &["a"], &["d"]),
            (&["ZDIFFSTORE", "d", "1", "a"], &["a"], &["d"]),
            (&["ZRANGESTORE", "d", "a", "0", "-1"], &["a"], &["d"]),
            (&["PFMERGE", "d", "a"], &["d", "a"], &["d"]),
            (
                &[
                    "GEOSEARCHSTORE",
                    "d",
                    "a",
                    "FROMMEMBER",
                    "m",
                    "BYRADIUS",
                    "1",
                    "km",
                ],
                &["a"],
                &["d"],
            ),
            (
                &["GEORADIUS", "a", "0", "0", "1", "km", "STORE", "d"],
                &["a"],
                &["d"],
            ),
            (
                &["GEORADIUSBYMEMBER", "a", "m", "1", "km", "STOREDIST", "d"],
                &["a"],
                &["d"],
            ),
            (&["SORT", "a", "STORE", "d"], &["a"], &["d"]),
        ] {
            let f = flow(args).unwrap_or_else(|| panic!("{args:?}"));
            assert_eq!(names(&f.sources), sources, "{args:?}");
            assert_eq!(names(&f.destinations), destinations, "{args:?}");
        }
        for args in [
            &["GET", "a"][..],
            &["SET", "a", "1", "GET"],
            &["MSET", "a", "1", "b", "2"],
            &["LMPOP", "2", "a", "b", "LEFT"],
            &["SUNION", "a", "b"],
            &["GEORADIUS", "a", "0", "0", "1", "km"],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "STREAMS",
                "a",
                "b",
                ">",
                ">",
            ],
            &["SORT", "a"],
        ] {
            assert_eq!(flow(args), None, "{args:?}");
        }
    }

    #[test]
    fn sort_and_migrate() {
        let cl = c(&["SORT", "list", "BY", "w_*", "GET", "o_*", "STORE", "dst"]);
        assert!(cl.risk.contains(Risk::UNDECLARED_KEYS));
        assert!(cl.risk.contains(Risk::DANGEROUS));
        assert_eq!(
            keys(&cl),
            vec![("list".into(), Access::Read), ("dst".into(), Access::Write)]
        );
        let cl = c(&["sort", "list", "limit", "0", "10"]);
        assert!(!cl.risk.contains(Risk::UNDECLARED_KEYS));
        let cl = c(&[
            "MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "KEYS", "KEYS", "a", "b",
        ]);
        let names: Vec<_> = keys(&cl).into_iter().map(|k| k.0).collect();
        assert!(names.contains(&"a".to_owned()) && names.contains(&"b".to_owned()));
        assert!(cl.risk.contains(Risk::SERIALIZED) && cl.risk.contains(Risk::REMOTE));
        assert!(cl.risk.contains(Risk::CREDENTIALS));
        assert!(
            !cl.command.text.contains("KEYS KEYS"),
            "{}",
            cl.command.text
        );
        let cl = c(&["migrate", "h", "6379", "one", "0", "5000"]);
        assert_eq!(keys(&cl)[0].0, "one");
    }

    #[test]
    fn channels_and_settings() {
        let cl = c(&["SUBSCRIBE", "a", "b"]);
        assert_eq!(cl.command.objects_of(ObjectKind::Channel).count(), 2);
        let cl = c(&["PUBLISH", "a", "msg"]);
        let ch: Vec<_> = cl.command.objects_of(ObjectKind::Channel).collect();
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].access, Access::Write);
        let cl = c(&["SPUBLISH", "sh", "msg"]);
        assert_eq!(cl.command.objects_of(ObjectKind::Channel).count(), 1);
        assert_eq!(cl.command.objects_of(ObjectKind::Key).count(), 0);
        let cl = c(&["config", "set", "requirepass", "s3cret", "maxmemory", "1mb"]);
        assert!(!cl.command.text.contains("s3cret"));
        assert!(cl.command.text.contains("maxmemory"));
        assert_eq!(cl.command.objects_of(ObjectKind::Setting).count(), 2);
        assert!(cl.risk.contains(Risk::WHOLE_SERVER) && cl.risk.contains(Risk::CREDENTIALS));
    }

    #[test]
    fn arity_text_and_digest() {
        let cl = c(&["GET"]);
        assert_eq!(cl.command.class, CommandClass::Read);
        assert!(cl.risk.contains(Risk::BAD_ARITY));
        let cl = c(&["set", "k", "a b\n\u{1}"]);
        assert_eq!(cl.command.text, "SET k \"a b\\n\\x01\"");
        assert_eq!(
            c(&["get", "k"]).command.digest,
            c(&["GET", "k"]).command.digest
        );
        assert_ne!(
            c(&["get", "k"]).command.digest,
            c(&["get", "K"]).command.digest
        );
        let cl = c(&["AUTH", "user", "hunter2"]);
        assert!(!cl.command.text.contains("hunter2"));
        assert!(!cl.command.text.contains("user"), "{}", cl.command.text);
        let big = "x".repeat(1000);
        let cl = c(&["set", "k", &big]);
        assert!(cl.command.text.len() < 300);
        assert!(cl.command.text.ends_with("(1000 bytes)"));
        assert_eq!(c(&[""]).command.verb, "\"\"");
        assert_eq!(c(&["frob"]).command.verb, "FROB");
        // The digest takes the name in uppercase whatever its length.
        let long = "a-command-name-longer-than-thirty-two-bytes";
        assert_eq!(
            c(&[long, "k"]).command.digest,
            c(&[&long.to_ascii_uppercase(), "k"]).command.digest
        );
        assert_eq!(
            c(&[long, "k"]).command.digest,
            CommandDigest::compute(
                Protocol::Redis,
                long.to_ascii_uppercase().as_bytes(),
                [Some(&b"k"[..])]
            )
        );
        assert_eq!(
            c(&["get", "k"]).command.digest,
            CommandDigest::compute(Protocol::Redis, b"GET", [Some(&b"k"[..])])
        );
    }
}
