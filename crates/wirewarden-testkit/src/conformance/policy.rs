//! Conformance suite for `PolicyEngine` implementations.
//!
//! ```text
//! use wirewarden_testkit::conformance::policy::{policy_engine, Expect, PolicyCase};
//! policy_engine(&my_engine, &[PolicyCase::new("reads in office hours", p, t, c, now, Expect::Allow), …]);
//! ```
//!
//! The implementor supplies sample requests with the outcome their policy should give.
//! Besides those outcomes, the suite checks what the pipeline relies on for every sample:
//! evaluation is deterministic and judged at the request's time; the policy version is
//! non-empty and the same for every decision; decisions are well formed (a rule id, a review
//! needing at least one approval within a non-zero timeout); an expired credential is never
//! allowed; the same command classified `unknown` is never allowed; grants that have
//! expired, or belong to someone else, change nothing; and a stranger with no groups asking
//! for an admin command on a target nobody configured is not allowed.

use std::time::Duration;

use wirewarden_core::{
    AuthMethod, Command, CommandClass, CommandDigest, Decision, Principal, Protocol, Target,
    Timestamp,
};
use wirewarden_policy::{Grant, GrantScope, PolicyEngine, Request};

/// The outcome a sample request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `Decision::Allow`.
    Allow,
    /// `Decision::Deny`.
    Deny,
    /// `Decision::Review`.
    Review,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Review => "review",
        }
    }
}

/// One sample request and the outcome the implementor's policy gives it.
#[derive(Debug, Clone)]
pub struct PolicyCase {
    /// A name for failure messages.
    pub name: String,
    /// Who asks.
    pub principal: Principal,
    /// Where.
    pub target: Target,
    /// What.
    pub command: Command,
    /// When.
    pub now: Timestamp,
    /// The expected outcome.
    pub expect: Expect,
}

impl PolicyCase {
    /// A sample case.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        principal: Principal,
        target: Target,
        command: Command,
        now: Timestamp,
        expect: Expect,
    ) -> Self {
        Self {
            name: name.into(),
            principal,
            target,
            command,
            now,
            expect,
        }
    }
}

fn assert_send_sync<T: Send + Sync + ?Sized>() {}

fn check_well_formed(name: &str, decision: &Decision) {
    assert!(
        !decision.rule().as_str().is_empty(),
        "{name}: the decision names no rule"
    );
    if let Decision::Review { requirement, .. } = decision {
        assert!(
            requirement.min_approvals >= 1,
            "{name}: a review needs at least one approval"
        );
        assert!(
            !requirement.timeout.is_zero(),
            "{name}: a review needs a non-zero timeout"
        );
    }
}

/// Runs the suite against `engine` with the implementor's sample `cases`, which must contain
/// at least one `Allow` and one `Deny` expectation. Panics with a description of the first
/// violation.
pub fn policy_engine(engine: &dyn PolicyEngine, cases: &[PolicyCase]) {
    assert_send_sync::<dyn PolicyEngine>();
    assert!(
        cases.iter().any(|c| c.expect == Expect::Allow)
            && cases.iter().any(|c| c.expect == Expect::Deny),
        "give at least one case expected to be allowed and one expected to be denied"
    );

    let mut version = None;
    for case in cases {
        let name = case.name.as_str();
        let req = Request::new(&case.principal, &case.target, &case.command, case.now);
        let first = engine.evaluate(&req);
        assert_eq!(
            first.decision.outcome(),
            case.expect.name(),
            "{name}: expected {}, got {:?} ({})",
            case.expect.name(),
            first.decision,
            first.explanation
        );
        check_well_formed(name, &first.decision);

        // Deterministic.
        let again = engine.evaluate(&req);
        assert_eq!(
            first, again,
            "{name}: two evaluations of one request differ"
        );

        // One version for the whole rule set.
        assert!(
            !first.policy_version.as_str().is_empty(),
            "{name}: empty policy version"
        );
        match &version {
            None => version = Some(first.policy_version.clone()),
            Some(v) => assert_eq!(
                v, &first.policy_version,
                "{name}: the policy version changed between evaluations"
            ),
        }

        // An expired credential is never allowed.
        let expired = case.principal.clone().with_expiry(case.now);
        let ev = engine.evaluate(&Request::new(
            &expired,
            &case.target,
            &case.command,
            case.now,
        ));
        assert!(
            !ev.decision.is_allow(),
            "{name}: allowed a principal whose credential expired ({})",
            ev.explanation
        );

        // Unknown is the riskiest class: the same command, not understood, is not allowed.
        let mut unknown = case.command.clone();
        unknown.class = CommandClass::Unknown;
        let ev = engine.evaluate(&Request::new(
            &case.principal,
            &case.target,
            &unknown,
            case.now,
        ));
        assert!(
            !ev.decision.is_allow(),
            "{name}: allowed the command when classified unknown ({})",
            ev.explanation
        );

        // Grants that expired, or are for someone else, change nothing.
        let start = case
            .now
            .checked_sub(Duration::from_secs(3_600))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let scope = GrantScope::up_to(CommandClass::Code);
        let stale = Grant::new(
            case.principal.subject.clone(),
            case.target.name.clone(),
            scope.clone(),
            start,
            Duration::from_secs(3_600),
            "conformance",
        )
        .expect("a valid grant");
        let other = Grant::new(
            format!("{}-someone-else", case.principal.subject),
            case.target.name.clone(),
            scope,
            start,
            Duration::from_secs(7_200),
            "conformance",
        )
        .expect("a valid grant");
        let grants = [stale, other];
        let ev = engine.evaluate(&req.with_grants(&grants));
        assert_eq!(
            ev.decision, first.decision,
            "{name}: an expired grant, or another subject's grant, changed the decision"
        );
    }

    // A stranger asking for an admin command on a target nobody configured.
    let now = cases.first().map_or_else(Timestamp::now, |c| c.now);
    let stranger = Principal::new(
        "conformance-stranger-7f3a",
        AuthMethod::External {
            mechanism: "conformance".into(),
        },
    )
    .expect("valid principal");
    let nowhere = Target::new("conformance-unconfigured-target-7f3a", Protocol::Postgres)
        .expect("valid target");
    let admin = Command::with_digest(
        Protocol::Postgres,
        "ALTER SYSTEM",
        CommandClass::Admin,
        "ALTER SYSTEM SET fsync = off",
        CommandDigest::compute(Protocol::Postgres, b"ALTER SYSTEM SET fsync = off", []),
    )
    .expect("valid command");
    let ev = engine.evaluate(&Request::new(&stranger, &nowhere, &admin, now));
    assert!(
        !ev.decision.is_allow(),
        "a stranger may run an admin command on an unconfigured target ({})",
        ev.explanation
    );
}
