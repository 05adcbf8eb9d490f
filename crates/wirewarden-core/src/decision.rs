//! What policy says about a command.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The identifier of the rule that decided, as written in the policy (`deny-ddl`), or
/// [`RuleId::DEFAULT`] when no rule matched and the default applied.
///
/// Shared, not copied: every decision names its rule, so a clone is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(Arc<str>);

impl RuleId {
    /// The id recorded when no rule matched.
    pub const DEFAULT: &'static str = "default";

    /// A rule id.
    #[must_use]
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id of the policy default.
    #[must_use]
    pub fn default_rule() -> Self {
        Self(Arc::from(Self::DEFAULT))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who must approve a held command, how many of them, and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRequirement {
    /// Groups whose members may approve. Empty means any reviewer.
    #[serde(default)]
    pub reviewer_groups: Vec<String>,
    /// Distinct approvals needed (at least 1).
    pub min_approvals: u32,
    /// How long the command is held before it fails.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
}

impl ReviewRequirement {
    /// One approval from a member of `group`, within `timeout`.
    #[must_use]
    pub fn one_of(group: impl Into<String>, timeout: Duration) -> Self {
        Self {
            reviewer_groups: vec![group.into()],
            min_approvals: 1,
            timeout,
        }
    }
}

/// The outcome of evaluating policy for one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Forward the command; mask what flows back with the named profile (`None`: the
    /// target's default profile).
    Allow {
        /// The rule that allowed it.
        rule: RuleId,
        /// The mask profile to apply to the response.
        mask_profile: Option<Arc<str>>,
    },
    /// Refuse the command with a protocol-native error; the session stays usable.
    Deny {
        /// The rule that denied it.
        rule: RuleId,
        /// Why, in words the client will see.
        reason: String,
    },
    /// Hold the command until enough humans approve it, or fail it on timeout.
    Review {
        /// The rule that asked for review.
        rule: RuleId,
        /// Why, in words the reviewer and the client will see.
        reason: String,
        /// Who must approve.
        requirement: ReviewRequirement,
    },
}

impl Decision {
    /// The rule that decided.
    #[must_use]
    pub fn rule(&self) -> &RuleId {
        match self {
            Self::Allow { rule, .. } | Self::Deny { rule, .. } | Self::Review { rule, .. } => rule,
        }
    }

    /// `allow`, `deny` or `review`.
    #[must_use]
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Allow { .. } => "allow",
            Self::Deny { .. } => "deny",
            Self::Review { .. } => "review",
        }
    }

    /// Whether the command may be forwarded now.
    #[must_use]
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// A denial by the policy default, the outcome when nothing matched.
    #[must_use]
    pub fn default_deny() -> Self {
        Self::Deny {
            rule: RuleId::default_rule(),
            reason: "no policy rule allows this command".into(),
        }
    }
}

mod duration_secs {
    //! Durations as fractional seconds in exported JSON (`"timeout": 300.0`).
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deny_names_the_default_rule() {
        let d = Decision::default_deny();
        assert_eq!(d.rule().as_str(), RuleId::DEFAULT);
        assert_eq!(d.outcome(), "deny");
        assert!(!d.is_allow());
    }

    #[test]
    fn decisions_round_trip_through_json() {
        let all = [
            Decision::Allow {
                rule: RuleId::new("analysts-read"),
                mask_profile: Some("pii".into()),
            },
            Decision::default_deny(),
            Decision::Review {
                rule: RuleId::new("writes-need-review"),
                reason: "writes to crm need a DBA".into(),
                requirement: ReviewRequirement::one_of("dba", Duration::from_secs(300)),
            },
        ];
        for d in all {
            let json = serde_json::to_string(&d).unwrap();
            assert!(
                json.contains(&format!(r#""outcome":"{}""#, d.outcome())),
                "{json}"
            );
            assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
        }
    }

    #[test]
    fn negative_timeouts_are_rejected() {
        let json = r#"{"reviewer_groups":[],"min_approvals":1,"timeout":-1.0}"#;
        assert!(serde_json::from_str::<ReviewRequirement>(json).is_err());
    }
}
