//! The declarative rule engine: rules loaded from TOML, evaluated first match wins, default
//! deny, widened by just-in-time grants and capped by exfiltration budgets.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wirewarden_core::{
    CommandClass, Decision, ObjectKind, ObjectRef, Protocol, ReviewRequirement, RuleId,
};

use crate::budget::{BudgetDef, BudgetStatus, Budgets};
use crate::glob::Glob;
use crate::window::{TimeWindow, parse_duration};
use crate::{DecidedBy, Error, Evaluation, PolicyEngine, PolicyVersion, Request, Result};

/// Limits on a rule set, checked before and while parsing so that a hostile file cannot make
/// the loader allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted TOML text, in bytes.
    pub max_len: usize,
    /// Most rules.
    pub max_rules: usize,
    /// Most budgets.
    pub max_budgets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_len: 1 << 20,
            max_rules: 10_000,
            max_budgets: 1_000,
        }
    }
}

/// The review timeout when a review rule names none.
const DEFAULT_REVIEW_TIMEOUT: &str = "5m";

// === TOML model ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    budget: Vec<RawBudget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Allow,
    Deny,
    Review,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    databases: Vec<String>,
    #[serde(default)]
    protocols: Vec<Protocol>,
    #[serde(default)]
    class: Option<CommandClass>,
    #[serde(default)]
    max_class: Option<CommandClass>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    relations: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    settings: Vec<String>,
    #[serde(default)]
    require_objects: bool,
    #[serde(default)]
    days: Option<Vec<String>>,
    #[serde(default)]
    hours: Option<String>,
    action: Action,
    #[serde(default)]
    mask_profile: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reviewers: Option<Vec<String>>,
    #[serde(default)]
    min_approvals: Option<u32>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    id: String,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_bytes: Option<u64>,
    window: String,
}

// === compiled rules ===

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "match", content = "class", rename_all = "snake_case")]
enum ClassMatch {
    /// No class given: every class except `unknown`.
    AnyKnown,
    Exact(CommandClass),
    AtMost(CommandClass),
}

