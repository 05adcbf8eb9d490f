//! Rule precedence, default deny, fail-closed class and object matching, time windows,
//! grants that expire in the middle of a session, and budget exhaustion.

use std::time::Duration;

use wirewarden_core::{
    Access, AuthMethod, Command, CommandClass, Decision, ObjectKind, ObjectRef, Principal,
    Protocol, RuleId, Target, Timestamp,
};
use wirewarden_policy::{
    BudgetStatus, DecidedBy, Error, Exhaustion, Grant, GrantScope, GrantStore, MemoryGrantStore,
    PolicyEngine, Request, Resource, RuleEngine,
};

const POLICY: &str = r#"
# Guardrails first: first match wins.
[[rule]]
id = "no-hr"
relations = ["hr.*"]
action = "deny"
reason = "HR data is off limits"

[[rule]]
id = "no-ddl"
class = "schema"
action = "deny"

[[rule]]
id = "analysts-read"
groups = ["analysts"]
targets = ["crm"]
max_class = "read"
relations = ["public.*", "crm.*"]
action = "allow"
mask_profile = "pii"

[[rule]]
id = "office-hours-writes"
subjects = ["agent-*"]
attributes = { team = "growth" }
targets = ["crm"]
max_class = "write"
days = ["mon-fri"]
hours = "09:00-17:00"
action = "review"
reviewers = ["dba", "leads"]
min_approvals = 2
timeout = "10m"

[[rule]]
id = "redis-sessions"
protocols = ["redis"]
verbs = ["GET", "MGET"]
keys = ["session:*"]
action = "allow"

[[rule]]
id = "ops-unknown"
groups = ["ops"]
class = "unknown"
action = "review"
"#;

fn engine() -> RuleEngine {
    RuleEngine::from_toml(POLICY).unwrap()
}

