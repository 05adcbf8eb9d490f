//! A whole PostgreSQL session through [`PostgresProxy`] (the `postgres_relay` fuzz target).
//!
//! A policy that denies schema changes and statements nobody classified, holds writes for
//! review (the harness's reviewer settles each at once: approved when the held text has an
//! even length) and lets the harness's identity read with the mask profile `read`: the [`CANARY`](super::CANARY)
//! detector and a column rule (`*ssn*` redacted). The session's own profile (for what no
//! statement returns: notices) has the detector and not the rule, so a result masked with
//! it instead of its rule's shows. Notifications go out under the decision of the `LISTEN`
//! that started their channel, and are withheld on a channel no `LISTEN` started. An in-memory audit trail. The
//! server side logs the gateway in with SCRAM-SHA-256 (or, if the input says so, answers
//! the login from the script); the catalog connection the gateway opens to name result
//! columns knows one table, `people` (`ssn`, `name`). After each session it checks:
//!
//! 1. **Every byte the client receives is a whole backend message**, and no cell of a
//!    result column that is `people.ssn` (as the catalog connection names the table's OID
//!    and the column's number, whatever the client calls the column) carries what that
//!    column held upstream: the column rule redacts it whole.
//! 2. **Only what policy allowed runs on the server**: every `Query` the server receives is
//!    either the statement a denial is replaced with or has an allow intent (or a held
//!    intent and its approval) with the same text on record before it arrived, the intents
//!    taken in order; a `Parse` with an allow intent arrives after it (one held at each
//!    execution has none); and every `Execute` of a statement the session prepared runs
//!    under that statement's allow intent or an approval of its own (the held text and the
//!    parameters bound), one approval for the executions of one `Bind`.
//! 3. **No secret crosses**: the client's token never reaches the server or the trail, the
//!    gateway's upstream password never reaches the client or the trail, and a value the
//!    mask profile detects never reaches the client or the recorded responses unless the
//!    client sent it.
//! 4. **Every outcome has its intent and the session its end**: each `CommandCompleted`
//!    follows its `CommandDecided`, every allowed simple query completes, and a session
//!    that started ends exactly once.
//! 5. **The session ends** once both peers have closed.
//!
//! # Input
//!
//! `flags`, a little-endian `u16` length `n`, `n` bytes the client sends after the harness's
//! login, and then the server's script: segments (each a little-endian `u16` length and that
//! many bytes), one written back for each `Query`, `Sync` or `Flush` the gateway forwards. A
//! segment that is [`AS_POSTGRES`] (`@R`) is answered as PostgreSQL answers the last
//! statement's syntax error, naming the statement (which is how the gateway knows the
//! error for its denial's replacement, whose text the input cannot know). Flag bits: 0–1 how the harness
//! logs in (a startup packet and the token as the password; the startup packet alone; or
//! nothing, the input's bytes are the connection's first); 2 the first segment answers the
//! gateway's own startup packet (otherwise a SCRAM login, `ParameterStatus`,
//! `BackendKeyData` and `ReadyForQuery`); 3 the upstream cannot be reached; 4–7 the size of
//! the pieces the client's bytes arrive in (`1 << bits`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wirewarden_core::{AuditEvent, CommandId, Protocol, Target};
use wirewarden_mask::{Engine, FieldRule, Profile, Selector, Strategy};
use wirewarden_postgres::auth::{ScramServer, ScramVerifier};
use wirewarden_postgres::{
    Authentication, BackendDecoder, BackendMessage, FrontendDecoder, FrontendMessage, Limits,
    ProtocolVersion, StartupMessage, TransactionStatus,
};

use super::{
    Collector, Input, TOKEN, UPSTREAM_PASSWORD, allowed_intents, approved_intents, canary_word,
    check_trail, contains, mentions_canary, pipeline, play_client, runtime, tokens, with_canary,
};
use crate::Secret;
use crate::listen::{BoxIo, Dial};
use crate::postgres::{PostgresProxy, PostgresTarget, UpstreamConfig};

/// The policy: schema changes and unknown statements denied, reads allowed, writes held
/// for review (which the harness's reviewer settles at once, by the held text).
const POLICY: &str = r#"
[[rule]]
id = "no-ddl"
class = "schema"
action = "deny"
reason = "schema changes go through migrations"

[[rule]]
id = "no-unknown"
class = "unknown"
action = "deny"
reason = "the statement is not understood"

[[rule]]
id = "agents-read"
groups = ["agents"]
max_class = "read"
action = "allow"
mask_profile = "read"

[[rule]]
id = "agents-write"
groups = ["agents"]
class = "write"
action = "review"
timeout = "5s"

[[budget]]
id = "rows"
groups = ["agents"]
max_rows = 1000000000000
window = "1h"
"#;

/// What follows a held statement's text in the text of one execution of it.
const HELD_SUFFIX: &str = "\n-- parameters:";

/// Where the text of a denied statement starts, as the gateway sends it upstream.
const REFUSED_PREFIX: &[u8] = b"wirewarden_refused_";

/// What the next dial connects to: the session's server, once; later dials (the
/// catalog, a cancel request) get [`Script::Catalog`].
struct Dialing {
    next: Mutex<Option<Script>>,
    audit: Arc<Collector>,
}

