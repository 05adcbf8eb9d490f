//! The pipeline: the parts every proxy session consults — who is asking (identity), may
//! they (policy, grants, review), what may they see (masking), and what is recorded (audit).
//!
//! A [`Pipeline`] is built once and shared by every session (`Arc<Pipeline>`). The builder
//! is type-state: [`PipelineBuilder::build`] exists only once an audit sink was given, so a
//! pipeline that records nothing does not compile.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use wirewarden_audit::AuditSink;
use wirewarden_core::{
    AuditEvent, AuditEventKind, BoxError, Command, Direction, Principal, Target, Timestamp,
};
use wirewarden_identity::{AuthContext, Credential, IdentityProvider};
use wirewarden_mask::{Engine as MaskEngine, Profile};
use wirewarden_policy::{
    Budgets, Evaluation, Grant, GrantStore, MemoryGrantStore, PolicyEngine, Request,
};
use wirewarden_review::{MemoryReviewStore, Reviews};

use crate::tls::{CertificateWatch, ClientCertVerification};
use crate::trail::CommandMasker;
use crate::{Error, Metrics, Result};

/// Marks a [`PipelineBuilder`] that has no audit sink yet; it has no `build` method.
#[derive(Debug, Clone, Copy)]
pub struct NoAuditSink;

/// Builds a [`Pipeline`]. Identity and policy are given up front; the audit sink must be
/// given before [`build`](PipelineBuilder::build) becomes available.
#[derive(Debug)]
pub struct PipelineBuilder<A> {
    identity: Arc<dyn IdentityProvider>,
    policy: Arc<dyn PolicyEngine>,
    grants: Option<Arc<dyn GrantStore>>,
    reviews: Option<Reviews>,
    masks: Option<Arc<MaskEngine>>,
    budgets: Option<Arc<Budgets>>,
    max_review_wait: Duration,
    certificates: Option<Arc<ClientCertVerification>>,
    trail: Option<(Option<String>, [u8; 32])>,
    audit: A,
}

impl<A> PipelineBuilder<A> {
    /// The store of just-in-time grants (default: in memory).
    #[must_use]
    pub fn grants(mut self, grants: Arc<dyn GrantStore>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// The review workflow (default: an in-memory store issuing into the grant store).
    #[must_use]
    pub fn reviews(mut self, reviews: Reviews) -> Self {
        self.reviews = Some(reviews);
        self
    }

    /// The mask profiles (default: one profile running every detector, redacting).
    #[must_use]
    pub fn masking(mut self, engine: Arc<MaskEngine>) -> Self {
        self.masks = Some(engine);
        self
    }

    /// Exfiltration budgets to charge with what each command returned (for the rule engine:
    /// `RuleEngine::budgets_handle()`; the engine consults the same counters when it
    /// decides).
    #[must_use]
    pub fn budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// The longest a held command waits for review, whatever a rule says (default 1 hour).
    #[must_use]
    pub fn max_review_wait(mut self, wait: Duration) -> Self {
        self.max_review_wait = wait;
        self
    }

    /// The client certificate verification the listeners use
    /// ([`ServerTls::with_client_cert_verification`](crate::tls::ServerTls::with_client_cert_verification)).
    /// With it, every open session that logged in with a certificate is re-verified each
    /// time its revocation lists are replaced, and one the new lists refuse (revoked, no
    /// longer covered) is ended by its proxy, on record as
    /// [`SessionEndReason::CredentialRevoked`](wirewarden_core::SessionEndReason::CredentialRevoked).
    /// Without it such a session runs until it closes.
    #[must_use]
    pub fn client_cert_verification(mut self, verification: Arc<ClientCertVerification>) -> Self {
        self.certificates = Some(verification);
        self
    }

    /// Masks what the trail records of commands (see [`crate::trail`]): each command's text
    /// with the mask profile named `profile` (`None`: the engine's default profile), and
    /// every command digest it records keyed with `digest_key`. Off by default: the trail
    /// then keeps command texts as sent. What is decided, reviewed and approved does not
    /// change.
    #[must_use]
    pub fn mask_commands_in_trail(mut self, profile: Option<&str>, digest_key: [u8; 32]) -> Self {
        self.trail = Some((profile.map(str::to_owned), digest_key));
        self
    }

    /// The audit sink. Required: without it there is no `build`.
    pub fn audit(self, sink: Arc<dyn AuditSink>) -> PipelineBuilder<Arc<dyn AuditSink>> {
        PipelineBuilder {
            identity: self.identity,
            policy: self.policy,
            grants: self.grants,
            reviews: self.reviews,
            masks: self.masks,
            budgets: self.budgets,
            max_review_wait: self.max_review_wait,
            certificates: self.certificates,
            trail: self.trail,
            audit: sink,
        }
    }
}

impl PipelineBuilder<Arc<dyn AuditSink>> {
    /// Builds the pipeline.
    ///
    /// # Errors
    /// [`Error::Config`] if the default mask engine cannot be built, or the profile
    /// [`mask_commands_in_trail`](Self::mask_commands_in_trail) names does not exist.
    pub fn build(self) -> Result<Pipeline> {
        let grants = self
            .grants
            .unwrap_or_else(|| Arc::new(MemoryGrantStore::default()));
        let reviews = self.reviews.unwrap_or_else(|| {
            Reviews::new(Arc::new(MemoryReviewStore::default()), grants.clone())
        });
        let masks = match self.masks {
            Some(m) => m,
            None => Arc::new(
                MaskEngine::builder()
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?,
            ),
        };
        let trail = match self.trail {
            None => None,
            Some((profile, key)) => {
                let profile = match profile {
                    Some(name) => masks
                        .profile(&name)
                        .map_err(|e| Error::Config(format!("command masking in the trail: {e}")))?
                        .clone(),
                    None => masks.default_profile().clone(),
                };
                Some(CommandMasker::new(profile, key))
            }
        };
        Ok(Pipeline {
            trail,
            identity: self.identity,
            policy: self.policy,
            grants,
            reviews,
            masks,
            audit: self.audit,
            budgets: self.budgets,
            max_review_wait: self.max_review_wait,
            certificates: self.certificates,
            metrics: Metrics::default(),
        })
    }
}

/// Identity, policy, grants, review, masking and audit, shared by every session.
#[derive(Debug)]
pub struct Pipeline {
    identity: Arc<dyn IdentityProvider>,
    policy: Arc<dyn PolicyEngine>,
    grants: Arc<dyn GrantStore>,
    reviews: Reviews,
    masks: Arc<MaskEngine>,
    audit: Arc<dyn AuditSink>,
    budgets: Option<Arc<Budgets>>,
    max_review_wait: Duration,
    certificates: Option<Arc<ClientCertVerification>>,
    trail: Option<CommandMasker>,
    metrics: Metrics,
}

/// A policy evaluation and the grants it saw.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The evaluation.
    pub evaluation: Evaluation,
    /// The active grants of the principal on the target at decision time.
    pub grants: Vec<Grant>,
}

