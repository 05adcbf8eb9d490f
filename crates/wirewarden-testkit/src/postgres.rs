//! A real PostgreSQL server in a temporary directory on a free loopback port.
//!
//! `initdb` with SCRAM-SHA-256 for TCP logins (trust only on the private Unix socket that
//! the testkit itself uses for set-up), a named database owned by a named login role, and
//! optional seed SQL. When the test process runs as root (as CI does), the server runs as
//! the `postgres` user that the Debian package creates, since PostgreSQL refuses root.
//!
//! With [`PostgresBuilder::tls`] the server also speaks TLS, with a certificate issued for
//! `localhost` and `127.0.0.1` by a throwaway certificate authority made for that one
//! server; [`Postgres::tls`] hands out the authority so a client can trust exactly it.
//! [`PostgresBuilder::tls_only`] further refuses every TCP login that is not encrypted.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{find_in_path, lookup_user, read_log, run, running_as_root};
use crate::tls::{TlsKey, TlsMaterial};
use crate::{Error, Result, free_port, random_secret};

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SUPERUSER: &str = "postgres";

/// Configures and starts a [`Postgres`].
#[derive(Debug, Clone)]
pub struct PostgresBuilder {
    database: String,
    user: String,
    password: String,
    seed_sql: Vec<String>,
    superuser_sql: Vec<String>,
    settings: Vec<(String, String)>,
    tls: Option<TlsKey>,
    tls_only: bool,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        Self {
            database: "app".into(),
            user: "agent".into(),
            password: random_secret(),
            seed_sql: Vec::new(),
            superuser_sql: Vec::new(),
            settings: Vec::new(),
            tls: None,
            tls_only: false,
        }
    }
}

impl PostgresBuilder {
    /// The database to create (default `app`), owned by the login role.
    #[must_use]
    pub fn database(mut self, name: &str) -> Self {
        self.database = name.to_owned();
        self
    }

    /// The login role to create (default `agent`).
    #[must_use]
    pub fn user(mut self, name: &str) -> Self {
        self.user = name.to_owned();
        self
    }

