#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod budget;
mod glob;
mod grant;
mod rules;
mod window;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wirewarden_core::{Command, Decision, GrantId, Principal, RuleId, Target, Timestamp};

pub use budget::{BudgetStatus, Budgets, Exhaustion, Remaining, Resource};
pub use glob::Glob;
pub use grant::{
    Grant, GrantError, GrantScope, GrantStore, MemoryGrantStore, Revocation, expired_event,
    revoked_event,
};
pub use rules::{Limits, RuleEngine};
pub use wirewarden_core;

/// The rule id recorded when a principal's credential had expired at evaluation time.
pub const CREDENTIAL_EXPIRED_RULE: &str = "credential-expired";

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is longer than the limit.
    #[error("policy is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The text is not valid TOML, or does not have the expected shape (an unknown field, a
    /// wrong type, an unknown class or protocol). The message names line and column.
    #[error("policy syntax: {message}")]
    Syntax {
        /// What the parser said.
        message: String,
    },
    /// A rule is inconsistent.
    #[error("rule {rule:?}: {reason}")]
    InvalidRule {
        /// The rule's id.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two rules have the same id.
    #[error("rule id {rule:?} is used twice")]
    DuplicateRule {
        /// The id.
        rule: String,
    },
    /// A budget is inconsistent.
    #[error("budget {budget:?}: {reason}")]
    InvalidBudget {
        /// The budget's id.
        budget: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More rules or budgets than the limit.
    #[error("{count} {what}, more than the limit of {limit}")]
    TooMany {
        /// `rules` or `budgets`.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// The version of a policy: a hash of its canonical form, recorded with every decision so
/// an auditor can tell which rule set decided. Cheap to clone (shared text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PolicyVersion(Arc<str>);

impl PolicyVersion {
    /// A version named by the engine itself (a custom engine's release, a git commit).
    #[must_use]
    pub fn new(version: impl Into<String>) -> Self {
        Self(Arc::from(version.into()))
    }

    /// The blake3 hash of `canonical`, keyed by `context`, in lowercase hex.
    #[must_use]
    pub fn hash_of(context: &str, canonical: &[u8]) -> Self {
        Self::new(
            blake3::Hasher::new_derive_key(context)
                .update(canonical)
                .finalize()
                .to_hex()
                .as_str(),
        )
    }

    /// The version as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One question to the policy: may this principal run this command on this target now?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who is asking.
    pub principal: &'a Principal,
    /// Where the command goes.
    pub target: &'a Target,
    /// The command.
    pub command: &'a Command,
    /// The time of the evaluation. Engines judge time windows, expiries and budgets at this
    /// instant, never by reading the clock themselves.
    pub now: Timestamp,
    /// The grants the caller read from its [`GrantStore`] for this principal and target.
    /// Grants that are not active at `now` are ignored.
    pub grants: &'a [Grant],
}

impl<'a> Request<'a> {
    /// A request at `now` with no grants.
    #[must_use]
    pub fn new(
        principal: &'a Principal,
        target: &'a Target,
        command: &'a Command,
        now: Timestamp,
    ) -> Self {
        Self {
            principal,
            target,
            command,
            now,
            grants: &[],
        }
    }

    /// The same request with `grants`.
    #[must_use]
    pub fn with_grants(mut self, grants: &'a [Grant]) -> Self {
        self.grants = grants;
        self
    }
}

/// What decided, for the audit trail and for an operator asking "why".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecidedBy {
    /// A rule matched.
    Rule {
        /// Its id.
        id: RuleId,
        /// Its position in evaluation order (0-based), for engines that have one.
        position: Option<usize>,
    },
    /// No rule matched: the default deny.
    Default,
    /// A just-in-time grant allowed what rules would have held for review or denied by
    /// default.
    Grant {
        /// The grant.
        grant: GrantId,
        /// The review rule it overrode; `None` when it widened the default deny.
        over: Option<RuleId>,
    },
    /// An exfiltration budget was used up.
    Budget(Exhaustion),
    /// The principal's credential had expired.
    CredentialExpired,
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule {
                id,
                position: Some(p),
            } => write!(f, "rule {id} (#{})", p.saturating_add(1)),
            Self::Rule { id, position: None } => write!(f, "rule {id}"),
            Self::Default => f.write_str("the default deny"),
            Self::Grant {
                grant,
                over: Some(rule),
            } => write!(f, "grant {grant} over rule {rule}"),
            Self::Grant { grant, over: None } => {
                write!(f, "grant {grant} over the default deny")
            }
            Self::Budget(ex) => write!(
                f,
                "budget {} ({:?}: {} of {} until {})",
                ex.budget, ex.resource, ex.used, ex.limit, ex.resets_at
            ),
            Self::CredentialExpired => f.write_str("an expired credential"),
        }
    }
}

