//! The gateway's TOML configuration, and turning it into a running pipeline's parts.
//!
//! Every error names the file, and TOML syntax and type errors also the line and column.
//! Secrets are never written in the file itself: each is read from an environment variable
//! (`*_env`) or a file (`*_file`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use wirewarden::audit::{
    ChainKey, CheckpointKey, CheckpointSigner, Durability, FileSink, VerifyKeys,
};
use wirewarden::core::{CommandClass, Protocol, Target};
use wirewarden::http::{HttpTarget, Route, Routes};
use wirewarden::identity::{
    Chain, ClientCertConfig, ClientCertificates, IdentityProvider, JwtConfig, JwtProvider,
    StaticTokens,
};
use wirewarden::mask::Engine as MaskEngine;
use wirewarden::policy::RuleEngine;
use wirewarden::postgres::{
    ChannelBinding, ClientCertMode, PostgresTarget, ScramUser, Secret, ServerTls, UpstreamConfig,
    UpstreamTls,
};
use wirewarden::redis::{RedisTarget, RedisUpstream};
use wirewarden::tls::{ClientCertVerification, CrlFiles};

/// A configuration problem, with where it was found.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

fn err(file: &Path, what: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{}: {what}", file.display()))
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) admin: AdminConfig,
    pub(crate) identity: IdentityConfig,
    pub(crate) policy: PolicyConfig,
    #[serde(default)]
    pub(crate) masking: Option<FileRef>,
    pub(crate) audit: AuditConfig,
    #[serde(default)]
    pub(crate) review: ReviewConfig,
    #[serde(rename = "target", default)]
    pub(crate) targets: Vec<TargetConfig>,
    /// The directory relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub(crate) base: PathBuf,
    /// The client certificate verification every listener and the identity provider share
    /// (built on first use from `[identity.client_certs]`).
    #[serde(skip)]
    verification: std::sync::OnceLock<Arc<ClientCertVerification>>,
    #[serde(skip)]
    pub(crate) path: PathBuf,
}

