// The README's example runs the PostgreSQL proxy, so it is the crate documentation (and a
// doctest) only when that proxy is compiled.
#![cfg_attr(feature = "postgres", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "The wirewarden enforcement pipeline and its Redis and HTTP proxies; see README.md."
)]
#![forbid(unsafe_code)]
// The docs link to items behind the default features; without them the links stay text.
#![cfg_attr(not(feature = "postgres"), allow(rustdoc::broken_intra_doc_links))]

mod error;
#[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
#[doc(hidden)]
pub mod fuzzing;
mod hold;
#[cfg(feature = "http")]
pub mod http;
#[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
mod listen;
mod metrics;
mod pipeline;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
mod secret;
#[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
mod stream;
pub mod tls;
pub mod trail;

pub use error::{Error, Result};
pub use hold::{HeldCommand, PendingReview, ReviewRefusal};
pub use metrics::Metrics;
pub use pipeline::{Decided, NoAuditSink, Pipeline, PipelineBuilder};
pub use secret::Secret;
pub use {
    wirewarden_audit as audit, wirewarden_core as core, wirewarden_identity as identity,
    wirewarden_mask as mask, wirewarden_policy as policy, wirewarden_review as review,
};
