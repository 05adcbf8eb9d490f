//! End to end: real clients (redis-cli, redis-py in RESP2 and RESP3) through the Redis proxy
//! to a real redis-server.
//!
//! Each test starts its own redis-server (wirewarden-testkit), its own audit directory and
//! its own proxy on a loopback port, so they run in parallel.
#![cfg(feature = "redis")]

mod support;
use support::{assert_verifies, events, kinds_when, text, transcripts, withdrawn};

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use wirewarden::Pipeline;
use wirewarden::Secret;
use wirewarden::audit::{AuditSink, VerifyKeys};
use wirewarden::core::{AuditEventKind, Decision, Protocol, Target, Timestamp};
use wirewarden::identity::{StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
use wirewarden::mask::{
    CustomDetector, Engine, FieldRule, Limits as MaskLimits, Profile, Selector, Strategy,
};
use wirewarden::policy::RuleEngine;
use wirewarden::redis::{DEFAULT_REDIS_POLICY, RedisProxy, RedisTarget, RedisUpstream};
use wirewarden_testkit::Redis;

const CARD: &str = "4111 1111 1111 1111";
const SSN: &str = "123-45-6789";
const API_KEY: &str = "hunter2-not-a-pattern";

struct Gateway {
    _redis: Redis,
    addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    _task: tokio::task::JoinHandle<()>,
}

fn tokens() -> StaticTokens {
    let token = |id: &str, secret: &str, subject: &str, groups: &[&str]| StaticToken {
        id: id.into(),
        hash: TokenHash::of(secret, None),
        subject: subject.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        attributes: Default::default(),
        expires_at: None,
    };
    StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: vec![
            token("agent", "tok-agent", "agent-1", &["agents"]),
            token("other", "tok-other", "agent-2", &["agents"]),
            token("budget", "tok-budget", "agent-3", &["agents", "budgeted"]),
            // Expires soon after the gateway starts; `fresh` is the same agent's next token.
            StaticToken {
                expires_at: Timestamp::now().checked_add(BRIEF),
                ..token("brief", "tok-brief", "agent-4", &["agents"])
            },
            token("fresh", "tok-fresh", "agent-4", &["agents"]),
            token(
                "streamer",
                "tok-streamer",
                "agent-5",
                &["agents", "streaming"],
            ),
        ],
    })
    .unwrap()
}

/// How long after the gateway starts the token `tok-brief` expires.
const BRIEF: Duration = Duration::from_secs(6);

impl Gateway {
    /// A command sent to the Redis server directly, not through the gateway.
    fn direct(&self, args: &[&str]) -> String {
        tokio::task::block_in_place(|| self._redis.cli(args).unwrap())
    }
}

async fn gateway() -> Gateway {
    gateway_with(|_| {}, |sink| sink).await
}

async fn gateway_with(
    configure: impl FnOnce(&mut RedisTarget),
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
) -> Gateway {
    gateway_with_rules("", configure, wrap).await
}

/// [`gateway_with`], and `rules` before the rule that lets agents read and write.
async fn gateway_with_rules(
    rules: &str,
    configure: impl FnOnce(&mut RedisTarget),
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
) -> Gateway {
    let redis = tokio::task::spawn_blocking(|| {
        let r = Redis::builder().start().unwrap();
        r.cli(&["SET", "card", &format!("card {CARD} on file")])
            .unwrap();
        r.cli(&["SET", "ssn", &format!("ssn {SSN}")]).unwrap();
        r.cli(&["SET", "secret:api", API_KEY]).unwrap();
        r.cli(&["SET", "plain", "hello"]).unwrap();
        r.cli(&["RPUSH", "list", "a", "b"]).unwrap();
        // Longer than the profile agrees to process.
        r.cli(&["SET", "big", &format!("{SSN} {}", "x".repeat(2000))])
            .unwrap();
        r.cli(&["HSET", "customer:1", "name", "Ada", "card", CARD])
            .unwrap();
        r
    })
    .await
    .unwrap();
    let (audit_dir, keys, sink) = support::audit_trail();
    let policy = format!(
        "{DEFAULT_REDIS_POLICY}\n{rules}\n[[rule]]\nid = \"deletes-need-ops\"\nverbs = [\"DEL\"]\naction = \"review\"\nreviewers = [\"ops\"]\ntimeout = \"20s\"\n\n[[rule]]\nid = \"agents-data\"\ngroups = [\"agents\"]\nmax_class = \"write\"\naction = \"allow\"\n\n[[budget]]\nid = \"elements\"\ngroups = [\"budgeted\"]\nmax_rows = 3\nwindow = \"1h\"\n"
    );
    let masks = Engine::builder()
        .profile(
            Profile::builder("cache")
                .limits(MaskLimits {
                    max_value_len: 1024,
                    ..Default::default()
                })
                .rule(FieldRule::new(
                    Selector::redis_key("secret:*"),
                    Strategy::redact(),
                )),
        )
        // Redacts one code name, which `cache` lets through.
        .profile(
            Profile::builder("strict")
                .custom(CustomDetector::dictionary("codename", ["bluebird"]).unwrap()),
        )
        .default_profile("cache")
        .build()
        .unwrap();
    let engine = Arc::new(RuleEngine::from_toml(&policy).unwrap());
    let pipeline = Arc::new(
        Pipeline::builder(Arc::new(tokens()), engine.clone())
            .budgets(engine.budgets_handle())
            .masking(Arc::new(masks))
            .audit(wrap(Arc::new(sink)))
            .build()
            .unwrap(),
    );
    let upstream = RedisUpstream {
        addr: redis.addr().to_string(),
        user: Some(redis.user().to_owned()),
        password: Secret::new(redis.password()),
        tls: None,
    };
    let mut target = RedisTarget::new(Target::new("cache", Protocol::Redis).unwrap(), upstream);
    configure(&mut target);
    let proxy = RedisProxy::new(pipeline.clone(), target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.listen(listener).await;
    });
    Gateway {
        _redis: redis,
        addr,
        pipeline,
        audit_dir,
        keys,
        _task: task,
    }
}

/// redis-cli through the gateway, commands read from stdin (one session).
async fn cli(addr: SocketAddr, extra: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "--no-auth-warning",
    ])
    .args(extra)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("redis-cli finished")
        .unwrap()
}

/// A redis-py script; `PORT` and `PROTO` are set in its environment, `r` is a connected
/// client with the agent's token.
async fn python(addr: SocketAddr, protocol: u8, body: &str) -> Output {
    let script = format!(
        "import os, redis\nr = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), username='agent', password='tok-agent', protocol=int(os.environ['PROTO']), decode_responses=True, socket_timeout=20)\n{body}\nprint('DONE')\n"
    );
    let cmd = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .env("PORT", addr.port().to_string())
        .env("PROTO", protocol.to_string())
        .output();
    tokio::time::timeout(Duration::from_secs(60), cmd)
        .await
        .expect("python finished")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_masks_denies_in_order_and_audits() {
    let g = gateway().await;
    let out = cli(
        g.addr,
        &["-a", "tok-agent"],
        "GET card\nCONFIG GET maxmemory\nGET ssn\nEVAL \"return 1\" 0\nGET secret:api\nFLUSHALL\nGET plain\nDBSIZE\nGET big\nGET plain\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // redis-cli prints an empty line after each error.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 10, "{stdout}");
    assert!(
        lines[0].starts_with("card ") && lines[0].contains("on file"),
        "{stdout}"
    );
    assert!(!lines[0].contains(CARD), "{stdout}");
    assert!(
        lines[1].starts_with("ERR wirewarden: ") && lines[1].contains("(rule redis-"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("ssn ") && !lines[2].contains(SSN),
        "{stdout}"
    );
    assert!(lines[3].starts_with("ERR wirewarden: "), "{stdout}");
    assert!(!lines[4].contains(API_KEY), "{stdout}");
    assert!(lines[5].contains("rule redis-no-admin"), "{stdout}");
    assert_eq!(lines[6], "hello");
    // FLUSHALL was refused: the keys are still there.
    assert!(lines[7].parse::<u64>().unwrap() >= 5, "{stdout}");
    // A value the masker refuses to process is withheld, never sent in clear.
    assert!(lines[8].contains("reply withheld"), "{stdout}");
    assert_eq!(lines[9], "hello");

    // A wrong token is refused, and so is everything before authentication.
    let out = cli(g.addr, &["-a", "wrong"], "GET plain\n").await;
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("WRONGPASS") || all.contains("NOAUTH"), "{all}");
    assert!(!all.contains("hello"), "{all}");
    let out = cli(g.addr, &[], "GET plain\nPING\n").await;
    let all = text(&out.stdout);
    assert_eq!(all.matches("NOAUTH").count(), 2, "{all}");

    // `--user`/`--pass` (AUTH user token) and RESP3 through `-3` (HELLO 3).
    let out = cli(
        g.addr,
        &["--user", "agent", "--pass", "tok-agent", "-3"],
        "HGETALL customer:1\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Ada"), "{stdout}");
    assert!(!stdout.contains(CARD), "{stdout}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    let ev = events(g.audit_dir.path(), &g.keys);
    assert!(ev.iter().any(|e| matches!(e, AuditEventKind::SessionStarted { principal, .. } if principal.subject == "agent-1")));
    assert!(
        ev.iter()
            .any(|e| matches!(e, AuditEventKind::AuthenticationFailed { .. }))
    );
    let denied: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandDecided {
                command,
                decision: Decision::Deny { .. },
                ..
            } => Some(command.verb.as_str()),
            _ => None,
        })
        .collect();
    for verb in ["CONFIG GET", "EVAL", "FLUSHALL"] {
        assert!(denied.contains(&verb), "{denied:?}");
    }
    let masked: u64 = ev
        .iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandCompleted { masked, .. } => Some(masked.total()),
            _ => None,
        })
        .sum();
    assert!(masked >= 4, "{masked}");
    // Each reply as the client saw it is in its command's completion; no separate records.
    assert!(
        !ev.iter()
            .any(|e| matches!(e, AuditEventKind::Transcript { .. }))
    );
    let transcripts: Vec<&String> = ev
        .iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandCompleted {
                reply: Some(reply), ..
            } => Some(&reply.text),
            _ => None,
        })
        .collect();
    assert!(transcripts.iter().any(|t| t.contains("hello")));
    assert!(
        transcripts
            .iter()
            .all(|t| !t.contains(CARD) && !t.contains(SSN) && !t.contains(API_KEY))
    );
    assert!(
        ev.iter()
            .filter(|e| matches!(e, AuditEventKind::SessionEnded { .. }))
            .count()
            >= 2
    );
}

