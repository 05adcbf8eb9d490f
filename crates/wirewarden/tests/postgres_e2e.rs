//! End to end: real clients (psql, psycopg) through the PostgreSQL proxy to a real server.
//!
//! Each test starts its own PostgreSQL (wirewarden-testkit), its own audit directory and its
//! own proxy on a loopback port, so they run in parallel.
#![cfg(all(feature = "postgres", feature = "jwks-fetch"))]

mod support;
use support::{assert_verifies, events, text};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use wirewarden::Pipeline;
use wirewarden::audit::{AuditSink, VerifyKeys};
use wirewarden::core::{AuditEventKind, Decision, Protocol, Target, Timestamp};
use wirewarden::identity::{
    IdentityProvider, StaticToken, StaticTokens, StaticTokensConfig, TokenHash,
};
use wirewarden::policy::RuleEngine;
use wirewarden::postgres::{PostgresProxy, PostgresTarget, Secret, ServerTls, UpstreamConfig};
use wirewarden::review::{ApprovalScope, Reviewer};
use wirewarden_testkit::Postgres;

const SEED: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, card text, balance numeric);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '123-45-6789', '4111 1111 1111 1111', 10.5),
  (2, 'Alan Turing', 'alan@example.org', '234-56-7890', '5500-0000-0000-0004', 20);
CREATE TABLE notes (id serial PRIMARY KEY, body text);
";

const POLICY: &str = r#"
[[rule]]
id = "no-ddl"
class = "schema"
action = "deny"
reason = "schema changes go through migrations"

[[rule]]
id = "analysts-read"
groups = ["analysts"]
max_class = "read"
action = "allow"

[[rule]]
id = "analysts-notify"
groups = ["analysts"]
verbs = ["NOTIFY", "LISTEN"]
action = "allow"

[[rule]]
id = "writes-need-a-dba"
groups = ["analysts"]
max_class = "write"
action = "review"
reviewers = ["dba"]
timeout = "20s"
"#;

struct Gateway {
    pg: Postgres,
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
        tokens: vec![token("analyst", "tok-analyst", "analyst-1", &["analysts"])],
    })
    .unwrap()
}

async fn gateway(tls: Option<ServerTls>) -> Gateway {
    gateway_with(tls, Arc::new(tokens()), |sink| sink).await
}

async fn gateway_with(
    tls: Option<ServerTls>,
    identity: Arc<dyn IdentityProvider>,
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
) -> Gateway {
    gateway_with_policy(tls, identity, wrap, POLICY).await
}

async fn gateway_with_policy(
    tls: Option<ServerTls>,
    identity: Arc<dyn IdentityProvider>,
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
    policy: &str,
) -> Gateway {
    gateway_with_masks(tls, identity, wrap, policy, None).await
}

async fn gateway_with_masks(
    tls: Option<ServerTls>,
    identity: Arc<dyn IdentityProvider>,
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
    policy: &str,
    masks: Option<wirewarden::mask::Engine>,
) -> Gateway {
    let pg = tokio::task::spawn_blocking(|| Postgres::builder().seed_sql(SEED).start().unwrap())
        .await
        .unwrap();
    let (audit_dir, keys, sink) = support::audit_trail();
    let engine = Arc::new(RuleEngine::from_toml(policy).unwrap());
    let mut builder = Pipeline::builder(identity, engine.clone()).budgets(engine.budgets_handle());
    if let Some(masks) = masks {
        builder = builder.masking(Arc::new(masks));
    }
    let pipeline = Arc::new(builder.audit(wrap(Arc::new(sink))).build().unwrap());
    let upstream = UpstreamConfig {
        addr: pg.addr().to_string(),
        user: pg.user().to_owned(),
        password: Secret::new(pg.password()),
        database: pg.database().to_owned(),
        tls: None,
    };
    let mut target = PostgresTarget::new(Target::new("crm", Protocol::Postgres).unwrap(), upstream);
    target.allow_plaintext_password = tls.is_none();
    target.require_tls = tls.is_some();
    target.tls = tls;
    let proxy = PostgresProxy::new(pipeline.clone(), target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.listen(listener).await;
    });
    Gateway {
        pg,
        addr,
        pipeline,
        audit_dir,
        keys,
        _task: task,
    }
}

/// The output of a script that must have succeeded (with both streams if it did not).
fn succeeded(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    stdout
}

/// Checks that a script's output has every one of `lines` in it.
fn assert_shows(stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}

/// [`POLICY`] with reads of notes under the `open` profile and reads of customers under
/// `strict`, in that order. A rule on relations also allows a statement that names none, so
/// a statement read as touching nothing takes the first: the open one.
fn notes_open_customers_strict() -> String {
    POLICY.replace(
        "[[rule]]\nid = \"analysts-read\"",
        "[[rule]]\nid = \"analysts-read-notes\"\ngroups = [\"analysts\"]\n\
         max_class = \"read\"\nrelations = [\"*notes\"]\naction = \"allow\"\n\
         mask_profile = \"open\"\n\n\
         [[rule]]\nid = \"analysts-read-customers\"\ngroups = [\"analysts\"]\n\
         max_class = \"read\"\nrelations = [\"*customers\"]\naction = \"allow\"\n\
         mask_profile = \"strict\"\n\n[[rule]]\nid = \"analysts-read\"\nmask_profile = \"open\"",
    )
}

/// A gateway with [`notes_open_customers_strict`] and [`strict_and_open`], `open` the
/// session's default.
async fn notes_open_customers_strict_gateway() -> Gateway {
    gateway_with_masks(
        None,
        Arc::new(tokens()),
        |s| s,
        &notes_open_customers_strict(),
        Some(strict_and_open("open")),
    )
    .await
}

/// Two mask profiles: `strict` redacts the `ssn` column, `open` masks nothing; `default`
/// is the session's. A row masked with the wrong one shows the SSN.
fn strict_and_open(default: &str) -> wirewarden::mask::Engine {
    use wirewarden::mask::{DetectorSet, Engine, FieldRule, Profile, Selector, Strategy};
    Engine::builder()
        .profile(
            Profile::builder("strict")
                .rule(FieldRule::new(Selector::column("ssn"), Strategy::redact())),
        )
        .profile(Profile::builder("open").detectors(DetectorSet::empty()))
        .default_profile(default)
        .build()
        .unwrap()
}

/// A psycopg script that connects through the gateway on `port` as the analyst
/// (autocommit), then runs `body` with `conn`, `pg` (libpq's connection, for the extended
/// protocol message by message) and `show(label, result)`, which prints `label rows
/// <first value> (<count>)`, `label ok`, or `label error <SQLSTATE> <message>`.
fn psycopg_script(port: u16, body: &str) -> String {
    format!(
        r#"
import psycopg
from psycopg import pq
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
pg = conn.pgconn
def show(label, r):
    if r.status == pq.ExecStatus.TUPLES_OK:
        first = r.get_value(0, 0).decode() if r.ntuples else ""
        print(label, "rows", first, f"({{r.ntuples}})")
    elif r.status == pq.ExecStatus.COMMAND_OK:
        print(label, "ok")
    else:
        print(label, "error", r.error_field(pq.DiagnosticField.SQLSTATE).decode(), r.error_message.decode().strip())
{body}"#
    )
}

/// A Python script that speaks the protocol itself to the gateway on `port`, for message
/// sequences no driver sends: it logs in as the analyst, then runs `body` with `send(*msgs)`
/// (each built by `P(name, sql)`, `B(portal, statement, *params)`, `E(portal)`, `D(kind,
/// name)`, `C(kind, name)`, `S()`, `H()` or `Q(sql)`) and `answers(n)`, which reads up to the
/// `n`th `ReadyForQuery` and prints one line per message: `1`, `2`, `3` (parse, bind and
/// close complete), `row <first value>`, `done <tag>`, `error <SQLSTATE>`, `ready`.
fn raw_script(port: u16, body: &str) -> String {
    format!(
        r#"
import socket, struct
sock = socket.create_connection(("127.0.0.1", {port}))
def msg(t, payload):
    return t + struct.pack("!I", len(payload) + 4) + payload
def z(b):
    return b + b"\0"
def P(name, sql): return msg(b"P", z(name) + z(sql) + struct.pack("!h", 0))
def B(portal, stmt, *params):
    out = z(portal) + z(stmt) + struct.pack("!hh", 0, len(params))
    for p in params:
        out += struct.pack("!i", len(p)) + p
    return msg(b"B", out + struct.pack("!h", 0))
def E(portal): return msg(b"E", z(portal) + struct.pack("!i", 0))
def D(kind, name): return msg(b"D", kind + z(name))
def C(kind, name): return msg(b"C", kind + z(name))
def S(): return msg(b"S", b"")
def H(): return msg(b"H", b"")
def Q(sql): return msg(b"Q", z(sql))
def send(*msgs): sock.sendall(b"".join(msgs))
buf = b""
def read():
    global buf
    while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
    n = struct.unpack("!I", buf[1:5])[0]
    t, payload, buf = buf[:1], buf[5:1 + n], buf[1 + n:]
    return t, payload
def answers(n):
    seen = 0
    while seen < n:
        t, p = read()
        if t == b"Z":
            seen += 1
            print("ready")
        elif t in (b"1", b"2", b"3"):
            print(t.decode())
        elif t == b"D":
            count = struct.unpack("!h", p[:2])[0]
            size = struct.unpack("!i", p[2:6])[0] if count else -1
            print("row", p[6:6 + size].decode() if size >= 0 else "NULL")
        elif t == b"C":
            print("done", p[:-1].decode())
        elif t == b"E":
            fields = dict((f[:1], f[1:]) for f in p.split(b"\0") if f)
            print("error", fields[b"C"].decode())
startup = struct.pack("!I", 196608) + b"user\0analyst\0database\0app\0\0"
sock.sendall(struct.pack("!I", len(startup) + 4) + startup)
t, p = read()
assert t == b"R" and struct.unpack("!I", p[:4])[0] == 3, (t, p)
sock.sendall(msg(b"p", z(b"tok-analyst")))
while read()[0] != b"Z":
    pass
{body}
send(msg(b"X", b""))
"#
    )
}

/// psql through the gateway; `sql` are separate `-c` commands in one session.
async fn psql(addr: SocketAddr, token: &str, sslmode: &str, sql: &[&str]) -> Output {
    let cmd = psql_command(addr, token, sslmode, sql);
    tokio::time::timeout(Duration::from_secs(60), { cmd }.output())
        .await
        .expect("psql finished")
        .unwrap()
}

