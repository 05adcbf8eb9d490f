//! Conformance suite for `ReviewStore` implementations.
//!
//! [`review_store`] checks one store: round trips, the pending queue, every approval rule
//! (no self-approval, reviewer groups, distinct approvers, minimum approvals, expiry of
//! reviews and approvals, binding to the exact command, requester and target, single use),
//! denial, cancellation, and waiting with a timeout while another task decides.
//! [`review_store_shared`] checks two handles on one backend (two gateways): what one
//! writes the other reads, and a waiter on one wakes when the other approves.

use std::time::Duration;

use wirewarden_core::{
    CommandClass, CommandDigest, CommandId, Protocol, ReviewRequirement, RuleId, Target, Timestamp,
};
use wirewarden_review::{
    ApprovalScope, Binding, Error, Operation, Review, ReviewState, ReviewStore, Reviewer, Status,
};

fn binding(requester: &str, text: &str) -> Binding {
    Binding {
        digest: CommandDigest::compute(Protocol::Postgres, text.as_bytes(), []),
        requester: requester.to_owned(),
        target: Target::new("crm", Protocol::Postgres).expect("target"),
    }
}

fn review(requester: &str, groups: &[&str], min: u32, timeout: Duration, at: Timestamp) -> Review {
    let text = format!("UPDATE accounts SET tier = 'gold' -- {}", CommandId::new());
    Review::new(
        CommandId::new(),
        binding(requester, &text),
        text,
        CommandClass::Write,
        RuleId::new("conformance"),
        "conformance",
        ReviewRequirement {
            reviewer_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            min_approvals: min,
            timeout,
        },
        at,
    )
    .expect("valid review")
}

fn approve(who: &Reviewer, scope: ApprovalScope) -> Operation {
    Operation::Approve {
        reviewer: who.clone(),
        scope,
    }
}

fn secs(t: Timestamp, s: u64) -> Timestamp {
    t.checked_add(Duration::from_secs(s)).expect("time")
}

