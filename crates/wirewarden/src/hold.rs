//! Holding a command for human review: one flow for every protocol.
//!
//! A proxy whose policy answered [`Decision::Review`](wirewarden_core::Decision::Review)
//! calls [`Pipeline::request_review`] (the review is opened and its request recorded in the
//! audit trail), may tell its client that the command is held (PostgreSQL sends a
//! `NoticeResponse`), and then [`Pipeline::await_review`]: the review's resolution is
//! recorded, and the command may run only if it was approved and the approval is released
//! for exactly this command, requester and target. Everything else is a [`ReviewRefusal`],
//! which each protocol turns into its own error reply.

use std::fmt;
use std::time::Duration;

use wirewarden_core::{
    Command, CommandId, Principal, ReviewId, ReviewRequirement, RuleId, SessionId, Target,
    Timestamp,
};
use wirewarden_review::Status;

use crate::Pipeline;

/// The command being held, and whose it is.
#[derive(Debug, Clone, Copy)]
pub struct HeldCommand<'a> {
    /// Who asked.
    pub principal: &'a Principal,
    /// Where it would go.
    pub target: &'a Target,
    /// The session it belongs to (its audit events carry it).
    pub session: SessionId,
    /// The command; an approval binds to its digest.
    pub command: &'a Command,
    /// Its id in the audit trail.
    pub command_id: CommandId,
}

/// A review that is open and on record; the command waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingReview {
    /// The review, as reviewers see it.
    pub id: ReviewId,
    /// How long the command will wait: the rule's timeout, capped by the pipeline's
    /// [`max_review_wait`](Pipeline::max_review_wait).
    pub timeout: Duration,
}

/// Why a held command does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReviewRefusal {
    /// The review store could not open the review.
    Unavailable(String),
    /// The review could not be recorded in the audit trail.
    AuditUnavailable,
    /// Waiting for the review failed.
    Failed {
        /// The review.
        review: ReviewId,
        /// What went wrong.
        reason: String,
    },
    /// The review was approved, but the approval cannot be used for this command (it binds
    /// to another command, requester or target, was used already, or expired).
    NotUsable {
        /// The review.
        review: ReviewId,
        /// Why.
        reason: String,
    },
    /// A reviewer denied it.
    Denied {
        /// The review.
        review: ReviewId,
    },
    /// Nobody approved it in time.
    TimedOut {
        /// The review.
        review: ReviewId,
        /// How long the command waited.
        waited: Duration,
    },
}

impl fmt::Display for ReviewRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "review is unavailable: {e}"),
            Self::AuditUnavailable => f.write_str("the audit trail is unavailable"),
            Self::Failed { review, reason } => write!(f, "review {review} failed: {reason}"),
            Self::NotUsable { review, reason } => {
                write!(f, "approval of review {review} cannot be used: {reason}")
            }
            Self::Denied { review } => write!(f, "review {review} was denied"),
            Self::TimedOut { review, waited } => write!(
                f,
                "review {review} was not approved within {}s",
                waited.as_secs()
            ),
        }
    }
}

impl std::error::Error for ReviewRefusal {}

impl Pipeline {
    /// Opens a review for `held` and records the request. The caller may then tell its
    /// client the command is held, and must call [`await_review`](Self::await_review).
    ///
    /// # Errors
    /// [`ReviewRefusal::Unavailable`] when the review store refuses,
    /// [`ReviewRefusal::AuditUnavailable`] when the request cannot be recorded (the command
    /// must not run: nothing would show it was ever asked for).
    pub async fn request_review(
        &self,
        held: &HeldCommand<'_>,
        rule: RuleId,
        reason: &str,
        requirement: ReviewRequirement,
    ) -> Result<PendingReview, ReviewRefusal> {
        let timeout = requirement.timeout.min(self.max_review_wait());
        let requested = self
            .reviews()
            .request(
                held.principal,
                held.target,
                held.command,
                held.command_id,
                rule,
                reason,
                requirement,
                Timestamp::now(),
            )
            .await
            .map_err(|e| ReviewRefusal::Unavailable(e.to_string()))?;
        let mut event = requested.event;
        event.session = Some(held.session);
        if self.record(&event).await.is_err() {
            return Err(ReviewRefusal::AuditUnavailable);
        }
        Ok(PendingReview {
            id: requested.review.id,
            timeout,
        })
    }

