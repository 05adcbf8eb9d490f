#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod command;
mod decision;
mod error;
mod event;
mod id;
mod principal;
mod target;
mod time;

pub use command::{Access, Command, CommandClass, CommandDigest, ObjectKind, ObjectRef};
pub use decision::{Decision, ReviewRequirement, RuleId};
pub use error::{BoxError, Error, Result};
pub use event::{
    AuditEvent, AuditEventKind, Direction, MaskedCounts, Recording, ReviewOutcome, SessionEndReason,
};
pub use id::{CommandId, EventId, GrantId, ReviewId, SessionId};
pub use principal::{AuthMethod, Principal};
pub use target::{Protocol, Target};
pub use time::Timestamp;

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.

    use std::str::FromStr;

    use crate::{CommandClass, CommandDigest, EventId, Protocol, Timestamp};

    /// Parses `data` as every textual form in core; whatever parses must print back to a
    /// string that parses to the same value.
    pub fn parse_text(data: &[u8]) {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(t) = Timestamp::from_str(s) {
            assert_eq!(t.to_string().parse::<Timestamp>().ok(), Some(t));
        }
        if let Ok(d) = CommandDigest::from_str(s) {
            assert_eq!(d.to_string(), s);
        }
        if let Ok(id) = EventId::from_str(s) {
            assert_eq!(id.to_string().parse::<EventId>().ok(), Some(id));
        }
        if let Ok(c) = CommandClass::from_str(s) {
            assert_eq!(c.as_str().parse::<CommandClass>().ok(), Some(c));
        }
        if let Ok(p) = Protocol::from_str(s) {
            assert_eq!(p.as_str().parse::<Protocol>().ok(), Some(p));
        }
    }
}