fn agent() -> Principal {
    Principal::new(
        "agent-7",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap()
    .with_group("analysts")
    .with_attribute("team", "growth")
}

fn crm() -> Target {
    Target::new("crm", Protocol::Postgres).unwrap()
}

fn sql(verb: &str, class: CommandClass, tables: &[&str]) -> Command {
    let mut c = Command::new(Protocol::Postgres, verb, class, format!("{verb} …")).unwrap();
    for t in tables {
        c.push_object(ObjectRef::new(ObjectKind::Relation, *t, Access::Read));
    }
    c
}

/// Thursday 2026-11-26, 10:00 UTC: inside office hours.
fn thursday_10() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

fn eval(
    e: &RuleEngine,
    p: &Principal,
    t: &Target,
    c: &Command,
    now: Timestamp,
) -> wirewarden_policy::Evaluation {
    e.evaluate(&Request::new(p, t, c, now))
}

#[test]
fn first_match_wins_in_file_order() {
    let e = engine();
    // "no-hr" comes before "analysts-read": a read of HR data is denied even for analysts.
    let c = sql(
        "SELECT",
        CommandClass::Read,
        &["public.customers", "hr.salaries"],
    );
    let ev = eval(&e, &agent(), &crm(), &c, thursday_10());
    assert_eq!(
        ev.decision,
        Decision::Deny {
            rule: RuleId::new("no-hr"),
            reason: "HR data is off limits".into()
        }
    );
    assert_eq!(
        ev.decided_by,
        DecidedBy::Rule {
            id: RuleId::new("no-hr"),
            position: Some(0)
        }
    );
    assert_eq!(ev.decided_by.to_string(), "rule no-hr (#1)");
    assert!(!ev.explanation.is_empty());

    let c = sql("SELECT", CommandClass::Read, &["public.customers"]);
    let ev = eval(&e, &agent(), &crm(), &c, thursday_10());
    assert_eq!(
        ev.decision,
        Decision::Allow {
            rule: RuleId::new("analysts-read"),
            mask_profile: Some("pii".into())
        }
    );

    // A write falls past "analysts-read" (class) to the review rule.
    let c = sql("UPDATE", CommandClass::Write, &["crm.accounts"]);
    let ev = eval(&e, &agent(), &crm(), &c, thursday_10());
    match ev.decision {
        Decision::Review {
            rule, requirement, ..
        } => {
            assert_eq!(rule.as_str(), "office-hours-writes");
            assert_eq!(requirement.reviewer_groups, ["dba", "leads"]);
            assert_eq!(requirement.min_approvals, 2);
            assert_eq!(requirement.timeout, Duration::from_secs(600));
        }
        other => panic!("{other:?}"),
    }

    // Reordering the same rules changes the outcome: precedence is the order.
    let reordered = POLICY.replacen(
        "[[rule]]\nid = \"no-hr\"\nrelations = [\"hr.*\"]\naction = \"deny\"\nreason = \"HR data is off limits\"\n",
        "",
        1,
    ) + "\n[[rule]]\nid = \"no-hr\"\nrelations = [\"hr.*\"]\naction = \"deny\"\n";
    let e2 = RuleEngine::from_toml(&reordered).unwrap();
    let c = sql("SELECT", CommandClass::Read, &["hr.salaries"]);
    // Now "analysts-read" is tried first (it does not cover hr.*), then the review rule,
    // which matches reads too: the same command is held for review instead of denied.
    assert_eq!(
        eval(&e2, &agent(), &crm(), &c, thursday_10())
            .decision
            .rule()
            .as_str(),
        "office-hours-writes"
    );
    // Outside office hours only the (now last) deny rule matches.
    let evening: Timestamp = "2026-11-26T20:00:00Z".parse().unwrap();
    assert_eq!(
        eval(&e2, &agent(), &crm(), &c, evening)
            .decision
            .rule()
            .as_str(),
        "no-hr"
    );
    assert_ne!(e2.version(), e.version());
}

#[test]
fn default_is_deny() {
    let e = engine();
    let stranger = Principal::new(
        "mallory",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap();
    let c = sql("SELECT", CommandClass::Read, &["public.customers"]);
    let ev = eval(&e, &stranger, &crm(), &c, thursday_10());
    assert_eq!(ev.decision, Decision::default_deny());
    assert_eq!(ev.decided_by, DecidedBy::Default);
    // An empty policy denies everything.
    let empty = RuleEngine::from_toml("").unwrap();
    let ev = eval(&empty, &agent(), &crm(), &c, thursday_10());
    assert_eq!(ev.decision, Decision::default_deny());
}

#[test]
fn unknown_is_the_riskiest_class() {
    let e = engine();
    let allow_all = RuleEngine::from_toml(
        "[[rule]]\nid = \"all\"\naction = \"allow\"\n[[rule]]\nid = \"upto-code\"\nmax_class = \"code\"\naction = \"allow\"\n",
    )
    .unwrap();
    let c = sql("FROB", CommandClass::Unknown, &["public.customers"]);
    // Neither "max_class = read" nor a rule without a class lets Unknown through.
    assert_eq!(
        eval(&e, &agent(), &crm(), &c, thursday_10()).decision,
        Decision::default_deny()
    );
    assert_eq!(
        eval(&allow_all, &agent(), &crm(), &c, thursday_10()).decision,
        Decision::default_deny()
    );
    // Only a rule naming `unknown` matches it.
    let ops = agent().with_group("ops");
    assert_eq!(
        eval(&e, &ops, &crm(), &c, thursday_10())
            .decision
            .rule()
            .as_str(),
        "ops-unknown"
    );
    let c = sql("DO", CommandClass::Code, &[]);
    assert!(
        eval(&allow_all, &agent(), &crm(), &c, thursday_10())
            .decision
            .is_allow()
    );
}

#[test]
fn allow_rules_must_cover_every_object() {
    let e = engine();
    // Outside office hours, so that only "analysts-read" could match.
    let evening: Timestamp = "2026-11-26T20:00:00Z".parse().unwrap();
    let c = sql("SELECT", CommandClass::Read, &["public.customers"]);
    assert!(eval(&e, &agent(), &crm(), &c, evening).decision.is_allow());
    let c = sql(
        "SELECT",
        CommandClass::Read,
        &["public.customers", "secret.keys"],
    );
    assert_eq!(
        eval(&e, &agent(), &crm(), &c, evening).decision,
        Decision::default_deny()
    );
}

#[test]
fn time_windows_are_utc_days_and_hours() {
    let e = engine();
    let c = sql("UPDATE", CommandClass::Write, &["crm.accounts"]);
    let evening: Timestamp = "2026-11-26T17:00:00Z".parse().unwrap();
    let saturday: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    assert_eq!(
        eval(&e, &agent(), &crm(), &c, thursday_10())
            .decision
            .outcome(),
        "review"
    );
    assert_eq!(
        eval(&e, &agent(), &crm(), &c, evening).decision,
        Decision::default_deny()
    );
    assert_eq!(
        eval(&e, &agent(), &crm(), &c, saturday).decision,
        Decision::default_deny()
    );
    // Attributes must match too.
    let other_team = agent().with_attribute("team", "finance");
    assert_eq!(
        eval(&e, &other_team, &crm(), &c, thursday_10()).decision,
        Decision::default_deny()
    );
}

#[test]
fn protocols_verbs_and_keys() {
    let e = engine();
    let cache = Target::new("cache", Protocol::Redis).unwrap();
    let get = |key: &str| {
        Command::new(
            Protocol::Redis,
            "get",
            CommandClass::Read,
            format!("GET {key}"),
        )
        .unwrap()
        .with_object(ObjectRef::new(ObjectKind::Key, key, Access::Read))
    };
    assert!(
        eval(&e, &agent(), &cache, &get("session:42"), thursday_10())
            .decision
            .is_allow()
    );
    assert!(
        !eval(&e, &agent(), &cache, &get("user:42"), thursday_10())
            .decision
            .is_allow()
    );
    let set = Command::new(
        Protocol::Redis,
        "SET",
        CommandClass::Write,
        "SET session:1 x",
    )
    .unwrap()
    .with_object(ObjectRef::new(ObjectKind::Key, "session:1", Access::Write));
    assert!(
        !eval(&e, &agent(), &cache, &set, thursday_10())
            .decision
            .is_allow()
    );
}

#[test]
fn expired_credentials_are_denied_whatever_the_rules() {
    let e = engine();
    let expired = agent().with_expiry(thursday_10());
    let c = sql("SELECT", CommandClass::Read, &["public.customers"]);
    let ev = eval(&e, &expired, &crm(), &c, thursday_10());
    assert_eq!(ev.decided_by, DecidedBy::CredentialExpired);
    assert!(!ev.decision.is_allow());
}

#[tokio::test]
async fn grants_widen_review_and_default_until_they_expire_mid_session() {
    let e = engine();
    let store = MemoryGrantStore::new();
    let start = thursday_10();
    let grant = Grant::new(
        "agent-7",
        "crm",
        GrantScope::up_to(CommandClass::Write).on("crm.*"),
        start,
        Duration::from_secs(30 * 60),
        "alice",
    )
    .unwrap();
    let grant_id = grant.id;
    store.issue(grant).await.unwrap();
    let write = sql("UPDATE", CommandClass::Write, &["crm.accounts"]);

    // One session: the caller re-reads active grants per command.
    let mut t = start;
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let grants = store.active("agent-7", "crm", t).await.unwrap();
        let ev = e.evaluate(&Request::new(&agent(), &crm(), &write, t).with_grants(&grants));
        outcomes.push(ev.decision.outcome());
        if ev.decision.is_allow() {
            assert_eq!(
                ev.decided_by,
                DecidedBy::Grant {
                    grant: grant_id,
                    over: Some(RuleId::new("office-hours-writes"))
                }
            );
            assert_eq!(ev.decision.rule().as_str(), format!("grant:{grant_id}"));
        }
        t = t.checked_add(Duration::from_secs(10 * 60)).unwrap();
    }
    assert_eq!(outcomes, ["allow", "allow", "allow", "review"]);

    // A stale snapshot of grants is no loophole: evaluation at t ignores expired grants.
    let snapshot = store.active("agent-7", "crm", start).await.unwrap();
    let late = start.checked_add(Duration::from_secs(30 * 60)).unwrap();
    let ev = e.evaluate(&Request::new(&agent(), &crm(), &write, late).with_grants(&snapshot));
    assert_eq!(ev.decision.outcome(), "review");

    // Expiry is reported exactly once.
    let events = store.sweep_expired(late).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind.name(), "grant_expired");
    assert!(store.sweep_expired(late).await.unwrap().is_empty());

    // Explicit denies beat grants; grants never cover what is out of scope.
    let fresh = Grant::new(
        "agent-7",
        "crm",
        GrantScope::up_to(CommandClass::Schema),
        start,
        Duration::from_secs(60),
        "alice",
    )
    .unwrap();
    let grants = [fresh];
    let ddl = sql("CREATE TABLE", CommandClass::Schema, &["crm.new"]);
    let ev = e.evaluate(&Request::new(&agent(), &crm(), &ddl, start).with_grants(&grants));
    assert_eq!(ev.decision.rule().as_str(), "no-ddl");
    let other_target = Target::new("billing", Protocol::Postgres).unwrap();
    let ev = e.evaluate(&Request::new(&agent(), &other_target, &write, start).with_grants(&grants));
    assert_eq!(ev.decision, Decision::default_deny());
}

