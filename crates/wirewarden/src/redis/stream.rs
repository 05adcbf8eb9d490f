//! Subscriptions: what the relay keeps of each channel, pattern or shard channel a session
//! subscribed to, so that every message it brings is masked with the profile of the
//! decision that allowed the subscription, recorded, charged to budgets, and delivered only
//! while policy still allows it.
//!
//! When the decision is taken again: [`crate::stream`].

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use wirewarden_core::CommandId;
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

/// The session's subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    open: HashMap<(Space, Bytes), Subscription>,
}

impl Subscriptions {
    /// True when the session has none.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Follows a confirmation (`subscribe`, `unsubscribe`, … with the name it confirms):
    /// `opened` is the decision of the command it answers, if that command subscribes.
    /// Anything else is left alone.
    pub(crate) fn confirmed(
        &mut self,
        v: &Value,
        id: CommandId,
        profile: &Arc<Profile>,
        opened: Option<&Opened>,
    ) {
        let Some((word, name)) = word_and_name(v) else {
            return;
        };
        let Some((space, add)) = confirmation(&word) else {
            return;
        };
        if add {
            if let Some(opened) = opened {
                self.open.insert(
                    (space, name),
                    Subscription {
                        id,
                        profile: profile.clone(),
                        opened: opened.clone(),
                    },
                );
            }
        } else {
            self.open.remove(&(space, name));
        }
    }

    /// The subscription a published message (`message`, `pmessage`, `smessage`) belongs to.
    pub(crate) fn of_message(&mut self, v: &Value) -> Option<&mut Subscription> {
        let (word, name) = word_and_name(v)?;
        let space = match &word[..] {
            b"message" => Space::Channel,
            b"pmessage" => Space::Pattern,
            b"smessage" => Space::Shard,
            _ => return None,
        };
        self.open.get_mut(&(space, name))
    }
}

/// The lowercase first word of a pub/sub frame and the name after it.
fn word_and_name(v: &Value) -> Option<(Vec<u8>, Bytes)> {
    let items = v.as_elements()?;
    let word = items.first()?.as_bytes()?.to_ascii_lowercase();
    let name = items.get(1)?.as_bytes()?.clone();
    Some((word, name))
}

fn confirmation(word: &[u8]) -> Option<(Space, bool)> {
    Some(match word {
        b"subscribe" => (Space::Channel, true),
        b"unsubscribe" => (Space::Channel, false),
        b"psubscribe" => (Space::Pattern, true),
        b"punsubscribe" => (Space::Pattern, false),
        b"ssubscribe" => (Space::Shard, true),
        b"sunsubscribe" => (Space::Shard, false),
        _ => return None,
    })
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
            a,
            &profile,
            Some(&opened()),
        );
        subs.confirmed(
            &frame(&["PSUBSCRIBE", "n*", "2"]),
            p,
            &profile,
            Some(&opened()),
        );
        assert_eq!(
            subs.of_message(&frame(&["message", "news", "x"]))
                .unwrap()
                .id,
            a
        );
        assert_eq!(
            subs.of_message(&frame(&["pmessage", "n*", "news", "x"]))
                .unwrap()
                .id,
            p
        );
        // The pattern's own messages are not the channel's, nor a shard channel's.
        assert!(
            subs.of_message(&frame(&["smessage", "news", "x"]))
                .is_none()
        );
        assert!(subs.of_message(&frame(&["message", "n*", "x"])).is_none());
        subs.confirmed(&frame(&["unsubscribe", "news", "1"]), a, &profile, None);
        assert!(subs.of_message(&frame(&["message", "news", "x"])).is_none());
        assert!(!subs.is_empty());
        subs.confirmed(&frame(&["punsubscribe", "n*", "0"]), p, &profile, None);
        assert!(subs.is_empty());
        // A confirmation of a command that did not subscribe registers nothing.
        subs.confirmed(&frame(&["subscribe", "news", "1"]), a, &profile, None);
        assert!(subs.is_empty());
    }
}
