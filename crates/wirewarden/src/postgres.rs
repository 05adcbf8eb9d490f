//! The PostgreSQL proxy: an embedder accepts a connection and hands the stream to
//! [`PostgresProxy::serve`]; from then on every statement is tied to the client's identity,
//! decided by policy, masked on the way back, and recorded.
//!
//! # A session
//!
//! 1. **Startup.** `SSLRequest` is answered `S` and TLS is terminated with rustls when the
//!    target has a certificate (bytes sent in plaintext after the request are refused), `N`
//!    otherwise; `GSSENCRequest` is answered `N`; a `CancelRequest` is resolved through the
//!    gateway-issued key map; replication startups are refused.
//! 2. **Client authentication.** A client that presented a TLS certificate (when the target
//!    asks for them, [`ServerTls::with_client_certs`]) logs in with it alone: the pipeline's
//!    identity provider maps the verified chain to a principal or the client is refused,
//!    with no password step either way. Otherwise a user with a SCRAM verifier configured
//!    logs in with SCRAM-SHA-256 (or `-PLUS` over TLS) against the verifier; anyone else
//!    sends a token or JWT as the password, which is only accepted over TLS unless the
//!    target explicitly allows plaintext, and is verified by the pipeline's identity
//!    provider.
//! 3. **Upstream login** with the credential only the gateway holds.
//! 4. **Relay.** Each simple `Query` and each extended-protocol `Parse` is classified and
//!    decided. A denied statement is replaced, on the way upstream, by a statement that
//!    cannot parse; the upstream then fails it, discards until `Sync` and reports its
//!    transaction state exactly as it would for any failed statement, and the gateway
//!    rewrites the error into the denial. The session stays usable and the client's view of
//!    the transaction never diverges from the server's. A `Parse` that policy holds for
//!    review is prepared without a hold; each `Execute` of it is held on its own, with the
//!    parameters its `Bind` gave in the command's text and digest, so one approval runs one
//!    execution.
//! 5. **Application name.** The startup packet's `application_name` is the session's
//!    application in `SessionStarted`. When the server reports a new value (`SET`,
//!    `SET LOCAL` and the end of its transaction, `RESET`, `set_config`), an
//!    `ApplicationChanged` record goes on the trail before the client sees the report, so
//!    every statement the client sends after it is tied to the new name: an agent that
//!    reuses a pooled connection names each tool call.
//! 6. **`LISTEN`.** Each channel keeps the decision of the statement that started it:
//!    its notifications are masked with that decision's profile, recorded as `Transcript`
//!    events of that statement, and charged to the exfiltration budgets. The decision is
//!    taken again at a notification when it is older than
//!    [`PostgresTarget::stream_recheck`] or a grant active at the time has expired since,
//!    and, when no notification comes, at that interval or that expiry (a timer armed only
//!    while the session listens); refused now, the client reads a `FATAL` error (SQLSTATE `42501`) and the connection
//!    closes ([`SessionEndReason::SubscriptionWithdrawn`]). A channel counts once the server
//!    completed its `LISTEN` and the transaction committed; one that failed or rolled back
//!    (to a savepoint too) leaves no channel, and `UNLISTEN` likewise. A notification on a
//!    channel no decision stands behind (a `LISTEN` run inside a function) is withheld.
//! 7. **The end.** Besides the client leaving or the upstream closing, the session ends
//!    when its credential expires (`SessionEndReason::CredentialExpired`) and when replaced
//!    revocation lists refuse its client certificate (`CredentialRevoked`, through the
//!    pipeline's [client certificate
//!    verification](crate::PipelineBuilder::client_cert_verification)): the client reads a
//!    `FATAL` error (SQLSTATE `28000`) saying why, after the last whole message relayed, and
//!    the connection closes. A statement waiting for review then, or when the client
//!    leaves (the client is read while it waits), does not run: its review is cancelled.

mod catalog;
mod listens;
mod names;
mod outbound;
mod upstream;

use names::{Answered, Effect, Forget, Named, Rejection, Space, TxnOp};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;
use wirewarden_core::{
    AuditEvent, AuditEventKind, AuthMethod, Command, CommandId, Decision, Direction, MaskedCounts,
    Principal, Recording, SessionEndReason, SessionId, Target, Timestamp,
};
use wirewarden_identity::{AuthContext as IdentityContext, Credential};
use wirewarden_mask::Profile;
pub use wirewarden_postgres::auth::ChannelBinding;
use wirewarden_postgres::auth::{CleartextServer, ScramServer, ScramVerifier};
use wirewarden_postgres::{
    Authentication, BackendKey, BackendMessage, CancelKeys, ErrorFields, Finished, Frame,
    FrontendDecoder, FrontendMessage, Limits, RequestId, RowRewriter, Session,
};
use wirewarden_sql::Classifier;

use self::catalog::Catalog;
use self::listens::{Listening, Listens};
use self::outbound::{ColumnPlan, Unmaskable};
use self::upstream::BoxIo;
use crate::listen::Dial;
use crate::stream::Opened;
use crate::tls::CertificateWatch;
use crate::{Error, HeldCommand, Metrics, Pipeline, Result, ReviewRefusal};
// Every proxy uses these; they live at the crate root and in `tls`, and are named here too
// because a PostgreSQL configuration is written with them.
pub use crate::{
    Secret,
    tls::{ClientCertMode, ServerTls, UpstreamTls},
};

/// How the gateway reaches and logs in to the upstream server.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// `host:port`.
    pub addr: String,
    /// The role the gateway logs in as.
    pub user: String,
    /// Its password (used for SCRAM-SHA-256; never sent to or seen by clients).
    pub password: Secret,
    /// The database.
    pub database: String,
    /// TLS to the upstream, if wanted.
    pub tls: Option<UpstreamTls>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A client that logs in with SCRAM against a verifier the gateway holds.
#[derive(Debug, Clone)]
pub struct ScramUser {
    /// The stored verifier (`SCRAM-SHA-256$…`); no plaintext password at rest.
    pub verifier: ScramVerifier,
    /// The principal's subject (defaults to the user name when empty).
    pub subject: String,
    /// Its groups.
    pub groups: Vec<String>,
}

/// One PostgreSQL target of the gateway.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    /// The target as policy and audit name it.
    pub target: Target,
    /// The upstream.
    pub upstream: UpstreamConfig,
    /// The certificate clients see; `None` answers `N` to SSLRequest.
    pub tls: Option<ServerTls>,
    /// Refuse clients that do not use TLS (default when `tls` is set).
    pub require_tls: bool,
    /// Accept a token as a cleartext password without TLS. Only for loopback tests.
    pub allow_plaintext_password: bool,
    /// Users that log in with SCRAM against a stored verifier, by user name.
    pub scram_users: std::collections::BTreeMap<String, ScramUser>,
    /// Decoder limits for both directions.
    pub limits: Limits,
    /// Cap on how much of each response the session recording keeps, in bytes.
    pub record_limit: usize,
    /// How long a client may take from connecting to being logged in (TLS handshake,
    /// startup and authentication), and how long the gateway waits for its own upstream
    /// connection and login (default 60 s, PostgreSQL's `authentication_timeout`).
    pub login_timeout: Duration,
    /// How old the decision a `LISTEN` runs under may be when one of its notifications
    /// arrives: older, and policy is asked again before the notification goes out (as it
    /// is when a grant active at that decision expires). A channel with no notification is
    /// decided again at this interval too, so a revocation ends it within it. A channel
    /// policy no longer allows ends the session, `FATAL` 42501
    /// ([`SessionEndReason::SubscriptionWithdrawn`]). Default: one second.
    pub stream_recheck: Duration,
}

impl PostgresTarget {
    /// A target with default limits and no TLS.
    #[must_use]
    pub fn new(target: Target, upstream: UpstreamConfig) -> Self {
        Self {
            target,
            upstream,
            tls: None,
            require_tls: false,
            allow_plaintext_password: false,
            scram_users: Default::default(),
            limits: Limits::default(),
            record_limit: 16 * 1024,
            login_timeout: Duration::from_secs(60),
            stream_recheck: Duration::from_secs(1),
        }
    }
}

fn login_timeout() -> Error {
    Error::Authentication("no login within the login timeout".into())
}

/// Serves PostgreSQL clients for one target.
#[derive(Debug, Clone)]
pub struct PostgresProxy {
    pipeline: Arc<Pipeline>,
    config: Arc<PostgresTarget>,
    cancel: Arc<StdMutex<CancelKeys>>,
    /// Upstream process id → the id this gateway issued for it, so notifications name the
    /// sending session by its gateway id and never reveal upstream process ids.
    pids: Arc<StdMutex<std::collections::HashMap<i32, i32>>>,
    catalog: Arc<Catalog>,
    dial: Dial,
}

// === startup ===

/// What the startup phase produced.
struct Started {
    client: BoxIo,
    buf: BytesMut,
    decoder: FrontendDecoder,
    startup: wirewarden_postgres::StartupMessage,
    tls: bool,
    tls_binding: Option<Vec<u8>>,
    /// The client certificate chain (DER, leaf first) the TLS handshake verified, if the
    /// client presented one.
    client_chain: Option<Vec<Vec<u8>>>,
    /// Watches that chain from the handshake on: the session ends when replaced
    /// revocation lists refuse it.
    certificate: CertificateWatch,
}

enum StartupOutcome {
    Session(Box<Started>),
    Cancelled,
}

fn fatal(code: &str, message: impl Into<String>) -> BackendMessage {
    BackendMessage::ErrorResponse(ErrorFields::new("FATAL", code, message))
}

async fn send(io: &mut (impl AsyncWrite + Unpin), msgs: &[BackendMessage]) -> Result<()> {
    let mut out = BytesMut::new();
    for m in msgs {
        m.encode(&mut out)?;
    }
    io.write_all(&out).await.map_err(Error::client_io)?;
    io.flush().await.map_err(Error::client_io)
}

async fn read_frontend(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    decoder: &mut FrontendDecoder,
) -> Result<Option<(Frame, FrontendMessage)>> {
    loop {
        if let Some(x) = decoder.decode(buf)? {
            return Ok(Some(x));
        }
        buf.reserve(16 * 1024);
        if io.read_buf(buf).await.map_err(Error::client_io)? == 0 {
            return Ok(None);
        }
    }
}

/// Startup parameters passed on to the upstream; everything else (`options`, `role`,
/// `replication`, …) is dropped so a client cannot change how the gateway's role runs.
const FORWARDED_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
];

impl PostgresProxy {
    /// A proxy for `config`, deciding through `pipeline`.
    #[must_use]
    pub fn new(pipeline: Arc<Pipeline>, config: PostgresTarget) -> Self {
        let catalog = Arc::new(Catalog::new(
            config.upstream.clone(),
            config.limits,
            Dial::Tcp,
        ));
        Self {
            pipeline,
            config: Arc::new(config),
            cancel: Default::default(),
            pids: Default::default(),
            catalog,
            dial: Dial::Tcp,
        }
    }

    /// The same proxy, its upstream connections (the catalog's too) taken from `dial`.
    pub(crate) fn with_dial(mut self, dial: Dial) -> Self {
        self.catalog = Arc::new(Catalog::new(
            self.config.upstream.clone(),
            self.config.limits,
            dial.clone(),
        ));
        self.dial = dial;
        self
    }

