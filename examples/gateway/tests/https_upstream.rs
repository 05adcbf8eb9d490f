//! The gateway binary in front of an HTTPS API: `[target.upstream_tls]` on an `http` target,
//! with Python's `http.server` behind OpenSSL as the upstream (another TLS implementation
//! than the gateway's), presenting a certificate from the testkit's throwaway authority.
//!
//! One target names the server correctly: a request goes through masked, with the
//! gateway's credential. A second target points at the same server but expects another
//! name: its request is answered `502 upstream_unavailable`, the server never sees it, and
//! the failure shows in the admin metrics and the audit trail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wirewarden_testkit::{TlsKey, TlsMaterial, free_port};

mod support;
use support::{Running, hex32, text, wait_port};

const BIN: &str = env!("CARGO_BIN_EXE_wirewarden-gateway");
const SSN: &str = "123-45-6789";
const API_KEY: &str = "billing-key-93c2";

/// An HTTPS server on `port` that logs each request's path and `Authorization` to `log`
/// and answers with a customer record.
const SERVER: &str = r#"
import http.server, json, ssl, sys
port, cert, key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}) + "\n")
        body = json.dumps({"id": 1, "name": "Ada", "ssn": "123-45-6789"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Api)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

const POLICY: &str = r#"
[[rule]]
id = "agents-read"
groups = ["agents"]
max_class = "read"
action = "allow"
"#;

/// One request over a fresh connection; the whole response.
fn get(port: u16, path: &str, token: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("ADMIN_TOKEN", "admin-secret")
        .env("BILLING_API_KEY", API_KEY)
        .output()
        .unwrap()
}

#[test]
fn an_http_target_reaches_an_https_upstream_and_refuses_the_wrong_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let p = |name: &str| -> PathBuf { root.join(name) };
    let tls = TlsMaterial::generate_in(&p("tls"), TlsKey::EcdsaP256).unwrap();

    let api_port = free_port().unwrap();
    let _server = Running(
        Command::new("python3")
            .args(["-c", SERVER, &api_port.to_string()])
            .arg(tls.cert_file())
            .arg(tls.key_file())
            .arg(p("requests.log"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);

    std::fs::write(p("policy.toml"), POLICY).unwrap();
    std::fs::write(
        p("masking.toml"),
        format!(
            "key = \"{}\"\ndefault_profile = \"agent\"\n[[profile]]\nname = \"agent\"\n",
            hex32()
        ),
    )
    .unwrap();
    std::fs::write(p("chain.key"), format!("k1 {}\n", hex32())).unwrap();
    std::fs::write(p("signing.key"), format!("{}\n", hex32())).unwrap();
    std::fs::write(p("tokens.toml"), "").unwrap();
    let (good_port, misnamed_port, admin_port) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let target = |name: &str, port: u16, server_name: &str| {
        format!(
            r#"
[[target]]
name = "{name}"
protocol = "http"
listen = "127.0.0.1:{port}"
upstream = "https://127.0.0.1:{api_port}"
password = {{ env = "BILLING_API_KEY" }}

[target.upstream_tls]
ca_file = "{ca}"
server_name = "{server_name}"

[[target.route]]
method = "GET"
path = "/customers/{{id}}"
"#,
            ca = tls.ca_file().display(),
        )
    };
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
chain_key_file = "chain.key"
signing_key_file = "signing.key"
{}{}"#,
        target("billing", good_port, tls.server_name()),
        target("billing-misnamed", misnamed_port, "billing.internal"),
    );
    std::fs::write(p("gateway.toml"), config).unwrap();

    let issued = cli(
        &p("gateway.toml"),
        &[
            "token",
            "issue",
            "--id",
            "agent",
            "--subject",
            "agent-1",
            "--group",
            "agents",
        ],
    );
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let out = text(&issued.stdout);
    let token = out
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_owned();
    let entry: String = out.lines().skip(1).collect::<Vec<_>>().join("\n");
    std::fs::write(p("tokens.toml"), entry + "\n").unwrap();

    let gateway = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(p("gateway.toml"))
            .arg("serve")
            .env("ADMIN_TOKEN", "admin-secret")
            .env("BILLING_API_KEY", API_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for port in [good_port, misnamed_port, admin_port] {
        wait_port(port);
    }

    // Through TLS to the API, masked, with the gateway's credential.
    let resp = get(good_port, "/customers/1", &token);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""name": "Ada""#), "{resp}");
    assert!(!resp.contains(SSN), "{resp}");
    let seen = std::fs::read_to_string(p("requests.log")).unwrap();
    let seen: Vec<serde_json::Value> = seen
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["path"], "/customers/1");
    assert_eq!(seen[0]["auth"], format!("Bearer {API_KEY}"));

    // The same server under a name its certificate does not carry: refused.
    let resp = get(misnamed_port, "/customers/2", &token);
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(resp.contains("upstream_unavailable"), "{resp}");
    let seen = std::fs::read_to_string(p("requests.log")).unwrap();
    assert_eq!(
        seen.lines().count(),
        1,
        "the server saw the refused request"
    );

    let metrics = {
        let mut s = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-secret\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(
        metrics
            .lines()
            .any(|l| l == "wirewarden_upstream_failures_total 1"),
        "{metrics}"
    );

    // A clean stop (SIGTERM) flushes the audit trail.
    let mut gateway = gateway;
    let _ = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status();
    let start = Instant::now();
    while gateway.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the gateway did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let verify = cli(&p("gateway.toml"), &["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let export = cli(
        &p("gateway.toml"),
        &["audit", "export", "--format", "jsonl"],
    );
    let trail = text(&export.stdout) + &text(&export.stderr);
    assert!(
        trail.contains("billing-misnamed") && trail.contains("not valid for that name"),
        "{trail}"
    );
}
