//! HTTP inspection for wirewarden: every request becomes a [`Command`] that a policy can
//! decide on, and every response body that leaves a masked route is masked while it streams,
//! whatever its transfer or content encoding.
//!
//! The crate is a set of [`tower`] pieces with no opinion on identity, policy or audit; an
//! embedder supplies those through the [`Gate`] trait (the `wirewarden` crate implements it
//! with its enforcement pipeline):
//!
//! - [`strict`] rejects the request shapes behind request smuggling (conflicting
//!   `Content-Length`/`Transfer-Encoding`, obfuscated `Transfer-Encoding`, oversized heads)
//!   and strips hop-by-hop headers;
//! - [`route`] matches a request to a route template and builds its [`Command`];
//! - [`body`] masks response bodies (JSON by key rules and by content, split values across
//!   chunks included; forms pair by pair on their decoded names and values; gzip, deflate
//!   and brotli decoded and re-encoded under size and ratio caps) and refuses what it cannot
//!   mask;
//! - [`inspect`] composes them as a [`tower::Layer`] in front of any upstream service.
//!
//! [`Command`]: wirewarden_core::Command

pub mod body;
pub mod encoding;
mod gate;
pub mod inspect;
mod markup;
mod rejection;
pub mod route;
pub mod server;
pub mod strict;
pub mod upstream;

/// The rustls version whose `ClientConfig` and `ServerName` configure
/// [`upstream::TlsConnector`].
pub use rustls;

pub use gate::{Admission, Forward, Gate, OnComplete, Outcome, Verdict};
pub use rejection::Rejection;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