    /// The target this proxy serves.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.config.target
    }

    /// Accepts connections from `listener`, serving each on its own task. Accept errors are
    /// retried after a short pause; the loop runs until the task is dropped.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for listeners that can fail for good.
    pub async fn listen(self, listener: tokio::net::TcpListener) -> Result<()> {
        crate::listen::accept_loop(listener, move |stream, peer| {
            let proxy = self.clone();
            async move {
                let _ = proxy.serve(stream, Some(peer)).await;
            }
        })
        .await
    }

    /// Serves one client connection to completion.
    ///
    /// # Errors
    /// Protocol, I/O, authentication and audit failures; the client has been sent a
    /// protocol-native error where the protocol allowed one.
    pub async fn serve<S>(&self, stream: S, peer: Option<SocketAddr>) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // One deadline from connecting to logged in: TLS handshake, startup and the
        // client's authentication.
        let deadline = tokio::time::Instant::now() + self.config.login_timeout;
        let startup = tokio::time::timeout_at(deadline, self.startup(Box::new(stream), peer));
        let started = match startup.await.map_err(|_| login_timeout())?? {
            StartupOutcome::Cancelled => return Ok(()),
            StartupOutcome::Session(s) => *s,
        };
        self.session(started, peer, deadline).await
    }

    async fn startup(&self, mut client: BoxIo, peer: Option<SocketAddr>) -> Result<StartupOutcome> {
        let limits = self.config.limits;
        let mut decoder = FrontendDecoder::new(limits);
        let mut buf = BytesMut::with_capacity(8192);
        let mut tls = false;
        let mut tls_binding = None;
        let mut client_chain = None;
        let mut certificate = CertificateWatch::inert();
        loop {
            let Some((_, msg)) = read_frontend(&mut client, &mut buf, &mut decoder).await? else {
                return Err(Error::Closed("client"));
            };
            match msg {
                FrontendMessage::SslRequest if !tls => {
                    let Some(config) = self.config.tls.as_ref().map(|t| t.config.clone()) else {
                        client.write_all(b"N").await.map_err(Error::client_io)?;
                        continue;
                    };
                    if !buf.is_empty() {
                        // Bytes pipelined after SSLRequest would be read as if they had come
                        // over TLS (CVE-2021-23214): refuse them.
                        return Err(Error::Tls("client sent plaintext after SSLRequest".into()));
                    }
                    client.write_all(b"S").await.map_err(Error::client_io)?;
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let stream = match acceptor.accept(client).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            // rustls has sent the alert (certificate_required, bad or
                            // revoked certificate…); a refusal over the certificate is a
                            // failed login and goes on record as one.
                            if let Some(reason) = crate::tls::certificate_refusal(&e) {
                                self.certificate_refused(peer, reason).await;
                            }
                            return Err(Error::Tls(e.to_string()));
                        }
                    };
                    tls_binding = self
                        .config
                        .tls
                        .as_ref()
                        .and_then(|t| t.channel_binding.clone());
                    client_chain = crate::tls::presented_chain(stream.get_ref().1);
                    if let Some(chain) = &client_chain {
                        certificate = self.pipeline.certificate_watch(chain);
                    }
                    client = Box::new(stream);
                    tls = true;
                    decoder = FrontendDecoder::new(limits);
                }
                FrontendMessage::GssEncRequest => {
                    client.write_all(b"N").await.map_err(Error::client_io)?;
                }
                FrontendMessage::CancelRequest(req) => {
                    let upstream = self
                        .cancel
                        .lock()
                        .ok()
                        .and_then(|k| k.resolve(&req).cloned());
                    if let Some(key) = upstream {
                        let _ = upstream::cancel(
                            &self.config.upstream,
                            &limits,
                            &self.dial,
                            key.process_id,
                            key.secret_key,
                        )
                        .await;
                    }
                    return Ok(StartupOutcome::Cancelled);
                }
                FrontendMessage::Startup(startup) => {
                    if startup
                        .parameter("replication")
                        .is_some_and(|v| v.as_ref() != b"false" && v.as_ref() != b"0")
                    {
                        send(
                            &mut client,
                            &[fatal(
                                "0A000",
                                "replication connections are not allowed through wirewarden",
                            )],
                        )
                        .await?;
                        return Err(Error::Authentication("replication startup refused".into()));
                    }
                    if self.config.require_tls && !tls {
                        send(
                            &mut client,
                            &[fatal("28000", "wirewarden requires TLS (sslmode=require)")],
                        )
                        .await?;
                        return Err(Error::Authentication("client did not use TLS".into()));
                    }
                    if let Some(enc) = startup.parameter("client_encoding")
                        && !is_utf8_encoding(enc)
                    {
                        send(
                            &mut client,
                            &[fatal("22023", "wirewarden requires client_encoding UTF8")],
                        )
                        .await?;
                        return Err(Error::Authentication("non-UTF8 client encoding".into()));
                    }
                    return Ok(StartupOutcome::Session(Box::new(Started {
                        client,
                        buf,
                        decoder,
                        startup,
                        tls,
                        tls_binding,
                        client_chain,
                        certificate,
                    })));
                }
                _ => {
                    send(&mut client, &[fatal("08P01", "expected a startup message")]).await?;
                    return Err(Error::Closed("client"));
                }
            }
        }
    }

    /// Authenticates the client; on failure it has been told and the attempt audited.
    /// Records a TLS handshake that refused the client's certificate (or its lack of one).
    async fn certificate_refused(&self, peer: Option<SocketAddr>, reason: String) {
        Metrics::add(&self.pipeline.metrics().auth_failures, 1);
        let event = AuditEvent::new(
            None,
            AuditEventKind::AuthenticationFailed {
                target: self.config.target.clone(),
                client_addr: peer.map(|p| p.to_string()),
                user: None,
                method: "client_certificate".into(),
                reason,
            },
        );
        let _ = self.pipeline.record(&event).await;
    }

    async fn authenticate(&self, s: &mut Started, peer: Option<SocketAddr>) -> Result<Principal> {
        let user = s.startup.user().unwrap_or_default().to_owned();
        let fail = |reason: String, method: &str| {
            Metrics::add(&self.pipeline.metrics().auth_failures, 1);
            AuditEvent::new(
                None,
                AuditEventKind::AuthenticationFailed {
                    target: self.config.target.clone(),
                    client_addr: peer.map(|p| p.to_string()),
                    user: Some(user.clone()),
                    method: method.to_owned(),
                    reason,
                },
            )
        };
        // A presented certificate is the whole login: it either proves an identity or the
        // client is refused, never sent on to a password it might guess or have stolen.
        if let Some(chain) = s.client_chain.take() {
            let credential = Credential::ClientCertificate(chain);
            let mut ctx = IdentityContext::new().with_target(self.config.target.name.clone());
            if let Some(p) = peer {
                ctx = ctx.with_client_addr(p);
            }
            return match self.pipeline.authenticate(&credential, &ctx).await {
                Ok(p) => Ok(p),
                Err(e) => {
                    let reason = e.to_string();
                    let _ = self
                        .pipeline
                        .record(&fail(reason.clone(), "client_certificate"))
                        .await;
                    send(
                        &mut s.client,
                        &[fatal(
                            "28000",
                            format!("certificate authentication failed for user \"{user}\""),
                        )],
                    )
                    .await?;
                    Err(Error::Authentication(reason))
                }
            };
        }
        if self.config.tls.as_ref().and_then(|t| t.client_certs) == Some(ClientCertMode::Required) {
            let _ = self
                .pipeline
                .record(&fail(
                    "no client certificate presented".into(),
                    "client_certificate",
                ))
                .await;
            send(
                &mut s.client,
                &[fatal(
                    "28000",
                    "wirewarden requires a TLS client certificate (sslmode=verify-full sslcert=...)",
                )],
            )
            .await?;
            return Err(Error::Authentication("no client certificate".into()));
        }
        if let Some(scram) = self.config.scram_users.get(&user) {
            let mut server = ScramServer::new(scram.verifier.clone(), s.tls_binding.clone());
            send(&mut s.client, &[server.start()]).await?;
            s.decoder.set_auth_context(server.auth_context());
            loop {
                let Some((_, msg)) =
                    read_frontend(&mut s.client, &mut s.buf, &mut s.decoder).await?
                else {
                    return Err(Error::Closed("client"));
                };
                match server.on_response(&msg) {
                    Ok(reply) => {
                        s.decoder.set_auth_context(server.auth_context());
                        if server.is_authenticated() {
                            send(&mut s.client, &[reply]).await?;
                            let subject = if scram.subject.is_empty() {
                                user.clone()
                            } else {
                                scram.subject.clone()
                            };
                            let mut p = Principal::new(
                                subject,
                                AuthMethod::Scram {
                                    mechanism: "SCRAM-SHA-256".into(),
                                },
                            )
                            .map_err(|e| Error::Authentication(e.to_string()))?;
                            for g in &scram.groups {
                                p = p.with_group(g.clone());
                            }
                            return Ok(p);
                        }
                        send(&mut s.client, &[reply]).await?;
                    }
                    Err(e) => {
                        let _ = self.pipeline.record(&fail(e.to_string(), "scram")).await;
                        send(
                            &mut s.client,
                            &[fatal(
                                "28P01",
                                format!("password authentication failed for user \"{user}\""),
                            )],
                        )
                        .await?;
                        return Err(Error::Authentication(e.to_string()));
                    }
                }
            }
        }
        if !s.tls && !self.config.allow_plaintext_password {
            let _ = self
                .pipeline
                .record(&fail("token sent without TLS".into(), "token"))
                .await;
            send(
                &mut s.client,
                &[fatal(
                    "28000",
                    "wirewarden accepts tokens only over TLS (sslmode=require)",
                )],
            )
            .await?;
            return Err(Error::Authentication("token without TLS".into()));
        }
        let mut server = CleartextServer::new();
        send(&mut s.client, &[server.start()]).await?;
        s.decoder.set_auth_context(server.auth_context());
        let Some((_, msg)) = read_frontend(&mut s.client, &mut s.buf, &mut s.decoder).await? else {
            return Err(Error::Closed("client"));
        };
        let password = server.on_response(&msg)?;
        let password = String::from_utf8(password.to_vec())
            .map_err(|_| Error::Authentication("password is not UTF-8".into()))?;
        let credential = Credential::password(Some(&user), password);
        let mut ctx = IdentityContext::new().with_target(self.config.target.name.clone());
        if let Some(p) = peer {
            ctx = ctx.with_client_addr(p);
        }
        match self.pipeline.authenticate(&credential, &ctx).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let reason = e.to_string();
                let _ = self.pipeline.record(&fail(reason.clone(), "token")).await;
                send(
                    &mut s.client,
                    &[fatal(
                        "28P01",
                        format!("password authentication failed for user \"{user}\""),
                    )],
                )
                .await?;
                Err(Error::Authentication(reason))
            }
        }
    }

    async fn session(
        &self,
        mut s: Started,
        peer: Option<SocketAddr>,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let principal = tokio::time::timeout_at(deadline, self.authenticate(&mut s, peer))
            .await
            .map_err(|_| login_timeout())??;
        let target = self.config.target.clone();
        let extra: Vec<(Bytes, Bytes)> = s
            .startup
            .parameters
            .iter()
            .filter(|(k, _)| {
                FORWARDED_PARAMETERS
                    .iter()
                    .any(|p| p.as_bytes() == k.as_ref())
            })
            .cloned()
            .collect();
        let application = s
            .startup
            .parameter("application_name")
            .and_then(|v| application_of(v));
        if let Some(db) = s.startup.database()
            && !db.is_empty()
            && db != self.config.upstream.database
            && target.database.as_deref().is_none_or(|t| t != db)
            && db != s.startup.user().unwrap_or_default()
        {
            send(
                &mut s.client,
                &[fatal(
                    "3D000",
                    format!("database \"{db}\" is not served by this target"),
                )],
            )
            .await?;
            return Err(Error::Config(format!("unknown database {db}")));
        }
        // Bounded: an upstream that never answers (a silent TLS handshake, a stalled login)
        // would otherwise hold the client.
        let connected = crate::listen::upstream_within(
            self.config.login_timeout,
            upstream::connect(
                &self.config.upstream,
                &self.config.limits,
                &self.dial,
                &extra,
            ),
            "no upstream connection and login within the login timeout",
        )
        .await;
        let up = match connected {
            Ok(up) => up,
            Err(e) => {
                self.pipeline
                    .upstream_failed(&target, &self.config.upstream.addr, &e)
                    .await;
                send(
                    &mut s.client,
                    &[fatal(
                        "08006",
                        "wirewarden could not reach the upstream server",
                    )],
                )
                .await?;
                return Err(e);
            }
        };
        let profile = match self.pipeline.mask_profile(&target, &principal, None) {
            Ok(p) => p,
            Err(e) => {
                send(
                    &mut s.client,
                    &[fatal("XX000", "wirewarden mask profile unavailable")],
                )
                .await?;
                return Err(e);
            }
        };
        // The name as the server keeps it (cut at 63 bytes): what it reports when the client
        // changes it later is compared with this.
        let server_application = up
            .parameters
            .iter()
            .find(|(k, _)| k.as_ref() == b"application_name")
            .map(|(_, v)| application_of(v))
            .unwrap_or_else(|| application.clone());
        let session_id = SessionId::new();
        let started_event = AuditEvent::new(
            Some(session_id),
            AuditEventKind::SessionStarted {
                principal: principal.clone(),
                target: target.clone(),
                client_addr: peer.map(|p| p.to_string()),
                application,
                tls: s.tls,
            },
        );
        if let Err(e) = self.pipeline.record(&started_event).await {
            send(
                &mut s.client,
                &[fatal("58000", "wirewarden audit trail unavailable")],
            )
            .await?;
            return Err(e);
        }

        // Finish the client's login: AuthenticationOk, the upstream's (masked) parameters,
        // a gateway-issued cancel key, ReadyForQuery.
        let mut hello = vec![BackendMessage::Authentication(Authentication::Ok)];
        let mut counts = MaskedCounts::new();
        for (name, value) in &up.parameters {
            let value = match outbound::mask_bytes_as_text(&profile, value, &mut counts) {
                Ok(Some(m)) => Bytes::from(m),
                Ok(None) => value.clone(),
                Err(_) => Bytes::new(),
            };
            hello.push(BackendMessage::ParameterStatus {
                name: name.clone(),
                value,
            });
        }
        let mut issued = None;
        let up_key = up.key.clone();
        if let Some((pid, secret)) = up.key.clone()
            && let Ok(mut keys) = self.cancel.lock()
            && let Ok(key) = keys.issue(BackendKey {
                process_id: pid,
                secret_key: secret,
            })
        {
            hello.push(key.to_message());
            issued = Some(key.process_id);
            if let Ok(mut pids) = self.pids.lock() {
                pids.insert(pid, key.process_id);
            }
        }
        hello.push(BackendMessage::ReadyForQuery(up.status));
        send(&mut s.client, &hello).await?;

        // The tracker mirrors the upstream connection: it has seen the login complete.
        let mut tracker = Session::new();
        tracker.on_frontend(&FrontendMessage::Startup(s.startup.clone()))?;
        tracker.on_backend(&BackendMessage::Authentication(Authentication::Ok))?;
        tracker.on_backend(&BackendMessage::ReadyForQuery(up.status))?;
        // The responses side learns from the tracker what became of each request.
        tracker.report_finished(true);
        // The lexing the server starts the session with (a database or role may have
        // `standard_conforming_strings` off): the classifier starts from it.
        let scs = up
            .parameters
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == b"standard_conforming_strings")
            .map_or(Scs::On, |(_, v)| Scs::reported(v));
        let shared = Arc::new(Shared {
            scs: std::sync::atomic::AtomicU8::new(scs as u8),
            session: StdMutex::new(tracker),
            queue: StdMutex::new(VecDeque::new()),
            token: poison_token(),
            commands: AtomicU64::new(0),
            answered: StdMutex::new(Answered::default()),
            answered_wake: tokio::sync::Notify::new(),
            listens: StdMutex::new(Listens::default()),
            withdrawn: StdMutex::new(None),
            withdrawn_wake: tokio::sync::Notify::new(),
            listens_changed: tokio::sync::Notify::new(),
        });
        let (outcomes, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(outcome_writer(self.pipeline.clone(), rx));
        let relay = Relay {
            outcomes,
            proxy: self.clone(),
            principal: Arc::new(principal),
            target,
            session_id,
            profile,
            shared,
            application: server_application,
            started: Instant::now(),
        };
        let metrics = self.pipeline.metrics();
        Metrics::add(&metrics.sessions_started, 1);
        metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
        let outcome = relay
            .run(s.client, s.buf, s.decoder, up, s.certificate)
            .await;
        metrics.sessions_active.fetch_sub(1, Ordering::Relaxed);
        if let (Some(pid), Ok(mut keys)) = (issued, self.cancel.lock()) {
            keys.remove(pid);
        }
        if let (Some((pid, _)), Ok(mut pids)) = (&up_key, self.pids.lock()) {
            pids.remove(pid);
        }
        outcome
    }
}

