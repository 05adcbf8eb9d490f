//! Streams a session opened (Redis subscriptions, PostgreSQL `LISTEN`, a streaming HTTP
//! response): the decision a stream runs under, when to take it again, and what a decision
//! taken again means for it.
//!
//! A stream's messages arrive long after the command that opened it was decided. They go
//! out under that command's decision (its mask profile), and the decision is taken again
//! when a message arrives and the last decision is older than the target's recheck interval,
//! or a grant active at that decision has expired since: a revoked grant, a spent budget or
//! a rule's hours that ended stop the stream within that interval, an expired grant at its
//! first message after the expiry.

#[cfg(any(feature = "postgres", feature = "redis"))]
use std::sync::Arc;
#[cfg(any(feature = "postgres", feature = "redis"))]
use std::time::{Duration, Instant};

#[cfg(any(feature = "postgres", feature = "redis"))]
use wirewarden_core::{Command, Principal, Target, Timestamp};
use wirewarden_core::{Decision, RuleId};
#[cfg(any(feature = "postgres", feature = "redis"))]
use wirewarden_mask::Profile;
#[cfg(any(feature = "postgres", feature = "redis"))]
use wirewarden_policy::Grant;

#[cfg(any(feature = "postgres", feature = "redis"))]
use crate::{Decided, Pipeline};

/// The decision a command that opens a stream was forwarded under.
#[derive(Debug, Clone)]
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) struct Opened {
    /// The command as policy saw it, to decide again.
    pub(crate) command: Arc<Command>,
    /// Whether a reviewer approved it: a later decision that asks for review again does
    /// not end it, the approval stands.
    pub(crate) reviewed: bool,
    /// When it was decided.
    pub(crate) decided: Instant,
    /// The earliest expiry of the grants active when it was decided.
    pub(crate) until: Option<Timestamp>,
}

#[cfg(any(feature = "postgres", feature = "redis"))]
impl Opened {
    /// A stream opened by `command` now, under a decision that saw `grants`.
    pub(crate) fn new(command: Command, grants: &[Grant]) -> Self {
        Self {
            command: Arc::new(command),
            reviewed: false,
            decided: Instant::now(),
            until: earliest_expiry(grants),
        }
    }

    /// Whether the decision must be taken again before a message at `now` goes out.
    pub(crate) fn due(&self, now: Instant, wall: Timestamp, every: Duration) -> bool {
        now.saturating_duration_since(self.decided) >= every
            || self.until.is_some_and(|u| wall >= u)
    }

    /// When the decision is next due (see [`Opened::due`]) if no message comes first: an
    /// idle stream is woken then, so that a grant's expiry or a revocation ends it on time
    /// rather than at its next message.
    pub(crate) fn due_at(&self, every: Duration) -> Instant {
        let by_age = self.decided + every;
        match self.until {
            Some(u) => {
                let wall = Timestamp::now();
                by_age.min(Instant::now() + u.saturating_duration_since(wall))
            }
            None => by_age,
        }
    }

    /// Takes in a decision taken again: the new profile to mask with (`None`: keep the one
    /// in use), or the rule and reason that refuse the stream now.
    pub(crate) fn redecided(
        &mut self,
        pipeline: &Pipeline,
        target: &Target,
        principal: &Principal,
        decided: Decided,
    ) -> Result<Option<Arc<Profile>>, (RuleId, String)> {
        let verdict = match refusal(&decided.evaluation.decision, self.reviewed) {
            Some(refused) => Err(refused),
            None => match decided.evaluation.decision {
                Decision::Allow {
                    rule, mask_profile, ..
                } => pipeline
                    .mask_profile(target, principal, mask_profile.as_deref())
                    .map(Some)
                    .map_err(|_| (rule, "the mask profile of the stream is missing".to_owned())),
                // Approved by a reviewer, and held for review again: the approval stands.
                _ => Ok(None),
            },
        };
        if verdict.is_ok() {
            self.decided = Instant::now();
            self.until = earliest_expiry(&decided.grants);
        }
        verdict
    }
}

