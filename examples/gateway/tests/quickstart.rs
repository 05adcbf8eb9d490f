//! The README's quick start, run as written against a real PostgreSQL.
//!
//! The configuration files are taken from the "Quick start" section of README.md (each is the
//! fenced block under the paragraph that begins with the file's name), and only what depends
//! on this machine is changed: the upstream address, the listen ports, and the password
//! placeholder. The shell steps that issue the token, start the gateway and connect with psql
//! run through `sh` as printed. If the README drifts from what the binary accepts, this test
//! fails.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wirewarden_testkit::{Postgres, free_port, random_secret};

mod support;
use support::{hex32, text};

const BIN: &str = env!("CARGO_BIN_EXE_wirewarden-gateway");

// === reading the README ===

/// A fenced code block of the quick start.
#[derive(Debug)]
struct Block {
    /// The info string after the opening fence (`toml`, `sh`, `sql`).
    lang: String,
    /// The first line of the paragraph just before the fence.
    intro: String,
    /// The `###` heading the block sits under, if any.
    subsection: Option<String>,
    body: String,
}

/// The fenced blocks of the README's `## Quick start` section, in order.
fn quick_start_blocks(readme: &str) -> Vec<Block> {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim_end() != "## Quick start");
    assert!(lines.next().is_some(), "README has no `## Quick start`");
    let mut blocks = Vec::new();
    // The first line of the paragraph being read, and of the last one that ended.
    let mut paragraph: Option<&str> = None;
    let mut previous: Option<&str> = None;
    let mut subsection = None;
    let mut open: Option<(String, String, Vec<&str>)> = None;
    for line in lines {
        if let Some((lang, intro, body)) = &mut open {
            if line.trim_end() == "```" {
                blocks.push(Block {
                    lang: std::mem::take(lang),
                    intro: std::mem::take(intro),
                    subsection: subsection.clone(),
                    body: body.join("\n") + "\n",
                });
                open = None;
            } else {
                body.push(line);
            }
            continue;
        }
        if line.starts_with("## ") {
            break;
        }
        if let Some(h) = line.strip_prefix("### ") {
            subsection = Some(h.trim().to_owned());
        }
        if let Some(lang) = line.strip_prefix("```") {
            let intro = paragraph.or(previous).unwrap_or_default().to_owned();
            open = Some((lang.trim().to_owned(), intro, Vec::new()));
            (paragraph, previous) = (None, None);
        } else if line.trim().is_empty() {
            if paragraph.is_some() {
                previous = paragraph.take();
            }
        } else if paragraph.is_none() {
            paragraph = Some(line);
        }
    }
    assert!(open.is_none(), "an unclosed code block in the quick start");
    blocks
}

/// The block that the README introduces as the file `name`.
fn file_block<'a>(blocks: &'a [Block], name: &str) -> &'a str {
    let intro = format!("`{name}`");
    let found: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.subsection.is_none() && b.intro.starts_with(&intro))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the quick start must show `{name}` exactly once"
    );
    &found[0].body
}

/// The one shell block containing `needle`.
fn sh_block<'a>(blocks: &'a [Block], needle: &str) -> &'a str {
    let found: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.lang == "sh" && b.body.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one shell block of the quick start runs {needle:?}"
    );
    &found[0].body
}

/// `text` with `from` replaced by `to`; `from` must occur.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    text.replace(from, to)
}

/// Where `body` (one of the blocks' own strings) stands in the README.
fn position(blocks: &[Block], body: &str) -> usize {
    blocks
        .iter()
        .position(|b| std::ptr::eq(b.body.as_str(), body))
        .expect("a block of the quick start")
}

fn table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    t.get(key)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("no [{key}] table"))
}

fn string<'a>(t: &'a toml::Table, key: &str) -> &'a str {
    t.get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?}"))
}

/// A secret reference's `file` or `env` value.
fn secret_ref<'a>(t: &'a toml::Table, key: &str, kind: &str) -> &'a str {
    string(table(t, key), kind)
}

// === running it ===

/// `PATH` with the directory of the binary under test first, as `cargo install` would put it.
fn path_with_gateway() -> std::ffi::OsString {
    let bin_dir = Path::new(BIN).parent().expect("the binary has a directory");
    let mut dirs = vec![bin_dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).expect("PATH entries join")
}

