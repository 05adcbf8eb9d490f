//! Rules that match on the functions a statement calls (`functions`) and on the HTTP paths a
//! request reaches (`paths`): deny and review rules fire on any one match, allow rules must
//! cover every object of the kind, and a command nothing matches falls through to the next
//! rule and finally to the default deny.
//!
//! The commands are built the way the codecs build them: `wirewarden-sql` reports each call
//! `name(…)` as an [`ObjectKind::Function`] named as written, unquoted identifiers folded to
//! lower case and schema-qualified calls as `schema.name`; `wirewarden-redis` reports the
//! function of `FCALL`; `wirewarden-http` reports one [`ObjectKind::Path`], the matched
//! route template or the raw path.

use wirewarden_core::{
    Access, AuthMethod, Command, CommandClass, Decision, ObjectKind, ObjectRef, Principal,
    Protocol, RuleId, Target, Timestamp,
};
use wirewarden_policy::{PolicyEngine, Request, RuleEngine};

const SQL_POLICY: &str = r#"
[[rule]]
id = "no-server-files"
protocols = ["postgres"]
functions = ["pg_read_file", "pg_read_binary_file", "pg_ls_dir", "*.pg_read_file"]
action = "deny"
reason = "reading server files is not allowed"

[[rule]]
id = "no-large-objects"
functions = ["lo_*"]
action = "deny"

[[rule]]
id = "terminate-needs-review"
functions = ["pg_terminate_backend"]
action = "review"
reviewers = ["dba"]

[[rule]]
id = "analysts-plain-reads"
groups = ["analysts"]
max_class = "read"
functions = ["now", "lower", "coalesce", "count"]
action = "allow"

[[rule]]
id = "analysts-any-read-reviewed"
groups = ["analysts"]
max_class = "read"
action = "review"
"#;

fn engine(policy: &str) -> RuleEngine {
    RuleEngine::from_toml(policy).unwrap()
}

fn analyst() -> Principal {
    Principal::new(
        "agent-7",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap()
    .with_group("analysts")
}

fn target(protocol: Protocol) -> Target {
    Target::new("crm", protocol).unwrap()
}

/// Thursday 2026-11-26, 10:00 UTC.
fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

/// A `SELECT` of class `class` reading `customers` and calling `functions`.
fn select(class: CommandClass, functions: &[&str]) -> Command {
    let mut c = Command::new(Protocol::Postgres, "SELECT", class, "SELECT …").unwrap();
    c.push_object(ObjectRef::new(
        ObjectKind::Relation,
        "customers",
        Access::Read,
    ));
    for f in functions {
        c.push_object(ObjectRef::new(ObjectKind::Function, *f, Access::Execute));
    }
    c
}

fn decide(e: &RuleEngine, p: &Principal, t: &Target, c: &Command) -> Decision {
    e.evaluate(&Request::new(p, t, c, now())).decision
}

/// The id of the rule that decided, and the outcome (`allow`, `deny`, `review`).
fn decided(d: &Decision) -> (&str, &'static str) {
    (d.rule().as_str(), d.outcome())
}

#[test]
fn deny_rules_fire_on_any_called_function() {
    let e = engine(SQL_POLICY);
    let pg = target(Protocol::Postgres);
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["pg_read_file"]),
    );
    assert_eq!(
        d,
        Decision::Deny {
            rule: RuleId::new("no-server-files"),
            reason: "reading server files is not allowed".into()
        }
    );
    // One dangerous call among harmless ones is enough.
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["now", "lower", "pg_ls_dir"]),
    );
    assert_eq!(decided(&d), ("no-server-files", "deny"));

    // Globs: `lo_*` catches every large-object function, including `lo_get`, which the
    // classifier rates a plain read that the analysts' allow rule would otherwise take.
    for f in ["lo_import", "lo_export", "lo_get"] {
        let d = decide(&e, &analyst(), &pg, &select(CommandClass::Read, &[f]));
        assert_eq!(
            d,
            Decision::Deny {
                rule: RuleId::new("no-large-objects"),
                reason: "denied by policy rule no-large-objects".into()
            },
            "{f}"
        );
    }
    // `lo_*` is anchored at both ends: a function that merely contains `lo_` is not caught.
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Read, &["hello_lo_world"]),
    );
    assert_eq!(decided(&d), ("analysts-any-read-reviewed", "review"));

    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["pg_terminate_backend"]),
    );
    assert_eq!(decided(&d), ("terminate-needs-review", "review"));
}

