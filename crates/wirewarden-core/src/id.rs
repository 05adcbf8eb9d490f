//! Time-ordered unique identifiers.
//!
//! Every id is a UUIDv7: 48 bits of Unix milliseconds followed by a counter and random bits.
//! Ids made in one process sort in the order they were made (the generator is monotonic
//! even within one millisecond), ids from different gateways sort by time, and all of them
//! store natively in PostgreSQL's `uuid` type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Timestamp};

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, greater than every id of this process made before it.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (read back from storage, say).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the id, in the order that sorts by time.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// The time embedded in the id, to the millisecond, if it is a UUIDv7.
            #[must_use]
            pub fn timestamp(&self) -> Option<Timestamp> {
                let ts = self.0.get_timestamp()?;
                let (secs, nanos) = ts.to_unix();
                Timestamp::from_unix_nanos(
                    i128::from(secs) * 1_000_000_000 + i128::from(nanos),
                )
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                // Only the canonical hyphenated form: an id that can be written two ways
                // would make two audit records for one event look different.
                if s.len() != 36 {
                    return Err(Error::InvalidId { kind: $kind, input: s.to_owned() });
                }
                let uuid = Uuid::try_parse(s)
                    .map_err(|_| Error::InvalidId { kind: $kind, input: s.to_owned() })?;
                if uuid.hyphenated().to_string() != s.to_ascii_lowercase() {
                    return Err(Error::InvalidId { kind: $kind, input: s.to_owned() });
                }
                Ok(Self(uuid))
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

define_id!(
    /// Identifies one client connection through the gateway, from accept to close.
    SessionId,
    "session id"
);
define_id!(
    /// Identifies one audit event; unique across gateways, used to de-duplicate deliveries.
    EventId,
    "event id"
);
define_id!(
    /// Identifies one command within a session, linking its decision to its outcome.
    CommandId,
    "command id"
);
define_id!(
    /// Identifies one request for human review.
    ReviewId,
    "review id"
);
define_id!(
    /// Identifies one just-in-time grant.
    GrantId,
    "grant id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strictly_increasing_within_a_process() {
        let mut last = EventId::new();
        for _ in 0..20_000 {
            let next = EventId::new();
            assert!(next > last, "{next:?} is not after {last:?}");
            last = next;
        }
    }

    #[test]
    fn ids_from_many_threads_are_unique() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..5_000).map(|_| SessionId::new()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<SessionId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn display_and_parse_round_trip() {
        let id = ReviewId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<ReviewId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<ReviewId>().unwrap(), id);
    }

    #[test]
    fn non_canonical_forms_are_rejected() {
        let id = GrantId::new();
        let simple = id.as_uuid().simple().to_string();
        assert!(simple.parse::<GrantId>().is_err());
        let braced = format!("{{{id}}}");
        assert!(braced.parse::<GrantId>().is_err());
        assert!("".parse::<GrantId>().is_err());
        assert!(
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"
                .parse::<GrantId>()
                .is_err()
        );
    }

    #[test]
    fn the_embedded_time_is_now() {
        let before = Timestamp::now();
        let id = CommandId::new();
        let t = id.timestamp().unwrap();
        // Millisecond precision: the id may be up to 1 ms "before" `before`.
        assert!(t.unix_nanos() + 1_000_000 >= before.unix_nanos());
        assert!(t <= Timestamp::now());
    }

    #[test]
    fn serde_is_the_hyphenated_string() {
        let id = SessionId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: SessionId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
