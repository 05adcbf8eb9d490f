//! The `wirewarden-testkit` PolicyEngine conformance suite against the office-hours policy.

use custom_policy::OfficeHours;
use wirewarden_policy::wirewarden_core::{
    AuthMethod, Command, CommandClass, Principal, Protocol, Target, Timestamp,
};
use wirewarden_testkit::conformance::policy::{Expect, PolicyCase, policy_engine};

#[test]
fn office_hours_passes_the_policy_suite() {
    let agent = Principal::new(
        "agent-1",
        AuthMethod::External {
            mechanism: "example".into(),
        },
    )
    .unwrap()
    .with_group("agents");
    let outsider = Principal::new(
        "someone",
        AuthMethod::External {
            mechanism: "example".into(),
        },
    )
    .unwrap();
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let cmd = |verb: &str, class| {
        Command::new(Protocol::Postgres, verb, class, format!("{verb} …")).unwrap()
    };
    let thursday: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    let night: Timestamp = "2026-11-26T22:00:00Z".parse().unwrap();
    let cases = [
        PolicyCase::new(
            "read in office hours",
            agent.clone(),
            crm.clone(),
            cmd("SELECT", CommandClass::Read),
            thursday,
            Expect::Allow,
        ),
        PolicyCase::new(
            "read at night",
            agent.clone(),
            crm.clone(),
            cmd("SELECT", CommandClass::Read),
            night,
            Expect::Deny,
        ),
        PolicyCase::new(
            "write in office hours",
            agent.clone(),
            crm.clone(),
            cmd("UPDATE", CommandClass::Write),
            thursday,
            Expect::Review,
        ),
        PolicyCase::new(
            "ddl",
            agent,
            crm.clone(),
            cmd("DROP TABLE", CommandClass::Schema),
            thursday,
            Expect::Deny,
        ),
        PolicyCase::new(
            "outsider",
            outsider,
            crm,
            cmd("SELECT", CommandClass::Read),
            thursday,
            Expect::Deny,
        ),
    ];
    policy_engine(&OfficeHours::new("agents"), &cases);
}
