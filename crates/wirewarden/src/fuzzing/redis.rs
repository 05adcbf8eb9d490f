//! A whole Redis session through [`RedisProxy`] (the `redis_relay` fuzz target).
//!
//! The default Redis policy plus an allow rule for the harness's identity, a mask profile
//! with the [`CANARY`](super::CANARY) detector and a key rule (`secret:*` redacted), and an in-memory
//! audit trail. After each session it checks:
//!
//! 1. **Every byte the client receives is well-formed RESP**, a sequence of whole frames
//!    (the gateway's own error replies, and upstream frames only once decoded).
//! 2. **Nothing the policy denies reaches the server**: no command that the default Redis
//!    rules deny whatever the identity is forwarded, inside `MULTI` or not, however it is
//!    spelled (inline or array).
//! 3. **Every forwarded command has its allow intent on record first**, in order.
//! 4. **No secret crosses**: the client's token never reaches the server or the audit
//!    trail, the gateway's upstream password never reaches the client or the trail, and a
//!    value the mask profile detects never reaches the client or the recorded replies,
//!    unless the party who would see it sent it itself. Nor does a value the server gives
//!    for a command that declares a `secret:*` key, whatever the command (only the key
//!    rule can hide it: no detector finds it), where answers follow commands one to one,
//!    in a transaction's `EXEC` array element for element.
//! 5. **Every outcome has its intent and the session its end**: each `CommandCompleted`
//!    follows its own `CommandDecided`, no command completes twice, every allowed command
//!    completes, and a session that started ends exactly once.
//! 6. **The session ends** once both peers have closed.
//!
//! # Input
//!
//! `flags`, a little-endian `u16` length `n`, `n` bytes the client sends after the harness
//! has logged it in, and then the server's script: segments (each a little-endian `u16`
//! length and that many bytes), one written back for each request the gateway forwards. Flag bits: 0–1 how the harness logs
//! in (`AUTH` as an array, `HELLO 3 … AUTH`, inline `AUTH`, or not at all); 2 the first
//! segment answers the gateway's own `AUTH` (otherwise `+OK`); 3 the upstream cannot be
//! reached; 4–7 the size of the pieces the client's bytes arrive in (`1 << bits`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wirewarden_core::{AuditEvent, CommandId, Protocol, Target};
use wirewarden_mask::{Engine, FieldRule, Profile, Selector, Strategy};
use wirewarden_redis::{Limits, ReplyDecoder, RequestDecoder, RespVersion};

use super::{
    Collector, Input, TOKEN, UPSTREAM_PASSWORD, allowed_intents, canary_word, check_trail,
    contains, mentions_canary, pipeline, play_client, runtime, tokens, with_canary,
};
use crate::Secret;
use crate::listen::{BoxIo, Dial};
use crate::redis::{DEFAULT_REDIS_POLICY, RedisProxy, RedisTarget, RedisUpstream};

/// Commands the default Redis rules deny for every identity: none of them may reach the
/// server. (Subcommand rules such as `CLIENT KILL` are checked by name and subcommand.)
const NEVER_FORWARDED: &[&str] = &[
    "EVAL",
    "EVALSHA",
    "EVAL_RO",
    "EVALSHA_RO",
    "FCALL",
    "FCALL_RO",
    "SCRIPT",
    "FUNCTION",
    "MONITOR",
    "CONFIG",
    "DEBUG",
    "MODULE",
    "SHUTDOWN",
    "FAILOVER",
    "SYNC",
    "PSYNC",
    "REPLICAOF",
    "SLAVEOF",
    "REPLCONF",
    "MIGRATE",
    "DUMP",
    "RESTORE",
    "RESTORE-ASKING",
    "KEYS",
    "SCAN",
    "RANDOMKEY",
    "FLUSHALL",
    "FLUSHDB",
    "SWAPDB",
    "SORT",
    "SORT_RO",
    "OBJECT",
    "MEMORY",
    "LATENCY",
    "SLOWLOG",
    "ACL",
    "CLUSTER",
    "BGSAVE",
    "BGREWRITEAOF",
    "SAVE",
    "LASTSAVE",
    "INFO",
    "WAIT",
    "WAITAOF",
    "PFDEBUG",
    "PFSELFTEST",
    "SELECT",
    "MOVE",
    "COPY",
];
const NEVER_FORWARDED_CLIENT: &[&str] = &[
    "KILL", "LIST", "PAUSE", "UNPAUSE", "REPLY", "TRACKING", "NO-EVICT", "NO-TOUCH",
];

