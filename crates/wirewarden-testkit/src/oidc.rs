//! A real OpenID Connect provider (the npm package `oidc-provider`) on loopback.
//!
//! The provider script lives in `crates/wirewarden-testkit/oidc/`; its dependencies are
//! installed with `npm ci` there (scripts/test.sh does it). It issues RFC 9068 JWT access
//! tokens through the client-credentials grant with a resource indicator; the resource's
//! configured algorithm (RS256, ES256 or EdDSA) signs them, and the keys are published at
//! `/jwks`.
//!
//! ```no_run
//! let idp = wirewarden_testkit::oidc::OidcProvider::builder()
//!     .client("agent-1", "secret-1", &["analysts"])
//!     .resource("https://crm.test", "ES256", "read write")
//!     .start()?;
//! let token = idp.access_token("agent-1", "https://crm.test", "read")?;
//! # Ok::<(), wirewarden_testkit::Error>(())
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::process::find_in_path;
use crate::{Error, Result, random_secret};

const SERVER: &str = "oidc-provider";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding `provider.mjs` and `package.json`.
fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

#[derive(Debug, Clone)]
struct ClientSpec {
    id: String,
    secret: String,
    groups: Vec<String>,
}

#[derive(Debug, Clone)]
struct ResourceSpec {
    indicator: String,
    alg: String,
    scope: String,
    ttl_secs: u64,
}

/// Configures an [`OidcProvider`].
#[derive(Debug, Clone, Default)]
pub struct OidcProviderBuilder {
    clients: Vec<ClientSpec>,
    resources: Vec<ResourceSpec>,
}

impl OidcProviderBuilder {
    /// Adds a confidential client for the client-credentials grant; `groups` become the
    /// tokens' `groups` claim.
    #[must_use]
    pub fn client(mut self, id: &str, secret: &str, groups: &[&str]) -> Self {
        self.clients.push(ClientSpec {
            id: id.to_owned(),
            secret: secret.to_owned(),
            groups: groups.iter().map(|&g| g.to_owned()).collect(),
        });
        self
    }

    /// Adds a resource server: tokens requested for `indicator` have it as `aud`, are signed
    /// with `alg` (`RS256`, `ES256` or `EdDSA`) and may carry scopes from `scope`. They live
    /// 300 seconds.
    #[must_use]
    pub fn resource(self, indicator: &str, alg: &str, scope: &str) -> Self {
        self.resource_with_ttl(indicator, alg, scope, Duration::from_secs(300))
    }

    /// Like [`OidcProviderBuilder::resource`], with the tokens' lifetime.
    #[must_use]
    pub fn resource_with_ttl(
        mut self,
        indicator: &str,
        alg: &str,
        scope: &str,
        ttl: Duration,
    ) -> Self {
        self.resources.push(ResourceSpec {
            indicator: indicator.to_owned(),
            alg: alg.to_owned(),
            scope: scope.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
        });
        self
    }

    /// Starts `node provider.mjs` on an ephemeral loopback port and waits until its
    /// discovery document answers.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without `node`; [`Error::StartFailed`] if the script exits
    /// (for instance because `npm ci` was not run in its directory); [`Error::Timeout`].
    pub fn start(self) -> Result<OidcProvider> {
        let node = find_in_path("node", &[]).ok_or(Error::MissingBinary {
            binary: "node",
            package: "nodejs",
        })?;
        let dir = script_dir();
        if !dir.join("node_modules").join("oidc-provider").is_dir() {
            return Err(Error::StartFailed {
                server: SERVER,
                log: format!("dependencies missing: run `npm ci` in {}", dir.display()),
            });
        }
        let tmp =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let config_path = tmp.path().join("config.json");
        std::fs::write(&config_path, self.config_json())
            .map_err(|e| Error::io("writing the provider configuration", e))?;
        let log_path = tmp.path().join("provider.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::io("creating the provider log", e))?;
        let mut child = Command::new(node)
            .arg(dir.join("provider.mjs"))
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io("starting node", e))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut provider = OidcProvider {
            child,
            _stdin: stdin,
            port: 0,
            clients: self.clients,
            log_path,
            _tmp: tmp,
        };
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let port = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("port")?.as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else {
            return Err(provider.start_error());
        };
        provider.port = port;
        while Instant::now() < deadline {
            if let Ok((200, _)) = provider.http("GET", "/.well-known/openid-configuration", None) {
                return Ok(provider);
            }
            if let Ok(Some(_)) = provider.child.try_wait() {
                return Err(provider.start_error());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Timeout {
            server: SERVER,
            waited: START_TIMEOUT,
            log: crate::process::read_log(&provider.log_path),
        })
    }

    fn config_json(&self) -> String {
        let clients: Vec<_> = self
            .clients
            .iter()
            .map(|c| {
                serde_json::json!({
                    "client_id": c.id,
                    "client_secret": c.secret,
                    "claims": { "groups": c.groups },
                })
            })
            .collect();
        let resources: Vec<_> = self
            .resources
            .iter()
            .map(|r| {
                serde_json::json!({
                    "indicator": r.indicator,
                    "alg": r.alg,
                    "scope": r.scope,
                    "ttl": r.ttl_secs,
                })
            })
            .collect();
        serde_json::json!({ "clients": clients, "resources": resources }).to_string()
    }
}

/// A running `oidc-provider`; stopped on drop.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    /// Held open: the script exits when its standard input closes.
    _stdin: Option<ChildStdin>,
    port: u16,
    clients: Vec<ClientSpec>,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl OidcProvider {
    /// A builder with no clients or resources.
    #[must_use]
    pub fn builder() -> OidcProviderBuilder {
        OidcProviderBuilder::default()
    }

    /// A provider with one client (`agent`, groups `agents`) and one resource
    /// (`https://api.wirewarden.test`, ES256, scopes `read write`).
    ///
    /// # Errors
    /// As [`OidcProviderBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder()
            .client("agent", &random_secret(), &["agents"])
            .resource("https://api.wirewarden.test", "ES256", "read write")
            .start()
    }

