//! [`Reviews`]: the workflow around a [`ReviewStore`]: requesting review for a held command,
//! approving or denying it (issuing a grant when the approval asks for one), waiting, and
//! releasing the held command — returning the audit events the caller must record.

use std::sync::Arc;
use std::time::Duration;

use wirewarden_core::{
    AuditEvent, AuditEventKind, Command, CommandId, ObjectKind, Principal, ReviewId, ReviewOutcome,
    ReviewRequirement, RuleId, Target, Timestamp,
};
use wirewarden_policy::{Grant, GrantStore};

use crate::notify::{Notification, Notifier};
use crate::review::{
    ApprovalScope, Binding, DEFAULT_APPROVAL_TTL, Operation, Review, ReviewState, Reviewer, Status,
};
use crate::store::ReviewStore;
use crate::{Error, Result};

/// The result of a request for review.
#[derive(Debug)]
pub struct Requested {
    /// The stored review.
    pub review: Review,
    /// The `ReviewRequested` event to record.
    pub event: AuditEvent,
    /// Set if the notifier failed. The review exists and can be decided all the same (in the
    /// admin API, the CLI); the caller decides whether to log or fail.
    pub notify_error: Option<wirewarden_core::BoxError>,
}

/// The result of approving or denying.
#[derive(Debug)]
pub struct Resolution {
    /// The review afterwards.
    pub review: Review,
    /// Events to record: `ReviewResolved` when this call decided the review, and
    /// `GrantIssued` when the approval issued a grant.
    pub events: Vec<AuditEvent>,
    /// The grant issued by this approval, if any.
    pub grant: Option<Grant>,
    /// Set if the approval asked for a grant and issuing it failed. The review stays
    /// approved (the held command can still be released once); the grant is missing, and
    /// the caller should say so to the approver.
    pub grant_error: Option<wirewarden_policy::GrantError>,
}

/// The review workflow: a store, the grant store that approvals with
/// [`ApprovalScope::Grant`] issue grants into, and an optional notifier.
#[derive(Debug, Clone)]
pub struct Reviews {
    store: Arc<dyn ReviewStore>,
    grants: Arc<dyn GrantStore>,
    notifier: Option<Arc<dyn Notifier>>,
    approval_ttl: Duration,
}

impl Reviews {
    /// A workflow over `store` issuing grants into `grants`.
    #[must_use]
    pub fn new(store: Arc<dyn ReviewStore>, grants: Arc<dyn GrantStore>) -> Self {
        Self {
            store,
            grants,
            notifier: None,
            approval_ttl: DEFAULT_APPROVAL_TTL,
        }
    }

    /// Notifies reviewers through `notifier`.
    #[must_use]
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// How long an approval stays usable once given.
    #[must_use]
    pub fn with_approval_ttl(mut self, ttl: Duration) -> Self {
        self.approval_ttl = ttl;
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ReviewStore> {
        &self.store
    }

    /// Holds `command` for review as `requirement` says, stores it and notifies reviewers.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] or the store's errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn request(
        &self,
        principal: &Principal,
        target: &Target,
        command: &Command,
        command_id: CommandId,
        rule: RuleId,
        reason: &str,
        requirement: ReviewRequirement,
        now: Timestamp,
    ) -> Result<Requested> {
        let review = Review::new(
            command_id,
            Binding {
                digest: command.digest,
                requester: principal.subject.clone(),
                target: target.clone(),
            },
            command.text.clone(),
            command.class,
            rule,
            reason,
            requirement,
            now,
        )?
        .with_approval_ttl(self.approval_ttl)
        .with_objects(
            command
                .objects
                .iter()
                .filter(|o| {
                    matches!(
                        o.kind,
                        ObjectKind::Relation | ObjectKind::Key | ObjectKind::Path
                    )
                })
                .map(|o| o.name.clone())
                .collect(),
        );
        self.store.submit(&review).await?;
        let event = AuditEvent::new(
            None,
            AuditEventKind::ReviewRequested {
                review_id: review.id,
                command_id,
                digest: command.digest,
                requester: principal.subject.clone(),
                target: target.clone(),
                reason: review.reason.clone(),
                requirement: review.requirement.clone(),
            },
        );
        let notify_error = match &self.notifier {
            Some(n) => n.notify(&Notification::Requested(&review)).await.err(),
            None => None,
        };
        Ok(Requested {
            review,
            event,
            notify_error,
        })
    }