    /// Waits for `pending` to be resolved, records the resolution, and releases an
    /// approval for exactly `held` (its digest, requester and target). `Ok` means the
    /// command may run, once.
    ///
    /// If the wait is dropped before the review is resolved (the client went away, or its
    /// session was ended), the review is cancelled and the cancellation recorded, on a task
    /// of its own: nobody is asked to approve a command no one waits for any more.
    ///
    /// # Errors
    /// A [`ReviewRefusal`] for every outcome but a usable approval.
    pub async fn await_review(
        &self,
        held: &HeldCommand<'_>,
        pending: PendingReview,
    ) -> Result<(), ReviewRefusal> {
        let reviews = self.reviews();
        let id = pending.id;
        let mut abandoned = CancelOnDrop {
            armed: true,
            reviews: reviews.clone(),
            sink: self.audit_sink().clone(),
            id,
            session: held.session,
        };
        let waited = reviews.wait(id, pending.timeout).await;
        abandoned.armed = false;
        let review = match waited {
            Ok((review, event)) => {
                if let Some(mut e) = event {
                    e.session = Some(held.session);
                    // The expiry, which only the waiting side sees. The command does not
                    // run either way, so a failure to record it refuses nothing more.
                    let _ = self.record(&e).await;
                }
                review
            }
            Err(e) => {
                return Err(ReviewRefusal::Failed {
                    review: id,
                    reason: e.to_string(),
                });
            }
        };
        match review.status(Timestamp::now()) {
            Status::Approved => reviews
                .release(
                    id,
                    held.principal,
                    held.target,
                    held.command,
                    Timestamp::now(),
                )
                .await
                .map(|_| ())
                .map_err(|e| ReviewRefusal::NotUsable {
                    review: id,
                    reason: e.to_string(),
                }),
            Status::Denied => Err(ReviewRefusal::Denied { review: id }),
            Status::Consumed => Err(ReviewRefusal::NotUsable {
                review: id,
                reason: "its approval was used already".into(),
            }),
            Status::Cancelled => Err(ReviewRefusal::Failed {
                review: id,
                reason: "the review was cancelled".into(),
            }),
            _ => Err(ReviewRefusal::TimedOut {
                review: id,
                waited: pending.timeout,
            }),
        }
    }
}