/// A secret read from the environment or a file.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretRef {
    pub(crate) env: Option<String>,
    pub(crate) file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminConfig {
    pub(crate) listen: SocketAddr,
    /// The admin API's bearer token.
    pub(crate) token: SecretRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityConfig {
    /// Static tokens (`[[tokens]]` entries with blake3 hashes).
    pub(crate) tokens_file: Option<PathBuf>,
    /// JWT access tokens from an OIDC provider.
    pub(crate) jwt: Option<JwtConfig>,
    /// TLS client certificates: the authority that issues agents' certificates (`ca_file`,
    /// required here) and the rules that map a certificate to an identity. Targets opt in
    /// with `client_certificates`.
    #[serde(default)]
    pub(crate) client_certs: Option<ClientCertConfig>,
    /// How often `[identity.client_certs] crl_files` are re-read, in seconds (default 30):
    /// a changed list applies from the next handshake, with no restart.
    #[serde(default)]
    pub(crate) crl_refresh_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRef {
    pub(crate) file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyConfig {
    pub(crate) file: PathBuf,
    /// Put the built-in Redis deny rules (scripting, admin, keyspace-wide commands) before
    /// the file's rules. Default: true.
    #[serde(default = "yes")]
    pub(crate) redis_defaults: bool,
    /// Put the built-in HTTP deny rule (requests no route describes) before the file's
    /// rules. Default: true.
    #[serde(default = "yes")]
    pub(crate) http_defaults: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DurabilityConfig {
    Fsync,
    Buffered,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditConfig {
    pub(crate) dir: PathBuf,
    #[serde(default = "default_durability")]
    pub(crate) durability: DurabilityConfig,
    /// How long records nobody waits for may collect before they are written, in
    /// milliseconds (default 5): every record with `buffered`, the outcomes of commands
    /// with `fsync`.
    pub(crate) write_delay_ms: Option<u64>,
    /// Leave the trail's pages in the page cache once they are on disk (default `false`:
    /// the writer gives them back, and in buffered mode syncs every megabyte to do so).
    #[serde(default)]
    pub(crate) keep_page_cache: bool,
    /// File holding `<key-id> <64 hex>`: the keyed-hash chain key.
    pub(crate) chain_key_file: PathBuf,
    /// File holding the 64-hex Ed25519 seed that signs checkpoints.
    pub(crate) signing_key_file: PathBuf,
    /// Mask command texts in the trail and key their digests (`wirewarden::trail`): `true`
    /// with the masking engine's default profile, a string with the profile of that name.
    /// Default `false`: texts are kept as sent. The digest key is derived from the chain key.
    #[serde(default)]
    pub(crate) mask_commands: MaskCommands,
}

/// `[audit] mask_commands`: off, on with the default profile, or on with a named one.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum MaskCommands {
    /// `true` or `false`.
    Switch(bool),
    /// A profile of the masking file.
    Profile(String),
}

impl Default for MaskCommands {
    fn default() -> Self {
        Self::Switch(false)
    }
}

fn default_durability() -> DurabilityConfig {
    DurabilityConfig::Fsync
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewConfig {
    /// The longest a command is held, in seconds (default 3600).
    pub(crate) max_wait_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetConfig {
    pub(crate) name: String,
    pub(crate) protocol: String,
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: String,
    /// The PostgreSQL database (required for `postgres` targets).
    #[serde(default)]
    pub(crate) database: Option<String>,
    /// The upstream login (for Redis: the ACL user; absent for `requirepass`).
    #[serde(default)]
    pub(crate) user: Option<String>,
    pub(crate) password: SecretRef,
    #[serde(default)]
    pub(crate) upstream_tls: Option<UpstreamTlsConfig>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(default)]
    pub(crate) allow_plaintext_password: bool,
    /// Ask clients for a TLS certificate (`optional`: one that is presented logs in by
    /// itself, others use a token; `required`: every client must present one), verified
    /// against `[identity.client_certs] ca_file` (and `crl_files`) and mapped by its rules.
    /// Any protocol, with `tls_cert` and `tls_key`.
    #[serde(default)]
    pub(crate) client_certificates: Option<ClientCertsMode>,
    /// Users that log in with SCRAM against a stored verifier.
    #[serde(default)]
    pub(crate) scram_users: BTreeMap<String, ScramUserConfig>,
    /// HTTP: the header that carries the gateway's credential upstream (default
    /// `authorization`).
    #[serde(default)]
    pub(crate) credential_header: Option<String>,
    /// HTTP: the scheme written before the credential (default `Bearer` in
    /// `Authorization`, nothing in any other header).
    #[serde(default)]
    pub(crate) credential_scheme: Option<String>,
    /// HTTP: the routes of the upstream's API, in matching order.
    #[serde(default, rename = "route")]
    pub(crate) routes: Vec<RouteConfig>,
    /// HTTP: speak HTTP/2 to the upstream (agreed by ALPN over `https://`, with prior
    /// knowledge over `http://`) instead of HTTP/1.1.
    #[serde(default)]
    pub(crate) http2: bool,
}

/// One route of an HTTP target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// The method (any when absent).
    #[serde(default)]
    pub(crate) method: Option<String>,
    /// The path template: `/customers/{id}`, `/files/{*rest}`.
    pub(crate) path: String,
    /// The class policy sees (default: from the method).
    #[serde(default)]
    pub(crate) class: Option<CommandClass>,
    /// Mask the response (default true).
    #[serde(default = "yes")]
    pub(crate) masked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsConfig {
    pub(crate) ca_file: PathBuf,
    pub(crate) server_name: String,
    /// SCRAM channel binding of the PostgreSQL login: `disable`, `prefer` (the default when
    /// unset) or `require`. Only PostgreSQL targets take it.
    #[serde(default)]
    pub(crate) channel_binding: Option<ChannelBindingConfig>,
}

/// When a target asks clients for certificates.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientCertsMode {
    Optional,
    Required,
}

/// libpq's `channel_binding` values.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChannelBindingConfig {
    Disable,
    #[default]
    Prefer,
    Require,
}

impl From<ChannelBindingConfig> for ChannelBinding {
    fn from(c: ChannelBindingConfig) -> Self {
        match c {
            ChannelBindingConfig::Disable => ChannelBinding::Disable,
            ChannelBindingConfig::Prefer => ChannelBinding::Prefer,
            ChannelBindingConfig::Require => ChannelBinding::Require,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScramUserConfig {
    pub(crate) verifier: String,
    #[serde(default)]
    pub(crate) subject: String,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
}

impl Config {
    /// Reads and parses a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| err(path, e))?;
        config.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.path = path.to_path_buf();
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for t in &self.targets {
            if !names.insert(&t.name) {
                return Err(self.error(format!("target {:?} is defined twice", t.name)));
            }
            match t.protocol.as_str() {
                "postgres" if t.database.is_none() || t.user.is_none() => {
                    return Err(self.error(format!(
                        "target {:?}: a postgres target needs database and user",
                        t.name
                    )));
                }
                "postgres" | "redis" | "http" => {}
                other => {
                    return Err(self.error(format!(
                        "target {:?}: protocol {other:?} is not served by this gateway (supported: postgres, redis, http)",
                        t.name
                    )));
                }
            }
            if t.tls_cert.is_some() != t.tls_key.is_some() {
                return Err(self.error(format!(
                    "target {:?}: tls_cert and tls_key go together",
                    t.name
                )));
            }
            if t.http2 && t.protocol != "http" {
                return Err(self.error(format!(
                    "target {:?}: http2 applies to http targets only",
                    t.name
                )));
            }
            if t.client_certificates.is_some() {
                let why = if t.tls_cert.is_none() {
                    Some("needs tls_cert and tls_key (certificates come with TLS)")
                } else if self.identity.client_certs.is_none() {
                    Some("needs [identity.client_certs] to verify and map them")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(
                        self.error(format!("target {:?}: client_certificates {why}", t.name))
                    );
                }
            }
        }
        if self.identity.tokens_file.is_none()
            && self.identity.jwt.is_none()
            && self.identity.client_certs.is_none()
        {
            return Err(self
                .error("[identity] needs tokens_file, [identity.jwt] or [identity.client_certs]"));
        }
        if let Some(c) = &self.identity.client_certs
            && c.ca_file.is_none()
        {
            return Err(self.error(
                "identity.client_certs needs ca_file: the authority that issues agents' certificates",
            ));
        }
        Ok(())
    }

    pub(crate) fn error(&self, what: impl std::fmt::Display) -> ConfigError {
        err(&self.path, what)
    }

    /// A path from the file, relative to the file's directory.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(crate) fn secret(&self, what: &str, r: &SecretRef) -> Result<String> {
        match (&r.env, &r.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| self.error(format!("{what}: environment variable {var} is not set"))),
            (None, Some(f)) => {
                let p = self.resolve(f);
                std::fs::read_to_string(&p)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                    .map_err(|e| self.error(format!("{what}: {}: {e}", p.display())))
            }
            _ => Err(self.error(format!("{what}: give exactly one of env or file"))),
        }
    }

    fn read(&self, what: &str, p: &Path) -> Result<String> {
        let p = self.resolve(p);
        std::fs::read_to_string(&p).map_err(|e| self.error(format!("{what}: {}: {e}", p.display())))
    }

    pub(crate) fn identity(&self) -> Result<Arc<dyn IdentityProvider>> {
        let mut chain = Chain::new();
        if let Some(f) = &self.identity.tokens_file {
            let text = self.read("identity.tokens_file", f)?;
            let tokens = StaticTokens::from_toml(&text).map_err(|e| err(&self.resolve(f), e))?;
            chain = chain.with(Arc::new(tokens));
        }
        if let Some(jwt) = &self.identity.jwt {
            let provider = JwtProvider::new(jwt.clone())
                .map_err(|e| self.error(format!("identity.jwt: {e}")))?;
            chain = chain.with(Arc::new(provider));
        }
        if let Some(c) = &self.identity.client_certs {
            // The chain is verified with the listeners' own verification (one set of
            // anchors and revocation lists, refreshed for both), then mapped by the rules.
            let rules = ClientCertConfig {
                rules: c.rules.clone(),
                ..ClientCertConfig::default()
            };
            let provider = ClientCertificates::new(rules)
                .map_err(|e| self.error(format!("identity.client_certs: {e}")))?;
            let provider = match self.client_cert_verification()? {
                Some(v) => provider.with_verifier(v.verifier()),
                None => provider,
            };
            chain = chain.with(Arc::new(provider));
        }
        Ok(Arc::new(chain))
    }

    pub(crate) fn policy(&self) -> Result<Arc<RuleEngine>> {
        let mut text = self.read("policy.file", &self.policy.file)?;
        if self.policy.redis_defaults {
            text = format!("{}\n{text}", wirewarden::redis::DEFAULT_REDIS_POLICY);
        }
        if self.policy.http_defaults {
            text = format!("{}\n{text}", wirewarden::http::DEFAULT_HTTP_POLICY);
        }
        RuleEngine::from_toml(&text)
            .map(Arc::new)
            .map_err(|e| err(&self.resolve(&self.policy.file), e))
    }

    pub(crate) fn masking(&self) -> Result<Option<Arc<MaskEngine>>> {
        let Some(m) = &self.masking else {
            return Ok(None);
        };
        let text = self.read("masking.file", &m.file)?;
        MaskEngine::from_toml(&text)
            .map(|e| Some(Arc::new(e)))
            .map_err(|e| err(&self.resolve(&m.file), e))
    }

    pub(crate) fn audit_keys(&self) -> Result<(ChainKey, CheckpointSigner)> {
        let chain_text = self.read("audit.chain_key_file", &self.audit.chain_key_file)?;
        let mut parts = chain_text.split_whitespace();
        let (Some(id), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(self.error("audit.chain_key_file must hold `<key-id> <64 hex digits>`"));
        };
        let chain = ChainKey::from_hex(id, hex)
            .map_err(|e| self.error(format!("audit.chain_key_file: {e}")))?;
        let seed = self.read("audit.signing_key_file", &self.audit.signing_key_file)?;
        let signer = CheckpointSigner::from_hex(seed.trim())
            .map_err(|e| self.error(format!("audit.signing_key_file: {e}")))?;
        Ok((chain, signer))
    }

    /// Whether the trail masks command texts, and with which profile (`Some(None)`: the
    /// default one), with the key its digests are keyed with.
    pub(crate) fn trail_masking(&self) -> Result<Option<(Option<&str>, [u8; 32])>> {
        let profile = match &self.audit.mask_commands {
            MaskCommands::Switch(false) => return Ok(None),
            MaskCommands::Switch(true) => None,
            MaskCommands::Profile(name) => Some(name.as_str()),
        };
        let (chain, _) = self.audit_keys()?;
        Ok(Some((
            profile,
            chain.derive_key(wirewarden::trail::TRAIL_DIGEST_KEY_CONTEXT),
        )))
    }

    pub(crate) fn verify_keys(&self) -> Result<VerifyKeys> {
        let (chain, signer) = self.audit_keys()?;
        let checkpoint: CheckpointKey = signer.public();
        Ok(VerifyKeys { chain, checkpoint })
    }

    pub(crate) fn audit_dir(&self) -> PathBuf {
        self.resolve(&self.audit.dir)
    }

    pub(crate) fn audit_sink(&self) -> Result<FileSink> {
        let (chain, signer) = self.audit_keys()?;
        let durability = match self.audit.durability {
            DurabilityConfig::Fsync => Durability::Fsync,
            DurabilityConfig::Buffered => Durability::Buffered,
        };
        let dir = self.audit_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.error(format!("audit.dir {}: {e}", dir.display())))?;
        let mut builder = FileSink::builder(dir, chain, signer)
            .durability(durability)
            .drop_written_pages(!self.audit.keep_page_cache);
        if let Some(ms) = self.audit.write_delay_ms {
            builder = builder.write_delay(std::time::Duration::from_millis(ms.min(60_000)));
        }
        builder
            .open()
            .map_err(|e| self.error(format!("audit: {e}")))
    }

    pub(crate) fn postgres_target(&self, t: &TargetConfig) -> Result<PostgresTarget> {
        let what = format!("target {:?}", t.name);
        let password = self.secret(&format!("{what} password"), &t.password)?;
        let upstream_tls = self.upstream_tls(&what, t)?.map(|tls| {
            let binding = t
                .upstream_tls
                .as_ref()
                .and_then(|u| u.channel_binding)
                .unwrap_or_default();
            tls.with_channel_binding(binding.into())
        });
        let database = t.database.clone().unwrap_or_default();
        let upstream = UpstreamConfig {
            addr: t.upstream.clone(),
            user: t.user.clone().unwrap_or_default(),
            password: Secret::new(password),
            database: database.clone(),
            tls: upstream_tls,
        };
        let target = Target::new(t.name.clone(), Protocol::Postgres)
            .map_err(|e| self.error(format!("{what}: {e}")))?
            .with_database(database);
        let mut pt = PostgresTarget::new(target, upstream);
        if let Some(tls) = self.server_tls(t)? {
            pt.tls = Some(tls);
            pt.require_tls = true;
        }
        pt.allow_plaintext_password = t.allow_plaintext_password;
        for (user, s) in &t.scram_users {
            let verifier = s
                .verifier
                .parse()
                .map_err(|e| self.error(format!("{what}: scram user {user:?}: {e}")))?;
            pt.scram_users.insert(
                user.clone(),
                ScramUser {
                    verifier,
                    subject: s.subject.clone(),
                    groups: s.groups.clone(),
                },
            );
        }
        Ok(pt)
    }
}

impl Config {
    /// The TLS client side of a target's `upstream_tls` table, if it has one.
    fn upstream_tls(&self, what: &str, t: &TargetConfig) -> Result<Option<UpstreamTls>> {
        let Some(u) = &t.upstream_tls else {
            return Ok(None);
        };
        let roots = wirewarden::tls::load_certs(&self.resolve(&u.ca_file))
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        Ok(Some(UpstreamTls::new(
            wirewarden::tls::client_config(&roots)
                .map_err(|e| self.error(format!("{what}: {e}")))?,
            wirewarden::tls::server_name(&u.server_name)
                .map_err(|e| self.error(format!("{what}: {e}")))?,
        )))
    }

    pub(crate) fn redis_target(&self, t: &TargetConfig) -> Result<RedisTarget> {
        let what = format!("target {:?}", t.name);
        if t.upstream_tls
            .as_ref()
            .is_some_and(|u| u.channel_binding.is_some())
        {
            return Err(self.error(format!(
                "{what}: upstream_tls.channel_binding applies to PostgreSQL's SCRAM login; \
                 a Redis upstream logs in with AUTH over the TLS connection"
            )));
        }
        let password = self.secret(&format!("{what} password"), &t.password)?;
        let upstream = RedisUpstream {
            addr: t.upstream.clone(),
            user: t.user.clone(),
            password: Secret::new(password),
            tls: self.upstream_tls(&what, t)?,
        };
        let target = Target::new(t.name.clone(), Protocol::Redis)
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        let mut rt = RedisTarget::new(target, upstream);
        // The rustls configuration carries the client certificate verifier: a client that
        // presents a verified certificate logs in with it, one without either fails the
        // handshake (required) or goes on to AUTH (optional).
        rt.tls = self.server_tls(t)?.map(|tls| tls.config);
        Ok(rt)
    }
}

impl Config {
    /// The TLS a target with `tls_cert` and `tls_key` offers its clients, asking them for
    /// certificates issued by `[identity.client_certs]`'s `ca_file` when the target sets
    /// `client_certificates` (which `validate` allows on targets with listener TLS only).
    fn server_tls(&self, t: &TargetConfig) -> Result<Option<ServerTls>> {
        let (Some(cert), Some(key)) = (&t.tls_cert, &t.tls_key) else {
            return Ok(None);
        };
        let what = format!("target {:?}", t.name);
        let chain = wirewarden::tls::load_certs(&self.resolve(cert))
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        let key_pem = std::fs::read(self.resolve(key))
            .map_err(|e| self.error(format!("{what}: tls_key: {e}")))?;
        let key = wirewarden::tls::key_from_pem(&key_pem)
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        let tls = match (t.client_certificates, self.client_cert_verification()?) {
            (Some(mode), Some(verification)) => {
                let mode = match mode {
                    ClientCertsMode::Optional => ClientCertMode::Optional,
                    ClientCertsMode::Required => ClientCertMode::Required,
                };
                ServerTls::with_client_cert_verification(chain, key, verification, mode)
            }
            _ => ServerTls::new(chain, key),
        };
        tls.map(Some)
            .map_err(|e| self.error(format!("{what}: {e}")))
    }

    /// The verification of client certificates that `[identity.client_certs]` describes
    /// (its `ca_file` and `crl_files`), built once and shared; `None` without that section.
    pub(crate) fn client_cert_verification(&self) -> Result<Option<Arc<ClientCertVerification>>> {
        let Some(c) = &self.identity.client_certs else {
            return Ok(None);
        };
        if let Some(v) = self.verification.get() {
            return Ok(Some(v.clone()));
        }
        let ca = c
            .ca_file
            .as_deref()
            .ok_or_else(|| self.error("identity.client_certs needs ca_file".to_owned()))?;
        let anchors = wirewarden::tls::load_certs(&self.resolve(ca))
            .map_err(|e| self.error(format!("identity.client_certs: {e}")))?;
        let crls = self
            .crl_files()
            .load()
            .map_err(|e| self.error(format!("identity.client_certs: {e}")))?;
        let built = ClientCertVerification::new(&anchors, &crls)
            .map_err(|e| self.error(format!("identity.client_certs: {e}")))?;
        Ok(Some(self.verification.get_or_init(|| built).clone()))
    }

    /// `[identity.client_certs] crl_files`, resolved, for loading and refreshing.
    pub(crate) fn crl_files(&self) -> CrlFiles {
        let files = self
            .identity
            .client_certs
            .iter()
            .flat_map(|c| c.crl_files.iter().map(|f| self.resolve(f)))
            .collect();
        CrlFiles::new(files)
    }

    pub(crate) fn http_target(&self, t: &TargetConfig) -> Result<HttpTarget> {
        let what = format!("target {:?}", t.name);
        if t.upstream_tls
            .as_ref()
            .is_some_and(|u| u.channel_binding.is_some())
        {
            return Err(self.error(format!(
                "{what}: upstream_tls.channel_binding applies to PostgreSQL's SCRAM login; \
                 an HTTP upstream has no login to bind"
            )));
        }
        // The scheme and the TLS table must agree: TLS asked for is never dropped, and an
        // https origin is never reached without the roots and name to check it against.
        let https = t
            .upstream
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme() == Some(&http::uri::Scheme::HTTPS));
        match (&t.upstream_tls, https) {
            (Some(_), false) => {
                return Err(self.error(format!(
                    "{what}: upstream_tls is set but the upstream {:?} is not an https:// origin",
                    t.upstream
                )));
            }
            (None, true) => {
                return Err(self.error(format!(
                    "{what}: the upstream {:?} is an https:// origin: it needs \
                     [target.upstream_tls] with ca_file and server_name",
                    t.upstream
                )));
            }
            _ => {}
        }
        let secret = self.secret(&format!("{what} password"), &t.password)?;
        let header_name = t.credential_header.as_deref().unwrap_or("authorization");
        let header = http::HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|e| self.error(format!("{what}: credential_header: {e}")))?;
        let scheme = match &t.credential_scheme {
            Some(s) => s.clone(),
            None if header == http::header::AUTHORIZATION => "Bearer".to_owned(),
            None => String::new(),
        };
        let value = if scheme.is_empty() {
            secret
        } else {
            format!("{scheme} {secret}")
        };
        let value = http::HeaderValue::from_str(&value).map_err(|_| {
            self.error(format!(
                "{what}: the credential is not a valid header value"
            ))
        })?;
        let mut routes = Routes::new();
        for (i, r) in t.routes.iter().enumerate() {
            let method = match &r.method {
                None => None,
                Some(m) if m == "*" => None,
                Some(m) => Some(
                    http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|e| self.error(format!("{what}: route {i}: method: {e}")))?,
                ),
            };
            let mut route = Route::new(method, &r.path)
                .map_err(|e| self.error(format!("{what}: route {i}: {e}")))?
                .masked(r.masked);
            if let Some(c) = r.class {
                route = route.class(c);
            }
            routes = routes.route(route);
        }
        let target = Target::new(t.name.clone(), Protocol::Http)
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        let mut ht = HttpTarget::new(target, t.upstream.clone())
            .routes(routes)
            .credential(header, value);
        ht.upstream_tls = self.upstream_tls(&what, t)?;
        ht.upstream_settings.http2 = t.http2;
        ht.tls = self.server_tls(t)?.map(|tls| tls.config);
        Ok(ht)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gateway.toml");
        std::fs::write(
            &p,
            "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = { env = \"X\" }\n\n[identity\n",
        )
        .unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("gateway.toml"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(
            &p,
            "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = { env = \"X\" }\nport = 3\n",
        )
        .unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("unknown field `port`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    fn http_config(dir: &Path, route: &str) -> Config {
        std::fs::write(dir.join("policy.toml"), "").unwrap();
        std::fs::write(dir.join("tokens.toml"), "").unwrap();
        std::fs::write(dir.join("api.key"), "k-1\n").unwrap();
        let p = dir.join("g.toml");
        std::fs::write(
            &p,
            format!(
                "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = {{ env = \"X\" }}\n\
                 [identity]\ntokens_file = \"tokens.toml\"\n[policy]\nfile = \"policy.toml\"\n\
                 [audit]\ndir = \"audit\"\nchain_key_file = \"c\"\nsigning_key_file = \"s\"\n\
                 [[target]]\nname = \"api\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:2\"\n\
                 upstream = \"http://127.0.0.1:3\"\npassword = {{ file = \"api.key\" }}\n\
                 credential_header = \"x-api-key\"\n{route}"
            ),
        )
        .unwrap();
        Config::load(&p).unwrap()
    }

    #[test]
    fn http_targets_take_routes_and_a_credential_header() {
        let dir = tempfile::tempdir().unwrap();
        let c = http_config(
            dir.path(),
            "[[target.route]]\nmethod = \"get\"\npath = \"/customers/{id}\"\n\
             [[target.route]]\npath = \"/health\"\nmasked = false\nclass = \"session\"\n",
        );
        let t = c.http_target(&c.targets[0]).unwrap();
        assert_eq!(t.routes.routes().len(), 2);
        assert_eq!(t.credential.len(), 1);
        let (name, value) = &t.credential[0];
        assert_eq!(name.as_str(), "x-api-key");
        // No scheme outside Authorization, and never shown in debug output.
        assert_eq!(value.as_bytes(), b"k-1");
        assert!(value.is_sensitive());
        assert!(!format!("{t:?}").contains("k-1"));

        let c = http_config(dir.path(), "[[target.route]]\npath = \"customers\"\n");
        let e = c.http_target(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("route 0"), "{e}");
    }

    /// A postgres target whose `upstream_tls` table has `extra` keys.
    fn postgres_config(dir: &Path, extra: &str) -> std::result::Result<Config, String> {
        tls_target_config(dir, "postgres", "127.0.0.1:3", extra)
    }

    /// A target of `protocol` with an `upstream_tls` table that has `extra` keys.
    fn tls_target_config(
        dir: &Path,
        protocol: &str,
        upstream: &str,
        extra: &str,
    ) -> std::result::Result<Config, String> {
        std::fs::write(dir.join("policy.toml"), "").unwrap();
        std::fs::write(dir.join("tokens.toml"), "").unwrap();
        std::fs::write(dir.join("db.pw"), "pw\n").unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["db.internal".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("db-ca.pem"), ca.pem()).unwrap();
        let p = dir.join("g.toml");
        std::fs::write(
            &p,
            format!(
                "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = {{ env = \"X\" }}\n\
                 [identity]\ntokens_file = \"tokens.toml\"\n[policy]\nfile = \"policy.toml\"\n\
                 [audit]\ndir = \"audit\"\nchain_key_file = \"c\"\nsigning_key_file = \"s\"\n\
                 [[target]]\nname = \"crm\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:2\"\n\
                 upstream = \"{upstream}\"\ndatabase = \"crm\"\nuser = \"gw\"\n\
                 password = {{ file = \"db.pw\" }}\n\
                 [target.upstream_tls]\nca_file = \"db-ca.pem\"\nserver_name = \"db.internal\"\n{extra}"
            ),
        )
        .unwrap();
        Config::load(&p).map_err(|e| e.to_string())
    }

    fn channel_binding(c: &Config) -> ChannelBinding {
        let t = c.postgres_target(&c.targets[0]).unwrap();
        t.upstream.tls.expect("upstream TLS").channel_binding
    }

    #[test]
    fn upstream_channel_binding_is_configurable_and_preferred_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = postgres_config(dir.path(), "").unwrap();
        assert_eq!(channel_binding(&c), ChannelBinding::Prefer);
        for (value, mode) in [
            ("disable", ChannelBinding::Disable),
            ("prefer", ChannelBinding::Prefer),
            ("require", ChannelBinding::Require),
        ] {
            let c =
                postgres_config(dir.path(), &format!("channel_binding = \"{value}\"\n")).unwrap();
            assert_eq!(channel_binding(&c), mode);
        }
    }

    #[test]
    fn redis_targets_use_upstream_tls_and_refuse_channel_binding() {
        let dir = tempfile::tempdir().unwrap();
        let c = tls_target_config(dir.path(), "redis", "127.0.0.1:3", "").unwrap();
        let t = c.redis_target(&c.targets[0]).unwrap();
        assert!(t.upstream.tls.is_some(), "upstream_tls must not be ignored");
        let c = tls_target_config(
            dir.path(),
            "redis",
            "127.0.0.1:3",
            "channel_binding = \"require\"\n",
        )
        .unwrap();
        let e = c.redis_target(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("channel_binding applies to PostgreSQL"), "{e}");
    }

    #[test]
    fn http_targets_use_upstream_tls_for_https_origins_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = tls_target_config(dir.path(), "http", "https://127.0.0.1:3", "").unwrap();
        let t = c.http_target(&c.targets[0]).unwrap();
        let tls = t.upstream_tls.expect("upstream_tls must not be ignored");
        assert_eq!(tls.server_name.to_str(), "db.internal");

        // TLS asked for on a plaintext origin is refused, never dropped.
        let c = tls_target_config(dir.path(), "http", "http://127.0.0.1:3", "").unwrap();
        let e = c.http_target(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("is not an https:// origin"), "{e}");
        assert!(e.contains("g.toml"), "{e}");

        // An https origin with nothing to check the server against is refused.
        let dir = tempfile::tempdir().unwrap();
        let mut c = http_config(dir.path(), "");
        c.targets[0].upstream = "https://api.example.com".to_owned();
        let e = c.http_target(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("needs [target.upstream_tls]"), "{e}");

        // Channel binding belongs to PostgreSQL's login.
        let dir = tempfile::tempdir().unwrap();
        let c = tls_target_config(
            dir.path(),
            "http",
            "https://127.0.0.1:3",
            "channel_binding = \"require\"\n",
        )
        .unwrap();
        let e = c.http_target(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("channel_binding applies to PostgreSQL"), "{e}");

        // A CA file that does not exist names the target and the file.
        let dir = tempfile::tempdir().unwrap();
        let c = tls_target_config(dir.path(), "http", "https://127.0.0.1:3", "").unwrap();
        std::fs::remove_file(dir.path().join("db-ca.pem")).unwrap();
        let e = c.http_target(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("db-ca.pem") && e.contains("\"crm\""), "{e}");
    }

    /// A target of `protocol` with TLS on the listener and `target_extra` keys, and
    /// `identity_extra` appended to `[identity]`.
    fn cert_config(
        dir: &Path,
        protocol: &str,
        target_extra: &str,
        identity_extra: &str,
    ) -> std::result::Result<Config, String> {
        std::fs::write(dir.join("policy.toml"), "").unwrap();
        std::fs::write(dir.join("tokens.toml"), "").unwrap();
        std::fs::write(dir.join("db.pw"), "pw\n").unwrap();
        let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("server.crt"), server.cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server.signing_key.serialize_pem()).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["agents-ca".into()]).unwrap();
        std::fs::write(dir.join("agents-ca.pem"), ca.cert.pem()).unwrap();
        let p = dir.join("g.toml");
        std::fs::write(
            &p,
            format!(
                "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = {{ env = \"X\" }}\n\
                 [identity]\ntokens_file = \"tokens.toml\"\n{identity_extra}\
                 [policy]\nfile = \"policy.toml\"\n\
                 [audit]\ndir = \"audit\"\nchain_key_file = \"c\"\nsigning_key_file = \"s\"\n\
                 [[target]]\nname = \"crm\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:2\"\n\
                 upstream = \"127.0.0.1:3\"\ndatabase = \"crm\"\nuser = \"gw\"\n\
                 password = {{ file = \"db.pw\" }}\n{target_extra}"
            ),
        )
        .unwrap();
        Config::load(&p).map_err(|e| e.to_string())
    }

    const CLIENT_CERTS: &str = "[identity.client_certs]\nca_file = \"agents-ca.pem\"\n\
        [[identity.client_certs.rules]]\nfield = \"san_uri\"\n\
        pattern = \"spiffe://prod.example/agents/*\"\ngroups = [\"agents\"]\n";
    const LISTENER_TLS: &str = "tls_cert = \"server.crt\"\ntls_key = \"server.key\"\n";

    #[test]
    fn postgres_targets_ask_for_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, want) in [
            ("optional", ClientCertMode::Optional),
            ("required", ClientCertMode::Required),
        ] {
            let c = cert_config(
                dir.path(),
                "postgres",
                &format!("{LISTENER_TLS}client_certificates = \"{mode}\"\n"),
                CLIENT_CERTS,
            )
            .unwrap();
            let t = c.postgres_target(&c.targets[0]).unwrap();
            assert_eq!(t.tls.expect("listener TLS").client_certs, Some(want));
            // The identity chain takes certificates too.
            c.identity().unwrap();
        }
        // Without the setting, no certificate is asked for.
        let c = cert_config(dir.path(), "postgres", LISTENER_TLS, CLIENT_CERTS).unwrap();
        let t = c.postgres_target(&c.targets[0]).unwrap();
        assert_eq!(t.tls.expect("listener TLS").client_certs, None);
    }

    #[test]
    fn redis_and_http_targets_ask_for_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        for (protocol, mode, want) in [
            ("redis", "optional", Some(ClientCertMode::Optional)),
            ("redis", "required", Some(ClientCertMode::Required)),
            ("redis", "", None),
            ("http", "optional", Some(ClientCertMode::Optional)),
            ("http", "required", Some(ClientCertMode::Required)),
            ("http", "", None),
        ] {
            let setting = if mode.is_empty() {
                String::new()
            } else {
                format!("client_certificates = \"{mode}\"\n")
            };
            let c = cert_config(
                dir.path(),
                protocol,
                &format!("{LISTENER_TLS}{setting}"),
                CLIENT_CERTS,
            )
            .unwrap();
            // The listener's TLS is the one built with the client certificate verifier.
            let tls = c.server_tls(&c.targets[0]).unwrap().expect("listener TLS");
            assert_eq!(tls.client_certs, want, "{protocol} {mode:?}");
            let has_tls = if protocol == "redis" {
                c.redis_target(&c.targets[0]).unwrap().tls.is_some()
            } else {
                c.http_target(&c.targets[0]).unwrap().tls.is_some()
            };
            assert!(has_tls, "{protocol} {mode:?}");
            c.identity().unwrap();
        }
    }

    /// `crl_files` reach both the listener's handshake and the identity provider; a list
    /// that cannot be read is a configuration error naming the file.
    #[test]
    fn client_certificate_revocation_lists_load_for_listener_and_identity() {
        use rcgen::{
            BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
            DnType, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SanType, SerialNumber,
            date_time_ymd,
        };
        use wirewarden::identity::{AuthContext, Credential};
        let dir = tempfile::tempdir().unwrap();
        let with_crl = "[identity.client_certs]\nca_file = \"agents-ca.pem\"\n\
            crl_files = [\"agents.crl\"]\n[[identity.client_certs.rules]]\n\
            field = \"san_uri\"\npattern = \"spiffe://prod.example/agents/*\"\n";
        let target = format!("{LISTENER_TLS}client_certificates = \"required\"\n");
        let c = cert_config(dir.path(), "redis", &target, with_crl).unwrap();

        let e = c.server_tls(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("agents.crl"), "{e}");
        std::fs::write(dir.path().join("agents.crl"), "not a list").unwrap();
        let e = c.server_tls(&c.targets[0]).unwrap_err().to_string();
        assert!(e.contains("no certificate revocation list"), "{e}");

        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "agents CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("agents-ca.pem"), ca.pem()).unwrap();
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2200, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(9u64),
                revocation_time: date_time_ymd(2021, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = crl.signed_by(&ca).unwrap();
        std::fs::write(dir.path().join("agents.crl"), crl.pem().unwrap()).unwrap();
        assert!(c.server_tls(&c.targets[0]).unwrap().is_some());

        // The identity provider checks the list too: the revoked agent is refused.
        let agent = |serial: u64| {
            let mut p = CertificateParams::default();
            p.serial_number = Some(SerialNumber::from(serial));
            p.subject_alt_names = vec![SanType::URI(
                "spiffe://prod.example/agents/a".try_into().unwrap(),
            )];
            let key = KeyPair::generate().unwrap();
            p.signed_by(&key, &ca).unwrap().der().to_vec()
        };
        let identity = c.identity().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = AuthContext::new();
        let login = |serial| {
            rt.block_on(
                identity.authenticate(&Credential::client_certificate(vec![agent(serial)]), &ctx),
            )
        };
        assert!(login(8).is_ok());
        let e = login(9).unwrap_err().to_string();
        assert!(e.contains("untrusted"), "{e}");

        // A new list published while the gateway runs applies on the next refresh, to the
        // identity provider and the listeners alike (they share one verification).
        let mut files = c.crl_files();
        assert!(
            !files
                .check(&c.client_cert_verification().unwrap().unwrap())
                .unwrap()
        );
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2200, 1, 1),
            crl_number: SerialNumber::from(2u64),
            issuing_distribution_point: None,
            revoked_certs: [8u64, 9]
                .into_iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = crl.signed_by(&ca).unwrap();
        std::fs::write(dir.path().join("agents.crl"), crl.pem().unwrap()).unwrap();
        assert!(
            files
                .check(&c.client_cert_verification().unwrap().unwrap())
                .unwrap()
        );
        assert!(login(8).is_err());
    }

    #[test]
    fn client_certificates_are_refused_where_they_cannot_work() {
        let dir = tempfile::tempdir().unwrap();
        let required = "client_certificates = \"required\"\n";
        for (protocol, target, identity, want) in [
            (
                "http",
                required.to_owned(),
                CLIENT_CERTS,
                "needs tls_cert and tls_key",
            ),
            (
                "redis",
                required.to_owned(),
                CLIENT_CERTS,
                "needs tls_cert and tls_key",
            ),
            (
                "redis",
                format!("{LISTENER_TLS}{required}"),
                "",
                "needs [identity.client_certs]",
            ),
            (
                "postgres",
                required.to_owned(),
                CLIENT_CERTS,
                "needs tls_cert and tls_key",
            ),
            (
                "postgres",
                format!("{LISTENER_TLS}{required}"),
                "",
                "needs [identity.client_certs]",
            ),
            (
                "postgres",
                format!("{LISTENER_TLS}{required}"),
                "[identity.client_certs]\nrules = []\n",
                "needs ca_file",
            ),
        ] {
            let e = cert_config(dir.path(), protocol, &target, identity).unwrap_err();
            assert!(
                e.contains(want),
                "{protocol}, {target:?}, {identity:?}: {e}"
            );
            assert!(e.contains("g.toml"), "{e}");
        }
    }

    #[test]
    fn a_bad_channel_binding_names_file_line_and_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let e = postgres_config(dir.path(), "channel_binding = \"requried\"\n").unwrap_err();
        assert!(e.contains("g.toml"), "{e}");
        // The key is on the last line of the file.
        assert!(e.contains("line 23"), "{e}");
        assert!(e.contains("requried"), "{e}");
        assert!(e.contains("`disable`, `prefer`, `require`"), "{e}");
    }

    /// A config with `audit_extra` in its `[audit]` table and real key files.
    fn audit_config(dir: &Path, audit_extra: &str) -> Result<Config> {
        std::fs::write(dir.join("c"), format!("k1 {}\n", "ab".repeat(32))).unwrap();
        std::fs::write(dir.join("s"), format!("{}\n", "cd".repeat(32))).unwrap();
        let p = dir.join("g.toml");
        std::fs::write(
            &p,
            format!(
                "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = {{ env = \"X\" }}\n\
                 [identity]\ntokens_file = \"tokens.toml\"\n[policy]\nfile = \"policy.toml\"\n\
                 [audit]\ndir = \"audit\"\nchain_key_file = \"c\"\nsigning_key_file = \"s\"\n\
                 {audit_extra}"
            ),
        )
        .unwrap();
        Config::load(&p)
    }

    #[test]
    fn write_delay_is_read_in_both_durability_modes() {
        for durability in ["buffered", "fsync"] {
            let dir = tempfile::tempdir().unwrap();
            let c = audit_config(
                dir.path(),
                &format!("durability = \"{durability}\"\nwrite_delay_ms = 20\n"),
            )
            .unwrap();
            assert_eq!(c.audit.write_delay_ms, Some(20));
            assert!(!c.audit.keep_page_cache);
            let sink = c.audit_sink().unwrap();
            assert_eq!(sink.dir(), dir.path().join("audit"));
        }
        let dir = tempfile::tempdir().unwrap();
        let e = audit_config(dir.path(), "write_delay_ms = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("write_delay_ms"), "{e}");
        let c = audit_config(dir.path(), "keep_page_cache = true\n").unwrap();
        assert!(c.audit.keep_page_cache);
    }

    #[test]
    fn command_masking_in_the_trail_is_off_on_or_a_named_profile() {
        let dir = tempfile::tempdir().unwrap();
        let c = audit_config(dir.path(), "").unwrap();
        assert_eq!(c.trail_masking().unwrap(), None);
        let c = audit_config(dir.path(), "mask_commands = false\n").unwrap();
        assert_eq!(c.trail_masking().unwrap(), None);
        let on = audit_config(dir.path(), "mask_commands = true\n").unwrap();
        let (profile, key) = on.trail_masking().unwrap().unwrap();
        assert_eq!(profile, None);
        let (chain, _) = on.audit_keys().unwrap();
        assert_eq!(
            key,
            chain.derive_key(wirewarden::trail::TRAIL_DIGEST_KEY_CONTEXT)
        );
        let named = audit_config(dir.path(), "mask_commands = \"pci\"\n").unwrap();
        assert_eq!(named.trail_masking().unwrap(), Some((Some("pci"), key)));
        let e = audit_config(dir.path(), "mask_commands = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mask_commands"), "{e}");
    }

    #[test]
    fn http2_to_the_upstream_is_an_http_target_option() {
        let dir = tempfile::tempdir().unwrap();
        let c = http_config(dir.path(), "");
        assert!(
            !c.http_target(&c.targets[0])
                .unwrap()
                .upstream_settings
                .http2
        );
        let c = http_config(dir.path(), "http2 = true\n");
        assert!(
            c.http_target(&c.targets[0])
                .unwrap()
                .upstream_settings
                .http2
        );
        let p = dir.path().join("g.toml");
        std::fs::write(
            &p,
            "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = { env = \"X\" }\n\
             [identity]\ntokens_file = \"tokens.toml\"\n[policy]\nfile = \"policy.toml\"\n\
             [audit]\ndir = \"audit\"\nchain_key_file = \"c\"\nsigning_key_file = \"s\"\n\
             [[target]]\nname = \"cache\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:2\"\n\
             upstream = \"127.0.0.1:3\"\npassword = { file = \"api.key\" }\nhttp2 = true\n",
        )
        .unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("http2 applies to http targets only"), "{e}");
    }
}