/// The upstream stream the next session dials, when the input lets it connect.
type Slot = Arc<Mutex<Option<DuplexStream>>>;

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: RedisProxy,
    audit: Arc<Collector>,
    upstream: Slot,
    one: Mutex<()>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = runtime();
        let (proxy, audit, upstream) = build(None);
        Harness {
            runtime,
            proxy,
            audit,
            upstream,
            one: Mutex::new(()),
        }
    })
}

/// The harness's proxy, with [`TOKEN`] valid until `expires_at`: its audit trail, and the
/// slot its next dial takes its upstream stream from.
fn build(expires_at: Option<wirewarden_core::Timestamp>) -> (RedisProxy, Arc<Collector>, Slot) {
    let policy = format!(
        "{DEFAULT_REDIS_POLICY}\n[[rule]]\nid = \"agents-data\"\ngroups = [\"agents\"]\n\
         max_class = \"write\"\naction = \"allow\"\n\n[[budget]]\nid = \"elements\"\n\
         groups = [\"agents\"]\nmax_rows = 1000000000000\nwindow = \"1h\"\n"
    );
    let masks = Engine::builder()
        .profile(with_canary(Profile::builder("fuzz")).rule(FieldRule::new(
            Selector::redis_key("secret:*"),
            Strategy::redact(),
        )))
        .default_profile("fuzz")
        .build()
        .expect("harness mask profile");
    let audit = Arc::new(Collector::default());
    let pipeline = pipeline(tokens(expires_at), &policy, masks, audit.clone());
    let upstream = RedisUpstream {
        addr: "upstream.invalid:6379".into(),
        user: Some("gateway".into()),
        password: Secret::new(UPSTREAM_PASSWORD),
        tls: None,
    };
    let mut target = RedisTarget::new(
        Target::new("cache", Protocol::Redis).expect("target"),
        upstream,
    );
    target.limits = wirewarden_redis::fuzzing::limits();
    target.record_limit = 4096;
    let slot: Slot = Arc::default();
    let given = slot.clone();
    let proxy = RedisProxy::new(pipeline, target).with_dial(Dial::Given(Arc::new(move || {
        given
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|s| Box::new(s) as BoxIo)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    })));
    (proxy, audit, slot)
}

/// What the harness sends before the input's client bytes.
fn login_bytes(input: &Input<'_>) -> &'static [u8] {
    match input.login {
        0 => b"*2\r\n$4\r\nAUTH\r\n$17\r\ntok-fuzz-7c1f9e2a\r\n",
        1 => b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nagent\r\n$17\r\ntok-fuzz-7c1f9e2a\r\n",
        2 => b"AUTH tok-fuzz-7c1f9e2a\r\n",
        _ => b"",
    }
}

/// What the server side saw.
#[derive(Default)]
struct Upstream {
    /// Every byte the gateway sent it.
    received: Vec<u8>,
    /// The requests it received, in order, with how many events were on record when each
    /// arrived.
    requests: Vec<(Vec<Bytes>, usize)>,
    /// What it answered each of them with (nothing once the script ran out).
    answers: Vec<Bytes>,
}

/// Runs one session from fuzz input: see the module documentation.
pub fn redis_relay(data: &[u8]) {
    run(data);
}

/// Runs and checks one session; the session's trail.
fn run(data: &[u8]) -> Vec<AuditEvent> {
    let Some(input) = Input::parse(data) else {
        return Vec::new();
    };
    let h = harness();
    // One session at a time: they share the audit collector.
    let _one = h.one.lock().unwrap_or_else(PoisonError::into_inner);
    h.audit.events().clear();
    h.runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(60), session(h, &input)).await {
            Ok(()) => {}
            Err(_) => panic!("the session did not end within 60 s"),
        }
    });
    h.audit.events().clone()
}