#[test]
fn function_names_match_as_the_classifier_writes_them() {
    let e = engine(SQL_POLICY);
    let pg = target(Protocol::Postgres);
    // A schema-qualified call is named `schema.function`. A rule that restricts matches a
    // glob without a schema against the last part too, so qualifying the name does not get
    // a call past it.
    for name in [
        "pg_catalog.pg_read_file",
        "pg_catalog.pg_read_binary_file",
        "other.pg_ls_dir",
    ] {
        let d = decide(&e, &analyst(), &pg, &select(CommandClass::Admin, &[name]));
        assert_eq!(decided(&d), ("no-server-files", "deny"), "{name}");
    }
    // Nor does a quoted name in another case: restricting rules ignore ASCII case.
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["PG_CATALOG.Pg_Read_File"]),
    );
    assert_eq!(decided(&d), ("no-server-files", "deny"));
    // A glob with a schema still means that schema.
    let schema_only = engine(
        r#"
        [[rule]]
        id = "no-audit-schema"
        functions = ["audit.*"]
        action = "deny"

        [[rule]]
        id = "everything"
        class = "admin"
        action = "review"
        "#,
    );
    let d = decide(
        &schema_only,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["public.purge"]),
    );
    assert_eq!(decided(&d), ("everything", "review"));
    let d = decide(
        &schema_only,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["AUDIT.purge"]),
    );
    assert_eq!(decided(&d), ("no-audit-schema", "deny"));

    // A rule written in upper case restricts the lower-case call the classifier reports.
    let shouting = engine(
        r#"
        [[rule]]
        id = "upper"
        functions = ["PG_READ_FILE"]
        action = "deny"

        [[rule]]
        id = "everything"
        class = "admin"
        action = "review"
        "#,
    );
    let d = decide(
        &shouting,
        &analyst(),
        &pg,
        &select(CommandClass::Admin, &["pg_read_file"]),
    );
    assert_eq!(decided(&d), ("upper", "deny"));
}

#[test]
fn deny_rules_on_relations_see_through_schemas_and_case() {
    let e = engine(
        r#"
        [[rule]]
        id = "no-secrets"
        relations = ["secrets"]
        action = "deny"

        [[rule]]
        id = "reads"
        max_class = "read"
        action = "allow"
        "#,
    );
    let pg = target(Protocol::Postgres);
    let read = |relation: &str| {
        let mut c =
            Command::new(Protocol::Postgres, "SELECT", CommandClass::Read, "SELECT …").unwrap();
        c.push_object(ObjectRef::new(ObjectKind::Relation, relation, Access::Read));
        c
    };
    for name in ["secrets", "public.secrets", "Secrets", "crm.SECRETS"] {
        let d = decide(&e, &analyst(), &pg, &read(name));
        assert_eq!(decided(&d), ("no-secrets", "deny"), "{name}");
    }
    for name in ["secrets_archive", "public.not_secrets", "secrets.orders"] {
        let d = decide(&e, &analyst(), &pg, &read(name));
        assert_eq!(decided(&d), ("reads", "allow"), "{name}");
    }
}

#[test]
fn allow_rules_match_sql_names_exactly() {
    // Widening is never loosened: an allow rule's list matches the name as the classifier
    // writes it, so `lower` does not cover `evil.lower`, which falls to the review rule.
    let e = engine(SQL_POLICY);
    let pg = target(Protocol::Postgres);
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Read, &["evil.lower"]),
    );
    assert_eq!(decided(&d), ("analysts-any-read-reviewed", "review"));
    let d = decide(&e, &analyst(), &pg, &select(CommandClass::Read, &["LOWER"]));
    assert_eq!(decided(&d), ("analysts-any-read-reviewed", "review"));
}