    /// The login role's password (default: 32 random hex characters). Stored by the server
    /// as a SCRAM-SHA-256 verifier.
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = password.to_owned();
        self
    }

    /// SQL run once after start-up, as the login role, in the database. May be called
    /// several times; scripts run in order.
    #[must_use]
    pub fn seed_sql(mut self, sql: &str) -> Self {
        self.seed_sql.push(sql.to_owned());
        self
    }

    /// SQL run once after start-up as the superuser, in the database, before the seed SQL
    /// (extensions, other roles).
    #[must_use]
    pub fn superuser_sql(mut self, sql: &str) -> Self {
        self.superuser_sql.push(sql.to_owned());
        self
    }

    /// A server setting passed as `-c name=value`.
    #[must_use]
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Turns TLS on (`ssl = on`) with a fresh ECDSA P-256 certificate for `localhost` and
    /// `127.0.0.1`, issued by a certificate authority generated for this server alone.
    /// Plaintext TCP logins are still accepted unless [`tls_only`](Self::tls_only) is set.
    #[must_use]
    pub fn tls(self) -> Self {
        let key = self.tls.unwrap_or_default();
        self.tls_key(key)
    }

    /// Turns TLS on as [`tls`](Self::tls) does, with keys of this type for both the
    /// authority and the server. The server certificate's signature algorithm, and so the
    /// hash of SCRAM's `tls-server-end-point` channel binding, follows from it.
    #[must_use]
    pub fn tls_key(mut self, key: TlsKey) -> Self {
        self.tls = Some(key);
        self
    }

    /// Turns TLS on and accepts TCP logins only over TLS: `pg_hba.conf` has `hostssl`
    /// (SCRAM-SHA-256) entries and rejects `hostnossl` ones. The testkit's own set-up still
    /// uses the private Unix socket.
    #[must_use]
    pub fn tls_only(mut self) -> Self {
        self.tls_only = true;
        self.tls()
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] naming the Debian package when PostgreSQL is not installed;
    /// start-up and set-up failures with the server's log.
    pub fn start(self) -> Result<Postgres> {
        let bins = Binaries::locate()?;
        let run_as = if running_as_root() {
            Some(lookup_user(SUPERUSER).ok_or(Error::NoUnprivilegedUser { user: SUPERUSER })?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("wirewarden-pg-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let socket_dir = root.join("sock");
        let log = root.join("postgres.log");
        fs::create_dir(&socket_dir).map_err(|e| Error::io("creating the socket directory", e))?;
        let superuser_password = random_secret();
        let pwfile = root.join("pwfile");
        fs::write(&pwfile, format!("{superuser_password}\n"))
            .map_err(|e| Error::io("writing the password file", e))?;
        if let Some((uid, gid)) = run_as {
            for p in [&root, &socket_dir, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("handing {} to {SUPERUSER}", p.display()), e))?;
            }
        }

        let mut initdb = Command::new(&bins.initdb);
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["--no-sync", "--no-locale", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()));
        as_user(&mut initdb, run_as);
        run(&mut initdb)?;

        let tls = match self.tls {
            Some(key) => Some(TlsMaterial::generate(key, &root.join("tls"), run_as)?),
            None => None,
        };
        if self.tls_only {
            let hba = data.join("pg_hba.conf");
            fs::write(&hba, TLS_ONLY_HBA).map_err(|e| Error::io("writing pg_hba.conf", e))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&hba, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("handing pg_hba.conf to {SUPERUSER}"), e))?;
            }
        }

        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let logfile = fs::File::create(&log).map_err(|e| Error::io("creating the log", e))?;
            let logfile2 = logfile
                .try_clone()
                .map_err(|e| Error::io("duplicating the log handle", e))?;
            if let Some((uid, gid)) = run_as {
                let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
            }
            let mut cmd = Command::new(&bins.postgres);
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(&socket_dir)
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=100"])
                .args(["-c", "shared_buffers=16MB", "-c", "logging_collector=off"]);
            if let Some(tls) = &tls {
                cmd.args(["-c", "ssl=on", "-c"])
                    .arg(format!("ssl_cert_file={}", tls.cert_file().display()))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", tls.key_file().display()));
            }
            for (k, v) in &self.settings {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            cmd.stdin(Stdio::null()).stdout(logfile).stderr(logfile2);
            as_user(&mut cmd, run_as);
            let child = cmd.spawn().map_err(|e| Error::io("starting postgres", e))?;
            let mut server = Postgres {
                child: Some(child),
                bins: bins.clone(),
                run_as,
                port,
                data: data.clone(),
                socket_dir: socket_dir.clone(),
                log: log.clone(),
                database: self.database.clone(),
                user: self.user.clone(),
                password: self.password.clone(),
                superuser_password: superuser_password.clone(),
                tls: tls.clone(),
                dir: None,
            };
            match server.wait_ready() {
                Ok(()) => {
                    server.dir = Some(dir);
                    server.set_up(&self)?;
                    return Ok(server);
                }
                Err(Error::StartFailed { log, .. }) if log.contains("could not bind") => {
                    // Someone took the port between our probe and the server's bind.
                    last_log = log;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::StartFailed {
            server: "postgres",
            log: last_log,
        })
    }
}

fn as_user(cmd: &mut Command, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
}

#[derive(Debug, Clone)]
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
    pg_ctl: PathBuf,
    pg_isready: PathBuf,
    psql: PathBuf,
}

impl Binaries {
    fn locate() -> Result<Self> {
        let bindir = std::env::var_os("WIREWARDEN_PG_BINDIR")
            .map(PathBuf::from)
            .or_else(newest_debian_bindir);
        let extra: Vec<&Path> = bindir.as_deref().into_iter().collect();
        // Prefer the server's own bindir over PATH so all tools come from one version.
        let find = |name: &'static str, package: &'static str| {
            bindir
                .as_ref()
                .map(|d| d.join(name))
                .filter(|p| crate::process::is_executable(p))
                .or_else(|| find_in_path(name, &extra))
                .ok_or(Error::MissingBinary {
                    binary: name,
                    package,
                })
        };
        Ok(Self {
            initdb: find("initdb", "postgresql")?,
            postgres: find("postgres", "postgresql")?,
            pg_ctl: find("pg_ctl", "postgresql")?,
            pg_isready: find("pg_isready", "postgresql-client")?,
            psql: find("psql", "postgresql-client")?,
        })
    }
}