/// How a server connection behaves.
enum Script {
    /// The session's: one segment per flush point.
    Session {
        segments: Vec<Bytes>,
        answers_login: bool,
        seen: Arc<Mutex<Upstream>>,
        /// Becomes `true` when the harness is done with the session.
        closed: tokio::sync::watch::Receiver<bool>,
    },
    /// The catalog's (or a cancel request's): a SCRAM login, then empty results.
    Catalog,
    /// No server: the dial fails.
    Unreachable,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: PostgresProxy,
    audit: Arc<Collector>,
    dialing: Arc<Dialing>,
    one: Mutex<()>,
}

fn limits() -> Limits {
    Limits::with_max_message_len(1 << 16)
}

/// The verifier the scripted server checks the gateway's SCRAM proof against (one
/// iteration: the fuzzer's time goes to the session, not to PBKDF2).
fn verifier() -> ScramVerifier {
    ScramVerifier::derive(UPSTREAM_PASSWORD.as_bytes(), b"wirewarden-fuzz-salt", 1)
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = runtime();
        let (proxy, audit, dialing) = build(None);
        Harness {
            runtime,
            proxy,
            audit,
            dialing,
            one: Mutex::new(()),
        }
    })
}

/// The harness's proxy, with [`TOKEN`] valid until `expires_at`: its audit trail, and what
/// its next dial connects to.
fn build(
    expires_at: Option<wirewarden_core::Timestamp>,
) -> (PostgresProxy, Arc<Collector>, Arc<Dialing>) {
    // Only the allow rule's profile has the column rule: a result masked with the
    // session's profile instead shows `people.ssn`.
    let masks = Engine::builder()
        .profile(with_canary(Profile::builder("session")))
        .profile(with_canary(Profile::builder("read")).rule(FieldRule::new(
            Selector::column("*ssn*"),
            Strategy::redact(),
        )))
        .default_profile("session")
        .build()
        .expect("harness mask profile");
    let audit = Arc::new(Collector::default());
    let pipeline = pipeline(tokens(expires_at), POLICY, masks, audit.clone());
    let upstream = UpstreamConfig {
        addr: "upstream.invalid:5432".into(),
        user: "gateway".into(),
        password: Secret::new(UPSTREAM_PASSWORD),
        database: "app".into(),
        tls: None,
    };
    let mut target = PostgresTarget::new(
        Target::new("app", Protocol::Postgres).expect("target"),
        upstream,
    );
    target.limits = limits();
    target.allow_plaintext_password = true;
    target.record_limit = 4096;
    let dialing = Arc::new(Dialing {
        next: Mutex::new(None),
        audit: audit.clone(),
    });
    let d = dialing.clone();
    let proxy = PostgresProxy::new(pipeline, target).with_dial(Dial::Given(Arc::new(move || {
        let script = d
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or(Script::Catalog);
        if matches!(script, Script::Unreachable) {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let (gateway, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve_script(server, script, d.audit.clone()));
        Ok(Box::new(gateway) as BoxIo)
    })));
    (proxy, audit, dialing)
}

/// What the harness sends before the input's client bytes: a startup packet and the
/// token as the password, the startup packet alone, or nothing.
fn login_bytes(input: &Input<'_>) -> BytesMut {
    let mut out = BytesMut::new();
    if input.login == 2 {
        return out;
    }
    let parameters = [
        ("user", "agent"),
        ("database", "app"),
        ("application_name", "fuzz run=1"),
    ]
    .iter()
    .map(|(k, v)| {
        (
            Bytes::from_static(k.as_bytes()),
            Bytes::from_static(v.as_bytes()),
        )
    })
    .collect();
    FrontendMessage::Startup(StartupMessage {
        version: ProtocolVersion::V3_0,
        parameters,
    })
    .encode(&mut out)
    .expect("a startup packet encodes");
    if input.login != 1 {
        FrontendMessage::PasswordMessage(Bytes::from_static(TOKEN.as_bytes()))
            .encode(&mut out)
            .expect("a password message encodes");
    }
    out
}

/// What the session's server saw.
#[derive(Default)]
struct Upstream {
    /// Every byte the gateway sent it.
    received: Vec<u8>,
    /// The text of each `Query` and `Parse` it received, with how many events were on
    /// record when it arrived and whether it was a simple `Query`.
    statements: Vec<(Bytes, usize, bool)>,
    /// Each `Execute` it received: the portal, which `Bind` made it (a count), the text of
    /// the statement bound (if a `Parse` of this session made it), and how many events were
    /// on record when it arrived.
    executions: Vec<(Bytes, u64, Option<Bytes>, usize)>,
}

/// Runs one session from fuzz input: see the module documentation.
pub fn postgres_relay(data: &[u8]) {
    run(data);
}

/// Runs and checks one session; what the session's server saw, and the session's trail.
fn run(data: &[u8]) -> (Upstream, Vec<AuditEvent>) {
    let Some(input) = Input::parse(data) else {
        return (Upstream::default(), Vec::new());
    };
    let h = harness();
    // One session at a time: they share the audit collector.
    let _one = h.one.lock().unwrap_or_else(PoisonError::into_inner);
    h.audit.events().clear();
    let upstream = h.runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(60), session(h, &input)).await {
            Ok(upstream) => upstream,
            Err(_) => panic!("the session did not end within 60 s"),
        }
    });
    (upstream, h.audit.events().clone())
}

