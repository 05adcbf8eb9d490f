//! The gateway binary end to end: a configuration on disk, `serve` in front of a real
//! PostgreSQL, psql through it, reviews approved with the CLI, the admin API, and the audit
//! subcommands afterwards.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wirewarden_testkit::{Postgres, Redis, free_port};

mod support;
use support::{hex32, text, wait_port};

const BIN: &str = env!("CARGO_BIN_EXE_wirewarden-gateway");

const SEED: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, card text);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '123-45-6789', '4111 1111 1111 1111'),
  (2, 'Alan Turing', 'alan@example.org', '234-56-7890', '5500 0000 0000 0004');
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
mask_profile = "analyst"

[[rule]]
id = "writes-need-a-dba"
groups = ["analysts"]
max_class = "write"
action = "review"
reviewers = ["dba"]
timeout = "30s"
"#;

const MASKING: &str = r#"
default_profile = "analyst"

[[profile]]
name = "analyst"
strategies = { card_number = { kind = "partial", keep_last = 4 } }
rules = [{ column = "customers.name", strategy = "tokenize" }]
"#;

struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    pg_port: u16,
    redis_port: u16,
    admin_port: u16,
    _pg: Postgres,
    _redis: Redis,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"))
            .args(args)
            .env("ADMIN_TOKEN", "admin-secret")
            .env("CRM_PASSWORD", "unused-by-cli")
            .env("REDIS_PASSWORD", "unused-by-cli")
            .output()
            .unwrap()
    }

    fn psql(&self, token: &str, sql: &[&str]) -> Output {
        let mut cmd = Command::new("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &self.pg_port.to_string(),
            "-U",
            "analyst",
            "-d",
            "app",
        ])
        .env("PGPASSWORD", token)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10");
        for s in sql {
            cmd.args(["-c", s]);
        }
        cmd.output().unwrap()
    }
}

fn start() -> Gateway {
    start_with("")
}