/// Runs the single-store suite. Panics with a description of the first violation.
pub async fn review_store(store: &dyn ReviewStore) {
    let requester = format!("conformance-agent-{}", CommandId::new());
    let alice = Reviewer::new("conformance-alice").with_group("dba");
    let bob = Reviewer::new("conformance-bob").with_group("dba");
    let eve = Reviewer::new("conformance-eve").with_group("marketing");
    let selfish = Reviewer::new(requester.clone()).with_group("dba");
    let minute = Duration::from_secs(60);
    let now = Timestamp::now();

    // Round trip, duplicates, unknown ids.
    let r = review(&requester, &["dba"], 2, minute, now);
    store.submit(&r).await.expect("submit");
    assert_eq!(
        store.get(r.id).await.expect("get"),
        Some(r.clone()),
        "round trip"
    );
    assert!(
        matches!(store.submit(&r).await, Err(Error::Duplicate { .. })),
        "a second submit of one id is not Duplicate"
    );
    let unknown = review(&requester, &[], 1, minute, now);
    assert!(store.get(unknown.id).await.expect("get").is_none());
    assert!(
        matches!(
            store.apply(unknown.id, &Operation::Cancel, now).await,
            Err(Error::NotFound { .. })
        ),
        "applying to an unknown id is not NotFound"
    );

    // The pending queue, oldest first.
    let r2 = review(&requester, &["dba"], 1, minute, secs(now, 1));
    store.submit(&r2).await.expect("submit");
    let pending: Vec<_> = store
        .pending(secs(now, 1))
        .await
        .expect("pending")
        .into_iter()
        .filter(|p| p.binding.requester == requester)
        .map(|p| p.id)
        .collect();
    assert_eq!(
        pending,
        vec![r.id, r2.id],
        "pending must list both, oldest first"
    );

    // Approval rules. Rejected operations leave the review unchanged.
    let t = secs(now, 2);
    assert!(
        matches!(
            store
                .apply(r.id, &approve(&selfish, ApprovalScope::Once), t)
                .await,
            Err(Error::SelfReview { .. })
        ),
        "self-approval is not refused with SelfReview"
    );
    assert!(
        matches!(
            store
                .apply(r.id, &approve(&eve, ApprovalScope::Once), t)
                .await,
            Err(Error::NotAReviewer { .. })
        ),
        "an approval from outside the reviewer groups is not refused with NotAReviewer"
    );
    assert_eq!(
        store
            .get(r.id)
            .await
            .expect("get")
            .expect("exists")
            .approvals
            .len(),
        0,
        "a refused approval was recorded"
    );
    let after_one = store
        .apply(r.id, &approve(&alice, ApprovalScope::Once), t)
        .await
        .expect("first approval");
    assert_eq!(
        after_one.status(t),
        Status::Pending,
        "one of two approvals approved it"
    );
    assert_eq!(after_one.approvers(), vec![alice.subject.clone()]);
    assert!(
        matches!(
            store
                .apply(r.id, &approve(&alice, ApprovalScope::Once), t)
                .await,
            Err(Error::AlreadyApproved { .. })
        ),
        "the same approver counted twice"
    );
    let approved = store
        .apply(r.id, &approve(&bob, ApprovalScope::Once), t)
        .await
        .expect("second approval");
    assert_eq!(approved.status(t), Status::Approved);
    assert_eq!(
        approved.approvers(),
        vec![alice.subject.clone(), bob.subject.clone()]
    );
    assert!(
        matches!(
            store
                .apply(r.id, &approve(&bob, ApprovalScope::Once), t)
                .await,
            Err(Error::NotPending { .. } | Error::AlreadyApproved { .. })
        ),
        "an approved review accepted another approval"
    );

    // Binding: only the exact command, requester and target; only once.
    let other_cmd = Operation::Consume {
        binding: binding(&requester, "DROP TABLE accounts"),
    };
    let mut other_target = r.binding.clone();
    other_target.target = Target::new("billing", Protocol::Postgres).expect("target");
    let mut other_requester = r.binding.clone();
    other_requester.requester = format!("{requester}-2");
    for (what, op) in [
        ("command", other_cmd),
        (
            "target",
            Operation::Consume {
                binding: other_target,
            },
        ),
        (
            "requester",
            Operation::Consume {
                binding: other_requester,
            },
        ),
    ] {
        assert!(
            matches!(
                store.apply(r.id, &op, t).await,
                Err(Error::BindingMismatch { .. })
            ),
            "an approval released a different {what}"
        );
    }
    let used = store
        .apply(
            r.id,
            &Operation::Consume {
                binding: r.binding.clone(),
            },
            t,
        )
        .await
        .expect("consume");
    assert_eq!(used.status(t), Status::Consumed);
    assert!(
        matches!(
            store
                .apply(
                    r.id,
                    &Operation::Consume {
                        binding: r.binding.clone()
                    },
                    t
                )
                .await,
            Err(Error::NotPending { .. })
        ),
        "an approval for one command was used twice"
    );

    // Approvals expire when not used in time.
    let ttl_review =
        review(&requester, &[], 1, minute, now).with_approval_ttl(Duration::from_secs(30));
    store.submit(&ttl_review).await.expect("submit");
    store
        .apply(ttl_review.id, &approve(&alice, ApprovalScope::Once), now)
        .await
        .expect("approve");
    assert!(
        matches!(
            store
                .apply(
                    ttl_review.id,
                    &Operation::Consume {
                        binding: ttl_review.binding.clone()
                    },
                    secs(now, 30)
                )
                .await,
            Err(Error::Expired { .. })
        ),
        "an approval was used after it expired"
    );

    // Reviews expire when nobody decides in time.
    let old = review(&requester, &[], 1, Duration::from_secs(1), now);
    store.submit(&old).await.expect("submit");
    let late = secs(now, 1);
    assert!(
        matches!(
            store
                .apply(old.id, &approve(&alice, ApprovalScope::Once), late)
                .await,
            Err(Error::Expired { .. })
        ),
        "an expired review accepted an approval"
    );
    assert!(
        !store
            .pending(late)
            .await
            .expect("pending")
            .iter()
            .any(|p| p.id == old.id),
        "an expired review is listed as pending"
    );

    // Denial is final.
    let d = review(&requester, &["dba"], 2, minute, now);
    store.submit(&d).await.expect("submit");
    let denied = store
        .apply(
            d.id,
            &Operation::Deny {
                reviewer: bob.clone(),
                reason: "not today".into(),
            },
            now,
        )
        .await
        .expect("deny");
    assert!(
        matches!(&denied.state, ReviewState::Denied { by, reason } if by == &bob.subject && reason == "not today"),
        "denial not recorded: {:?}",
        denied.state
    );
    assert!(
        matches!(
            store
                .apply(d.id, &approve(&alice, ApprovalScope::Once), now)
                .await,
            Err(Error::NotPending { .. })
        ),
        "a denied review accepted an approval"
    );

    // Grant scopes: recorded, narrowest wins, never for unknown commands.
    let g = review(&requester, &["dba"], 2, minute, now);
    store.submit(&g).await.expect("submit");
    store
        .apply(
            g.id,
            &approve(&alice, ApprovalScope::grant(Duration::from_secs(1_800))),
            now,
        )
        .await
        .expect("approve");
    let granted = store
        .apply(
            g.id,
            &approve(&bob, ApprovalScope::grant(Duration::from_secs(600))),
            now,
        )
        .await
        .expect("approve");
    assert!(
        matches!(
            granted.state,
            ReviewState::Approved {
                scope: ApprovalScope::Grant { secs: 600 },
                ..
            }
        ),
        "the narrowest grant scope must win: {:?}",
        granted.state
    );
    let mut u = review(&requester, &[], 1, minute, now);
    u.class = CommandClass::Unknown;
    store.submit(&u).await.expect("submit");
    assert!(
        matches!(
            store
                .apply(
                    u.id,
                    &approve(&alice, ApprovalScope::grant(Duration::from_secs(60))),
                    now
                )
                .await,
            Err(Error::InvalidScope { .. })
        ),
        "a grant was approved for an unknown command"
    );

    // Cancellation.
    let c = review(&requester, &[], 1, minute, now);
    store.submit(&c).await.expect("submit");
    let cancelled = store
        .apply(c.id, &Operation::Cancel, now)
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(now), Status::Cancelled);

    // Waiting: immediate when decided, bounded by the timeout when not, woken by a decision.
    let decided = store
        .wait(d.id, Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!(decided.status(Timestamp::now()), Status::Denied);
    let w = review(&requester, &[], 1, minute, Timestamp::now());
    store.submit(&w).await.expect("submit");
    let still = store
        .wait(w.id, Duration::from_millis(200))
        .await
        .expect("wait");
    assert_eq!(
        still.status(Timestamp::now()),
        Status::Pending,
        "wait invented a decision"
    );
    let waiter = store.wait(w.id, Duration::from_secs(20));
    let approver = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .apply(
                w.id,
                &approve(&alice, ApprovalScope::Once),
                Timestamp::now(),
            )
            .await
            .expect("approve")
    };
    let (woken, _) = tokio::join!(waiter, approver);
    assert_eq!(
        woken.expect("wait").status(Timestamp::now()),
        Status::Approved,
        "the waiter did not see the approval"
    );
}

