//! The audit event model: everything the gateway records about a session.
//!
//! Events are plain data. The audit crate gives them a canonical encoding and chains their
//! hashes; exporters map them to OCSF. Each event stands alone (it names its session and,
//! where useful, the subject), so a SIEM that sees a single event can still attribute it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Command, CommandDigest, CommandId, Decision, EventId, GrantId, Principal, ReviewId,
    ReviewRequirement, RuleId, SessionId, Target, Timestamp,
};

/// Which way bytes were flowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client towards the upstream.
    FromClient,
    /// From the upstream towards the client.
    FromUpstream,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionEndReason {
    /// The client said goodbye (`Terminate`, `QUIT`) or closed its socket.
    ClientClosed,
    /// The upstream closed the connection.
    UpstreamClosed,
    /// The principal's credential expired mid-session.
    CredentialExpired,
    /// The gateway is shutting down.
    Shutdown,
    /// A protocol or I/O error ended it.
    Error {
        /// What went wrong.
        message: String,
    },
    /// The gateway ended it because the credential it logged in with was withdrawn while it
    /// was open: its client certificate is now revoked (or otherwise refused) by the
    /// revocation lists that replaced those it was accepted under.
    CredentialRevoked {
        /// Why the credential is refused now (the TLS verifier's reason).
        reason: String,
    },
    /// The gateway ended it because policy, asked again while a stream the session opened
    /// (a Redis subscription, a Postgres `LISTEN`) was delivering, no longer allows it: a
    /// grant it ran under expired or was revoked, a budget ran out, a rule's hours ended.
    /// As a server ends a client whose permissions were withdrawn, the connection closes.
    SubscriptionWithdrawn {
        /// The command that opened the stream.
        command_id: CommandId,
        /// What decided now.
        rule: RuleId,
        /// Why it is refused now.
        reason: String,
    },
}

/// Counts of masked values per entity (`card_number`, `ssn`, `column:customers.email`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaskedCounts(pub BTreeMap<String, u64>);

impl MaskedCounts {
    /// No masked values.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` masked values of `entity`.
    pub fn add(&mut self, entity: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.0.get_mut(entity) {
            Some(c) => *c = c.saturating_add(n),
            None => {
                self.0.insert(entity.to_owned(), n);
            }
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (entity, n) in &other.0 {
            self.add(entity, *n);
        }
    }

    /// All masked values.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.values().fold(0, |a, b| a.saturating_add(*b))
    }

    /// Whether nothing was masked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a review ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReviewOutcome {
    /// Enough reviewers approved.
    Approved,
    /// A reviewer denied.
    Denied,
    /// Nobody decided before the timeout.
    Expired,
    /// The requester went away (session closed) before a decision.
    Cancelled,
}

/// A recorded piece of a session as the client saw it: the reply to one command, rendered
/// readably after masking, in [`AuditEventKind::CommandCompleted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// A readable rendering of the messages.
    pub text: String,
    /// Whether `text` was cut to the recording limit.
    pub truncated: bool,
}

impl Recording {
    /// `text`, cut (`truncated`) or whole.
    #[must_use]
    pub fn new(text: impl Into<String>, truncated: bool) -> Self {
        Self {
            text: text.into(),
            truncated,
        }
    }
}