async fn session(h: &'static Harness, input: &Input<'_>) {
    let (client, gateway_client) = tokio::io::duplex(1 << 16);
    let (gateway_up, up) = tokio::io::duplex(1 << 16);
    *h.upstream.lock().unwrap_or_else(PoisonError::into_inner) =
        (!input.unreachable).then_some(gateway_up);
    let peer = "192.0.2.7:40000".parse().ok();
    let proxy = h.proxy.clone();
    let served = tokio::spawn(async move { proxy.serve(gateway_client, peer).await });

    let script: Vec<Bytes> = input
        .script
        .iter()
        .map(|s| Bytes::copy_from_slice(s))
        .collect();
    let (close_up, closed_up) = tokio::sync::oneshot::channel::<()>();
    let audit = h.audit.clone();
    let answers_auth = input.script_answers_login;
    let server = tokio::spawn(serve_script(up, script, answers_auth, closed_up, audit));

    let received = play_client(
        client,
        login_bytes(input),
        input.client,
        input.piece,
        || {
            let _ = close_up.send(());
        },
    )
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), served).await;
    assert!(
        ended.is_ok(),
        "the session did not end within 10 s of both peers closing"
    );
    let upstream = server.await.expect("the script task");
    let events = h.audit.events().clone();
    check(input, &received, &upstream, &events);
}

/// Plays the server: answers the gateway's `AUTH` and then writes one script segment for
/// each request it receives, until told to close.
async fn serve_script(
    mut io: DuplexStream,
    script: Vec<Bytes>,
    answers_auth: bool,
    mut close: tokio::sync::oneshot::Receiver<()>,
    audit: Arc<Collector>,
) -> Upstream {
    let mut seen = Upstream::default();
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut segments = script.into_iter();
    let mut first = true;
    loop {
        buf.reserve(16 * 1024);
        tokio::select! {
            biased;
            _ = &mut close => break,
            n = io.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.received.extend_from_slice(&buf[buf.len() - n..]);
                }
            },
        }
        loop {
            let req = match decoder.decode(&mut buf) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => panic!("the gateway sent the server a malformed request: {e}"),
            };
            let is_auth = first;
            first = false;
            if !is_auth {
                seen.requests
                    .push((req.args().to_vec(), audit.events().len()));
            }
            let answer = if is_auth && !answers_auth {
                Some(Bytes::from_static(b"+OK\r\n"))
            } else {
                segments.next()
            };
            if !is_auth {
                seen.answers.push(answer.clone().unwrap_or_default());
            }
            if let Some(answer) = answer
                && io.write_all(&answer).await.is_err()
            {
                return seen;
            }
        }
    }
    let _ = io.shutdown().await;
    seen
}

/// What no detector finds: only the `secret:*` key rule can hide it.
const KEY_CANARY: &[u8] = b"KEYCANARY";