/// Sets `timer` to fire at `at`: armed if it is not, moved if it is set for another time.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn arm(timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>, at: Instant) {
    let at = tokio::time::Instant::from_std(at);
    match timer {
        Some(t) if t.deadline() == at => {}
        Some(t) => t.as_mut().reset(at),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
}

/// Completes when `timer` fires; never when it is not armed.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) async fn wake(timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Whether a decision taken again refuses a stream already running: the rule and reason if
/// it does. An allow lets it go on, and so does a review of a stream a reviewer approved
/// (`reviewed`); a stream cannot wait for a review, so any other review refuses it.
pub(crate) fn refusal(decision: &Decision, reviewed: bool) -> Option<(RuleId, String)> {
    match decision {
        Decision::Allow { .. } => None,
        Decision::Review { .. } if reviewed => None,
        Decision::Review { rule, reason, .. } => Some((
            rule.clone(),
            format!("{reason}; a stream cannot wait for one"),
        )),
        Decision::Deny { rule, reason } => Some((rule.clone(), reason.clone())),
        _ => Some((
            RuleId::new("unsupported"),
            "unsupported decision".to_owned(),
        )),
    }
}

/// The earliest expiry among `grants`: a decision taken with them may change then.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn earliest_expiry(grants: &[Grant]) -> Option<Timestamp> {
    grants.iter().map(|g| g.expires_at).min()
}

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use std::time::Duration;
    use wirewarden_core::ReviewRequirement;

    #[test]
    fn a_stream_goes_on_under_an_allow_or_an_approval_that_stands() {
        let allow = Decision::Allow {
            rule: RuleId::new("r"),
            mask_profile: None,
        };
        assert_eq!(refusal(&allow, false), None);
        let review = Decision::Review {
            rule: RuleId::new("held"),
            reason: "needs a dba".into(),
            requirement: ReviewRequirement::one_of("dba", Duration::from_secs(60)),
        };
        assert_eq!(refusal(&review, true), None);
        assert_eq!(
            refusal(&review, false),
            Some((
                RuleId::new("held"),
                "needs a dba; a stream cannot wait for one".into()
            ))
        );
        let deny = Decision::Deny {
            rule: RuleId::new("budget:x"),
            reason: "spent".into(),
        };
        assert_eq!(
            refusal(&deny, true),
            Some((RuleId::new("budget:x"), "spent".into()))
        );
    }
}

#[cfg(all(test, any(feature = "postgres", feature = "redis")))]
mod tests {
    use super::*;
    use wirewarden_core::{CommandClass, Protocol};

    #[test]
    fn a_decision_is_due_after_the_interval_or_a_grants_expiry() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let command = Command::new(
            Protocol::Redis,
            "SUBSCRIBE",
            CommandClass::Read,
            "SUBSCRIBE a",
        )
        .unwrap();
        let mut o = Opened {
            decided: now,
            ..Opened::new(command, &[])
        };
        let second = Duration::from_secs(1);
        assert!(!o.due(now, wall, second));
        assert!(o.due(now + second, wall, second));
        o.until = Some(wall);
        assert!(o.due(now, wall, second));
        o.until = wall.checked_add(second);
        assert!(!o.due(now, wall, second));
    }

    #[test]
    fn an_idle_stream_is_woken_at_the_interval_or_a_grants_expiry() {
        let command = Command::new(
            Protocol::Redis,
            "SUBSCRIBE",
            CommandClass::Read,
            "SUBSCRIBE a",
        )
        .unwrap();
        let mut o = Opened::new(command, &[]);
        let hour = Duration::from_secs(3600);
        assert_eq!(o.due_at(hour), o.decided + hour);
        // A grant ending in a minute: woken then, long before the interval.
        o.until = Timestamp::now().checked_add(Duration::from_secs(60));
        let at = o.due_at(hour);
        let from_now = at.saturating_duration_since(Instant::now());
        assert!(from_now <= Duration::from_secs(60), "{from_now:?}");
        assert!(from_now >= Duration::from_secs(50), "{from_now:?}");
        // One already over: due now.
        o.until = Timestamp::now().checked_sub(Duration::from_secs(1));
        assert!(o.due_at(hour) <= Instant::now());
    }
}