/// Runs shell text in `dir` with `env`, as a reader would paste it.
fn sh(dir: &Path, script: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path_with_gateway())
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .env_remove("PGPASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sh runs")
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    /// Starts the README's `serve` line (without its `&`) and waits for `ports` to open.
    fn start(dir: &Path, line: &str, env: &[(String, String)], ports: &[u16]) -> Self {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"wirewarden-gateway"), "{line}");
        let mut child = Command::new(BIN)
            .args(&words[1..])
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway starts");
        for &port in ports {
            let start = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = child.try_wait().expect("wait") {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    panic!("serve exited with {status}: {err}");
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "port {port} never opened"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self(child)
    }

    /// SIGTERM, as the README says stops it, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the gateway did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `tok_…` values in psql's aligned output, in order.
fn tokens_in(out: &str) -> Vec<String> {
    out.split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| {
            w.strip_prefix("tok_")
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks = quick_start_blocks(&readme);

    // --- The three files, with only this machine's addresses changed. ---
    let mut gateway: toml::Table =
        toml::from_str(file_block(&blocks, "gateway.toml")).expect("gateway.toml parses");
    let policy = file_block(&blocks, "policy.toml");
    let masking = file_block(&blocks, "masking.toml");
    let seed = file_block(&blocks, "seed.sql");
    let mask_config: toml::Table = toml::from_str(masking).expect("masking.toml parses");

    let targets = gateway
        .get("target")
        .and_then(toml::Value::as_array)
        .expect("[[target]]");
    assert_eq!(targets.len(), 1, "the required part has one target");
    let crm = targets[0].as_table().expect("a target table").clone();
    assert_eq!(string(&crm, "protocol"), "postgres");
    let readme_listen: std::net::SocketAddr = string(&crm, "listen").parse().expect("listen");

    let pg = Postgres::builder()
        .database(string(&crm, "database"))
        .user(string(&crm, "user"))
        .start()
        .expect("PostgreSQL starts");

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let (pg_port, admin_port) = (free_port().unwrap(), free_port().unwrap());
    {
        let t = gateway
            .get_mut("target")
            .and_then(toml::Value::as_array_mut)
            .and_then(|a| a.first_mut())
            .and_then(toml::Value::as_table_mut)
            .expect("target");
        t.insert("listen".into(), format!("127.0.0.1:{pg_port}").into());
        t.insert("upstream".into(), pg.addr().to_string().into());
        let admin = gateway
            .get_mut("admin")
            .and_then(toml::Value::as_table_mut)
            .expect("[admin]");
        admin.insert("listen".into(), format!("127.0.0.1:{admin_port}").into());
    }
    let gateway_toml = toml::to_string(&gateway).expect("gateway.toml serializes");
    std::fs::write(root.join("gateway.toml"), &gateway_toml).unwrap();
    std::fs::write(root.join(string(table(&gateway, "policy"), "file")), policy).unwrap();
    std::fs::write(
        root.join(string(table(&gateway, "masking"), "file")),
        masking,
    )
    .unwrap();
    std::fs::write(root.join("seed.sql"), seed).unwrap();

    // --- Every file the configuration names is made by a command of the quick start. ---
    let audit = table(&gateway, "audit");
    let chain_key = string(audit, "chain_key_file");
    let signing_key = string(audit, "signing_key_file");
    let admin_token = secret_ref(table(&gateway, "admin"), "token", "file");
    let (tls_cert, tls_key) = (string(&crm, "tls_cert"), string(&crm, "tls_key"));
    let tokens_file = string(table(&gateway, "identity"), "tokens_file");
    let all_sh: String = blocks
        .iter()
        .filter(|b| b.lang == "sh")
        .map(|b| b.body.as_str())
        .collect();
    for f in [chain_key, signing_key, admin_token, "mask.key"] {
        assert!(all_sh.contains(&format!("> {f}")), "nothing writes {f}");
    }
    assert!(
        all_sh.contains(&format!("-out {tls_cert}")),
        "nothing makes {tls_cert}"
    );
    assert!(
        all_sh.contains(&format!("-keyout {tls_key}")),
        "nothing makes {tls_key}"
    );
    assert!(
        all_sh.contains(&format!(">> {tokens_file}")),
        "nothing fills {tokens_file}"
    );

    // The keys in the README's formats (`<key-id> <64 hex>`, 64 hex), and a self-signed
    // certificate for localhost and 127.0.0.1 like the openssl command makes.
    std::fs::write(root.join(chain_key), format!("k1 {}\n", hex32())).unwrap();
    std::fs::write(root.join(signing_key), format!("{}\n", hex32())).unwrap();
    std::fs::write(root.join(admin_token), format!("{}\n", hex32())).unwrap();
    std::fs::write(root.join("mask.key"), format!("{}\n", hex32())).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(root.join(tls_cert), cert.pem()).unwrap();
    std::fs::write(root.join(tls_key), key.serialize_pem()).unwrap();

    // --- Secrets and seed data, as printed but for the password and the server's port. ---
    let password_env = secret_ref(&crm, "password", "env");
    let mask_env = string(&mask_config, "key_env");
    let secrets = sh_block(&blocks, "-f seed.sql");
    let mut set_env = Vec::new();
    for var in [password_env, mask_env] {
        let line = secrets
            .lines()
            .find(|l| l.starts_with(&format!("export {var}=")))
            .unwrap_or_else(|| panic!("the quick start never sets {var}"));
        set_env.push(line);
    }
    let placeholder = set_env[0]
        .split('\'')
        .nth(1)
        .expect("the password is a quoted placeholder");
    let secrets = replace(secrets, placeholder, pg.password());
    let secrets = replace(&secrets, "port=5432", &format!("port={}", pg.port()));
    let script = format!("{secrets}\nprintf '%s\\n' \"${mask_env}\"\n");
    let out = sh(root, &script, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mask_key = text(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(mask_key.len(), 64, "{mask_env} is the key from mask.key");
    let rows = pg.psql("SELECT count(*) FROM customers").expect("seeded");
    assert_eq!(rows.trim(), "2", "seed.sql made the table");

    // --- `token issue`, run as printed; the token comes out, a hash goes in the file. ---
    let issue = sh_block(&blocks, "token issue");
    let out = sh(
        root,
        &format!("{issue}\nprintf '%s\\n' \"$AGENT_TOKEN\"\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(
        token.starts_with("ww_"),
        "AGENT_TOKEN is the token: {token:?}"
    );
    let tokens = std::fs::read_to_string(root.join(tokens_file)).unwrap();
    assert!(tokens.contains("[[tokens]]"), "{tokens}");
    assert!(!tokens.contains(&token), "only a hash is stored");

    // --- `serve`, with the secrets the files name and nothing else. ---
    let serve = sh_block(&blocks, "gateway.toml serve");
    let serve_line = serve
        .lines()
        .find(|l| l.contains("gateway.toml serve"))
        .and_then(|l| l.split('#').next())
        .map(|l| l.trim().trim_end_matches('&').trim())
        .expect("a serve line")
        .to_owned();
    let env = vec![
        (password_env.to_owned(), pg.password().to_owned()),
        (mask_env.to_owned(), mask_key),
    ];
    let gw = Serve::start(root, &serve_line, &env, &[pg_port, admin_port]);

    // --- psql as the agent, as printed: the SELECT is masked, the DROP refused. ---
    let connect = sh_block(&blocks, "$AGENT_TOKEN psql");

    // A reader runs the steps in the order printed: each uses only what came before it.
    let at = |body| position(&blocks, body);
    let files = [
        file_block(&blocks, "gateway.toml"),
        file_block(&blocks, "policy.toml"),
        file_block(&blocks, "masking.toml"),
    ];
    let keys = sh_block(&blocks, "-keyout");
    assert!(at(keys) < at(issue), "the keys come before `token issue`");
    for f in files {
        assert!(
            at(f) < at(issue),
            "the files are written before `token issue` reads them"
        );
    }
    assert!(at(seed) < at(sh_block(&blocks, "-f seed.sql")));
    assert!(at(sh_block(&blocks, "-f seed.sql")) < at(serve));
    assert!(at(issue) < at(serve) && at(serve) < at(connect));
    let psql_lines: Vec<&str> = connect
        .lines()
        .filter(|l| l.contains("psql ") && l.contains("$AGENT_TOKEN"))
        .collect();
    let select = psql_lines
        .iter()
        .find(|l| l.contains("SELECT"))
        .expect("a SELECT through the gateway");
    let drop = psql_lines
        .iter()
        .find(|l| l.contains("DROP"))
        .expect("a DROP through the gateway");
    let listen_port = format!("port={}", readme_listen.port());
    let run_psql = |line: &str| {
        let line = replace(line, &listen_port, &format!("port={pg_port}"));
        sh(root, &line, &[("AGENT_TOKEN", &token)])
    };

    let out = run_psql(select);
    let rows = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for secret in [
        "Ada Lovelace",
        "Alan Turing",
        "4111 1111 1111 1111",
        "5500 0000 0000 0004",
    ] {
        assert!(!rows.contains(secret), "{secret} came through: {rows}");
    }
    assert!(rows.contains("**** **** **** 1111"), "{rows}");
    assert!(rows.contains("**** **** **** 0004"), "{rows}");
    let names = tokens_in(&rows);
    assert_eq!(names.len(), 2, "each name is a token: {rows}");
    assert_ne!(names[0], names[1]);

    let out = run_psql(drop);
    assert!(!out.status.success(), "the DROP must fail");
    assert!(
        text(&out.stderr).contains("schema changes go through migrations"),
        "{}",
        text(&out.stderr)
    );
    let rows = pg
        .psql("SELECT count(*) FROM customers")
        .expect("still there");
    assert_eq!(rows.trim(), "2", "the DROP never reached the server");

    let status = gw.stop();
    assert!(status.success(), "{status:?}");

    // --- The optional HTTP target: appended and restarted, the gateway takes it, and the
    // masking key from the environment keeps the tokens as they were. ---
    let http = blocks
        .iter()
        .find(|b| b.lang == "toml" && b.subsection.as_deref().is_some_and(|s| s.contains("HTTP")))
        .expect("the optional HTTP block");
    let mut http_table: toml::Table = toml::from_str(&http.body).expect("the HTTP block parses");
    let http_port = free_port().unwrap();
    let credential_env;
    {
        let t = http_table
            .get_mut("target")
            .and_then(toml::Value::as_array_mut)
            .and_then(|a| a.first_mut())
            .and_then(toml::Value::as_table_mut)
            .expect("the HTTP target");
        assert_eq!(string(t, "protocol"), "http");
        t.insert("listen".into(), format!("127.0.0.1:{http_port}").into());
        credential_env = secret_ref(t, "password", "env").to_owned();
    }
    let mut both = toml::from_str::<toml::Table>(&gateway_toml).unwrap();
    let list = both
        .get_mut("target")
        .and_then(toml::Value::as_array_mut)
        .unwrap();
    list.extend(
        http_table
            .get("target")
            .and_then(toml::Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    std::fs::write(root.join("gateway.toml"), toml::to_string(&both).unwrap()).unwrap();
    let mut env = env;
    env.push((credential_env, random_secret()));
    let gw = Serve::start(root, &serve_line, &env, &[pg_port, http_port, admin_port]);
    let out = run_psql(select);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        tokens_in(&text(&out.stdout)),
        names,
        "tokens stay stable across restarts"
    );
    let status = gw.stop();
    assert!(status.success(), "{status:?}");

    // The audit trail went where the file says, and verifies with the keys made above.
    assert!(root.join(string(audit, "dir")).is_dir());
    let verify = sh(root, "wirewarden-gateway audit verify", &[]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // The checkpoint it prints, kept elsewhere, catches the trail cut together with the
    // checkpoints that covered it, which a verify of the directory alone cannot.
    let stdout = text(&verify.stdout);
    let checkpoint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint "))
        .unwrap_or_else(|| panic!("no checkpoint printed: {stdout}"))
        .to_owned();
    let against = format!("wirewarden-gateway audit verify --trusted-checkpoint {checkpoint}");
    let verify = sh(root, &against, &[]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    let dir = root.join(string(audit, "dir"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }
    let verify = sh(root, &against, &[]);
    assert_eq!(
        verify.status.code(),
        Some(1),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
}

/// The parser finds blocks by the paragraph that introduces them, not by position.
#[test]
fn blocks_are_found_by_their_introduction() {
    let md = "# t\n\n## Quick start\n\nRun:\n\n```sh\necho 1\n```\n\n`a.toml` (some\nwords):\n\n\
              ```toml\nx = 1\n```\n\n### Optional\n\n`a.toml` again:\n\n```toml\ny = 2\n```\n\n\
              ## Next\n\n`a.toml`:\n\n```toml\nz = 3\n```\n";
    let blocks = quick_start_blocks(md);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(file_block(&blocks, "a.toml"), "x = 1\n");
    assert_eq!(sh_block(&blocks, "echo"), "echo 1\n");
    assert_eq!(blocks[2].subsection.as_deref(), Some("Optional"));
}