async fn session(h: &'static Harness, input: &Input<'_>) -> Upstream {
    let (client, gateway_client) = tokio::io::duplex(1 << 16);
    let seen = Arc::new(Mutex::new(Upstream::default()));
    let (close, closed) = tokio::sync::watch::channel(false);
    *h.dialing
        .next
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(if input.unreachable {
        Script::Unreachable
    } else {
        Script::Session {
            segments: input
                .script
                .iter()
                .map(|s| Bytes::copy_from_slice(s))
                .collect(),
            answers_login: input.script_answers_login,
            seen: seen.clone(),
            closed,
        }
    });
    let peer = "192.0.2.7:40000".parse().ok();
    let proxy = h.proxy.clone();
    let served = tokio::spawn(async move { proxy.serve(gateway_client, peer).await });

    let login = login_bytes(input);
    let received = play_client(client, &login, input.client, input.piece, || {
        let _ = close.send(true);
    })
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), served).await;
    assert!(
        ended.is_ok(),
        "the session did not end within 10 s of both peers closing"
    );
    // An input that never reached the session's server leaves it unclaimed.
    h.dialing
        .next
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let events = h.audit.events().clone();
    let upstream = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    check(input, &received, &upstream, &events);
    upstream
}

/// Reads one frontend message, or `None` when the gateway closed or sent something that
/// does not decode.
async fn next_message(
    io: &mut DuplexStream,
    buf: &mut BytesMut,
    decoder: &mut FrontendDecoder,
    received: &mut Vec<u8>,
) -> Option<FrontendMessage> {
    loop {
        match decoder.decode(buf) {
            Ok(Some((_, msg))) => return Some(msg),
            Ok(None) => {}
            Err(e) => panic!("the gateway sent the server a malformed message: {e}"),
        }
        buf.reserve(16 * 1024);
        let before = buf.len();
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => received.extend_from_slice(&buf[before..]),
        }
    }
}

/// Logs the gateway in as a server would: SCRAM-SHA-256, then the session's parameters,
/// a cancel key and `ReadyForQuery`. `None`: the exchange failed or the gateway left.
async fn scram_login(
    io: &mut DuplexStream,
    buf: &mut BytesMut,
    decoder: &mut FrontendDecoder,
    received: &mut Vec<u8>,
) -> Option<()> {
    let mut server = ScramServer::new(verifier(), None);
    let mut out = BytesMut::new();
    server.start().encode(&mut out).ok()?;
    io.write_all(&out).await.ok()?;
    while !server.is_authenticated() {
        decoder.set_auth_context(server.auth_context());
        let msg = next_message(io, buf, decoder, received).await?;
        let answer = server.on_response(&msg).ok()?;
        out.clear();
        answer.encode(&mut out).ok()?;
        io.write_all(&out).await.ok()?;
    }
    out.clear();
    for msg in [
        BackendMessage::Authentication(Authentication::Ok),
        BackendMessage::ParameterStatus {
            name: Bytes::from_static(b"server_version"),
            value: Bytes::from_static(b"16.4"),
        },
        BackendMessage::ParameterStatus {
            name: Bytes::from_static(b"client_encoding"),
            value: Bytes::from_static(b"UTF8"),
        },
        BackendMessage::BackendKeyData {
            process_id: 4242,
            secret_key: Bytes::from_static(b"\x01\x02\x03\x04"),
        },
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
    ] {
        msg.encode(&mut out).ok()?;
    }
    io.write_all(&out).await.ok()?;
    Some(())
}

/// The one table the catalog knows: [`PEOPLE_OID`], whose first column is `ssn` (which the
/// profile's column rule redacts whatever it holds) and second `name`.
const PEOPLE_OID: u32 = 16384;
/// What no detector finds: only the column rule can hide it.
const COLUMN_CANARY: &[u8] = b"COLCANARY";

