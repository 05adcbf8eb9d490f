//! `LISTEN`: the channels a session listens on, each with the decision of the statement that
//! started it, so that every notification on it is masked with that decision's profile,
//! recorded as that statement's transcript, charged to budgets, and delivered only while
//! policy still allows it (when the decision is taken again: [`crate::stream`]).
//!
//! A channel is taken on at the decision that allows its `LISTEN` (the server listens from
//! the statement's commit on, and a `LISTEN` that fails or rolls back leaves an entry for a
//! channel that brings nothing). `UNLISTEN` and `DISCARD ALL` let it go at theirs. A
//! notification on a channel the session holds no decision for (a `LISTEN` run inside a
//! function, or an `UNLISTEN` that rolled back) is withheld.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirewarden_core::{CommandId, ObjectKind, Timestamp};
use wirewarden_mask::Profile;
use wirewarden_sql::Analysis;

use crate::stream::Opened;

/// What a statement does to the session's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// `LISTEN name`.
    Listen(String),
    /// `UNLISTEN name`.
    Unlisten(String),
    /// `UNLISTEN *`, `DISCARD ALL`.
    UnlistenAll,
}

/// What the statements of `analysis` do to the session's channels, in order; empty (and
/// not allocated) for the statements that do nothing to them.
pub(crate) fn changes(analysis: &Analysis) -> Vec<Change> {
    let mut out = Vec::new();
    for s in &analysis.statements {
        let channel = || {
            s.objects
                .iter()
                .find(|o| o.kind == ObjectKind::Channel)
                .map(|o| o.name.clone())
        };
        match s.verb.as_str() {
            "LISTEN" => {
                if let Some(c) = channel() {
                    out.push(Change::Listen(c));
                }
            }
            "UNLISTEN" => out.push(channel().map_or(Change::UnlistenAll, Change::Unlisten)),
            "DISCARD ALL" => out.push(Change::UnlistenAll),
            _ => {}
        }
    }
    out
}

/// One channel, with the decision its notifications go out under.
#[derive(Debug, Clone)]
pub(crate) struct Listening {
    /// The statement that started it.
    pub(crate) id: CommandId,
    /// The profile its notifications are masked with.
    pub(crate) profile: Arc<Profile>,
    /// The decision it runs under.
    pub(crate) opened: Opened,
}

/// The session's channels.
#[derive(Debug, Default)]
pub(crate) struct Listens {
    open: HashMap<String, Listening>,
}

impl Listens {
    /// Applies what an allowed statement does to the channels: `id`, `profile` and
    /// `opened` are its decision.
    pub(crate) fn apply(
        &mut self,
        changes: &[Change],
        id: CommandId,
        profile: &Arc<Profile>,
        opened: &Opened,
    ) {
        for c in changes {
            match c {
                Change::Listen(name) => {
                    self.open.insert(
                        name.clone(),
                        Listening {
                            id,
                            profile: profile.clone(),
                            opened: opened.clone(),
                        },
                    );
                }
                Change::Unlisten(name) => {
                    self.open.remove(name);
                }
                Change::UnlistenAll => self.open.clear(),
            }
        }
    }

    /// When the first decision falls due if no notification comes (see
    /// [`Opened::due_at`]); `None` when the session listens on nothing.
    pub(crate) fn next_due(&self, every: Duration) -> Option<Instant> {
        self.open.values().map(|l| l.opened.due_at(every)).min()
    }

    /// The channels whose decision is due at `now`.
    pub(crate) fn due(&self, now: Instant, wall: Timestamp, every: Duration) -> Vec<String> {
        self.open
            .iter()
            .filter(|(_, l)| l.opened.due(now, wall, every))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The channel named `channel` as the server sends it.
    pub(crate) fn get_mut(&mut self, channel: &[u8]) -> Option<&mut Listening> {
        let name = std::str::from_utf8(channel).ok()?;
        self.open.get_mut(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirewarden_core::{Command, CommandClass, Protocol};
    use wirewarden_sql::Classifier;

    fn of(sql: &str) -> Vec<Change> {
        changes(&Classifier::new().classify(sql))
    }

    #[test]
    fn statements_say_what_they_do_to_channels() {
        assert_eq!(of("SELECT 1"), vec![]);
        assert_eq!(of("LISTEN Jobs"), vec![Change::Listen("jobs".into())]);
        assert_eq!(
            of("LISTEN \"Jobs\"; UNLISTEN other; UNLISTEN *; DISCARD ALL"),
            vec![
                Change::Listen("Jobs".into()),
                Change::Unlisten("other".into()),
                Change::UnlistenAll,
                Change::UnlistenAll,
            ]
        );
        assert_eq!(of("NOTIFY jobs, 'x'"), vec![]);
    }

    #[test]
    fn channels_follow_listen_and_unlisten() {
        let profile = Arc::new(Profile::builder("p").build().unwrap());
        let command =
            Command::new(Protocol::Postgres, "LISTEN", CommandClass::Read, "LISTEN a").unwrap();
        let opened = Opened::new(command, &[]);
        let mut l = Listens::default();
        let (a, b) = (CommandId::new(), CommandId::new());
        l.apply(&of("LISTEN a; LISTEN b"), a, &profile, &opened);
        assert_eq!(l.get_mut(b"a").unwrap().id, a);
        l.apply(&of("LISTEN b"), b, &profile, &opened);
        assert_eq!(l.get_mut(b"b").unwrap().id, b);
        l.apply(&of("UNLISTEN a"), b, &profile, &opened);
        assert!(l.get_mut(b"a").is_none());
        assert!(l.get_mut(b"b").is_some());
        l.apply(&of("DISCARD ALL"), b, &profile, &opened);
        assert!(l.get_mut(b"b").is_none());
        assert!(l.get_mut(b"\xff").is_none());
    }
}
