//! The review model and its state machine.
//!
//! Every rule about approvals lives here, in pure functions over a [`Review`], so that every
//! store (in memory, PostgreSQL, or an implementor's own) enforces exactly the same rules: a
//! store loads the review, calls [`Review::apply`] inside its transaction, and saves the result.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wirewarden_core::{
    CommandClass, CommandDigest, CommandId, Principal, ReviewId, ReviewRequirement, RuleId, Target,
    Timestamp,
};

use crate::{Error, Result};

/// The longest grant an approval may issue.
pub const MAX_GRANT: Duration = Duration::from_secs(24 * 3600);

/// How long an approval stays usable after the review is approved, unless set otherwise.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(5 * 60);

/// Someone acting on a review: their subject and groups, taken from their verified
/// [`Principal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewer {
    /// The reviewer's subject.
    pub subject: String,
    /// The reviewer's groups.
    pub groups: BTreeSet<String>,
}

impl Reviewer {
    /// A reviewer with no groups.
    #[must_use]
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            groups: BTreeSet::new(),
        }
    }

    /// Adds a group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.groups.insert(group.into());
        self
    }
}

impl From<&Principal> for Reviewer {
    fn from(p: &Principal) -> Self {
        Self {
            subject: p.subject.clone(),
            groups: p.groups.clone(),
        }
    }
}

/// What an approval covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApprovalScope {
    /// Exactly this command, once: consumed when the held command runs.
    Once,
    /// A just-in-time grant for the requester on the target, for commands up to the reviewed
    /// command's class, lasting this long (at most [`MAX_GRANT`]).
    Grant {
        /// How long the grant lasts, in seconds.
        secs: u64,
    },
}

impl ApprovalScope {
    /// A grant scope of `duration` (whole seconds).
    #[must_use]
    pub fn grant(duration: Duration) -> Self {
        Self::Grant {
            secs: duration.as_secs(),
        }
    }

    /// The narrower of two scopes: `Once` is narrower than any grant; a shorter grant is
    /// narrower than a longer one.
    #[must_use]
    pub fn narrowest(self, other: Self) -> Self {
        match (self, other) {
            (Self::Grant { secs: a }, Self::Grant { secs: b }) => Self::Grant { secs: a.min(b) },
            _ => Self::Once,
        }
    }
}

impl fmt::Display for ApprovalScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Once => f.write_str("this command once"),
            Self::Grant { secs } => write!(f, "a grant for {} minutes", secs.div_ceil(60)),
        }
    }
}

/// One recorded approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub approver: String,
    /// When.
    pub at: Timestamp,
    /// What they approved.
    pub scope: ApprovalScope,
}

/// The stored state of a review. What it means at a given time is [`Review::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReviewState {
    /// Waiting for approvals.
    Pending,
    /// Enough approvals; usable until `until`.
    Approved {
        /// The narrowest scope among the approvals.
        scope: ApprovalScope,
        /// When the approval stops being usable.
        until: Timestamp,
    },
    /// A reviewer said no.
    Denied {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// The requester went away.
    Cancelled,
    /// The approved command ran.
    Consumed {
        /// When.
        at: Timestamp,
    },
}

/// What a review means at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Waiting for approvals.
    Pending,
    /// Approved and still usable.
    Approved,
    /// Denied.
    Denied,
    /// Nobody decided in time, or the approval was not used in time.
    Expired,
    /// Cancelled by the requester.
    Cancelled,
    /// Approved and used.
    Consumed,
}

impl Status {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Consumed => "consumed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a held command is bound to: an approval can only release the exact same command
/// (its digest) from the same requester to the same target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The digest of exactly what was sent.
    pub digest: CommandDigest,
    /// The requester's subject.
    pub requester: String,
    /// The target.
    pub target: Target,
}

/// A command held for human review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The review's id.
    pub id: ReviewId,
    /// The held command's id (links to its `CommandDecided` audit event).
    pub command_id: CommandId,
    /// What the review is bound to.
    pub binding: Binding,
    /// The command's text, for reviewers.
    pub command_text: String,
    /// The command's class (the class a grant issued on approval allows at most).
    pub class: CommandClass,
    /// The names of the relations, keys and paths the command touches: a grant issued on
    /// approval covers these and no others (see [`Review::grant_scope`]).
    #[serde(default)]
    pub objects: Vec<String>,
    /// The rule that asked for review.
    pub rule: RuleId,
    /// Why review is needed.
    pub reason: String,
    /// Who must approve.
    pub requirement: ReviewRequirement,
    /// When it was requested.
    pub created_at: Timestamp,
    /// When it expires if nobody decides.
    pub expires_at: Timestamp,
    /// How long an approval stays usable, in seconds.
    pub approval_ttl_secs: u64,
    /// The approvals so far, in order.
    pub approvals: Vec<Approval>,
    /// The stored state.
    pub state: ReviewState,
}