/// The answer to the gateway's catalog query: the rows naming [`PEOPLE_OID`]'s columns, if
/// the query asks for it.
fn catalog_answer(sql: &[u8]) -> BytesMut {
    let text = String::from_utf8_lossy(sql);
    let asked = text
        .split_once("c.oid IN (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .is_some_and(|(list, _)| list.split(',').any(|o| o.trim() == PEOPLE_OID.to_string()));
    let mut out = Vec::new();
    if asked {
        for (attnum, name) in [("1", "ssn"), ("2", "name")] {
            // Its oid, name, the column's number and name, and whether it is a view.
            let cells = [PEOPLE_OID.to_string().as_str(), "people", attnum, name, "f"]
                .iter()
                .map(|c| Some(c.as_bytes().to_vec()))
                .collect::<Vec<_>>();
            out.extend_from_slice(&data_row(&cells));
        }
    }
    let mut out = BytesMut::from(&out[..]);
    let tag: &'static [u8] = if asked { b"SELECT 2" } else { b"SELECT 0" };
    let _ = BackendMessage::CommandComplete(Bytes::from_static(tag)).encode(&mut out);
    let _ = BackendMessage::ReadyForQuery(TransactionStatus::Idle).encode(&mut out);
    out
}

/// A DataRow message of text cells.
fn data_row(cells: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(cells.len()).unwrap_or(0).to_be_bytes());
    for cell in cells {
        match cell {
            Some(c) => {
                body.extend_from_slice(&u32::try_from(c.len()).unwrap_or(0).to_be_bytes());
                body.extend_from_slice(c);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = vec![b'D'];
    out.extend_from_slice(&(u32::try_from(body.len()).unwrap_or(0) + 4).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Plays a server on one connection.
async fn serve_script(mut io: DuplexStream, script: Script, audit: Arc<Collector>) {
    let mut decoder = FrontendDecoder::new(limits());
    let mut buf = BytesMut::new();
    let mut received = Vec::new();
    let Some(first) = next_message(&mut io, &mut buf, &mut decoder, &mut received).await else {
        return;
    };
    if !matches!(first, FrontendMessage::Startup(_)) {
        // A cancel request: the server closes without a word.
        return;
    }
    let (mut segments, seen, mut closed) = match script {
        Script::Unreachable => return,
        Script::Catalog => {
            if scram_login(&mut io, &mut buf, &mut decoder, &mut received)
                .await
                .is_none()
            {
                return;
            }
            while let Some(msg) = next_message(&mut io, &mut buf, &mut decoder, &mut received).await
            {
                if let FrontendMessage::Query(sql) = msg
                    && io.write_all(&catalog_answer(&sql)).await.is_err()
                {
                    return;
                }
            }
            return;
        }
        Script::Session {
            segments,
            answers_login,
            seen,
            closed,
        } => {
            let mut segments = segments.into_iter();
            if answers_login {
                if let Some(answer) = segments.next()
                    && io.write_all(&answer).await.is_err()
                {
                    return;
                }
                decoder = FrontendDecoder::established(limits());
            } else if scram_login(&mut io, &mut buf, &mut decoder, &mut received)
                .await
                .is_none()
            {
                seen.lock().unwrap_or_else(PoisonError::into_inner).received = received;
                return;
            }
            (segments, seen, closed)
        }
    };
    let record = |received: &mut Vec<u8>| {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
            .append(received);
    };
    let mut last_statement = Bytes::new();
    // What a server that took every Parse it was sent would hold: statement → text, and
    // portal → (its Bind, its statement's text).
    let mut parsed: std::collections::HashMap<Bytes, Bytes> = Default::default();
    let mut portals: std::collections::HashMap<Bytes, (u64, Option<Bytes>)> = Default::default();
    let mut binds = 0u64;
    loop {
        let msg = tokio::select! {
            msg = next_message(&mut io, &mut buf, &mut decoder, &mut received) => msg,
            _ = closed.wait_for(|done| *done) => None,
        };
        record(&mut received);
        let Some(msg) = msg else { break };
        let statement = match &msg {
            FrontendMessage::Query(sql) => Some((sql.clone(), true)),
            FrontendMessage::Parse(p) => Some((p.query.clone(), false)),
            _ => None,
        };
        if let Some((text, simple)) = statement {
            last_statement = text.clone();
            let on_record = audit.events().len();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .statements
                .push((text, on_record, simple));
        }
        match &msg {
            FrontendMessage::Parse(p) => {
                parsed.insert(p.name.clone(), p.query.clone());
            }
            FrontendMessage::Bind(b) => {
                binds += 1;
                let text = parsed.get(&b.statement).cloned();
                portals.insert(b.portal.clone(), (binds, text));
            }
            FrontendMessage::Close { kind, name } => match kind {
                wirewarden_postgres::frontend::ObjectType::Statement => {
                    parsed.remove(name);
                }
                wirewarden_postgres::frontend::ObjectType::Portal => {
                    portals.remove(name);
                }
            },
            FrontendMessage::Execute { portal, .. } => {
                let (bind, text) = portals.get(portal).cloned().unwrap_or_default();
                let on_record = audit.events().len();
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .executions
                    .push((portal.clone(), bind, text, on_record));
            }
            _ => {}
        }
        let flush_point = matches!(
            msg,
            FrontendMessage::Query(_) | FrontendMessage::Sync | FrontendMessage::Flush
        );
        if flush_point && let Some(mut answer) = segments.next() {
            if answer == AS_POSTGRES {
                let ready = !matches!(msg, FrontendMessage::Flush);
                answer = syntax_error(&last_statement, ready);
            }
            if io.write_all(&answer).await.is_err() {
                break;
            }
        }
        if matches!(msg, FrontendMessage::Terminate) {
            break;
        }
    }
    let _ = io.shutdown().await;
}

/// A script segment answered as PostgreSQL answers a syntax error in the last statement.
const AS_POSTGRES: &[u8] = b"@R";

/// PostgreSQL's answer to a statement that does not parse, `statement` named in it; then
/// `ReadyForQuery` if `ready` (a `Query` or `Sync` was answered, not a `Flush`).
fn syntax_error(statement: &[u8], ready: bool) -> Bytes {
    let mut out = BytesMut::new();
    let near = String::from_utf8_lossy(statement);
    let message = format!("syntax error at or near \"{near}\"");
    // A statement the gateway sent is valid UTF-8 without NUL; if the input's is not, the
    // error says so without it.
    let message = if message.contains('\0') {
        "syntax error".to_owned()
    } else {
        message
    };
    let error = BackendMessage::ErrorResponse(wirewarden_postgres::ErrorFields::new(
        "ERROR", "42601", message,
    ));
    if error.encode(&mut out).is_err() {
        return Bytes::new();
    }
    if ready {
        out.extend_from_slice(b"Z\0\0\0\x05I");
    }
    out.freeze()
}

/// The values a backend message carries, each on its own (a field's code byte or a cell's
/// length next to a value is no part of it).
fn values_of<'m>(
    msg: &'m BackendMessage,
    frame: &'m [u8],
) -> Box<dyn Iterator<Item = &'m [u8]> + 'm> {
    match msg {
        BackendMessage::DataRow(row) => Box::new(row.cells().flatten()),
        BackendMessage::ErrorResponse(f) | BackendMessage::NoticeResponse(f) => {
            Box::new(f.fields.iter().map(|(_, v)| &v[..]))
        }
        BackendMessage::CopyData(data) => Box::new(std::iter::once(&data[..])),
        BackendMessage::NotificationResponse {
            channel, payload, ..
        } => Box::new([&channel[..], &payload[..]].into_iter()),
        BackendMessage::ParameterStatus { name, value } => {
            Box::new([&name[..], &value[..]].into_iter())
        }
        // The rest carry no values of their own; their bodies are checked whole.
        _ => Box::new(std::iter::once(frame.get(5..).unwrap_or_default())),
    }
}

fn check(input: &Input<'_>, received: &[u8], upstream: &Upstream, events: &[AuditEvent]) {
    let script: Vec<u8> = input.script.concat();
    let client_sent_canary = mentions_canary(input.client);
    let mut names_carry_canary = false;

    // 1. What the client receives is whole backend messages. (When the input sends the
    // connection's first bytes itself, an SSLRequest's one-byte answer may come first.)
    if input.login != 2 {
        let mut buf = BytesMut::from(received);
        let mut decoder = BackendDecoder::new(limits());
        // Which result columns are `people.ssn`: their cells never carry what the rule hides.
        let mut ssn_columns: Vec<usize> = Vec::new();
        loop {
            let decoded = decoder.decode(&mut buf);
            // Values flow in every message but the result's shape (column names come from
            // the query and the schema, not from rows) and the command tag.
            if let Ok(Some((frame, msg))) = &decoded
                && !client_sent_canary
            {
                let shape = matches!(
                    msg,
                    BackendMessage::RowDescription(_) | BackendMessage::CommandComplete(_)
                );
                if shape {
                    // The recording holds column names too.
                    names_carry_canary |= canary_word(frame.as_bytes());
                } else {
                    assert!(
                        !values_of(msg, frame.as_bytes()).any(canary_word),
                        "a detected value reached the client in clear: {msg:?}"
                    );
                }
            }
            match decoded {
                Ok(Some((_, BackendMessage::RowDescription(rd)))) => {
                    ssn_columns = rd
                        .fields()
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| f.table_oid == PEOPLE_OID && f.column_id == 1)
                        .map(|(i, _)| i)
                        .collect();
                }
                Ok(Some((_, BackendMessage::DataRow(row)))) => {
                    for (i, cell) in row.cells().enumerate() {
                        if ssn_columns.contains(&i)
                            && let Some(cell) = cell
                        {
                            assert!(
                                !contains(cell, COLUMN_CANARY),
                                "a people.ssn value reached the client: {cell:?}"
                            );
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!(
                    "the client received a malformed message ({e}) at byte {} of {received:?}",
                    received.len() - buf.len()
                ),
            }
        }
        assert!(
            buf.is_empty(),
            "the client received a partial message at the end: {buf:?}"
        );
    }

    // 2. Each simple query the server received was allowed first (or held and approved),
    // in order, or is a denial's replacement. A Parse may arrive with no intent (a statement
    // held at each execution): what it prepares must not run without one, which the check
    // of executions below sees to.
    let allows = allowed_intents(events);
    let approvals = approved_intents(events);
    let mut allowed: Vec<(usize, &str, CommandId)> = allows
        .iter()
        .chain(&approvals)
        .copied()
        .map(|(i, command, id)| (i, command.text.as_str(), id))
        .collect();
    allowed.sort_by_key(|(i, ..)| *i);
    let mut intents = allowed.iter();
    // Simple queries complete at their ReadyForQuery; a prepared statement completes once
    // per execution, and not at all if it is never executed.
    let mut must_complete = Vec::new();
    for (text, on_record, simple) in &upstream.statements {
        if text.starts_with(REFUSED_PREFIX) {
            continue;
        }
        let text_str = String::from_utf8_lossy(text);
        if !*simple {
            // A statement allowed at Parse has its intent first; one held at each
            // execution has none yet.
            if let Some((at, ..)) = allows.iter().find(|(_, c, _)| c.text == text_str) {
                assert!(
                    at < on_record,
                    "{text:?} reached the server before its intent was on record"
                );
            }
            continue;
        }
        let Some(&(at, _, id)) = intents.find(|(_, intent, _)| *intent == text_str) else {
            panic!("{text:?} reached the server without an allow intent on record, in order");
        };
        assert!(
            at < *on_record,
            "{text:?} reached the server before its intent was on record"
        );
        if *simple {
            must_complete.push(id);
        }
    }

    // 2b. Each execution of a statement this session prepared runs under an intent: the
    // statement's allow intent, or an approval of this execution (the held statement's text
    // and the parameters bound), each approval used by one Bind's executions only.
    // Executions of statements prepared outside the extended protocol, and of portals no
    // Bind made, have intents of their own (`EXECUTE name`) no statement text matches:
    // passed over.
    let mut used = vec![false; approvals.len()];
    let mut covered: std::collections::HashSet<(Bytes, u64)> = Default::default();
    for (portal, bind, text, on_record) in &upstream.executions {
        let Some(text) = text else { continue };
        if text.starts_with(REFUSED_PREFIX) || covered.contains(&(portal.clone(), *bind)) {
            continue;
        }
        let text_str = String::from_utf8_lossy(text);
        let decided = allows
            .iter()
            .any(|(at, c, _)| c.text == text_str && at < on_record);
        if decided {
            continue;
        }
        let approval = approvals.iter().enumerate().position(|(n, (at, c, _))| {
            !used[n]
                && at < on_record
                && c.text.starts_with(&*text_str)
                && c.text[text_str.len()..].starts_with(HELD_SUFFIX)
        });
        let Some(n) = approval else {
            panic!(
                "{text:?} was executed with neither its allow intent nor an approval of this execution on record"
            );
        };
        used[n] = true;
        covered.insert((portal.clone(), *bind));
    }

    // 3. No secret crosses the wire.
    let token = TOKEN.as_bytes();
    if !contains(input.client, token) {
        assert!(
            !contains(&upstream.received, token),
            "the client's token reached the server"
        );
    }
    if !contains(&script, UPSTREAM_PASSWORD.as_bytes()) {
        assert!(
            !contains(received, UPSTREAM_PASSWORD.as_bytes()),
            "the upstream password reached the client"
        );
    }
    if input.login == 2 && !client_sent_canary {
        assert!(
            !canary_word(received),
            "a detected value reached the client in clear: {:?}",
            String::from_utf8_lossy(received)
        );
    }

    // 3 and 4 in the trail.
    check_trail(
        events,
        input.client,
        &script,
        &must_complete,
        true,
        !names_carry_canary,
    );
}

#[cfg(test)]
mod tests {
    use wirewarden_core::{AuditEventKind, Decision};

    use super::super::input;
    use super::*;

    fn query(sql: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrontendMessage::Query(Bytes::copy_from_slice(sql.as_bytes()))
            .encode(&mut out)
            .unwrap();
        out.to_vec()
    }

    /// `SELECT` of one text column `c` with the given values, then `ReadyForQuery`.
    fn rows(values: &[&str]) -> Vec<u8> {
        rows_of(0, 0, values)
    }

    /// The same, the column being column `attnum` of table `table`.
    fn rows_of(table: u32, attnum: i16, values: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        // RowDescription: one field "c", text.
        let mut body = Vec::new();
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(b"c\0");
        body.extend_from_slice(&table.to_be_bytes());
        body.extend_from_slice(&attnum.to_be_bytes());
        body.extend_from_slice(&25u32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        out.push(b'T');
        out.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        out.extend_from_slice(&body);
        for v in values {
            let mut body = Vec::new();
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
            body.extend_from_slice(v.as_bytes());
            out.push(b'D');
            out.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
            out.extend_from_slice(&body);
        }
        let tag = format!("SELECT {}\0", values.len());
        out.push(b'C');
        out.extend_from_slice(&(u32::try_from(tag.len()).unwrap() + 4).to_be_bytes());
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(b"Z\0\0\0\x05I");
        out
    }

    /// A statement read in the same turn as the credential expires (before the expiry
    /// timer ends the session) is refused, and its denial is on record like any other. The
    /// runtime's clock is paused, so the timer cannot fire until the runtime is idle, while
    /// the wall clock the credential is checked against goes past its expiry.
    #[test]
    fn a_statement_read_as_the_credential_expires_is_refused_on_record() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use wirewarden_core::Timestamp;

        let runtime = super::super::paused_runtime();
        let expires_at = Timestamp::now().saturating_add(Duration::from_millis(300));
        let (proxy, audit, dialing) = build(Some(expires_at));
        // The server answers the denial's replacement as PostgreSQL does.
        let refused = AS_POSTGRES;
        let seen = Arc::new(Mutex::new(Upstream::default()));
        let (close, closed) = tokio::sync::watch::channel(false);
        *dialing.next.lock().unwrap() = Some(Script::Session {
            segments: vec![Bytes::from_static(refused)],
            answers_login: false,
            seen: seen.clone(),
            closed,
        });
        let login = login_bytes(&Input::parse(&input(0, b"", &[])).unwrap());
        let (logged_in, received, ended) = runtime.block_on(async move {
            let (mut client, gateway_client) = tokio::io::duplex(1 << 16);
            let served = tokio::spawn(async move { proxy.serve(gateway_client, None).await });
            client.write_all(&login).await.unwrap();
            let mut logged_in = Vec::new();
            while !logged_in.ends_with(b"Z\0\0\0\x05I") {
                assert_ne!(client.read_buf(&mut logged_in).await.unwrap(), 0);
            }
            // Blocks the runtime's one thread: its clock stays where it is.
            super::super::wait_past(expires_at);
            client.write_all(&query("SELECT c FROM t")).await.unwrap();
            // The refusal, then the end: the timer fires once nothing else is left to do.
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            let ended = served.await.unwrap();
            let _ = close.send(true);
            (logged_in, received, ended)
        });
        assert!(ended.is_ok(), "{ended:?}");
        // Asked for the token, then logged in.
        assert!(
            logged_in.starts_with(b"R\0\0\0\x08\0\0\0\x03R\0\0\0\x08\0\0\0\0"),
            "{logged_in:?}"
        );
        let text = String::from_utf8_lossy(&received);
        let refusal = text
            .find("the credential of this session has expired (rule credential-expired)")
            .unwrap_or_else(|| panic!("the statement is refused: {text}"));
        let end = text
            .find("terminating connection")
            .expect("then the session ends");
        assert!(refusal < end, "{text}");
        // Only the denial's replacement reached the server.
        let statements = &seen.lock().unwrap().statements;
        assert!(
            statements
                .iter()
                .all(|(sql, ..)| sql.starts_with(REFUSED_PREFIX)),
            "{statements:?}"
        );
        super::super::assert_expired_denial(&audit.events(), "SELECT", 1);
    }

    fn extended(messages: Vec<FrontendMessage>) -> Vec<u8> {
        let mut out = BytesMut::new();
        for m in messages {
            m.encode(&mut out).unwrap();
        }
        out.to_vec()
    }

    fn bind(statement: &str, value: &str) -> FrontendMessage {
        FrontendMessage::Bind(wirewarden_postgres::frontend::Bind {
            portal: Bytes::new(),
            statement: Bytes::copy_from_slice(statement.as_bytes()),
            param_formats: Vec::new(),
            params: vec![Some(Bytes::copy_from_slice(value.as_bytes()))],
            result_formats: Vec::new(),
        })
    }

    fn execute() -> FrontendMessage {
        FrontendMessage::Execute {
            portal: Bytes::new(),
            max_rows: 0,
        }
    }

    /// A write prepared once and executed twice: each execution is held on its own, with
    /// its parameter, and the harness's reviewer approves the one whose text has an even
    /// length (`'ab'`) and denies the other (`'abc'`).
    #[test]
    fn a_held_statement_runs_once_per_approval() {
        let client = extended(vec![
            FrontendMessage::Parse(wirewarden_postgres::frontend::Parse {
                name: Bytes::from_static(b"ins"),
                query: Bytes::from_static(b"INSERT INTO t VALUES ($1)"),
                param_types: Vec::new(),
            }),
            bind("ins", "ab"),
            execute(),
            FrontendMessage::Sync,
            bind("ins", "abc"),
            execute(),
            FrontendMessage::Sync,
        ]);
        let done = b"1\0\0\0\x042\0\0\0\x04C\0\0\0\x0fINSERT 0 1\0Z\0\0\0\x05I";
        let refused = AS_POSTGRES;
        let (upstream, events) = run(&input(0xf0, &client, &[done, refused]));
        let held: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::CommandDecided {
                    command,
                    decision: Decision::Review { .. },
                    ..
                } => Some(command.text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            held,
            [
                "INSERT INTO t VALUES ($1)\n-- parameters: $1 = 'ab'",
                "INSERT INTO t VALUES ($1)\n-- parameters: $1 = 'abc'"
            ],
            "{events:#?}"
        );
        let outcomes: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::ReviewResolved { outcome, .. } => Some(*outcome),
                _ => None,
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                wirewarden_core::ReviewOutcome::Approved,
                wirewarden_core::ReviewOutcome::Denied
            ]
        );
        // The approved execution reached the server; the denied one became a Parse that
        // fails.
        assert_eq!(upstream.executions.len(), 1, "{:?}", upstream.executions);
    }

    #[test]
    #[should_panic(expected = "nor an approval of this execution")]
    fn an_execution_without_its_approval_is_caught() {
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        let upstream = Upstream {
            executions: vec![(
                Bytes::new(),
                1,
                Some(Bytes::from_static(b"INSERT INTO t VALUES ($1)")),
                0,
            )],
            ..Upstream::default()
        };
        check(&parsed, b"", &upstream, &[]);
    }

    #[test]
    fn a_clean_session_passes_every_check() {
        let mut client = query("SELECT c FROM t");
        client.extend_from_slice(&query("DROP TABLE t"));
        let select = rows(&["LEAKCANARY", "plain"]);
        // The denial's replacement fails to parse.
        let refused = b"E\0\0\0\x21SERROR\0C42601\0Msyntax error\0\0Z\0\0\0\x05I";
        let (upstream, events) = run(&input(0xf0, &client, &[&select, refused]));
        // The client left without a Terminate: the server was sent one for it.
        assert!(
            upstream.received.ends_with(b"X\0\0\0\x04"),
            "{:?}",
            upstream.received
        );
        let decided = events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandDecided { .. }))
            .count();
        let completed = events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
            .count();
        assert_eq!((decided, completed), (2, 1), "{events:#?}");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.kind, AuditEventKind::ProtocolError { .. })),
            "{events:#?}"
        );
    }

    /// Responses read together with an invalid message: what completed before it keeps
    /// its outcome on record (the client has seen its rows), then the session ends.
    #[test]
    fn an_invalid_message_after_a_result_keeps_its_outcome() {
        let mut client = query("SELECT c FROM t");
        client.extend_from_slice(&query("SELECT c FROM t"));
        let select = rows(&["one", "two"]);
        let (upstream, events) = run(&input(0xf0, &client, &[&select, b"E\0\0\0\x05x"]));
        assert_eq!(upstream.statements.len(), 2);
        let outcomes: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::CommandCompleted { rows, error, .. } => {
                    Some((*rows, error.is_some()))
                }
                _ => None,
            })
            .collect();
        // The first has its rows; the second's response never came whole.
        assert_eq!(outcomes, [(2, false), (0, true)], "{events:#?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e.kind, AuditEventKind::ProtocolError { .. })),
            "{events:#?}"
        );
    }

    #[test]
    fn a_column_is_masked_by_what_the_catalog_names_it() {
        let client = query("SELECT ssn AS c FROM people");
        let select = rows_of(PEOPLE_OID, 1, &["COLCANARY 123"]);
        let (upstream, events) = run(&input(0xf0, &client, &[&select]));
        assert_eq!(upstream.statements.len(), 1);
        let masked = events.iter().find_map(|e| match &e.kind {
            AuditEventKind::CommandCompleted { masked, .. } => Some(masked.total()),
            _ => None,
        });
        assert_eq!(masked, Some(1), "{events:#?}");
    }

    /// A simple query sent after an extended-protocol error, before `Sync`, is skipped by
    /// the server and gets no answer of its own: the next query's rows are its own, masked
    /// by its rule, and the skipped one is on record as not run.
    #[test]
    fn a_query_skipped_after_an_error_leaves_the_next_results_their_own() {
        let mut client = BytesMut::new();
        FrontendMessage::Bind(wirewarden_postgres::frontend::Bind {
            portal: Bytes::new(),
            statement: Bytes::from_static(b"nope"),
            param_formats: vec![],
            params: vec![],
            result_formats: vec![],
        })
        .encode(&mut client)
        .unwrap();
        client.extend_from_slice(&query("SELECT 'skipped'"));
        FrontendMessage::Sync.encode(&mut client).unwrap();
        client.extend_from_slice(&query("SELECT ssn FROM people"));
        let mut error = BytesMut::new();
        BackendMessage::ErrorResponse(wirewarden_postgres::ErrorFields::new(
            "ERROR",
            "26000",
            "prepared statement \"nope\" does not exist",
        ))
        .encode(&mut error)
        .unwrap();
        let ready = b"Z\0\0\0\x05I".to_vec();
        let select = rows_of(PEOPLE_OID, 1, &["COLCANARY 123"]);
        let (_, events) = run(&input(0xf0, &client, &[&error, &ready, &select]));
        let outcomes: Vec<(u64, bool, u64)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::CommandCompleted {
                    rows,
                    error,
                    masked,
                    ..
                } => Some((*rows, error.is_some(), masked.total())),
                _ => None,
            })
            .collect();
        assert_eq!(outcomes, [(0, true, 0), (1, false, 1)], "{events:#?}");
    }

    /// A server that answers a denied statement's replacement with rows: they belong to
    /// no forwarded statement, so no rule's profile applies to them, and they are withheld.
    #[test]
    fn rows_no_statement_asked_for_are_withheld() {
        let client = query("DROP TABLE people");
        let select = rows_of(PEOPLE_OID, 1, &["COLCANARY 123"]);
        let (upstream, events) = run(&input(0xf0, &client, &[&select]));
        assert_eq!(upstream.statements.len(), 1);
        assert!(upstream.statements[0].0.starts_with(REFUSED_PREFIX));
        // The denial is on record; nothing ran, so nothing completed.
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            AuditEventKind::CommandDecided {
                decision: Decision::Deny { .. },
                ..
            }
        )));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. })),
            "{events:#?}"
        );
    }

    /// An error whose details cannot be masked is withheld; a SQLSTATE field that holds
    /// something else does not survive into the error that replaces it.
    #[test]
    fn a_withheld_error_keeps_only_a_real_sqlstate() {
        let client = query("SELECT c FROM t");
        let mut error = b"E".to_vec();
        let body = b"SERROR\0CLEAKCANARY x\0M\xff\xfe\0\0";
        error.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        error.extend_from_slice(body);
        error.extend_from_slice(b"Z\0\0\0\x05I");
        let (upstream, _) = run(&input(0xf0, &client, &[&error]));
        assert_eq!(upstream.statements.len(), 1);
    }

    #[test]
    #[should_panic(expected = "a people.ssn value reached the client")]
    fn a_column_leak_is_caught() {
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        check(
            &parsed,
            &rows_of(PEOPLE_OID, 1, &["COLCANARY 123"]),
            &Upstream::default(),
            &[],
        );
    }
}