/// What happened. See each variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEventKind {
    /// A client authenticated and a session to a target began.
    SessionStarted {
        /// The verified identity.
        principal: Principal,
        /// Where the session goes.
        target: Target,
        /// The client's address (`ip:port`).
        client_addr: Option<String>,
        /// What the client says it is (Postgres `application_name`, Redis `HELLO … SETNAME`,
        /// HTTP `User-Agent`); carries agent run and tool-call ids.
        application: Option<String>,
        /// Whether the client connection is TLS.
        tls: bool,
    },
    /// A client failed to authenticate. No session exists and nothing was forwarded.
    AuthenticationFailed {
        /// The target it tried to reach.
        target: Target,
        /// The client's address.
        client_addr: Option<String>,
        /// The user name it presented, if any (never the secret).
        user: Option<String>,
        /// The method tried (`jwt`, `static_token`, `scram`).
        method: String,
        /// Why it failed.
        reason: String,
    },
    /// A session ended.
    SessionEnded {
        /// Why.
        reason: SessionEndReason,
        /// Commands decided during the session.
        commands: u64,
        /// How long it lasted, in microseconds.
        duration_us: u64,
    },
    /// Policy decided on a command. In durable mode this record (the intent) is on disk
    /// before the command is forwarded.
    CommandDecided {
        /// Links the decision to its outcome.
        command_id: CommandId,
        /// The subject of the session's principal.
        subject: String,
        /// The command.
        command: Command,
        /// The decision.
        decision: Decision,
        /// The hash of the rule set that decided.
        policy_version: String,
    },
    /// A forwarded command finished.
    CommandCompleted {
        /// The command this completes.
        command_id: CommandId,
        /// Rows (Postgres) or elements (Redis) returned.
        rows: u64,
        /// Bytes sent to the client in response.
        bytes: u64,
        /// Values masked, per entity.
        masked: MaskedCounts,
        /// Time from forwarding to the last response byte, in microseconds.
        duration_us: u64,
        /// The error the upstream returned, if any (after masking).
        error: Option<String>,
        /// The reply as the client received it, after masking, when the session is
        /// recorded. Kept in this record rather than a separate [`Transcript`] one, so a
        /// recorded command costs two records (its intent and this), not three.
        ///
        /// [`Transcript`]: AuditEventKind::Transcript
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply: Option<Recording>,
    },
    /// A piece of the session transcript: what the client sent or, after masking, what it
    /// received. Lets an auditor replay what an agent did and saw.
    Transcript {
        /// The command it belongs to, if any.
        command_id: Option<CommandId>,
        /// Which way it flowed.
        direction: Direction,
        /// Microseconds since the session started.
        elapsed_us: u64,
        /// A readable rendering of the messages.
        text: String,
        /// Whether `text` was cut to the recording limit.
        truncated: bool,
    },
    /// A command was held for human review.
    ReviewRequested {
        /// The review.
        review_id: ReviewId,
        /// The held command.
        command_id: CommandId,
        /// The digest the approval binds to.
        digest: CommandDigest,
        /// The subject who asked.
        requester: String,
        /// Where the command would go.
        target: Target,
        /// Why review is needed.
        reason: String,
        /// Who must approve.
        requirement: ReviewRequirement,
    },
    /// A review was decided or ran out.
    ReviewResolved {
        /// The review.
        review_id: ReviewId,
        /// How it ended.
        outcome: ReviewOutcome,
        /// The subjects who approved.
        approvers: Vec<String>,
        /// Who denied it, if someone did.
        denied_by: Option<String>,
    },
    /// A just-in-time grant was issued.
    GrantIssued {
        /// The grant.
        grant_id: GrantId,
        /// The subject it is for.
        subject: String,
        /// The target it covers.
        target: String,
        /// What it permits, as written in the grant (`write`, `relation:crm.accounts`).
        scope: String,
        /// When it stops.
        expires_at: Timestamp,
        /// Who issued it (an approver, an administrator).
        issued_by: String,
    },
    /// A grant was revoked before its expiry.
    GrantRevoked {
        /// The grant.
        grant_id: GrantId,
        /// Who revoked it.
        revoked_by: String,
    },
    /// A grant reached its expiry.
    GrantExpired {
        /// The grant.
        grant_id: GrantId,
    },
    /// The client renamed itself mid-session: Postgres `SET application_name` (as the server
    /// reports the new value, so `set_config`, `RESET` and a rolled-back `SET` count too) or
    /// Redis `CLIENT SETNAME` / `HELLO … SETNAME` (when the gateway forwards the command),
    /// or an HTTP request whose `User-Agent` differs from the session's.
    /// The commands the session decides after this event belong to the new name: an agent
    /// that reuses one pooled connection across tool calls names each call here.
    ApplicationChanged {
        /// The new name; `None` when the client cleared it.
        application: Option<String>,
    },
    /// The session's identity proved itself again mid-session with a fresh credential
    /// (Redis `AUTH` or `HELLO … AUTH` on an open connection, as the same subject): from
    /// here on the session runs under this principal — its groups, attributes, and the
    /// expiry at which the session ends.
    CredentialRenewed {
        /// The principal the fresh credential proved.
        principal: Principal,
    },
    /// A peer sent something the codec refused.
    ProtocolError {
        /// Who sent it.
        direction: Direction,
        /// The typed error, as text.
        error: String,
    },
}