/// A gateway whose `[audit]` table also holds `audit_extra`.
fn start_with(audit_extra: &str) -> Gateway {
    let pg = Postgres::builder().seed_sql(SEED).start().unwrap();
    let redis = Redis::start().unwrap();
    redis
        .cli(&[
            "SET",
            "session:1001",
            r#"{"customer": 1, "card": "4111 1111 1111 1111"}"#,
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let p = |name: &str| -> PathBuf { root.join(name) };
    std::fs::write(p("policy.toml"), POLICY).unwrap();
    std::fs::write(
        p("masking.toml"),
        format!("key = \"{}\"\n{MASKING}", hex32()),
    )
    .unwrap();
    std::fs::write(p("chain.key"), format!("k1 {}\n", hex32())).unwrap();
    std::fs::write(p("signing.key"), format!("{}\n", hex32())).unwrap();
    // The token file: written by `token issue`, as an operator would.
    std::fs::write(p("tokens.toml"), "").unwrap();
    let (pg_port, admin_port) = (free_port().unwrap(), free_port().unwrap());
    let redis_port = free_port().unwrap();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"
token = {{ env = "ADMIN_TOKEN" }}

[identity]
tokens_file = "tokens.toml"

[policy]
file = "policy.toml"

[masking]
file = "masking.toml"

[audit]
dir = "audit"
durability = "fsync"
chain_key_file = "chain.key"
signing_key_file = "signing.key"
{audit_extra}
[[target]]
name = "crm"
protocol = "postgres"
listen = "127.0.0.1:{pg_port}"
upstream = "{upstream}"
database = "{db}"
user = "{user}"
password = {{ env = "CRM_PASSWORD" }}
allow_plaintext_password = true

[[target]]
name = "sessions"
protocol = "redis"
listen = "127.0.0.1:{redis_port}"
upstream = "{redis_upstream}"
user = "{redis_user}"
password = {{ env = "REDIS_PASSWORD" }}
"#,
        upstream = pg.addr(),
        db = pg.database(),
        user = pg.user(),
        redis_upstream = redis.addr(),
        redis_user = redis.user(),
    );
    std::fs::write(p("gateway.toml"), config).unwrap();
    let mut g = Gateway {
        child: Command::new("true").spawn().unwrap(),
        dir,
        pg_port,
        redis_port,
        admin_port,
        _pg: pg,
        _redis: redis,
    };
    let issued = g.cli(&[
        "token",
        "issue",
        "--id",
        "analyst",
        "--subject",
        "analyst-1",
        "--group",
        "analysts",
    ]);
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let out = text(&issued.stdout);
    let token = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let entry: String = out.lines().skip(1).collect::<Vec<_>>().join("\n");
    std::fs::write(p("tokens.toml"), entry + "\n").unwrap();
    std::fs::write(p("token"), &token).unwrap();
    let _ = g.child.wait();
    g.child = Command::new(BIN)
        .arg("--config")
        .arg(p("gateway.toml"))
        .arg("serve")
        .env("ADMIN_TOKEN", "admin-secret")
        .env("CRM_PASSWORD", g._pg.password())
        .env("REDIS_PASSWORD", g._redis.password())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_port(pg_port);
    wait_port(redis_port);
    wait_port(admin_port);
    g
}

/// The first pending review, once one appears (`review list`).
fn next_review(g: &Gateway) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let list = g.cli(&["review", "list"]);
        assert!(list.status.success(), "{}", text(&list.stderr));
        let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        if let Some(review) = v["reviews"].get(0) {
            return review.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no review appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the gateway with SIGTERM and waits for a clean exit.
fn stop(g: &mut Gateway) {
    let _ = Command::new("kill")
        .args(["-TERM", &g.child.id().to_string()])
        .status();
    let status = wait_exit(&mut g.child);
    assert!(status.success(), "{status:?}");
}

/// The trail's events, as `audit export --format jsonl` gives them.
fn exported(g: &Gateway) -> Vec<serde_json::Value> {
    let export = g.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn token(g: &Gateway) -> String {
    std::fs::read_to_string(g.dir.path().join("token")).unwrap()
}

#[test]
fn the_gateway_end_to_end() {
    let g = start();
    let tok = token(&g);

    // A masked SELECT: content detectors and the column rule.
    let out = g.psql(
        &tok,
        &["SELECT name, email, ssn, card FROM customers ORDER BY id"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for secret in [
        "Ada Lovelace",
        "ada@example.com",
        "123-45-6789",
        "4111 1111 1111 1111",
    ] {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }
    assert!(
        stdout.contains("1111"),
        "partial card keeps the last four: {stdout}"
    );

    // A denied DROP, and the same session goes on.
    let out = g.psql(
        &tok,
        &["DROP TABLE customers", "SELECT count(*) FROM customers"],
    );
    assert!(
        text(&out.stderr).contains("schema changes go through migrations"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "2");

    // A wrong token is refused.
    let out = g.psql("wrong-token", &["SELECT 1"]);
    assert!(!out.status.success());

    // A write is held for review and approved from the CLI.
    let tok2 = tok.clone();
    let port = g.pg_port;
    let writer = std::thread::spawn(move || {
        Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "analyst",
                "-d",
                "app",
            ])
            .args([
                "-c",
                "INSERT INTO notes (body) VALUES ('reviewed')",
                "-c",
                "SELECT count(*) FROM notes",
            ])
            .env("PGPASSWORD", tok2)
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap()
    });
    let review = next_review(&g);
    let id = review["id"].as_str().unwrap().to_owned();
    let self_approval = g.cli(&[
        "review",
        "approve",
        &id,
        "--as",
        "analyst-1",
        "--group",
        "dba",
    ]);
    assert!(!self_approval.status.success(), "self-approval must fail");
    let approve = g.cli(&["review", "approve", &id, "--as", "dba-1", "--group", "dba"]);
    assert!(approve.status.success(), "{}", text(&approve.stdout));
    let out = writer.join().unwrap();
    assert!(
        text(&out.stderr).contains("held for review"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).trim().lines().last(),
        Some("1"),
        "{}",
        text(&out.stderr)
    );

    // The admin API: metrics behind the admin token.
    let metrics = http_get(g.admin_port, "/metrics", Some("admin-secret"));
    assert!(
        metrics.contains("wirewarden_commands_denied_total 1"),
        "{metrics}"
    );
    assert!(http_get(g.admin_port, "/metrics", Some("nope")).starts_with("HTTP/1.1 401"));
    assert!(http_get(g.admin_port, "/healthz", None).contains("ok"));

    // Grants through the CLI.
    let grant = g.cli(&[
        "grant",
        "issue",
        "--subject",
        "analyst-1",
        "--target",
        "crm",
        "--class",
        "write",
        "--minutes",
        "5",
        "--as",
        "dba-1",
    ]);
    assert!(grant.status.success(), "{}", text(&grant.stdout));
    let out = g.psql(&tok, &["INSERT INTO notes (body) VALUES ('granted')"]);
    assert!(
        out.status.success() && !text(&out.stderr).contains("held"),
        "{}",
        text(&out.stderr)
    );
    let list = g.cli(&["grant", "list", "--subject", "analyst-1", "--target", "crm"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let gid = v["grants"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        g.cli(&["grant", "revoke", &gid, "--as", "dba-1"])
            .status
            .success()
    );

    // Graceful shutdown, then the audit trail verifies and replays.
    let mut g = g;
    stop(&mut g);
    let verify = g.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let events = exported(&g);
    let session = events
        .iter()
        .find(|e| e["type"] == "session_started")
        .and_then(|e| e["session"].as_str())
        .unwrap()
        .to_owned();
    assert!(events.iter().any(|e| e["type"] == "grant_issued"));
    assert!(events.iter().any(|e| e["type"] == "review_resolved"));
    let replay = g.cli(&["audit", "replay", &session]);
    let transcript = text(&replay.stdout);
    assert!(
        transcript.contains("SELECT (read): allow by rule analysts-read"),
        "{transcript}"
    );
    assert!(transcript.contains("**** **** **** 1111"), "{transcript}");
    assert!(!transcript.contains("123-45-6789"), "{transcript}");
    let ocsf = g.cli(&["audit", "export", "--format", "ocsf"]);
    assert!(
        text(&ocsf.stdout)
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(text(&ocsf.stdout).contains("\"class_uid\":6005"));
}

#[test]
fn configuration_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = { env = \"T\" }\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("gateway.toml") && err.contains("line 4") && err.contains("bogus"),
        "{err}"
    );
    let missing = Command::new(BIN)
        .arg("--config")
        .arg(Path::new("/nonexistent/g.toml"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(text(&missing.stderr).contains("/nonexistent/g.toml"));
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gateway did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_offline_agent_is_tied_to_its_steps_in_the_audit_trail() {
    let g = start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agents/agent.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--pg-port",
            &g.pg_port.to_string(),
            "--pg-database",
            "app",
            "--sslmode",
            "disable",
        ])
        .args(["--pg-token", &token(&g)])
        .args(["--redis-port", &g.redis_port.to_string()])
        .args(["--redis-user", "analyst", "--redis-token", &token(&g)])
        .env("OPENAI_AGENTS_DISABLE_TRACING", "1")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("error 42501"),
        "the DROP was refused: {stdout}"
    );
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    let run = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .unwrap()
        .trim()
        .to_owned();

    let events = exported(&g);
    // Each tool call opened its own session, named by the run and the tool-call id.
    for call in ["call_lookup", "call_cleanup"] {
        let app = format!("agent run={run} call={call}");
        let session = events
            .iter()
            .find(|e| e["type"] == "session_started" && e["application"] == app.as_str())
            .unwrap_or_else(|| panic!("no session for {app}"))["session"]
            .clone();
        let decided = events
            .iter()
            .find(|e| e["type"] == "command_decided" && e["session"] == session)
            .unwrap();
        let expected = if call == "call_cleanup" {
            "deny"
        } else {
            "allow"
        };
        assert_eq!(decided["decision"]["outcome"], expected, "{decided}");
    }
    // The cache tool named its Redis session in the HELLO that logged it in, so the run and
    // the tool call are the session's application there too, not only a later command.
    let app = format!("agent_run={run}_call=call_cache");
    let session = events
        .iter()
        .find(|e| e["type"] == "session_started" && e["application"] == app.as_str())
        .unwrap_or_else(|| panic!("no Redis session for {app}"));
    assert_eq!(session["target"]["protocol"], "redis", "{session}");
    assert!(
        events.iter().any(|e| e["type"] == "command_decided"
            && e["session"] == session["session"]
            && e["command"]["verb"] == "GET"
            && e["decision"]["outcome"] == "allow"),
        "the cached session was read in that session"
    );
    assert!(
        stdout.contains("tool output: {\"customer\": 1"),
        "the cache tool read the session: {stdout}"
    );
    assert!(!stdout.contains("4111 1111 1111 1111"), "{stdout}");
}

#[test]
fn command_texts_in_the_trail_are_masked_when_the_config_asks() {
    let mut g = start_with("mask_commands = true\n");
    let tok = token(&g);
    let card = "4111 1111 1111 1111";

    // A read whose text carries a card number and an email address.
    let read = format!(
        "SELECT count(*) FROM customers WHERE card = '{card}' OR email = 'ada@example.com'"
    );
    let out = g.psql(&tok, &[&read]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1");

    // A write held for review: the reviewer sees what was sent, in clear.
    let write = format!("INSERT INTO notes (body) VALUES ('card {card}')");
    let (port, tok2, sql) = (g.pg_port, tok.clone(), write.clone());
    let writer = std::thread::spawn(move || {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "analyst", "-d", "app", "-c", &sql])
            .env("PGPASSWORD", tok2)
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap()
    });
    let review = next_review(&g);
    assert_eq!(review["command_text"], write.as_str(), "{review}");
    let id = review["id"].as_str().unwrap();
    let approve = g.cli(&["review", "approve", id, "--as", "dba-1", "--group", "dba"]);
    assert!(approve.status.success(), "{}", text(&approve.stdout));
    let out = writer.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A Redis key that names a person.
    let out = Command::new("redis-cli")
        .args(["-p", &g.redis_port.to_string(), "--no-auth-warning"])
        .args(["--user", "analyst", "--pass", &tok])
        .args(["GET", "user:ada@example.com"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("wirewarden"),
        "{}",
        text(&out.stdout)
    );

    stop(&mut g);
    let verify = g.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    let events = exported(&g);
    let trail: String = events.iter().map(ToString::to_string).collect();
    for secret in [card, "ada@example.com"] {
        assert!(!trail.contains(secret), "{secret} is in the trail");
    }
    let decided: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "command_decided")
        .collect();
    let texts: Vec<&str> = decided
        .iter()
        .map(|e| e["command"]["text"].as_str().unwrap())
        .collect();
    // What was done stays readable; the card keeps its last four, as the profile says.
    assert!(
        texts.iter().any(
            |t| t.starts_with("SELECT count(*) FROM customers WHERE card = '")
                && t.contains("1111'")
        ),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("GET user:")),
        "{texts:?}"
    );

    // The trail's digests are keyed with a key derived from the chain key: the held
    // command's decision and its review request carry the same keyed digest, and it is the
    // keyed form of the digest the review bound its approval to.
    let chain = std::fs::read_to_string(g.dir.path().join("chain.key")).unwrap();
    let mut parts = chain.split_whitespace();
    let chain = wirewarden::audit::ChainKey::from_hex(parts.next().unwrap(), parts.next().unwrap())
        .unwrap();
    let masker = wirewarden::trail::CommandMasker::new(
        std::sync::Arc::new(wirewarden::mask::Profile::builder("any").build().unwrap()),
        chain.derive_key(wirewarden::trail::TRAIL_DIGEST_KEY_CONTEXT),
    );
    let bound: wirewarden::core::CommandDigest = review["binding"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let keyed = masker.trail_digest(&bound).to_string();
    let requested = events
        .iter()
        .find(|e| e["type"] == "review_requested")
        .unwrap();
    assert_eq!(requested["digest"], keyed.as_str(), "{requested}");
    let held = decided
        .iter()
        .find(|e| e["command_id"] == requested["command_id"])
        .unwrap();
    assert_eq!(held["command"]["digest"], keyed.as_str(), "{held}");
    assert!(
        held["command"]["text"]
            .as_str()
            .unwrap()
            .starts_with("INSERT INTO notes (body) VALUES ('card "),
        "{held}"
    );
}