    /// The loopback port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The issuer: `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The JWKS URL: `{issuer}/jwks`.
    #[must_use]
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// The token endpoint: `{issuer}/token`.
    #[must_use]
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// Obtains an access token for `client` (registered with the builder) for `resource`
    /// with `scope`, through the token endpoint.
    ///
    /// # Errors
    /// [`Error::Command`] if the client is unknown or the endpoint refuses (its reply is in
    /// `stderr`); [`Error::Io`] on a connection failure.
    pub fn access_token(&self, client: &str, resource: &str, scope: &str) -> Result<String> {
        let spec = self
            .clients
            .iter()
            .find(|c| c.id == client)
            .ok_or_else(|| Error::Command {
                program: SERVER.into(),
                status: "unknown client".into(),
                stderr: format!("client {client:?} was not registered with the builder"),
            })?;
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &spec.id),
            ("client_secret", &spec.secret),
            ("resource", resource),
            ("scope", scope),
        ]);
        let (status, reply) = self.http("POST", "/token", Some(&body))?;
        let token = (status == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&reply).ok())
            .flatten()
            .and_then(|v| Some(v.get("access_token")?.as_str()?.to_owned()));
        token.ok_or_else(|| Error::Command {
            program: SERVER.into(),
            status: format!("token endpoint answered {status}"),
            stderr: reply,
        })
    }

    /// One HTTP/1.0 exchange with the provider; returns the status and body.
    fn http(&self, method: &str, path: &str, form_body: Option<&str>) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr())
            .map_err(|e| Error::io(format!("connecting to {SERVER}"), e))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let body = form_body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| Error::io(format!("writing to {SERVER}"), e))?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .map_err(|e| Error::io(format!("reading from {SERVER}"), e))?;
        let reply = String::from_utf8_lossy(&reply);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_owned()))
    }

    fn start_error(&mut self) -> Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Error::StartFailed {
            server: SERVER,
            log: crate::process::read_log(&self.log_path),
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(
            form(&[("a b", "x/y:z"), ("scope", "read write")]),
            "a+b=x%2Fy%3Az&scope=read+write"
        );
    }

    #[test]
    fn issues_tokens_and_stops_on_drop() {
        let idp = OidcProvider::builder()
            .client(
                "agent-1",
                "s3cret-s3cret-s3cret-s3cret-s3cret",
                &["analysts"],
            )
            .resource("https://crm.wirewarden.test", "RS256", "read write")
            .start()
            .unwrap();
        let token = idp
            .access_token("agent-1", "https://crm.wirewarden.test", "read")
            .unwrap();
        assert_eq!(token.split('.').count(), 3, "{token}");
        let (status, jwks) = idp.http("GET", "/jwks", None).unwrap();
        assert_eq!(status, 200);
        assert!(jwks.contains("\"kid\":\"rsa-1\""), "{jwks}");
        // A resource that was not configured is refused.
        assert!(
            idp.access_token("agent-1", "https://other.test", "read")
                .is_err()
        );
        assert!(
            idp.access_token("nobody", "https://crm.wirewarden.test", "read")
                .is_err()
        );
        let addr = idp.addr();
        drop(idp);
        assert!(TcpStream::connect(addr).is_err());
    }
}
