//! The `wirewarden-testkit` conformance suites run against `RuleEngine` and
//! `MemoryGrantStore`.

use wirewarden_core::{
    Access, AuthMethod, Command, CommandClass, ObjectKind, ObjectRef, Principal, Protocol, Target,
    Timestamp,
};
use wirewarden_policy::{MemoryGrantStore, RuleEngine};
use wirewarden_testkit::conformance::grants::grant_store;
use wirewarden_testkit::conformance::policy::{Expect, PolicyCase, policy_engine};

const POLICY: &str = r#"
[[rule]]
id = "no-ddl"
class = "schema"
action = "deny"

[[rule]]
id = "analysts-read"
groups = ["analysts"]
targets = ["crm"]
max_class = "read"
action = "allow"
mask_profile = "pii"

[[rule]]
id = "writes-need-review"
groups = ["analysts"]
targets = ["crm"]
max_class = "write"
action = "review"
reviewers = ["dba"]

[[budget]]
id = "hourly"
groups = ["analysts"]
max_rows = 1000000
window = "1h"
"#;

fn principal(subject: &str, group: Option<&str>) -> Principal {
    let p = Principal::new(
        subject,
        AuthMethod::External {
            mechanism: "conformance".into(),
        },
    )
    .unwrap();
    match group {
        Some(g) => p.with_group(g),
        None => p,
    }
}

fn cmd(verb: &str, class: CommandClass) -> Command {
    Command::new(Protocol::Postgres, verb, class, format!("{verb} customers"))
        .unwrap()
        .with_object(ObjectRef::new(
            ObjectKind::Relation,
            "customers",
            Access::Read,
        ))
}

#[test]
fn rule_engine_passes_the_policy_suite() {
    let engine = RuleEngine::from_toml(POLICY).unwrap();
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    let analyst = principal("agent-1", Some("analysts"));
    let cases = [
        PolicyCase::new(
            "analyst reads",
            analyst.clone(),
            crm.clone(),
            cmd("SELECT", CommandClass::Read),
            now,
            Expect::Allow,
        ),
        PolicyCase::new(
            "analyst writes",
            analyst.clone(),
            crm.clone(),
            cmd("UPDATE", CommandClass::Write),
            now,
            Expect::Review,
        ),
        PolicyCase::new(
            "analyst alters",
            analyst.clone(),
            crm.clone(),
            cmd("ALTER TABLE", CommandClass::Schema),
            now,
            Expect::Deny,
        ),
        PolicyCase::new(
            "stranger reads",
            principal("nobody", None),
            crm,
            cmd("SELECT", CommandClass::Read),
            now,
            Expect::Deny,
        ),
    ];
    policy_engine(&engine, &cases);
}

#[tokio::test]
async fn memory_grant_store_passes_the_grant_suite() {
    grant_store(&MemoryGrantStore::new()).await;
}