/// An `application_name` value as the session's application: `None` when empty.
fn application_of(value: &[u8]) -> Option<String> {
    (!value.is_empty()).then(|| String::from_utf8_lossy(value).into_owned())
}

/// Whether an encoding name means UTF-8, as the server reads it (case, quotes, `-` and `_`
/// are ignored: drivers send `UTF8`, `utf-8`, `'utf-8'`).
fn is_utf8_encoding(name: &[u8]) -> bool {
    let norm: Vec<u8> = name
        .iter()
        .filter(|b| !matches!(b, b'\'' | b'"' | b'-' | b'_' | b' '))
        .map(u8::to_ascii_uppercase)
        .collect();
    matches!(norm.as_slice(), b"UTF8" | b"UNICODE")
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &[u8]) -> String {
    format!("\"{}\"", String::from_utf8_lossy(name).replace('"', "\"\""))
}

/// A random token that marks the statement a denial is replaced with.
fn poison_token() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// === relay ===

/// What the gateway keeps for the answer to one request sent upstream, taken when the
/// tracker reports the request finished: done, failed, or skipped (the server discards the
/// rest of a batch after an error, and reads a simple query that arrives meanwhile as part
/// of it).
#[derive(Debug)]
enum Item {
    /// A forwarded command (an `Execute` or simple query): its rows are masked with its
    /// profile, and its outcome recorded when it finishes.
    Command(Pending),
    /// A denied statement, replaced by one that fails to parse. A refused `Parse` changes
    /// a name (the unnamed statement is dropped): its number, done when the placeholder
    /// fails, not done if the server skipped it.
    Refused {
        message: String,
        code: &'static str,
        change: Option<u64>,
    },
    /// A `Parse`, `Bind` or `Close` that changes a name: made if it is done (its
    /// `ParseComplete`, `BindComplete` or `CloseComplete`), not if it failed or was skipped.
    /// The number is the change's, see [`Named`]; with what the classifier must be given
    /// back if it is not made (a `Bind` to a cursor's name, which the classifier forgot).
    Message(u64, Option<Forget>),
}

#[derive(Debug)]
struct Pending {
    id: CommandId,
    profile: Arc<Profile>,
    started: Instant,
    rows: u64,
    bytes: u64,
    masked: MaskedCounts,
    error: Option<String>,
    recording: String,
    recording_truncated: bool,
    withheld: bool,
    /// The changes to names its statements make, in order, not yet answered.
    effects: VecDeque<Effect>,
    /// What its statements do to the transaction, in order, not yet answered.
    txn: VecDeque<TxnOp>,
    /// What its statements do to the channels the session listens on, with the decision
    /// they were allowed under, not yet answered.
    channels: Option<Box<listens::Staged>>,
}

#[derive(Debug)]
struct Shared {
    /// The `standard_conforming_strings` the classifier lexes under ([`Scs`]): the
    /// responses side checks every value the server reports against it.
    scs: std::sync::atomic::AtomicU8,
    session: StdMutex<Session>,
    /// What the gateway keeps for the answers to requests, by the tracker's number (see
    /// [`Relay::track`]); taken when the tracker reports the request finished.
    queue: StdMutex<VecDeque<(RequestId, Item)>>,
    token: String,
    commands: AtomicU64,
    /// What the server answered about changes to names, and a wake-up for the client side
    /// waiting on it.
    answered: StdMutex<Answered>,
    answered_wake: tokio::sync::Notify,
    /// The channels the session listens on, with the decisions their notifications go out
    /// under, and the changes to them the transaction under way made: written by the
    /// responses side as the server answers.
    listens: StdMutex<Listens>,
    /// Set, and `withdrawn_wake` woken, when policy no longer allows a channel the session
    /// listens on: the session ends.
    withdrawn: StdMutex<Option<SessionEndReason>>,
    withdrawn_wake: tokio::sync::Notify,
    /// Woken when a committed transaction changed the channels: the timer for channels
    /// with no notification is set again.
    listens_changed: tokio::sync::Notify,
}

/// The `standard_conforming_strings` the classifier lexes under, shared with the
/// responses side as a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Scs {
    /// Changed by a statement the server has not answered: text is lexed both ways.
    Unknown = 0,
    Off = 1,
    On = 2,
}

impl Scs {
    fn of(b: u8) -> Self {
        match b {
            1 => Self::Off,
            2 => Self::On,
            _ => Self::Unknown,
        }
    }

    fn known(v: Option<bool>) -> Self {
        match v {
            Some(true) => Self::On,
            Some(false) => Self::Off,
            None => Self::Unknown,
        }
    }

    /// A value as the server reports it (`on` or `off`).
    fn reported(v: &[u8]) -> Self {
        if v.eq_ignore_ascii_case(b"off") {
            Self::Off
        } else {
            Self::On
        }
    }
}

/// What the session's audit writer task is sent.
enum Outcome {
    Event(Box<AuditEvent>),
    /// Acknowledged once every event sent before it has been appended.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Appends a session's outcome events in order, off the relay's path. What queued up while
/// the last batch was being appended goes as the next batch, unawaited: nothing waits for
/// these records, so in fsync mode they go to disk with the next intent's sync (or within the
/// sink's write delay) instead of costing an `fdatasync` of their own.
async fn outcome_writer(pipeline: Arc<Pipeline>, mut rx: tokio::sync::mpsc::Receiver<Outcome>) {
    const MAX_BATCH: usize = 256;
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut events = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut items, MAX_BATCH).await > 0 {
        for item in items.drain(..) {
            match item {
                Outcome::Event(e) => events.push(*e),
                Outcome::Flush(ack) => {
                    // Everything sent before the flush is appended before it is answered.
                    pipeline.record_batch_unawaited(&events).await;
                    events.clear();
                    let _ = ack.send(());
                }
            }
        }
        pipeline.record_batch_unawaited(&events).await;
        events.clear();
    }
}

struct Relay {
    outcomes: tokio::sync::mpsc::Sender<Outcome>,
    proxy: PostgresProxy,
    principal: Arc<Principal>,
    target: Target,
    session_id: SessionId,
    profile: Arc<Profile>,
    shared: Arc<Shared>,
    /// The application name the session started with, as the server reported it.
    application: Option<String>,
    started: Instant,
}

type ClientWriter = Arc<Mutex<WriteHalf<BoxIo>>>;

/// The client as a statement's decision sees it: its writer, its read side, and the bytes
/// read from it but not yet decoded.
type ClientIn<'a> = (&'a ClientWriter, &'a mut ReadHalf<BoxIo>, &'a mut BytesMut);

/// The decision for one statement, after review if there was one.
enum Verdict {
    Forward(Arc<Profile>, CommandId),
    /// A `Parse` whose statement policy holds for review ([`Ask::Prepare`]): it is
    /// prepared without a hold, nothing on record yet, and each execution is decided (and
    /// held) with the parameters bound to it.
    HeldPerExecution,
    Refuse {
        message: String,
        code: &'static str,
    },
}

/// What a statement is decided for.
enum Ask<'a> {
    /// To run now (a simple query, an execution), with the parameters bound to an
    /// execution; held for review now if policy says so.
    Now(Option<&'a Bound<'a>>),
    /// To be prepared (a `Parse`): a review decision waits for each execution, since
    /// preparing runs nothing and a reviewer approves one execution with the parameters it
    /// is given, not a text its parameters change. An allowed statement's command and
    /// decision are kept here, to decide its later executions again.
    Prepare(&'a mut Option<Kept>),
}

/// What a `Parse` policy allowed keeps for its executions: the command and decision, to
/// decide later executions again, and what the statement does when it runs.
type Kept = (Command, Decision, Option<Arc<Runs>>);

/// The parameters `Bind` gives one execution.
struct Bound<'a> {
    formats: &'a [i16],
    params: &'a [Option<Bytes>],
}

/// The most of one parameter's value a held command's text shows (the digest covers it
/// whole).
const SHOWN_PARAMETER_BYTES: usize = 256;