const PY_SESSION: &str = r#"
CARD = '4111 1111 1111 1111'
# An agent names its step; the name is in the audit trail with the session's commands.
assert r.client_setname('run-42:call-7')
v = r.get('card')
assert v.startswith('card ') and CARD not in v, v
assert '123-45-6789' not in r.get('ssn')
assert r.get('secret:api') != 'hunter2-not-a-pattern'
h = r.hgetall('customer:1')
assert h['name'] == 'Ada' and h['card'] != CARD, h
assert r.mget('plain', 'secret:api')[0] == 'hello'
assert r.mget('plain', 'secret:api')[1] != 'hunter2-not-a-pattern'

# A pipeline mixing allowed and denied commands: replies stay in order.
p = r.pipeline(transaction=False)
p.set('k1', 'v1')
p.config_get('maxmemory')
p.get('k1')
p.eval('return 1', 0)
p.get('card')
p.flushall()
p.incr('n')
res = p.execute(raise_on_error=False)
assert res[0] is True, res
assert isinstance(res[1], redis.ResponseError) and 'wirewarden' in str(res[1]), res
assert res[2] == 'v1', res
assert isinstance(res[3], redis.ResponseError), res
assert CARD not in res[4], res
assert isinstance(res[5], redis.ResponseError), res
assert res[6] == 1, res

# MULTI/EXEC: each element masked with its own command's key.
p = r.pipeline(transaction=True)
p.get('card')
p.get('secret:api')
p.get('plain')
p.hgetall('customer:1')
res = p.execute()
assert CARD not in res[0] and res[1] != 'hunter2-not-a-pattern' and res[2] == 'hello', res
assert res[3]['card'] != CARD, res

# A denied command inside MULTI aborts the transaction, as the server would.
p = r.pipeline(transaction=True)
p.set('tx', '1')
p.config_get('maxmemory')
try:
    p.execute()
    raise SystemExit('EXEC should have failed')
except redis.exceptions.ExecAbortError:
    pass
except redis.ResponseError as e:
    assert 'wirewarden' in str(e) or 'EXECABORT' in str(e), e
assert r.get('tx') is None
assert r.ping()

# Pub/sub: messages are masked too.
ps = r.pubsub()
ps.subscribe('news')
m = ps.get_message(timeout=5)
assert m and m['type'] == 'subscribe', m
pub = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), password='tok-other', protocol=int(os.environ['PROTO']), decode_responses=True)
assert pub.publish('news', 'paid with ' + CARD) == 1
m = ps.get_message(timeout=5)
assert m and m['type'] == 'message' and m['data'].startswith('paid with ') and CARD not in m['data'], m
ps.close()

# The connection survived everything above.
assert r.get('plain') == 'hello'

# A wrong token.
try:
    redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), username='agent', password='nope', protocol=int(os.environ['PROTO'])).ping()
    raise SystemExit('wrong token accepted')
except redis.AuthenticationError:
    pass
"#;

async fn redis_py(protocol: u8) {
    let g = gateway().await;
    let out = python(g.addr, protocol, PY_SESSION).await;
    assert!(
        text(&out.stdout).contains("DONE"),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    let ev = events(g.audit_dir.path(), &g.keys);
    assert!(
        ev.iter()
            .any(|e| matches!(e, AuditEventKind::AuthenticationFailed { .. }))
    );
    assert!(ev.iter().any(|e| matches!(e,
        AuditEventKind::CommandDecided { command, decision: Decision::Allow { .. }, .. }
            if command.verb == "CLIENT SETNAME" && command.text.contains("run-42:call-7"))));
    let exec_done = ev.iter().any(|e| matches!(e, AuditEventKind::CommandCompleted { error: Some(err), .. } if err.contains("EXECABORT")));
    assert!(exec_done);
    // The intents of one pipeline are appended together, and still in the order sent.
    let decided: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandDecided { command, .. } => Some(command.verb.as_str()),
            _ => None,
        })
        .collect();
    let pipeline = [
        "SET",
        "CONFIG GET",
        "GET",
        "EVAL",
        "GET",
        "FLUSHALL",
        "INCRBY",
    ];
    assert!(
        decided.windows(pipeline.len()).any(|w| w == pipeline),
        "{decided:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_resp2() {
    redis_py(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_resp3() {
    redis_py(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_is_held_for_review_and_runs_once_approved() {
    let g = gateway().await;
    let addr = g.addr;
    let client = tokio::spawn(async move {
        python(
            addr,
            2,
            "assert r.get('plain') == 'hello'\nassert r.delete('plain') == 1\nassert r.get('plain') is None",
        )
        .await
    });
    let reviews = g.pipeline.reviews().clone();
    let pending = support::pending_review(&reviews).await;
    assert!(
        pending.command_text.contains("DEL plain"),
        "{:?}",
        pending.command_text
    );
    support::approve(&reviews, pending.id, "ops").await.unwrap();
    let out = client.await.unwrap();
    assert!(
        text(&out.stdout).contains("DONE"),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    let ev = events(g.audit_dir.path(), &g.keys);
    assert!(
        ev.iter()
            .any(|e| matches!(e, AuditEventKind::ReviewRequested { .. }))
    );
}

/// A client that leaves while its DEL waits for review gives up the wait: the review is
/// cancelled on record, a reviewer can no longer approve it, and the key stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delete_whose_client_leaves_is_cancelled_and_never_runs() {
    let g = gateway().await;
    let mut client = tokio::process::Command::new("redis-cli");
    client
        .args(["-h", "127.0.0.1", "-p", &g.addr.port().to_string()])
        .args(["--no-auth-warning", "-a", "tok-agent", "DEL", "plain"]);
    let events =
        support::abandon_held(&g.pipeline, g.audit_dir.path(), &g.keys, client, "ops").await;
    assert_eq!(g.direct(&["GET", "plain"]).trim(), "hello");
    assert_eq!(
        support::end_reasons(&events),
        [wirewarden::core::SessionEndReason::ClientClosed]
    );
}

/// Commands a client sends while an earlier one waits for review are kept: once the held
/// one is approved and has run, they run after it, and the replies come in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_while_one_is_held_run_after_it_in_order() {
    use wirewarden_redis::Value;
    let g = gateway().await;
    let mut raw = Raw::connect(g.addr).await;
    assert_eq!(
        bulk(&raw.call(&["AUTH", "agent", "tok-agent"]).await).as_deref(),
        Some("OK")
    );
    raw.send(&["DEL", "plain"]).await;
    let reviews = g.pipeline.reviews().clone();
    let pending = support::pending_review(&reviews).await;
    raw.send(&["GET", "plain"]).await;
    raw.send(&["SET", "after", "1"]).await;
    raw.send(&["GET", "after"]).await;
    support::approve(&reviews, pending.id, "ops").await.unwrap();
    assert_eq!(raw.reply().await, Value::Integer(1));
    assert_eq!(raw.reply().await, Value::NullBulkString);
    assert_eq!(bulk(&raw.reply().await).as_deref(), Some("OK"));
    assert_eq!(bulk(&raw.reply().await).as_deref(), Some("1"));
}

/// A session ends when the credential it logged in with expires, with no command from its
/// client: here one waits for review, and is refused rather than run; then the connection
/// closes, the review is cancelled, and the end is on record as `credential_expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_credential_expires() {
    use tokio::io::AsyncReadExt;
    let g = gateway().await;
    let mut raw = Raw::connect(g.addr).await;
    assert_eq!(
        bulk(&raw.call(&["AUTH", "brief", "tok-brief"]).await).as_deref(),
        Some("OK")
    );
    assert_eq!(
        bulk(&raw.call(&["GET", "plain"]).await).as_deref(),
        Some("hello")
    );
    raw.send(&["DEL", "plain"]).await;
    let reviews = g.pipeline.reviews().clone();
    let pending = support::pending_review(&reviews).await;
    let held = raw.reply().await;
    assert!(
        matches!(&held, wirewarden_redis::Value::SimpleError(e) if text(e).contains("expired")),
        "{held:?}"
    );
    let events = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |events| {
        !support::end_reasons(events).is_empty() && support::review_cancelled(events, pending.id)
    })
    .await;
    let ended = events.iter().find_map(|e| match &e.kind {
        AuditEventKind::SessionEnded {
            reason, commands, ..
        } => Some((reason.clone(), *commands)),
        _ => None,
    });
    assert_eq!(
        ended,
        Some((wirewarden::core::SessionEndReason::CredentialExpired, 2))
    );
    // The gateway closed the connection.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), raw.stream.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .unwrap();
    assert_eq!(n, 0, "{rest:?}");
    assert_eq!(g.direct(&["GET", "plain"]).trim(), "hello");
}

/// A command the gateway forwarded but whose reply never came, because the session ended
/// first (here a blocking `BLPOP` when the credential expires), has its outcome on record
/// as unknown: every intent has an outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_flight_when_the_session_ends_has_its_outcome_on_record() {
    let g = gateway().await;
    let mut raw = Raw::connect(g.addr).await;
    assert_eq!(
        bulk(&raw.call(&["AUTH", "brief", "tok-brief"]).await).as_deref(),
        Some("OK")
    );
    raw.send(&["BLPOP", "nothing-ever", "0"]).await;
    let events = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |events| {
        !support::end_reasons(events).is_empty()
    })
    .await;
    assert_eq!(
        support::end_reasons(&events),
        [wirewarden::core::SessionEndReason::CredentialExpired]
    );
    let outcome = support::outcome_error(&events, |command| command.verb == "BLPOP");
    assert!(
        matches!(&outcome, Some(Some(e)) if e.contains("session ended before")),
        "{outcome:?}"
    );
}

