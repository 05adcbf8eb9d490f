//! A real Redis server on a free loopback port, with an ACL user and no persistence.
//!
//! With [`RedisBuilder::tls`] the server listens for TLS only (`port 0`, `tls-port`), with
//! a certificate issued for `localhost` and `127.0.0.1` by a throwaway certificate
//! authority made for that one server; [`Redis::tls`] hands out the authority so a client
//! can trust exactly it. Clients log in with `AUTH` inside TLS and are not asked for
//! certificates (`tls-auth-clients no`) unless [`RedisBuilder::tls_client_auth`] is set.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{read_log, require, run};
use crate::tls::{TlsKey, TlsMaterial};
use crate::{Error, Result, free_port, random_secret};

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures and starts a [`Redis`].
#[derive(Debug, Clone)]
pub struct RedisBuilder {
    user: String,
    password: String,
    admin_password: String,
    user_rules: String,
    config: Vec<(String, String)>,
    bindir: Option<PathBuf>,
    tls: Option<TlsKey>,
    tls_client_auth: bool,
}

impl Default for RedisBuilder {
    fn default() -> Self {
        Self {
            user: "agent".into(),
            password: random_secret(),
            admin_password: random_secret(),
            user_rules: "~* &* +@all".into(),
            config: Vec::new(),
            bindir: None,
            tls: None,
            tls_client_auth: false,
        }
    }
}

impl RedisBuilder {
    /// The ACL user to create (default `agent`).
    #[must_use]
    pub fn user(mut self, name: &str) -> Self {
        self.user = name.to_owned();
        self
    }

    /// The ACL user's password (default: 32 random hex characters).
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = password.to_owned();
        self
    }

    /// The `default` user's password (default: random). The default user keeps all
    /// permissions and is what [`Redis::cli`] uses.
    #[must_use]
    pub fn admin_password(mut self, password: &str) -> Self {
        self.admin_password = password.to_owned();
        self
    }

    /// The ACL rules of the user (default `~* &* +@all`).
    #[must_use]
    pub fn user_rules(mut self, rules: &str) -> Self {
        self.user_rules = rules.to_owned();
        self
    }

    /// An extra configuration directive (`maxmemory`, `100mb`).
    #[must_use]
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.config.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs `redis-server` and [`Redis::cli`]'s `redis-cli` from `dir` only, for example the
    /// `src/` directory of a Redis built from source (default: the first on `PATH`, then
    /// `/usr/bin`). Nothing else is searched, so a program missing from `dir` is an
    /// [`Error::MissingBinary`], never one of another version.
    #[must_use]
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Serves TLS only: no plaintext port (`port 0`), and the free port is the `tls-port`,
    /// with a fresh ECDSA P-256 certificate for `localhost` and `127.0.0.1` issued by a
    /// certificate authority generated for this server alone ([`Redis::tls`]). Clients
    /// present no certificate (`tls-auth-clients no`; see
    /// [`tls_client_auth`](Self::tls_client_auth)) and log in with `AUTH` inside TLS;
    /// [`Redis::cli`] and the readiness check speak TLS too.
    #[must_use]
    pub fn tls(self) -> Self {
        let key = self.tls.unwrap_or_default();
        self.tls_key(key)
    }

    /// Serves TLS only, as [`tls`](Self::tls) does, with keys of this type for both the
    /// authority and the server.
    #[must_use]
    pub fn tls_key(mut self, key: TlsKey) -> Self {
        self.tls = Some(key);
        self
    }

    /// Serves TLS only, as [`tls`](Self::tls) does, and demands a client certificate
    /// issued by the server's authority (`tls-auth-clients yes`): the one
    /// [`Redis::tls`] hands out ([`TlsMaterial::client_cert_der`]), which [`Redis::cli`]
    /// presents. `AUTH` is still required.
    #[must_use]
    pub fn tls_client_auth(mut self) -> Self {
        self.tls_client_auth = true;
        self.tls()
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] naming the Debian package when Redis is not installed;
    /// start-up failures with the server's log.
    pub fn start(self) -> Result<Redis> {
        for (what, value) in [
            ("user name", &self.user),
            ("password", &self.password),
            ("admin password", &self.admin_password),
        ] {
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\'')
            {
                return Err(Error::io(
                    format!("configuring redis {what}"),
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "must be non-empty, without spaces or quotes",
                    ),
                ));
            }
        }
        let server_bin = require(
            "redis-server",
            "redis-server",
            self.bindir.as_deref(),
            &[Path::new("/usr/bin")],
        )?;
        let dir = tempfile::Builder::new()
            .prefix("wirewarden-redis-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let conf = dir.path().join("redis.conf");
        let log = dir.path().join("redis.log");
        let tls = match self.tls {
            Some(key) => Some(TlsMaterial::generate(key, &dir.path().join("tls"), None)?),
            None => None,
        };
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let listen = match &tls {
                // No plaintext listener at all: every connection must start a handshake.
                Some(tls) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                     tls-ca-cert-file {ca}\ntls-auth-clients {auth}\n",
                    cert = tls.cert_file().display(),
                    key = tls.key_file().display(),
                    ca = tls.ca_file().display(),
                    auth = if self.tls_client_auth { "yes" } else { "no" },
                ),
                None => format!("port {port}\n"),
            };
            let mut text = format!(
                "bind 127.0.0.1\n{listen}protected-mode yes\ndaemonize no\n\
                 save \"\"\nappendonly no\ndir {dir}\nlogfile \"\"\n\
                 user default on >{admin} ~* &* +@all\n\
                 user {user} on >{password} {rules}\n",
                dir = dir.path().display(),
                admin = self.admin_password,
                user = self.user,
                password = self.password,
                rules = self.user_rules,
            );
            for (k, v) in &self.config {
                text.push_str(&format!("{k} {v}\n"));
            }
            fs::write(&conf, text).map_err(|e| Error::io("writing redis.conf", e))?;
            let logfile = fs::File::create(&log).map_err(|e| Error::io("creating the log", e))?;
            let logfile2 = logfile
                .try_clone()
                .map_err(|e| Error::io("duplicating the log handle", e))?;
            let child = Command::new(&server_bin)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(logfile)
                .stderr(logfile2)
                .spawn()
                .map_err(|e| Error::io("starting redis-server", e))?;
            let mut server = Redis {
                child: Some(child),
                port,
                user: self.user.clone(),
                password: self.password.clone(),
                admin_password: self.admin_password.clone(),
                log: log.clone(),
                dir: None,
                bindir: self.bindir.clone(),
                tls: tls.clone(),
                tls_client_auth: self.tls_client_auth,
            };
            match server.wait_ready() {
                Ok(()) => {
                    server.dir = Some(dir);
                    return Ok(server);
                }
                Err(Error::StartFailed { log, .. })
                    if log.contains("Address already in use")
                        || log.contains("Could not create server TCP") =>
                {
                    last_log = log;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::StartFailed {
            server: "redis-server",
            log: last_log,
        })
    }
}

