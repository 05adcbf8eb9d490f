#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::time::Duration;

use wirewarden_policy::wirewarden_core::{CommandClass, Decision, ReviewRequirement, RuleId};
use wirewarden_policy::{DecidedBy, Evaluation, PolicyEngine, PolicyVersion, Request};

const SECS_PER_DAY: i64 = 86_400;

/// Read-only access for one group during office hours (Monday to Friday, 09:00–17:00 UTC);
/// writes in office hours go to review by the `leads` group; everything else is denied.
#[derive(Debug, Clone)]
pub struct OfficeHours {
    group: String,
    version: PolicyVersion,
}

impl OfficeHours {
    /// The policy for members of `group`.
    #[must_use]
    pub fn new(group: impl Into<String>) -> Self {
        let group = group.into();
        // The version names the code and its one parameter: a different group is a
        // different policy.
        let version = PolicyVersion::new(format!("office-hours/1 group={group}"));
        Self { group, version }
    }

    fn eval(&self, decision: Decision, why: &'static str) -> Evaluation {
        Evaluation {
            decided_by: DecidedBy::Rule {
                id: decision.rule().clone(),
                position: None,
            },
            decision,
            policy_version: self.version.clone(),
            explanation: why.into(),
        }
    }
}

/// Whether `secs` since the epoch fall on a weekday between 09:00 and 17:00 UTC.
fn in_office_hours(secs: i64) -> bool {
    let days = secs.div_euclid(SECS_PER_DAY);
    // 1970-01-01 was a Thursday; 0 = Monday.
    let weekday = (days + 3).rem_euclid(7);
    let hour = secs.rem_euclid(SECS_PER_DAY) / 3_600;
    weekday < 5 && (9..17).contains(&hour)
}

impl PolicyEngine for OfficeHours {
    fn evaluate(&self, req: &Request<'_>) -> Evaluation {
        let deny = |rule: &str, reason: &str| Decision::Deny {
            rule: RuleId::new(rule),
            reason: reason.to_owned(),
        };
        if req.principal.is_expired_at(req.now) {
            return self.eval(
                deny("expired", "credential expired"),
                "the credential expired",
            );
        }
        if !req.principal.in_group(&self.group) {
            return self.eval(
                deny("members-only", "not a member of the allowed group"),
                "the principal is not in the group",
            );
        }
        if !in_office_hours(req.now.unix_secs()) {
            return self.eval(
                deny("office-hours", "access is limited to office hours"),
                "outside Monday to Friday, 09:00-17:00 UTC",
            );
        }
        match req.command.class {
            CommandClass::Session | CommandClass::Read => self.eval(
                Decision::Allow {
                    rule: RuleId::new("read-in-office-hours"),
                    mask_profile: None,
                },
                "a read during office hours",
            ),
            CommandClass::Write => self.eval(
                Decision::Review {
                    rule: RuleId::new("writes-need-a-lead"),
                    reason: "writes need a lead's approval".into(),
                    requirement: ReviewRequirement::one_of("leads", Duration::from_secs(600)),
                },
                "a write during office hours",
            ),
            // Schema, privilege, admin, code and anything not understood.
            _ => self.eval(
                deny("read-only", "only reads are allowed"),
                "riskier than a write",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn office_hours_boundaries() {
        let at = |s: &str| {
            s.parse::<wirewarden_policy::wirewarden_core::Timestamp>()
                .unwrap()
                .unix_secs()
        };
        assert!(in_office_hours(at("2026-11-27T09:00:00Z")), "friday 09:00");
        assert!(in_office_hours(at("2026-11-27T16:59:59Z")), "friday 16:59");
        assert!(!in_office_hours(at("2026-11-27T17:00:00Z")), "friday 17:00");
        assert!(!in_office_hours(at("2026-11-29T12:00:00Z")), "sunday");
        assert!(in_office_hours(at("2026-11-30T12:00:00Z")), "monday");
    }
}