/// A change to a review. Stores apply it with [`Review::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// A reviewer approves with a scope.
    Approve {
        /// Who.
        reviewer: Reviewer,
        /// What they approve.
        scope: ApprovalScope,
    },
    /// A reviewer denies.
    Deny {
        /// Who.
        reviewer: Reviewer,
        /// Why.
        reason: String,
    },
    /// The requester gives up.
    Cancel,
    /// The held command runs under the approval: checks the binding and uses it up.
    Consume {
        /// What is about to run.
        binding: Binding,
    },
}

impl Review {
    /// A new pending review of `command` held at `now`, expiring after the requirement's
    /// timeout.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for zero approvals, a zero or overflowing timeout, or an empty
    /// requester.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command_id: CommandId,
        binding: Binding,
        command_text: impl Into<String>,
        class: CommandClass,
        rule: RuleId,
        reason: impl Into<String>,
        requirement: ReviewRequirement,
        now: Timestamp,
    ) -> Result<Self> {
        if requirement.min_approvals == 0 {
            return Err(Error::InvalidRequest {
                reason: "at least one approval must be required",
            });
        }
        if binding.requester.is_empty() {
            return Err(Error::InvalidRequest {
                reason: "empty requester",
            });
        }
        if requirement.timeout.is_zero() {
            return Err(Error::InvalidRequest {
                reason: "zero timeout",
            });
        }
        let expires_at = now
            .checked_add(requirement.timeout)
            .ok_or(Error::InvalidRequest {
                reason: "timeout out of range",
            })?;
        Ok(Self {
            id: ReviewId::new(),
            command_id,
            binding,
            command_text: command_text.into(),
            class,
            objects: Vec::new(),
            rule,
            reason: reason.into(),
            requirement,
            created_at: now,
            expires_at,
            approval_ttl_secs: DEFAULT_APPROVAL_TTL.as_secs(),
            approvals: Vec::new(),
            state: ReviewState::Pending,
        })
    }

    /// Sets how long an approval stays usable.
    #[must_use]
    pub fn with_approval_ttl(mut self, ttl: Duration) -> Self {
        self.approval_ttl_secs = ttl.as_secs().max(1);
        self
    }

    /// Sets the names of the relations, keys and paths the held command touches, which
    /// bound the grant an approval may issue.
    #[must_use]
    pub fn with_objects(mut self, objects: Vec<String>) -> Self {
        self.objects = objects;
        self
    }

    /// What a grant issued on approving this review covers: commands up to the held
    /// command's class, on the objects it touches. A reviewer saw one command; the grant
    /// lets its requester run commands like it without asking again, not any command of
    /// that class on the target. A command that touched no object yields a grant for
    /// commands that touch none (its scope's one glob is empty, which matches no name).
    /// Object names are taken as globs: a name with `*` or `?` (a relation the command may
    /// reach through a function, written `*`) covers what it matches.
    #[must_use]
    pub fn grant_scope(&self) -> wirewarden_policy::GrantScope {
        let scope = wirewarden_policy::GrantScope::up_to(self.class);
        if self.objects.is_empty() {
            return scope.on("");
        }
        self.objects.iter().fold(scope, |s, o| s.on(o.clone()))
    }

    /// What the review means at `now`.
    #[must_use]
    pub fn status(&self, now: Timestamp) -> Status {
        match &self.state {
            ReviewState::Pending if now >= self.expires_at => Status::Expired,
            ReviewState::Pending => Status::Pending,
            ReviewState::Approved { until, .. } if now >= *until => Status::Expired,
            ReviewState::Approved { .. } => Status::Approved,
            ReviewState::Denied { .. } => Status::Denied,
            ReviewState::Cancelled => Status::Cancelled,
            ReviewState::Consumed { .. } => Status::Consumed,
        }
    }

    /// The subjects who approved, in order.
    #[must_use]
    pub fn approvers(&self) -> Vec<String> {
        self.approvals.iter().map(|a| a.approver.clone()).collect()
    }

    fn not_pending(&self, now: Timestamp) -> Error {
        match self.status(now) {
            Status::Expired => Error::Expired { id: self.id },
            status => Error::NotPending {
                id: self.id,
                status,
            },
        }
    }

    fn check_reviewer(&self, reviewer: &Reviewer) -> Result<()> {
        if reviewer.subject.is_empty() {
            return Err(Error::InvalidRequest {
                reason: "empty reviewer subject",
            });
        }
        if reviewer.subject == self.binding.requester {
            return Err(Error::SelfReview {
                subject: reviewer.subject.clone(),
            });
        }
        let groups = &self.requirement.reviewer_groups;
        if !groups.is_empty() && !groups.iter().any(|g| reviewer.groups.contains(g)) {
            return Err(Error::NotAReviewer {
                subject: reviewer.subject.clone(),
                groups: groups.clone(),
            });
        }
        Ok(())
    }

    /// Applies `op` at `now`. On error the review is unchanged.
    ///
    /// # Errors
    /// - approve/deny: [`Error::Expired`] or [`Error::NotPending`] unless pending;
    ///   [`Error::SelfReview`] if the reviewer is the requester; [`Error::NotAReviewer`] if
    ///   reviewer groups are set and the reviewer is in none; [`Error::AlreadyApproved`] for a
    ///   second approval by the same subject; [`Error::InvalidScope`] for a grant of zero
    ///   length, longer than [`MAX_GRANT`], or for a command of class `unknown`.
    /// - cancel: [`Error::NotPending`] unless pending.
    /// - consume: [`Error::Expired`] or [`Error::NotPending`] unless approved and usable;
    ///   [`Error::BindingMismatch`] if digest, requester or target differ.
    pub fn apply(&mut self, op: &Operation, now: Timestamp) -> Result<()> {
        match op {
            Operation::Approve { reviewer, scope } => {
                if self.status(now) != Status::Pending {
                    return Err(self.not_pending(now));
                }
                self.check_reviewer(reviewer)?;
                if let ApprovalScope::Grant { secs } = scope {
                    if *secs == 0 || *secs > MAX_GRANT.as_secs() {
                        return Err(Error::InvalidScope {
                            reason: "a grant lasts between 1 second and 24 hours",
                        });
                    }
                    if self.class == CommandClass::Unknown {
                        return Err(Error::InvalidScope {
                            reason: "a command of class unknown can only be approved once",
                        });
                    }
                }
                if self
                    .approvals
                    .iter()
                    .any(|a| a.approver == reviewer.subject)
                {
                    return Err(Error::AlreadyApproved {
                        subject: reviewer.subject.clone(),
                    });
                }
                self.approvals.push(Approval {
                    approver: reviewer.subject.clone(),
                    at: now,
                    scope: *scope,
                });
                if self.approvals.len() >= self.requirement.min_approvals as usize {
                    let scope = self
                        .approvals
                        .iter()
                        .map(|a| a.scope)
                        .reduce(ApprovalScope::narrowest)
                        .unwrap_or(ApprovalScope::Once);
                    self.state = ReviewState::Approved {
                        scope,
                        until: now.saturating_add(Duration::from_secs(self.approval_ttl_secs)),
                    };
                }
                Ok(())
            }
            Operation::Deny { reviewer, reason } => {
                if self.status(now) != Status::Pending {
                    return Err(self.not_pending(now));
                }
                self.check_reviewer(reviewer)?;
                self.state = ReviewState::Denied {
                    by: reviewer.subject.clone(),
                    reason: reason.clone(),
                };
                Ok(())
            }
            Operation::Cancel => {
                if self.status(now) != Status::Pending {
                    return Err(self.not_pending(now));
                }
                self.state = ReviewState::Cancelled;
                Ok(())
            }
            Operation::Consume { binding } => {
                if self.status(now) != Status::Approved {
                    return Err(self.not_pending(now));
                }
                let what = if binding.digest != self.binding.digest {
                    Some("command digest")
                } else if binding.requester != self.binding.requester {
                    Some("requester")
                } else if binding.target != self.binding.target {
                    Some("target")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(Error::BindingMismatch { id: self.id, what });
                }
                self.state = ReviewState::Consumed { at: now };
                Ok(())
            }
        }
    }

    /// Whether `op`, just applied by `reviewer`, is the approval that completed the review
    /// (exactly one approval does, so exactly one caller issues the grant).
    #[must_use]
    pub fn completed_by(&self, reviewer: &str) -> bool {
        matches!(self.state, ReviewState::Approved { .. })
            && self.approvals.len() == self.requirement.min_approvals as usize
            && self
                .approvals
                .last()
                .is_some_and(|a| a.approver == reviewer)
    }
}

