//! Policy evaluation throughput: a realistic rule set (guardrails, per-team allows with
//! relation globs, time windows, review rules, a budget) evaluated for reads that a rule in
//! the middle allows, writes that go to review, requests that fall to the default deny after
//! every rule was tried, and writes allowed by a just-in-time grant.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_core::{
    Access, AuthMethod, Command, CommandClass, ObjectKind, ObjectRef, Principal, Protocol, Target,
    Timestamp,
};
use wirewarden_policy::{Grant, GrantScope, PolicyEngine, Request, RuleEngine};

const TEAMS: [&str; 12] = [
    "growth", "finance", "support", "risk", "ops", "sales", "legal", "hr", "data", "infra",
    "security", "product",
];

/// 30 rules: 4 guardrails, then per team an allow for reads of its schema in office
/// hours and a review rule for its writes, then catch-alls.
fn rule_set() -> String {
    let mut s = String::from(
        r#"
[[rule]]
id = "no-pii-vault"
relations = ["vault.*", "*.ssn_*"]
action = "deny"
reason = "the vault is off limits"

[[rule]]
id = "no-ddl-prod"
targets = ["prod-*"]
class = "schema"
action = "deny"

[[rule]]
id = "no-admin"
class = "admin"
action = "deny"
"#,
    );
    s.push_str(
        r#"
[[rule]]
id = "no-code"
class = "code"
action = "deny"
"#,
    );
    for team in TEAMS {
        let _ = write!(
            s,
            r#"
[[rule]]
id = "{team}-read"
groups = ["{team}"]
attributes = {{ env = "prod" }}
targets = ["crm", "prod-*"]
protocols = ["postgres"]
max_class = "read"
relations = ["{team}.*", "public.*"]
days = ["mon-fri"]
hours = "06:00-20:00"
action = "allow"
mask_profile = "pii"

[[rule]]
id = "{team}-write"
groups = ["{team}"]
targets = ["crm", "prod-*"]
max_class = "write"
relations = ["{team}.*"]
action = "review"
reviewers = ["{team}-leads", "dba"]
min_approvals = 1
timeout = "10m"
"#
        );
    }
    s.push_str(
        r#"
[[rule]]
id = "cache-sessions"
protocols = ["redis"]
verbs = ["GET", "MGET", "TTL"]
keys = ["session:*"]
action = "allow"

[[rule]]
id = "api-read"
protocols = ["http"]
verbs = ["GET", "HEAD"]
paths = ["/api/v1/*"]
action = "allow"

[[budget]]
id = "hourly-export"
groups = ["data"]
max_rows = 1000000000
max_bytes = 1000000000000
window = "1h"
"#,
    );
    s
}

fn evaluate(c: &mut Criterion) {
    let engine = RuleEngine::from_toml(&rule_set()).expect("valid rule set");
    let principal = Principal::new(
        "agent-42",
        AuthMethod::External {
            mechanism: "bench".into(),
        },
    )
    .unwrap()
    .with_group("agents")
    .with_group("data")
    .with_attribute("env", "prod");
    let target = Target::new("prod-crm", Protocol::Postgres).unwrap();
    let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    let sql = |verb: &str, class, tables: &[&str]| {
        let mut cmd = Command::new(Protocol::Postgres, verb, class, format!("{verb} …")).unwrap();
        for t in tables {
            cmd.push_object(ObjectRef::new(ObjectKind::Relation, *t, Access::Read));
        }
        cmd
    };
    let read = sql(
        "SELECT",
        CommandClass::Read,
        &["data.events", "public.users"],
    );
    let write = sql("UPDATE", CommandClass::Write, &["data.events"]);
    let denied = sql("SELECT", CommandClass::Read, &["finance.ledger"]);
    let grants = [Grant::new(
        "agent-42",
        "prod-crm",
        GrantScope::up_to(CommandClass::Write),
        now,
        Duration::from_secs(1_800),
        "alice",
    )
    .unwrap()];

    let mut g = c.benchmark_group("policy_evaluate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("allow_read_mid_rule_set", |b| {
        b.iter(|| engine.evaluate(black_box(&Request::new(&principal, &target, &read, now))))
    });
    g.bench_function("review_write", |b| {
        b.iter(|| engine.evaluate(black_box(&Request::new(&principal, &target, &write, now))))
    });
    g.bench_function("default_deny_all_rules_tried", |b| {
        b.iter(|| engine.evaluate(black_box(&Request::new(&principal, &target, &denied, now))))
    });
    g.bench_function("write_allowed_by_grant", |b| {
        b.iter(|| {
            engine.evaluate(black_box(
                &Request::new(&principal, &target, &write, now).with_grants(&grants),
            ))
        })
    });
    g.finish();

    c.bench_function("policy_load_30_rules", |b| {
        let text = rule_set();
        b.iter(|| RuleEngine::from_toml(black_box(&text)).unwrap())
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