#[tokio::test]
async fn revocation_takes_effect_and_is_audited() {
    let e = engine();
    let store = MemoryGrantStore::new();
    let t = thursday_10();
    let g = Grant::new(
        "agent-7",
        "crm",
        GrantScope::up_to(CommandClass::Write),
        t,
        Duration::from_secs(600),
        "alice",
    )
    .unwrap();
    let id = g.id;
    store.issue(g).await.unwrap();
    let write = sql("UPDATE", CommandClass::Write, &["crm.accounts"]);
    let grants = store.active("agent-7", "crm", t).await.unwrap();
    assert!(
        e.evaluate(&Request::new(&agent(), &crm(), &write, t).with_grants(&grants))
            .decision
            .is_allow()
    );
    let ev = store.revoke(id, "bob", t).await.unwrap();
    assert_eq!(ev.kind.name(), "grant_revoked");
    let grants = store.active("agent-7", "crm", t).await.unwrap();
    assert!(grants.is_empty());
    assert!(
        !e.evaluate(&Request::new(&agent(), &crm(), &write, t).with_grants(&grants))
            .decision
            .is_allow()
    );
    // A revoked grant is not reported as expired later.
    let later = t.checked_add(Duration::from_secs(3_600)).unwrap();
    assert!(store.sweep_expired(later).await.unwrap().is_empty());
}

