//! The [`Gate`] of one client connection: identity, policy, review and audit for each
//! request, with one audit session per identity seen on the connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::sync::Mutex;
use wirewarden_core::{
    AuditEvent, AuditEventKind, CommandId, Decision, Direction, Principal, RuleId,
    SessionEndReason, SessionId, Target, Timestamp,
};
use wirewarden_http::body::StreamCheck;
use wirewarden_http::{Admission, Forward, Gate, Outcome, Rejection, Verdict};
use wirewarden_identity::{AuthContext, Credential};

use crate::{HeldCommand, Metrics, Pipeline, ReviewRefusal};

/// One identity's session on a connection.
#[derive(Debug)]
struct Session {
    id: SessionId,
    principal: Principal,
    started: Instant,
    /// The session's application: the `User-Agent` it started with, then the last one that
    /// differed.
    application: std::sync::Mutex<Option<String>>,
}

impl Session {
    /// Takes `user_agent` as the session's application; `true` if that changed it.
    fn renamed(&self, user_agent: &str) -> bool {
        let mut app = match self.application.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        if app.as_deref() == Some(user_agent) {
            return false;
        }
        *app = Some(user_agent.to_owned());
        true
    }
}

/// What the client certificate of a TLS connection proved, when the client presented one.
#[derive(Debug)]
pub(crate) enum CertificateLogin {
    /// The identity provider mapped the verified chain to this principal: the connection's
    /// identity, for every request on it.
    Accepted(Principal),
    /// The provider refused it (the reason is on record): every request on the connection
    /// is refused, never sent on to a bearer token instead.
    Refused(String),
}

/// The gate for one client connection.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    pipeline: Arc<Pipeline>,
    target: Target,
    inject: Arc<Vec<(HeaderName, HeaderValue)>>,
    peer: Option<SocketAddr>,
    tls: bool,
    /// The client certificate's login, if the client presented one.
    certificate: Option<CertificateLogin>,
    /// Sessions by the blake3 digest of the bearer token that opened them (the token itself
    /// is never kept); on a certificate connection, the one session under the all-zero key.
    sessions: Mutex<HashMap<[u8; 32], Arc<Session>>>,
    /// On a certificate connection: bearer tokens (by digest) already found to prove the
    /// certificate's identity.
    same_identity: Mutex<std::collections::HashSet<[u8; 32]>>,
    commands: std::sync::atomic::AtomicU64,
    /// Set when replaced revocation lists refused the connection's certificate: why.
    revoked: std::sync::OnceLock<String>,
    /// How often a streaming response has its request decided again.
    recheck: Duration,
}

/// The session key of a certificate connection's one identity: no token digest is all zero.
const CERTIFICATE_SESSION: [u8; 32] = [0; 32];

/// Counts and records a failed login at an HTTP target.
pub(crate) async fn auth_failed(
    pipeline: &Pipeline,
    target: &Target,
    peer: Option<SocketAddr>,
    method: &str,
    reason: String,
) {
    Metrics::add(&pipeline.metrics().auth_failures, 1);
    let event = AuditEvent::new(
        None,
        AuditEventKind::AuthenticationFailed {
            target: target.clone(),
            client_addr: peer.map(|p| p.to_string()),
            user: None,
            method: method.to_owned(),
            reason,
        },
    );
    let _ = pipeline.record(&event).await;
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn denied(message: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection::new(StatusCode::FORBIDDEN, "denied", message))
}

fn unavailable(code: &'static str, message: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        message,
    ))
}

fn invalid_token(message: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection::invalid_token(message))
}

fn unauthenticated(message: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        message,
    ))
}

impl ConnectionGate {
    pub(crate) fn new(
        pipeline: Arc<Pipeline>,
        target: Target,
        inject: Arc<Vec<(HeaderName, HeaderValue)>>,
        peer: Option<SocketAddr>,
        tls: bool,
        certificate: Option<CertificateLogin>,
        recheck: Duration,
    ) -> Self {
        Self {
            pipeline,
            target,
            inject,
            peer,
            tls,
            certificate,
            recheck,
            sessions: Mutex::new(HashMap::new()),
            same_identity: Mutex::new(std::collections::HashSet::new()),
            commands: std::sync::atomic::AtomicU64::new(0),
            revoked: std::sync::OnceLock::new(),
        }
    }

