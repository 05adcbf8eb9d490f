#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod hold;
#[cfg(feature = "http")]
pub mod http;
mod listen;
mod metrics;
mod pipeline;
pub mod postgres;
pub mod redis;
pub mod tls;

pub use error::{Error, Result};
pub use hold::{HeldCommand, PendingReview, ReviewRefusal};
pub use metrics::Metrics;
pub use pipeline::{Decided, NoAuditSink, Pipeline, PipelineBuilder};
pub use {
    wirewarden_audit as audit, wirewarden_core as core, wirewarden_identity as identity,
    wirewarden_mask as mask, wirewarden_policy as policy, wirewarden_review as review,
};