/// The result of an evaluation: the decision, what decided it and why, and the policy
/// version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// The version of the policy that decided.
    pub policy_version: PolicyVersion,
    /// What decided.
    pub decided_by: DecidedBy,
    /// A sentence for humans on why `decided_by` decided (the rule, grant or budget itself
    /// is named by `decided_by`, whose `Display` gives the details). Borrowed for the common
    /// outcomes so that an evaluation allocates little.
    pub explanation: Cow<'static, str>,
}

/// Decides on commands. Evaluation is synchronous and CPU-only: no I/O and no clock reads
/// (the time is in the [`Request`]), so the hot path allocates no future per command.
///
/// The pipeline holds an engine as `Arc<dyn PolicyEngine>`; the `wirewarden-testkit`
/// conformance suite checks the behaviour it relies on.
pub trait PolicyEngine: fmt::Debug + Send + Sync {
    /// Evaluates one request.
    fn evaluate(&self, request: &Request<'_>) -> Evaluation;
}

impl<T: PolicyEngine + ?Sized> PolicyEngine for Arc<T> {
    fn evaluate(&self, request: &Request<'_>) -> Evaluation {
        (**self).evaluate(request)
    }
}

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.

    use wirewarden_core::{
        Access, AuthMethod, Command, CommandClass, ObjectKind, ObjectRef, Principal, Protocol,
        Target, Timestamp,
    };

    use crate::{PolicyEngine, Request, RuleEngine};

    /// Parses `data` as a TOML rule set; whatever loads must evaluate a handful of requests
    /// without panicking, and loading the same text twice must give the same version.
    pub fn parse_toml(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(engine) = RuleEngine::from_toml(text) else {
            return;
        };
        let again = RuleEngine::from_toml(text).expect("the same text loads twice");
        assert_eq!(engine.version(), again.version());
        let Ok(principal) = Principal::new(
            "agent-1",
            AuthMethod::External {
                mechanism: "fuzz".into(),
            },
        ) else {
            return;
        };
        let principal = principal
            .with_group("analysts")
            .with_attribute("team", "growth");
        let Ok(target) = Target::new("crm", Protocol::Postgres) else {
            return;
        };
        let now = Timestamp::from_unix_secs(1_764_150_000).unwrap_or_default();
        for class in CommandClass::ALL {
            let Ok(cmd) = Command::new(Protocol::Postgres, "SELECT", class, "select") else {
                return;
            };
            let cmd = cmd.with_object(ObjectRef::new(
                ObjectKind::Relation,
                "public.customers",
                Access::Read,
            ));
            let eval = engine.evaluate(&Request::new(&principal, &target, &cmd, now));
            if class == CommandClass::Unknown && eval.decision.is_allow() {
                // Only a rule that names `unknown` explicitly may allow it.
                assert!(
                    engine.rule_names_unknown(eval.decision.rule()),
                    "unknown allowed by {:?}",
                    eval.decided_by
                );
            }
            engine.budgets().charge(&principal, &target, 10, 1_000, now);
        }
    }
}
