//! The gateway binary with client certificates and a revocation list it re-reads while it
//! runs: revoking an agent's certificate in the list file ends that agent's open Redis
//! session (redis-py over TLS with the certificate) within `crl_refresh_secs`, with no
//! restart and no command from the agent, and the end is on record as `credential_revoked`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wirewarden_testkit::{Redis, TlsKey, TlsMaterial, free_port};

mod support;
use support::{Running, hex32, text, wait_port};

const BIN: &str = env!("CARGO_BIN_EXE_wirewarden-gateway");

/// The common name of the testkit's client certificate.
const CLIENT_CN: &str = "wirewarden-testkit client";

fn cli(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("ADMIN_TOKEN", "admin-secret")
        .env("REDIS_PASSWORD", "unused-by-cli")
        .output()
        .unwrap()
}

/// The reasons of the sessions on record that ended because their credential was revoked.
fn revoked(config: &std::path::Path) -> Vec<String> {
    let export = cli(config, &["audit", "export", "--format", "jsonl"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "session_ended" && e["reason"]["kind"] == "credential_revoked")
        .map(|e| {
            e["reason"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn revoking_a_certificate_in_the_list_file_ends_its_open_session() {
    let redis = Redis::start().unwrap();
    redis.cli(&["SET", "plain", "hello"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pki = TlsMaterial::generate_in(&root.join("pki"), TlsKey::EcdsaP256).unwrap();
    let crl = root.join("agents.crl");
    std::fs::write(&crl, pki.crl_pem(false, false).unwrap()).unwrap();
    std::fs::write(
        root.join("policy.toml"),
        "[[rule]]\nid = \"agents-read\"\ngroups = [\"agents\"]\nmax_class = \"read\"\naction = \"allow\"\n",
    )
    .unwrap();
    std::fs::write(root.join("chain.key"), format!("k1 {}\n", hex32())).unwrap();
    std::fs::write(root.join("signing.key"), format!("{}\n", hex32())).unwrap();
    std::fs::write(root.join("tokens.toml"), "").unwrap();
    let (port, admin_port) = (free_port().unwrap(), free_port().unwrap());
    let config = root.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[admin]
listen = "127.0.0.1:{admin_port}"
token = {{ env = "ADMIN_TOKEN" }}

[identity]
tokens_file = "tokens.toml"
crl_refresh_secs = 1

[identity.client_certs]
ca_file = "{ca}"
crl_files = ["agents.crl"]

[[identity.client_certs.rules]]
field = "common_name"
pattern = "{CLIENT_CN}"
groups = ["agents"]

[policy]
file = "policy.toml"

[audit]
dir = "audit"
durability = "fsync"
chain_key_file = "chain.key"
signing_key_file = "signing.key"

[[target]]
name = "sessions"
protocol = "redis"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"
user = "{user}"
password = {{ env = "REDIS_PASSWORD" }}
tls_cert = "{cert}"
tls_key = "{key}"
client_certificates = "required"
"#,
            ca = pki.ca_file().display(),
            cert = pki.cert_file().display(),
            key = pki.key_file().display(),
            upstream = redis.addr(),
            user = redis.user(),
        ),
    )
    .unwrap();
    let _gateway = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("ADMIN_TOKEN", "admin-secret")
            .env("REDIS_PASSWORD", redis.password())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);

    // An agent with the certificate: one GET, then it waits for a line before the next.
    let script = "import os, sys, redis, redis.backoff, redis.retry\n\
r = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), ssl=True, ssl_ca_certs=os.environ['CA'], ssl_certfile=os.environ['CERT'], ssl_keyfile=os.environ['KEY'], decode_responses=True, socket_timeout=20, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))\n\
print(r.get('plain'), flush=True)\n\
sys.stdin.readline()\n\
try:\n    print('served', r.get('plain'), flush=True)\nexcept Exception as e:\n    print('ERROR', type(e).__name__, flush=True)\n";
    let mut agent = Running(
        Command::new("python3")
            .args(["-c", script])
            .env("PORT", port.to_string())
            .env("CA", pki.ca_file())
            .env("CERT", pki.client_cert_file())
            .env("KEY", pki.client_key_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(agent.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "hello");

    // The operator publishes a list naming the certificate; the gateway picks it up on its
    // own and ends the session.
    std::fs::write(&crl, pki.crl_pem(true, false).unwrap()).unwrap();
    let start = Instant::now();
    let ended = loop {
        let ended = revoked(&config);
        if !ended.is_empty() {
            break ended;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the session did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].contains("Revoked"), "{ended:?}");

    let mut input = agent.0.stdin.take().unwrap();
    input.write_all(b"go\n").unwrap();
    input.flush().unwrap();
    let after = lines.next().unwrap().unwrap();
    assert!(after.starts_with("ERROR"), "{after}");

    let verify = cli(&config, &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
}