/// The psql command `psql` runs, not started.
fn psql_command(
    addr: SocketAddr,
    token: &str,
    sslmode: &str,
    sql: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-U",
        "analyst",
        "-d",
        "app",
    ])
    .env("PGPASSWORD", token)
    .env("PGSSLMODE", sslmode)
    .env("PGCONNECT_TIMEOUT", "10");
    for s in sql {
        cmd.args(["-c", s]);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_select_is_masked_and_audited() {
    let g = gateway(None).await;
    let out = psql(
        g.addr,
        "tok-analyst",
        "disable",
        &["SELECT name, email, ssn, card, balance FROM customers ORDER BY id"],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Ada Lovelace"), "{stdout}");
    for secret in [
        "123-45-6789",
        "234-56-7890",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "ada@example.com",
    ] {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }
    assert!(stdout.contains("10.5"), "numeric untouched: {stdout}");
    // Directly, the values are there: the gateway did the masking.
    assert!(
        g.pg.psql("SELECT ssn FROM customers WHERE id = 1")
            .unwrap()
            .contains("123-45-6789")
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert!(kinds.iter().any(|k| matches!(k, AuditEventKind::SessionStarted { principal, .. } if principal.subject == "analyst-1")));
    let completed = kinds.iter().find_map(|k| match k {
        AuditEventKind::CommandCompleted { rows, masked, .. } if *rows == 2 => Some(masked.clone()),
        _ => None,
    });
    let masked = completed.expect("a completion with 2 rows");
    assert!(masked.total() >= 6, "{masked:?}");
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::SessionEnded { .. }))
    );
    assert!(kinds.iter().any(|k| matches!(k, AuditEventKind::CommandCompleted { reply: Some(reply), .. } if reply.text.contains("Ada Lovelace") && !reply.text.contains("123-45-6789"))));
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::Transcript { .. }))
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_drop_keeps_the_session_usable() {
    let g = gateway(None).await;
    let out = psql(
        g.addr,
        "tok-analyst",
        "disable",
        &[
            "DROP TABLE customers",
            "SELECT count(*) FROM customers",
            "BEGIN",
            "DROP TABLE notes",
            "SELECT 1",
            "ROLLBACK",
            "SELECT 'still here'",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("schema changes go through migrations"),
        "{stderr}"
    );
    assert!(stdout.lines().any(|l| l == "2"), "{stdout}");
    // Inside a transaction, a denial aborts it exactly as a failed statement would.
    assert!(
        stderr.contains("current transaction is aborted"),
        "{stderr}"
    );
    assert!(stdout.contains("still here"), "{stdout}");
    assert_eq!(
        g.pg.psql("SELECT count(*) FROM customers").unwrap().trim(),
        "2",
        "table still exists"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let denied = events(g.audit_dir.path(), &g.keys).into_iter().filter(|k| {
        matches!(k, AuditEventKind::CommandDecided { decision: Decision::Deny { .. }, command, .. } if command.verb == "DROP TABLE")
    });
    assert_eq!(denied.count(), 2);
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_and_audited() {
    let g = gateway(None).await;
    let out = psql(g.addr, "not-a-token", "disable", &["SELECT 1"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("password authentication failed"),
        "{}",
        text(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::AuthenticationFailed { .. }))
    );
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::SessionStarted { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_sees_the_upstream_credential() {
    let g = gateway(None).await;
    // The agent's own password is not the database's: a direct login with the token fails.
    let direct = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &g.pg.port().to_string(),
            "-U",
            "analyst",
            "-d",
            "app",
            "-c",
            "select 1",
        ])
        .env("PGPASSWORD", "tok-analyst")
        .output()
        .unwrap();
    assert!(!direct.status.success());
    let out = psql(g.addr, "tok-analyst", "disable", &["SELECT current_user"]).await;
    assert_eq!(text(&out.stdout).trim(), g.pg.user());
}

fn self_signed() -> (ServerTls, PathBuf, tempfile::TempDir) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    (ServerTls::new(chain, key).unwrap(), ca, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_and_required() {
    let (tls, _ca, _dir) = self_signed();
    let g = gateway(Some(tls)).await;
    let out = psql(
        g.addr,
        "tok-analyst",
        "require",
        &["SELECT ssn FROM customers WHERE id = 1", "SHOW ssl"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("123-45-6789"),
        "{}",
        text(&out.stdout)
    );
    let plain = psql(g.addr, "tok-analyst", "disable", &["SELECT 1"]).await;
    assert!(!plain.status.success());
    assert!(
        text(&plain.stderr).contains("requires TLS"),
        "{}",
        text(&plain.stderr)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        events(g.audit_dir.path(), &g.keys)
            .iter()
            .any(|k| matches!(k, AuditEventKind::SessionStarted { tls: true, .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_extended_protocol_text_binary_and_denial() {
    let g = gateway(None).await;
    let script = format!(
        r#"
import psycopg
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
cur = conn.cursor()
cur.execute("SELECT id, ssn, email FROM customers WHERE id = %s", (1,))
print("text", cur.fetchone())
cur.execute("SELECT id, ssn, balance FROM customers WHERE id = %s", (2,), binary=True)
print("binary", cur.fetchone())
cur.execute("SELECT ssn FROM customers ORDER BY id", prepare=True)
cur.execute("SELECT ssn FROM customers ORDER BY id", prepare=True)
print("prepared", cur.fetchall())
try:
    cur.execute("DROP TABLE customers")
    print("dropped?!")
except psycopg.errors.InsufficientPrivilege as e:
    print("denied", e.sqlstate)
cur.execute("SELECT count(*) FROM customers")
print("after", cur.fetchone()[0])
with cur.copy("COPY customers (id, ssn, card) TO STDOUT") as copy:
    print("copy", b"".join(bytes(b) for b in copy).decode())
"#,
        port = g.addr.port()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "text (1,",
            "binary (2,",
            "denied 42501",
            "after 2",
            "copy 1\t",
        ],
    );
    for secret in [
        "123-45-6789",
        "234-56-7890",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "ada@example.com",
    ] {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    // The trail keeps each reply as the client saw it: masked, COPY data included.
    let recorded: Vec<String> = events(g.audit_dir.path(), &g.keys)
        .into_iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandCompleted { reply, .. } => reply.map(|r| r.text),
            _ => None,
        })
        .collect();
    assert!(
        recorded.iter().any(|r| r.starts_with("1\t")),
        "the COPY is recorded: {recorded:#?}"
    );
    for secret in [
        "123-45-6789",
        "234-56-7890",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "ada@example.com",
    ] {
        assert!(
            !recorded.iter().any(|r| r.contains(secret)),
            "{secret} is in the trail: {recorded:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_held_for_review_and_runs_once_approved() {
    let g = gateway(None).await;
    let addr = g.addr;
    let client = tokio::spawn(async move {
        psql(
            addr,
            "tok-analyst",
            "disable",
            &[
                "INSERT INTO notes (body) VALUES ('approved write')",
                "SELECT body FROM notes",
            ],
        )
        .await
    });
    // A reviewer approves the pending review.
    let reviews = g.pipeline.reviews().clone();
    let pending = support::pending_review(&reviews).await;
    assert!(
        pending.command_text.contains("approved write"),
        "{:?}",
        pending.command_text
    );
    // The requester cannot approve their own command.
    assert!(
        reviews
            .approve(
                pending.id,
                &Reviewer::new("analyst-1").with_group("dba"),
                ApprovalScope::Once,
                Timestamp::now()
            )
            .await
            .is_err()
    );
    support::approve(&reviews, pending.id, "dba").await.unwrap();
    let out = client.await.unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("held for review"), "{stderr}");
    assert!(stdout.contains("approved write"), "{stdout}\n{stderr}");
    assert_eq!(g.pg.psql("SELECT count(*) FROM notes").unwrap().trim(), "1");
}

/// A client that leaves while its write waits for review gives up the wait: the review is
/// cancelled on record, a reviewer can no longer approve it, and the write never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_whose_client_leaves_is_cancelled_and_never_runs() {
    let g = gateway(None).await;
    let client = psql_command(
        g.addr,
        "tok-analyst",
        "disable",
        &["INSERT INTO notes (body) VALUES ('nobody waits')"],
    );
    let events =
        support::abandon_held(&g.pipeline, g.audit_dir.path(), &g.keys, client, "dba").await;
    assert_eq!(g.pg.psql("SELECT count(*) FROM notes").unwrap().trim(), "0");
    assert_eq!(
        support::end_reasons(&events),
        [wirewarden::core::SessionEndReason::ClientClosed]
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Logs in as `tokens()` does, with a credential that expires 3 s after the login.
#[derive(Debug)]
struct ExpiresSoon(StaticTokens);

#[async_trait::async_trait]
impl IdentityProvider for ExpiresSoon {
    async fn authenticate(
        &self,
        credential: &wirewarden::identity::Credential,
        context: &wirewarden::identity::AuthContext,
    ) -> Result<wirewarden::core::Principal, wirewarden::core::BoxError> {
        let mut principal = self.0.authenticate(credential, context).await?;
        principal.expires_at = Timestamp::now().checked_add(Duration::from_secs(3));
        Ok(principal)
    }

    fn accepts(&self, credential: &wirewarden::identity::Credential) -> bool {
        self.0.accepts(credential)
    }
}

/// A session ends when the credential it logged in with expires, with no statement from its
/// client: psycopg, waiting on a long statement, reads a FATAL (28000) saying so; the end is
/// on record as `credential_expired`, and the statement's outcome as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_credential_expires() {
    let g = gateway_with(None, Arc::new(ExpiresSoon(tokens())), |sink| sink).await;
    let mut client = support::Interactive::start(
        &format!(
            "import psycopg\nc = psycopg.connect(host='127.0.0.1', port={}, user='analyst', password='tok-analyst', dbname='app', sslmode='disable', autocommit=True)",
            g.addr.port()
        ),
        &[],
    )
    .await;
    assert_eq!(
        client
            .eval("c.execute('SELECT 41 + 1').fetchone()[0]")
            .await,
        "42"
    );
    // A statement still running when the credential expires: the client reads the FATAL
    // in its place, and its outcome is on record as unknown.
    client
        .send("c.execute('SELECT pg_sleep(30)').fetchone()[0]")
        .await;
    let events = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |events| {
        !support::end_reasons(events).is_empty()
    })
    .await;
    assert_eq!(
        support::end_reasons(&events),
        [wirewarden::core::SessionEndReason::CredentialExpired]
    );
    let after = client.result().await;
    assert!(
        after.starts_with("ERROR InvalidAuthorizationSpecification") && after.contains("expired"),
        "{after}"
    );
    assert_eq!(client.eval("c.closed").await, "True");
    let outcome = support::outcome_error(&events, |command| command.text.contains("pg_sleep"));
    assert!(
        matches!(&outcome, Some(Some(e)) if e.contains("session ended before")),
        "{outcome:?}"
    );
    client.finish().await;
    assert_verifies(g.audit_dir.path(), &g.keys);
}

async fn python(script: &str) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output(),
    )
    .await
    .expect("python finished")
    .unwrap()
}

/// An agent that reuses one connection across tool calls renames it for each call: the
/// server's report of the new `application_name` goes on record before the next statement,
/// so every statement is tied to the call that issued it — `SET`, `SET LOCAL` and its end
/// with the transaction, and `RESET` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_session_ties_later_statements_to_the_new_name() {
    let g = gateway(None).await;
    let out = python(&format!(
        r#"
import psycopg
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True, application_name="run=1 call=a")
cur = conn.cursor()
cur.execute("SELECT 'first'")
cur.execute("SET application_name = 'run=1 call=b'")
cur.execute("SELECT 'second'")
cur.execute("SET application_name = 'run=1 call=b'")
cur.execute("BEGIN")
cur.execute("SET LOCAL application_name = 'run=1 call=c'")
cur.execute("SELECT 'third'")
cur.execute("COMMIT")
cur.execute("SELECT 'fourth'")
cur.execute("RESET application_name")
cur.execute("SELECT 'fifth'")
cur.execute("SET application_name = ''")
cur.execute("SELECT 'sixth'")
cur.execute("SHOW application_name")
print("server", repr(cur.fetchone()[0]))
print("DONE")
"#,
        port = g.addr.port()
    ))
    .await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("DONE"), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("server ''"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    let changes: Vec<Option<&str>> = kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::ApplicationChanged { application } => Some(application.as_deref()),
            _ => None,
        })
        .collect();
    // The repeated SET changed nothing and is not a change.
    assert_eq!(
        changes,
        [
            Some("run=1 call=b"),
            Some("run=1 call=c"),
            Some("run=1 call=b"),
            Some("run=1 call=a"),
            None
        ],
        "{kinds:?}"
    );
    let selects: Vec<(String, Option<String>)> = support::applications_at_decision(&kinds)
        .into_iter()
        .map(|(command, app)| (command.text, app))
        .filter(|(text, _)| text.starts_with("SELECT '"))
        .collect();
    let expect = |t: &str, a: Option<&str>| (format!("SELECT '{t}'"), a.map(str::to_owned));
    assert_eq!(
        selects,
        [
            expect("first", Some("run=1 call=a")),
            expect("second", Some("run=1 call=b")),
            expect("third", Some("run=1 call=c")),
            expect("fourth", Some("run=1 call=b")),
            expect("fifth", Some("run=1 call=a")),
            expect("sixth", None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_binary_protocol_throughout() {
    let g = gateway(None).await;
    let script = format!(
        r#"
import asyncio, asyncpg
async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", database="app", ssl=False)
    rows = await conn.fetch("SELECT id, name, ssn, card, balance FROM customers WHERE id = ANY($1::int[]) ORDER BY id", [1, 2])
    for r in rows:
        print("row", r["id"], r["name"], r["ssn"], r["card"], r["balance"])
    stmt = await conn.prepare("SELECT email FROM customers WHERE id = $1")
    print("prepared", await stmt.fetchval(1), await stmt.fetchval(2))
    try:
        await conn.execute("DROP TABLE customers")
    except asyncpg.exceptions.InsufficientPrivilegeError as e:
        print("denied", e.sqlstate)
    print("after", await conn.fetchval("SELECT count(*) FROM customers"))
    await conn.close()
asyncio.run(main())
"#,
        port = g.addr.port()
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(&stdout, &["row 1 Ada Lovelace", "denied 42501", "after 2"]);
    assert!(
        stdout.contains("10.5"),
        "numeric survives binary re-encoding: {stdout}"
    );
    for secret in [
        "123-45-6789",
        "234-56-7890",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "ada@example.com",
        "alan@example.org",
    ] {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_statements_fail_closed() {
    let g = gateway(None).await;
    // Not SQL the classifier understands: denied by the default rule before the server sees it.
    let out = psql(
        g.addr,
        "tok-analyst",
        "disable",
        &["FROBNICATE customers", "SELECT 'alive'"],
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no policy rule allows"), "{stderr}");
    assert!(text(&out.stdout).contains("alive"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(events(g.audit_dir.path(), &g.keys).iter().any(|k| matches!(
        k,
        AuditEventKind::CommandDecided { command, decision: Decision::Deny { .. }, .. } if command.class == wirewarden::core::CommandClass::Unknown
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_notifications_and_copy_are_masked() {
    let g = gateway(None).await;
    let out = psql(
        g.addr,
        "tok-analyst",
        "disable",
        &[
            "SELECT '123-45-6789'::int",
            "LISTEN alerts",
            "NOTIFY alerts, 'card 4111 1111 1111 1111 declined'",
            "SELECT 1",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("invalid input syntax for type integer"),
        "{stderr}"
    );
    // psql echoes the client's own query text after `LINE 1:`; everything from the server
    // is masked.
    let all: String = format!("{stdout}{stderr}")
        .lines()
        .filter(|l| !l.starts_with("LINE 1:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains("Asynchronous notification \"alerts\""),
        "{all}"
    );
    assert!(!all.contains("123-45-6789"), "{all}");
    assert!(!all.contains("4111 1111 1111 1111"), "{all}");
    // The sender is named by the gateway's process id, never the upstream's.
    let upstream_pids = g.pg.psql("SELECT pid FROM pg_stat_activity").unwrap();
    for pid in upstream_pids.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            !all.contains(&format!("process with PID {}.", pid.trim())),
            "{all}"
        );
    }
}

/// A simple query the server skips (it arrived while the server discarded messages after
/// an error, up to `Sync`) gets no answer of its own. The gateway counts it out the way the
/// server does, so the next queries' rows are masked as their own statements say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_the_server_skips_after_an_error_keeps_later_results_in_step() {
    let g = notes_open_customers_strict_gateway().await;
    let script = raw_script(
        g.addr.port(),
        r#"
send(B(b"", b"nope"), Q(b"SELECT 'skipped'"), S())
answers(1)
print("--")
send(Q(b"SELECT body FROM notes"))
answers(1)
print("--")
send(Q(b"SELECT ssn FROM customers WHERE id = 1"))
answers(1)
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert!(stdout.contains("error 26000"), "{stdout}");
    assert!(!stdout.contains("skipped"), "{stdout}");
    assert!(stdout.contains("row [REDACTED]"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A script's output cut at each `print("--")`: `n` parts.
fn parts_of(stdout: &str, n: usize) -> Vec<&str> {
    let parts: Vec<&str> = stdout.split("--\n").collect();
    assert_eq!(parts.len(), n, "{stdout}");
    parts
}

/// `open_ssn(c)` opens a cursor named `c` on `customers.ssn`: under a name the gateway
/// still takes for a `notes` cursor or portal, what a confusion of names would read.
const OPEN_SSN: &str = "CREATE FUNCTION open_ssn(c refcursor) RETURNS refcursor \
     LANGUAGE plpgsql AS $$ BEGIN OPEN c FOR SELECT ssn FROM customers ORDER BY id; \
     RETURN c; END $$";

/// A row for `notes` queries to read (`row a note`).
const A_NOTE: &str = "INSERT INTO notes (body) VALUES ('a note')";

/// A portal lives in its transaction, and so does a cursor not declared `WITH HOLD`. Once
/// the transaction ends, the name is free, and a function can open a cursor under it, which
/// the gateway does not see: an `Execute` of the name, or a `FETCH` from it, would read that
/// cursor, not the statement once bound or declared there. It is decided as a fetch from a
/// cursor the gateway does not know, and refused before it runs (rather than run under the
/// old statement's decision: the protocol's rows were withheld only because nothing
/// described them, and the `FETCH` showed an SSN through the notes query's open profile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_ends_with_its_transaction() {
    let g = notes_open_customers_strict_gateway().await;
    g.pg.psql(OPEN_SSN).unwrap();
    let script = raw_script(
        g.addr.port(),
        r#"
send(Q(b"BEGIN"))
answers(1)
send(P(b"n", b"SELECT body FROM notes"), B(b"p1", b"n"), E(b"p1"), S())
answers(1)
send(Q(b"COMMIT"))
answers(1)
print("--")
send(Q(b"BEGIN"), Q(b"SELECT open_ssn('p1')"))
answers(2)
send(D(b"P", b"p1"), E(b"p1"), S())
answers(1)
send(Q(b"COMMIT"))
answers(1)
print("--")
send(Q(b"BEGIN"), Q(b"DECLARE c1 CURSOR FOR SELECT body FROM notes"), Q(b"COMMIT"))
answers(3)
send(Q(b"BEGIN"), Q(b"SELECT open_ssn('c1')"), Q(b"FETCH 1 FROM c1"), Q(b"COMMIT"))
answers(4)
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert!(stdout.contains("row p1"), "{stdout}");
    assert!(stdout.contains("row c1"), "{stdout}");
    assert_eq!(stdout.matches("error 42501").count(), 2, "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A rollback drops the cursors and portals its transaction made, `WITH HOLD` or not: a
/// `ROLLBACK`, a `ROLLBACK TO SAVEPOINT` (both answered `ROLLBACK`), and an implicit
/// transaction that fails. A function that opens a cursor of the same name afterwards gets
/// a `FETCH` or `Execute` of it refused, not decided as the cursor the rollback dropped.
/// What a rollback keeps stays: a cursor declared before the savepoint rolled back to, and
/// what a `COMMIT` ended, even with an error after it in the same query text. A `COMMIT
/// AND CHAIN` ends the transaction as a `COMMIT` does, though the session stays in a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_ends_with_the_transaction_that_rolls_it_back() {
    let g = notes_open_customers_strict_gateway().await;
    g.pg.psql(&format!("{OPEN_SSN}; {A_NOTE}")).unwrap();
    let script = raw_script(
        g.addr.port(),
        r#"
send(Q(b"BEGIN"), Q(b"DECLARE h1 CURSOR WITH HOLD FOR SELECT body FROM notes"), Q(b"ROLLBACK"))
answers(3)
send(Q(b"BEGIN"), Q(b"SELECT open_ssn('h1')"), Q(b"FETCH 1 FROM h1"), Q(b"COMMIT"))
answers(4)
print("--")
send(Q(b"BEGIN"), Q(b"DECLARE e1 CURSOR FOR SELECT body FROM notes"), Q(b"SAVEPOINT a"))
answers(3)
send(Q(b"DECLARE s1 CURSOR FOR SELECT body FROM notes"), Q(b"ROLLBACK TO a"))
answers(2)
send(Q(b"FETCH 1 FROM e1"), Q(b"SELECT open_ssn('s1')"), Q(b"FETCH 1 FROM s1"), Q(b"COMMIT"))
answers(4)
print("--")
send(Q(b"DECLARE i1 CURSOR WITH HOLD FOR SELECT body FROM notes; SELECT 1/0"))
answers(1)
send(Q(b"BEGIN"), Q(b"SELECT open_ssn('i1')"), Q(b"FETCH 1 FROM i1"), Q(b"COMMIT"))
answers(4)
print("--")
send(Q(b"BEGIN"), Q(b"SAVEPOINT a"))
answers(2)
send(P(b"n", b"SELECT body FROM notes"), B(b"p3", b"n"), D(b"P", b"p3"), E(b"p3"), S())
answers(1)
send(Q(b"ROLLBACK TO a"), Q(b"SELECT open_ssn('p3')"))
answers(2)
send(E(b"p3"), S())
answers(1)
send(Q(b"COMMIT"))
answers(1)
print("--")
send(Q(b"BEGIN"), Q(b"DECLARE ch1 CURSOR FOR SELECT body FROM notes"), Q(b"COMMIT AND CHAIN"))
answers(3)
send(Q(b"SELECT open_ssn('ch1')"), Q(b"FETCH 1 FROM ch1"), Q(b"COMMIT"))
answers(3)
print("--")
send(Q(b"BEGIN; DECLARE k1 CURSOR WITH HOLD FOR SELECT body FROM notes; COMMIT; SELECT 1/0"))
answers(1)
send(Q(b"FETCH 1 FROM k1"))
answers(1)
print("--")
send(Q(b"BEGIN"))
answers(1)
send(P(b"n5", b"SELECT body FROM notes"), B(b"p5", b"n5"), D(b"P", b"p5"),
     P(b"", b"SAVEPOINT b"), B(b"", b""), E(b""), S())
answers(1)
send(P(b"", b"ROLLBACK TO SAVEPOINT b"), B(b"", b""), E(b""), S())
answers(1)
send(E(b"p5"), S())
answers(1)
send(Q(b"COMMIT"))
answers(1)
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    let parts = parts_of(&stdout, 7);
    for (i, part) in parts.iter().take(5).enumerate() {
        assert!(part.contains("error 42501"), "part {i}: {stdout}");
    }
    // The cursor declared before the savepoint is still there, and reads.
    assert!(parts[1].contains("row a note"), "{stdout}");
    assert!(parts[5].contains("error 22012"), "{stdout}");
    assert!(parts[5].contains("row a note"), "{stdout}");
    // A portal bound before the savepoint, the savepoint and the rollback in the extended
    // protocol as JDBC sends them, each batch after the last one's answer: the portal is
    // still there, and runs.
    assert!(parts[6].contains("done ROLLBACK"), "{stdout}");
    assert!(parts[6].contains("row a note"), "{stdout}");
    assert!(!parts[6].contains("error"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A procedure that commits, called outside a transaction block, ends the transaction it
/// runs in, and with it the portals bound before it in the same batch. A function can then
/// open a cursor under one of their names; an `Execute` of the name is refused, not run
/// under the decision of the statement bound there before. Portals bound after the call
/// run as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedure_that_may_commit_ends_the_portals_bound_before_it() {
    let policy = notes_open_customers_strict().replace(
        "[[rule]]\nid = \"analysts-read-notes\"",
        "[[rule]]\nid = \"analysts-call\"\ngroups = [\"analysts\"]\nverbs = [\"CALL\"]\n\
         action = \"allow\"\n\n[[rule]]\nid = \"analysts-read-notes\"",
    );
    let g = gateway_with_masks(
        None,
        Arc::new(tokens()),
        |s| s,
        &policy,
        Some(strict_and_open("open")),
    )
    .await;
    g.pg.psql(&format!(
        "{OPEN_SSN}; CREATE PROCEDURE tidy() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$; \
         {A_NOTE}"
    ))
    .unwrap();
    let script = raw_script(
        g.addr.port(),
        r#"
send(P(b"n", b"SELECT body FROM notes"), B(b"p1", b"n"), D(b"P", b"p1"),
     P(b"", b"CALL tidy()"), B(b"", b""), E(b""),
     P(b"o", b"SELECT open_ssn('p1')"), B(b"", b"o"), D(b"P", b""), E(b""),
     E(b"p1"), S())
answers(1)
print("--")
send(P(b"", b"CALL tidy()"), B(b"", b""), E(b""),
     B(b"p2", b"n"), D(b"P", b"p2"), E(b"p2"), S())
answers(1)
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    let parts = parts_of(&stdout, 2);
    assert!(parts[0].contains("done CALL"), "{stdout}");
    assert!(parts[0].contains("error 42501"), "{stdout}");
    assert!(parts[1].contains("done CALL"), "{stdout}");
    assert!(parts[1].contains("row a note"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A transaction's end sent with the statements after it, before any answer. A `FETCH`
/// (or an `Execute` of a portal made earlier) waits until the batches before it are
/// answered, since only the answers say whether the cursor outlived them; within one query
/// text or one batch, where nothing can be waited for, a cursor or portal made before a
/// statement that may end the transaction is refused. A prepared `FETCH` is decided at
/// each execution on the cursor the name has then. Each case, run before, printed the SSN:
/// a function opened a cursor under the old name, and the gateway decided on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_waits_for_the_transactions_in_flight() {
    let g = notes_open_customers_strict_gateway().await;
    g.pg.psql(&format!("{OPEN_SSN}; {A_NOTE}")).unwrap();
    let script = raw_script(
        g.addr.port(),
        r#"
send(Q(b"BEGIN"), Q(b"DECLARE c1 CURSOR FOR SELECT body FROM notes"),
     Q(b"SELECT pg_sleep(0.3)"), Q(b"COMMIT"),
     Q(b"BEGIN"), Q(b"SELECT open_ssn('c1')"), Q(b"FETCH 1 FROM c1"), Q(b"COMMIT"))
answers(8)
print("--")
send(Q(b"DECLARE h1 CURSOR WITH HOLD FOR SELECT body FROM notes; SELECT pg_sleep(0.3); SELECT 1/0"),
     Q(b"BEGIN"), Q(b"SELECT open_ssn('h1')"), Q(b"FETCH 1 FROM h1"), Q(b"COMMIT"))
answers(5)
print("--")
send(Q(b"BEGIN"), Q(b"DECLARE c2 CURSOR FOR SELECT body FROM notes"))
answers(2)
send(Q(b"COMMIT; BEGIN; SELECT open_ssn('c2'); FETCH 1 FROM c2; COMMIT"))
answers(1)
print("--")
send(Q(b"BEGIN"))
answers(1)
send(P(b"n", b"SELECT body FROM notes"), B(b"p1", b"n"), D(b"P", b"p1"), S())
answers(1)
send(P(b"", b"COMMIT"), B(b"", b""), E(b""),
     P(b"o", b"SELECT open_ssn('p1')"), B(b"", b"o"), D(b"P", b""), E(b""),
     E(b"p1"), S())
answers(1)
print("--")
send(Q(b"BEGIN"), Q(b"DECLARE c3 CURSOR FOR SELECT body FROM notes"))
answers(2)
send(P(b"f", b"FETCH 1 FROM c3"), B(b"", b"f"), D(b"P", b""), E(b""), S())
answers(1)
send(Q(b"COMMIT"), Q(b"BEGIN"), Q(b"SELECT open_ssn('c3')"))
answers(3)
send(B(b"", b"f"), D(b"P", b""), E(b""), S())
answers(1)
send(Q(b"COMMIT"))
answers(1)
print("--")
send(Q(b"BEGIN"))
answers(1)
send(P(b"", b"COMMIT"), B(b"", b""), E(b""),
     P(b"", b"SELECT body FROM notes FETCH FIRST 1 ROWS ONLY"), B(b"", b""), D(b"P", b""), E(b""),
     S())
answers(1)
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    let parts = parts_of(&stdout, 6);
    for (i, part) in parts.iter().take(5).enumerate() {
        assert!(part.contains("error 42501"), "part {i}: {stdout}");
    }
    // A query that only says `FETCH FIRST` reads no cursor, and runs after a `COMMIT` in
    // its batch.
    assert!(parts[5].contains("row a note"), "{stdout}");
    assert!(!parts[5].contains("error"), "{stdout}");
    // The prepared FETCH read its own cursor while it was there.
    assert!(parts[4].contains("row a note"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A `Bind` to a portal name a cursor holds fails on the server (42P03), which keeps the
/// cursor: an `Execute` of the name in a later batch would fetch from the cursor, so it is
/// refused, not run under the `Bind`'s decision; a `FETCH` from the cursor is decided as the
/// cursor's query. Once the cursor is closed, a `Bind` of the name makes a portal like any
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_to_a_cursors_name_does_not_take_it() {
    let g = notes_open_customers_strict_gateway().await;
    let script = raw_script(
        g.addr.port(),
        r#"
send(Q(b"DECLARE c2 CURSOR WITH HOLD FOR SELECT ssn FROM customers ORDER BY id"))
answers(1)
print("--")
send(P(b"n", b"SELECT body FROM notes"), B(b"c2", b"n"), E(b"c2"), S())
answers(1)
print("--")
send(E(b"c2"), S())
answers(1)
send(Q(b"FETCH 1 FROM c2"))
answers(1)
print("--")
send(Q(b"CLOSE c2"))
answers(1)
send(B(b"c2", b"n"), E(b"c2"), S())
answers(1)
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    let parts = parts_of(&stdout, 4);
    assert!(parts[1].contains("error 42P03"), "{stdout}");
    assert!(parts[2].contains("error 42P05"), "{stdout}");
    // SQL reads the cursor the server kept, decided as its own query.
    assert!(parts[2].contains("row [REDACTED]"), "{stdout}");
    assert!(parts[3].contains("done CLOSE CURSOR"), "{stdout}");
    assert!(parts[3].contains("done SELECT 0"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A COPY FROM STDIN run with the extended protocol: the server ignores the `Sync` that
/// libpq sends behind the `Execute` while it copies in, and answers the one sent after the
/// data. The gateway counts the same way, so every later statement's outcome and masking
/// stay its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_in_the_extended_protocol_keeps_the_session_in_step() {
    let policy = POLICY.replace(
        "[[rule]]\nid = \"writes-need-a-dba\"",
        "[[rule]]\nid = \"analysts-copy\"\ngroups = [\"analysts\"]\nverbs = [\"COPY\"]\n\
         action = \"allow\"\n\n[[rule]]\nid = \"writes-need-a-dba\"",
    );
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, &policy).await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
r = pg.exec_params(b"COPY notes (body) FROM STDIN", [])
print("copy", r.status == pq.ExecStatus.COPY_IN)
pg.put_copy_data(b"first\nsecond\n")
pg.put_copy_end()
show("copied", pg.get_result())
while pg.get_result() is not None:
    pass
show("parse", pg.prepare(b"s1", b"SELECT ssn FROM customers WHERE id = $1"))
show("one", pg.exec_prepared(b"s1", [b"1"]))
show("two", pg.exec_prepared(b"s1", [b"2"]))
show("count", pg.exec_(b"SELECT count(*) FROM notes"))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "copy True",
            "copied ok",
            "parse ok",
            "one rows [REDACTED]",
            "two rows [REDACTED]",
            "count rows 2",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Each statement's outcome is its own: the two executions one row each, the count one.
    let ev = events(g.audit_dir.path(), &g.keys);
    let mut texts = std::collections::HashMap::new();
    let mut outcomes = Vec::new();
    for e in &ev {
        match e {
            AuditEventKind::CommandDecided {
                command_id,
                command,
                ..
            } => {
                texts.insert(*command_id, command.text.clone());
            }
            AuditEventKind::CommandCompleted {
                command_id,
                rows,
                error,
                ..
            } => outcomes.push((texts[command_id].clone(), *rows, error.clone())),
            _ => {}
        }
    }
    let copy = outcomes
        .iter()
        .find(|(t, ..)| t.starts_with("COPY"))
        .expect("the COPY's outcome");
    assert_eq!(copy.2, None, "{outcomes:#?}");
    let count = outcomes
        .iter()
        .find(|(t, ..)| t.starts_with("SELECT count"))
        .expect("the count's outcome");
    assert_eq!((count.1, &count.2), (1, &None), "{outcomes:#?}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_cannot_be_masked_is_withheld() {
    let g = gateway(None).await;
    let deep = format!(
        "SELECT ('{}' || '\"123-45-6789\"' || '{}')::json",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let out = psql(g.addr, "tok-analyst", "disable", &[&deep, "SELECT 'next'"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("withheld"), "{stderr}");
    assert!(!stdout.contains("123-45-6789"));
    assert!(stdout.contains("next"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_that_cannot_be_recorded_refuses_the_statement() {
    let g = gateway_with(None, Arc::new(tokens()), |s| {
        Arc::new(support::RefuseIntents(s))
    })
    .await;
    let out = psql(
        g.addr,
        "tok-analyst",
        "disable",
        &["SELECT ssn FROM customers", "SELECT 'x'"],
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("audit trail is unavailable"), "{stderr}");
    assert!(
        !text(&out.stdout).contains('x'),
        "nothing runs without its intent on record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_use_gateway_issued_keys() {
    let g = gateway(None).await;
    let script = format!(
        r#"
import psycopg, threading
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
print("pid", conn.info.backend_pid)
threading.Timer(0.5, conn.cancel).start()
try:
    conn.execute("SELECT pg_sleep(20)")
    print("not cancelled")
except psycopg.errors.QueryCanceled as e:
    print("cancelled", e.sqlstate, e.diag.message_primary)
print("then", conn.execute("SELECT 1").fetchone()[0])
"#,
        port = g.addr.port()
    );
    let out = python(&script).await;
    let stdout = text(&out.stdout);
    // The server cancelled the running statement on the user's request (no statement
    // timeout is set, so 57014 can only come from the cancel request) ...
    assert!(
        stdout.contains("cancelled 57014 canceling statement due to user request"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(!stdout.contains("not cancelled"), "{stdout}");
    // ... and the session went on.
    assert!(stdout.contains("then 1"), "{stdout}");
    // The client saw the gateway's key, not the server's process id.
    let pid: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let backends = g.pg.psql("SELECT pid FROM pg_stat_activity").unwrap();
    assert!(
        !backends.lines().any(|l| l.trim() == pid.to_string()),
        "upstream pid leaked: {pid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_a_real_provider_and_wrong_audience() {
    use wirewarden::identity::{Chain, JwtConfig, JwtProvider};
    use wirewarden_testkit::oidc::OidcProvider;
    let idp = tokio::task::spawn_blocking(|| {
        OidcProvider::builder()
            .client("agent-7", "agent-secret", &["analysts"])
            .resource("https://crm.wirewarden.test", "ES256", "read")
            .resource("https://billing.wirewarden.test", "ES256", "read")
            .start()
            .unwrap()
    })
    .await
    .unwrap();
    let mut config = JwtConfig::new(idp.issuer(), &["https://crm.wirewarden.test"]);
    config.jwks_url = Some(idp.jwks_url());
    let identity = Chain::new()
        .with(Arc::new(tokens()))
        .with(Arc::new(JwtProvider::new(config).unwrap()));
    let g = gateway_with(None, Arc::new(identity), |s| s).await;
    // The provider stays up: the gateway fetches its keys on the first token.
    let (good, wrong, _idp) = tokio::task::spawn_blocking(move || {
        (
            idp.access_token("agent-7", "https://crm.wirewarden.test", "read")
                .unwrap(),
            idp.access_token("agent-7", "https://billing.wirewarden.test", "read")
                .unwrap(),
            idp,
        )
    })
    .await
    .unwrap();
    let ok = psql(
        g.addr,
        &good,
        "disable",
        &["SELECT count(*) FROM customers"],
    )
    .await;
    if !ok.status.success() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let why: Vec<String> = events(g.audit_dir.path(), &g.keys)
            .into_iter()
            .filter_map(|k| match k {
                AuditEventKind::AuthenticationFailed { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        panic!("{} {why:?}", text(&ok.stderr));
    }
    assert_eq!(text(&ok.stdout).trim(), "2");
    let refused = psql(g.addr, &wrong, "disable", &["SELECT 1"]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("password authentication failed"),
        "{}",
        text(&refused.stderr)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert!(kinds.iter().any(|k| matches!(k, AuditEventKind::SessionStarted { principal, .. } if matches!(principal.auth, wirewarden::core::AuthMethod::Jwt { .. }))));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::AuthenticationFailed { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exfiltration_budget_stops_the_next_read() {
    let policy = format!(
        "{POLICY}\n[[budget]]\nid = \"rows\"\ngroups = [\"analysts\"]\nmax_rows = 3\nwindow = \"1h\"\n"
    );
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, &policy).await;
    let addr = g.addr;
    let out = psql(
        addr,
        "tok-analyst",
        "disable",
        &[
            "SELECT id FROM customers",
            "SELECT id FROM customers",
            "SELECT id FROM customers",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // 2 rows, then 2 more (4 > 3: the command that crosses completes), then refused.
    assert_eq!(
        stdout.lines().filter(|l| !l.is_empty()).count(),
        4,
        "{stdout}"
    );
    assert!(stderr.contains("budget"), "{stderr}");
}

/// A statement prepared once and executed again is decided again at each later execution:
/// an exfiltration budget spent by the first executions stops the next one (before, the
/// decision taken at `Parse` let it run for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exfiltration_budget_stops_the_next_execution_of_a_prepared_statement() {
    let policy = format!(
        "{POLICY}\n[[budget]]\nid = \"rows\"\ngroups = [\"analysts\"]\nmax_rows = 3\nwindow = \"1h\"\n"
    );
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, &policy).await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("prepare", pg.prepare(b"ids", b"SELECT id FROM customers"))
for n in range(1, 5):
    show(f"run {n}", pg.exec_prepared(b"ids", []))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    // 2 rows, then 2 more (4 > 3: the execution that crosses completes), then refused.
    assert_shows(
        &stdout,
        &[
            "run 1 rows 1 (2)",
            "run 2 rows 1 (2)",
            "run 3 error 42501",
            "budget",
            "run 4 error 42501",
        ],
    );
    // The refusals are on record, each with its own intent.
    let ev = events(g.audit_dir.path(), &g.keys);
    let denied = ev
        .iter()
        .filter(|e| {
            matches!(e, AuditEventKind::CommandDecided { command, decision: Decision::Deny { .. }, .. }
                if command.text.starts_with("SELECT id FROM customers"))
        })
        .count();
    assert_eq!(denied, 2, "{ev:#?}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Statements the gateway saw no Parse for still run through policy: a statement prepared
/// with SQL `PREPARE` and executed with the extended protocol (libpq's `PQexecPrepared`) is
/// decided as `EXECUTE name`, so its rows are masked with the profile its rule gives and
/// its outcome has an intent; a named statement whose new Parse was refused keeps the
/// statement and decision the server still holds; a name nothing prepared is refused. No
/// outcome on the trail lacks its intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_outside_the_extended_protocol_are_decided() {
    // Reads get the strict profile; the session's default masks nothing, so a row masked
    // with the default instead of the rule's profile would show the SSN.
    let policy = POLICY.replace(
        "max_class = \"read\"\naction = \"allow\"",
        "max_class = \"read\"\naction = \"allow\"\nmask_profile = \"strict\"",
    );
    let masks = strict_and_open("open");
    let g = gateway_with_masks(None, Arc::new(tokens()), |s| s, &policy, Some(masks)).await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
conn.execute("PREPARE by_id AS SELECT ssn FROM customers WHERE id = 1")
show("sql-prepared", pg.exec_prepared(b"by_id", []))
show("parse", pg.prepare(b"s1", b"SELECT ssn FROM customers WHERE id = 2"))
show("reparse", pg.prepare(b"s1", b"DROP TABLE customers"))
show("s1", pg.exec_prepared(b"s1", []))
show("unknown", pg.exec_prepared(b"nothing", []))
show("after", pg.exec_params(b"SELECT count(*) FROM customers", []))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "sql-prepared rows [REDACTED]",
            "reparse error 42501",
            "s1 rows [REDACTED]",
        ],
    );
    // Nothing of that name exists upstream: the server fails the Bind (26000) and the
    // Execute is never run; the decision is on record all the same.
    assert!(stdout.contains("unknown error 26000"), "{stdout}");
    assert!(stdout.contains("after rows 2"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert!(!stdout.contains("234-56-7890"), "{stdout}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let ev = events(g.audit_dir.path(), &g.keys);
    let mut decided = std::collections::HashMap::new();
    for e in &ev {
        match e {
            AuditEventKind::CommandDecided {
                command_id,
                command,
                decision,
                ..
            } => {
                decided.insert(*command_id, (command.text.clone(), decision.clone()));
            }
            AuditEventKind::CommandCompleted { command_id, .. } => {
                assert!(
                    decided.contains_key(command_id),
                    "an outcome without its intent: {e:?}"
                );
            }
            _ => {}
        }
    }
    let decision_of = |text: &str| {
        decided
            .values()
            .find(|(t, _)| t == text)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no intent for {text}: {ev:#?}"))
    };
    assert!(matches!(
        decision_of("EXECUTE \"by_id\""),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        decision_of("EXECUTE \"nothing\""),
        Decision::Deny { .. }
    ));
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A statement prepared with `Parse` that policy holds for review is prepared without a
/// hold, and each execution waits for its own approval, the parameters bound to it shown to
/// the reviewer and covered by the approval's digest: one approval runs one execution, and
/// never a second one with other parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_write_is_reviewed_at_each_execution_with_its_parameters() {
    let g = gateway(None).await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("prepare", pg.prepare(b"ins", b"INSERT INTO notes (body) VALUES ($1)"))
show("first", pg.exec_prepared(b"ins", [b"first note"]))
show("second", pg.exec_prepared(b"ins", [b"it's the second"]))
show("count", pg.exec_params(b"SELECT count(*) FROM notes", []))
"#,
    );
    let client = tokio::spawn(async move { python(&script).await });
    let reviews = g.pipeline.reviews().clone();
    let first = support::pending_review(&reviews).await;
    assert!(
        first.command_text.contains("$1 = 'first note'"),
        "{:?}",
        first.command_text
    );
    support::approve(&reviews, first.id, "dba").await.unwrap();
    // The second execution is held again, with its own parameters.
    let second = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let pending = reviews.store().pending(Timestamp::now()).await.unwrap();
            if let Some(r) = pending.into_iter().find(|r| r.id != first.id) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the second execution is held");
    assert!(
        second.command_text.contains("$1 = 'it''s the second'"),
        "{:?}",
        second.command_text
    );
    support::deny(&reviews, second.id, "dba", "one note is enough")
        .await
        .unwrap();
    let out = client.await.unwrap();
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "prepare ok",
            "first ok",
            "second error 42501",
            "count rows 1",
        ],
    );
    assert_eq!(
        g.pg.psql("SELECT body FROM notes").unwrap().trim(),
        "first note"
    );

    // Each execution has its own intent, under its own digest.
    let ev = events(g.audit_dir.path(), &g.keys);
    let held: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandDecided {
                command,
                decision: Decision::Review { .. },
                ..
            } => Some((command.text.clone(), command.digest)),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 2, "{ev:#?}");
    assert!(held[0].0.contains("'first note'"), "{held:?}");
    assert!(held[1].0.contains("'it''s the second'"), "{held:?}");
    assert_ne!(held[0].1, held[1].1);
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A name whose `Parse` was refused holds nothing upstream, so a `Bind` to it fails there
/// and its `Execute` is passed on undecided. Once SQL `PREPARE` gives the server a statement
/// of that name, its executions are decided as `EXECUTE name`: here a write, held for
/// review and denied, so it never runs (before, it ran with no decision at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_prepared_again_in_sql_is_decided() {
    let g = gateway(None).await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("refused parse", pg.prepare(b"s3", b"DROP TABLE notes"))
show("sql prepare", pg.exec_(b"PREPARE s3 AS INSERT INTO notes (body) VALUES ('sneaked in')"))
show("s3", pg.exec_prepared(b"s3", []))
"#,
    );
    let client = tokio::spawn(async move { python(&script).await });
    let reviews = g.pipeline.reviews().clone();
    let held = support::pending_review(&reviews).await;
    assert!(
        held.command_text.contains("EXECUTE \"s3\""),
        "{:?}",
        held.command_text
    );
    support::deny(&reviews, held.id, "dba", "not through a refused name")
        .await
        .unwrap();
    let out = client.await.unwrap();
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "refused parse error 42501",
            "sql prepare ok",
            "s3 error 42501",
        ],
    );
    assert_eq!(g.pg.psql("SELECT count(*) FROM notes").unwrap().trim(), "0");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A `Parse` the server discarded (an earlier message of its batch failed) gives the name
/// nothing, and SQL `PREPARE` can then give the server another statement under it. The
/// gateway reads the server's answers, so it undoes the discarded `Parse`, and an execution
/// of the name is decided as the SQL statement it runs: masked with that statement's
/// profile, never the discarded one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_discarded_by_parse_and_taken_by_sql_prepare_runs_the_sql_statement() {
    let g = notes_open_customers_strict_gateway().await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
pg.enter_pipeline_mode()
pg.send_query_params(b"SELECT 1/0", None)
pg.send_prepare(b"s2", b"SELECT body FROM notes")
pg.pipeline_sync()
while True:
    r = pg.get_result()
    if r is not None and r.status == pq.ExecStatus.PIPELINE_SYNC:
        break
pg.exit_pipeline_mode()
show("sql prepare", pg.exec_(b"PREPARE s2 AS SELECT ssn FROM customers WHERE id = 1"))
show("s2", pg.exec_prepared(b"s2", []))
show("deallocate", pg.exec_(b"DEALLOCATE s2"))
show("again", pg.prepare(b"s2", b"SELECT body FROM notes"))
show("s2 again", pg.exec_prepared(b"s2", []))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "sql prepare ok",
            "s2 rows [REDACTED]",
            "deallocate ok",
            "again ok",
            "s2 again rows",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Batches pipelined behind one another: a `Close` the server skipped (its batch failed
/// first) freed nothing, so the next batch's `Parse` of the name fails on the server and the
/// one after runs the old statement. The gateway decides a batch that rests on an earlier
/// batch's change only once that change is answered, so the old statement keeps its
/// decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_batch_waits_for_the_answer_to_the_change_it_rests_on() {
    let g = notes_open_customers_strict_gateway().await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("parse", pg.prepare(b"s3", b"SELECT ssn FROM customers WHERE id = 1"))
pg.enter_pipeline_mode()
pg.send_query_params(b"SELECT 1/0", None)
pg.send_close_prepared(b"s3")
pg.pipeline_sync()
pg.send_prepare(b"s3", b"SELECT body FROM notes")
pg.pipeline_sync()
pg.send_query_prepared(b"s3", [])
pg.pipeline_sync()
syncs, n = 0, 0
while syncs < 3:
    r = pg.get_result()
    if r is None:
        continue
    if r.status == pq.ExecStatus.PIPELINE_SYNC:
        syncs += 1
        continue
    n += 1
    if r.status == pq.ExecStatus.PIPELINE_ABORTED:
        print(f"result {n} skipped")
    else:
        show(f"result {n}", r)
pg.exit_pipeline_mode()
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "parse ok",
            "result 1 error 22012",
            "result 2 skipped",
            "result 3 error 42P05",
            "result 4 rows [REDACTED]",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A `FETCH` from a cursor is decided on the relations of the cursor's query, so its rows
/// are masked with the profile a read of those relations gets (before, a `FETCH` was a
/// read of nothing, which took the profile of reads in general). A `FETCH` from a cursor
/// the session never declared is not understood, and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_masked_as_its_cursor_query_is() {
    let policy = notes_open_customers_strict();
    let g = gateway_with_masks(
        None,
        Arc::new(tokens()),
        |s| s,
        &policy,
        Some(strict_and_open("open")),
    )
    .await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
pg.exec_(b"BEGIN")
show("declare", pg.exec_(b"DECLARE c CURSOR FOR SELECT ssn FROM customers ORDER BY id"))
show("fetch", pg.exec_(b"FETCH ALL FROM c"))
show("close", pg.exec_(b"CLOSE c"))
pg.exec_(b"COMMIT")
show("in one", pg.exec_(b"BEGIN; DECLARE d CURSOR FOR SELECT ssn FROM customers; FETCH 1 FROM d; COMMIT"))
show("unknown", pg.exec_(b"FETCH ALL FROM nothing"))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &["declare ok", "fetch rows [REDACTED] (2)", "close ok"],
    );
    // In one text, the FETCH is understood from the DECLARE before it.
    assert!(stdout.contains("in one ok"), "{stdout}");
    assert!(stdout.contains("unknown error 42501"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert!(!stdout.contains("234-56-7890"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A function can read tables its statement does not name. A rule that allows reads of
/// notes used to allow `SELECT ssn_of(1)` too (the statement names no relation, and "every
/// relation it names is a note" held vacuously), and the SSN went out under the notes
/// rule's profile, which masks nothing. A call of a function the classifier cannot see into
/// now touches every relation, which only a rule on every relation or one that lists the
/// function covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_some_relations_does_not_allow_a_function_that_reads_others() {
    // No rule for reads in general, and none that holds a read for review: what the rules
    // on relations do not cover is refused.
    let policy = r#"
[[rule]]
id = "analysts-note-lengths"
groups = ["analysts"]
max_class = "read"
relations = ["*notes"]
functions = ["note_len"]
action = "allow"
mask_profile = "open"

[[rule]]
id = "analysts-read-notes"
groups = ["analysts"]
max_class = "read"
relations = ["*notes"]
action = "allow"
mask_profile = "open"

[[rule]]
id = "analysts-read-customers"
groups = ["analysts"]
max_class = "read"
relations = ["*customers"]
action = "allow"
mask_profile = "strict"
"#;
    let g = gateway_with_masks(
        None,
        Arc::new(tokens()),
        |s| s,
        policy,
        Some(strict_and_open("open")),
    )
    .await;
    g.pg.psql(&format!(
        "CREATE FUNCTION ssn_of(i int) RETURNS text LANGUAGE sql \
         AS $$ SELECT ssn FROM customers WHERE id = i $$; \
         CREATE FUNCTION note_len(b text) RETURNS int LANGUAGE sql AS $$ SELECT length(b) $$; \
         {A_NOTE}"
    ))
    .unwrap();
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("ssn_of", pg.exec_(b"SELECT ssn_of(1)"))
show("beside notes", pg.exec_(b"SELECT body, ssn_of(1) FROM notes"))
show("extended", pg.exec_params(b"SELECT ssn_of($1::int)", [b"1"]))
show("customers", pg.exec_(b"SELECT ssn FROM customers ORDER BY id"))
show("built-ins", pg.exec_(b"SELECT count(*), max(lower(body)) FROM notes"))
show("vouched", pg.exec_(b"SELECT note_len(body) FROM notes"))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "ssn_of error 42501",
            "beside notes error 42501",
            "extended error 42501",
            "customers rows [REDACTED] (2)",
            "built-ins rows 1 (1)",
            "vouched rows 6 (1)",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The trail says why: the refused call touched every relation.
    let refused = events(g.audit_dir.path(), &g.keys)
        .into_iter()
        .filter(|k| {
            matches!(k, AuditEventKind::CommandDecided { decision: Decision::Deny { .. }, command, .. }
                if command.text.contains("ssn_of") && command.objects.iter().any(|o| o.is_any_relation()))
        })
        .count();
    assert_eq!(refused, 3, "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// The server keeps a named statement until it is closed or deallocated and fails a
/// `Parse` that reuses its name; the gateway keeps that statement's decision (here its mask
/// profile) for the name, rather than the decision of the text the server refused, and
/// decides the name afresh once `DEALLOCATE` (run, not merely prepared) or `Close` has freed
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_name_keeps_its_decision_until_it_is_freed() {
    // Reads of customers get the strict profile, other reads one that masks nothing: a
    // customers row masked with the other statement's decision would show the SSN.
    let policy = POLICY.replace(
        "[[rule]]\nid = \"analysts-read\"",
        "[[rule]]\nid = \"analysts-read-customers\"\ngroups = [\"analysts\"]\n\
         max_class = \"read\"\nverbs = [\"SELECT\"]\nrelations = [\"*customers\"]\naction = \"allow\"\n\
         mask_profile = \"strict\"\n\n[[rule]]\nid = \"analysts-read\"\nmask_profile = \"open\"",
    );
    let masks = strict_and_open("strict");
    let g = gateway_with_masks(None, Arc::new(tokens()), |s| s, &policy, Some(masks)).await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("parse", pg.prepare(b"s1", b"SELECT ssn FROM customers WHERE id = 1"))
show("reuse", pg.prepare(b"s1", b"SELECT body FROM notes"))
show("s1", pg.exec_prepared(b"s1", []))
show("prepare deallocate", pg.prepare(b"s1", b"DEALLOCATE s1"))
show("s1 still", pg.exec_prepared(b"s1", []))
show("deallocate", pg.exec_(b"DEALLOCATE s1"))
show("again", pg.prepare(b"s1", b"SELECT 'after deallocate'"))
show("s1 again", pg.exec_prepared(b"s1", []))
show("close", pg.close_prepared(b"s1"))
show("third", pg.prepare(b"s1", b"SELECT ssn FROM customers WHERE id = 2"))
show("s1 third", pg.exec_prepared(b"s1", []))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &["parse ok", "reuse error 42P05", "s1 rows [REDACTED]"],
    );
    // Preparing a DEALLOCATE runs it not: the name is still taken.
    assert!(
        stdout.contains("prepare deallocate error 42P05"),
        "{stdout}"
    );
    assert_shows(
        &stdout,
        &["s1 still rows [REDACTED]", "deallocate ok", "again ok"],
    );
    assert!(
        stdout.contains("s1 again rows after deallocate"),
        "{stdout}"
    );
    assert_shows(
        &stdout,
        &["close ok", "third ok", "s1 third rows [REDACTED]"],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert!(!stdout.contains("234-56-7890"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// What the client asks a name to become is not what it becomes: a `DEALLOCATE` the server
/// skipped (a statement before it in the same query failed) freed nothing, and SQL
/// `PREPARE` or `DECLARE` of a name already taken fails, leaving the name its old
/// statement or cursor. The gateway learns what the server did from its answers: the
/// skipped change is undone, and a name the server found taken keeps what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_keeps_its_decision_when_the_server_does_not_change_it() {
    let g = notes_open_customers_strict_gateway().await;
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("parse", pg.prepare(b"s1", b"SELECT ssn FROM customers WHERE id = 1"))
show("skipped", pg.exec_(b"SELECT 1/0; DEALLOCATE s1"))
show("reuse", pg.prepare(b"s1", b"SELECT body FROM notes"))
show("s1", pg.exec_prepared(b"s1", []))
show("sql prepare", pg.exec_(b"PREPARE q1 AS SELECT ssn FROM customers WHERE id = 1"))
show("sql prepare taken", pg.exec_(b"PREPARE q1 AS SELECT body FROM notes"))
show("sql execute", pg.exec_(b"EXECUTE q1"))
show("declare", pg.exec_(b"DECLARE c CURSOR WITH HOLD FOR SELECT ssn FROM customers"))
show("begin", pg.exec_(b"BEGIN"))
show("declare taken", pg.exec_(b"DECLARE c CURSOR FOR SELECT body FROM notes"))
show("rollback", pg.exec_(b"ROLLBACK"))
show("fetch", pg.exec_(b"FETCH 1 FROM c"))
show("close skipped", pg.exec_(b"SELECT 1/0; CLOSE c"))
show("fetch again", pg.exec_(b"FETCH 1 FROM c"))
show("declare held", pg.exec_(b"DECLARE h CURSOR WITH HOLD FOR SELECT ssn FROM customers"))
show("parse declare", pg.prepare(b"d1", b"DECLARE h CURSOR WITH HOLD FOR SELECT body FROM notes"))
show("fetch held", pg.exec_(b"FETCH 1 FROM h"))
"#,
    );
    let out = python(&script).await;
    let stdout = succeeded(&out);
    assert_shows(
        &stdout,
        &[
            "parse ok",
            "skipped error 22012",
            "reuse error 42P05",
            "s1 rows [REDACTED]",
            "sql prepare ok",
            "sql prepare taken error 42P05",
            // The server kept the first statement and cursor, and so does the gateway.
            "sql execute rows [REDACTED]",
            "declare ok",
            "declare taken error 42P03",
            "rollback ok",
            // The cursor outlives that transaction: it is the first one, `WITH HOLD`.
            "fetch rows [REDACTED]",
            "close skipped error 22012",
            "fetch again error 42501",
            // Preparing a DECLARE runs nothing: the cursor reads what it read.
            "declare held ok",
            "parse declare ok",
            "fetch held rows [REDACTED]",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert!(!stdout.contains("234-56-7890"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Column rules need the real source column, which the gateway looks up in the catalog
/// over a connection of its own. When that lookup fails (here the gateway's role may open
/// only one connection, which the session holds), the columns of that table cannot be told
/// apart, and the client's alias is no answer: under a profile with column rules the result
/// is withheld, never masked by content alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_columns_cannot_be_named_is_withheld() {
    use wirewarden::mask::{Engine, FieldRule, Profile, Selector, Strategy};
    let masks = Engine::builder()
        .profile(
            Profile::builder("names")
                .rule(FieldRule::new(Selector::column("name"), Strategy::redact())),
        )
        .default_profile("names")
        .build()
        .unwrap();
    let g = gateway_with_masks(None, Arc::new(tokens()), |s| s, POLICY, Some(masks)).await;
    let role = g.pg.user().to_owned();
    g.pg.psql(&format!("ALTER ROLE \"{role}\" CONNECTION LIMIT 1"))
        .unwrap();
    let out = psql(
        g.addr,
        "tok-analyst",
        "disable",
        &[
            "SELECT name AS who FROM customers ORDER BY id",
            "SELECT 'next'",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("withheld"), "{stderr}");
    assert!(!stdout.contains("Ada Lovelace"), "{stdout}");
    assert!(stdout.contains("next"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors: Vec<String> = events(g.audit_dir.path(), &g.keys)
        .into_iter()
        .filter_map(|e| match e {
            AuditEventKind::CommandCompleted { error, .. } => error,
            _ => None,
        })
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("could not be looked up")),
        "{errors:?}"
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// The id of the decided statement whose text is `text`.
fn decided_id(kinds: &[AuditEventKind], text: &str) -> wirewarden::core::CommandId {
    kinds
        .iter()
        .find_map(|k| match k {
            AuditEventKind::CommandDecided {
                command_id,
                command,
                ..
            } if command.text == text => Some(*command_id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no decision of {text}"))
}

/// A `LISTEN` runs under the decision that allowed it: its notifications are masked with
/// that decision's profile (they used to get the session's), recorded as the statement's
/// transcript (they used not to be recorded), and once a grant the decision relied on has
/// expired, the decision is taken again: refused now, the session ends with `FATAL` 42501,
/// on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_runs_under_the_decision_that_allowed_it() {
    let policy = r#"
[[rule]]
id = "alerts-strict"
groups = ["analysts"]
verbs = ["LISTEN"]
channels = ["alerts"]
action = "allow"
mask_profile = "strict"

[[rule]]
id = "feeds-need-a-grant"
verbs = ["LISTEN"]
action = "review"
reviewers = ["ops"]
timeout = "20s"

[[rule]]
id = "analysts-notify"
groups = ["analysts"]
verbs = ["NOTIFY"]
action = "allow"
"#;
    let g = gateway_with_masks(
        None,
        Arc::new(tokens()),
        |s| s,
        policy,
        Some(strict_and_open("open")),
    )
    .await;
    let grant = support::read_grant("analyst-1", "crm", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let port = g.addr.port();
    let script = format!(
        r#"
import time, psycopg
def connect():
    return psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
conn, sender = connect(), connect()
conn.execute("LISTEN alerts")
sender.execute("NOTIFY alerts, 'ssn 123-45-6789'")
for n in conn.notifies(timeout=5, stop_after=1):
    print("alerts:", n.payload)
conn.execute("LISTEN feed")
ticks = 0
try:
    for i in range(150):
        sender.execute(f"NOTIFY feed, 'tick {{i}}'")
        for n in conn.notifies(timeout=0.2, stop_after=1):
            if n.channel == "feed":
                ticks += 1
        time.sleep(0.2)
    print("never withdrawn after", ticks)
except Exception as e:
    print("withdrawn after", ticks, type(e).__name__, str(e).replace("\n", " "))
"#
    );
    let out = python(&script).await;
    let stdout = text(&out.stdout);
    let alerts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("alerts: "))
        .unwrap_or_else(|| panic!("stdout: {stdout}\nstderr: {}", text(&out.stderr)));
    assert!(
        alerts.starts_with("ssn ") && !alerts.contains("123-45-6789"),
        "{alerts}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("withdrawn after "))
        .unwrap_or_else(|| panic!("stdout: {stdout}\nstderr: {}", text(&out.stderr)));
    let ticks: u32 = line.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(ticks >= 1, "{line}");
    // The `FATAL` comes while the client is idle: libpq reports the closed connection.
    assert!(line.contains("OperationalError"), "{line}");
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |k| {
        support::withdrawn(k).is_some()
    })
    .await;
    let listen = |channel: &str| decided_id(&kinds, &format!("LISTEN {channel}"));
    let (alerts_id, feed_id) = (listen("alerts"), listen("feed"));
    let recorded = support::transcripts(&kinds, alerts_id);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0].contains("\"alerts\"") && !recorded[0].contains("123-45-6789"),
        "{recorded:?}"
    );
    assert!(support::transcripts(&kinds, feed_id).len() >= ticks as usize);
    let ended = support::withdrawn(&kinds);
    assert_eq!(ended, Some((feed_id, "feeds-need-a-grant".to_owned())));
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A `LISTEN` that brings no notification still ends when the grant that allowed it does:
/// the decision is taken again on time, not at a notification that may never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_listen_ends_with_its_grant() {
    let policy = r#"
[[rule]]
id = "feeds-need-a-grant"
verbs = ["LISTEN"]
action = "review"
reviewers = ["ops"]
timeout = "20s"
"#;
    let g = gateway_with_masks(
        None,
        Arc::new(tokens()),
        |s| s,
        policy,
        Some(strict_and_open("open")),
    )
    .await;
    let grant = support::read_grant("analyst-1", "crm", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let port = g.addr.port();
    let script = format!(
        r#"
import psycopg
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
conn.execute("LISTEN feed")
try:
    for _ in range(60):
        for n in conn.notifies(timeout=0.5, stop_after=1):
            print("unexpected:", n)
    print("never withdrawn")
except Exception as e:
    print("withdrawn:", type(e).__name__, str(e).replace("\n", " "))
"#
    );
    let out = python(&script).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("withdrawn: OperationalError")),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |k| {
        support::withdrawn(k).is_some()
    })
    .await;
    let listen = decided_id(&kinds, "LISTEN feed");
    assert_eq!(
        support::withdrawn(&kinds),
        Some((listen, "feeds-need-a-grant".to_owned()))
    );
    assert!(support::transcripts(&kinds, listen).is_empty());
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// `LISTEN` needs a grant; reads (and transaction control) are allowed without one.
const LISTEN_NEEDS_A_GRANT: &str = r#"
[[rule]]
id = "feeds-need-a-grant"
verbs = ["LISTEN"]
action = "review"
reviewers = ["ops"]
timeout = "20s"

[[rule]]
id = "analysts-read"
groups = ["analysts"]
max_class = "read"
action = "allow"
"#;

/// A `LISTEN` the server did not make leaves no channel behind: one it refused (in a
/// failed transaction), one rolled back, one rolled back to a savepoint, and one whose
/// implicit transaction failed. Once the grant that allowed them has expired, the session
/// goes on (it used to end, for channels the server was not listening on), and the server
/// listens on nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_that_failed_or_rolled_back_does_not_end_with_its_grant() {
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, LISTEN_NEEDS_A_GRANT).await;
    let grant = support::read_grant("analyst-1", "crm", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let body = r#"
import time
conn.execute("BEGIN")
for sql in ("SELECT 1/0", "LISTEN refused"):
    show(sql, pg.exec_(sql.encode()))
conn.execute("ROLLBACK")
conn.execute("BEGIN")
conn.execute("LISTEN rolled_back")
conn.execute("ROLLBACK")
conn.execute("BEGIN")
conn.execute("SAVEPOINT s")
conn.execute("LISTEN to_savepoint")
conn.execute("ROLLBACK TO SAVEPOINT s")
conn.execute("COMMIT")
show("implicit", pg.exec_(b"LISTEN implicit; SELECT 1/0"))
# Past the grant's expiry, and the decision it would be taken again at.
time.sleep(4)
try:
    rows = conn.execute("SELECT count(*) FROM pg_listening_channels()").fetchall()
    print("listening on", rows[0][0])
except Exception as e:
    print("ended:", type(e).__name__, str(e).replace("\n", " "))
"#;
    let out = python(&psycopg_script(g.addr.port(), body)).await;
    let stdout = text(&out.stdout);
    let context = || format!("stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(
        stdout.contains("LISTEN refused error 25P02"),
        "{}",
        context()
    );
    assert!(stdout.contains("implicit error 22012"), "{}", context());
    assert!(
        stdout.lines().any(|l| l == "listening on 0"),
        "{}",
        context()
    );
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |k| {
        k.iter()
            .any(|k| matches!(k, AuditEventKind::SessionEnded { .. }))
    })
    .await;
    for channel in ["refused", "rolled_back", "to_savepoint"] {
        decided_id(&kinds, &format!("LISTEN {channel}"));
    }
    assert_eq!(support::withdrawn(&kinds), None);
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A `LISTEN` committed in a transaction block, and one made in a transaction that rolled
/// back to a savepoint taken after it, still end with the grant that allowed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_committed_in_a_transaction_ends_with_its_grant() {
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, LISTEN_NEEDS_A_GRANT).await;
    let grant = support::read_grant("analyst-1", "crm", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let body = r#"
conn.execute("BEGIN")
conn.execute("LISTEN kept")
conn.execute("SAVEPOINT s")
conn.execute("LISTEN dropped")
conn.execute("ROLLBACK TO SAVEPOINT s")
conn.execute("COMMIT")
print("listening on", conn.execute("SELECT count(*) FROM pg_listening_channels()").fetchall()[0][0])
try:
    for _ in range(60):
        for n in conn.notifies(timeout=0.5, stop_after=1):
            print("unexpected:", n)
    print("never withdrawn")
except Exception as e:
    print("withdrawn:", type(e).__name__, str(e).replace("\n", " "))
"#;
    let out = python(&psycopg_script(g.addr.port(), body)).await;
    let stdout = text(&out.stdout);
    let context = || format!("stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l == "listening on 1"),
        "{}",
        context()
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("withdrawn: OperationalError")),
        "{}",
        context()
    );
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |k| {
        support::withdrawn(k).is_some()
    })
    .await;
    let kept = decided_id(&kinds, "LISTEN kept");
    assert_eq!(
        support::withdrawn(&kinds),
        Some((kept, "feeds-need-a-grant".to_owned()))
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// Reads of the notes table, and nothing else: a statement that reads another relation is
/// refused.
const READ_NOTES: &str = r#"
[[rule]]
id = "analysts-read-notes"
groups = ["analysts"]
max_class = "read"
relations = ["*notes"]
action = "allow"
"#;

/// With `standard_conforming_strings` off, a backslash in a plain string escapes the quote:
/// text the gateway lexed the other way would hide what the server runs. The gateway lexes
/// as the server does: from the value the server reports at login (a database can set it
/// off), and, once a statement changes it (in the extended protocol too, where it runs at
/// an `Execute` the gateway does not decide again), both ways, refusing text that reads
/// differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_lexed_as_the_server_lexes_them() {
    let policy = format!(
        "{READ_NOTES}\n[[rule]]\nid = \"analysts-flip\"\ngroups = [\"analysts\"]\n\
         max_class = \"read\"\nfunctions = [\"flip\"]\naction = \"allow\"\n"
    );
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, &policy).await;
    g.pg.psql(A_NOTE).unwrap();
    // Changed in the extended protocol, then used in either protocol.
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("set", pg.exec_params(b"SET standard_conforming_strings = off", []))
show("simple", pg.exec_(b"SELECT '\\' ', ssn FROM customers --'"))
show("extended", pg.exec_params(b"SELECT '\\' ', ssn FROM customers --'", []))
show("notes", pg.exec_(b"SELECT body FROM notes"))
"#,
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &[
            "set ok",
            "simple error 42501",
            "extended error 42501",
            "notes rows a note (1)",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    // Off for the whole database: the session starts lexing that way.
    g.pg.psql("ALTER DATABASE app SET standard_conforming_strings = off")
        .unwrap();
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("hidden delete", pg.exec_(b"SELECT 'x\\' '; DELETE FROM notes; --'"))
show("notes", pg.exec_(b"SELECT body FROM notes"))
"#,
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &["hidden delete error 42501", "notes rows a note (1)"],
    );
    // Changed where no statement says so (inside a function): what the gateway decided
    // since may have been lexed the other way, so the session ends.
    g.pg.psql(
        "ALTER DATABASE app RESET standard_conforming_strings; \
         CREATE FUNCTION flip() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 1; END $$",
    )
    .unwrap();
    let script = raw_script(
        g.addr.port(),
        r#"
send(Q(b"SELECT flip()"))
try:
    answers(1)
except SystemExit as e:
    print(e)
"#,
    );
    let out = python(&script).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("error 42501\nclosed"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(!stdout.contains("ready"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// `ALTER DATABASE … SET standard_conforming_strings = off` stores a default for sessions
/// that start later: the session that runs it goes on lexing as the server does for it
/// (on), where it used to lex both ways and refuse text that reads differently; a later
/// session starts lexing off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_default_changes_how_later_sessions_lex_not_this_one() {
    let policy = format!(
        "{READ_NOTES}\n[[rule]]\nid = \"analysts-alter-database\"\ngroups = [\"analysts\"]\n\
         verbs = [\"ALTER DATABASE\"]\naction = \"allow\"\n"
    );
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, &policy).await;
    g.pg.psql(A_NOTE).unwrap();
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("alter", pg.exec_(b"ALTER DATABASE app SET standard_conforming_strings = off"))
show("this session", pg.exec_(b"SELECT 'a\\' || body FROM notes"))
later = psycopg.connect(host="127.0.0.1", port=conn.info.port, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
show("later session", later.pgconn.exec_(b"SELECT 'a\\'b' || body FROM notes"))
"#,
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &[
            "alter ok",
            "this session rows a\\a note (1)",
            "later session rows a'ba note (1)",
        ],
    );
    let altered = |k: &AuditEventKind| matches!(k, AuditEventKind::CommandDecided { command, .. } if command.verb == "ALTER DATABASE");
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |k| k.iter().any(altered)).await;
    let setting = kinds.iter().find_map(|k| match k {
        AuditEventKind::CommandDecided { command, .. } if command.verb == "ALTER DATABASE" => {
            command
                .objects
                .iter()
                .find(|o| o.kind == wirewarden::core::ObjectKind::Setting)
                .map(|o| (o.name.clone(), o.access))
        }
        _ => None,
    });
    assert_eq!(
        setting,
        Some((
            "standard_conforming_strings".to_owned(),
            wirewarden::core::Access::Define
        ))
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// `EXECUTE p` runs what `p` names when it runs: prepared with `Parse`, it is decided
/// again at each execution, so a statement prepared under the name since (here one that
/// reads what policy refuses) does not run under the decision the old one had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_runs_under_a_decision_on_what_its_name_holds_now() {
    let g = gateway_with_policy(None, Arc::new(tokens()), |s| s, READ_NOTES).await;
    g.pg.psql(A_NOTE).unwrap();
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("prepare", pg.exec_(b"PREPARE p AS SELECT body FROM notes"))
show("parse", pg.prepare(b"s1", b"EXECUTE p"))
show("first", pg.exec_prepared(b"s1", []))
show("deallocate", pg.exec_(b"DEALLOCATE p"))
show("again", pg.exec_(b"PREPARE p AS SELECT ssn FROM customers"))
show("direct", pg.exec_(b"EXECUTE p"))
show("s1", pg.exec_prepared(b"s1", []))
"#,
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &[
            "first rows a note (1)",
            "direct error 42501",
            "s1 error 42501",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// COPY's data names no column, so a profile with column rules cannot be applied to it:
/// such a COPY is withheld (content detection alone would let a name or an unformatted
/// number through), while one under a profile without column rules goes out masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_under_column_rules_is_withheld() {
    let g = notes_open_customers_strict_gateway().await;
    g.pg.psql(A_NOTE).unwrap();
    let script = format!(
        r#"
import psycopg
conn = psycopg.connect(host="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="disable", autocommit=True)
cur = conn.cursor()
for label, sql in [("customers", "COPY customers (id, ssn) TO STDOUT"), ("query", "COPY (SELECT ssn FROM customers) TO STDOUT WITH CSV"), ("notes", "COPY notes (body) TO STDOUT")]:
    try:
        with cur.copy(sql) as copy:
            print(label, "copy", b"".join(bytes(b) for b in copy).decode().strip())
    except psycopg.Error as e:
        print(label, "error", e.sqlstate)
cur.execute("SELECT ssn FROM customers ORDER BY id")
print("after", cur.fetchone()[0])
"#,
        port = g.addr.port()
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &[
            "customers error XX000",
            "query error XX000",
            "notes copy a note",
            "after [REDACTED]",
        ],
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A gateway with [`POLICY`] whose one mask profile redacts `customers.name`: a column rule
/// that content detectors alone would not reproduce.
async fn names_redacted_gateway() -> Gateway {
    use wirewarden::mask::{Engine, FieldRule, Profile, Selector, Strategy};
    let masks = Engine::builder()
        .profile(Profile::builder("names").rule(FieldRule::new(
            Selector::column("customers.name"),
            Strategy::redact(),
        )))
        .default_profile("names")
        .build()
        .unwrap();
    gateway_with_masks(None, Arc::new(tokens()), |s| s, POLICY, Some(masks)).await
}

/// A rule on a table's column reaches it read through a view: the server names the view as
/// the column's source, and the gateway traces the view's columns to the table columns
/// they read. A view column it cannot trace (renamed, computed) is withheld under a profile
/// with column rules, never passed on masked by content alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_rules_follow_a_view_to_its_table() {
    let g = names_redacted_gateway().await;
    let role = g.pg.user().to_owned();
    g.pg.psql(&format!(
        "CREATE VIEW people AS SELECT id, name FROM customers; \
         CREATE VIEW renamed AS SELECT id, name AS who FROM customers; \
         CREATE VIEW of_people AS SELECT name FROM people; \
         GRANT SELECT ON people, renamed, of_people TO \"{role}\""
    ))
    .unwrap();
    let script = psycopg_script(
        g.addr.port(),
        r#"
show("table", pg.exec_(b"SELECT name FROM customers ORDER BY id"))
show("view", pg.exec_(b"SELECT name FROM people ORDER BY id"))
show("view ids", pg.exec_(b"SELECT id FROM people ORDER BY id"))
show("renamed", pg.exec_(b"SELECT who FROM renamed ORDER BY id"))
show("nested", pg.exec_(b"SELECT name FROM of_people"))
"#,
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &[
            "table rows [REDACTED] (2)",
            "view rows [REDACTED] (2)",
            "view ids rows 1 (2)",
            "renamed error XX000",
            "nested error XX000",
        ],
    );
    assert!(!stdout.contains("Ada Lovelace"), "{stdout}");
    assert_verifies(g.audit_dir.path(), &g.keys);
}

/// An error can quote the value that caused it: `SELECT name::int` fails with `invalid
/// input syntax for type integer: "Ada Lovelace"`, a read any rule allowing reads lets
/// through. Under a profile with column rules such an error keeps its SQLSTATE and gets the
/// condition's name for a message; errors about the statement's own words keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_quote_values_column_rules_mask() {
    let g = names_redacted_gateway().await;
    // Routines that pass a name out in a notice and in an error whose SQLSTATE they chose.
    let role = g.pg.user().to_owned();
    g.pg.psql(&format!(
        "CREATE FUNCTION whisper() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
           RAISE NOTICE '%', (SELECT name FROM customers WHERE id = 1); RETURN 1; END $$; \
         CREATE FUNCTION shout() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION USING ERRCODE = '42000', \
             MESSAGE = (SELECT name FROM customers WHERE id = 1); END $$; \
         GRANT EXECUTE ON FUNCTION whisper(), shout() TO \"{role}\""
    ))
    .unwrap();
    let script = psycopg_script(
        g.addr.port(),
        r#"
conn.add_notice_handler(lambda d: print("notice", d.sqlstate, d.message_primary))
show("whisper", pg.exec_(b"SELECT whisper()"))
show("shout", pg.exec_(b"SELECT shout()"))
show("cast", pg.exec_(b"SELECT name::int FROM customers ORDER BY id"))
show("date", pg.exec_(b"SELECT to_date(name, 'YYYY-MM-DD') FROM customers ORDER BY id"))
show("typo", pg.exec_(b"SELECT nme FROM customers"))
show("zero", pg.exec_(b"SELECT 1/0"))
show("after", pg.exec_(b"SELECT count(*) FROM customers"))
"#,
    );
    let stdout = succeeded(&python(&script).await);
    assert_shows(
        &stdout,
        &[
            "cast error 22P02 ERROR:  invalid text representation (wirewarden:",
            "date error 22007",
            "typo error 42703 ERROR:  column \"nme\" does not exist",
            "zero error 22012 ERROR:  division by zero (wirewarden:",
            "after rows 2 (1)",
            "notice 00000 notice raised inside a routine (wirewarden:",
            "shout error 42000 ERROR:  error raised inside a routine (wirewarden:",
        ],
    );
    assert!(!stdout.contains("Ada"), "{stdout}");
    // The trail keeps the errors as the client saw them.
    let errors = |kinds: &[AuditEventKind]| -> Vec<String> {
        kinds
            .iter()
            .filter_map(|k| match k {
                AuditEventKind::CommandCompleted {
                    error: Some(error), ..
                } => Some(error.clone()),
                _ => None,
            })
            .collect()
    };
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |k| errors(k).len() >= 5).await;
    let errors = errors(&kinds);
    assert!(errors.iter().any(|e| e.contains("22P02")), "{errors:?}");
    assert!(errors.iter().all(|e| !e.contains("Ada")), "{errors:?}");
}