#[test]
fn budgets_deny_when_exhausted_and_reset_with_the_window() {
    let policy = r#"
[[rule]]
id = "read"
max_class = "read"
action = "allow"

[[budget]]
id = "rows-per-hour"
groups = ["analysts"]
targets = ["crm"]
max_rows = 1000
max_bytes = 1000000
window = "1h"
"#;
    let e = RuleEngine::from_toml(policy).unwrap();
    let p = agent();
    let t = crm();
    let c = sql("SELECT", CommandClass::Read, &["public.customers"]);
    let now = thursday_10();
    match e.budgets().check(&p, &t, now) {
        BudgetStatus::Within(r) => {
            assert_eq!(r[0].rows, Some(1000));
            assert_eq!(r[0].resets_at, "2026-11-26T11:00:00Z".parse().unwrap());
        }
        other => panic!("{other:?}"),
    }
    assert!(eval(&e, &p, &t, &c, now).decision.is_allow());
    assert!(e.budgets().charge(&p, &t, 600, 10_000, now).allows_more());
    assert!(eval(&e, &p, &t, &c, now).decision.is_allow());
    // The command that crosses the limit completed; the next one is refused.
    let status = e.budgets().charge(&p, &t, 600, 10_000, now);
    let BudgetStatus::Exhausted(ex) = status else {
        panic!("{status:?}")
    };
    assert_eq!(
        (ex.resource, ex.used, ex.limit),
        (Resource::Rows, 1200, 1000)
    );
    let ev = eval(&e, &p, &t, &c, now);
    assert_eq!(ev.decision.rule().as_str(), "budget:rows-per-hour");
    assert!(matches!(ev.decided_by, DecidedBy::Budget(_)));
    // Housekeeping still goes through, and other principals and targets are unaffected.
    let ping = sql("BEGIN", CommandClass::Session, &[]);
    assert!(eval(&e, &p, &t, &ping, now).decision.is_allow());
    let other = Target::new("other", Protocol::Postgres).unwrap();
    assert!(eval(&e, &p, &other, &c, now).decision.is_allow());
    // The next window starts afresh.
    let next = "2026-11-26T11:00:00Z".parse().unwrap();
    assert!(eval(&e, &p, &t, &c, next).decision.is_allow());
    // Bytes count too.
    let status = e.budgets().charge(&p, &t, 0, 2_000_000, next);
    assert!(matches!(
        status,
        BudgetStatus::Exhausted(Exhaustion {
            resource: Resource::Bytes,
            ..
        })
    ));
}