#[test]
fn statements_calling_no_listed_function_fall_through() {
    let e = engine(SQL_POLICY);
    let pg = target(Protocol::Postgres);
    // No call at all: no function rule fires. The allow rule's list only limits which
    // functions may be called, it does not require one.
    let d = decide(&e, &analyst(), &pg, &select(CommandClass::Read, &[]));
    assert_eq!(
        d,
        Decision::Allow {
            rule: RuleId::new("analysts-plain-reads"),
            mask_profile: None
        }
    );
    // Only listed calls: still allowed.
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Read, &["lower", "now"]),
    );
    assert_eq!(decided(&d), ("analysts-plain-reads", "allow"));
    // One call the allow rule does not list: it no longer matches, and the next rule decides.
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &select(CommandClass::Read, &["lower", "md5"]),
    );
    assert_eq!(decided(&d), ("analysts-any-read-reviewed", "review"));
    // Someone the read rules do not cover: nothing matches, default deny.
    let outsider = Principal::new(
        "someone",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap();
    let d = decide(
        &e,
        &outsider,
        &pg,
        &select(CommandClass::Read, &["lower", "md5"]),
    );
    assert_eq!(d, Decision::default_deny());
    // A write calling no listed function passes the function rules and the read rules.
    let d = decide(&e, &analyst(), &pg, &select(CommandClass::Write, &["now"]));
    assert_eq!(d, Decision::default_deny());
}

#[test]
fn redis_functions_match_by_name() {
    let e = engine(
        r#"
        [[rule]]
        id = "no-flush-functions"
        protocols = ["redis"]
        functions = ["flush_*"]
        action = "deny"

        [[rule]]
        id = "read-functions"
        protocols = ["redis"]
        verbs = ["FCALL_RO"]
        functions = ["get_*"]
        action = "allow"
        "#,
    );
    let cache = target(Protocol::Redis);
    let fcall = |verb: &str, class, function: &str| {
        Command::new(Protocol::Redis, verb, class, format!("{verb} {function} 0"))
            .unwrap()
            .with_object(ObjectRef::new(
                ObjectKind::Function,
                function,
                Access::Execute,
            ))
    };
    let d = decide(
        &e,
        &analyst(),
        &cache,
        &fcall("FCALL", CommandClass::Code, "flush_sessions"),
    );
    assert_eq!(decided(&d), ("no-flush-functions", "deny"));
    let d = decide(
        &e,
        &analyst(),
        &cache,
        &fcall("FCALL_RO", CommandClass::Read, "get_profile"),
    );
    assert_eq!(decided(&d), ("read-functions", "allow"));
    let d = decide(
        &e,
        &analyst(),
        &cache,
        &fcall("FCALL_RO", CommandClass::Read, "scan_everything"),
    );
    assert_eq!(d, Decision::default_deny());
}

const HTTP_POLICY: &str = r#"
[[rule]]
id = "no-admin-api"
protocols = ["http"]
paths = ["/admin/*", "/v1/internal/*"]
action = "deny"
reason = "the admin API is for people"

[[rule]]
id = "read-customers"
protocols = ["http"]
verbs = ["GET", "HEAD"]
paths = ["/v1/customers", "/v1/customers/{id}"]
action = "allow"
mask_profile = "pii"

[[rule]]
id = "customer-writes-reviewed"
protocols = ["http"]
max_class = "write"
paths = ["/v1/customers/*"]
action = "review"
reviewers = ["support-leads"]
"#;

