//! Property test of the review state machine: whatever sequence of approvals, denials,
//! cancellations and releases arrives, in whatever order and at whatever times, the
//! invariants hold.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use wirewarden_core::{
    CommandClass, CommandDigest, CommandId, Protocol, ReviewRequirement, RuleId, Target, Timestamp,
};
use wirewarden_review::{ApprovalScope, Binding, Operation, Review, ReviewState, Reviewer, Status};

const PEOPLE: [&str; 4] = ["agent", "alice", "bob", "eve"];

fn binding(text: &[u8], requester: &str) -> Binding {
    Binding {
        digest: CommandDigest::compute(Protocol::Postgres, text, []),
        requester: requester.into(),
        target: Target::new("crm", Protocol::Postgres).unwrap(),
    }
}

fn op() -> impl Strategy<Value = Operation> {
    let who = (0..PEOPLE.len(), any::<bool>()).prop_map(|(i, dba)| {
        let r = Reviewer::new(PEOPLE[i]);
        if dba { r.with_group("dba") } else { r }
    });
    let scope = prop_oneof![
        Just(ApprovalScope::Once),
        (0u64..100_000).prop_map(|secs| ApprovalScope::Grant { secs }),
    ];
    prop_oneof![
        (who.clone(), scope).prop_map(|(reviewer, scope)| Operation::Approve { reviewer, scope }),
        who.prop_map(|reviewer| Operation::Deny {
            reviewer,
            reason: "no".into()
        }),
        Just(Operation::Cancel),
        (any::<bool>(), 0..PEOPLE.len()).prop_map(|(same, i)| Operation::Consume {
            binding: binding(if same { b"UPDATE t" } else { b"DELETE t" }, PEOPLE[i]),
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold(
        min in 1u32..4,
        ops in proptest::collection::vec((op(), 0u64..200), 0..24),
    ) {
        let start = Timestamp::from_unix_secs(1_000_000).unwrap();
        let mut review = Review::new(
            CommandId::new(),
            binding(b"UPDATE t", "agent"),
            "UPDATE t",
            CommandClass::Write,
            RuleId::new("r"),
            "why",
            ReviewRequirement { reviewer_groups: vec!["dba".into()], min_approvals: min, timeout: Duration::from_secs(100) },
            start,
        ).unwrap().with_approval_ttl(Duration::from_secs(30));
        let mut consumed = 0;
        let mut t = start;
        for (op, dt) in ops {
            // Time only moves forward.
            t = t.checked_add(Duration::from_secs(dt % 20)).unwrap();
            let before = review.clone();
            let result = review.apply(&op, t);
            if result.is_err() {
                prop_assert_eq!(&review, &before, "a refused operation changed the review");
                continue;
            }
            match &op {
                Operation::Approve { reviewer, .. } | Operation::Deny { reviewer, .. } => {
                    prop_assert!(reviewer.subject != "agent", "self-review accepted");
                    prop_assert!(reviewer.groups.contains("dba"), "non-reviewer accepted");
                    prop_assert!(t < before.expires_at, "accepted after expiry");
                }
                Operation::Consume { binding: b } => {
                    consumed += 1;
                    prop_assert_eq!(b, &before.binding, "released a different command");
                    prop_assert_eq!(before.status(t), Status::Approved);
                }
                _ => {}
            }
        }
        prop_assert!(consumed <= 1, "an approval was used {} times", consumed);
        let approvers: BTreeSet<_> = review.approvers().into_iter().collect();
        prop_assert_eq!(approvers.len(), review.approvals.len(), "an approver counted twice");
        prop_assert!(!approvers.contains("agent"));
        match review.state {
            ReviewState::Approved { .. } | ReviewState::Consumed { .. } => {
                prop_assert!(review.approvals.len() >= min as usize);
            }
            ReviewState::Pending => prop_assert!(review.approvals.len() < min as usize),
            _ => {}
        }
    }
}