/// Whether [`KEY_CANARY`] may reach the client lawfully in this session, or the session
/// is one where the check cannot tell which answer went with which command. It applies when
/// each answer the server wrote is one frame, not a push, for the request it followed (an
/// empty answer only after the last one written), in a session without subscriptions or
/// `RESET`. In a transaction, a command answered `+QUEUED` has its answer in the `EXEC`
/// array, element for element, as the server queued them.
fn key_canary_may_show(input: &Input<'_>, upstream: &Upstream) -> bool {
    if input.script_answers_login || contains(input.client, KEY_CANARY) {
        return true;
    }
    let mut client = BytesMut::from(input.client);
    let mut decoder = RequestDecoder::new(Limits::default());
    while let Ok(Some(req)) = decoder.decode(&mut client) {
        if matches!(
            req.name().to_ascii_uppercase().as_slice(),
            b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"RESET"
        ) {
            return true;
        }
    }
    let mut frames = Vec::new();
    let mut silent = false;
    for answer in &upstream.answers {
        if answer.is_empty() {
            silent = true;
            continue;
        }
        let mut buf = BytesMut::from(&answer[..]);
        let mut d = ReplyDecoder::new(Limits::default());
        match d.decode(&mut buf, RespVersion::Resp3) {
            Ok(Some(f)) if !silent && !f.is_push() && buf.is_empty() => frames.push(f),
            _ => return true,
        }
    }
    let secret = |args: &[Bytes]| {
        wirewarden_redis::classify(args)
            .command
            .objects_of(wirewarden_core::ObjectKind::Key)
            .any(|k| k.name.starts_with("secret:"))
    };
    // What the server made of the transaction: in one, and whether each command it
    // queued declares a `secret:*` key.
    let mut in_multi = false;
    let mut queued: Vec<bool> = Vec::new();
    for ((args, _), frame) in upstream.requests.iter().zip(&frames) {
        let name = args[0].to_ascii_uppercase();
        let shows = contains(frame.raw(), KEY_CANARY);
        let ends = matches!(name.as_slice(), b"EXEC" | b"DISCARD" | b"MULTI");
        if in_multi && !ends {
            if frame.simple_text() == Some(b"QUEUED") {
                queued.push(secret(args));
            } else if shows && !secret(args) {
                return true;
            }
            continue;
        }
        match name.as_slice() {
            b"MULTI" if !frame.is_error() => in_multi = true,
            b"DISCARD" if !frame.is_error() => {
                in_multi = false;
                queued.clear();
            }
            b"EXEC" if in_multi => {
                in_multi = false;
                let queued = std::mem::take(&mut queued);
                match frame.elements() {
                    Ok(Some(elements)) => {
                        let lawful = elements.iter().enumerate().any(|(i, element)| {
                            contains(element, KEY_CANARY)
                                && !queued.get(i).copied().unwrap_or(false)
                        });
                        if lawful {
                            return true;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => return true,
                }
            }
            _ => {}
        }
        if shows && !secret(args) {
            return true;
        }
    }
    false
}

fn check(input: &Input<'_>, received: &[u8], upstream: &Upstream, events: &[AuditEvent]) {
    let script: Vec<u8> = input.script.concat();
    // Whatever the client sends it may see again (an echo, the server's error about it).
    let client_sent_canary = mentions_canary(input.client);

    // 1. What the client receives is whole RESP frames.
    let mut buf = BytesMut::from(received);
    let mut decoder = ReplyDecoder::new(Limits::default());
    loop {
        match decoder.decode(&mut buf, RespVersion::Resp3) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!(
                "the client received malformed RESP ({e}) at byte {} of {received:?}",
                received.len() - buf.len()
            ),
        }
    }
    assert!(
        buf.is_empty(),
        "the client received a partial frame at the end: {buf:?}"
    );

    // 4, for key rules, checked first: a value of a `secret:*` key never reaches the client, whichever
    // command returns it. [`KEY_CANARY`] is what no detector finds; if the server answers a
    // command that declares a `secret:*` key with it, only the key rule can hide it. Where
    // it may lawfully show (the client sent it, a command without such a key was answered
    // with it) or the answers do not follow the commands one to one, the check stands
    // aside.
    if !key_canary_may_show(input, upstream) {
        assert!(
            !contains(received, KEY_CANARY),
            "a secret:* value reached the client: {:?}",
            String::from_utf8_lossy(received)
        );
    }

    // 2. Nothing denied for everyone reaches the server.
    for (args, _) in &upstream.requests {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        assert!(
            !NEVER_FORWARDED.contains(&name.as_str()),
            "a denied command reached the server: {args:?}"
        );
        if name == "CLIENT"
            && let Some(sub) = args.get(1)
        {
            let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
            assert!(
                !NEVER_FORWARDED_CLIENT.contains(&sub.as_str()),
                "a denied command reached the server: {args:?}"
            );
        }
    }

    // 3. Every forwarded command had its allow intent on record before it arrived, in order.
    let allowed: Vec<(usize, &str, CommandId)> = allowed_intents(events)
        .into_iter()
        .map(|(i, command, id)| (i, command.verb.as_str(), id))
        .collect();
    let mut intents = allowed.iter();
    for (args, on_record) in &upstream.requests {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let Some(&(at, verb, _)) = intents.next() else {
            panic!("{args:?} reached the server without an allow intent on record");
        };
        let first_word = verb.split(' ').next().unwrap_or_default();
        // A transaction with a denied command is discarded in its EXEC's place.
        let matches = first_word == name || (first_word == "EXEC" && name == "DISCARD");
        assert!(
            matches,
            "{args:?} reached the server in the place of the intent for {verb}"
        );
        assert!(
            at < *on_record,
            "{args:?} reached the server before its intent was on record"
        );
    }

    // 4. No secret crosses the wire.
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
    if !client_sent_canary {
        assert!(
            !canary_word(received),
            "a detected value reached the client in clear: {:?}",
            String::from_utf8_lossy(received)
        );
    }

    // 4 and 5 in the trail: no secret, outcomes after their intents, every allowed command
    // completed once, a session that started ended once.
    let allowed: Vec<CommandId> = allowed.iter().map(|(_, _, id)| *id).collect();
    check_trail(events, input.client, &script, &allowed, false, true);
}

#[cfg(test)]
mod tests {
    use wirewarden_core::AuditEventKind;

    use super::super::input;
    use super::*;

    #[test]
    fn a_clean_session_passes_every_check() {
        let events = run(&input(
            0x40,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            &[b"$10\r\nLEAKCANARY\r\n", b"+OK\r\n"],
        ));
        let completed = events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
            .count();
        assert_eq!(completed, 2, "{events:#?}");
    }

    /// A command read in the same turn as the credential expires (before the expiry timer
    /// ends the session) is refused, and its denial is on record like any other. The
    /// runtime's clock is paused, so the timer cannot fire until the runtime is idle, while
    /// the wall clock the credential is checked against goes past its expiry.
    #[test]
    fn a_command_read_as_the_credential_expires_is_refused_on_record() {
        use wirewarden_core::Timestamp;

        let runtime = super::super::paused_runtime();
        let expires_at = Timestamp::now().saturating_add(Duration::from_millis(300));
        let (proxy, audit, slot) = build(Some(expires_at));
        let trail = audit.clone();
        let (received, upstream, ended) = runtime.block_on(async move {
            let (mut client, gateway_client) = tokio::io::duplex(1 << 16);
            let (gateway_up, up) = tokio::io::duplex(1 << 16);
            *slot.lock().unwrap() = Some(gateway_up);
            let served = tokio::spawn(async move { proxy.serve(gateway_client, None).await });
            let (close_up, closed_up) = tokio::sync::oneshot::channel();
            let hello = vec![Bytes::from_static(b"$5\r\nhello\r\n")];
            let server = tokio::spawn(serve_script(up, hello, false, closed_up, trail));
            client
                .write_all(b"*2\r\n$4\r\nAUTH\r\n$17\r\ntok-fuzz-7c1f9e2a\r\n")
                .await
                .unwrap();
            let mut received = Vec::new();
            while !received.ends_with(b"+OK\r\n") {
                assert_ne!(client.read_buf(&mut received).await.unwrap(), 0);
            }
            // Blocks the runtime's one thread: its clock stays where it is.
            super::super::wait_past(expires_at);
            client
                .write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
                .await
                .unwrap();
            // The refusal, then the end: the timer fires once nothing else is left to do.
            client.read_to_end(&mut received).await.unwrap();
            let ended = served.await.unwrap();
            let _ = close_up.send(());
            (received, server.await.unwrap(), ended)
        });
        assert!(ended.is_ok(), "{ended:?}");
        assert_eq!(
            received,
            b"+OK\r\n-ERR wirewarden: the credential of this session has expired (rule credential-expired)\r\n"
        );
        assert!(upstream.requests.is_empty(), "{:?}", upstream.requests);
        super::super::assert_expired_denial(&audit.events(), "GET", 1);
    }

    /// An invalid reply in the middle of a pipeline (the `invalid_reply_mid_pipeline` seed):
    /// every check holds, and the upstream's error and the session's end are on record.
    #[test]
    fn an_invalid_reply_mid_pipeline_passes_every_check() {
        let events = run(&input(
            0xf0,
            b"GET a\r\nGET b\r\nFLUSHALL\r\nGET c\r\n",
            &[b"$1\r\nx\r\n", b"$-5\r\n", b"$1\r\ny\r\n"],
        ));
        assert!(
            events.iter().any(|e| matches!(
                &e.kind,
                AuditEventKind::ProtocolError {
                    direction: wirewarden_core::Direction::FromUpstream,
                    ..
                }
            )),
            "{events:#?}"
        );
        assert!(
            events.iter().any(|e| matches!(
                &e.kind,
                AuditEventKind::SessionEnded {
                    reason: wirewarden_core::SessionEndReason::Error { message },
                    ..
                } if message.starts_with("the upstream sent an invalid reply")
            )),
            "{events:#?}"
        );
    }

    /// Requests refused before login (the `refused_then_login` seed, and the same client
    /// leaving instead of logging in): every check holds, and the refusals are on record
    /// once.
    #[test]
    fn refusals_before_login_pass_every_check() {
        let events = run(&input(
            0xf3,
            b"PING\r\nHELLO 3\r\nAUTH tok-fuzz-7c1f9e2a\r\nGET k\r\n",
            &[b"$1\r\nv\r\n"],
        ));
        let refused: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::ProtocolError {
                    direction: wirewarden_core::Direction::FromClient,
                    error,
                } => Some(error.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused,
            ["2 requests refused before authentication: PING, HELLO"],
            "{events:#?}"
        );
        let events = run(&input(0xf3, b"PING\r\nGET k\r\n", &[]));
        let refused: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::AuthenticationFailed {
                    method,
                    reason,
                    client_addr,
                    ..
                } if method == "none" => Some((reason.as_str(), client_addr.as_deref())),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused,
            [(
                "2 requests refused before authentication: PING, GET; the connection ended unauthenticated: the client left",
                Some("192.0.2.7:40000")
            )],
            "{events:#?}"
        );
    }

    #[test]
    #[should_panic(expected = "a denied command reached the server")]
    fn a_denied_command_upstream_is_caught() {
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        let upstream = Upstream {
            received: Vec::new(),
            requests: vec![(vec![Bytes::from_static(b"flushall")], 0)],
            answers: Vec::new(),
        };
        check(&parsed, b"", &upstream, &[]);
    }

    #[test]
    #[should_panic(expected = "without an allow intent on record")]
    fn a_command_forwarded_without_its_intent_is_caught() {
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        let upstream = Upstream {
            received: Vec::new(),
            requests: vec![(
                vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k")],
                0,
            )],
            answers: Vec::new(),
        };
        check(&parsed, b"", &upstream, &[]);
    }

    #[test]
    fn several_keys_under_one_rule_are_checked() {
        let client = b"*3\r\n$6\r\nSUNION\r\n$5\r\nplain\r\n$8\r\nsecret:a\r\n";
        let events = run(&input(0xf0, client, &[b"*1\r\n$9\r\nKEYCANARY\r\n"]));
        assert!(
            events
                .iter()
                .any(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. })),
            "{events:#?}"
        );
    }

    #[test]
    #[should_panic(expected = "a secret:* value reached the client")]
    fn a_key_rule_bypass_is_caught() {
        let parsed = Input::parse(&[0xf0, 0, 0]).unwrap();
        let upstream = Upstream {
            received: Vec::new(),
            requests: vec![(
                vec![Bytes::from_static(b"GET"), Bytes::from_static(b"secret:a")],
                0,
            )],
            answers: vec![Bytes::from_static(b"$9\r\nKEYCANARY\r\n")],
        };
        check(&parsed, b"$9\r\nKEYCANARY\r\n", &upstream, &[]);
    }

    #[test]
    #[should_panic(expected = "reached the client in clear")]
    fn a_leak_is_caught() {
        // The check itself, fed a reply that carries the canary.
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        check(&parsed, b"$10\r\nLEAKCANARY\r\n", &Upstream::default(), &[]);
    }

    fn request(args: &[&'static [u8]]) -> (Vec<Bytes>, usize) {
        (args.iter().map(|a| Bytes::from_static(a)).collect(), 0)
    }

    /// A transaction: `GET secret:a` and `GET plain` queued, answered in `EXEC`'s array.
    fn transaction(elements: &'static [u8]) -> Upstream {
        Upstream {
            received: Vec::new(),
            requests: vec![
                request(&[b"MULTI"]),
                request(&[b"GET", b"secret:a"]),
                request(&[b"GET", b"plain"]),
                request(&[b"EXEC"]),
            ],
            answers: vec![
                Bytes::from_static(b"+OK\r\n"),
                Bytes::from_static(b"+QUEUED\r\n"),
                Bytes::from_static(b"+QUEUED\r\n"),
                Bytes::from_static(elements),
            ],
        }
    }

    #[test]
    fn in_a_transaction_each_exec_element_answers_its_own_command() {
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        let secret = transaction(b"*2\r\n$9\r\nKEYCANARY\r\n$1\r\nx\r\n");
        assert!(!key_canary_may_show(&parsed, &secret));
        let plain = transaction(b"*2\r\n$1\r\nx\r\n$9\r\nKEYCANARY\r\n");
        assert!(key_canary_may_show(&parsed, &plain));
        // A command the server did not queue is answered on its own.
        let mut refused = transaction(b"*1\r\n$9\r\nKEYCANARY\r\n");
        refused.answers[1] = Bytes::from_static(b"-ERR no\r\n");
        assert!(key_canary_may_show(&parsed, &refused));
        // An answer the server left out puts the rest out of step: the check stands aside.
        let mut silent = transaction(b"*2\r\n$9\r\nKEYCANARY\r\n$1\r\nx\r\n");
        silent.answers[1] = Bytes::new();
        assert!(key_canary_may_show(&parsed, &silent));
    }

    #[test]
    #[should_panic(expected = "a secret:* value reached the client")]
    fn a_key_rule_bypass_in_a_transaction_is_caught() {
        let parsed = Input::parse(&[0, 0, 0]).unwrap();
        let upstream = transaction(b"*2\r\n$9\r\nKEYCANARY\r\n$1\r\nx\r\n");
        check(
            &parsed,
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$9\r\nKEYCANARY\r\n$1\r\nx\r\n",
            &upstream,
            &[],
        );
    }

    /// Through the gateway: the element for `GET secret:a` is hidden by the key rule, the
    /// other shown as the server sent it, and every check holds.
    #[test]
    fn a_transaction_through_the_gateway_hides_the_secret_keys_element() {
        let client: &[u8] = b"*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nGET\r\n$8\r\nsecret:a\r\n\
              *2\r\n$3\r\nGET\r\n$5\r\nplain\r\n*1\r\n$4\r\nEXEC\r\n";
        let events = run(&input(
            0x40,
            client,
            &[
                b"+OK\r\n",
                b"+QUEUED\r\n",
                b"+QUEUED\r\n",
                b"*2\r\n$9\r\nKEYCANARY\r\n$5\r\nhello\r\n",
            ],
        ));
        let completed = events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
            .count();
        assert_eq!(completed, 4, "{events:#?}");
    }
}
