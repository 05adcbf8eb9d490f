//! The conformance suites against the in-memory stores, and the review workflow end to end:
//! policy says review, a reviewer approves with a grant, the grant lets later commands
//! through until it expires.

use std::sync::Arc;
use std::time::Duration;

use wirewarden_core::{
    Access, AuditEventKind, AuthMethod, Command, CommandClass, CommandId, Decision, ObjectKind,
    ObjectRef, Principal, Protocol, ReviewOutcome, Target, Timestamp,
};
use wirewarden_policy::{
    DecidedBy, GrantError, GrantStore, MemoryGrantStore, PolicyEngine, Request, RuleEngine,
};
use wirewarden_review::{
    ApprovalScope, Error, MemoryReviewStore, ReviewStore, Reviewer, Reviews, Status,
};
use wirewarden_testkit::conformance::review::{review_store, review_store_shared};

#[tokio::test]
async fn memory_review_store_passes_the_review_suite() {
    review_store(&MemoryReviewStore::new()).await;
}

#[tokio::test]
async fn memory_review_store_passes_the_shared_suite() {
    let store = MemoryReviewStore::new();
    review_store_shared(&store, &store).await;
}

fn agent() -> Principal {
    Principal::new(
        "agent-7",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap()
    .with_group("agents")
}

#[tokio::test]
async fn approval_with_a_grant_lets_later_commands_through_until_it_expires() {
    let engine = RuleEngine::from_toml(
        r#"
[[rule]]
id = "writes-need-review"
targets = ["crm"]
max_class = "write"
action = "review"
reviewers = ["dba"]
min_approvals = 2
timeout = "10m"
"#,
    )
    .unwrap();
    let grants = Arc::new(MemoryGrantStore::new());
    let reviews = Reviews::new(Arc::new(MemoryReviewStore::new()), grants.clone());
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let write_on = |relation: &str, text: &str| {
        Command::new(Protocol::Postgres, "UPDATE", CommandClass::Write, text)
            .unwrap()
            .with_object(ObjectRef::new(
                ObjectKind::Relation,
                relation,
                Access::Write,
            ))
    };
    let update = write_on("public.t", "UPDATE t SET a = 1");
    let now = Timestamp::now();

    let eval = engine.evaluate(&Request::new(&agent(), &crm, &update, now));
    let Decision::Review {
        rule,
        reason,
        requirement,
    } = eval.decision
    else {
        panic!("{eval:?}")
    };
    let held = reviews
        .request(
            &agent(),
            &crm,
            &update,
            CommandId::new(),
            rule,
            &reason,
            requirement,
            now,
        )
        .await
        .unwrap();
    assert!(held.notify_error.is_none());
    match &held.event.kind {
        AuditEventKind::ReviewRequested {
            review_id,
            digest,
            requester,
            ..
        } => {
            assert_eq!(*review_id, held.review.id);
            assert_eq!(*digest, update.digest);
            assert_eq!(requester, "agent-7");
        }
        other => panic!("{other:?}"),
    }
    let id = held.review.id;

    let alice = Reviewer::new("alice").with_group("dba");
    let bob = Reviewer::new("bob").with_group("dba");
    let first = reviews
        .approve(
            id,
            &alice,
            ApprovalScope::grant(Duration::from_secs(1_800)),
            now,
        )
        .await
        .unwrap();
    assert!(
        first.events.is_empty(),
        "one of two approvals resolves nothing"
    );
    assert!(first.grant.is_none());
    let second = reviews
        .approve(
            id,
            &bob,
            ApprovalScope::grant(Duration::from_secs(1_800)),
            now,
        )
        .await
        .unwrap();
    let names: Vec<_> = second.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["review_resolved", "grant_issued"]);
    match &second.events[0].kind {
        AuditEventKind::ReviewResolved {
            outcome, approvers, ..
        } => {
            assert_eq!(*outcome, ReviewOutcome::Approved);
            assert_eq!(approvers, &["alice", "bob"]);
        }
        other => panic!("{other:?}"),
    }
    let grant = second.grant.unwrap();
    assert_eq!(grant.subject, "agent-7");
    assert_eq!(grant.scope.max_class, CommandClass::Write);
    // Limited to what the reviewers saw the command touch.
    assert_eq!(grant.scope.objects, ["public.t"]);
    assert_eq!(grant.issued_by, "alice,bob");

    // The held command is released once.
    reviews
        .release(id, &agent(), &crm, &update, now)
        .await
        .unwrap();
    assert!(matches!(
        reviews.release(id, &agent(), &crm, &update, now).await,
        Err(Error::NotPending {
            status: Status::Consumed,
            ..
        })
    ));

    // Later writes to the same relation go through under the grant, until it expires;
    // writes to others are still held.
    let other_update = write_on("public.t", "UPDATE t SET a = 2");
    let later = now.checked_add(Duration::from_secs(600)).unwrap();
    let active = grants.active("agent-7", "crm", later).await.unwrap();
    let eval =
        engine.evaluate(&Request::new(&agent(), &crm, &other_update, later).with_grants(&active));
    assert!(matches!(eval.decided_by, DecidedBy::Grant { grant: g, .. } if g == grant.id));
    let elsewhere = write_on("public.accounts", "UPDATE accounts SET a = 2");
    let eval =
        engine.evaluate(&Request::new(&agent(), &crm, &elsewhere, later).with_grants(&active));
    assert_eq!(eval.decision.outcome(), "review");
    let expired_at = now.checked_add(Duration::from_secs(1_800)).unwrap();
    let eval = engine
        .evaluate(&Request::new(&agent(), &crm, &other_update, expired_at).with_grants(&active));
    assert_eq!(eval.decision.outcome(), "review");
    let swept = grants.sweep_expired(expired_at).await.unwrap();
    assert_eq!(swept.len(), 1);
}

