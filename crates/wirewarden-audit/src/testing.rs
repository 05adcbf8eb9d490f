//! Sample events covering every kind, for tests, benches and the fuzz seed corpus.

use std::time::Duration;

use wirewarden_core::{
    Access, AuditEvent, AuditEventKind, AuthMethod, Command, CommandClass, CommandId, Decision,
    Direction, GrantId, MaskedCounts, ObjectKind, ObjectRef, Principal, Protocol, ReviewId,
    ReviewOutcome, ReviewRequirement, RuleId, SessionEndReason, SessionId, Target, Timestamp,
};

/// One event of every kind, all in one Postgres session, plus an HTTP command.
#[must_use]
pub fn sample_events() -> Vec<AuditEvent> {
    let session = Some(SessionId::new());
    let target = Target {
        name: "crm".into(),
        protocol: Protocol::Postgres,
        database: Some("sales".into()),
    };
    let mut principal = Principal::new(
        "agent-1",
        AuthMethod::Jwt {
            issuer: "https://idp.example".into(),
            key_id: Some("k1".into()),
        },
    )
    .unwrap_or_else(|_| unreachable_subject());
    principal.groups.insert("agents".into());
    principal.groups.insert("analysts".into());
    principal.attributes.insert("team".into(), "growth".into());
    // The same agent with a fresh token, valid for longer.
    let mut renewed = principal.clone();
    renewed.expires_at = Timestamp::from_unix_secs(2_000_003_600);
    let command = Command::new(
        Protocol::Postgres,
        "SELECT",
        CommandClass::Read,
        "SELECT email FROM customers WHERE id = $1",
    )
    .unwrap_or_else(|_| unreachable_subject())
    .with_object(ObjectRef::new(
        ObjectKind::Relation,
        "customers",
        Access::Read,
    ));
    let http = Command::new(
        Protocol::Http,
        "POST",
        CommandClass::Write,
        "POST /v1/refunds",
    )
    .unwrap_or_else(|_| unreachable_subject())
    .with_object(ObjectRef::new(
        ObjectKind::Path,
        "/v1/refunds",
        Access::Write,
    ));
    let command_id = CommandId::new();
    let mut masked = MaskedCounts::new();
    masked.add("email", 1);
    masked.add("ssn", 2);
    let kinds = vec![
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
                rule: RuleId::new("analysts-read"),
                mask_profile: Some("pii".into()),
            },
            policy_version: "abc123".into(),
        },
        AuditEventKind::Transcript {
            command_id: Some(command_id),
            direction: Direction::FromClient,
            elapsed_us: 10,
            text: "Query \"SELECT email FROM customers WHERE id = $1\"".into(),
            truncated: false,
        },
        AuditEventKind::Transcript {
            command_id: Some(command_id),
            direction: Direction::FromUpstream,
            elapsed_us: 250,
            text: "DataRow [\"j***@example.com\"]\nCommandComplete \"SELECT 1\"".into(),
            truncated: false,
        },
        AuditEventKind::CommandCompleted {
            command_id,
            rows: 1,
            bytes: 120,
            masked,
            duration_us: 240,
            error: None,
            reply: None,
        },
        AuditEventKind::CommandDecided {
            command_id: CommandId::new(),
            subject: "agent-1".into(),
            command: http,
            decision: Decision::Deny {
                rule: RuleId::new("no-refunds"),
                reason: "refunds need a human".into(),
            },
            policy_version: "abc123".into(),
        },
        AuditEventKind::ReviewRequested {
            review_id: ReviewId::new(),
            command_id,
            digest: command.digest,
            requester: "agent-1".into(),
            target,
            reason: "write to crm".into(),
            requirement: ReviewRequirement {
                reviewer_groups: vec!["dba".into(), "oncall".into()],
                min_approvals: 2,
                timeout: Duration::from_millis(1500),
            },
        },
        AuditEventKind::ReviewResolved {
            review_id: ReviewId::new(),
            outcome: ReviewOutcome::Approved,
            approvers: vec!["alice".into(), "bob".into()],
            denied_by: None,
        },
        AuditEventKind::GrantIssued {
            grant_id: GrantId::new(),
            subject: "agent-1".into(),
            target: "crm".into(),
            scope: "write".into(),
            expires_at: Timestamp::from_unix_secs(2_000_000_000).unwrap_or_default(),
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
        AuditEventKind::CredentialRenewed { principal: renewed },
        AuditEventKind::SessionEnded {
            reason: SessionEndReason::Error {
                message: "reset".into(),
            },
            commands: 2,
            duration_us: 5_000,
        },
    ];
    kinds
        .into_iter()
        .map(|k| AuditEvent::new(session, k))
        .collect()
}

/// A small event with a numbered transcript text, for volume tests and benches.
#[must_use]
pub fn numbered_event(session: SessionId, n: u64) -> AuditEvent {
    transcript_event(session, n, format!("Query \"SELECT {n}\""))
}

/// A transcript event from the client with `text`, `n` microseconds into `session`.
#[must_use]
pub fn transcript_event(session: SessionId, n: u64, text: String) -> AuditEvent {
    AuditEvent::new(
        Some(session),
        AuditEventKind::Transcript {
            command_id: None,
            direction: Direction::FromClient,
            elapsed_us: n,
            text,
            truncated: false,
        },
    )
}

fn unreachable_subject<T>() -> T {
    // The literals above are non-empty, so the constructors cannot fail.
    panic!("sample event constructor rejected a non-empty literal")
}