impl Bound<'_> {
    /// `text`, then the parameters as the reviewer sees them: `$1 = 'text'`, `$2 = NULL`,
    /// `$3 = (binary) \x0001…`.
    fn describe(&self, text: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(text.len() + 32 * self.params.len());
        out.push_str(text);
        out.push_str("\n-- parameters:");
        if self.params.is_empty() {
            out.push_str(" none");
        }
        for (i, value) in self.params.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let binary = match self.formats {
                [] => false,
                [one] => *one == 1,
                many => many.get(i).is_some_and(|f| *f == 1),
            };
            let _ = write!(out, "{sep}${} = ", i + 1);
            let Some(value) = value else {
                out.push_str("NULL");
                continue;
            };
            let shown = &value[..value.len().min(SHOWN_PARAMETER_BYTES)];
            match std::str::from_utf8(shown) {
                Ok(text) if !binary && !text.contains('\0') => {
                    out.push('\'');
                    out.push_str(&text.replace('\'', "''"));
                    out.push('\'');
                }
                _ => {
                    out.push_str(if binary { "(binary) \\x" } else { "\\x" });
                    for b in shown {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
            if shown.len() < value.len() {
                let _ = write!(out, "… ({} bytes)", value.len());
            }
        }
        out
    }

    /// The digest of `sql` run with these parameters and formats.
    fn digest(&self, sql: &[u8]) -> wirewarden_core::CommandDigest {
        let formats: Vec<u8> = self.formats.iter().flat_map(|f| f.to_be_bytes()).collect();
        wirewarden_core::CommandDigest::compute(
            wirewarden_core::Protocol::Postgres,
            sql,
            std::iter::once(Some(formats.as_slice()))
                .chain(self.params.iter().map(|p| p.as_deref())),
        )
    }
}

/// A statement this session's `Parse` prepared and policy allowed.
struct Allowed {
    /// The profile its rows are masked with.
    profile: Arc<Profile>,
    /// The intent recorded at `Parse`, which executions run under while policy decides the
    /// same.
    id: CommandId,
    /// Its text, the command policy decided on, and the decision.
    sql: Bytes,
    command: Command,
    decision: Decision,
    /// What the statement does when it runs, if anything: applied at each execution, not
    /// at `Parse`, which runs nothing.
    effects: Option<Arc<Runs>>,
}

/// What a statement a `Parse` prepared does when it runs, besides returning rows.
struct Runs {
    /// To names (`PREPARE`, `DECLARE` …), if anything: see [`Named::apply`].
    names: Option<wirewarden_sql::Analysis>,
    /// To the channels the session listens on (`LISTEN`, `UNLISTEN`, `DISCARD ALL`), with
    /// the decision the `Parse` took: each execution carries it for the server's answer.
    channels: Option<listens::Staged>,
}

/// A statement prepared by this session's `Parse`, as the gateway decided it.
#[derive(Clone)]
enum Prepared {
    /// Allowed. `fresh` until its first `Bind`, whose execution runs under the decision
    /// just taken; later ones are decided again.
    Decided { allowed: Arc<Allowed>, fresh: bool },
    /// Held for review at each execution: its text.
    Held(Bytes),
}

/// What an `Execute` of a portal runs, as the `Bind` that made it found its statement:
/// a portal keeps its statement when the name is closed and prepared again.
#[derive(Clone)]
enum Portal {
    /// Runs under this profile and intent: the first execution of a statement just
    /// allowed, or an execution decided (or approved) on its own. A later `Execute` fetches
    /// more of its rows; it runs nothing new. What the statement does to names and
    /// channels, if anything, until its first `Execute` carries it.
    Running(Arc<Profile>, CommandId, Option<Arc<Runs>>),
    /// A later execution of an allowed statement, and the parameters bound: decided again
    /// at `Execute`, since policy may say otherwise by now (a budget spent, a grant or a
    /// time window over). While it decides the same, it runs under the statement's intent.
    Again {
        allowed: Arc<Allowed>,
        formats: Vec<i16>,
        params: Vec<Option<Bytes>>,
    },
    /// A statement held for review at each execution, and the parameters bound.
    Held {
        sql: Bytes,
        formats: Vec<i16>,
        params: Vec<Option<Bytes>>,
    },
    /// Its statement's `Parse` was refused: the server fails the `Bind`.
    Refused,
    /// Its name, or its statement's, means on the server what the gateway does not know:
    /// the server found the name taken when the gateway took it for free, or SQL `PREPARE`
    /// or `DECLARE` gave a name a `Parse` or `Bind` of this session used (until the server
    /// answers which one it kept). Its executions are refused until the name is closed (or,
    /// for a portal, bound again).
    Ambiguous,
    /// A statement no `Parse` of this session made (SQL `PREPARE`).
    Elsewhere(Bytes),
}

impl Relay {
    async fn run(
        self,
        client: BoxIo,
        buf: BytesMut,
        decoder: FrontendDecoder,
        up: upstream::Upstream,
        mut certificate: CertificateWatch,
    ) -> Result<()> {
        let (client_r, client_w) = tokio::io::split(client);
        let (up_r, up_w) = tokio::io::split(up.io);
        let client_w: ClientWriter = Arc::new(Mutex::new(client_w));
        let relay = Arc::new(self);
        let down = {
            let relay = relay.clone();
            let client_w = client_w.clone();
            tokio::spawn(async move {
                let ended = relay
                    .clone()
                    .downstream(up_r, up.buf, up.decoder, client_w)
                    .await;
                // Nothing more will be answered: a statement waiting on an answer stops.
                if let Ok(mut a) = relay.shared.answered.lock() {
                    a.ended = true;
                }
                relay.shared.answered_wake.notify_one();
                ended
            })
        };
        let mut revoked = None;
        let mut expired = false;
        let mut withdrawn = None;
        let expiry = crate::listen::credential_expiry(relay.principal.expires_at);
        let commands = tokio::select! {
            commands = relay
                .clone()
                .upstream_loop(client_r, buf, decoder, up_w, client_w.clone()) => commands,
            reason = certificate.refused() => {
                // As the server ends a terminated backend: a FATAL error, then the connection
                // closes (the upstream's with it, so an open transaction rolls back). The
                // responses relay stops while the client writer is held, so the error
                // follows a whole message; responses not yet relayed are not.
                let mut w = client_w.lock().await;
                down.abort();
                let message = format!(
                    "wirewarden: terminating connection: the client certificate of this session is no longer accepted ({reason})"
                );
                let _ = send(&mut *w, &[fatal("28000", message)]).await;
                let _ = w.shutdown().await;
                revoked = Some(reason);
                Ok(())
            }
            () = expiry => {
                // Every statement would be refused from now on: ended the same way.
                let mut w = client_w.lock().await;
                down.abort();
                let message = "wirewarden: terminating connection: the credential of this session expired; reconnect with a current one";
                let _ = send(&mut *w, &[fatal("28000", message)]).await;
                let _ = w.shutdown().await;
                expired = true;
                Ok(())
            }
            never = relay.idle_listens() => match never {},
            () = relay.shared.withdrawn_wake.notified() => {
                // Policy no longer allows a channel the session listens on: ended the same
                // way, with the rule and reason (the notification was not relayed).
                let mut w = client_w.lock().await;
                down.abort();
                let reason = relay.shared.withdrawn.lock().ok().and_then(|mut r| r.take());
                let message = match &reason {
                    Some(SessionEndReason::SubscriptionWithdrawn { rule, reason, .. }) => format!(
                        "wirewarden: terminating connection: a channel this session listens on is no longer allowed: {reason} (rule {rule})"
                    ),
                    _ => "wirewarden: terminating connection: a channel this session listens on is no longer allowed".to_owned(),
                };
                let _ = send(&mut *w, &[fatal("42501", message)]).await;
                let _ = w.shutdown().await;
                withdrawn = reason;
                Ok(())
            }
        };
        let reason = match (&commands, revoked, withdrawn) {
            (_, Some(reason), _) => SessionEndReason::CredentialRevoked { reason },
            _ if expired => SessionEndReason::CredentialExpired,
            (_, None, Some(withdrawn)) => withdrawn,
            (Ok(()), None, None) => SessionEndReason::ClientClosed,
            (Err(e), None, None) => SessionEndReason::Error {
                message: e.to_string(),
            },
        };
        let ended_here = matches!(
            reason,
            SessionEndReason::CredentialRevoked { .. }
                | SessionEndReason::CredentialExpired
                | SessionEndReason::SubscriptionWithdrawn { .. }
        );
        // Let the responses to what was sent drain before closing, then stop reading.
        let abort = down.abort_handle();
        let down = tokio::time::timeout(Duration::from_secs(5), down).await;
        abort.abort();
        let reason = match (&commands, down) {
            _ if ended_here => reason,
            (Ok(()), Ok(Ok(Err(Error::Closed("upstream"))))) => SessionEndReason::ClientClosed,
            // The client closed first: responses still owed to it cannot be written.
            (Ok(()), Ok(Ok(Err(Error::Io { peer: "client", .. })))) => {
                SessionEndReason::ClientClosed
            }
            (Ok(()), Ok(Ok(Err(e)))) => SessionEndReason::Error {
                message: e.to_string(),
            },
            _ => reason,
        };
        // Statements forwarded whose responses never came (the session ended first:
        // revoked, expired, the upstream gone): they may have run, and their outcome is
        // unknown — on record as such, so every intent has its outcome.
        let unanswered: Vec<Pending> = match relay.shared.queue.lock() {
            Ok(mut queue) => queue
                .drain(..)
                .filter_map(|(_, item)| match item {
                    Item::Command(p) => Some(p),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for mut p in unanswered {
            p.error.get_or_insert_with(|| {
                "no response: the session ended before it came; the statement may have run"
                    .to_owned()
            });
            relay.record_completion(p).await;
        }
        let end = AuditEvent::new(
            Some(relay.session_id),
            AuditEventKind::SessionEnded {
                reason,
                commands: relay.shared.commands.load(Ordering::Relaxed),
                duration_us: u64::try_from(relay.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            },
        );
        let _ = relay.outcomes.send(Outcome::Event(Box::new(end))).await;
        let (ack, done) = tokio::sync::oneshot::channel();
        if relay.outcomes.send(Outcome::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
        let _ = relay.proxy.pipeline.audit_sink().flush().await;
        commands
    }
}

impl Relay {
    fn poison_sql(&self) -> Bytes {
        // An identifier alone is a syntax error (42601) in every context, so the upstream
        // fails the statement without running anything.
        Bytes::from(format!("wirewarden_refused_{}", self.shared.token))
    }

    /// Forwards an `Execute` of `portal` that runs under `profile` and intent `id`, decided
    /// just now. A later `Execute` of a portal this session bound fetches more of the same
    /// execution's rows, and runs nothing new; one of a cursor (a portal no `Bind` made) is
    /// another `FETCH`, decided again.
    ///
    /// `run` is what the statement does to names and channels, applied now that it runs;
    /// what [`decide`](Self::decide) applied or staged is in `named` already. The execution
    /// carries those changes for the server's answer.
    #[allow(clippy::too_many_arguments)]
    fn run_portal(
        &self,
        named: &mut Named,
        classifier: &mut Classifier,
        portal: &Bytes,
        (profile, id): (Arc<Profile>, CommandId),
        run: Option<&Runs>,
        msg: &FrontendMessage,
        frame: &Frame,
        out: &mut BytesMut,
    ) -> Result<()> {
        if let Some(run) = run {
            if let Some(analysis) = &run.names {
                named.apply(analysis, classifier);
            }
            if let Some(staged) = &run.channels {
                named.channels = Some(Box::new(staged.clone()));
            }
        }
        if let Some(bound) = named.portals.get_mut(portal) {
            *bound = Portal::Running(profile.clone(), id, None);
        }
        self.track(msg, Some(self.command(id, profile, named)))?;
        out.extend_from_slice(frame.as_bytes());
        Ok(())
    }

    /// Refuses an `Execute` with a Parse that fails in its place: the server reports the
    /// error and discards until `Sync`, as for any failed message. Being an unnamed Parse,
    /// it drops the unnamed statement first.
    fn refuse_execute(
        &self,
        named: &mut Named,
        message: String,
        code: &'static str,
        out: &mut BytesMut,
    ) -> Result<()> {
        let change = Some(named.change(Space::Statement, &Bytes::new()));
        named.statements.remove(&Bytes::new());
        named.refused.insert(Bytes::new());
        let m = FrontendMessage::Parse(wirewarden_postgres::frontend::Parse {
            name: Bytes::new(),
            query: self.poison_sql(),
            param_types: Vec::new(),
        });
        let refused = Item::Refused {
            message,
            code,
            change,
        };
        self.track(&m, Some(refused))?;
        m.encode(out)?;
        Ok(())
    }

    /// Feeds `msg`, about to be sent upstream, to the tracker, and queues `item` for the
    /// answer to it under the number the tracker gave it. Both happen under the tracker's
    /// lock, so the responses side, which learns what became of each request from the
    /// tracker, always finds the item.
    fn track(&self, msg: &FrontendMessage, item: Option<Item>) -> Result<()> {
        self.track_request(msg, item).map(|_| ())
    }

    /// [`track`](Self::track), returning the tracker's number for the request.
    fn track_request(
        &self,
        msg: &FrontendMessage,
        item: Option<Item>,
    ) -> Result<Option<RequestId>> {
        let mut s = self
            .shared
            .session
            .lock()
            .map_err(|_| Error::Config("session state poisoned".into()))?;
        s.on_frontend(msg)?;
        let last = s.last_request();
        if let (Some(id), Some(item)) = (last, item) {
            self.shared
                .queue
                .lock()
                .map_err(|_| Error::Config("queue poisoned".into()))?
                .push_back((id, item));
        }
        Ok(last)
    }

    /// Waits until the server has answered every batch before the current one (up to its
    /// `ReadyForQuery`, or its `Sync` skipped), and takes what it answered. A decision that
    /// reads a portal or cursor made earlier rests on whether its transaction ended, which
    /// only those answers tell: a transaction's end (a `COMMIT`, a rollback, an implicit
    /// transaction that failed) sent in a batch still in flight would otherwise leave the
    /// name decided as what it held before, while the server runs what took it since (a
    /// cursor a function opened, say). Within the batch nothing can be waited for (the
    /// server sends nothing before its `Sync`): see [`Named::boundary`].
    async fn settle_batches(
        &self,
        named: &mut Named,
        classifier: &mut Classifier,
        io: (&mut BytesMut, &mut WriteHalf<BoxIo>),
    ) -> Result<()> {
        named.catch_up(&self.shared.answered, classifier);
        let Some(target) = named.batch_end else {
            return Ok(());
        };
        let answered = |_: &Named, a: &Answered| a.finished_through.is_some_and(|f| f >= target);
        self.wait_until(named, classifier, answered, io).await
    }

    /// Takes what the server has answered about changes to names, then, if `awaited` names
    /// a change a decision rests on that is not answered yet, waits for its answer (sending
    /// what is queued, so that the server can answer).
    async fn settle(
        &self,
        named: &mut Named,
        classifier: &mut Classifier,
        awaited: impl Fn(&Named) -> Option<u64>,
        io: (&mut BytesMut, &mut WriteHalf<BoxIo>),
    ) -> Result<()> {
        named.catch_up(&self.shared.answered, classifier);
        let Some(seq) = awaited(named) else {
            return Ok(());
        };
        self.wait_until(named, classifier, |n, _| n.through >= seq, io)
            .await
    }

    /// Waits until `done` holds of the names, caught up with the server's answers, and of
    /// the answers (sending what is queued first, so that the server can answer).
    async fn wait_until(
        &self,
        named: &mut Named,
        classifier: &mut Classifier,
        done: impl Fn(&Named, &Answered) -> bool,
        (out, up): (&mut BytesMut, &mut WriteHalf<BoxIo>),
    ) -> Result<()> {
        let holds = |named: &Named| {
            self.shared
                .answered
                .lock()
                .map_err(|_| Error::Config("answers poisoned".into()))
                .map(|a| (done(named, &a), a.ended))
        };
        if holds(named)?.0 {
            return Ok(());
        }
        if !out.is_empty() {
            up.write_all(out).await.map_err(Error::upstream_io)?;
            out.clear();
        }
        loop {
            let wake = self.shared.answered_wake.notified();
            named.catch_up(&self.shared.answered, classifier);
            match holds(named)? {
                (true, _) => return Ok(()),
                (false, true) => return Err(Error::Closed("upstream")),
                (false, false) => wake.await,
            }
        }
    }

    /// A forwarded command, carrying the changes to names and channels its statements
    /// make.
    fn command(&self, id: CommandId, profile: Arc<Profile>, named: &mut Named) -> Item {
        let mut item = self.pending(id, profile);
        if let Item::Command(p) = &mut item {
            p.effects = std::mem::take(&mut named.effects);
            p.txn = std::mem::take(&mut named.txn);
            p.channels = named.channels.take();
        }
        item
    }

    fn pending(&self, id: CommandId, profile: Arc<Profile>) -> Item {
        Item::Command(Pending {
            id,
            profile,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            masked: MaskedCounts::new(),
            error: None,
            recording: String::new(),
            recording_truncated: false,
            withheld: false,
            effects: VecDeque::new(),
            txn: VecDeque::new(),
            channels: None,
        })
    }

    /// Client → upstream: decide on every statement, forward what is allowed.
    async fn upstream_loop(
        self: Arc<Self>,
        mut client: ReadHalf<BoxIo>,
        mut buf: BytesMut,
        mut decoder: FrontendDecoder,
        mut up: WriteHalf<BoxIo>,
        client_w: ClientWriter,
    ) -> Result<()> {
        let mut classifier = Classifier::with_options(wirewarden_sql::LexOptions {
            standard_conforming_strings: Scs::of(self.shared.scs.load(Ordering::Acquire))
                != Scs::Off,
            ..wirewarden_sql::LexOptions::default()
        });
        let mut out = BytesMut::with_capacity(64 * 1024);
        let mut named = Named::default();
        loop {
            let (frame, msg) = match decoder.decode(&mut buf) {
                Ok(Some(x)) => x,
                Ok(None) => {
                    if !out.is_empty() {
                        up.write_all(&out).await.map_err(Error::upstream_io)?;
                        out.clear();
                    }
                    buf.reserve(64 * 1024);
                    if client.read_buf(&mut buf).await.map_err(Error::client_io)? == 0 {
                        // The client left without a Terminate: the server is sent one, so
                        // it answers what it was sent and then closes, and the session
                        // ends once those answers are on record rather than when a drain
                        // timeout gives up on a server that would wait for more.
                        FrontendMessage::Terminate.encode(&mut out)?;
                        up.write_all(&out).await.map_err(Error::upstream_io)?;
                        let _ = up.shutdown().await;
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    let event = AuditEvent::new(
                        Some(self.session_id),
                        AuditEventKind::ProtocolError {
                            direction: Direction::FromClient,
                            error: e.to_string(),
                        },
                    );
                    let _ = self.proxy.pipeline.record(&event).await;
                    let reply = e.to_error_response();
                    let mut w = client_w.lock().await;
                    let _ = send(&mut *w, &[reply]).await;
                    return Err(e.into());
                }
            };
            match &msg {
                FrontendMessage::Query(sql) => {
                    // Earlier pipelined messages go first: a decision may wait.
                    if !out.is_empty() {
                        up.write_all(&out).await.map_err(Error::upstream_io)?;
                        out.clear();
                    }
                    // A `FETCH` reads a cursor made earlier: what the batches in flight did
                    // to it comes first. (A cheap look for the word, which may wait for
                    // nothing it needs; never the other way.)
                    if names_resolved_at_run(sql) {
                        self.settle_batches(&mut named, &mut classifier, (&mut out, &mut up))
                            .await?;
                    }
                    self.settle(
                        &mut named,
                        &mut classifier,
                        Named::awaits_any,
                        (&mut out, &mut up),
                    )
                    .await?;
                    match self
                        .decide(
                            &mut classifier,
                            sql,
                            Ask::Now(None),
                            &mut named,
                            (&client_w, &mut client, &mut buf),
                        )
                        .await
                    {
                        Verdict::Forward(profile, id) => {
                            let command = self.command(id, profile, &mut named);
                            named.batch_end = self.track_request(&msg, Some(command))?;
                            out.extend_from_slice(frame.as_bytes());
                        }
                        Verdict::HeldPerExecution => unreachable!("held now, not deferred"),
                        Verdict::Refuse { message, code } => {
                            let q = FrontendMessage::Query(self.poison_sql());
                            let refused = Item::Refused {
                                message,
                                code,
                                change: None,
                            };
                            named.batch_end = self.track_request(&q, Some(refused))?;
                            q.encode(&mut out)?;
                        }
                    }
                    named.end_batch();
                }
                FrontendMessage::Parse(p) => {
                    if !out.is_empty() {
                        up.write_all(&out).await.map_err(Error::upstream_io)?;
                        out.clear();
                    }
                    if names_resolved_at_run(&p.query) {
                        self.settle_batches(&mut named, &mut classifier, (&mut out, &mut up))
                            .await?;
                    }
                    // Whether the name is free rests on what the server answered.
                    let awaited = |n: &Named| {
                        (!p.name.is_empty())
                            .then(|| n.awaits(Space::Statement, &p.name))
                            .flatten()
                    };
                    self.settle(&mut named, &mut classifier, awaited, (&mut out, &mut up))
                        .await?;
                    let mut kept = None;
                    let verdict = self
                        .decide(
                            &mut classifier,
                            &p.query,
                            Ask::Prepare(&mut kept),
                            &mut named,
                            (&client_w, &mut client, &mut buf),
                        )
                        .await;
                    let verdict = match verdict {
                        // The server keeps a named statement until it is closed or
                        // deallocated, and fails a Parse that reuses the name (42P05),
                        // keeping the statement it has. The gateway fails it the same way,
                        // so the decision it holds for the name stays that statement's.
                        Verdict::Forward(..) | Verdict::HeldPerExecution
                            if !p.name.is_empty()
                                && (named.statements.contains_key(&p.name)
                                    || named.ambiguous_statements.contains(&p.name)
                                    || std::str::from_utf8(&p.name)
                                        .is_ok_and(|n| classifier.prepared(n).is_some())) =>
                        {
                            Verdict::Refuse {
                                message: format!(
                                    "wirewarden: prepared statement {} already exists; close it before preparing the name again",
                                    quote_ident(&p.name)
                                ),
                                code: "42P05",
                            }
                        }
                        // See the same refusal at `Execute`.
                        Verdict::Forward(..) | Verdict::HeldPerExecution
                            if named.boundary.is_some()
                                && kept.as_ref().map_or_else(
                                    || names_resolved_at_run(&p.query),
                                    |(command, ..)| resolves_at_run(command),
                                ) =>
                        {
                            Verdict::Refuse {
                                message: "wirewarden: a FETCH prepared in the same batch after a statement that may end or roll back the transaction is refused; prepare it after that batch's Sync".into(),
                                code: "42501",
                            }
                        }
                        verdict => verdict,
                    };
                    match verdict {
                        Verdict::Forward(profile, id) => {
                            let seq = named.change(Space::Statement, &p.name);
                            named.refused.remove(&p.name);
                            named.ambiguous_statements.remove(&p.name);
                            if let Some((command, decision, effects)) = kept {
                                let allowed = Arc::new(Allowed {
                                    profile,
                                    id,
                                    sql: p.query.clone(),
                                    command,
                                    decision,
                                    effects,
                                });
                                let prepared = Prepared::Decided {
                                    allowed,
                                    fresh: true,
                                };
                                named.statements.insert(p.name.clone(), prepared);
                            }
                            self.track(&msg, Some(Item::Message(seq, None)))?;
                            out.extend_from_slice(frame.as_bytes());
                        }
                        Verdict::HeldPerExecution => {
                            let seq = named.change(Space::Statement, &p.name);
                            named.refused.remove(&p.name);
                            named.ambiguous_statements.remove(&p.name);
                            named
                                .statements
                                .insert(p.name.clone(), Prepared::Held(p.query.clone()));
                            self.track(&msg, Some(Item::Message(seq, None)))?;
                            out.extend_from_slice(frame.as_bytes());
                        }
                        Verdict::Refuse { message, code } => {
                            // The server's Parse fails, so what it holds under this name
                            // stays: a named statement keeps the statement (and decision)
                            // it had; the unnamed one is dropped by any Parse.
                            let change = Some(named.change(Space::Statement, &p.name));
                            if p.name.is_empty() || !named.statements.contains_key(&p.name) {
                                named.statements.remove(&p.name);
                                named.refused.insert(p.name.clone());
                            }
                            let mut poisoned = p.clone();
                            poisoned.query = self.poison_sql();
                            poisoned.param_types.clear();
                            let m = FrontendMessage::Parse(poisoned);
                            let refused = Item::Refused {
                                message,
                                code,
                                change,
                            };
                            self.track(&m, Some(refused))?;
                            m.encode(&mut out)?;
                        }
                    }
                }
                FrontendMessage::Bind(b) => {
                    // What the statement is. What the portal's name held matters not: the
                    // server's answer says whether this Bind took it.
                    let awaited = |n: &Named| n.awaits(Space::Statement, &b.statement);
                    self.settle(&mut named, &mut classifier, awaited, (&mut out, &mut up))
                        .await?;
                    // A portal of that name (a cursor, say) makes the server fail this Bind
                    // (42P03), and the name keeps it; the gateway then reads that the name
                    // was taken. A Bind that succeeds found the name free: a cursor the
                    // classifier knew by it is gone, and a `FETCH` from the name would read
                    // this portal, so the classifier forgets it.
                    let forget = std::str::from_utf8(&b.portal).ok().and_then(|name| {
                        let before = classifier.cursor(name).cloned()?;
                        classifier.forget_cursor(name);
                        Some(named.forget_cursor_for_bind(name, before))
                    });
                    let portal = match named.statements.get_mut(&b.statement) {
                        _ if named.ambiguous_statements.contains(&b.statement) => Portal::Ambiguous,
                        // A `FETCH` reads whatever cursor has the name when it runs: it is
                        // decided again at each execution, never on what its `Parse` saw.
                        Some(Prepared::Decided { allowed, fresh })
                            if *fresh && !resolves_at_run(&allowed.command) =>
                        {
                            *fresh = false;
                            Portal::Running(
                                allowed.profile.clone(),
                                allowed.id,
                                allowed.effects.clone(),
                            )
                        }
                        Some(Prepared::Decided { allowed, .. }) => Portal::Again {
                            allowed: allowed.clone(),
                            formats: b.param_formats.clone(),
                            params: b.params.clone(),
                        },
                        Some(Prepared::Held(sql)) => Portal::Held {
                            sql: sql.clone(),
                            formats: b.param_formats.clone(),
                            params: b.params.clone(),
                        },
                        None if named.refused.contains(&b.statement) => Portal::Refused,
                        None => Portal::Elsewhere(b.statement.clone()),
                    };
                    let seq = named.change(Space::Portal, &b.portal);
                    named.portals.insert(b.portal.clone(), portal);
                    named.ambiguous_portals.remove(&b.portal);
                    named.bound.insert(b.portal.clone(), seq);
                    self.track(&msg, Some(Item::Message(seq, forget)))?;
                    out.extend_from_slice(frame.as_bytes());
                }
                FrontendMessage::Execute { portal, .. } => {
                    // A portal made in an earlier batch, a cursor, or a `FETCH`: whether
                    // what it reads outlived the batches in flight is in their answers.
                    let reads = match named.portals.get(portal) {
                        Some(Portal::Again { allowed, .. }) => resolves_at_run(&allowed.command),
                        Some(Portal::Held { sql, .. }) => names_resolved_at_run(sql),
                        _ => false,
                    };
                    if reads || !named.bound_in_this_batch(portal) {
                        self.settle_batches(&mut named, &mut classifier, (&mut out, &mut up))
                            .await?;
                    }
                    // Within the batch, after a statement that may end or roll back the
                    // transaction, nothing can be waited for: what was made before it, and
                    // any cursor, is refused until the batch is answered.
                    if named
                        .boundary
                        .is_some_and(|b| reads || named.bound.get(portal).is_none_or(|s| *s < b))
                    {
                        let message = format!(
                            "wirewarden: {} was made before a statement in the same batch that may end or roll back the transaction; run it after that batch's Sync",
                            quote_ident(portal)
                        );
                        self.refuse_execute(&mut named, message, "42501", &mut out)?;
                        continue;
                    }
                    let awaited = |n: &Named| n.awaits(Space::Portal, portal);
                    self.settle(&mut named, &mut classifier, awaited, (&mut out, &mut up))
                        .await?;
                    let mut bound = named.portals.get(portal).cloned();
                    if matches!(bound, None | Some(Portal::Elsewhere(_))) {
                        // Decided as SQL, on what SQL gave the name.
                        self.settle(
                            &mut named,
                            &mut classifier,
                            Named::awaits_any,
                            (&mut out, &mut up),
                        )
                        .await?;
                        bound = named.portals.get(portal).cloned();
                    }
                    let (decide_sql, bound_params) = match bound {
                        Some(Portal::Running(profile, id, run)) => {
                            self.run_portal(
                                &mut named,
                                &mut classifier,
                                portal,
                                (profile, id),
                                run.as_deref(),
                                &msg,
                                &frame,
                                &mut out,
                            )?;
                            continue;
                        }
                        Some(Portal::Again {
                            allowed,
                            formats,
                            params,
                        }) => {
                            let now = Timestamp::now();
                            let same = !resolves_at_run(&allowed.command)
                                && !self.principal.is_expired_at(now)
                                && self
                                    .proxy
                                    .pipeline
                                    .decide(&self.principal, &self.target, &allowed.command, now)
                                    .await
                                    .evaluation
                                    .decision
                                    == allowed.decision;
                            if same {
                                self.run_portal(
                                    &mut named,
                                    &mut classifier,
                                    portal,
                                    (allowed.profile.clone(), allowed.id),
                                    allowed.effects.as_deref(),
                                    &msg,
                                    &frame,
                                    &mut out,
                                )?;
                                continue;
                            }
                            // Policy decides otherwise now: this execution is decided on
                            // its own, with its parameters, and on record.
                            (allowed.sql.clone(), Some((formats, params)))
                        }
                        Some(Portal::Refused) => {
                            // Its Parse was refused: the server fails the Bind (or is
                            // already discarding until Sync), so nothing runs. Anything it
                            // returned would have no statement behind it, and be withheld.
                            self.track(&msg, None)?;
                            out.extend_from_slice(frame.as_bytes());
                            continue;
                        }
                        Some(Portal::Ambiguous) => {
                            let message = format!(
                                "wirewarden: {} may name a statement or cursor made in SQL as well as one made by this connection's Parse or Bind; close it and prepare it again",
                                quote_ident(portal)
                            );
                            self.refuse_execute(&mut named, message, "42P05", &mut out)?;
                            continue;
                        }
                        None if named.ambiguous_portals.contains(portal) => {
                            let message = format!(
                                "wirewarden: {} may name a cursor as well as a portal this connection bound; close it first",
                                quote_ident(portal)
                            );
                            self.refuse_execute(&mut named, message, "42P05", &mut out)?;
                            continue;
                        }
                        // Held for review with the parameters bound: this execution is
                        // decided (and held) on its own.
                        Some(Portal::Held {
                            sql,
                            formats,
                            params,
                        }) => (sql, Some((formats, params))),
                        // A statement or portal no Parse or Bind of this session made:
                        // one prepared with SQL `PREPARE`, or a cursor opened with
                        // `DECLARE`. The execution is decided as the SQL that does the
                        // same, so it has an intent of its own and its rows are masked
                        // with the profile its rule gives; a name nothing prepared is
                        // unknown, and refused.
                        Some(Portal::Elsewhere(statement)) => (
                            Bytes::from(format!("EXECUTE {}", quote_ident(&statement))),
                            None,
                        ),
                        None => (
                            Bytes::from(format!("FETCH ALL FROM {}", quote_ident(portal))),
                            None,
                        ),
                    };
                    if !out.is_empty() {
                        up.write_all(&out).await.map_err(Error::upstream_io)?;
                        out.clear();
                    }
                    let bound = bound_params
                        .as_ref()
                        .map(|(formats, params)| Bound { formats, params });
                    match self
                        .decide(
                            &mut classifier,
                            &decide_sql,
                            Ask::Now(bound.as_ref()),
                            &mut named,
                            (&client_w, &mut client, &mut buf),
                        )
                        .await
                    {
                        Verdict::Forward(profile, id) => {
                            self.run_portal(
                                &mut named,
                                &mut classifier,
                                portal,
                                (profile, id),
                                None,
                                &msg,
                                &frame,
                                &mut out,
                            )?;
                        }
                        Verdict::HeldPerExecution => unreachable!("held now, not deferred"),
                        Verdict::Refuse { message, code } => {
                            self.refuse_execute(&mut named, message, code, &mut out)?;
                        }
                    }
                }
                FrontendMessage::Sync => {
                    named.end_batch();
                    named.batch_end = self.track_request(&msg, None)?;
                    out.extend_from_slice(frame.as_bytes());
                }
                FrontendMessage::FunctionCall(_) => {
                    // The fast-path function call bypasses SQL and so every rule: refused,
                    // answered like any failed call (ErrorResponse, then ReadyForQuery).
                    if !out.is_empty() {
                        up.write_all(&out).await.map_err(Error::upstream_io)?;
                        out.clear();
                    }
                    let refused = Item::Refused {
                        message: "wirewarden: the fast-path function call interface is not allowed"
                            .into(),
                        code: "0A000",
                        change: None,
                    };
                    let q = FrontendMessage::Query(self.poison_sql());
                    named.batch_end = self.track_request(&q, Some(refused))?;
                    q.encode(&mut out)?;
                    named.end_batch();
                }
                FrontendMessage::Terminate => {
                    out.extend_from_slice(frame.as_bytes());
                    up.write_all(&out).await.map_err(Error::upstream_io)?;
                    let _ = up.shutdown().await;
                    return Ok(());
                }
                FrontendMessage::Close { kind, name } => {
                    // The name is free again: a later Parse of it is decided afresh. Portals
                    // keep what their Bind found.
                    named.catch_up(&self.shared.answered, &mut classifier);
                    let space = match kind {
                        wirewarden_postgres::frontend::ObjectType::Statement => Space::Statement,
                        wirewarden_postgres::frontend::ObjectType::Portal => Space::Portal,
                    };
                    let seq = named.free(space, name);
                    // A portal's name is a cursor's too: a `FETCH` from it is no longer
                    // the declared query's.
                    if space == Space::Portal
                        && let Ok(name) = std::str::from_utf8(name)
                    {
                        classifier.forget_cursor(name);
                    }
                    self.track(&msg, Some(Item::Message(seq, None)))?;
                    out.extend_from_slice(frame.as_bytes());
                }
                FrontendMessage::Describe { .. }
                | FrontendMessage::Flush
                | FrontendMessage::CopyData(_)
                | FrontendMessage::CopyDone
                | FrontendMessage::CopyFail(_) => {
                    self.track(&msg, None)?;
                    out.extend_from_slice(frame.as_bytes());
                }
                _ => {
                    let reply = BackendMessage::ErrorResponse(ErrorFields::new(
                        "FATAL",
                        "08P01",
                        "unexpected message after startup",
                    ));
                    let mut w = client_w.lock().await;
                    let _ = send(&mut *w, &[reply]).await;
                    return Err(Error::Closed("client"));
                }
            }
        }
    }

    /// Classifies, decides, audits the intent, and holds for review when policy says so
    /// (watching `client` meanwhile: see [`review`](Self::review)).
    ///
    /// An execution's bound parameters ([`Ask::Now`]) are part of the command: its text
    /// shows them and its digest covers them, so a reviewer approves this execution and no
    /// other. For [`Ask::Prepare`] a review decision is not acted on: the verdict is
    /// [`Verdict::HeldPerExecution`] and nothing is recorded. What forwarded SQL does to
    /// prepared statements (`DEALLOCATE`, `DISCARD ALL`) is applied to `named` when it runs
    /// now, not when it is only prepared.
    async fn decide(
        &self,
        classifier: &mut Classifier,
        sql: &[u8],
        ask: Ask<'_>,
        named: &mut Named,
        client: ClientIn<'_>,
    ) -> Verdict {
        let (bound, prepare, kept) = match ask {
            Ask::Now(bound) => (bound, false, None),
            Ask::Prepare(kept) => (None, true, Some(kept)),
        };
        let now = Timestamp::now();
        let text = String::from_utf8_lossy(sql);
        let analysis = classifier.classify_bytes(sql);
        if prepare {
            // A prepared statement that changes how text lexes may run at any Execute:
            // from now on the classifier lexes text both ways and refuses what splits
            // differently. Its other effects wait for an execution.
            if analysis.statements.iter().any(|st| st.changes_lexing()) {
                classifier.forget_standard_conforming_strings();
            }
        }
        let mut command = analysis.to_command(&text);
        if command.verb.is_empty() {
            command.verb = "UNKNOWN".into();
        }
        if let Some(bound) = bound {
            command.text = bound.describe(&command.text);
            command.digest = bound.digest(sql);
        }
        let command_id = CommandId::new();
        // A statement read in the turn the credential expired (the expiry timer ends the
        // session) is refused without asking policy, on record like any denial.
        // What the statements do to the channels the session listens on, carried with
        // their decision if they go ahead, and made when the server commits them.
        let channels = listens::changes(&analysis);
        let (decision, policy_version, mut opened) = if self.principal.is_expired_at(now) {
            let deny = Decision::Deny {
                rule: wirewarden_core::RuleId::new("credential-expired"),
                reason: "the credential of this session has expired".into(),
            };
            (deny, "builtin".to_owned(), None)
        } else {
            let decided = self
                .proxy
                .pipeline
                .decide(&self.principal, &self.target, &command, now)
                .await;
            let version = decided.evaluation.policy_version.to_string();
            let opened =
                (!channels.is_empty()).then(|| Opened::new(command.clone(), &decided.grants));
            (decided.evaluation.decision, version, opened)
        };
        if matches!(decision, Decision::Review { .. })
            && let Some(o) = opened.as_mut()
        {
            // A reviewer approves it, or it does not run: a later decision that asks for
            // review again does not end what they approved.
            o.reviewed = true;
        }
        if prepare && matches!(decision, Decision::Review { .. }) {
            return Verdict::HeldPerExecution;
        }
        self.shared.commands.fetch_add(1, Ordering::Relaxed);
        let event = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::CommandDecided {
                command_id,
                subject: self.principal.subject.clone(),
                command: command.clone(),
                decision: decision.clone(),
                policy_version,
            },
        );
        // The intent is recorded (and, in durable mode, on disk) before anything is
        // forwarded; if it cannot be, the statement is refused.
        if self.proxy.pipeline.record(&event).await.is_err() {
            return Verdict::Refuse {
                message: "wirewarden: the audit trail is unavailable, statement refused".into(),
                code: "58000",
            };
        }
        let metrics = self.proxy.pipeline.metrics();
        match &decision {
            Decision::Allow { .. } => Metrics::add(&metrics.commands_allowed, 1),
            Decision::Review { .. } => Metrics::add(&metrics.commands_reviewed, 1),
            _ => Metrics::add(&metrics.commands_denied, 1),
        }
        let kept_decision = kept.is_some().then(|| decision.clone());
        let verdict = match decision {
            Decision::Allow { mask_profile, .. } => {
                match self.proxy.pipeline.mask_profile(&self.target, &self.principal, mask_profile.as_deref()) {
                    Ok(profile) => {
                        // A Parse runs nothing: what the statement does to names (a
                        // `DEALLOCATE` frees one, a `DECLARE` opens a cursor) is applied at
                        // each execution.
                        if !prepare {
                            named.apply(&analysis, classifier);
                        }
                        if let (Some(kept), Some(decision)) = (kept, kept_decision) {
                            let staged = opened.clone().map(|opened| listens::Staged {
                                changes: channels.iter().cloned().collect(),
                                opened,
                            });
                            let names = names::acts_on_names(&analysis).then_some(analysis);
                            let effects = (names.is_some() || staged.is_some()).then(|| {
                                Arc::new(Runs {
                                    names,
                                    channels: staged,
                                })
                            });
                            *kept = Some((command, decision, effects));
                        }
                        Verdict::Forward(profile, command_id)
                    }
                    Err(_) => Verdict::Refuse {
                        message: "wirewarden: the mask profile for this statement is missing, statement refused".into(),
                        code: "58000",
                    },
                }
            }
            Decision::Deny { rule, reason } => Verdict::Refuse {
                message: format!("wirewarden: {reason} (rule {rule})"),
                code: "42501",
            },
            Decision::Review {
                rule,
                reason,
                requirement,
            } => {
                let verdict = self
                    .review(&command, command_id, rule, &reason, requirement, client)
                    .await;
                if matches!(verdict, Verdict::Forward(..)) && !prepare {
                    named.apply(&analysis, classifier);
                }
                verdict
            }
            _ => Verdict::Refuse {
                message: "wirewarden: unsupported decision".into(),
                code: "42501",
            },
        };
        // Before anything is forwarded, the responses side learns how text is now lexed.
        self.shared.scs.store(
            Scs::known(classifier.standard_conforming_strings()) as u8,
            Ordering::Release,
        );
        // `opened` is there exactly when the statements change the channels. What runs now
        // carries them (a `Parse` keeps them for its executions, above).
        if let (Verdict::Forward(..), Some(mut opened)) = (&verdict, opened)
            && !prepare
        {
            // Decided now, after a review's wait.
            opened.decided = Instant::now();
            named.channels = Some(Box::new(listens::Staged {
                changes: channels.into(),
                opened,
            }));
        }
        verdict
    }

    async fn review(
        &self,
        command: &Command,
        command_id: CommandId,
        rule: wirewarden_core::RuleId,
        reason: &str,
        requirement: wirewarden_core::ReviewRequirement,
        (client_w, client, buf): ClientIn<'_>,
    ) -> Verdict {
        let pipeline = &self.proxy.pipeline;
        let held = HeldCommand {
            principal: &self.principal,
            target: &self.target,
            session: self.session_id,
            command,
            command_id,
        };
        let refuse = |r: ReviewRefusal| {
            let code = match r {
                ReviewRefusal::AuditUnavailable => "58000",
                ReviewRefusal::TimedOut { .. } => "57014",
                _ => "42501",
            };
            let message = match r {
                ReviewRefusal::Unavailable(_) => {
                    format!("wirewarden: statement needs review but {r}")
                }
                ReviewRefusal::AuditUnavailable => {
                    "wirewarden: the audit trail is unavailable, statement refused".into()
                }
                _ => format!("wirewarden: {r}"),
            };
            Verdict::Refuse { message, code }
        };
        let pending = match pipeline
            .request_review(&held, rule, reason, requirement)
            .await
        {
            Ok(p) => p,
            Err(r) => return refuse(r),
        };
        let notice = BackendMessage::NoticeResponse(ErrorFields::new(
            "NOTICE",
            "01000",
            format!(
                "wirewarden: statement held for review {} ({reason}); waiting up to {}s for approval",
                pending.id,
                pending.timeout.as_secs()
            ),
        ));
        {
            let mut w = client_w.lock().await;
            let _ = send(&mut *w, &[notice]).await;
        }
        // The client is read meanwhile (what it sends is kept, in order, for later): a
        // client that leaves gives up the wait, so its review is cancelled and the
        // statement does not run.
        tokio::select! {
            approved = pipeline.await_review(&held, pending) => match approved {
                Ok(()) => Verdict::Forward(self.profile.clone(), command_id),
                Err(r) => refuse(r),
            },
            () = crate::listen::client_gone(client, buf) => Verdict::Refuse {
                message: "wirewarden: the client left while the statement waited for review".into(),
                code: "57014",
            },
        }
    }

    /// Upstream → client: mask everything, correlate responses, record outcomes.
    async fn downstream(
        self: Arc<Self>,
        mut up: ReadHalf<BoxIo>,
        mut buf: BytesMut,
        mut decoder: wirewarden_postgres::BackendDecoder,
        client_w: ClientWriter,
    ) -> Result<()> {
        let mut st = Downstream {
            application: self.application.clone(),
            ..Downstream::default()
        };
        loop {
            let mut failed = None;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some((frame, msg))) => {
                        if let Err(e) = self.on_backend(&mut st, frame, msg).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let event = AuditEvent::new(
                            Some(self.session_id),
                            AuditEventKind::ProtocolError {
                                direction: Direction::FromUpstream,
                                error: e.to_string(),
                            },
                        );
                        let _ = self.proxy.pipeline.record(&event).await;
                        fatal("08P01", "wirewarden: the upstream sent an invalid message")
                            .encode(&mut st.out)?;
                        failed = Some(e.into());
                        break;
                    }
                }
            }
            // Budgets are charged before the client sees the result, so its next command is
            // decided against the updated counters; and what completed goes on record before
            // the write, so that nothing that ends the session from here on (the client
            // gone, the upstream's next message invalid, the session aborted) loses an
            // outcome.
            for p in &st.completed {
                self.proxy
                    .pipeline
                    .charge(&self.principal, &self.target, p.rows, p.bytes);
            }
            for done in std::mem::take(&mut st.completed) {
                self.record_completion(done).await;
            }
            if !st.out.is_empty() {
                let mut w = client_w.lock().await;
                let written = w.write_all(&st.out).await;
                if failed.is_none() {
                    written.map_err(Error::client_io)?;
                    w.flush().await.map_err(Error::client_io)?;
                } else {
                    let _ = w.flush().await;
                }
                st.out.clear();
            }
            if let Some(e) = failed {
                // The client reads the FATAL error, then the connection closes, as the
                // server's would: a client waiting for the rest of a response stops.
                let _ = client_w.lock().await.shutdown().await;
                return Err(e);
            }
            buf.reserve(64 * 1024);
            if up.read_buf(&mut buf).await.map_err(Error::upstream_io)? == 0 {
                return Err(Error::Closed("upstream"));
            }
        }
    }

    /// The server is outside any transaction: the changes to channels the last one made
    /// are made if it committed, dropped if not, and the timer for channels with no
    /// notification is set again if they changed.
    fn between_transactions(&self) {
        let changed = self
            .shared
            .listens
            .lock()
            .is_ok_and(|mut l| l.between_transactions());
        if changed {
            self.shared.listens_changed.notify_one();
        }
    }

    /// The statement and profile a notification on `channel` goes out under, its decision
    /// taken again first if it is due; `None` if the session holds no decision for the
    /// channel. A channel policy refuses now ends the session: the error says so.
    async fn listening(&self, channel: &[u8]) -> Result<Option<(CommandId, Arc<Profile>)>> {
        let every = self.proxy.config.stream_recheck;
        let due = {
            let Ok(mut l) = self.shared.listens.lock() else {
                return Ok(None);
            };
            let Some(c) = l.get_mut(channel) else {
                return Ok(None);
            };
            if !c.opened.due(Instant::now(), Timestamp::now(), every) {
                return Ok(Some((c.id, c.profile.clone())));
            }
            c.opened.command.clone()
        };
        let decided = self
            .proxy
            .pipeline
            .decide(&self.principal, &self.target, &due, Timestamp::now())
            .await;
        let verdict = {
            let Ok(mut l) = self.shared.listens.lock() else {
                return Ok(None);
            };
            let Some(c) = l.get_mut(channel) else {
                return Ok(None);
            };
            match c
                .opened
                .redecided(&self.proxy.pipeline, &self.target, &self.principal, decided)
            {
                Ok(profile) => {
                    if let Some(p) = profile {
                        c.profile = p;
                    }
                    Ok((c.id, c.profile.clone()))
                }
                Err((rule, reason)) => Err((c.id, rule, reason)),
            }
        };
        match verdict {
            Ok(found) => Ok(Some(found)),
            Err((command_id, rule, reason)) => {
                Metrics::add(&self.proxy.pipeline.metrics().commands_denied, 1);
                if let Ok(mut w) = self.shared.withdrawn.lock() {
                    *w = Some(SessionEndReason::SubscriptionWithdrawn {
                        command_id,
                        rule,
                        reason,
                    });
                }
                self.shared.withdrawn_wake.notify_one();
                Err(Error::Closed("the gateway (a LISTEN policy withdrew)"))
            }
        }
    }

    /// Takes again, on time, the decisions of channels no notification brings: a grant's
    /// expiry or a revocation ends the session then, not at the next notification (which
    /// may never come). Sleeps while the session listens on nothing. A refusal wakes the
    /// session's end (`withdrawn_wake`); this never returns.
    async fn idle_listens(&self) -> std::convert::Infallible {
        let every = self.proxy.config.stream_recheck;
        let mut timer = None;
        loop {
            let next = self
                .shared
                .listens
                .lock()
                .ok()
                .and_then(|l| l.next_due(every));
            match next {
                None => timer = None,
                Some(at) => crate::stream::arm(&mut timer, at),
            }
            tokio::select! {
                () = crate::stream::wake(&mut timer) => {
                    timer = None;
                    let due = self
                        .shared
                        .listens
                        .lock()
                        .map(|l| l.due(Instant::now(), Timestamp::now(), every))
                        .unwrap_or_default();
                    for channel in due {
                        if self.listening(channel.as_bytes()).await.is_err() {
                            // Withdrawn: the session is ending.
                            return std::future::pending().await;
                        }
                    }
                }
                () = self.shared.listens_changed.notified() => {}
            }
        }
    }

    async fn record_completion(&self, p: Pending) {
        let metrics = self.proxy.pipeline.metrics();
        Metrics::add(&metrics.rows, p.rows);
        Metrics::add(&metrics.values_masked, p.masked.total());
        if p.withheld {
            Metrics::add(&metrics.results_withheld, 1);
        }
        let duration_us = u64::try_from(p.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The reply as the client saw it travels in the completion. Outcomes need not be on
        // disk before the next response is relayed (only intents must precede forwarding):
        // they go to the session's audit writer, in order.
        let reply =
            (!p.recording.is_empty()).then(|| Recording::new(p.recording, p.recording_truncated));
        let completed = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::CommandCompleted {
                command_id: p.id,
                rows: p.rows,
                bytes: p.bytes,
                masked: p.masked,
                duration_us,
                error: p.error,
                reply,
            },
        );
        let _ = self
            .outcomes
            .send(Outcome::Event(Box::new(completed)))
            .await;
    }

    /// The server reported the session's `application_name`: a new name goes on record
    /// before the client sees the report (and so before it can send anything the name
    /// applies to).
    async fn on_application(&self, st: &mut Downstream, value: &[u8]) {
        let application = application_of(value);
        if application == st.application {
            return;
        }
        st.application.clone_from(&application);
        let event = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::ApplicationChanged { application },
        );
        // Best effort: the statement that renamed the session has run; a trail that cannot
        // take this record refuses the next statement's intent anyway.
        let _ = self.proxy.pipeline.record(&event).await;
    }

    /// The server's answer to change `seq`: made (`done`) or not, and if not, what the
    /// classifier must forget.
    fn answer(&self, seq: u64, done: bool, forget: Option<Forget>) {
        self.answer_with(seq, done, forget, false);
    }

    /// [`answer`](Self::answer), telling whether the server found the name taken.
    fn answer_with(&self, seq: u64, done: bool, forget: Option<Forget>, taken: bool) {
        if let Ok(mut a) = self.shared.answered.lock() {
            a.through = a.through.max(seq);
            if !done {
                a.rejected.push(Rejection { seq, forget, taken });
            }
        }
        self.shared.answered_wake.notify_one();
    }

    /// A command leaves the queue: the changes to names it would have made and the server
    /// did not complete were not made.
    fn finish(&self, st: &mut Downstream, mut p: Pending) {
        for e in p.effects.drain(..) {
            self.answer(e.seq, false, e.forget);
        }
        st.completed.push(p);
    }

    /// Relays one message from the server. The tracker says which request it answers
    /// (the head of its queue as the message arrives) and what became of each request, and
    /// what the gateway queued for that request is taken accordingly.
    async fn on_backend(
        &self,
        st: &mut Downstream,
        frame: Frame,
        msg: BackendMessage,
    ) -> Result<()> {
        let head = {
            let mut session = self
                .shared
                .session
                .lock()
                .map_err(|_| Error::Config("session state poisoned".into()))?;
            let head = session.head_request();
            session.on_backend(&msg)?;
            st.finished.extend(session.take_finished());
            head
        };
        let relayed = self.relay_backend(st, frame, msg, head).await;
        if !st.finished.is_empty() {
            self.finished(st)?;
        }
        relayed
    }

    /// Takes what the gateway queued for each request the server finished.
    fn finished(&self, st: &mut Downstream) -> Result<()> {
        let mut q = self
            .shared
            .queue
            .lock()
            .map_err(|_| Error::Config("queue poisoned".into()))?;
        let mut finished = std::mem::take(&mut st.finished);
        let last = finished.iter().map(|(id, _)| *id).max();
        for (id, how) in finished.drain(..) {
            // In order, so nearly always the first.
            let Some(i) = q.iter().position(|(queued, _)| *queued == id) else {
                continue;
            };
            let Some((_, item)) = q.remove(i) else {
                continue;
            };
            match item {
                Item::Command(mut p) => {
                    match how {
                        Finished::Done => {}
                        Finished::Failed => {
                            p.error.get_or_insert_with(|| "failed".into());
                        }
                        Finished::Skipped => {
                            p.error.get_or_insert_with(|| {
                                "not executed: an earlier message failed".into()
                            });
                        }
                    }
                    self.finish(st, p);
                }
                Item::Message(seq, forget) => {
                    let done = how == Finished::Done;
                    self.answer(seq, done, forget.filter(|_| !done));
                }
                // The placeholder fails, which is the change predicted; skipped, the name
                // keeps what it had.
                Item::Refused { change, .. } => {
                    if let Some(seq) = change {
                        self.answer(seq, how != Finished::Skipped, None);
                    }
                }
            }
        }
        st.finished = finished;
        drop(q);
        // Once what these requests did is taken (their answers relayed, their changes
        // answered): a decision waiting for them reads it.
        if let Some(last) = last
            && let Ok(mut a) = self.shared.answered.lock()
        {
            a.finished_through = a.finished_through.max(Some(last));
            drop(a);
            self.shared.answered_wake.notify_one();
        }
        Ok(())
    }

    async fn relay_backend(
        &self,
        st: &mut Downstream,
        frame: Frame,
        msg: BackendMessage,
        head: Option<RequestId>,
    ) -> Result<()> {
        let limit = self.proxy.config.record_limit;
        match msg {
            BackendMessage::RowDescription(rd) => {
                let oids: Vec<u32> = rd.fields().iter().map(|f| f.table_oid).collect();
                // A table the lookup cannot name (it failed) leaves its columns unresolved:
                // under a profile with column rules their values are withheld. One that no
                // longer exists is named nothing, and masked by content.
                let _ = self.proxy.catalog.resolve(&oids).await;
                st.plans = None;
                if st.discarding {
                    return Ok(());
                }
                if let Ok(mut q) = self.shared.queue.lock()
                    && let Some(p) = head_command(&mut q, head)
                {
                    let names: Vec<String> = rd
                        .fields()
                        .iter()
                        .map(|f| String::from_utf8_lossy(&f.name).into_owned())
                        .collect();
                    record(p, limit, &names.join(" | "));
                }
                st.out.extend_from_slice(frame.as_bytes());
            }
            BackendMessage::DataRow(row) => {
                if st.discarding {
                    return Ok(());
                }
                let rd = self
                    .shared
                    .session
                    .lock()
                    .ok()
                    .and_then(|s| s.row_description().cloned());
                if let Some(rd) = &rd {
                    let stale = st
                        .plans
                        .as_ref()
                        .is_none_or(|(prev, _)| !Arc::ptr_eq(prev, rd) && prev.body() != rd.body());
                    if stale {
                        st.plans =
                            Some((rd.clone(), outbound::plan(rd.fields(), &self.proxy.catalog)));
                    }
                } else {
                    st.plans = None;
                }
                let mut q = self
                    .shared
                    .queue
                    .lock()
                    .map_err(|_| Error::Config("queue poisoned".into()))?;
                let Some(pending) = head_command(&mut q, head) else {
                    // Rows no forwarded statement asked for (only a broken or hostile server
                    // sends them): nothing says which profile, with which column rules,
                    // masks them. Withheld, as a value that cannot be masked is.
                    st.discarding = true;
                    BackendMessage::ErrorResponse(ErrorFields::new(
                        "ERROR",
                        "XX000",
                        WITHHELD_MESSAGE,
                    ))
                    .encode(&mut st.out)?;
                    return Ok(());
                };
                if rd.is_none() {
                    // Rows whose shape was never described cannot be checked against column
                    // rules: fail closed rather than mask by content alone.
                    withhold(
                        st,
                        pending,
                        "the shape of the result is unknown (no Describe)",
                    )?;
                    return Ok(());
                }
                let start = st.out.len();
                let plans = st.plans.as_ref().map(|(_, p)| p.as_slice());
                match outbound::mask_row(
                    &pending.profile,
                    plans,
                    &row,
                    &mut st.rewriter,
                    &mut st.out,
                    &mut pending.masked,
                ) {
                    Ok(false) => st.out.extend_from_slice(frame.as_bytes()),
                    Ok(true) => {}
                    Err(Unmaskable(why)) => {
                        st.out.truncate(start);
                        withhold(st, pending, &why)?;
                        return Ok(());
                    }
                }
                pending.rows += 1;
                pending.bytes += (st.out.len() - start) as u64;
                if !pending.recording_truncated {
                    let line = render_row(
                        st.out.get(start..).unwrap_or_default(),
                        plans,
                        &self.proxy.config.limits,
                    );
                    record(pending, limit, &line);
                } else {
                    pending.recording_truncated = true;
                }
            }
            BackendMessage::CopyOutResponse(ref c) => {
                st.copy_binary = c.format != 0;
                if !st.discarding {
                    st.out.extend_from_slice(frame.as_bytes());
                }
            }
            BackendMessage::CopyData(data) => {
                if st.discarding {
                    return Ok(());
                }
                let data_len = data.len() as u64;
                let mut q = self
                    .shared
                    .queue
                    .lock()
                    .map_err(|_| Error::Config("queue poisoned".into()))?;
                let Some(pending) = head_command(&mut q, head) else {
                    // COPY data with no statement behind it: withhold.
                    st.discarding = true;
                    return Ok(());
                };
                // What the client is sent is what the recording keeps.
                let shown = match outbound::mask_copy_data(
                    &pending.profile,
                    &data,
                    st.copy_binary,
                    &mut pending.masked,
                ) {
                    Ok(None) => {
                        st.out.extend_from_slice(frame.as_bytes());
                        data
                    }
                    Ok(Some(masked)) => {
                        let masked = Bytes::from(masked);
                        BackendMessage::CopyData(masked.clone()).encode(&mut st.out)?;
                        masked
                    }
                    Err(Unmaskable(why)) => {
                        withhold(st, pending, &why)?;
                        return Ok(());
                    }
                };
                pending.rows += 1;
                pending.bytes += data_len;
                if pending.recording.len() < limit {
                    let line = String::from_utf8_lossy(&shown).trim_end().to_owned();
                    record(pending, limit, &line);
                }
            }
            BackendMessage::CommandComplete(_)
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::PortalSuspended => {
                // A statement that changes a name completed (whether or not its result
                // reaches the client): the change is made.
                if let BackendMessage::CommandComplete(tag) = &msg {
                    let mut q = self
                        .shared
                        .queue
                        .lock()
                        .map_err(|_| Error::Config("queue poisoned".into()))?;
                    let mut op = None;
                    if let Some(p) = head_command(&mut q, head) {
                        if p.effects
                            .front()
                            .is_some_and(|e| e.tag.as_bytes() == tag.as_ref())
                            && let Some(e) = p.effects.pop_front()
                        {
                            self.answer(e.seq, true, None);
                        }
                        if p.txn.front().is_some_and(|o| o.answered_by(tag)) {
                            op = p.txn.pop_front();
                        }
                        // A change to the channels the server completed: made when its
                        // transaction commits.
                        if let Some(staged) = p.channels.as_mut()
                            && staged.changes.front().is_some_and(|c| c.answered_by(tag))
                            && let Some(change) = staged.changes.pop_front()
                            && let Ok(mut l) = self.shared.listens.lock()
                        {
                            let listening = Listening {
                                id: p.id,
                                profile: p.profile.clone(),
                                opened: staged.opened.clone(),
                            };
                            l.completed(change, listening);
                        }
                    }
                    if matches!(
                        tag.as_ref(),
                        b"COMMIT"
                            | b"ROLLBACK"
                            | b"SAVEPOINT"
                            | b"RELEASE"
                            | b"PREPARE TRANSACTION"
                    ) && let Ok(mut l) = self.shared.listens.lock()
                        && l.transaction(tag, op.as_ref())
                    {
                        self.shared.listens_changed.notify_one();
                    }
                    // A transaction's end, or a rollback, for the portals and cursors it
                    // made.
                    if matches!(
                        tag.as_ref(),
                        b"COMMIT" | b"ROLLBACK" | b"SAVEPOINT" | b"RELEASE"
                    ) && let Ok(mut a) = self.shared.answered.lock()
                    {
                        a.completed(tag, op);
                    }
                }
                if !st.discarding {
                    st.out.extend_from_slice(frame.as_bytes());
                }
            }
            BackendMessage::ErrorResponse(fields) => {
                if let Ok(mut a) = self.shared.answered.lock() {
                    a.failed();
                }
                if let Ok(mut l) = self.shared.listens.lock() {
                    l.failed();
                }
                let mut q = self
                    .shared
                    .queue
                    .lock()
                    .map_err(|_| Error::Config("queue poisoned".into()))?;
                let at = head.and_then(|h| q.iter().position(|(id, _)| *id == h));
                // A name the server found taken: the change is not made, and the name holds
                // something the gateway did not know of.
                if matches!(fields.code(), Some("42P05" | "42P03"))
                    && let Some(i) = at
                {
                    match &mut q[i].1 {
                        Item::Message(seq, forget) => {
                            self.answer_with(*seq, false, forget.take(), true);
                            q.remove(i);
                        }
                        Item::Command(p)
                            if p.effects
                                .front()
                                .is_some_and(|e| matches!(e.tag, "PREPARE" | "DECLARE CURSOR")) =>
                        {
                            if let Some(e) = p.effects.pop_front() {
                                self.answer_with(e.seq, false, e.forget, true);
                            }
                        }
                        _ => {}
                    }
                }
                if st.discarding {
                    return Ok(());
                }
                let ours = fields
                    .message()
                    .is_some_and(|m| m.contains(self.shared.token.as_str()));
                let at = head.and_then(|h| q.iter().position(|(id, _)| *id == h));
                if ours
                    && let Some(i) = at
                    && let Some((_, Item::Refused { .. })) = q.get(i)
                    && let Some((
                        _,
                        Item::Refused {
                            message,
                            code,
                            change,
                        },
                    )) = q.remove(i)
                {
                    // The denied statement's placeholder failed, which is the change
                    // predicted: the denial is reported instead.
                    if let Some(seq) = change {
                        self.answer(seq, true, None);
                    }
                    BackendMessage::ErrorResponse(ErrorFields::new("ERROR", code, message))
                        .encode(&mut st.out)?;
                    return Ok(());
                }
                let masked = {
                    let profile = head_command(&mut q, head)
                        .map_or_else(|| self.profile.clone(), |p| p.profile.clone());
                    let mut counts = MaskedCounts::new();
                    let m = outbound::mask_error_fields(&profile, &fields, &mut counts);
                    if let Some(p) = head_command(&mut q, head) {
                        p.masked.merge(&counts);
                    }
                    m
                };
                let shown = match masked {
                    Ok(Some(f)) => {
                        BackendMessage::ErrorResponse(f.clone()).encode(&mut st.out)?;
                        f
                    }
                    Ok(None) => {
                        st.out.extend_from_slice(frame.as_bytes());
                        fields
                    }
                    Err(_) => {
                        let f = ErrorFields::new(
                            "ERROR",
                            // The SQLSTATE stays when it is one; anything else in its
                            // place is withheld with the rest.
                            fields
                                .code()
                                .filter(|c| outbound::is_sqlstate(c.as_bytes()))
                                .unwrap_or("XX000"),
                            "wirewarden: error details withheld",
                        );
                        BackendMessage::ErrorResponse(f.clone()).encode(&mut st.out)?;
                        f
                    }
                };
                if let Some(p) = head_command(&mut q, head) {
                    p.error.get_or_insert(upstream::describe(&shown));
                }
            }
            BackendMessage::ReadyForQuery(status) => {
                st.discarding = false;
                st.plans = None;
                if status == wirewarden_postgres::TransactionStatus::Idle {
                    if let Ok(mut a) = self.shared.answered.lock() {
                        a.idle();
                    }
                    self.between_transactions();
                }
                st.out.extend_from_slice(frame.as_bytes());
            }
            BackendMessage::NoticeResponse(fields) => {
                let mut counts = MaskedCounts::new();
                match outbound::mask_error_fields(&self.profile, &fields, &mut counts) {
                    Ok(None) => st.out.extend_from_slice(frame.as_bytes()),
                    Ok(Some(f)) => BackendMessage::NoticeResponse(f).encode(&mut st.out)?,
                    Err(_) => {} // a notice we cannot mask is dropped
                }
            }
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => {
                // The server sends notifications only outside a transaction: what the last
                // one did to the channels is settled.
                self.between_transactions();
                let Some((id, profile)) = self.listening(&channel).await? else {
                    // No decision stands behind this channel: withheld.
                    Metrics::add(&self.proxy.pipeline.metrics().results_withheld, 1);
                    return Ok(());
                };
                let mut counts = MaskedCounts::new();
                // The sender as this gateway named it; 0 for a session of another gateway.
                let process_id = self
                    .proxy
                    .pids
                    .lock()
                    .ok()
                    .and_then(|p| p.get(&process_id).copied())
                    .unwrap_or(0);
                let payload = match outbound::mask_bytes_as_text(&profile, &payload, &mut counts) {
                    Ok(None) => payload,
                    Ok(Some(m)) => Bytes::from(m),
                    Err(_) => Bytes::new(),
                };
                Metrics::add(&self.proxy.pipeline.metrics().values_masked, counts.total());
                // Charged as what the `LISTEN` returned, and recorded as its transcript.
                self.proxy.pipeline.charge(
                    &self.principal,
                    &self.target,
                    1,
                    (channel.len() + payload.len()) as u64,
                );
                let mut text = format!(
                    "notification on {:?} from {process_id}: ",
                    String::from_utf8_lossy(&channel)
                );
                let limit = self.proxy.config.record_limit;
                let shown = String::from_utf8_lossy(&payload);
                let truncated = text.len() + shown.len() > limit;
                let mut end = limit.saturating_sub(text.len()).min(shown.len());
                while !shown.is_char_boundary(end) {
                    end -= 1;
                }
                text.push_str(&shown[..end]);
                let transcript = AuditEvent::new(
                    Some(self.session_id),
                    AuditEventKind::Transcript {
                        command_id: Some(id),
                        direction: Direction::FromUpstream,
                        elapsed_us: u64::try_from(self.started.elapsed().as_micros())
                            .unwrap_or(u64::MAX),
                        text,
                        truncated,
                    },
                );
                let _ = self
                    .outcomes
                    .send(Outcome::Event(Box::new(transcript)))
                    .await;
                BackendMessage::NotificationResponse {
                    process_id,
                    channel,
                    payload,
                }
                .encode(&mut st.out)?;
            }
            BackendMessage::ParameterStatus { name, value } => {
                if name.as_ref() == b"client_encoding" && !is_utf8_encoding(&value) {
                    // Masking reads text as UTF-8; another encoding would let values through
                    // unread.
                    BackendMessage::ErrorResponse(ErrorFields::new(
                        "FATAL",
                        "22023",
                        "wirewarden requires client_encoding UTF8",
                    ))
                    .encode(&mut st.out)?;
                    return Err(Error::Config(
                        "client_encoding changed away from UTF8".into(),
                    ));
                }
                if name.as_ref() == b"application_name" {
                    self.on_application(st, &value).await;
                }
                if name.as_ref() == b"standard_conforming_strings" {
                    // A change no statement the gateway classified announced (a function
                    // that calls set_config): statements decided since were lexed another
                    // way than the server lexes them.
                    let expected = Scs::of(self.shared.scs.load(Ordering::Acquire));
                    if expected != Scs::Unknown && expected != Scs::reported(&value) {
                        BackendMessage::ErrorResponse(ErrorFields::new(
                            "FATAL",
                            "42501",
                            "wirewarden: terminating connection: standard_conforming_strings changed without a statement the gateway decided changing it",
                        ))
                        .encode(&mut st.out)?;
                        return Err(Error::Config(
                            "standard_conforming_strings changed unannounced".into(),
                        ));
                    }
                }
                let mut counts = MaskedCounts::new();
                match outbound::mask_bytes_as_text(&self.profile, &value, &mut counts) {
                    Ok(None) => st.out.extend_from_slice(frame.as_bytes()),
                    Ok(Some(m)) => BackendMessage::ParameterStatus {
                        name,
                        value: Bytes::from(m),
                    }
                    .encode(&mut st.out)?,
                    Err(_) => BackendMessage::ParameterStatus {
                        name,
                        value: Bytes::new(),
                    }
                    .encode(&mut st.out)?,
                }
            }
            BackendMessage::CopyBothResponse(_) => {
                // Only replication uses COPY BOTH, and replication is refused at startup.
                return Err(Error::Config("unexpected CopyBothResponse".into()));
            }
            BackendMessage::BackendKeyData { .. } | BackendMessage::Authentication(_) => {
                return Err(Error::Config("unexpected login message mid-session".into()));
            }
            _ => {
                if !st.discarding {
                    st.out.extend_from_slice(frame.as_bytes());
                }
            }
        }
        Ok(())
    }
}

/// The upstream → client side's own state.
#[derive(Debug, Default)]
struct Downstream {
    out: BytesMut,
    rewriter: RowRewriter,
    plans: Option<(Arc<wirewarden_postgres::RowDescription>, Vec<ColumnPlan>)>,
    copy_binary: bool,
    /// A result was withheld: drop everything until ReadyForQuery.
    discarding: bool,
    /// What became of requests, as the tracker reported it with the last message.
    finished: Vec<(RequestId, Finished)>,
    completed: Vec<Pending>,
    /// The session's application name as the server last reported it.
    application: Option<String>,
}

/// Replaces the rest of a result with an error, because a value could not be masked.
/// What the client is told when a result is withheld.
const WITHHELD_MESSAGE: &str =
    "wirewarden: the result was withheld because a value could not be masked";

/// What the gateway queued for the request `head`, if it is a forwarded command.
/// Whether SQL text may run what a name holds when it runs: a `FETCH` reads a cursor, an
/// `EXECUTE` (also inside `EXPLAIN` or `CREATE TABLE … AS`) a prepared statement. The words
/// anywhere, in any case (a cheap look before classifying, which may also find `FETCH
/// FIRST` or a string; never misses).
fn names_resolved_at_run(sql: &[u8]) -> bool {
    sql.windows(5).any(|w| w.eq_ignore_ascii_case(b"fetch"))
        || sql.windows(7).any(|w| w.eq_ignore_ascii_case(b"execute"))
}

/// Whether a decided statement runs what a name holds when it runs (see [`names_resolved_at_run`]):
/// it is decided again at each execution, never on what the name held at its `Parse`.
fn resolves_at_run(command: &Command) -> bool {
    matches!(command.verb.as_str(), "FETCH" | "EXECUTE")
        || names_resolved_at_run(command.text.as_bytes())
}

fn head_command(
    q: &mut VecDeque<(RequestId, Item)>,
    head: Option<RequestId>,
) -> Option<&mut Pending> {
    let head = head?;
    match q.iter_mut().find(|(id, _)| *id == head) {
        Some((_, Item::Command(p))) => Some(p),
        _ => None,
    }
}

fn withhold(st: &mut Downstream, pending: &mut Pending, why: &str) -> Result<()> {
    pending.withheld = true;
    pending.error = Some(format!("result withheld: {why}"));
    st.discarding = true;
    BackendMessage::ErrorResponse(ErrorFields::new("ERROR", "XX000", WITHHELD_MESSAGE))
        .encode(&mut st.out)?;
    Ok(())
}

fn record(p: &mut Pending, limit: usize, line: &str) {
    if p.recording_truncated {
        return;
    }
    if p.recording.len() + line.len() + 1 > limit {
        // Full: nothing more is rendered for this command.
        p.recording_truncated = true;
        return;
    }
    p.recording.push_str(line);
    p.recording.push('\n');
}

/// A readable rendering of a DataRow frame as the client received it.
fn render_row(frame: &[u8], plans: Option<&[ColumnPlan]>, limits: &Limits) -> String {
    let body = Bytes::copy_from_slice(frame.get(5..).unwrap_or_default());
    let Ok(row) = wirewarden_postgres::DataRow::parse(body, limits) else {
        return "<row>".into();
    };
    let mut cells = Vec::with_capacity(row.len());
    for (i, cell) in row.cells().enumerate() {
        let plan = plans.and_then(|p| p.get(i));
        cells.push(match (cell, plan) {
            (None, _) => "NULL".to_owned(),
            (Some(raw), Some(plan)) if plan.format == wirewarden_postgres::Format::Binary => plan
                .pg_type
                .and_then(|t| {
                    wirewarden_postgres::types::Value::decode(
                        t,
                        wirewarden_postgres::Format::Binary,
                        raw,
                    )
                    .ok()
                })
                .map_or_else(|| format!("<{} bytes>", raw.len()), |v| v.to_text()),
            (Some(raw), _) => String::from_utf8_lossy(raw).into_owned(),
        });
    }
    cells.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_encoding_names() {
        for ok in [&b"UTF8"[..], b"utf-8", b"'utf-8'", b"Unicode", b"utf_8"] {
            assert!(is_utf8_encoding(ok), "{ok:?}");
        }
        for bad in [&b"LATIN1"[..], b"SQL_ASCII", b"", b"UTF16"] {
            assert!(!is_utf8_encoding(bad), "{bad:?}");
        }
    }

    #[test]
    fn poison_tokens_are_random_hex() {
        let a = poison_token();
        assert_eq!(a.len(), 16);
        assert_ne!(a, poison_token());
    }

    #[test]
    fn recording_stops_at_the_limit() {
        let mut p = Pending {
            id: CommandId::new(),
            profile: Arc::new(Profile::builder("t").build().unwrap()),
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            masked: MaskedCounts::new(),
            error: None,
            recording: String::new(),
            recording_truncated: false,
            withheld: false,
            effects: VecDeque::new(),
            txn: VecDeque::new(),
            channels: None,
        };
        record(&mut p, 10, "12345");
        record(&mut p, 10, "67890");
        assert_eq!(p.recording, "12345\n");
        assert!(p.recording_truncated);
    }
}