impl ClassMatch {
    fn matches(&self, class: CommandClass) -> bool {
        match self {
            Self::AnyKnown => class != CommandClass::Unknown,
            Self::Exact(c) => class == *c,
            Self::AtMost(c) => class <= *c,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Outcome {
    Allow {
        mask_profile: Option<Arc<str>>,
    },
    Deny {
        reason: String,
    },
    Review {
        reason: String,
        requirement: ReviewRequirement,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Rule {
    id: RuleId,
    description: Option<String>,
    subjects: Vec<Glob>,
    groups: Vec<String>,
    attributes: BTreeMap<String, Glob>,
    targets: Vec<Glob>,
    databases: Vec<Glob>,
    protocols: Vec<Protocol>,
    class: ClassMatch,
    verbs: Vec<Glob>,
    /// The plain names among `verbs`, sorted: one lookup instead of a match per name (the
    /// built-in Redis deny rule lists dozens).
    #[serde(skip)]
    verb_names: Vec<String>,
    /// The patterns among `verbs` (with `*` or `?`), matched one by one.
    #[serde(skip)]
    verb_patterns: Vec<Glob>,
    objects: Vec<(ObjectKind, Vec<Glob>)>,
    /// An allow rule with it matches only commands that touch at least one object of each
    /// kind it lists. Left out of the policy version when off, so existing rule sets keep
    /// theirs.
    #[serde(skip_serializing_if = "is_false")]
    require_objects: bool,
    when: Option<TimeWindow>,
    outcome: Outcome,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether `glob` can match a name whose first byte is `first`: a pattern that starts with a
/// literal character matches only names that start with it, so most patterns are passed
/// over on one byte.
fn may_match(glob: &Glob, first: Option<u8>) -> bool {
    match glob.as_str().as_bytes().first() {
        None | Some(b'*' | b'?') => true,
        Some(b) => Some(*b) == first,
    }
}

/// Splits verb globs (sorted and without duplicates, as [`globs`] leaves them) into plain
/// names, still sorted, and patterns; together they match what the globs match.
fn split_verbs(verbs: &[Glob]) -> (Vec<String>, Vec<Glob>) {
    let (plain, patterns): (Vec<&Glob>, Vec<&Glob>) =
        verbs.iter().partition(|g| !g.as_str().contains(['*', '?']));
    let names: Vec<String> = plain.iter().map(|g| g.as_str().to_owned()).collect();
    debug_assert!(names.windows(2).all(|w| w[0] < w[1]));
    (names, patterns.into_iter().cloned().collect())
}

fn any_glob(globs: &[Glob], s: &str) -> bool {
    globs.iter().any(|g| g.matches(s))
}

/// Whether a rule that denies or holds for review fires on the object `name`.
///
/// SQL names reach the server in more than one spelling: `pg_read_file`,
/// `pg_catalog.pg_read_file` and a quoted `"PG_READ_FILE"` may all name what a rule means. A
/// restricting rule therefore matches relations and functions without regard to ASCII case,
/// and a glob without a schema (no `.`) also matches the last part of a qualified name.
/// Rules that allow keep exact matching, so this only ever makes the policy stricter. The
/// relations a call may reach unnamed ([`ObjectRef::ANY_RELATION`]) match every glob.
fn restricts(globs: &[Glob], kind: ObjectKind, name: &str) -> bool {
    if !matches!(kind, ObjectKind::Relation | ObjectKind::Function) {
        return any_glob(globs, name);
    }
    if kind == ObjectKind::Relation && name == ObjectRef::ANY_RELATION {
        // A function nobody can see into may reach any relation, this rule's among them.
        return true;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    globs.iter().any(|g| {
        g.matches_ignore_ascii_case(name)
            || (!g.as_str().contains('.') && g.matches_ignore_ascii_case(last))
    })
}

impl Rule {
    fn matches(&self, req: &Request<'_>) -> bool {
        let p = req.principal;
        let c = req.command;
        if !self.subjects.is_empty() && !any_glob(&self.subjects, &p.subject) {
            return false;
        }
        if !self.groups.is_empty() && !self.groups.iter().any(|g| p.in_group(g)) {
            return false;
        }
        if !self
            .attributes
            .iter()
            .all(|(k, v)| p.attributes.get(k).is_some_and(|have| v.matches(have)))
        {
            return false;
        }
        if !self.targets.is_empty() && !any_glob(&self.targets, &req.target.name) {
            return false;
        }
        if !self.databases.is_empty()
            && !req
                .target
                .database
                .as_deref()
                .is_some_and(|db| any_glob(&self.databases, db))
        {
            return false;
        }
        if !self.protocols.is_empty() && !self.protocols.contains(&c.protocol) {
            return false;
        }
        if !self.class.matches(c.class) {
            return false;
        }
        if !self.verbs.is_empty() {
            // Codecs give verbs in uppercase; fold only when one did not.
            let verb = if c.verb.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(c.verb.to_ascii_uppercase())
            } else {
                Cow::Borrowed(c.verb.as_str())
            };
            let named = self
                .verb_names
                .binary_search_by(|n| n.as_str().cmp(&verb))
                .is_ok();
            let first = verb.as_bytes().first().copied();
            if !named
                && !self
                    .verb_patterns
                    .iter()
                    .any(|g| may_match(g, first) && g.matches(&verb))
            {
                return false;
            }
        }
        let widens = matches!(self.outcome, Outcome::Allow { .. });
        for (kind, globs) in &self.objects {
            let mut names = c.objects_of(*kind).map(|o| o.name.as_str());
            // Fail closed both ways: a rule that allows must cover every object of the
            // kind the command touches; a rule that restricts fires on any one of them.
            // Relations reached through a function nobody can see into are covered by a
            // glob that matches every name, or by a rule that also lists the functions it
            // allows (each of which the command must then call).
            let ok = if widens {
                let mut touched = false;
                names.all(|n| {
                    touched = true;
                    any_glob(globs, n)
                        || (*kind == ObjectKind::Relation
                            && n == ObjectRef::ANY_RELATION
                            && self.lists_functions())
                }) && (touched || !self.require_objects)
            } else {
                names.any(|n| restricts(globs, *kind, n))
            };
            if !ok {
                return false;
            }
        }
        if let Some(w) = &self.when
            && !w.contains(req.now)
        {
            return false;
        }
        true
    }

    fn lists_functions(&self) -> bool {
        self.objects.iter().any(|(k, _)| *k == ObjectKind::Function)
    }

    fn decision(&self) -> Decision {
        match &self.outcome {
            Outcome::Allow { mask_profile } => Decision::Allow {
                rule: self.id.clone(),
                mask_profile: mask_profile.clone(),
            },
            Outcome::Deny { reason } => Decision::Deny {
                rule: self.id.clone(),
                reason: reason.clone(),
            },
            Outcome::Review {
                reason,
                requirement,
            } => Decision::Review {
                rule: self.id.clone(),
                reason: reason.clone(),
                requirement: requirement.clone(),
            },
        }
    }
}

fn globs(v: Vec<String>) -> Vec<Glob> {
    let mut g: Vec<Glob> = v.into_iter().map(Glob::new).collect();
    g.sort();
    g.dedup();
    g
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn compile_rule(raw: RawRule) -> Result<Rule> {
    let id = raw.id;
    let invalid = |reason: String| Error::InvalidRule {
        rule: id.clone(),
        reason,
    };
    if id.is_empty() || id.len() > 128 {
        return Err(invalid("the id must have 1 to 128 characters".into()));
    }
    if id == RuleId::DEFAULT || id.contains(':') {
        return Err(invalid(format!(
            "the id must not be {:?} nor contain ':' (reserved for grants and budgets)",
            RuleId::DEFAULT
        )));
    }
    let class = match (raw.class, raw.max_class) {
        (Some(_), Some(_)) => return Err(invalid("set `class` or `max_class`, not both".into())),
        (Some(c), None) => ClassMatch::Exact(c),
        (None, Some(c)) => ClassMatch::AtMost(c),
        (None, None) => ClassMatch::AnyKnown,
    };
    let when = TimeWindow::parse(raw.days.as_deref(), raw.hours.as_deref()).map_err(invalid)?;
    let is_review = raw.action == Action::Review;
    if !is_review
        && (raw.reviewers.is_some() || raw.min_approvals.is_some() || raw.timeout.is_some())
    {
        return Err(invalid(
            "`reviewers`, `min_approvals` and `timeout` belong to review rules".into(),
        ));
    }
    if raw.action != Action::Allow && raw.mask_profile.is_some() {
        return Err(invalid("`mask_profile` belongs to allow rules".into()));
    }
    if raw.action == Action::Allow && raw.reason.is_some() {
        return Err(invalid("`reason` belongs to deny and review rules".into()));
    }
    let outcome = match raw.action {
        Action::Allow => Outcome::Allow {
            mask_profile: raw.mask_profile.map(Arc::from),
        },
        Action::Deny => Outcome::Deny {
            reason: raw
                .reason
                .unwrap_or_else(|| format!("denied by policy rule {id}")),
        },
        Action::Review => {
            let min_approvals = raw.min_approvals.unwrap_or(1);
            if min_approvals == 0 {
                return Err(invalid("`min_approvals` must be at least 1".into()));
            }
            let timeout_text = raw.timeout.as_deref().unwrap_or(DEFAULT_REVIEW_TIMEOUT);
            let timeout = parse_duration(timeout_text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(format!("invalid timeout {timeout_text:?}")))?;
            Outcome::Review {
                reason: raw
                    .reason
                    .unwrap_or_else(|| format!("policy rule {id} requires review")),
                requirement: ReviewRequirement {
                    reviewer_groups: sorted(raw.reviewers.unwrap_or_default()),
                    min_approvals,
                    timeout,
                },
            }
        }
    };
    if raw.require_objects {
        if !matches!(outcome, Outcome::Allow { .. }) {
            return Err(invalid(
                "`require_objects` applies to allow rules (a deny or review rule fires only on \
                 an object it lists)"
                    .into(),
            ));
        }
        if [
            &raw.relations,
            &raw.keys,
            &raw.paths,
            &raw.functions,
            &raw.channels,
            &raw.settings,
        ]
        .iter()
        .all(|v| v.is_empty())
        {
            return Err(invalid(
                "`require_objects` needs `relations`, `keys`, `paths`, `functions`, `channels` \
                 or `settings`"
                    .into(),
            ));
        }
    }
    let mut protocols = raw.protocols;
    protocols.sort();
    protocols.dedup();
    let objects = [
        (ObjectKind::Relation, raw.relations),
        (ObjectKind::Key, raw.keys),
        (ObjectKind::Path, raw.paths),
        (ObjectKind::Function, raw.functions),
        (ObjectKind::Channel, raw.channels),
        (ObjectKind::Setting, raw.settings),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k, globs(v)))
    .collect();
    let verbs = globs(
        raw.verbs
            .into_iter()
            .map(|v| v.to_ascii_uppercase())
            .collect(),
    );
    let (verb_names, verb_patterns) = split_verbs(&verbs);
    Ok(Rule {
        id: RuleId::new(id.clone()),
        description: raw.description,
        subjects: globs(raw.subjects),
        groups: sorted(raw.groups),
        attributes: raw
            .attributes
            .into_iter()
            .map(|(k, v)| (k, Glob::new(v)))
            .collect(),
        targets: globs(raw.targets),
        databases: globs(raw.databases),
        protocols,
        class,
        verbs,
        verb_names,
        verb_patterns,
        objects,
        require_objects: raw.require_objects,
        when,
        outcome,
    })
}

fn compile_budget(raw: RawBudget) -> Result<BudgetDef> {
    let id = raw.id;
    let invalid = |reason: String| Error::InvalidBudget {
        budget: id.clone(),
        reason,
    };
    if id.is_empty() || id.len() > 128 {
        return Err(invalid("the id must have 1 to 128 characters".into()));
    }
    if raw.max_rows.is_none() && raw.max_bytes.is_none() {
        return Err(invalid("set `max_rows`, `max_bytes` or both".into()));
    }
    let window = parse_duration(&raw.window)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| invalid(format!("invalid window {:?}", raw.window)))?;
    Ok(BudgetDef {
        id: id.clone(),
        subjects: globs(raw.subjects),
        groups: sorted(raw.groups),
        targets: globs(raw.targets),
        max_rows: raw.max_rows,
        max_bytes: raw.max_bytes,
        window_secs: window.as_secs(),
    })
}

/// The canonical form that is hashed into the policy version: the compiled rules (lists
/// sorted, defaults filled in) and budgets, as JSON. Comments, whitespace, key order and
/// the spelling of defaults do not change the version; anything that changes a decision does.
#[derive(Serialize)]
struct Canonical<'a> {
    format: u32,
    rules: &'a [Rule],
    budgets: &'a [BudgetDef],
}

const VERSION_CONTEXT: &str = "wirewarden 2026-11-26 policy version v1";

// === RuleEngine ===

/// A [`PolicyEngine`] evaluating rules loaded from TOML.
///
/// See the crate documentation for the file format and the order of precedence.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    rules: Arc<[Rule]>,
    budgets: Arc<Budgets>,
    version: PolicyVersion,
}

impl RuleEngine {
    /// Parses and compiles a rule set with the default [`Limits`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Syntax`] (with line and column), [`Error::InvalidRule`],
    /// [`Error::DuplicateRule`], [`Error::InvalidBudget`], [`Error::TooMany`].
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_with_limits(text, Limits::default())
    }

    /// Parses and compiles a rule set with explicit limits.
    ///
    /// # Errors
    /// As [`RuleEngine::from_toml`].
    pub fn from_toml_with_limits(text: &str, limits: Limits) -> Result<Self> {
        if text.len() > limits.max_len {
            return Err(Error::TooLarge {
                len: text.len(),
                limit: limits.max_len,
            });
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| Error::Syntax {
            message: e.to_string(),
        })?;
        if raw.rule.len() > limits.max_rules {
            return Err(Error::TooMany {
                what: "rules",
                count: raw.rule.len(),
                limit: limits.max_rules,
            });
        }
        if raw.budget.len() > limits.max_budgets {
            return Err(Error::TooMany {
                what: "budgets",
                count: raw.budget.len(),
                limit: limits.max_budgets,
            });
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(raw.rule.len());
        for r in raw.rule {
            if !seen.insert(r.id.clone()) {
                return Err(Error::DuplicateRule { rule: r.id });
            }
            rules.push(compile_rule(r)?);
        }
        let mut seen = HashSet::new();
        let mut budgets = Vec::with_capacity(raw.budget.len());
        for b in raw.budget {
            if !seen.insert(b.id.clone()) {
                return Err(Error::InvalidBudget {
                    budget: b.id,
                    reason: "duplicate id".into(),
                });
            }
            budgets.push(compile_budget(b)?);
        }
        let canonical = serde_json::to_vec(&Canonical {
            format: 1,
            rules: &rules,
            budgets: &budgets,
        })
        .map_err(|e| Error::Syntax {
            message: format!("cannot encode the canonical form: {e}"),
        })?;
        let version = PolicyVersion::hash_of(VERSION_CONTEXT, &canonical);
        Ok(Self {
            rules: rules.into(),
            budgets: Arc::new(Budgets::new(budgets)),
            version,
        })
    }

    /// The hash of the rule set, recorded with every decision.
    #[must_use]
    pub fn version(&self) -> &PolicyVersion {
        &self.version
    }

    /// The exfiltration budgets and their counters; charge them after each command.
    #[must_use]
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// A shared handle to the budgets (for a pipeline that charges from another task).
    #[must_use]
    pub fn budgets_handle(&self) -> Arc<Budgets> {
        Arc::clone(&self.budgets)
    }

    /// The ids of the rules, in evaluation order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &RuleId> {
        self.rules.iter().map(|r| &r.id)
    }

    /// Whether the rule `id` names class `unknown` explicitly (for the fuzz target's check
    /// that nothing else ever allows an unknown command).
    #[doc(hidden)]
    #[must_use]
    pub fn rule_names_unknown(&self, id: &RuleId) -> bool {
        self.rules.iter().any(|r| {
            &r.id == id
                && matches!(
                    r.class,
                    ClassMatch::Exact(CommandClass::Unknown)
                        | ClassMatch::AtMost(CommandClass::Unknown)
                )
        })
    }

    /// The number of budgets configured.
    #[must_use]
    pub fn budget_count(&self) -> usize {
        self.budgets.defs().len()
    }

    fn evaluation(
        &self,
        decision: Decision,
        decided_by: DecidedBy,
        explanation: Cow<'static, str>,
    ) -> Evaluation {
        Evaluation {
            decision,
            policy_version: self.version.clone(),
            decided_by,
            explanation,
        }
    }
}

impl PolicyEngine for RuleEngine {
    fn evaluate(&self, req: &Request<'_>) -> Evaluation {
        // 1. An identity whose proof has expired gets nothing, whatever the rules say.
        if req.principal.is_expired_at(req.now) {
            return self.evaluation(
                Decision::Deny {
                    rule: RuleId::new(crate::CREDENTIAL_EXPIRED_RULE),
                    reason: "the credential has expired".into(),
                },
                DecidedBy::CredentialExpired,
                Cow::Borrowed("the credential had expired at the evaluation time"),
            );
        }

        // 2. First matching rule, in file order; none: default deny.
        let matched = self.rules.iter().enumerate().find(|(_, r)| r.matches(req));
        let (mut decision, mut decided_by, mut explanation) = match matched {
            Some((index, rule)) => (
                rule.decision(),
                DecidedBy::Rule {
                    id: rule.id.clone(),
                    position: Some(index),
                },
                Cow::Borrowed("the first rule that matches decides"),
            ),
            None => (
                Decision::default_deny(),
                DecidedBy::Default,
                Cow::Borrowed("no rule matches; the default is deny"),
            ),
        };

        // 3. An explicit deny rule is final: grants and budgets cannot change it.
        if matches!(decided_by, DecidedBy::Rule { .. }) && matches!(decision, Decision::Deny { .. })
        {
            return self.evaluation(decision, decided_by, explanation);
        }

        // 4. A grant turns "review" or the default deny into "allow".
        if !decision.is_allow()
            && let Some(grant) = req
                .grants
                .iter()
                .find(|g| g.covers(&req.principal.subject, req.target, req.command, req.now))
        {
            let over = match &decided_by {
                DecidedBy::Rule { id, .. } => Some(id.clone()),
                _ => None,
            };
            explanation = Cow::Borrowed(
                "an active grant covers a command the rules hold for review or deny by default",
            );
            decision = Decision::Allow {
                rule: RuleId::new(format!("grant:{}", grant.id)),
                mask_profile: None,
            };
            decided_by = DecidedBy::Grant {
                grant: grant.id,
                over,
            };
        }

        // 5. Budgets cap whatever would go ahead; housekeeping is never refused.
        if matches!(decision, Decision::Allow { .. } | Decision::Review { .. })
            && req.command.class != CommandClass::Session
            && let BudgetStatus::Exhausted(ex) =
                self.budgets.check(req.principal, req.target, req.now)
        {
            let reason = format!(
                "the {} budget {} is used up ({} of {}) until {}",
                match ex.resource {
                    crate::Resource::Rows => "row",
                    crate::Resource::Bytes => "byte",
                },
                ex.budget,
                ex.used,
                ex.limit,
                ex.resets_at
            );
            return self.evaluation(
                Decision::Deny {
                    rule: RuleId::new(format!("budget:{}", ex.budget)),
                    reason: reason.clone(),
                },
                DecidedBy::Budget(ex),
                Cow::Owned(reason),
            );
        }

        self.evaluation(decision, decided_by, explanation)
    }
}