#[cfg(test)]
mod tests {
    use wirewarden_core::Protocol;

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(secs).unwrap()
    }

    fn review(min: u32) -> Review {
        Review::new(
            CommandId::new(),
            Binding {
                digest: CommandDigest::compute(Protocol::Redis, b"FLUSHALL", []),
                requester: "agent".into(),
                target: Target::new("cache", Protocol::Redis).unwrap(),
            },
            "FLUSHALL",
            CommandClass::Admin,
            RuleId::new("r"),
            "why",
            ReviewRequirement {
                reviewer_groups: vec![],
                min_approvals: min,
                timeout: Duration::from_secs(60),
            },
            at(1_000),
        )
        .unwrap()
        .with_approval_ttl(Duration::from_secs(10))
    }

    #[test]
    fn a_grant_covers_what_the_held_command_touched_and_no_more() {
        use wirewarden_core::{Access, Command, ObjectKind, ObjectRef};
        let cmd = |text: &str, keys: &[&str]| {
            keys.iter().fold(
                Command::new(Protocol::Redis, "DEL", CommandClass::Write, text).unwrap(),
                |c, k| c.with_object(ObjectRef::new(ObjectKind::Key, *k, Access::Write)),
            )
        };
        let mut r = review(1);
        r.class = CommandClass::Write;
        // Nothing touched: commands that touch nothing, none that touch a key.
        let scope = r.grant_scope();
        assert!(scope.covers(&cmd("PING", &[])));
        assert!(!scope.covers(&cmd("DEL a", &["a"])));
        assert_eq!(scope.to_string(), "write on \"\"");
        let r = r.with_objects(vec!["session:1".into(), "session:2".into()]);
        let scope = r.grant_scope();
        assert!(scope.covers(&cmd("DEL session:2", &["session:2"])));
        assert!(!scope.covers(&cmd("DEL session:3", &["session:3"])));
        assert!(!scope.covers(&cmd("DEL session:1 other", &["session:1", "other"])));
        // Never beyond the held command's class.
        let admin =
            Command::new(Protocol::Redis, "FLUSHALL", CommandClass::Admin, "FLUSHALL").unwrap();
        assert!(!scope.covers(&admin));
    }

    fn approve(who: &str, scope: ApprovalScope) -> Operation {
        Operation::Approve {
            reviewer: Reviewer::new(who),
            scope,
        }
    }

    #[test]
    fn narrowest_scope() {
        let g = |s| ApprovalScope::Grant { secs: s };
        assert_eq!(g(60).narrowest(g(30)), g(30));
        assert_eq!(g(60).narrowest(ApprovalScope::Once), ApprovalScope::Once);
        assert_eq!(ApprovalScope::Once.narrowest(g(1)), ApprovalScope::Once);
        assert_eq!(g(90).to_string(), "a grant for 2 minutes");
    }

    #[test]
    fn status_follows_time() {
        let mut r = review(1);
        assert_eq!(r.status(at(1_059)), Status::Pending);
        assert_eq!(r.status(at(1_060)), Status::Expired);
        r.apply(&approve("alice", ApprovalScope::Once), at(1_050))
            .unwrap();
        assert!(r.completed_by("alice"));
        // The approval outlives the review's own deadline by its TTL, then expires.
        assert_eq!(r.status(at(1_059)), Status::Approved);
        assert_eq!(r.status(at(1_060)), Status::Expired);
    }

    #[test]
    fn rejected_operations_leave_the_review_unchanged() {
        let mut r = review(2);
        let before = r.clone();
        assert!(matches!(
            r.apply(&approve("agent", ApprovalScope::Once), at(1_001)),
            Err(Error::SelfReview { .. })
        ));
        assert!(matches!(
            r.apply(
                &approve("alice", ApprovalScope::Grant { secs: 0 }),
                at(1_001)
            ),
            Err(Error::InvalidScope { .. })
        ));
        assert!(matches!(
            r.apply(
                &approve("alice", ApprovalScope::Grant { secs: 86_401 }),
                at(1_001)
            ),
            Err(Error::InvalidScope { .. })
        ));
        assert!(matches!(
            r.apply(
                &Operation::Consume {
                    binding: r.binding.clone()
                },
                at(1_001)
            ),
            Err(Error::NotPending { .. })
        ));
        assert_eq!(r, before);
        r.apply(&approve("alice", ApprovalScope::Once), at(1_001))
            .unwrap();
        assert!(!r.completed_by("alice"), "one of two approvals");
        r.apply(&approve("bob", ApprovalScope::Once), at(1_002))
            .unwrap();
        assert!(r.completed_by("bob"));
        assert!(!r.completed_by("alice"));
    }

    #[test]
    fn invalid_requests() {
        let b = review(1).binding;
        let req = |min, secs| ReviewRequirement {
            reviewer_groups: vec![],
            min_approvals: min,
            timeout: Duration::from_secs(secs),
        };
        let make = |requirement| {
            Review::new(
                CommandId::new(),
                b.clone(),
                "x",
                CommandClass::Write,
                RuleId::new("r"),
                "why",
                requirement,
                at(0),
            )
        };
        assert!(matches!(
            make(req(0, 60)),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(matches!(make(req(1, 0)), Err(Error::InvalidRequest { .. })));
        assert!(make(req(1, 60)).is_ok());
    }
}