/// An `AUTH` on an open connection with a fresh token of the same agent renews the
/// session's credential, on record: the session outlives the token it logged in with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_credential_renews_the_session() {
    let g = gateway().await;
    // The first token expires at most BRIEF from here.
    let expired_by = tokio::time::Instant::now() + BRIEF + Duration::from_millis(500);
    let mut raw = Raw::connect(g.addr).await;
    assert_eq!(
        bulk(&raw.call(&["AUTH", "brief", "tok-brief"]).await).as_deref(),
        Some("OK")
    );
    raw.send(&["GET", "plain"]).await;
    raw.send(&["AUTH", "fresh", "tok-fresh"]).await;
    assert_eq!(bulk(&raw.reply().await).as_deref(), Some("hello"));
    assert_eq!(bulk(&raw.reply().await).as_deref(), Some("OK"));
    // Another identity's token is still refused.
    let other = raw.call(&["AUTH", "other", "tok-other"]).await;
    assert!(
        matches!(&other, wirewarden_redis::Value::SimpleError(_)),
        "{other:?}"
    );
    tokio::time::sleep_until(expired_by).await;
    assert_eq!(
        bulk(&raw.call(&["GET", "plain"]).await).as_deref(),
        Some("hello")
    );
    let events = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |events| {
        events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandDecided { .. }))
            .count()
            == 2
    })
    .await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, AuditEventKind::SessionEnded { .. })),
        "{events:?}"
    );
    // In order: the first GET's intent, the renewal (no expiry now), the second GET's.
    let order: Vec<&str> = events
        .iter()
        .map(|e| e.kind.name())
        .filter(|n| *n == "command_decided" || *n == "credential_renewed")
        .collect();
    assert_eq!(
        order,
        ["command_decided", "credential_renewed", "command_decided"]
    );
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        AuditEventKind::CredentialRenewed { principal }
            if principal.subject == "agent-4" && principal.expires_at.is_none()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_from_the_first_byte() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let tls = wirewarden::tls::server_config(chain, key).unwrap();
    let g = gateway_with(|t| t.tls = Some(tls), |sink| sink).await;
    let script = format!(
        "import os, redis\nr = redis.Redis(host='127.0.0.1', port={}, password='tok-agent', ssl=True, ssl_ca_certs='{}', ssl_check_hostname=False, decode_responses=True)\nv = r.get('card')\nassert v.startswith('card ') and '{CARD}' not in v, v\nprint('DONE')\n",
        g.addr.port(),
        ca.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", &script])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        text(&out.stdout).contains("DONE"),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Plaintext is refused.
    let out = cli(g.addr, &["-a", "tok-agent"], "GET plain\n").await;
    assert!(!text(&out.stdout).contains("hello"));
    let ev = events(g.audit_dir.path(), &g.keys);
    assert!(
        ev.iter()
            .any(|e| matches!(e, AuditEventKind::SessionStarted { tls: true, .. }))
    );
}