/// A request the way `wirewarden-http` turns it into a command: one path object.
fn request(method: &str, class: CommandClass, path: &str) -> Command {
    let access = if class == CommandClass::Read {
        Access::Read
    } else {
        Access::Write
    };
    Command::new(Protocol::Http, method, class, format!("{method} {path}"))
        .unwrap()
        .with_object(ObjectRef::new(ObjectKind::Path, path, access))
}

#[test]
fn paths_match_route_templates_and_raw_paths() {
    let e = engine(HTTP_POLICY);
    let api = target(Protocol::Http);
    let a = analyst();

    let d = decide(
        &e,
        &a,
        &api,
        &request("GET", CommandClass::Read, "/v1/customers/{id}"),
    );
    assert_eq!(
        d,
        Decision::Allow {
            rule: RuleId::new("read-customers"),
            mask_profile: Some("pii".into())
        }
    );
    let d = decide(
        &e,
        &a,
        &api,
        &request("HEAD", CommandClass::Read, "/v1/customers"),
    );
    assert_eq!(decided(&d), ("read-customers", "allow"));

    // `*` runs across `/`: the whole admin tree is denied, whatever the method.
    for (method, class, path) in [
        ("GET", CommandClass::Read, "/admin/users"),
        ("DELETE", CommandClass::Write, "/admin/users/7/sessions"),
        ("GET", CommandClass::Read, "/v1/internal/metrics"),
    ] {
        let d = decide(&e, &a, &api, &request(method, class, path));
        assert_eq!(
            d,
            Decision::Deny {
                rule: RuleId::new("no-admin-api"),
                reason: "the admin API is for people".into()
            },
            "{method} {path}"
        );
    }

    // A write to a customer is not covered by the read rule's verbs: review.
    let d = decide(
        &e,
        &a,
        &api,
        &request("PATCH", CommandClass::Write, "/v1/customers/{id}"),
    );
    assert_eq!(decided(&d), ("customer-writes-reviewed", "review"));
    // So is a read of a path below the template the allow rule lists.
    let d = decide(
        &e,
        &a,
        &api,
        &request("GET", CommandClass::Read, "/v1/customers/{id}/notes"),
    );
    assert_eq!(decided(&d), ("customer-writes-reviewed", "review"));

    // Paths are case-sensitive, and `/v1/customers/*` needs something after the slash.
    for path in ["/V1/Customers", "/v1/orders", "/v1/customersX"] {
        let d = decide(&e, &a, &api, &request("GET", CommandClass::Read, path));
        assert_eq!(d, Decision::default_deny(), "{path}");
    }
}

#[test]
fn unrouted_requests_are_unknown_and_only_rules_naming_unknown_take_them() {
    // wirewarden-http classes a request that matches no route `unknown` and reports its raw
    // path. The allow rule's path glob matches it, but a rule without `class` never matches
    // `unknown`, so it falls to the default deny.
    let e = engine(HTTP_POLICY);
    let api = target(Protocol::Http);
    let d = decide(
        &e,
        &analyst(),
        &api,
        &request("GET", CommandClass::Unknown, "/v1/customers"),
    );
    assert_eq!(d, Decision::default_deny());
    // The same holds for the deny rule, which names no class either; the request is denied
    // all the same, by the default.
    let d = decide(
        &e,
        &analyst(),
        &api,
        &request("GET", CommandClass::Unknown, "/admin/x"),
    );
    assert_eq!(d, Decision::default_deny());
    // A rule that names `unknown` is the only way to take such requests.
    let explicit = engine(&format!(
        "{HTTP_POLICY}\n[[rule]]\nid = \"unrouted\"\nprotocols = [\"http\"]\nclass = \"unknown\"\n\
         paths = [\"/v1/*\"]\naction = \"review\"\n"
    ));
    let d = decide(
        &explicit,
        &analyst(),
        &api,
        &request("GET", CommandClass::Unknown, "/v1/customers"),
    );
    assert_eq!(decided(&d), ("unrouted", "review"));
}