impl Pipeline {
    /// A builder with the two parts no pipeline can do without.
    pub fn builder(
        identity: Arc<dyn IdentityProvider>,
        policy: Arc<dyn PolicyEngine>,
    ) -> PipelineBuilder<NoAuditSink> {
        PipelineBuilder {
            identity,
            policy,
            grants: None,
            reviews: None,
            masks: None,
            budgets: None,
            max_review_wait: Duration::from_secs(3600),
            certificates: None,
            trail: None,
            audit: NoAuditSink,
        }
    }

    /// A watch over a client certificate chain (DER, leaf first) a listener's handshake
    /// accepted, against the pipeline's
    /// [client certificate verification](PipelineBuilder::client_cert_verification): it
    /// reports when replaced revocation lists refuse the chain. Inert without one. The
    /// proxies take it right after the handshake, before the chain is mapped to an
    /// identity.
    #[must_use]
    pub fn certificate_watch(&self, chain: &[Vec<u8>]) -> CertificateWatch {
        match &self.certificates {
            Some(v) => v.watch(
                chain
                    .iter()
                    .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
                    .collect(),
            ),
            None => CertificateWatch::inert(),
        }
    }

    /// Verifies a credential. Never returns a principal for a credential that does not
    /// prove one.
    ///
    /// # Errors
    /// The identity provider's error.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        context: &AuthContext,
    ) -> std::result::Result<Principal, BoxError> {
        self.identity.authenticate(credential, context).await
    }

    /// Decides on `command` for `principal` at `now`, taking the principal's active grants
    /// into account. A grant store that cannot be read counts as no grants (grants only
    /// widen what rules allow, so failing to read them fails closed).
    pub async fn decide(
        &self,
        principal: &Principal,
        target: &Target,
        command: &Command,
        now: Timestamp,
    ) -> Decided {
        let grants = self
            .grants
            .active(&principal.subject, &target.name, now)
            .await
            .unwrap_or_default();
        let request = Request::new(principal, target, command, now).with_grants(&grants);
        let evaluation = self.policy.evaluate(&request);
        Decided { evaluation, grants }
    }

    /// Records an event. In durable mode, `Ok` means it is on disk.
    ///
    /// # Errors
    /// [`Error::Audit`]: the caller must refuse whatever the event was recording the intent
    /// of.
    pub async fn record(&self, event: &AuditEvent) -> Result<()> {
        let masked = self.trail.as_ref().and_then(|m| m.event(event));
        self.audit
            .append(masked.as_ref().unwrap_or(event))
            .await
            .map(|_| ())
            .map_err(Error::Audit)
    }

    /// Records `events` in order as one batch (one lock, one wake-up and, in durable mode,
    /// one wait for the disk in [`FileSink`](wirewarden_audit::FileSink)) and returns how
    /// many of them, from the start, are on record: a command whose intent is past that
    /// count must be refused.
    pub async fn record_batch(&self, events: &[AuditEvent]) -> usize {
        if events.is_empty() {
            return 0;
        }
        let events = self.for_trail(events);
        recorded(&events, self.audit.append_batch(&events).await)
    }

    /// Records `events` in order without waiting for them to be stored (see
    /// [`AuditSink::append_batch_unawaited`]): the outcomes of commands, which must be in
    /// the trail but hold nothing back. In fsync mode they are on disk no later than the
    /// next intent the proxies wait for, and at the latest when a session ends (its end
    /// flushes the sink). Returns how many, from the start, were accepted.
    pub async fn record_batch_unawaited(&self, events: &[AuditEvent]) -> usize {
        if events.is_empty() {
            return 0;
        }
        let events = self.for_trail(events);
        recorded(&events, self.audit.append_batch_unawaited(&events).await)
    }

    /// `events` as the trail keeps them (see [`Self::command_masker`]).
    fn for_trail<'a>(&self, events: &'a [AuditEvent]) -> Cow<'a, [AuditEvent]> {
        match &self.trail {
            Some(m) => m.events(events),
            None => Cow::Borrowed(events),
        }
    }

    /// What masks the commands this pipeline records, if the trail masks them
    /// ([`PipelineBuilder::mask_commands_in_trail`]).
    #[must_use]
    pub fn command_masker(&self) -> Option<&CommandMasker> {
        self.trail.as_ref()
    }

    /// Counts and records an upstream connection or login that failed, so an operator sees
    /// why a client's session could not start (the client itself is told only that the
    /// upstream could not be reached).
    pub async fn upstream_failed(&self, target: &Target, upstream: &str, error: &Error) {
        Metrics::add(&self.metrics().upstream_failures, 1);
        let event = AuditEvent::new(
            None,
            AuditEventKind::ProtocolError {
                direction: Direction::FromUpstream,
                error: format!(
                    "target {}: upstream {upstream}: connection or login failed: {error}",
                    target.name
                ),
            },
        );
        let _ = self.record(&event).await;
    }

    /// The audit sink.
    #[must_use]
    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// The mask profile for a session of `principal` on `target`, or the one a decision
    /// named.
    ///
    /// # Errors
    /// [`Error::Config`] if a decision names a profile that does not exist: the caller must
    /// refuse rather than send values unmasked.
    pub fn mask_profile(
        &self,
        target: &Target,
        principal: &Principal,
        named: Option<&str>,
    ) -> Result<Arc<Profile>> {
        match named {
            Some(name) => self
                .masks
                .profile(name)
                .cloned()
                .map_err(|e| Error::Config(e.to_string())),
            None => Ok(self.masks.select(target, principal).clone()),
        }
    }

    /// The review workflow.
    #[must_use]
    pub fn reviews(&self) -> &Reviews {
        &self.reviews
    }

    /// The grant store.
    #[must_use]
    pub fn grants(&self) -> &Arc<dyn GrantStore> {
        &self.grants
    }

    /// Charges what a completed command returned to the exfiltration budgets, if any.
    pub fn charge(&self, principal: &Principal, target: &Target, rows: u64, bytes: u64) {
        if let Some(b) = &self.budgets {
            b.charge(principal, target, rows, bytes, Timestamp::now());
        }
    }

    /// The process-wide counters.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The longest any command is held for review.
    #[must_use]
    pub fn max_review_wait(&self) -> Duration {
        self.max_review_wait
    }
}

/// How many of `events`, from the start, a batch append put on record.
fn recorded(
    events: &[AuditEvent],
    result: std::result::Result<Vec<wirewarden_audit::Appended>, wirewarden_audit::PartialBatch>,
) -> usize {
    match result {
        Ok(_) => events.len(),
        Err(partial) => partial.recorded.min(events.len()),
    }
}
