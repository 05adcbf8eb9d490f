//! Time-ordered unique identifiers.
//!
//! Every id is a UUIDv7: 48 bits of Unix milliseconds followed by a counter and random bits.
//! Ids made in one process sort in the order they were made (the generator is monotonic
//! even within one millisecond), ids from different gateways sort by time, and all of them
//! store natively in PostgreSQL's `uuid` type.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Timestamp};

/// The last id made in this process: its Unix milliseconds above a 12-bit counter.
static LAST: AtomicU64 = AtomicU64::new(0);

/// How many random words a thread draws from the system at once.
const RANDOM_WORDS: usize = 256;

thread_local! {
    /// Random words from the operating system's CSPRNG, used up from the end.
    static RANDOM: RefCell<([u64; RANDOM_WORDS], usize)> =
        const { RefCell::new(([0; RANDOM_WORDS], 0)) };
}

/// 64 random bits from the operating system's CSPRNG, drawn two kilobytes at a time
/// (one system call per [`RANDOM_WORDS`] ids instead of one per id).
fn random_word() -> u64 {
    RANDOM.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (words, left) = &mut *guard;
        if *left == 0 {
            let mut bytes = [0u8; RANDOM_WORDS * 8];
            if getrandom::fill(&mut bytes).is_err() {
                // No system randomness now: the random half of a fresh UUIDv7 from the
                // `uuid` crate's generator instead.
                return Uuid::now_v7().as_u64_pair().1;
            }
            for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *w = u64::from_le_bytes(a);
            }
            *left = RANDOM_WORDS;
        }
        *left -= 1;
        words[*left]
    })
}

/// A UUIDv7 (RFC 9562) for `now`, greater than every id made before it in this process:
/// 48 bits of Unix milliseconds, a 12-bit counter in `rand_a` (method 1 of RFC 9562 §6.2;
/// the timestamp runs ahead by a millisecond when 4,096 ids are made within one), and 62
/// random bits.
fn next_v7(now: Timestamp) -> Uuid {
    let ms = u64::try_from(now.unix_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let floor = ms << 12;
    let mut prev = LAST.load(Ordering::Relaxed);
    let next = loop {
        let next = floor.max(prev.wrapping_add(1));
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => prev = seen,
        }
    };
    let high = ((next >> 12) << 16) | (0x7 << 12) | (next & 0xfff);
    let low = (random_word() >> 2) | (0b10 << 62);
    Uuid::from_u64_pair(high, low)
}

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
                Self(next_v7(Timestamp::now()))
            }

            /// A new id whose embedded time is `now` (or later, to stay greater than every
            /// id of this process made before it): for a record that carries both.
            #[must_use]
            pub fn at(now: Timestamp) -> Self {
                Self(next_v7(now))
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
    fn ids_are_rfc_9562_version_7_and_carry_random_bits() {
        let a = EventId::new();
        let b = CommandId::new();
        for id in [a.as_uuid(), b.as_uuid()] {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        // Different kinds share one sequence.
        assert!(b.as_uuid() > a.as_uuid());
        // 62 random bits: two ids made back to back differ there too.
        let low = |u: &Uuid| u.as_u64_pair().1 & ((1 << 62) - 1);
        assert_ne!(low(a.as_uuid()), low(b.as_uuid()));
    }

    #[test]
    fn many_ids_within_one_millisecond_stay_ordered_and_near_their_time() {
        // More ids than the 12-bit counter holds, all stamped with the same instant: the
        // timestamp runs ahead rather than the order breaking.
        let now = Timestamp::now();
        let mut last = EventId::at(now);
        for _ in 0..10_000 {
            let next = EventId::at(now);
            assert!(next > last, "{next:?} is not after {last:?}");
            last = next;
        }
        let t = last.timestamp().unwrap();
        assert!(
            t >= Timestamp::from_unix_nanos(i128::from(now.unix_millis()) * 1_000_000).unwrap()
        );
        assert!(
            t.unix_millis() - now.unix_millis() <= 1_000,
            "{t:?} ran far ahead of {now:?}"
        );
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
        // Never behind, and ahead only by the milliseconds the counter ran over (more than
        // 4,096 ids within one, as another test here makes).
        assert!(t.unix_millis() <= Timestamp::now().unix_millis() + 50);
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