/// `/usr/lib/postgresql/<newest>/bin`, where Debian installs the server binaries.
fn newest_debian_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// A running PostgreSQL server. Stopped (immediate shutdown) and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    bins: Binaries,
    run_as: Option<(u32, u32)>,
    port: u16,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    database: String,
    user: String,
    password: String,
    superuser_password: String,
    tls: Option<PostgresTls>,
    // Declared last: removed after the server has stopped.
    dir: Option<tempfile::TempDir>,
}

impl Postgres {
    /// A builder with defaults: database `app`, user `agent`, a random password.
    #[must_use]
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// Starts a server with the defaults.
    ///
    /// # Errors
    /// As [`PostgresBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// Always `127.0.0.1`.
    #[must_use]
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The database created for the test.
    #[must_use]
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The login role created for the test.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The login role's password.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The superuser's name (`postgres`).
    #[must_use]
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password (for SCRAM logins over TCP).
    #[must_use]
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// `postgresql://user:password@127.0.0.1:port/database`.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, self.database
        )
    }

    /// The superuser's URL for the test database.
    #[must_use]
    pub fn superuser_url(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@127.0.0.1:{}/{}",
            self.superuser_password, self.port, self.database
        )
    }

    /// The server's TLS material when it was started with [`PostgresBuilder::tls`].
    #[must_use]
    pub fn tls(&self) -> Option<&PostgresTls> {
        self.tls.as_ref()
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log so far.
    #[must_use]
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Runs SQL with `psql -XAt` as the superuser in the test database (over the private
    /// Unix socket) and returns what it printed. Stops at the first error.
    ///
    /// # Errors
    /// [`Error::Command`] with psql's error output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_as(SUPERUSER, &self.database, sql)
    }

    /// Runs SQL with `psql -XAt` as `role` in `database`.
    ///
    /// # Errors
    /// [`Error::Command`] with psql's error output.
    pub fn psql_as(&self, role: &str, database: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(&self.bins.psql);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                role,
                "-d",
                database,
                "-f",
                "-",
            ])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = "psql".to_owned();
        let mut child = cmd.spawn().map_err(|e| Error::io("running psql", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .map_err(|e| Error::io("writing SQL to psql", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("waiting for psql", e))?;
        if !out.status.success() {
            return Err(Error::Command {
                program,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
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
                    server: "postgres",
                    log: self.log(),
                });
            }
            let ready = Command::new(&self.bins.pg_isready)
                .arg("-q")
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", SUPERUSER])
                .status()
                .map_err(|e| Error::io("running pg_isready", e))?;
            if ready.success() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Timeout {
                    server: "postgres",
                    waited: READY_TIMEOUT,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn set_up(&self, b: &PostgresBuilder) -> Result<()> {
        let setup = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {user} LOGIN PASSWORD {password};\n\
             CREATE DATABASE {db} OWNER {user};\n",
            user = quote_ident(&b.user),
            password = quote_literal(&b.password),
            db = quote_ident(&b.database),
        );
        self.psql_as(SUPERUSER, "postgres", &setup)?;
        for sql in &b.superuser_sql {
            self.psql_as(SUPERUSER, &b.database, sql)?;
        }
        for sql in &b.seed_sql {
            self.psql_as(&b.user, &b.database, sql)?;
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Immediate shutdown through pg_ctl (SIGQUIT) so the server removes its shared
        // memory; SIGKILL would leak it.
        let mut stop = Command::new(&self.bins.pg_ctl);
        stop.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut stop, self.run_as);
        if !stop.status().is_ok_and(|s| s.success()) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// The TLS material of a server started with [`PostgresBuilder::tls`].
pub type PostgresTls = TlsMaterial;

/// `pg_hba.conf` for [`PostgresBuilder::tls_only`]: trust on the private Unix socket (the
/// testkit's own set-up), SCRAM-SHA-256 over TLS, and an explicit rejection of unencrypted
/// TCP so a refused client is told why.
const TLS_ONLY_HBA: &str = "\
local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
hostnossl all all 0.0.0.0/0 reject
hostnossl all all ::/0 reject
";

/// `"name"` with embedded quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