impl AuditEventKind {
    /// The snake_case name of the kind, as in the JSON `type` field.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::SessionStarted { .. } => "session_started",
            Self::AuthenticationFailed { .. } => "authentication_failed",
            Self::SessionEnded { .. } => "session_ended",
            Self::CommandDecided { .. } => "command_decided",
            Self::CommandCompleted { .. } => "command_completed",
            Self::Transcript { .. } => "transcript",
            Self::ReviewRequested { .. } => "review_requested",
            Self::ReviewResolved { .. } => "review_resolved",
            Self::GrantIssued { .. } => "grant_issued",
            Self::GrantRevoked { .. } => "grant_revoked",
            Self::GrantExpired { .. } => "grant_expired",
            Self::ApplicationChanged { .. } => "application_changed",
            Self::CredentialRenewed { .. } => "credential_renewed",
            Self::ProtocolError { .. } => "protocol_error",
        }
    }
}

/// One audit event: an id, a time, the session it belongs to, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique and time-ordered; sinks use it to de-duplicate re-deliveries.
    pub id: EventId,
    /// When it happened.
    pub time: Timestamp,
    /// The session, for session-scoped events.
    pub session: Option<SessionId>,
    /// What happened.
    #[serde(flatten)]
    pub kind: AuditEventKind,
}