    /// Records an approval by `reviewer`. The approval that completes the review issues the
    /// grant if the (narrowest) scope is a grant.
    ///
    /// # Errors
    /// The errors of [`Review::apply`] or the store's errors. A failure to issue the grant
    /// is reported in [`Resolution::grant_error`], not as an error: the approval itself
    /// was recorded and its audit event must not be lost.
    pub async fn approve(
        &self,
        id: ReviewId,
        reviewer: &Reviewer,
        scope: ApprovalScope,
        now: Timestamp,
    ) -> Result<Resolution> {
        let op = Operation::Approve {
            reviewer: reviewer.clone(),
            scope,
        };
        let review = self.store.apply(id, &op, now).await?;
        let mut events = Vec::new();
        let mut grant = None;
        let mut grant_error = None;
        if review.completed_by(&reviewer.subject) {
            events.push(resolved_event(&review, ReviewOutcome::Approved));
            if let ReviewState::Approved {
                scope: ApprovalScope::Grant { secs },
                ..
            } = review.state
            {
                let issued = match Grant::new(
                    review.binding.requester.clone(),
                    review.binding.target.name.clone(),
                    review.grant_scope(),
                    now,
                    Duration::from_secs(secs),
                    review.approvers().join(","),
                ) {
                    Ok(g) => {
                        let g = g.with_reason(format!("review {}", review.id));
                        self.grants.issue(g.clone()).await.map(|event| (g, event))
                    }
                    Err(e) => Err(e),
                };
                match issued {
                    Ok((g, event)) => {
                        events.push(event);
                        grant = Some(g);
                    }
                    Err(e) => grant_error = Some(e),
                }
            }
            self.notify_resolved(&review).await;
        }
        Ok(Resolution {
            review,
            events,
            grant,
            grant_error,
        })
    }

    /// Records a denial by `reviewer`.
    ///
    /// # Errors
    /// The errors of [`Review::apply`] or the store's errors.
    pub async fn deny(
        &self,
        id: ReviewId,
        reviewer: &Reviewer,
        reason: &str,
        now: Timestamp,
    ) -> Result<Resolution> {
        let op = Operation::Deny {
            reviewer: reviewer.clone(),
            reason: reason.to_owned(),
        };
        let review = self.store.apply(id, &op, now).await?;
        let events = vec![resolved_event(&review, ReviewOutcome::Denied)];
        self.notify_resolved(&review).await;
        Ok(Resolution {
            review,
            events,
            grant: None,
            grant_error: None,
        })
    }

    /// Waits for a decision for at most `timeout` (in addition to the review's own expiry).
    ///
    /// If nobody decided in time, the review is closed in the store (so a late approval
    /// cannot release a command that is no longer held) and the `ReviewResolved` event with
    /// outcome `expired` is returned for the waiting side to record. A decision that lands
    /// while the wait gives up wins: the decided review is returned.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn wait(
        &self,
        id: ReviewId,
        timeout: Duration,
    ) -> Result<(Review, Option<AuditEvent>)> {
        let review = self.store.wait(id, timeout).await?;
        let now = Timestamp::now();
        match review.status(now) {
            Status::Pending => match self.store.apply(id, &Operation::Cancel, now).await {
                Ok(closed) => {
                    let event = resolved_event(&closed, ReviewOutcome::Expired);
                    Ok((closed, Some(event)))
                }
                Err(Error::NotPending { .. } | Error::Expired { .. }) => {
                    let latest = self.store.get(id).await?.ok_or(Error::NotFound { id })?;
                    let event = (latest.status(Timestamp::now()) == Status::Expired)
                        .then(|| resolved_event(&latest, ReviewOutcome::Expired));
                    Ok((latest, event))
                }
                Err(e) => Err(e),
            },
            Status::Expired => {
                let event = resolved_event(&review, ReviewOutcome::Expired);
                Ok((review, Some(event)))
            }
            _ => Ok((review, None)),
        }
    }

    /// Releases the held command: checks that it is the exact command, requester and target
    /// the approval is bound to, and uses the approval up.
    ///
    /// # Errors
    /// [`Error::BindingMismatch`], [`Error::Expired`], [`Error::NotPending`] (not approved,
    /// or already used), or the store's errors.
    pub async fn release(
        &self,
        id: ReviewId,
        principal: &Principal,
        target: &Target,
        command: &Command,
        now: Timestamp,
    ) -> Result<Review> {
        let binding = Binding {
            digest: command.digest,
            requester: principal.subject.clone(),
            target: target.clone(),
        };
        self.store
            .apply(id, &Operation::Consume { binding }, now)
            .await
    }

    /// Cancels a pending review (the requester went away) and returns the `ReviewResolved`
    /// event.
    ///
    /// # Errors
    /// [`Error::NotPending`] or the store's errors.
    pub async fn cancel(&self, id: ReviewId, now: Timestamp) -> Result<(Review, AuditEvent)> {
        let review = self.store.apply(id, &Operation::Cancel, now).await?;
        let event = resolved_event(&review, ReviewOutcome::Cancelled);
        Ok((review, event))
    }

    async fn notify_resolved(&self, review: &Review) {
        if let Some(n) = &self.notifier {
            // A failed "it was decided" message loses nothing: the decision is stored and
            // audited; only the courtesy message is missing.
            let _ = n.notify(&Notification::Resolved(review)).await;
        }
    }
}

fn resolved_event(review: &Review, outcome: ReviewOutcome) -> AuditEvent {
    let denied_by = match &review.state {
        ReviewState::Denied { by, .. } => Some(by.clone()),
        _ => None,
    };
    AuditEvent::new(
        None,
        AuditEventKind::ReviewResolved {
            review_id: review.id,
            outcome,
            approvers: review.approvers(),
            denied_by,
        },
    )
}