/// Hostile bytes get the server's protocol error, not a crash, and other sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_protocol_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = gateway().await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"AUTH tok-agent\r\n*1\r\n+GET\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let got = text(&got);
    assert!(got.starts_with("+OK\r\n-ERR Protocol error"), "{got}");
    let out = cli(g.addr, &["-a", "tok-agent"], "GET plain\n").await;
    assert_eq!(text(&out.stdout).trim(), "hello");

    // RESET would log the gateway out upstream: refused. QUIT is answered after the replies
    // before it, and nothing after it runs.
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"AUTH tok-agent\r\nRESET\r\nGET plain\r\nQUIT\r\nDEL plain\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let got = text(&got);
    assert!(got.starts_with("+OK\r\n-ERR wirewarden: RESET"), "{got}");
    assert!(
        got.ends_with("(rule redis-reset)\r\n$5\r\nhello\r\n+OK\r\n"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_intent_cannot_be_recorded_is_refused() {
    let g = gateway_with(|_| {}, |s| Arc::new(support::RefuseIntents(s))).await;
    let out = cli(
        g.addr,
        &["-a", "tok-agent"],
        "SET plain changed\nGET plain\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.matches("audit trail is unavailable").count(),
        2,
        "{stdout}"
    );
    assert_eq!(g.direct(&["GET", "plain"]).trim(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_authenticates_is_disconnected() {
    use tokio::io::AsyncReadExt;
    let g = gateway_with(
        |t| t.login_timeout = Duration::from_millis(300),
        |sink| sink,
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway closed the idle connection");
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exfiltration_budget_stops_the_next_read() {
    let g = gateway().await;
    let out = cli(
        g.addr,
        &["-a", "tok-budget"],
        "LRANGE list 0 -1\nLRANGE list 0 -1\nLRANGE list 0 -1\n",
    )
    .await;
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    // 2 elements, then 2 more (4 > 3: the command that crosses completes), then refused.
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(&lines[..4], ["a", "b", "a", "b"], "{stdout}");
    assert!(lines[4].contains("budget"), "{stdout}");
}

/// One RESP connection spoken by hand, for handshakes no client library sends as is.
struct Raw {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    decoder: wirewarden_redis::ReplyDecoder,
    version: wirewarden_redis::RespVersion,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: bytes::BytesMut::new(),
            decoder: wirewarden_redis::ReplyDecoder::new(wirewarden_redis::Limits::default()),
            version: wirewarden_redis::RespVersion::Resp2,
        }
    }

    /// Sends one command and reads its reply.
    async fn call(&mut self, args: &[&str]) -> wirewarden_redis::Value {
        self.send(args).await;
        self.reply().await
    }

    /// Sends one command.
    async fn send(&mut self, args: &[&str]) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        wirewarden_redis::encode_args(&args, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Reads the next reply.
    async fn reply(&mut self) -> wirewarden_redis::Value {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf, self.version).unwrap() {
                return frame.value().unwrap();
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("a reply")
                    .unwrap();
            assert!(n > 0, "the gateway closed the connection");
        }
    }
}

fn bulk(v: &wirewarden_redis::Value) -> Option<String> {
    match v {
        wirewarden_redis::Value::BulkString(b) | wirewarden_redis::Value::SimpleString(b) => {
            Some(text(b))
        }
        _ => None,
    }
}

/// `HELLO 3 AUTH <user> <token> SETNAME <name>`: the handshake that authenticates also names
/// the client, the name reaches the server (`CLIENT GETNAME`), and the audit trail records it
/// as the session's application, as `application_name` is for PostgreSQL. A name the server
/// would refuse is refused before the login, and the connection stays unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_setname_names_the_session() {
    use wirewarden_redis::{RespVersion, Value};
    let g = gateway().await;
    let name = "agent_run=5e1f_call=call_cache";
    let mut c = Raw::connect(g.addr).await;
    c.version = RespVersion::Resp3;
    let hello = c
        .call(&["HELLO", "3", "AUTH", "agent", "tok-agent", "SETNAME", name])
        .await;
    let Value::Map(pairs) = &hello else {
        panic!("HELLO 3 answers a map: {hello:?}")
    };
    assert!(
        pairs
            .iter()
            .any(|(k, v)| bulk(k).as_deref() == Some("proto") && *v == Value::Integer(3)),
        "{hello:?}"
    );
    let got = c.call(&["CLIENT", "GETNAME"]).await;
    assert_eq!(bulk(&got).as_deref(), Some(name), "{got:?}");
    assert_eq!(
        bulk(&c.call(&["GET", "plain"]).await).as_deref(),
        Some("hello")
    );
    drop(c);

    // Spaces are not allowed in client names: refused as the server refuses them, before
    // the token is even checked; the connection is still unauthenticated.
    let mut bad = Raw::connect(g.addr).await;
    let refused = bad
        .call(&["HELLO", "2", "AUTH", "agent", "tok-agent", "SETNAME", "a b"])
        .await;
    assert!(
        matches!(&refused, Value::SimpleError(e) if text(e).contains("Client names cannot contain spaces")),
        "{refused:?}"
    );
    let noauth = bad.call(&["GET", "plain"]).await;
    assert!(
        matches!(&noauth, Value::SimpleError(e) if text(e).starts_with("NOAUTH")),
        "{noauth:?}"
    );
    drop(bad);

    // The same through redis-py, with the HELLO as the connection's first command (how the
    // example agent connects), in RESP2.
    let out = python(
        g.addr,
        2,
        &format!(
            "c = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), single_connection_client=True, driver_info=None, protocol=2, decode_responses=True)\nc.execute_command('HELLO', 2, 'AUTH', 'agent', 'tok-agent', 'SETNAME', 'py_{name}')\nassert c.client_getname() == 'py_{name}'\nassert c.get('plain') == 'hello'\nc.close()"
        ),
    )
    .await;
    assert!(
        text(&out.stdout).contains("DONE"),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    let ev = events(g.audit_dir.path(), &g.keys);
    let applications: Vec<Option<&str>> = ev
        .iter()
        .filter_map(|e| match e {
            AuditEventKind::SessionStarted {
                principal,
                application,
                ..
            } if principal.subject == "agent-1" => Some(application.as_deref()),
            _ => None,
        })
        .collect();
    let py = format!("py_{name}");
    assert!(applications.contains(&Some(name)), "{applications:?}");
    assert!(
        applications.contains(&Some(py.as_str())),
        "{applications:?}"
    );
    // The refused HELLO opened no session.
    assert!(
        !applications
            .iter()
            .any(|a| a.is_some_and(|a| a.contains(' ')))
    );
}

/// A connection renamed mid-session (`CLIENT SETNAME`, `HELLO … SETNAME`; redis-py's
/// `client_setname`) ties the commands after it to the new name: the `ApplicationChanged`
/// record goes with the renaming command's intent, before any later command's. A name the
/// server refuses, or the name the session already has, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_connection_ties_later_commands_to_the_new_name() {
    use wirewarden_redis::Value;
    let g = gateway().await;
    let mut c = Raw::connect(g.addr).await;
    assert_eq!(
        c.call(&["AUTH", "agent", "tok-agent"]).await,
        Value::SimpleString(bytes::Bytes::from_static(b"OK"))
    );
    let ok = Value::SimpleString(bytes::Bytes::from_static(b"OK"));
    c.call(&["GET", "plain"]).await;
    assert_eq!(c.call(&["CLIENT", "SETNAME", "run=1_call=a"]).await, ok);
    c.call(&["GET", "plain"]).await;
    assert_eq!(c.call(&["CLIENT", "SETNAME", "run=1_call=a"]).await, ok);
    let refused = c.call(&["CLIENT", "SETNAME", "run=1 call=b"]).await;
    assert!(matches!(refused, Value::SimpleError(_)), "{refused:?}");
    c.call(&["GET", "plain"]).await;
    let hello = c.call(&["HELLO", "2", "SETNAME", "run=1_call=c"]).await;
    assert!(matches!(hello, Value::Array(_)), "{hello:?}");
    c.call(&["GET", "plain"]).await;
    assert_eq!(c.call(&["CLIENT", "SETNAME", ""]).await, ok);
    c.call(&["GET", "plain"]).await;
    drop(c);

    // redis-py's client_setname, on a pooled connection reused by two "tool calls".
    let out = python(
        g.addr,
        2,
        "c = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), username='agent', password='tok-agent', single_connection_client=True, protocol=2, decode_responses=True)\nfor call in ('x', 'y'):\n    c.client_setname('run=2_call=' + call)\n    assert c.get('plain') == 'hello'\nc.close()",
    )
    .await;
    assert!(
        text(&out.stdout).contains("DONE"),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    let changes: Vec<Option<String>> = kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::ApplicationChanged { application } => Some(application.clone()),
            _ => None,
        })
        .collect();
    let gets: Vec<Option<String>> = support::applications_at_decision(&kinds)
        .into_iter()
        .filter(|(command, _)| command.verb == "GET")
        .map(|(_, app)| app)
        .collect();
    let name = |n: &str| Some(n.to_owned());
    assert_eq!(
        changes,
        [
            name("run=1_call=a"),
            name("run=1_call=c"),
            None,
            name("run=2_call=x"),
            name("run=2_call=y")
        ],
        "{kinds:?}"
    );
    assert_eq!(
        gets,
        [
            None,
            name("run=1_call=a"),
            name("run=1_call=a"),
            name("run=1_call=c"),
            None,
            name("run=2_call=x"),
            name("run=2_call=y")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_counted_and_on_record() {
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let g = gateway_with(|t| t.upstream.addr = closed.to_string(), |sink| sink).await;
    let out = cli(g.addr, &["-a", "tok-agent"], "GET plain\n").await;
    // redis-cli reports the refused `AUTH` on stderr.
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("wirewarden could not reach the upstream server"),
        "{said}"
    );
    // redis-cli tries again for the command it was given, so one or two sessions failed.
    let metrics = g.pipeline.metrics();
    let failures = metrics
        .upstream_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=2).contains(&failures), "{failures}");
    assert!(
        metrics
            .render_prometheus()
            .contains(&format!("wirewarden_upstream_failures_total {failures}\n"))
    );
    g.pipeline.audit_sink().flush().await.unwrap();
    let recorded = events(g.audit_dir.path(), &g.keys);
    assert!(
        recorded.iter().any(|k| matches!(
            k,
            AuditEventKind::ProtocolError { error, .. }
                if error.contains("connection or login failed")
                    && error.contains(&closed.to_string())
        )),
        "{recorded:?}"
    );
    assert!(
        !recorded
            .iter()
            .any(|k| matches!(k, AuditEventKind::SessionStarted { .. })),
        "no session starts without an upstream"
    );

    // A client refused before it logged in, whose session then could not start: what it
    // was refused is on record all the same.
    let got = exchange(
        g.addr,
        b"PING\r\nAUTH tok-agent\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(got.starts_with("-NOAUTH "), "{got}");
    assert!(got.contains("could not reach the upstream"), "{got}");
    let recorded = kinds_when(g.audit_dir.path(), &g.keys, |k| {
        k.iter().any(|k| matches!(
            k,
            AuditEventKind::ProtocolError { error, .. }
                if error.contains("1 request refused before authentication: PING")
                    && error.contains("logged in as agent-1")
                    && error.ends_with("the session did not start: the upstream could not be reached")
        ))
    })
    .await;
    assert!(!recorded.is_empty());
    assert_eq!(
        metrics
            .refused_before_login
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A key rule covers a value of its key whichever command returns it: commands that read
/// several keys (`SUNION`, `LMOVE`, `LMPOP`, `XREAD`) return values whose key the reply does
/// not say, so a rule on any of their keys masks the whole reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rule_covers_commands_that_read_several_keys() {
    let g = gateway().await;
    g.direct(&["SADD", "secret:set", "hunter2-in-a-set"]);
    g.direct(&["SADD", "plain:set", "visible"]);
    g.direct(&["RPUSH", "secret:list", "hunter2-first", "hunter2-second"]);
    g.direct(&[
        "XADD",
        "secret:stream",
        "1-1",
        "token",
        "hunter2-in-a-stream",
    ]);
    let out = cli(
        g.addr,
        &["-a", "tok-agent"],
        "SUNION plain:set secret:set\nLMOVE secret:list secret:moved LEFT RIGHT\nLMPOP 2 list secret:list LEFT\nXREAD COUNT 5 STREAMS secret:stream 0\nSMEMBERS plain:set\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("[REDACTED]"), "{stdout}");
    // A set no rule covers, read alone, is as it is.
    assert!(stdout.lines().last() == Some("visible"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Rules for the subscription tests: `alerts` under the strict profile; any other
/// subscription is held for review, which a grant stands in for.
const STREAM_RULES: &str = r#"
[[rule]]
id = "alerts-strict"
groups = ["agents"]
verbs = ["SUBSCRIBE"]
channels = ["alerts"]
action = "allow"
mask_profile = "strict"

[[rule]]
id = "feeds-need-a-grant"
verbs = ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"]
action = "review"
reviewers = ["ops"]
timeout = "20s"

[[budget]]
id = "stream"
groups = ["streaming"]
max_rows = 12
window = "1h"
"#;

/// A redis-py script for the subscription tests: `direct` publishes straight to the server,
/// `r` is the agent's client through the gateway. After `body`, it publishes a tick on
/// `feed` every 0.2 s and prints how many reached the client before the session ended.
fn stream_script(g: &Gateway, body: &str) -> String {
    format!(
        r#"
import time
direct = redis.Redis(host='127.0.0.1', port={port}, username='{user}', password='{password}', decode_responses=True)
ps = r.pubsub()
{body}
ps.subscribe('feed')
m = ps.get_message(timeout=5)
assert m and m['type'] == 'subscribe' and m['channel'] == 'feed', m
ticks = 0
try:
    for i in range(150):
        direct.publish('feed', f'tick {{i}}')
        m = ps.get_message(timeout=0.2)
        if m and m['type'] == 'message' and m['channel'] == 'feed':
            ticks += 1
        time.sleep(0.2)
    print('never withdrawn after', ticks)
except Exception as e:
    print('withdrawn after', ticks, type(e).__name__, str(e).replace('\n', ' '))
"#,
        port = g._redis.addr().port(),
        user = g._redis.user(),
        password = g._redis.password(),
    )
}

/// Waits for the session's end to be on record, and checks that the subscription of
/// `channel` ended it under `rule` and that the trail verifies.
async fn assert_withdrawn(g: &Gateway, channel: &str, rule: &str) {
    let kinds = kinds_when(g.audit_dir.path(), &g.keys, |k| withdrawn(k).is_some()).await;
    assert_eq!(
        withdrawn(&kinds),
        Some((subscribed(&kinds, channel), rule.to_owned()))
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// The id of the `SUBSCRIBE` of `channel`.
fn subscribed(kinds: &[AuditEventKind], channel: &str) -> wirewarden::core::CommandId {
    kinds
        .iter()
        .find_map(|k| match k {
            AuditEventKind::CommandDecided {
                command_id,
                command,
                ..
            } if command.verb == "SUBSCRIBE" && command.text.contains(channel) => Some(*command_id),
            _ => None,
        })
        .expect("the subscription was decided")
}

/// A subscription runs under the decision that allowed it: its messages are masked with
/// that decision's profile (the session's default used to mask them), recorded in the
/// trail as the command's transcript (they used not to be recorded at all), and once a
/// grant the decision relied on has expired, the decision is taken again: refused now, the
/// session ends, on record, as a server ends a client whose permissions were withdrawn.
async fn subscriptions_run_under_their_decision(protocol: u8) {
    let g = gateway_with_rules(STREAM_RULES, |_| {}, |s| s).await;
    let grant = support::read_grant("agent-1", "cache", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let script = stream_script(
        &g,
        r#"
ps.subscribe('alerts')
m = ps.get_message(timeout=5)
assert m and m['type'] == 'subscribe', m
direct.publish('alerts', 'project bluebird, ssn 123-45-6789')
m = ps.get_message(timeout=5)
print('alerts:', m['data'])
"#,
    );
    let out = python(g.addr, protocol, &script).await;
    let stdout = text(&out.stdout);
    let alerts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("alerts: "))
        .unwrap_or_else(|| panic!("stdout: {stdout}\nstderr: {}", text(&out.stderr)));
    assert!(alerts.starts_with("project "), "{alerts}");
    assert!(
        !alerts.contains("bluebird") && !alerts.contains(SSN),
        "{alerts}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("withdrawn after "))
        .unwrap_or_else(|| panic!("stdout: {stdout}\nstderr: {}", text(&out.stderr)));
    let ticks: u32 = line.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(ticks >= 1, "{line}");
    // The client is told why, then the connection closes.
    assert!(
        line.contains("subscription withdrawn") && line.contains("(rule feeds-need-a-grant)"),
        "{line}"
    );
    let kinds = kinds_when(g.audit_dir.path(), &g.keys, |k| withdrawn(k).is_some()).await;
    let (ended, rule) = withdrawn(&kinds).unwrap();
    assert_eq!(ended, subscribed(&kinds, "feed"));
    assert_eq!(rule, "feeds-need-a-grant");
    let feed = transcripts(&kinds, ended);
    assert!(feed.len() >= ticks as usize, "{feed:?}");
    assert!(feed.iter().all(|t| t.contains("tick")), "{feed:?}");
    let alerts = transcripts(&kinds, subscribed(&kinds, "alerts"));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].contains("project") && !alerts[0].contains("bluebird"),
        "{alerts:?}"
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_run_under_their_decision_resp2() {
    subscriptions_run_under_their_decision(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_run_under_their_decision_resp3() {
    subscriptions_run_under_their_decision(3).await;
}

/// A grant revoked while its subscription streams stops the stream at the first message
/// after the target's `stream_recheck` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_ends_its_subscription() {
    let g = gateway_with_rules(
        STREAM_RULES,
        |t| t.stream_recheck = Duration::from_millis(200),
        |s| s,
    )
    .await;
    let grant = support::read_grant("agent-1", "cache", Duration::from_secs(3600));
    let id = grant.id;
    g.pipeline.grants().issue(grant).await.unwrap();
    let script = stream_script(&g, "");
    let addr = g.addr;
    let client = tokio::spawn(async move { python(addr, 3, &script).await });
    // Once ticks are coming through, the grant is revoked.
    let p = g.pipeline.clone();
    support::events_when(&p, g.audit_dir.path(), &g.keys, |events| {
        events.iter().any(
            |e| matches!(&e.kind, AuditEventKind::Transcript { text, .. } if text.contains("tick")),
        )
    })
    .await;
    g.pipeline
        .grants()
        .revoke(id, "ops-lead", Timestamp::now())
        .await
        .unwrap();
    let out = client.await.unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("withdrawn after "),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert_withdrawn(&g, "feed", "feeds-need-a-grant").await;
}

/// A subscription that brings no message still ends when the grant that allowed it does,
/// as Redis ends a client whose channel permissions an ACL change withdrew: the gateway
/// takes the decision again on time, not at the next message (which may never come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_ends_with_its_grant() {
    let g = gateway_with_rules(STREAM_RULES, |_| {}, |s| s).await;
    let grant = support::read_grant("agent-1", "cache", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let script = r#"
ps = r.pubsub()
ps.subscribe('feed', 'news')
for _ in range(2):
    m = ps.get_message(timeout=5)
    assert m and m['type'] == 'subscribe', m
try:
    for _ in range(60):
        m = ps.get_message(timeout=0.5)
        assert m is None, m
    print('never withdrawn')
except Exception as e:
    print('withdrawn:', type(e).__name__, str(e).replace('\n', ' '))
"#;
    let out = python(g.addr, 2, script).await;
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("withdrawn: "))
        .unwrap_or_else(|| panic!("stdout: {stdout}\nstderr: {}", text(&out.stderr)));
    assert!(
        line.contains("subscription withdrawn") && line.contains("(rule feeds-need-a-grant)"),
        "{line}"
    );
    let kinds = kinds_when(g.audit_dir.path(), &g.keys, |k| withdrawn(k).is_some()).await;
    let subscribe = subscribed(&kinds, "feed");
    assert_eq!(subscribe, subscribed(&kinds, "news"));
    assert_eq!(
        withdrawn(&kinds),
        Some((subscribe, "feeds-need-a-grant".to_owned()))
    );
    // Nothing was published: nothing was relayed.
    assert!(transcripts(&kinds, subscribe).is_empty());
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Published messages count against the exfiltration budgets as what their subscription
/// returned: once the budget is spent, the subscription is refused at its next decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_spend_the_budget_of_their_subscriber() {
    let g = gateway_with_rules(
        STREAM_RULES,
        |t| t.stream_recheck = Duration::from_millis(100),
        |s| s,
    )
    .await;
    let script = format!(
        r#"
import time
s = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), username='streamer', password='tok-streamer', protocol=int(os.environ['PROTO']), decode_responses=True, socket_timeout=20)
direct = redis.Redis(host='127.0.0.1', port={port}, username='{user}', password='{password}', decode_responses=True)
ps = s.pubsub()
ps.subscribe('alerts')
m = ps.get_message(timeout=5)
assert m and m['type'] == 'subscribe', m
ticks = 0
try:
    for i in range(100):
        direct.publish('alerts', f'tick {{i}}')
        m = ps.get_message(timeout=0.2)
        if m and m['type'] == 'message':
            ticks += 1
        time.sleep(0.15)
    print('never withdrawn after', ticks)
except Exception as e:
    print('withdrawn after', ticks, str(e))
"#,
        port = g._redis.addr().port(),
        user = g._redis.user(),
        password = g._redis.password(),
    );
    let out = python(g.addr, 3, &script).await;
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("withdrawn after "))
        .unwrap_or_else(|| panic!("stdout: {stdout}\nstderr: {}", text(&out.stderr)));
    let ticks: u32 = line.split(' ').nth(2).unwrap().parse().unwrap();
    // The budget is 12 rows; the subscription's confirmation spent some of it.
    assert!((1..12).contains(&ticks), "{line}");
    assert!(line.contains("(rule budget:stream)"), "{line}");
    assert_withdrawn(&g, "alerts", "budget:stream").await;
}

/// A subscription opened inside `MULTI` would be confirmed in `EXEC`'s reply, where its
/// messages could not be tied to the decision they must go out under: it is refused at
/// queue time, and the transaction fails as the server fails one with a refused command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_inside_multi_is_refused() {
    let g = gateway().await;
    let out = cli(
        g.addr,
        &["-a", "tok-agent"],
        "MULTI\nSET tx 1\nSUBSCRIBE news\nEXEC\nGET tx\nPING\n",
    )
    .await;
    let stdout = text(&out.stdout);
    // redis-cli prints a nil as an empty line, and one after each error.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[0], "OK", "{stdout}");
    assert_eq!(lines[1], "QUEUED", "{stdout}");
    assert!(
        lines[2].contains("(rule redis-subscribe-in-multi)"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("EXECABORT"), "{stdout}");
    assert_eq!(lines[4], "PONG", "{stdout}");
    // Nothing of the transaction ran.
    assert_eq!(g.direct(&["EXISTS", "tx"]).trim(), "0");
}

/// Sends `bytes` on a fresh connection and reads what comes back until the gateway closes
/// the connection or `wait` passes.
async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut got)).await;
    text(&got)
}

/// Inside `EXEC` the server answers `UNSUBSCRIBE a b` with one reply per channel while
/// `EXEC` counts one per command: the next command's value came after the array, was taken
/// for the reply of the command after `EXEC` and masked under that command's key (no rule),
/// so a `secret:*` value went out in clear. Unsubscribing inside `MULTI` is refused now, in
/// RESP2 and RESP3, and the commands after the transaction get their own replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_inside_multi_is_refused_and_replies_stay_in_step() {
    let g = gateway().await;
    g.direct(&["HSET", "secret:h", "token", "hunter2-in-a-hash"]);
    let got = exchange(
        g.addr,
        b"AUTH tok-agent\r\nMULTI\r\nUNSUBSCRIBE a b\r\nGET secret:api\r\nEXEC\r\nXREAD BLOCK 2000 STREAMS nosuchstream $\r\nGET plain\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!got.contains("hunter2"), "{got}");
    assert!(
        got.starts_with("+OK\r\n+OK\r\n-ERR wirewarden: subscribing or unsubscribing inside MULTI"),
        "{got}"
    );
    assert!(
        got.ends_with(
            "(rule redis-subscribe-in-multi)\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n*-1\r\n$5\r\nhello\r\n"
        ),
        "{got}"
    );
    let got = exchange(
        g.addr,
        b"HELLO 3 AUTH agent tok-agent\r\nMULTI\r\nPUNSUBSCRIBE a b\r\nHGETALL secret:h\r\nEXEC\r\nXREAD BLOCK 2000 STREAMS nosuchstream $\r\nGET plain\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!got.contains("hunter2"), "{got}");
    assert!(
        got.contains("(rule redis-subscribe-in-multi)\r\n+QUEUED\r\n-EXECABORT"),
        "{got}"
    );
    assert!(got.ends_with("_\r\n$5\r\nhello\r\n"), "{got}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A piece of a value passes every content detector, since a piece of a card number or of
/// a JSON document matches nothing: `GETRANGE card 5 12` used to read a card number out in
/// clear, eight digits at a time. Partial reads are refused by default before policy; a
/// target whose values need no masking can allow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_reads_are_refused_by_default() {
    use wirewarden::redis::{DEFAULT_REFUSED_RISKS, Risk};
    let g = gateway().await;
    let mut raw = Raw::connect(g.addr).await;
    assert_eq!(
        bulk(&raw.call(&["AUTH", "tok-agent"]).await).as_deref(),
        Some("OK")
    );
    for command in [
        &["GETRANGE", "card", "5", "12"][..],
        &["SUBSTR", "ssn", "4", "6"],
        &["GETBIT", "card", "41"],
        &["BITFIELD", "card", "GET", "u8", "40"],
        &["BITFIELD_RO", "card", "GET", "u8", "40"],
        &["BITPOS", "card", "1", "5", "5"],
        &["BITCOUNT", "card", "41", "41", "BIT"],
        &["LCS", "card", "ssn"],
    ] {
        match raw.call(command).await {
            wirewarden_redis::Value::SimpleError(e) => {
                let e = text(&e);
                assert!(
                    e.contains("partial_value") && e.ends_with("(rule redis-risk)"),
                    "{command:?}: {e}"
                );
            }
            other => panic!("{command:?}: {other:?}"),
        }
    }
    assert_eq!(
        bulk(&raw.call(&["GET", "plain"]).await).as_deref(),
        Some("hello")
    );
    let g = gateway_with(
        |t| t.refused_risks = DEFAULT_REFUSED_RISKS.without(Risk::PARTIAL_VALUE),
        |s| s,
    )
    .await;
    let out = cli(g.addr, &["-a", "tok-agent"], "GETRANGE plain 0 1\n").await;
    assert_eq!(text(&out.stdout).trim(), "he");
}

/// A write that reads some keys and writes others moved values out of the key rule that
/// masks them: `BITOP OR pubcopy secret:api` then `GET pubcopy` read the value in clear.
/// Data may only move between keys the session's mask profile treats alike: out of
/// `secret:*` is refused (in a transaction too), within it and between unmasked keys is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_do_not_copy_values_out_of_their_mask() {
    let g = gateway().await;
    g.direct(&["RPUSH", "secret:list", "hunter2-first", "hunter2-second"]);
    g.direct(&["SADD", "secret:set", "hunter2-in-a-set"]);
    g.direct(&["ZADD", "secret:z", "1", "hunter2-in-a-zset"]);
    g.direct(&["SADD", "plain:set", "visible"]);
    let refused = [
        "BITOP OR pubcopy secret:api",
        "LMOVE secret:list publist LEFT LEFT",
        "RPOPLPUSH secret:list publist",
        "SMOVE secret:set pubset hunter2-in-a-set",
        "RENAME secret:api pubkey",
        "RENAMENX secret:api pubkey",
        "SUNIONSTORE pubset plain:set secret:set",
        "SINTERSTORE pubset secret:set",
        "SDIFFSTORE pubset secret:set",
        "ZUNIONSTORE pubz 1 secret:z",
        "ZRANGESTORE pubz secret:z 0 -1",
        "PFMERGE pubhll secret:api",
    ];
    let mut script = refused.join("\n");
    script.push_str(
        "\nMULTI\nBITOP OR pubcopy secret:api\nEXEC\nGET pubcopy\nLRANGE publist 0 -1\n\
         LMOVE secret:list secret:other LEFT LEFT\nSUNIONSTORE plain:copy plain:set\n\
         BITOP OR secret:new plain\n",
    );
    let out = cli(g.addr, &["-a", "tok-agent"], &script).await;
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    for (i, command) in refused.iter().enumerate() {
        assert!(
            lines[i].ends_with("(rule redis-copy-across-mask)"),
            "{command}: {stdout}"
        );
    }
    let rest = &lines[refused.len()..];
    assert_eq!(rest[0], "OK", "{stdout}");
    assert!(
        rest[1].ends_with("(rule redis-copy-across-mask)"),
        "{stdout}"
    );
    assert!(rest[2].starts_with("EXECABORT"), "{stdout}");
    // GET pubcopy and LRANGE publist print empty lines; LMOVE within `secret:*` runs, masked.
    assert_eq!(rest[3], "[REDACTED]", "{stdout}");
    assert_eq!(rest[4], "1", "{stdout}");
    // Into `secret:*` runs (its reply, a length, is masked by the key rule to a nil).
    assert_eq!(rest.len(), 5, "{stdout}");
    assert_eq!(g.direct(&["GET", "secret:new"]).trim(), "hello");
    for key in ["pubcopy", "publist", "pubset", "pubkey", "pubz", "pubhll"] {
        assert_eq!(g.direct(&["EXISTS", key]).trim(), "0", "{key}");
    }
    assert_eq!(g.direct(&["EXISTS", "secret:api"]).trim(), "1");
    assert_eq!(g.direct(&["LLEN", "secret:other"]).trim(), "1");
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert!(kinds.iter().any(|k| matches!(
        k,
        AuditEventKind::CommandDecided { decision: Decision::Deny { rule, .. }, .. }
            if rule.as_str() == "redis-copy-across-mask"
    )));
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// An ordinary command's reply that reads like a pub/sub confirmation
/// (`COMMAND GETKEYS MSET unsubscribe 1 feed 1` answers `unsubscribe`, `feed`) used to drop
/// the subscription's record: its messages then went out under the session's profile and a
/// revoked grant no longer ended it. Only the correlator's confirmations count now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_reads_like_an_unsubscribe_does_not_end_a_subscription() {
    let g = gateway_with_rules(
        STREAM_RULES,
        |t| t.stream_recheck = Duration::from_millis(200),
        |s| s,
    )
    .await;
    let grant = support::read_grant("agent-1", "cache", Duration::from_secs(3600));
    let id = grant.id;
    g.pipeline.grants().issue(grant).await.unwrap();
    let mut raw = Raw::connect(g.addr).await;
    raw.version = wirewarden_redis::RespVersion::Resp3;
    let hello = raw
        .call(&["HELLO", "3", "AUTH", "agent", "tok-agent"])
        .await;
    assert!(
        matches!(hello, wirewarden_redis::Value::Map(_)),
        "{hello:?}"
    );
    let confirmed = raw.call(&["SUBSCRIBE", "feed"]).await;
    assert!(
        matches!(confirmed, wirewarden_redis::Value::Push(_)),
        "{confirmed:?}"
    );
    let keys = raw
        .call(&[
            "COMMAND",
            "GETKEYS",
            "MSET",
            "unsubscribe",
            "1",
            "feed",
            "1",
        ])
        .await;
    assert!(
        matches!(&keys, wirewarden_redis::Value::Array(k) if k.len() == 2),
        "{keys:?}"
    );
    g.pipeline
        .grants()
        .revoke(id, "ops-lead", Timestamp::now())
        .await
        .unwrap();
    // The subscription is still on record: its decision is taken again, and ends it.
    let ended = raw.reply().await;
    assert!(
        matches!(&ended, wirewarden_redis::Value::SimpleError(e)
            if text(e).contains("subscription withdrawn") && text(e).contains("(rule feeds-need-a-grant)")),
        "{ended:?}"
    );
    assert_withdrawn(&g, "feed", "feeds-need-a-grant").await;
}

/// Before it logs in, a client could declare a 500 MB argument and the gateway buffered it
/// (three such connections took the gateway from 36 MB to 960 MB). Until login the limits
/// are the server's own for unauthenticated clients, near enough: the declaration alone is
/// refused with a protocol error and the connection closed, no payload read. A login with a
/// long token still works, and once logged in the session's limits apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_client_cannot_make_the_gateway_buffer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = gateway().await;
    for hostile in [
        &b"*1\r\n$500000000\r\n"[..],
        b"*2\r\n$4\r\nAUTH\r\n$70000\r\n",
        b"*11\r\n",
    ] {
        // The payload is never sent: the refusal comes on the declaration alone.
        let got = exchange(g.addr, hostile, Duration::from_secs(10)).await;
        assert!(got.starts_with("-ERR Protocol error: "), "{got}");
        assert_eq!(got.matches("\r\n").count(), 1, "{got}");
    }
    // An inline line that never ends.
    let got = exchange(g.addr, &[b'A'; 20 << 10], Duration::from_secs(10)).await;
    assert!(
        got.starts_with("-ERR Protocol error: too big inline"),
        "{got}"
    );
    // The connection is closed, not left waiting for the rest.
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"*1\r\n$500000000\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    // A long token is a wrong password, not a protocol error.
    let long = "x".repeat(8 << 10);
    let mut raw = Raw::connect(g.addr).await;
    let wrong = raw
        .call(&["HELLO", "3", "AUTH", "agent", &long, "SETNAME", "n"])
        .await;
    assert!(
        matches!(&wrong, wirewarden_redis::Value::SimpleError(e) if text(e).starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    assert_eq!(
        bulk(&raw.call(&["AUTH", "tok-agent"]).await).as_deref(),
        Some("OK")
    );
    let value = "v".repeat(200 << 10);
    assert_eq!(
        bulk(&raw.call(&["SET", "large", &value]).await).as_deref(),
        Some("OK")
    );
    assert_eq!(
        bulk(&raw.call(&["STRLEN", "large"]).await),
        None,
        "an integer"
    );
    assert_eq!(
        g.direct(&["STRLEN", "large"]).trim(),
        (200 << 10).to_string()
    );
}

/// Inside a session, failed `AUTH` attempts were unlimited, and another identity's valid
/// token got a different answer than a wrong one (an oracle for which tokens are valid).
/// Now both are `-WRONGPASS` (the trail says which it was), and failures count against
/// `max_auth_failures` as before login: at the limit, the replies owed go out, then the
/// refusal, and the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reauthentication_is_no_oracle_and_is_limited() {
    use tokio::io::AsyncReadExt;
    let g = gateway().await;
    let mut raw = Raw::connect(g.addr).await;
    assert_eq!(
        bulk(&raw.call(&["AUTH", "tok-agent"]).await).as_deref(),
        Some("OK")
    );
    let other = raw.call(&["AUTH", "other", "tok-other"]).await;
    let wrong = raw.call(&["AUTH", "other", "not-a-token"]).await;
    assert!(
        matches!(&wrong, wirewarden_redis::Value::SimpleError(e) if text(e).starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    assert_eq!(other, wrong);
    // The third failure, pipelined behind a read: the read's reply, then the refusal, then
    // the connection closes.
    raw.send(&["GET", "plain"]).await;
    raw.send(&["HELLO", "3", "AUTH", "agent", "still-wrong"])
        .await;
    raw.send(&["GET", "plain"]).await;
    assert_eq!(bulk(&raw.reply().await).as_deref(), Some("hello"));
    assert_eq!(raw.reply().await, wrong);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.stream.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the session")
        .unwrap();
    assert!(raw.buf.is_empty() && rest.is_empty(), "{rest:?}");
    let kinds = kinds_when(g.audit_dir.path(), &g.keys, |k| {
        k.iter()
            .any(|k| matches!(k, AuditEventKind::SessionEnded { .. }))
    })
    .await;
    assert!(kinds.iter().any(|k| matches!(
        k,
        AuditEventKind::AuthenticationFailed { reason, .. }
            if reason.contains("agent-2") && reason.contains("session of agent-1")
    )));
    assert!(kinds.iter().any(|k| matches!(
        k,
        AuditEventKind::SessionEnded {
            reason: wirewarden::core::SessionEndReason::Error { message },
            ..
        } if message.contains("failed AUTH")
    )));
    // The GET after the last AUTH never ran: one GET decided.
    let gets = kinds
        .iter()
        .filter(|k| matches!(k, AuditEventKind::CommandDecided { command, .. } if command.verb == "GET"))
        .count();
    assert_eq!(gets, 1);
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A user name or password that is not UTF-8 cannot be a credential: it is answered like a
/// wrong one, recorded as a failed login, and counted towards `max_auth_failures` (it used
/// to be answered and forgotten, an unlimited and unrecorded guess).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_is_not_utf8_is_a_failed_login() {
    let g = gateway().await;
    let auth = b"*2\r\n$4\r\nAUTH\r\n$3\r\n\xfftk\r\n";
    let hello = b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nagent\r\n$2\r\n\xc3(\r\n";
    let mut sent = Vec::new();
    sent.extend_from_slice(auth);
    sent.extend_from_slice(hello);
    sent.extend_from_slice(auth);
    sent.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    let got = exchange(g.addr, &sent, Duration::from_secs(10)).await;
    assert_eq!(got.matches("-WRONGPASS").count(), 3, "{got}");
    // The third failure ends the connection: the PING after it is never answered.
    assert!(!got.contains("PONG") && !got.contains("NOAUTH"), "{got}");
    let kinds = kinds_when(g.audit_dir.path(), &g.keys, |k| {
        k.iter()
            .filter(|k| matches!(k, AuditEventKind::AuthenticationFailed { reason, .. } if reason.contains("not valid UTF-8")))
            .count()
            == 3
    })
    .await;
    assert!(kinds.iter().any(|k| matches!(
        k,
        AuditEventKind::AuthenticationFailed { user: Some(user), .. } if user == "agent"
    )));
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// An upstream that is not a Redis server, for replies a real one never sends: it logs the
/// gateway in (`+OK` to its `AUTH`, then `after_login`), then answers `GET` with `bad`,
/// `PING` with `+PONG` and any other command with `+OK`. Its replies are held until `batch`
/// commands have come, so a pipeline reaches it whole however the gateway read it.
async fn hostile_upstream(
    after_login: &'static [u8],
    bad: &'static [u8],
    batch: usize,
) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut decoder =
                    wirewarden_redis::RequestDecoder::new(wirewarden_redis::Limits::default());
                let mut buf = bytes::BytesMut::new();
                let mut held = Vec::new();
                let mut commands = 0;
                loop {
                    while let Ok(Some(req)) = decoder.decode(&mut buf) {
                        let name = req.name().to_ascii_uppercase();
                        if name == b"AUTH" {
                            held.extend_from_slice(b"+OK\r\n");
                            held.extend_from_slice(after_login);
                            if s.write_all(&held).await.is_err() {
                                return;
                            }
                            held.clear();
                            continue;
                        }
                        held.extend_from_slice(match &name[..] {
                            b"GET" => bad,
                            b"PING" => b"+PONG\r\n",
                            _ => b"+OK\r\n",
                        });
                        commands += 1;
                        if commands >= batch {
                            if s.write_all(&held).await.is_err() {
                                return;
                            }
                            held.clear();
                        }
                    }
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// What the gateway answers each command still owed a reply when the upstream sends an
/// invalid one.
const INVALID_REPLY: &str =
    "-ERR wirewarden: the upstream sent an invalid reply; the connection is closed";

/// The upstream sent a frame the decoder refuses: the session ended, but the client was never
/// told — the `-ERR` was left unsent when the connection closed. Now every command still owed
/// a reply gets one, in order (the gateway's own denial between them in its place), nothing
/// of the bad read goes out (not even the valid reply behind the bad one), the upstream's
/// error is on record, each unanswered command has an outcome saying so, and the session's
/// end says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_upstream_reply_is_answered_in_order_and_ends_the_session() {
    // The upstream answers PING, GET, PING with `+PONG`, a negative bulk length, `+PONG`.
    let up = hostile_upstream(b"", b"$-5\r\n", 3).await;
    let g = gateway_with(|t| t.upstream.addr = up.to_string(), |sink| sink).await;
    let got = exchange(
        g.addr,
        b"AUTH tok-agent\r\nPING\r\nGET plain\r\nFLUSHALL\r\nPING\r\n",
        Duration::from_secs(20),
    )
    .await;
    let lines: Vec<&str> = got.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 5, "{got}");
    assert_eq!(&lines[..3], ["+OK", "+PONG", INVALID_REPLY], "{got}");
    assert!(
        lines[3].starts_with("-ERR wirewarden: ") && lines[3].contains("(rule redis-"),
        "{got}"
    );
    assert_eq!(lines[4], INVALID_REPLY, "{got}");

    let trail = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |e| {
        !support::end_reasons(e).is_empty()
    })
    .await;
    let session = trail
        .iter()
        .find(|e| matches!(e.kind, AuditEventKind::SessionStarted { .. }))
        .and_then(|e| e.session);
    assert!(session.is_some());
    assert!(
        trail.iter().any(|e| e.session == session
            && matches!(
                &e.kind,
                AuditEventKind::ProtocolError {
                    direction: wirewarden::core::Direction::FromUpstream,
                    error,
                } if error.contains("bulk length")
            )),
        "{trail:?}"
    );
    let get = support::outcome_error(&trail, |c| c.verb == "GET").flatten();
    assert!(
        get.as_deref()
            .is_some_and(|e| e.contains("the upstream sent an invalid reply")),
        "{get:?}"
    );
    assert!(matches!(
        &support::end_reasons(&trail)[..],
        [wirewarden::core::SessionEndReason::Error { message }]
            if message.starts_with("the upstream sent an invalid reply: ")
    ));
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// The same through real clients: redis-cli prints the error for the command whose reply was
/// over the gateway's limits, and redis-py raises it as a `ResponseError` (a reply), not a
/// `ConnectionError`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_the_error_for_an_invalid_upstream_reply() {
    // A bulk string declared longer than the limits allow.
    let up = hostile_upstream(b"", b"$600000000\r\n", 1).await;
    let g = gateway_with(|t| t.upstream.addr = up.to_string(), |sink| sink).await;
    let out = cli(g.addr, &["-a", "tok-agent"], "PING\nGET plain\n").await;
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines, ["PONG", &INVALID_REPLY[1..]], "{stdout}");

    // An array of more elements than the limits allow.
    let up = hostile_upstream(b"", b"*5000000\r\n", 1).await;
    let g = gateway_with(|t| t.upstream.addr = up.to_string(), |sink| sink).await;
    let out = python(
        g.addr,
        2,
        "try:\n    r.get('plain')\n    print('NO ERROR')\nexcept redis.ResponseError as e:\n    print('REPLY', e)",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("REPLY {}\nDONE", &INVALID_REPLY["-ERR ".len()..])),
        "{stdout}{}",
        text(&out.stderr)
    );
    let trail = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |e| {
        !support::end_reasons(e).is_empty()
    })
    .await;
    assert!(trail.iter().any(|e| matches!(
        &e.kind,
        AuditEventKind::ProtocolError { error, .. } if error.contains("elements exceed the limit")
    )));
}

/// A reply nothing asked for (the upstream speaks first) cannot be tied to a command: it is
/// not relayed; the client, owed nothing, still gets one error before the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_upstream_reply_is_not_relayed() {
    let up = hostile_upstream(b"$6\r\nsecret\r\n", b"", 1).await;
    let g = gateway_with(|t| t.upstream.addr = up.to_string(), |sink| sink).await;
    let got = exchange(g.addr, b"AUTH tok-agent\r\n", Duration::from_secs(20)).await;
    assert_eq!(got, format!("+OK\r\n{INVALID_REPLY}\r\n"));
    let trail = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |e| {
        !support::end_reasons(e).is_empty()
    })
    .await;
    assert!(trail.iter().any(|e| matches!(
        &e.kind,
        AuditEventKind::ProtocolError {
            direction: wirewarden::core::Direction::FromUpstream,
            error,
        } if error.contains("reply nothing was waiting for")
    )));
}

/// Requests refused before login (`-NOAUTH`, a `HELLO` without `AUTH`, a request over the
/// login limits) left nothing in the trail. Now a connection leaves one record of them,
/// however many there were, with the client's address: an `AuthenticationFailed` (method
/// `none`) when it never logs in, a `ProtocolError` of its session when it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_login_leave_one_record_per_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = gateway().await;

    // 53 refused requests, then the client leaves.
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let many = s.local_addr().unwrap().to_string();
    let mut burst = "GET plain\r\n".repeat(50);
    // A word that is no command is counted, not written down: it might be a secret.
    burst.push_str("PING\r\nHELLO 3\r\ntok-agent\r\n");
    s.write_all(burst.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    assert_eq!(text(&got).matches("-NOAUTH ").count(), 53);

    // A request over the login limits: refused, and the connection closed.
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let big = s.local_addr().unwrap().to_string();
    s.write_all(b"*1\r\n$500000000\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    assert!(text(&got).starts_with("-ERR Protocol error: "));

    // A refusal, then a login.
    let mut raw = Raw::connect(g.addr).await;
    let late = raw.stream.local_addr().unwrap().to_string();
    let refused = raw.call(&["PING"]).await;
    assert!(
        matches!(&refused, wirewarden_redis::Value::SimpleError(e) if text(e).starts_with("NOAUTH")),
        "{refused:?}"
    );
    assert_eq!(
        bulk(&raw.call(&["AUTH", "tok-agent"]).await).as_deref(),
        Some("OK")
    );
    assert_eq!(
        bulk(&raw.call(&["GET", "plain"]).await).as_deref(),
        Some("hello")
    );
    drop(raw);

    // A login with nothing refused adds none.
    let out = cli(g.addr, &["-a", "tok-agent"], "GET plain\n").await;
    assert_eq!(text(&out.stdout).trim(), "hello");

    let unauthenticated = |e: &wirewarden::core::AuditEvent, addr: &str| match &e.kind {
        AuditEventKind::AuthenticationFailed {
            client_addr,
            method,
            reason,
            ..
        } if client_addr.as_deref() == Some(addr) => Some((method.clone(), reason.clone())),
        _ => None,
    };
    let trail = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |e| {
        support::end_reasons(e).len() == 2
            && e.iter().any(|e| unauthenticated(e, &many).is_some())
            && e.iter().any(|e| unauthenticated(e, &big).is_some())
    })
    .await;
    let of_many: Vec<_> = trail
        .iter()
        .filter_map(|e| unauthenticated(e, &many))
        .collect();
    let [(method, reason)] = &of_many[..] else {
        panic!("one record for the connection: {of_many:?}");
    };
    assert_eq!(method, "none");
    assert!(
        reason.starts_with(
            "53 requests refused before authentication: GET x50, PING, HELLO, 1 other;"
        ) && reason.ends_with("the connection ended unauthenticated: the client left"),
        "{reason}"
    );
    let of_big: Vec<_> = trail
        .iter()
        .filter_map(|e| unauthenticated(e, &big))
        .collect();
    let [(_, reason)] = &of_big[..] else {
        panic!("one record for the connection: {of_big:?}");
    };
    assert!(
        reason.starts_with("1 request refused before authentication; a request refused with a protocol error: invalid bulk length"),
        "{reason}"
    );
    // Every refused request is counted once, whichever record carries it.
    assert_eq!(
        g.pipeline
            .metrics()
            .refused_before_login
            .load(std::sync::atomic::Ordering::Relaxed),
        55
    );
    // The session that logged in after a refusal has it on record, once; the clean one not.
    let session = trail.iter().find_map(|e| match &e.kind {
        AuditEventKind::SessionStarted { client_addr, .. }
            if client_addr.as_deref() == Some(&late) =>
        {
            e.session
        }
        _ => None,
    });
    assert!(session.is_some(), "{trail:?}");
    let before_login: Vec<_> = trail
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::ProtocolError {
                direction: wirewarden::core::Direction::FromClient,
                error,
            } => Some((e.session, error.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        before_login,
        [(session, "1 request refused before authentication: PING")]
    );
    assert!(!trail.iter().any(|e| unauthenticated(e, &late).is_some()));
    assert_verifies(g.audit_dir.path(), &g.keys);
}
