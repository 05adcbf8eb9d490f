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
    AuditEvent, AuditEventKind, Direction, MaskedCounts, ReviewOutcome, SessionEndReason,
};
pub use id::{CommandId, EventId, GrantId, ReviewId, SessionId};
pub use principal::{AuthMethod, Principal};
pub use target::{Protocol, Target};
pub use time::Timestamp;
