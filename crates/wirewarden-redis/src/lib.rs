#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[macro_use]
mod spec;
mod classify;
mod error;
mod frame;
mod inline;
mod interop;
mod session;
mod table;
mod value;
mod wire;

pub use bytes;
pub use classify::{Classified, Risk, classify};
pub use error::{Error, Result};
pub use frame::{Frame, FrameKind, ReplyDecoder, Request, RequestDecoder, encode_args};
pub use inline::split_args;
pub use interop::redis_protocol;
pub use session::{Correlated, OutOfBand, Session, correlate_all};
pub use spec::{
    AclCategories, BeginSearch, CommandFlags, CommandSpec, FindKeys, KeySpec, KeySpecFlags, lookup,
};
pub use table::{COMMANDS, SERVER_VERSION};
pub use value::Value;
pub use wire::{Limits, MAX_DEPTH, RespVersion};