#[test]
fn version_is_a_hash_of_the_canonical_form() {
    let a = RuleEngine::from_toml(POLICY).unwrap();
    // Comments, blank lines and key order do not change the version.
    let reformatted = POLICY
        .replace("# Guardrails first: first match wins.\n", "")
        .replace(
            "action = \"deny\"\nreason = \"HR data is off limits\"",
            "reason = \"HR data is off limits\"\naction = \"deny\"",
        );
    let b = RuleEngine::from_toml(&reformatted).unwrap();
    assert_eq!(a.version(), b.version());
    assert_eq!(a.version().as_str().len(), 64);
    // A semantic change does.
    let c =
        RuleEngine::from_toml(&POLICY.replace("min_approvals = 2", "min_approvals = 1")).unwrap();
    assert_ne!(a.version(), c.version());
    let ev = eval(
        &a,
        &agent(),
        &crm(),
        &sql("SELECT", CommandClass::Read, &[]),
        thursday_10(),
    );
    assert_eq!(&ev.policy_version, a.version());
}

#[test]
fn bad_rule_sets_are_typed_errors() {
    type Check = fn(&Error) -> bool;
    let cases: &[(&str, Check)] = &[
        ("[[rule]]\nid = \"a\"\naction = \"alow\"\n", |e| {
            matches!(e, Error::Syntax { .. })
        }),
        (
            "[[rule]]\nid = \"a\"\naction = \"allow\"\ncolour = \"red\"\n",
            |e| matches!(e, Error::Syntax { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\nclass = \"nuclear\"\naction = \"allow\"\n",
            |e| matches!(e, Error::Syntax { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"allow\"\n[[rule]]\nid = \"a\"\naction = \"deny\"\n",
            |e| matches!(e, Error::DuplicateRule { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\nclass = \"read\"\nmax_class = \"write\"\naction = \"allow\"\n",
            |e| matches!(e, Error::InvalidRule { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"review\"\nmin_approvals = 0\n",
            |e| matches!(e, Error::InvalidRule { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"review\"\ntimeout = \"soon\"\n",
            |e| matches!(e, Error::InvalidRule { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"allow\"\nreviewers = [\"x\"]\n",
            |e| matches!(e, Error::InvalidRule { .. }),
        ),
        (
            "[[rule]]\nid = \"a\"\naction = \"deny\"\nmask_profile = \"x\"\n",
            |e| matches!(e, Error::InvalidRule { .. }),
        ),
        ("[[rule]]\nid = \"default\"\naction = \"deny\"\n", |e| {
            matches!(e, Error::InvalidRule { .. })
        }),
        ("[[rule]]\nid = \"grant:x\"\naction = \"deny\"\n", |e| {
            matches!(e, Error::InvalidRule { .. })
        }),
        (
            "[[rule]]\nid = \"a\"\nhours = \"9-5\"\naction = \"deny\"\n",
            |e| matches!(e, Error::InvalidRule { .. }),
        ),
        ("[[budget]]\nid = \"b\"\nwindow = \"1h\"\n", |e| {
            matches!(e, Error::InvalidBudget { .. })
        }),
        (
            "[[budget]]\nid = \"b\"\nmax_rows = 1\nwindow = \"0s\"\n",
            |e| matches!(e, Error::InvalidBudget { .. }),
        ),
    ];
    for (text, check) in cases {
        let err = RuleEngine::from_toml(text).unwrap_err();
        assert!(check(&err), "{text:?} gave {err:?}");
    }
    let big = "#".repeat(2 << 20);
    assert!(matches!(
        RuleEngine::from_toml(&big),
        Err(Error::TooLarge { .. })
    ));
}