/// A running Redis server. Killed and deleted on drop.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    user: String,
    password: String,
    admin_password: String,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
    bindir: Option<PathBuf>,
    tls: Option<TlsMaterial>,
    tls_client_auth: bool,
}

impl Redis {
    /// A builder with defaults: user `agent`, random passwords.
    #[must_use]
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// Starts a server with the defaults.
    ///
    /// # Errors
    /// As [`RedisBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// Always `127.0.0.1`.
    #[must_use]
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port (with [`RedisBuilder::tls`], the `tls-port`: the only one).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The ACL user created for the test.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The ACL user's password.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The `default` user's password.
    #[must_use]
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// `redis://user:password@127.0.0.1:port`, or `rediss://…` with TLS.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}@127.0.0.1:{}",
            if self.tls.is_some() {
                "rediss"
            } else {
                "redis"
            },
            self.user,
            self.password,
            self.port
        )
    }

    /// The server's TLS material when it was started with [`RedisBuilder::tls`]: the
    /// authority to trust, the server certificate and the name it is issued for.
    #[must_use]
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// The server log so far.
    #[must_use]
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Runs `redis-cli` as the `default` user with `args` and returns what it printed. With
    /// [`RedisBuilder::tls`] it connects over TLS and verifies the server against
    /// [`Redis::tls`]'s authority.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] if redis-cli is not installed (or not in the
    /// [`bindir`](RedisBuilder::bindir)), [`Error::Command`] if it fails.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let cli = require(
            "redis-cli",
            "redis-tools",
            self.bindir.as_deref(),
            &[Path::new("/usr/bin")],
        )?;
        let mut cmd = Command::new(cli);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            cmd.args(["--tls", "--cacert"]).arg(tls.ca_file());
            if self.tls_client_auth {
                cmd.arg("--cert")
                    .arg(tls.client_cert_file())
                    .arg("--key")
                    .arg(tls.client_key_file());
            }
        }
        let out = run(cmd
            .args([
                "--user",
                "default",
                "--pass",
                &self.admin_password,
                "--no-auth-warning",
            ])
            .args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::StartFailed {
                    server: "redis-server",
                    log: self.log(),
                });
            }
            if self.answers_ping()? {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Timeout {
                    server: "redis-server",
                    waited: READY_TIMEOUT,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ready once it answers `PING` with `+PONG` or `-NOAUTH` (but not `-LOADING`). Over
    /// TLS, once redis-cli, verifying the server's certificate, gets `PONG`.
    fn answers_ping(&self) -> Result<bool> {
        if self.tls.is_some() {
            return match self.cli(&["PING"]) {
                Ok(out) => Ok(out.trim() == "PONG"),
                Err(e @ Error::MissingBinary { .. }) => Err(e),
                Err(_) => Ok(false),
            };
        }
        Ok(self.answers_plaintext_ping())
    }

    fn answers_plaintext_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) => {
                let reply = buf.get(..n).unwrap_or_default();
                reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
            }
            Err(_) => false,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing to persist and no shared memory: SIGKILL is clean enough.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
