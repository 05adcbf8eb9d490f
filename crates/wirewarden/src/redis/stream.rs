//! Subscriptions: what the relay keeps of each channel, pattern or shard channel a session
//! subscribed to, so that every message it brings is masked with the profile of the
//! decision that allowed the subscription, recorded, charged to budgets, and delivered only
//! while policy still allows it.
//!
//! When the decision is taken again: [`crate::stream`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wirewarden_core::{CommandId, Timestamp};
use wirewarden_mask::Profile;
use wirewarden_redis::Value;

use crate::stream::Opened;

/// What a subscription is to: the three namespaces of Redis pub/sub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// `SUBSCRIBE`: `message` frames.
    Channel,
    /// `PSUBSCRIBE`: `pmessage` frames, named by the pattern.
    Pattern,
    /// `SSUBSCRIBE`: `smessage` frames.
    Shard,
}

/// One channel, pattern or shard channel the server confirmed.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    /// The command that subscribed.
    pub(crate) id: CommandId,
    /// The profile its messages are masked with.
    pub(crate) profile: Arc<Profile>,
    /// The decision it runs under.
    pub(crate) opened: Opened,
}

/// What a published message or a confirmation names: the namespace and the name.
pub(crate) type Key = (Space, Bytes);

/// The session's subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    open: HashMap<Key, Subscription>,
}

impl Subscriptions {
    /// True when the session has none.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Follows a confirmation (`subscribe`, `unsubscribe`, … with the name it confirms):
    /// `opened` is the command it answers, its profile and its decision, if that command
    /// subscribes. Anything else is left alone.
    pub(crate) fn confirmed(
        &mut self,
        v: &Value,
        opened: Option<(CommandId, &Arc<Profile>, &Opened)>,
    ) {
        let Some((word, name)) = word_and_name(v) else {
            return;
        };
        let Some((space, add)) = confirmation(word) else {
            return;
        };
        match (add, opened) {
            (true, Some((id, profile, opened))) => {
                let s = Subscription {
                    id,
                    profile: profile.clone(),
                    opened: opened.clone(),
                };
                self.open.insert((space, name.clone()), s);
            }
            (true, None) => {}
            (false, _) => {
                self.open.remove(&(space, name.clone()));
            }
        }
    }

    /// What a published message (`message`, `pmessage`, `smessage`) names.
    pub(crate) fn key_of_message(v: &Value) -> Option<Key> {
        let (word, name) = word_and_name(v)?;
        let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
        let space = if is("message") {
            Space::Channel
        } else if is("pmessage") {
            Space::Pattern
        } else if is("smessage") {
            Space::Shard
        } else {
            return None;
        };
        Some((space, name.clone()))
    }

    /// The subscription named `key`.
    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut Subscription> {
        self.open.get_mut(key)
    }

    /// When the first decision falls due if no message comes (see
    /// [`Opened::due_at`]); `None` without subscriptions.
    pub(crate) fn next_due(&self, every: Duration) -> Option<Instant> {
        self.open.values().map(|s| s.opened.due_at(every)).min()
    }

    /// The subscriptions whose decision is due at `now`, one per command that subscribed
    /// (its channels share its decision).
    pub(crate) fn due(&self, now: Instant, wall: Timestamp, every: Duration) -> Vec<Key> {
        let mut keys: Vec<(CommandId, &Key)> = self
            .open
            .iter()
            .filter(|(_, s)| s.opened.due(now, wall, every))
            .map(|(k, s)| (s.id, k))
            .collect();
        keys.sort_unstable_by_key(|(id, _)| *id);
        keys.dedup_by_key(|(id, _)| *id);
        keys.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Every subscription the command `id` opened.
    pub(crate) fn of_command(&mut self, id: CommandId) -> impl Iterator<Item = &mut Subscription> {
        self.open.values_mut().filter(move |s| s.id == id)
    }
}

/// The first word of a pub/sub frame and the name after it.
fn word_and_name(v: &Value) -> Option<(&[u8], &Bytes)> {
    let items = v.as_elements()?;
    Some((items.first()?.as_bytes()?, items.get(1)?.as_bytes()?))
}

fn confirmation(word: &[u8]) -> Option<(Space, bool)> {
    const WORDS: [(&str, Space, bool); 6] = [
        ("subscribe", Space::Channel, true),
        ("unsubscribe", Space::Channel, false),
        ("psubscribe", Space::Pattern, true),
        ("punsubscribe", Space::Pattern, false),
        ("ssubscribe", Space::Shard, true),
        ("sunsubscribe", Space::Shard, false),
    ];
    WORDS
        .iter()
        .find(|(w, _, _)| word.eq_ignore_ascii_case(w.as_bytes()))
        .map(|&(_, space, add)| (space, add))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirewarden_core::{Command, CommandClass, Protocol};

    fn frame(words: &[&str]) -> Value {
        Value::Array(
            words
                .iter()
                .map(|w| Value::BulkString(Bytes::copy_from_slice(w.as_bytes())))
                .collect(),
        )
    }

    fn of_message<'s>(subs: &'s mut Subscriptions, v: &Value) -> Option<&'s mut Subscription> {
        subs.get_mut(&Subscriptions::key_of_message(v)?)
    }

    fn opened() -> Opened {
        let command = Command::new(
            Protocol::Redis,
            "SUBSCRIBE",
            CommandClass::Read,
            "SUBSCRIBE a",
        )
        .unwrap();
        Opened::new(command, &[])
    }

    #[test]
    fn messages_find_the_subscription_of_their_channel_or_pattern() {
        let profile = Arc::new(Profile::builder("p").build().unwrap());
        let mut subs = Subscriptions::default();
        let (a, p) = (CommandId::new(), CommandId::new());
        subs.confirmed(
            &frame(&["subscribe", "news", "1"]),
            Some((a, &profile, &opened())),
        );
        subs.confirmed(
            &frame(&["PSUBSCRIBE", "n*", "2"]),
            Some((p, &profile, &opened())),
        );
        assert_eq!(
            of_message(&mut subs, &frame(&["message", "news", "x"]))
                .unwrap()
                .id,
            a
        );
        assert_eq!(
            of_message(&mut subs, &frame(&["pmessage", "n*", "news", "x"]))
                .unwrap()
                .id,
            p
        );
        // The pattern's own messages are not the channel's, nor a shard channel's.
        assert!(of_message(&mut subs, &frame(&["smessage", "news", "x"])).is_none());
        assert!(of_message(&mut subs, &frame(&["message", "n*", "x"])).is_none());
        subs.confirmed(&frame(&["unsubscribe", "news", "1"]), None);
        assert!(of_message(&mut subs, &frame(&["message", "news", "x"])).is_none());
        assert!(!subs.is_empty());
        subs.confirmed(&frame(&["punsubscribe", "n*", "0"]), None);
        assert!(subs.is_empty());
        // A confirmation of a command that did not subscribe registers nothing.
        subs.confirmed(&frame(&["subscribe", "news", "1"]), None);
        assert!(subs.is_empty());
    }
}