/// Cancels a review whose wait was dropped before it was resolved, and records that.
struct CancelOnDrop {
    armed: bool,
    reviews: wirewarden_review::Reviews,
    sink: std::sync::Arc<dyn wirewarden_audit::AuditSink>,
    id: ReviewId,
    session: SessionId,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (reviews, sink, id, session) = (
            self.reviews.clone(),
            self.sink.clone(),
            self.id,
            self.session,
        );
        runtime.spawn(async move {
            // A review resolved meanwhile is no longer pending: nothing to cancel.
            if let Ok((_, mut event)) = reviews.cancel(id, Timestamp::now()).await {
                event.session = Some(session);
                let _ = sink.append(&event).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use wirewarden_audit::{Appended, AuditSink, Durability};
    use wirewarden_core::{
        AuditEvent, AuditEventKind, AuthMethod, BoxError, CommandClass, Protocol, ReviewOutcome,
    };
    use wirewarden_identity::{StaticTokens, StaticTokensConfig};
    use wirewarden_policy::RuleEngine;
    use wirewarden_review::{ApprovalScope, Reviewer};

    use super::*;

    /// Keeps what it is given; refuses review requests when told to.
    #[derive(Debug, Default)]
    struct Trail {
        events: Mutex<Vec<AuditEvent>>,
        refuse_requests: bool,
    }

    #[async_trait]
    impl AuditSink for Trail {
        async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
            if self.refuse_requests && matches!(event.kind, AuditEventKind::ReviewRequested { .. })
            {
                return Err("disk full".into());
            }
            self.events.lock().unwrap().push(event.clone());
            Ok(Appended::unordered())
        }

        async fn flush(&self) -> Result<(), BoxError> {
            Ok(())
        }

        fn durability(&self) -> Durability {
            Durability::Fsync
        }
    }

    struct Fixture {
        pipeline: Pipeline,
        trail: Arc<Trail>,
        principal: Principal,
        target: Target,
        command: Command,
        session: SessionId,
    }

    fn fixture(refuse_requests: bool) -> Fixture {
        let trail = Arc::new(Trail {
            refuse_requests,
            ..Trail::default()
        });
        let identity = StaticTokens::new(StaticTokensConfig {
            hash_key: None,
            tokens: Vec::new(),
        })
        .unwrap();
        let pipeline = Pipeline::builder(
            Arc::new(identity),
            Arc::new(RuleEngine::from_toml("").unwrap()),
        )
        .max_review_wait(Duration::from_secs(30))
        .audit(trail.clone())
        .build()
        .unwrap();
        let principal = Principal::new(
            "agent-1",
            AuthMethod::External {
                mechanism: "test".into(),
            },
        )
        .unwrap();
        Fixture {
            pipeline,
            trail,
            principal,
            target: Target::new("crm", Protocol::Postgres).unwrap(),
            command: Command::new(
                Protocol::Postgres,
                "DELETE",
                CommandClass::Write,
                "DELETE FROM orders",
            )
            .unwrap(),
            session: SessionId::new(),
        }
    }

    impl Fixture {
        fn held(&self) -> HeldCommand<'_> {
            HeldCommand {
                principal: &self.principal,
                target: &self.target,
                session: self.session,
                command: &self.command,
                command_id: CommandId::new(),
            }
        }

        async fn request(&self, held: &HeldCommand<'_>, timeout: Duration) -> PendingReview {
            self.pipeline
                .request_review(
                    held,
                    RuleId::new("writes-reviewed"),
                    "writes need a DBA",
                    ReviewRequirement::one_of("dba", timeout),
                )
                .await
                .unwrap()
        }

        fn kinds(&self) -> Vec<&'static str> {
            self.trail
                .events
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.kind.name())
                .collect()
        }
    }

    fn dba() -> Reviewer {
        Reviewer::new("dba-1").with_group("dba")
    }

    #[tokio::test]
    async fn an_approved_command_runs_once() {
        let f = fixture(false);
        let held = f.held();
        let pending = f.request(&held, Duration::from_secs(10)).await;
        f.pipeline
            .reviews()
            .approve(pending.id, &dba(), ApprovalScope::Once, Timestamp::now())
            .await
            .unwrap();
        f.pipeline.await_review(&held, pending).await.unwrap();
        // The approval is used up: a second wait on it cannot release the command again.
        let again = f.pipeline.await_review(&held, pending).await.unwrap_err();
        assert!(matches!(again, ReviewRefusal::NotUsable { .. }), "{again}");
        let events = f.trail.events.lock().unwrap();
        let requested = events
            .iter()
            .find(|e| matches!(e.kind, AuditEventKind::ReviewRequested { .. }))
            .expect("the request is on record");
        assert_eq!(requested.session, Some(f.session));
    }

    #[tokio::test]
    async fn an_approval_binds_to_the_exact_command() {
        let f = fixture(false);
        let held = f.held();
        let pending = f.request(&held, Duration::from_secs(10)).await;
        f.pipeline
            .reviews()
            .approve(pending.id, &dba(), ApprovalScope::Once, Timestamp::now())
            .await
            .unwrap();
        let other = Command::new(
            Protocol::Postgres,
            "DELETE",
            CommandClass::Write,
            "DELETE FROM customers",
        )
        .unwrap();
        let swapped = HeldCommand {
            command: &other,
            ..held
        };
        let e = f
            .pipeline
            .await_review(&swapped, pending)
            .await
            .unwrap_err();
        assert!(matches!(e, ReviewRefusal::NotUsable { review, .. } if review == pending.id));
        assert!(e.to_string().contains("cannot be used"), "{e}");
    }

    #[tokio::test]
    async fn a_denied_command_does_not_run() {
        let f = fixture(false);
        let held = f.held();
        let pending = f.request(&held, Duration::from_secs(10)).await;
        f.pipeline
            .reviews()
            .deny(pending.id, &dba(), "not today", Timestamp::now())
            .await
            .unwrap();
        let e = f.pipeline.await_review(&held, pending).await.unwrap_err();
        assert_eq!(e, ReviewRefusal::Denied { review: pending.id });
        assert_eq!(e.to_string(), format!("review {} was denied", pending.id));
        // The wait ended with the review resolved: nothing to cancel.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let events = f.trail.events.lock().unwrap();
        assert!(!events.iter().any(|e| matches!(
            &e.kind,
            AuditEventKind::ReviewResolved {
                outcome: ReviewOutcome::Cancelled,
                ..
            }
        )));
    }

    #[tokio::test]
    async fn nobody_approving_in_time_expires_the_review_on_record() {
        let f = fixture(false);
        let held = f.held();
        let pending = f.request(&held, Duration::from_millis(50)).await;
        assert_eq!(pending.timeout, Duration::from_millis(50));
        let e = f.pipeline.await_review(&held, pending).await.unwrap_err();
        assert!(matches!(e, ReviewRefusal::TimedOut { review, .. } if review == pending.id));
        let events = f.trail.events.lock().unwrap();
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            AuditEventKind::ReviewResolved {
                outcome: ReviewOutcome::Expired,
                ..
            }
        ) && e.session == Some(f.session)));
    }

    #[tokio::test]
    async fn a_wait_given_up_cancels_the_review_on_record() {
        let f = fixture(false);
        let held = f.held();
        let pending = f.request(&held, Duration::from_secs(10)).await;
        // The client goes away while its command waits: the wait is dropped.
        let waited = tokio::time::timeout(
            Duration::from_millis(20),
            f.pipeline.await_review(&held, pending),
        )
        .await;
        assert!(waited.is_err());
        let cancelled = || {
            f.trail.events.lock().unwrap().iter().any(|e| {
                matches!(
                    &e.kind,
                    AuditEventKind::ReviewResolved {
                        outcome: ReviewOutcome::Cancelled,
                        review_id,
                        ..
                    } if *review_id == pending.id
                ) && e.session == Some(f.session)
            })
        };
        for _ in 0..500 {
            if cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cancelled(), "{:?}", f.kinds());
        // A reviewer can no longer approve it.
        let late = f
            .pipeline
            .reviews()
            .approve(pending.id, &dba(), ApprovalScope::Once, Timestamp::now())
            .await;
        assert!(late.is_err());
    }

    #[tokio::test]
    async fn the_wait_is_capped_by_the_pipeline() {
        let f = fixture(false);
        let pending = f.request(&f.held(), Duration::from_secs(86_400)).await;
        assert_eq!(pending.timeout, Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_recorded_is_refused() {
        let f = fixture(true);
        let e = f
            .pipeline
            .request_review(
                &f.held(),
                RuleId::new("writes-reviewed"),
                "writes need a DBA",
                ReviewRequirement::one_of("dba", Duration::from_secs(10)),
            )
            .await
            .unwrap_err();
        assert_eq!(e, ReviewRefusal::AuditUnavailable);
        assert!(f.kinds().is_empty(), "{:?}", f.kinds());
    }
}