#[tokio::test]
async fn waiting_times_out_and_reports_expiry() {
    let reviews = Reviews::new(
        Arc::new(MemoryReviewStore::new()),
        Arc::new(MemoryGrantStore::new()),
    );
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let update = Command::new(
        Protocol::Postgres,
        "UPDATE",
        CommandClass::Write,
        "UPDATE t SET a = 1",
    )
    .unwrap();
    let held = reviews
        .request(
            &agent(),
            &crm,
            &update,
            CommandId::new(),
            wirewarden_core::RuleId::new("r"),
            "why",
            wirewarden_core::ReviewRequirement::one_of("dba", Duration::from_millis(300)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    // Waiting longer than the review's own timeout returns when the review expires.
    let (review, event) = reviews
        .wait(held.review.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(review.status(Timestamp::now()), Status::Expired);
    match event.map(|e| e.kind) {
        Some(AuditEventKind::ReviewResolved {
            outcome: ReviewOutcome::Expired,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let late = reviews
        .approve(
            held.review.id,
            &Reviewer::new("alice").with_group("dba"),
            ApprovalScope::Once,
            Timestamp::now(),
        )
        .await;
    assert!(matches!(late, Err(Error::Expired { .. })), "{late:?}");
}

#[tokio::test]
async fn a_waiter_that_gives_up_closes_the_review() {
    let reviews = Reviews::new(
        Arc::new(MemoryReviewStore::new()),
        Arc::new(MemoryGrantStore::new()),
    );
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let update = Command::new(
        Protocol::Postgres,
        "UPDATE",
        CommandClass::Write,
        "UPDATE t SET a = 1",
    )
    .unwrap();
    let held = reviews
        .request(
            &agent(),
            &crm,
            &update,
            CommandId::new(),
            wirewarden_core::RuleId::new("r"),
            "why",
            wirewarden_core::ReviewRequirement::one_of("dba", Duration::from_secs(600)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let (review, event) = reviews
        .wait(held.review.id, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(review.status(Timestamp::now()), Status::Cancelled);
    assert!(matches!(
        event.map(|e| e.kind),
        Some(AuditEventKind::ReviewResolved {
            outcome: ReviewOutcome::Expired,
            ..
        })
    ));
    // A late approval cannot release a command that is no longer held.
    let late = reviews
        .approve(
            held.review.id,
            &Reviewer::new("alice").with_group("dba"),
            ApprovalScope::Once,
            Timestamp::now(),
        )
        .await;
    assert!(
        matches!(
            late,
            Err(Error::NotPending {
                status: Status::Cancelled,
                ..
            })
        ),
        "{late:?}"
    );
}

#[tokio::test]
async fn denial_is_audited_with_the_reviewer() {
    let store: Arc<dyn ReviewStore> = Arc::new(MemoryReviewStore::new());
    let reviews = Reviews::new(store, Arc::new(MemoryGrantStore::new()));
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let drop_cmd = Command::new(
        Protocol::Postgres,
        "DROP TABLE",
        CommandClass::Schema,
        "DROP TABLE t",
    )
    .unwrap();
    let now = Timestamp::now();
    let held = reviews
        .request(
            &agent(),
            &crm,
            &drop_cmd,
            CommandId::new(),
            wirewarden_core::RuleId::new("r"),
            "why",
            wirewarden_core::ReviewRequirement::one_of("dba", Duration::from_secs(60)),
            now,
        )
        .await
        .unwrap();
    let res = reviews
        .deny(
            held.review.id,
            &Reviewer::new("carol").with_group("dba"),
            "no drops on Thursdays",
            now,
        )
        .await
        .unwrap();
    match &res.events[0].kind {
        AuditEventKind::ReviewResolved {
            outcome, denied_by, ..
        } => {
            assert_eq!(*outcome, ReviewOutcome::Denied);
            assert_eq!(denied_by.as_deref(), Some("carol"));
        }
        other => panic!("{other:?}"),
    }
    let (review, event) = reviews
        .wait(held.review.id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(review.status(now), Status::Denied);
    assert!(event.is_none());
}

/// A grant store whose backend is down.
#[derive(Debug)]
struct Unavailable;

#[async_trait::async_trait]
impl GrantStore for Unavailable {
    async fn issue(
        &self,
        _: wirewarden_policy::Grant,
    ) -> Result<wirewarden_core::AuditEvent, GrantError> {
        Err(GrantError::Store("grant database unavailable".into()))
    }
    async fn get(
        &self,
        _: wirewarden_core::GrantId,
    ) -> Result<Option<wirewarden_policy::Grant>, GrantError> {
        Err(GrantError::Store("grant database unavailable".into()))
    }
    async fn active(
        &self,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> Result<Vec<wirewarden_policy::Grant>, GrantError> {
        Err(GrantError::Store("grant database unavailable".into()))
    }
    async fn revoke(
        &self,
        _: wirewarden_core::GrantId,
        _: &str,
        _: Timestamp,
    ) -> Result<wirewarden_core::AuditEvent, GrantError> {
        Err(GrantError::Store("grant database unavailable".into()))
    }
    async fn sweep_expired(
        &self,
        _: Timestamp,
    ) -> Result<Vec<wirewarden_core::AuditEvent>, GrantError> {
        Err(GrantError::Store("grant database unavailable".into()))
    }
}

#[tokio::test]
async fn a_failed_grant_keeps_the_approval_and_its_audit_event() {
    let reviews = Reviews::new(Arc::new(MemoryReviewStore::new()), Arc::new(Unavailable));
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let write_on = |relation: &str, text: &str| {
        Command::new(Protocol::Postgres, "UPDATE", CommandClass::Write, text)
            .unwrap()
            .with_object(ObjectRef::new(
                ObjectKind::Relation,
                relation,
                Access::Write,
            ))
    };
    let update = write_on("public.t", "UPDATE t SET a = 1");
    let now = Timestamp::now();
    let held = reviews
        .request(
            &agent(),
            &crm,
            &update,
            CommandId::new(),
            wirewarden_core::RuleId::new("r"),
            "why",
            wirewarden_core::ReviewRequirement::one_of("dba", Duration::from_secs(60)),
            now,
        )
        .await
        .unwrap();
    let res = reviews
        .approve(
            held.review.id,
            &Reviewer::new("alice").with_group("dba"),
            ApprovalScope::grant(Duration::from_secs(60)),
            now,
        )
        .await
        .unwrap();
    assert!(matches!(res.grant_error, Some(GrantError::Store(_))));
    assert!(res.grant.is_none());
    let names: Vec<_> = res.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["review_resolved"]);
    reviews
        .release(held.review.id, &agent(), &crm, &update, now)
        .await
        .unwrap();
}
