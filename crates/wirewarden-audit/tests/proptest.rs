//! Property tests: arbitrary bytes never panic the decoders, and generated events
//! round-trip byte for byte through the canonical encoding.

use proptest::prelude::*;
use wirewarden_audit::{decode_event, encode_event, fuzzing};
use wirewarden_core::{
    AuditEvent, AuditEventKind, Command, CommandClass, CommandId, Decision, Direction,
    MaskedCounts, Protocol, Recording, RuleId, SessionId,
};

fn event() -> impl Strategy<Value = AuditEvent> {
    (
        any::<String>(),
        any::<u64>(),
        any::<bool>(),
        any::<Option<String>>(),
        0usize..8,
        "[a-zA-Z]{1,12}",
    )
        .prop_map(|(text, n, flag, opt, class, verb)| {
            let kind = if class % 3 == 0 {
                // A completion, with a reply (tag 15) or without (tag 5).
                let mut masked = MaskedCounts::new();
                masked.add(&verb, n);
                AuditEventKind::CommandCompleted {
                    command_id: CommandId::new(),
                    rows: n,
                    bytes: n.rotate_left(7),
                    masked,
                    duration_us: n / 3,
                    error: opt,
                    reply: flag.then(|| Recording::new(text, n % 2 == 0)),
                }
            } else if flag {
                AuditEventKind::Transcript {
                    command_id: opt.as_ref().map(|_| CommandId::new()),
                    direction: if n % 2 == 0 {
                        Direction::FromClient
                    } else {
                        Direction::FromUpstream
                    },
                    elapsed_us: n,
                    text,
                    truncated: opt.is_some(),
                }
            } else {
                AuditEventKind::CommandDecided {
                    command_id: CommandId::new(),
                    subject: opt.clone().unwrap_or_default(),
                    command: Command::new(Protocol::Redis, verb, CommandClass::ALL[class], text)
                        .unwrap(),
                    decision: Decision::Allow {
                        rule: RuleId::new("r"),
                        mask_profile: opt.map(std::sync::Arc::from),
                    },
                    policy_version: n.to_string(),
                }
            };
            AuditEvent::new(Some(SessionId::new()), kind)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn events_round_trip(e in event()) {
        let bytes = encode_event(&e).unwrap();
        let back = decode_event(&bytes).unwrap();
        prop_assert_eq!(&back, &e);
        prop_assert_eq!(encode_event(&back).unwrap(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::decode_segment(&data);
    }

    #[test]
    fn corrupted_events_never_panic(e in event(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode_event(&e).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        fuzzing::decode_segment(&bytes);
    }
}
