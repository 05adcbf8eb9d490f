//! Relations a statement reaches without naming them. A call of a function nobody can see
//! into (a user-defined one, say) may read or write any table, so `wirewarden-sql` reports
//! such a statement as also touching [`ObjectRef::ANY_RELATION`]. An allow rule or a grant
//! limited to some relations must not let that through: a rule allowing reads of notes would
//! otherwise allow `SELECT open_ssn()`, which reads customers. Deny and review rules on
//! relations fire on it, as the function may reach theirs.
//!
//! The commands come from the real classifier, as the Postgres relay builds them.

use std::time::Duration;

use wirewarden_core::{
    AuthMethod, Command, CommandClass, Decision, ObjectRef, Principal, Protocol, Target, Timestamp,
};
use wirewarden_policy::{DecidedBy, Grant, GrantScope, PolicyEngine, Request, RuleEngine};
use wirewarden_sql::Classifier;

const POLICY: &str = r#"
[[rule]]
id = "notes-with-their-functions"
groups = ["support"]
max_class = "read"
relations = ["notes"]
functions = ["count", "lower", "summarize"]
action = "allow"
mask_profile = "support"

[[rule]]
id = "notes"
max_class = "read"
relations = ["notes"]
action = "allow"
mask_profile = "open"

[[rule]]
id = "anything-read"
groups = ["ops"]
max_class = "read"
relations = ["*"]
action = "allow"

[[rule]]
id = "payments-reviewed"
relations = ["payments"]
action = "review"
"#;

/// A deny rule on one relation first; then an allow rule that vouches for one function (it
/// comes before the deny, or the deny would take every call that may reach secrets).
const WITH_A_DENY: &str = r#"
[[rule]]
id = "summaries"
max_class = "read"
relations = ["notes"]
functions = ["summarize"]
action = "allow"

[[rule]]
id = "no-secrets"
relations = ["secrets", "*.secrets"]
action = "deny"
reason = "secrets are not for agents"

[[rule]]
id = "anything-read"
max_class = "read"
relations = ["*"]
action = "allow"
"#;

fn engine(policy: &str) -> RuleEngine {
    RuleEngine::from_toml(policy).unwrap()
}

