//! Property tests: arbitrary text never panics the loader, and class limits hold for every
//! class and rule shape.

use proptest::prelude::*;
use wirewarden_core::{AuthMethod, Command, CommandClass, Principal, Protocol, Target, Timestamp};
use wirewarden_policy::{PolicyEngine, Request, RuleEngine};

fn class() -> impl Strategy<Value = CommandClass> {
    proptest::sample::select(CommandClass::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        wirewarden_policy::fuzzing::parse_toml(text.as_bytes());
    }

    #[test]
    fn toml_shaped_text_never_panics(
        ids in proptest::collection::vec("[a-z]{1,6}", 0..6),
        fields in proptest::collection::vec(
            proptest::sample::select(vec![
                "class = \"read\"", "max_class = \"unknown\"", "hours = \"22:00-02:00\"",
                "days = [\"sat-tue\"]", "relations = [\"*\"]", "timeout = \"1h1m\"",
                "min_approvals = 3", "reviewers = [\"a\"]", "mask_profile = \"p\"",
                "verbs = [\"SELECT\"]", "keys = [\"a*?\"]", "subjects = [\"*\"]",
            ]),
            0..8,
        ),
        action in proptest::sample::select(vec!["allow", "deny", "review"]),
    ) {
        let mut text = String::new();
        for id in &ids {
            text.push_str(&format!("[[rule]]\nid = \"{id}\"\naction = \"{action}\"\n"));
            for f in &fields {
                text.push_str(f);
                text.push('\n');
            }
        }
        text.push_str("[[budget]]\nid = \"b\"\nmax_rows = 5\nwindow = \"1m\"\n");
        wirewarden_policy::fuzzing::parse_toml(text.as_bytes());
    }

    #[test]
    fn max_class_is_an_upper_bound(limit in class(), asked in class(), secs in 0i64..4_000_000_000) {
        let engine = RuleEngine::from_toml(&format!(
            "[[rule]]\nid = \"r\"\nmax_class = \"{limit}\"\naction = \"allow\"\n"
        )).unwrap();
        let p = Principal::new("s", AuthMethod::External { mechanism: "t".into() }).unwrap();
        let t = Target::new("crm", Protocol::Postgres).unwrap();
        let c = Command::new(Protocol::Postgres, "X", asked, "x").unwrap();
        let now = Timestamp::from_unix_secs(secs).unwrap();
        let allowed = engine.evaluate(&Request::new(&p, &t, &c, now)).decision.is_allow();
        prop_assert_eq!(allowed, asked <= limit);
        if asked == CommandClass::Unknown {
            prop_assert_eq!(allowed, limit == CommandClass::Unknown);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A rule's verbs match as their globs do, whether a name is plain (looked up) or a
    /// pattern (matched), in any case the codec spells the verb.
    #[test]
    fn verb_lists_match_as_their_globs(
        verbs in proptest::collection::vec("[A-Ca-c ]{0,3}[*?]?[A-C]{0,2}", 1..12),
        asked in "[A-Ca-c ]{1,5}",
    ) {
        let list: Vec<String> = verbs.iter().map(|v| format!("{v:?}")).collect();
        let engine = RuleEngine::from_toml(&format!(
            "[[rule]]\nid = \"r\"\nverbs = [{}]\naction = \"allow\"\n",
            list.join(", ")
        )).unwrap();
        let p = Principal::new("s", AuthMethod::External { mechanism: "t".into() }).unwrap();
        let t = Target::new("cache", Protocol::Redis).unwrap();
        let c = Command::new(Protocol::Redis, asked.clone(), CommandClass::Read, "x").unwrap();
        let now = Timestamp::from_unix_secs(1_800_000_000).unwrap();
        let allowed = engine.evaluate(&Request::new(&p, &t, &c, now)).decision.is_allow();
        let upper = asked.to_ascii_uppercase();
        let want = verbs
            .iter()
            .any(|v| wirewarden_policy::Glob::new(v.to_ascii_uppercase()).matches(&upper));
        prop_assert_eq!(allowed, want);
    }
}
