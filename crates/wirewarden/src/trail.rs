//! What the audit trail keeps of the commands it records.
//!
//! By default a [`CommandDecided`](AuditEventKind::CommandDecided) record holds the
//! command's text as the client sent it (a Redis command line, SQL, `METHOD /path?query`)
//! and its [`CommandDigest`]: the forensic record, but also a copy of every value the agent
//! wrote — a card number in an `INSERT`, a token in a query string, a session blob in a
//! `SET`. Regimes that want such values unreadable wherever they are stored (PCI DSS
//! requirement 3.5 among them) want them masked in the trail too. A pipeline built with
//! [`PipelineBuilder::mask_commands_in_trail`](crate::PipelineBuilder::mask_commands_in_trail)
//! hands every record to its sink through a [`CommandMasker`], which
//!
//! - masks the command text with one mask profile: by content (every detector the profile
//!   runs), and for a Redis command whose keys a key rule of the profile covers, by
//!   withholding its arguments altogether (they may be the values the rule masks);
//! - replaces every digest the trail holds (the command's and the one a review request
//!   binds to) by a keyed one, `BLAKE3-keyed(key, digest)`. A digest of what was sent is
//!   computed by a public function, so next to a masked text it would let anyone with the
//!   trail try the few candidates a masked value leaves (a card number with its first six
//!   and last four digits shown has about 10^5) until one matches; keyed, it still ties the
//!   record to the exact bytes for whoever holds the key ([`CommandMasker::trail_digest`]).
//!
//! What the proxies decide on, what reviewers see in the review store and what they approve
//! (the command's own digest) do not change: only what is written to the trail does.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use wirewarden_core::{AuditEvent, AuditEventKind, Command, CommandDigest, ObjectKind, ObjectRef};
use wirewarden_mask::{Field, MaskedCounts, Profile};

/// The context the gateway derives a trail digest key under from the audit chain key, so
/// the trail's owner keeps one secret (see
/// [`ChainKey::derive_key`](wirewarden_audit::ChainKey::derive_key)).
pub const TRAIL_DIGEST_KEY_CONTEXT: &str = "wirewarden 2026-11-28 trail command digest key";

/// Masks what the trail records of commands: their texts with a profile, their digests
/// with a key. Built by the pipeline from
/// [`PipelineBuilder::mask_commands_in_trail`](crate::PipelineBuilder::mask_commands_in_trail);
/// usable on its own, for example to check a trail digest against a command's bytes.
#[derive(Clone)]
pub struct CommandMasker {
    profile: Arc<Profile>,
    key: [u8; 32],
}