fn agent(group: &str) -> Principal {
    Principal::new(
        "agent-7",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap()
    .with_group(group)
}

fn crm() -> Target {
    Target::new("crm", Protocol::Postgres).unwrap()
}

fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

/// `sql` (one statement) as the relay hands it to policy.
fn command(sql: &str) -> Command {
    let a = Classifier::new().classify(sql);
    assert_eq!(a.statements.len(), 1, "{sql}");
    a.statements[0].to_command(sql)
}

/// The rule that decided `sql` for a member of `group`, and the outcome.
fn decided(e: &RuleEngine, group: &str, sql: &str) -> (String, &'static str) {
    let cmd = command(sql);
    let d = e
        .evaluate(&Request::new(&agent(group), &crm(), &cmd, now()))
        .decision;
    (d.rule().as_str().to_owned(), d.outcome())
}

fn is(rule: &str, outcome: &'static str) -> (String, &'static str) {
    (rule.to_owned(), outcome)
}

#[test]
fn a_rule_on_some_relations_does_not_allow_a_function_that_may_reach_others() {
    let e = engine(POLICY);
    // The built-ins the classifier knows read no relation: the notes rule allows them.
    assert_eq!(
        decided(
            &e,
            "analysts",
            "SELECT count(*), max(id), lower(body) FROM notes"
        ),
        is("notes", "allow")
    );
    // A user function may read any table: not covered by a rule on notes (before, a
    // statement that names no relation was covered by every rule on relations). It falls
    // through to the review rule on payments, which it may read.
    for sql in [
        "SELECT open_ssn('c')",
        "SELECT body, open_ssn('c') FROM notes",
        "SELECT * FROM customer_rows()",
        "SELECT public.lower(body) FROM notes",
    ] {
        assert_eq!(
            decided(&e, "analysts", sql),
            is("payments-reviewed", "review"),
            "{sql}"
        );
    }
    let no_review = POLICY.replace("action = \"review\"", "action = \"deny\"");
    assert_eq!(
        decided(&engine(&no_review), "analysts", "SELECT open_ssn('c')"),
        is("payments-reviewed", "deny")
    );
    let only_notes = &POLICY[..POLICY.find("[[rule]]\nid = \"anything-read\"").unwrap()];
    assert_eq!(
        decided(&engine(only_notes), "analysts", "SELECT open_ssn('c')"),
        is("default", "deny")
    );
}

#[test]
fn a_rule_that_lists_its_functions_allows_exactly_those() {
    let e = engine(POLICY);
    assert_eq!(
        decided(&e, "support", "SELECT id, summarize(body) FROM notes"),
        is("notes-with-their-functions", "allow")
    );
    assert_eq!(
        decided(
            &e,
            "support",
            "SELECT count(*), lower(summarize(body)) FROM notes"
        ),
        is("notes-with-their-functions", "allow")
    );
    // A function the rule does not list is not vouched for; the next rule on notes alone
    // does not cover what it may reach either.
    assert_eq!(
        decided(
            &e,
            "support",
            "SELECT summarize(body), open_ssn('c') FROM notes"
        ),
        is("payments-reviewed", "review")
    );
}

#[test]
fn a_rule_on_every_relation_covers_what_a_function_may_reach() {
    let e = engine(POLICY);
    assert_eq!(
        decided(&e, "ops", "SELECT open_ssn('c')"),
        is("anything-read", "allow")
    );
}

#[test]
fn deny_and_review_rules_on_relations_fire_on_what_a_function_may_reach() {
    let e = engine(WITH_A_DENY);
    // "Anything but secrets" does not cover a function that may read secrets.
    assert_eq!(
        decided(&e, "ops", "SELECT open_ssn('c')"),
        is("no-secrets", "deny")
    );
    assert_eq!(
        decided(&e, "ops", "SELECT * FROM customers"),
        is("anything-read", "allow")
    );
    // The function a rule before the deny vouches for goes ahead.
    assert_eq!(
        decided(&e, "ops", "SELECT summarize(body) FROM notes"),
        is("summaries", "allow")
    );
    // A review rule on relations holds a call that may reach them.
    let e = engine(POLICY);
    assert_eq!(
        decided(&e, "nobody", "SELECT open_ssn('c')"),
        is("payments-reviewed", "review")
    );
    assert_eq!(
        decided(&e, "nobody", "SELECT lower(body) FROM notes"),
        is("notes", "allow")
    );
}

#[test]
fn a_grant_on_some_relations_does_not_cover_a_function_that_may_reach_others() {
    let e =
        engine("[[rule]]\nid = \"writes-reviewed\"\nmax_class = \"write\"\naction = \"review\"\n");
    let who = agent("support");
    let at = now();
    let grant = |scope| {
        Grant::new(
            "agent-7",
            "crm",
            scope,
            at,
            Duration::from_secs(600),
            "alice",
        )
        .unwrap()
    };
    let decide = |sql: &str, g: &Grant| -> Decision {
        let cmd = command(sql);
        let grants = [g.clone()];
        let eval = e.evaluate(&Request::new(&who, &crm(), &cmd, at).with_grants(&grants));
        if eval.decision.is_allow() {
            assert!(matches!(eval.decided_by, DecidedBy::Grant { .. }));
        }
        eval.decision
    };
    let notes_only = grant(GrantScope::up_to(CommandClass::Write).on("notes"));
    assert!(decide("UPDATE notes SET body = lower(body)", &notes_only).is_allow());
    let d = decide("UPDATE notes SET body = scrub(body)", &notes_only);
    assert_eq!(d.outcome(), "review");
    let anything = grant(GrantScope::up_to(CommandClass::Write).on("*"));
    assert!(decide("UPDATE notes SET body = scrub(body)", &anything).is_allow());
}

#[test]
fn the_marker_is_no_name_sql_can_spell() {
    // A table called `*` must be quoted, and keeps its quotes.
    let cmd = command("SELECT * FROM \"*\"");
    assert!(cmd.objects.iter().all(|o| !o.is_any_relation()), "{cmd:?}");
    assert!(
        command("SELECT f()")
            .objects
            .iter()
            .any(ObjectRef::is_any_relation)
    );
}