    /// The connection's certificate is no longer accepted: every request from now on is
    /// refused.
    pub(crate) fn revoke(&self, reason: String) {
        let _ = self.revoked.set(reason);
    }

    async fn auth_failed(&self, reason: String) {
        auth_failed(&self.pipeline, &self.target, self.peer, "bearer", reason).await;
    }

    fn context(&self) -> AuthContext {
        let ctx = AuthContext::new().with_target(self.target.name.clone());
        match self.peer {
            Some(p) => ctx.with_client_addr(p),
            None => ctx,
        }
    }

    /// The session of a certificate connection's identity, opened on the first request
    /// (its `User-Agent` is the session's application). A bearer token sent as well must
    /// prove the same identity: a connection never changes who it is.
    async fn certificate_session(
        &self,
        principal: &Principal,
        bearer: Option<&str>,
        user_agent: Option<&str>,
    ) -> Result<Arc<Session>, Verdict> {
        if let Some(token) = bearer {
            let key = *blake3::hash(token.as_bytes()).as_bytes();
            if !self.same_identity.lock().await.contains(&key) {
                let proved = self
                    .pipeline
                    .authenticate(&Credential::bearer(token), &self.context())
                    .await;
                match proved {
                    Ok(p) if p.subject == principal.subject => {
                        self.same_identity.lock().await.insert(key);
                    }
                    Ok(p) => {
                        let reason = format!(
                            "the bearer token is {}, but the connection's client certificate is {}",
                            p.subject, principal.subject
                        );
                        self.auth_failed(reason.clone()).await;
                        return Err(unauthenticated(format!(
                            "{reason}: a connection keeps the identity of its certificate"
                        )));
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        self.auth_failed(reason.clone()).await;
                        return Err(invalid_token(format!(
                            "the bearer token was not accepted: {reason}"
                        )));
                    }
                }
            }
        }
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&CERTIFICATE_SESSION) {
            return Ok(Arc::clone(s));
        }
        let session = self.open(principal.clone(), user_agent).await?;
        sessions.insert(CERTIFICATE_SESSION, Arc::clone(&session));
        Ok(session)
    }

    /// Opens (and records) a session of `principal` on this connection.
    async fn open(
        &self,
        principal: Principal,
        user_agent: Option<&str>,
    ) -> Result<Arc<Session>, Verdict> {
        let session = Arc::new(Session {
            id: SessionId::new(),
            principal,
            started: Instant::now(),
            application: std::sync::Mutex::new(user_agent.map(str::to_owned)),
        });
        let started = AuditEvent::new(
            Some(session.id),
            AuditEventKind::SessionStarted {
                principal: session.principal.clone(),
                target: self.target.clone(),
                client_addr: self.peer.map(|p| p.to_string()),
                application: user_agent.map(str::to_owned),
                tls: self.tls,
            },
        );
        if self.pipeline.record(&started).await.is_err() {
            return Err(unavailable(
                "audit_unavailable",
                "the audit trail is unavailable, request refused",
            ));
        }
        let metrics = self.pipeline.metrics();
        Metrics::add(&metrics.sessions_started, 1);
        metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    /// The session of the identity `token` proves, opening (and recording) it on first use.
    async fn session(
        &self,
        token: &str,
        user_agent: Option<&str>,
    ) -> Result<Arc<Session>, Verdict> {
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&key) {
            return Ok(Arc::clone(s));
        }
        let principal = match self
            .pipeline
            .authenticate(&Credential::bearer(token), &self.context())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let reason = e.to_string();
                self.auth_failed(reason.clone()).await;
                return Err(invalid_token(format!(
                    "the bearer token was not accepted: {reason}"
                )));
            }
        };
        let session = self.open(principal, user_agent).await?;
        sessions.insert(key, Arc::clone(&session));
        Ok(session)
    }

    /// Records the end of every session the connection opened.
    /// Ends (and records) `session`, found under `key`, because its credential expired;
    /// a later request with a fresh credential opens a new one.
    async fn end_expired(&self, key: [u8; 32], session: &Arc<Session>) {
        let removed = {
            let mut sessions = self.sessions.lock().await;
            match sessions.get(&key) {
                Some(s) if Arc::ptr_eq(s, session) => sessions.remove(&key).is_some(),
                _ => false,
            }
        };
        if !removed {
            return;
        }
        self.pipeline
            .metrics()
            .sessions_active
            .fetch_sub(1, Ordering::Relaxed);
        let end = AuditEvent::new(
            Some(session.id),
            AuditEventKind::SessionEnded {
                reason: SessionEndReason::CredentialExpired,
                commands: self.commands.load(Ordering::Relaxed),
                duration_us: micros(session.started),
            },
        );
        let _ = self.pipeline.record(&end).await;
    }

    pub(crate) async fn close(&self, reason: SessionEndReason) {
        let sessions = std::mem::take(&mut *self.sessions.lock().await);
        let commands = self.commands.load(Ordering::Relaxed);
        for (_, s) in sessions {
            self.pipeline
                .metrics()
                .sessions_active
                .fetch_sub(1, Ordering::Relaxed);
            let end = AuditEvent::new(
                Some(s.id),
                AuditEventKind::SessionEnded {
                    reason: reason.clone(),
                    commands,
                    duration_us: micros(s.started),
                },
            );
            let _ = self.pipeline.record(&end).await;
        }
        let _ = self.pipeline.audit_sink().flush().await;
    }

    /// Holds a request for review; `Ok(())` once it is approved and released.
    async fn review(
        &self,
        session: &Session,
        command: &wirewarden_core::Command,
        command_id: CommandId,
        rule: RuleId,
        reason: &str,
        requirement: wirewarden_core::ReviewRequirement,
    ) -> Result<(), Verdict> {
        let held = HeldCommand {
            principal: &session.principal,
            target: &self.target,
            session: session.id,
            command,
            command_id,
        };
        let refusal = |r: ReviewRefusal| match r {
            ReviewRefusal::Unavailable(_) => unavailable(
                "review_unavailable",
                format!("the request needs review but {r}"),
            ),
            ReviewRefusal::AuditUnavailable => unavailable(
                "audit_unavailable",
                "the audit trail is unavailable, request refused",
            ),
            ReviewRefusal::TimedOut { .. } => Verdict::Reject(Rejection::new(
                StatusCode::GATEWAY_TIMEOUT,
                "review_timeout",
                r.to_string(),
            )),
            _ => denied(r.to_string()),
        };
        let pending = self
            .pipeline
            .request_review(&held, rule, reason, requirement)
            .await
            .map_err(refusal)?;
        self.pipeline
            .await_review(&held, pending)
            .await
            .map_err(refusal)
    }

    async fn admit_inner(&self, admission: Admission<'_>) -> Result<Forward, Verdict> {
        let user_agent = admission
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let session = match &self.certificate {
            // Recorded once, when the connection's handshake completed.
            Some(CertificateLogin::Refused(reason)) => {
                return Err(unauthenticated(format!(
                    "the client certificate was not accepted: {reason}"
                )));
            }
            Some(CertificateLogin::Accepted(_)) if self.revoked.get().is_some() => {
                let reason = self.revoked.get().map_or("", String::as_str);
                return Err(unauthenticated(format!(
                    "the client certificate is no longer accepted: {reason}"
                )));
            }
            // The certificate's validity ended during the connection: its session ends.
            Some(CertificateLogin::Accepted(principal))
                if principal.is_expired_at(Timestamp::now()) =>
            {
                let open = self
                    .sessions
                    .lock()
                    .await
                    .get(&CERTIFICATE_SESSION)
                    .cloned();
                if let Some(session) = open {
                    self.end_expired(CERTIFICATE_SESSION, &session).await;
                }
                self.auth_failed("the client certificate expired".into())
                    .await;
                return Err(unauthenticated(
                    "the client certificate of this connection expired",
                ));
            }
            Some(CertificateLogin::Accepted(principal)) => {
                self.certificate_session(principal, admission.bearer, user_agent)
                    .await?
            }
            None => {
                let Some(token) = admission.bearer else {
                    self.auth_failed("no bearer token".into()).await;
                    return Err(unauthenticated(
                        "an Authorization: Bearer token is required",
                    ));
                };
                self.session(token, user_agent).await?
            }
        };
        // A token session whose token expired ends here (on record), and the request is
        // refused as RFC 6750 asks: the client gets a fresh token, and its next request
        // opens a new session.
        let now = Timestamp::now();
        if let (None, Some(token)) = (&self.certificate, admission.bearer)
            && session.principal.is_expired_at(now)
        {
            let key = *blake3::hash(token.as_bytes()).as_bytes();
            self.end_expired(key, &session).await;
            self.auth_failed("the bearer token expired".into()).await;
            return Err(invalid_token("the bearer token expired"));
        }
        // A client that names each request differently (an agent's run and tool call in its
        // User-Agent) renames the session: on record before this request's intent.
        if let Some(ua) = user_agent
            && session.renamed(ua)
        {
            let renamed = AuditEvent::new(
                Some(session.id),
                AuditEventKind::ApplicationChanged {
                    application: Some(ua.to_owned()),
                },
            );
            if self.pipeline.record(&renamed).await.is_err() {
                return Err(unavailable(
                    "audit_unavailable",
                    "the audit trail is unavailable, request refused",
                ));
            }
        }
        let command = admission.command;
        let command_id = CommandId::new();
        self.commands.fetch_add(1, Ordering::Relaxed);
        let metrics = self.pipeline.metrics();
        let (decision, policy_version, granted_until) = {
            let decided = self
                .pipeline
                .decide(&session.principal, &self.target, command, now)
                .await;
            // A request a grant let through may stream only while the grant lasts.
            let granted_until = match &decided.evaluation.decided_by {
                wirewarden_policy::DecidedBy::Grant { grant, .. } => decided
                    .grants
                    .iter()
                    .find(|g| g.id == *grant)
                    .map(|g| g.expires_at),
                _ => None,
            };
            (
                decided.evaluation.decision,
                decided.evaluation.policy_version.to_string(),
                granted_until,
            )
        };
        let event = AuditEvent::new(
            Some(session.id),
            AuditEventKind::CommandDecided {
                command_id,
                subject: session.principal.subject.clone(),
                command: command.clone(),
                decision: decision.clone(),
                policy_version,
            },
        );
        // The intent is on record before anything is forwarded, or nothing is.
        let recorded = self.pipeline.record(&event).await;
        // A reviewer's approval stands while the response streams.
        let reviewed = matches!(decision, Decision::Review { .. });
        let mask_name = match decision {
            Decision::Allow { mask_profile, .. } => {
                if recorded.is_err() {
                    Metrics::add(&metrics.commands_denied, 1);
                    return Err(unavailable(
                        "audit_unavailable",
                        "the audit trail is unavailable, request refused",
                    ));
                }
                Metrics::add(&metrics.commands_allowed, 1);
                mask_profile
            }
            Decision::Deny { rule, reason } => {
                Metrics::add(&metrics.commands_denied, 1);
                return Err(denied(format!("{reason} (rule {rule})")));
            }
            Decision::Review {
                rule,
                reason,
                requirement,
            } => {
                if recorded.is_err() {
                    Metrics::add(&metrics.commands_denied, 1);
                    return Err(unavailable(
                        "audit_unavailable",
                        "the audit trail is unavailable, request refused",
                    ));
                }
                Metrics::add(&metrics.commands_reviewed, 1);
                if !admission.body_bound {
                    // A reviewer would approve a body nobody has seen.
                    Metrics::add(&metrics.commands_denied, 1);
                    return Err(Verdict::Reject(Rejection::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large_to_review",
                        format!(
                            "the request needs review ({reason}, rule {rule}) but its body is too large to be shown to a reviewer"
                        ),
                    )));
                }
                self.review(&session, command, command_id, rule, &reason, requirement)
                    .await?;
                // The certificate may have been revoked while the request waited (an HTTP/2
                // stream outlives its dropped connection): it does not go out then.
                if let Some(why) = self.revoked.get() {
                    return Err(unauthenticated(format!(
                        "the client certificate is no longer accepted: {why}"
                    )));
                }
                None
            }
            _ => {
                Metrics::add(&metrics.commands_denied, 1);
                return Err(denied("unsupported decision"));
            }
        };
        let masked_route = admission.route.is_none_or(|r| r.masked);
        let mask = if masked_route {
            match self
                .pipeline
                .mask_profile(&self.target, &session.principal, mask_name.as_deref())
            {
                Ok(p) => Some(p),
                Err(_) => {
                    return Err(unavailable(
                        "mask_profile_missing",
                        "the mask profile for this request is missing, request refused",
                    ));
                }
            }
        } else {
            None
        };
        let pipeline = self.pipeline.clone();
        let target = self.target.clone();
        let session_id = session.id;
        let expires_at = session.principal.expires_at;
        let check_session = session.clone();
        let mut forward = Forward::new(mask).on_complete(move |outcome: Outcome| {
            let metrics = pipeline.metrics();
            Metrics::add(&metrics.values_masked, outcome.masked.total());
            pipeline.charge(&session.principal, &target, 0, outcome.bytes_out);
            let completed = AuditEvent::new(
                Some(session_id),
                AuditEventKind::CommandCompleted {
                    command_id,
                    rows: 0,
                    bytes: outcome.bytes_out,
                    masked: outcome.masked,
                    duration_us: u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX),
                    error: match (outcome.error, outcome.status) {
                        (Some(e), _) => Some(e),
                        (None, Some(s)) if s.is_server_error() || s.is_client_error() => {
                            Some(format!("upstream answered {s}"))
                        }
                        _ => None,
                    },
                    // HTTP sessions are not recorded beyond their decisions and outcomes.
                    reply: None,
                },
            );
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = pipeline.record(&completed).await;
                });
            }
        });
        for (name, value) in self.inject.iter() {
            forward = forward.header(name.clone(), value.clone());
        }
        // The response ends, cut if it is still streaming, when the credential of its
        // session or the grant that allowed it expires: as a PostgreSQL or Redis session
        // ends with its credential, and a subscription with its grant.
        let at = |t: Timestamp| Instant::now() + t.saturating_duration_since(Timestamp::now());
        if let Some(t) = expires_at {
            forward = forward.until(at(t), "the credential of this session expired");
        }
        if let Some(t) = granted_until {
            forward = forward.until(at(t), "the grant that allowed it expired");
        }
        // And while it streams, policy is asked again: refused now, it is cut.
        let check: StreamCheck = {
            let (pipeline, target) = (self.pipeline.clone(), self.target.clone());
            let command = Arc::new(command.clone());
            Arc::new(move || {
                let (pipeline, target, command, session) = (
                    pipeline.clone(),
                    target.clone(),
                    command.clone(),
                    check_session.clone(),
                );
                Box::pin(async move {
                    let decided = pipeline
                        .decide(&session.principal, &target, &command, Timestamp::now())
                        .await;
                    match crate::stream::refusal(&decided.evaluation.decision, reviewed) {
                        None => Ok(()),
                        Some((rule, reason)) => {
                            Err(format!("no longer allowed: {reason} (rule {rule})"))
                        }
                    }
                })
            })
        };
        Ok(forward.rechecked(self.recheck, check))
    }
}

#[async_trait]
impl Gate for ConnectionGate {
    async fn admit(&self, admission: Admission<'_>) -> Verdict {
        match self.admit_inner(admission).await {
            Ok(f) => Verdict::Forward(f),
            Err(v) => v,
        }
    }

    async fn refused(&self, rejection: &Rejection, _peer: Option<SocketAddr>) {
        if rejection.status == StatusCode::UNAUTHORIZED {
            self.auth_failed(rejection.message.clone()).await;
            return;
        }
        Metrics::add(&self.pipeline.metrics().protocol_errors, 1);
        let event = AuditEvent::new(
            None,
            AuditEventKind::ProtocolError {
                direction: Direction::FromClient,
                error: format!("{}: {}", rejection.code, rejection.message),
            },
        );
        let _ = self.pipeline.record(&event).await;
    }
}