impl fmt::Debug for CommandMasker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandMasker")
            .field("profile", &self.profile.name())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CommandMasker {
    /// A masker that masks texts with `profile` and keys digests with `key`.
    #[must_use]
    pub fn new(profile: Arc<Profile>, key: [u8; 32]) -> Self {
        Self { profile, key }
    }

    /// The profile command texts are masked with.
    #[must_use]
    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    /// The digest the trail records for a command whose own digest is `digest`.
    #[must_use]
    pub fn trail_digest(&self, digest: &CommandDigest) -> CommandDigest {
        CommandDigest::from_bytes(*blake3::keyed_hash(&self.key, digest.as_bytes()).as_bytes())
    }

    /// `command` as the trail keeps it: its text and the names of the objects it touches
    /// masked (a key such as `user:ada@example.com` names a person), its digest keyed;
    /// every other field as it is.
    #[must_use]
    pub fn command(&self, command: &Command) -> Command {
        let mut out = command.clone();
        self.mask_command(&mut out);
        out
    }

    /// `event` as the trail keeps it, or `None` when it records no command text or digest
    /// and goes to the trail as it is.
    #[must_use]
    pub fn event(&self, event: &AuditEvent) -> Option<AuditEvent> {
        if !Self::event_changes(event) {
            return None;
        }
        let mut out = event.clone();
        match &mut out.kind {
            AuditEventKind::CommandDecided { command, .. } => self.mask_command(command),
            AuditEventKind::ReviewRequested { digest, .. } => {
                *digest = self.trail_digest(digest);
            }
            _ => {}
        }
        Some(out)
    }

    /// `events` as the trail keeps them: borrowed when none of them records a command.
    #[must_use]
    pub fn events<'a>(&self, events: &'a [AuditEvent]) -> Cow<'a, [AuditEvent]> {
        let Some(first) = events.iter().position(Self::event_changes) else {
            return Cow::Borrowed(events);
        };
        let mut out = Vec::with_capacity(events.len());
        out.extend_from_slice(&events[..first]);
        for e in &events[first..] {
            out.push(self.event(e).unwrap_or_else(|| e.clone()));
        }
        Cow::Owned(out)
    }

    fn event_changes(event: &AuditEvent) -> bool {
        matches!(
            event.kind,
            AuditEventKind::CommandDecided { .. } | AuditEventKind::ReviewRequested { .. }
        )
    }

    /// Masks `command` in place: its digest keyed, its object names and text masked.
    fn mask_command(&self, command: &mut Command) {
        command.digest = self.trail_digest(&command.digest);
        // A key rule masks the values stored under its keys whole, and a command's
        // arguments past its keys may be such values (`SET session:1 {...}`, `HSET`,
        // `XADD`): content detectors would miss what only the rule knows to mask. Looked
        // up on the names as sent, before they are masked.
        let covered = command
            .objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Key)
            .find_map(|o| self.profile.rule_for(&Field::RedisKey(o.name.as_bytes())))
            .map(|rule| rule.entity.clone());
        let sent = key_names(&command.objects);
        for o in &mut command.objects {
            if let Some(name) = self.masked(&o.name) {
                o.name = name;
            }
        }
        let verb = &command.verb;
        let text = match covered {
            Some(entity) => {
                let kept = key_names(&command.objects);
                // Nothing but the verb and the keys: nothing under the rule was sent.
                if command.text.strip_prefix(verb.as_str()) == Some(sent.as_str()) {
                    (kept != sent).then(|| format!("{verb}{kept}"))
                } else {
                    Some(format!("{verb}{kept} (arguments withheld: {entity})"))
                }
            }
            None => match self.mask(&command.text) {
                Ok(masked) => masked,
                Err(why) => Some(format!("{verb} (text {why})")),
            },
        };
        if let Some(text) = text {
            command.text = text;
        }
    }

    /// `name` masked by content, or `None` when it stands as it is.
    fn masked(&self, name: &str) -> Option<String> {
        match self.mask(name) {
            Ok(masked) => masked,
            Err(why) => Some(format!("(name {why})")),
        }
    }

    /// `text` masked by content: `Ok(None)` when it stands as it is, `Err` saying why it is
    /// withheld when the profile cannot mask it (it is not kept in clear) or masks it to
    /// nothing.
    fn mask(&self, text: &str) -> Result<Option<String>, String> {
        let mut counts = MaskedCounts::new();
        match self
            .profile
            .mask_text(&Field::Unknown, Cow::Borrowed(text), &mut counts)
        {
            Ok(Some(Cow::Borrowed(_))) => Ok(None),
            Ok(Some(Cow::Owned(masked))) => Ok(Some(masked)),
            Ok(None) => Err("withheld".to_owned()),
            Err(e) => Err(format!("withheld: {e}")),
        }
    }
}

