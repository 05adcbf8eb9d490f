#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
#[cfg(feature = "codec")]
pub mod codec;
mod error;
pub mod frame;
pub mod frontend;
mod limits;
pub mod rows;
pub mod session;
pub mod types;
mod wire;

#[doc(hidden)]
pub mod fuzzing;

pub use backend::{Authentication, BackendMessage, CopyResponse, ErrorFields, TransactionStatus};
pub use bytes;
pub use error::{Direction, Error, Result};
pub use frame::{BackendDecoder, Frame, FrameKind, FrontendDecoder};
pub use frontend::{AuthContext, FrontendMessage, ObjectType, ProtocolVersion, StartupMessage};
pub use limits::Limits;
pub use postgres_protocol;
pub use rows::{CellEdit, DataRow, FieldDescription, RowDescription, RowRewriter};
pub use session::{BackendKey, CancelKeys, CopyState, Finished, Phase, RequestId, Session};
pub use types::{Format, Type, Value};