/// An allow rule's object lists pass a command that touches no object of the kind (it
/// covers every one of none): `relations = ["notes"]` allows `SELECT 1`, and would allow a
/// statement whose relation the classifier missed. `require_objects = true` makes such a
/// rule match only commands that touch at least one object of each kind it lists.
#[test]
fn allow_rules_can_require_the_objects_they_list() {
    let policy = |require: bool| {
        format!(
            r#"
[[rule]]
id = "notes"
groups = ["analysts"]
max_class = "read"
relations = ["notes"]
require_objects = {require}
action = "allow"
"#
        )
    };
    let pg = target(Protocol::Postgres);
    let on = |relations: &[&str], functions: &[&str]| {
        let mut c =
            Command::new(Protocol::Postgres, "SELECT", CommandClass::Read, "SELECT …").unwrap();
        for r in relations {
            c.push_object(ObjectRef::new(ObjectKind::Relation, *r, Access::Read));
        }
        for f in functions {
            c.push_object(ObjectRef::new(ObjectKind::Function, *f, Access::Execute));
        }
        c
    };
    let vacuous = engine(&policy(false));
    let strict = engine(&policy(true));
    for (command, loose, required) in [
        (on(&[], &[]), "allow", "deny"),
        (on(&[], &["now"]), "allow", "deny"),
        (on(&["notes"], &[]), "allow", "allow"),
        (on(&["notes", "customers"], &[]), "deny", "deny"),
        (on(&["customers"], &[]), "deny", "deny"),
    ] {
        assert_eq!(
            decide(&vacuous, &analyst(), &pg, &command).outcome(),
            loose,
            "{:?}",
            command.objects
        );
        assert_eq!(
            decide(&strict, &analyst(), &pg, &command).outcome(),
            required,
            "{:?}",
            command.objects
        );
    }
    // Off, the rule set's version is what it was before the option existed.
    let without = policy(false).replace("require_objects = false\n", "");
    assert_eq!(engine(&without).version(), vacuous.version());
    assert_ne!(strict.version(), vacuous.version());

    // Only an allow rule can widen on an object it does not see, and the option needs a list.
    for (bad, says) in [
        (
            "[[rule]]\nid = \"r\"\nrelations = [\"x\"]\nrequire_objects = true\naction = \"deny\"\n",
            "applies to allow rules",
        ),
        (
            "[[rule]]\nid = \"r\"\nrequire_objects = true\naction = \"allow\"\n",
            "needs `relations`",
        ),
    ] {
        let e = RuleEngine::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}

/// `settings` matches the server settings a statement sets, shows or stores (`SET`,
/// `set_config`, `SHOW`, `ALTER ROLE … SET`), named in lower case as the classifier reports
/// them.
#[test]
fn settings_match_the_settings_a_statement_names() {
    let e = engine(
        r#"
[[rule]]
id = "no-role-switch"
settings = ["role", "session_authorization"]
action = "deny"

[[rule]]
id = "timeouts"
groups = ["analysts"]
max_class = "privilege"
settings = ["*_timeout"]
require_objects = true
action = "allow"
"#,
    );
    let pg = target(Protocol::Postgres);
    let set = |name: &str, access: Access| {
        let mut c =
            Command::new(Protocol::Postgres, "SET", CommandClass::Session, "SET …").unwrap();
        c.push_object(ObjectRef::new(ObjectKind::Setting, name, access));
        c
    };
    let d = decide(&e, &analyst(), &pg, &set("role", Access::Write));
    assert_eq!(decided(&d), ("no-role-switch", "deny"));
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &set("statement_timeout", Access::Write),
    );
    assert_eq!(decided(&d), ("timeouts", "allow"));
    let d = decide(
        &e,
        &analyst(),
        &pg,
        &set("statement_timeout", Access::Define),
    );
    assert_eq!(decided(&d), ("timeouts", "allow"));
    let d = decide(&e, &analyst(), &pg, &set("search_path", Access::Write));
    assert_eq!(d.outcome(), "deny");
    assert_ne!(d.rule().as_str(), "timeouts");
}