/// The names of the keys among `objects`, each after a space.
fn key_names(objects: &[ObjectRef]) -> String {
    objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Key)
        .flat_map(|o| [" ", o.name.as_str()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirewarden_core::{
        Access, CommandClass, CommandId, Decision, Protocol, ReviewId, ReviewRequirement, RuleId,
        SessionId, Target,
    };
    use wirewarden_mask::{FieldRule, Limits, Selector, Strategy};

    const KEY: [u8; 32] = [7; 32];

    fn masker(profile: Profile) -> CommandMasker {
        CommandMasker::new(Arc::new(profile), KEY)
    }

    fn decided(command: Command) -> AuditEvent {
        AuditEvent::new(
            Some(SessionId::new()),
            AuditEventKind::CommandDecided {
                command_id: CommandId::new(),
                subject: "agent".into(),
                command,
                decision: Decision::Allow {
                    rule: RuleId::new("r"),
                    mask_profile: None,
                },
                policy_version: "v".into(),
            },
        )
    }

    fn command_of(event: &AuditEvent) -> &Command {
        match &event.kind {
            AuditEventKind::CommandDecided { command, .. } => command,
            other => panic!("not a decision: {other:?}"),
        }
    }

    #[test]
    fn values_in_a_statement_are_masked_and_the_digest_is_keyed() {
        let sql = "INSERT INTO cards VALUES ('4111 1111 1111 1111', '123-45-6789')";
        let command = Command::new(Protocol::Postgres, "INSERT", CommandClass::Write, sql).unwrap();
        let m = masker(Profile::builder("pci").build().unwrap());
        let kept = m.command(&command);
        assert!(!kept.text.contains("4111 1111 1111 1111"), "{}", kept.text);
        assert!(!kept.text.contains("123-45-6789"), "{}", kept.text);
        assert!(
            kept.text.starts_with("INSERT INTO cards VALUES ("),
            "{}",
            kept.text
        );
        assert_eq!(kept.verb, command.verb);
        assert_ne!(kept.digest, command.digest);
        assert_eq!(kept.digest, m.trail_digest(&command.digest));
        // The keyed digest depends on the key: without it, it cannot be recomputed.
        let other = CommandMasker::new(m.profile().clone(), [8; 32]);
        assert_ne!(other.trail_digest(&command.digest), kept.digest);
    }

    #[test]
    fn a_clean_text_stands_but_its_digest_is_keyed_all_the_same() {
        let command = Command::new(
            Protocol::Postgres,
            "SELECT",
            CommandClass::Read,
            "SELECT id FROM notes",
        )
        .unwrap();
        let m = masker(Profile::builder("pci").build().unwrap());
        let kept = m.command(&command);
        assert_eq!(kept.text, command.text);
        assert_eq!(kept.digest, m.trail_digest(&command.digest));
    }

    #[test]
    fn a_key_rule_withholds_the_arguments_of_a_command_on_its_keys() {
        let profile = Profile::builder("sessions")
            .rule(FieldRule::new(
                Selector::redis_key("session:*"),
                Strategy::redact(),
            ))
            .build()
            .unwrap();
        let m = masker(profile);
        let mut set = Command::new(
            Protocol::Redis,
            "SET",
            CommandClass::Write,
            r#"SET session:1 "{\"password\":\"hunter2\"}""#,
        )
        .unwrap();
        set.objects = vec![ObjectRef::new(ObjectKind::Key, "session:1", Access::Write)];
        let kept = m.command(&set);
        assert!(!kept.text.contains("hunter2"), "{}", kept.text);
        assert!(
            kept.text.starts_with("SET session:1 (arguments withheld"),
            "{}",
            kept.text
        );
        // A read names only the key: nothing to withhold.
        let mut get =
            Command::new(Protocol::Redis, "GET", CommandClass::Read, "GET session:1").unwrap();
        get.objects = vec![ObjectRef::new(ObjectKind::Key, "session:1", Access::Read)];
        assert_eq!(m.command(&get).text, "GET session:1");
    }

    #[test]
    fn key_names_that_hold_a_value_are_masked_in_text_and_objects() {
        let m = masker(Profile::builder("pci").build().unwrap());
        let mut get = Command::new(
            Protocol::Redis,
            "GET",
            CommandClass::Read,
            "GET user:ada@example.com",
        )
        .unwrap();
        get.objects = vec![ObjectRef::new(
            ObjectKind::Key,
            "user:ada@example.com",
            Access::Read,
        )];
        let kept = m.command(&get);
        assert!(!kept.text.contains("ada@example.com"), "{}", kept.text);
        assert!(kept.text.starts_with("GET user:"), "{}", kept.text);
        assert!(
            kept.objects[0].name.starts_with("user:"),
            "{:?}",
            kept.objects
        );
        assert!(!kept.objects[0].name.contains("ada@example.com"));
        assert_eq!(kept.objects[0].kind, ObjectKind::Key);
    }

    #[test]
    fn a_text_the_profile_cannot_mask_is_withheld() {
        let profile = Profile::builder("small")
            .limits(Limits {
                max_value_len: 16,
                ..Limits::default()
            })
            .build()
            .unwrap();
        let m = masker(profile);
        let command = Command::new(
            Protocol::Redis,
            "SET",
            CommandClass::Write,
            "SET k 4111111111111111-and-more",
        )
        .unwrap();
        let kept = m.command(&command);
        assert!(
            kept.text.starts_with("SET (text withheld: "),
            "{}",
            kept.text
        );
        assert!(!kept.text.contains("4111"), "{}", kept.text);
    }

    #[test]
    fn only_records_of_commands_change() {
        let m = masker(Profile::builder("pci").build().unwrap());
        let command = Command::new(
            Protocol::Http,
            "GET",
            CommandClass::Read,
            "GET /customers?email=ada@example.com",
        )
        .unwrap();
        let ended = AuditEvent::new(
            None,
            AuditEventKind::SessionEnded {
                reason: wirewarden_core::SessionEndReason::ClientClosed,
                commands: 1,
                duration_us: 5,
            },
        );
        assert!(m.event(&ended).is_none());
        assert!(matches!(
            m.events(std::slice::from_ref(&ended)),
            Cow::Borrowed(_)
        ));

        let requested = AuditEvent::new(
            None,
            AuditEventKind::ReviewRequested {
                review_id: ReviewId::new(),
                command_id: CommandId::new(),
                digest: command.digest,
                requester: "agent".into(),
                target: Target::new("api", Protocol::Http).unwrap(),
                reason: "writes".into(),
                requirement: ReviewRequirement::one_of("dba", std::time::Duration::from_secs(60)),
            },
        );
        let batch = [ended.clone(), decided(command.clone()), requested];
        let kept = m.events(&batch);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0], ended);
        let c = command_of(&kept[1]);
        assert!(!c.text.contains("ada@example.com"), "{}", c.text);
        assert_eq!(kept[1].id, batch[1].id);
        assert_eq!(kept[1].time, batch[1].time);
        match &kept[2].kind {
            AuditEventKind::ReviewRequested { digest, .. } => {
                assert_eq!(*digest, m.trail_digest(&command.digest));
                // The decision and the review request still name the same digest.
                assert_eq!(*digest, c.digest);
            }
            other => panic!("{other:?}"),
        }
    }
}