/// Runs the two-gateway suite: `a` and `b` are two handles on one backend (for an
/// in-memory store, the same store twice). Panics with a description of the first violation.
pub async fn review_store_shared(a: &dyn ReviewStore, b: &dyn ReviewStore) {
    let requester = format!("conformance-agent-{}", CommandId::new());
    let alice = Reviewer::new("conformance-alice").with_group("dba");
    let r = review(
        &requester,
        &["dba"],
        1,
        Duration::from_secs(60),
        Timestamp::now(),
    );
    a.submit(&r).await.expect("submit");
    assert_eq!(
        b.get(r.id).await.expect("get"),
        Some(r.clone()),
        "b does not see a's review"
    );

    // The waiter on b wakes when a approves.
    let waiter = b.wait(r.id, Duration::from_secs(20));
    let approver = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.apply(
            r.id,
            &approve(&alice, ApprovalScope::Once),
            Timestamp::now(),
        )
        .await
        .expect("approve through a")
    };
    let (woken, _) = tokio::join!(waiter, approver);
    let woken = woken.expect("wait on b");
    assert_eq!(
        woken.status(Timestamp::now()),
        Status::Approved,
        "the waiter on b did not wake"
    );
    assert_eq!(woken.approvers(), vec![alice.subject.clone()]);

    // Consumed through b, it cannot be used again through a.
    b.apply(
        r.id,
        &Operation::Consume {
            binding: r.binding.clone(),
        },
        Timestamp::now(),
    )
    .await
    .expect("consume through b");
    assert!(
        matches!(
            a.apply(
                r.id,
                &Operation::Consume {
                    binding: r.binding.clone()
                },
                Timestamp::now()
            )
            .await,
            Err(Error::NotPending { .. })
        ),
        "one approval was used through both gateways"
    );
}