impl AuditEvent {
    /// An event of `kind` in `session`, now.
    #[must_use]
    pub fn new(session: Option<SessionId>, kind: AuditEventKind) -> Self {
        // One clock read for both: the id's embedded time is the event's.
        let time = Timestamp::now();
        Self {
            id: EventId::at(time),
            time,
            session,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{AuthMethod, CommandClass, Protocol, RuleId};

    fn samples() -> Vec<AuditEvent> {
        let session = Some(SessionId::new());
        let target = Target::new("crm", Protocol::Postgres)
            .unwrap()
            .with_database("sales");
        let principal = Principal::new(
            "agent-1",
            AuthMethod::StaticToken {
                token_id: "t".into(),
            },
        )
        .unwrap()
        .with_group("agents");
        let command =
            Command::new(Protocol::Postgres, "SELECT", CommandClass::Read, "select 1").unwrap();
        let command_id = CommandId::new();
        let mut masked = MaskedCounts::new();
        masked.add("ssn", 2);
        let kinds = vec![
            AuditEventKind::CredentialRenewed {
                principal: principal.clone(),
            },
            AuditEventKind::SessionStarted {
                principal,
                target: target.clone(),
                client_addr: Some("127.0.0.1:5000".into()),
                application: Some("run=1 call=2".into()),
                tls: true,
            },
            AuditEventKind::AuthenticationFailed {
                target: target.clone(),
                client_addr: None,
                user: Some("mallory".into()),
                method: "jwt".into(),
                reason: "bad audience".into(),
            },
            AuditEventKind::CommandDecided {
                command_id,
                subject: "agent-1".into(),
                command: command.clone(),
                decision: Decision::Allow {
                    rule: RuleId::new("r"),
                    mask_profile: None,
                },
                policy_version: "abc".into(),
            },
            AuditEventKind::CommandCompleted {
                command_id,
                rows: 3,
                bytes: 120,
                masked,
                duration_us: 900,
                error: None,
                reply: None,
            },
            AuditEventKind::CommandCompleted {
                command_id,
                rows: 1,
                bytes: 12,
                masked: MaskedCounts::new(),
                duration_us: 40,
                error: None,
                reply: Some(Recording::new("\"j***@example.com\"", false)),
            },
            AuditEventKind::Transcript {
                command_id: Some(command_id),
                direction: Direction::FromUpstream,
                elapsed_us: 10,
                text: "DataRow [\"***\"]".into(),
                truncated: false,
            },
            AuditEventKind::ReviewRequested {
                review_id: ReviewId::new(),
                command_id,
                digest: command.digest,
                requester: "agent-1".into(),
                target,
                reason: "write".into(),
                requirement: ReviewRequirement::one_of("dba", Duration::from_secs(60)),
            },
            AuditEventKind::ReviewResolved {
                review_id: ReviewId::new(),
                outcome: ReviewOutcome::Approved,
                approvers: vec!["alice".into()],
                denied_by: None,
            },
            AuditEventKind::GrantIssued {
                grant_id: GrantId::new(),
                subject: "agent-1".into(),
                target: "crm".into(),
                scope: "write".into(),
                expires_at: Timestamp::from_unix_secs(2_000_000_000).unwrap(),
                issued_by: "alice".into(),
            },
            AuditEventKind::GrantRevoked {
                grant_id: GrantId::new(),
                revoked_by: "bob".into(),
            },
            AuditEventKind::GrantExpired {
                grant_id: GrantId::new(),
            },
            AuditEventKind::ProtocolError {
                direction: Direction::FromClient,
                error: "frame too large".into(),
            },
            AuditEventKind::ApplicationChanged {
                application: Some("run=1 call=3".into()),
            },
            AuditEventKind::ApplicationChanged { application: None },
            AuditEventKind::SessionEnded {
                reason: SessionEndReason::Error {
                    message: "reset".into(),
                },
                commands: 1,
                duration_us: 5,
            },
        ];
        kinds
            .into_iter()
            .map(|k| AuditEvent::new(session, k))
            .collect()
    }

    #[test]
    fn every_kind_round_trips_and_names_itself() {
        for event in samples() {
            let json = serde_json::to_string(&event).unwrap();
            assert!(
                json.contains(&format!(r#""type":"{}""#, event.kind.name())),
                "{json}"
            );
            let back: AuditEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn a_completion_without_a_reply_reads_and_writes_as_before() {
        // JSON written before completions could carry the reply.
        let old = r#"{"id":"019b0000-0000-7000-8000-000000000001","time":"2026-11-01T00:00:00Z","session":null,"type":"command_completed","command_id":"019b0000-0000-7000-8000-000000000002","rows":1,"bytes":7,"masked":{},"duration_us":3,"error":null}"#;
        let event: AuditEvent = serde_json::from_str(old).unwrap();
        let AuditEventKind::CommandCompleted { reply, rows, .. } = &event.kind else {
            panic!("{event:?}");
        };
        assert_eq!((reply, *rows), (&None, 1));
        assert!(!serde_json::to_string(&event).unwrap().contains("reply"));
    }

    #[test]
    fn events_are_ordered_by_id() {
        let events = samples();
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[test]
    fn masked_counts_add_and_merge() {
        let mut a = MaskedCounts::new();
        a.add("ssn", 1);
        a.add("card", 0);
        assert!(!a.0.contains_key("card"));
        let mut b = MaskedCounts::new();
        b.add("ssn", 2);
        b.add("email", u64::MAX);
        a.merge(&b);
        assert_eq!(a.0["ssn"], 3);
        assert_eq!(a.total(), u64::MAX);
    }
}
