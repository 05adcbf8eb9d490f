#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// The docs link to items behind the default features; without them the links stay text.
#![cfg_attr(
    not(all(feature = "webhook", feature = "postgres")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod notify;
#[cfg(feature = "postgres")]
pub mod postgres;
mod review;
mod service;
mod store;

use wirewarden_core::{BoxError, ReviewId};

pub use notify::{Notification, Notifier, slack_message};
#[cfg(feature = "webhook")]
pub use notify::{WebhookError, WebhookNotifier};
pub use review::{
    Approval, ApprovalScope, Binding, DEFAULT_APPROVAL_TTL, MAX_GRANT, Operation, Review,
    ReviewState, Reviewer, Status,
};
pub use service::{Requested, Resolution, Reviews};
pub use store::{MemoryReviewStore, ReviewStore};
pub use {wirewarden_core, wirewarden_policy};

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the review workflow. Rule violations are typed so that an admin API can answer
/// precisely (403 for [`Error::SelfReview`], 409 for [`Error::NotPending`], …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No review has this id.
    #[error("review {id} not found")]
    NotFound {
        /// The id.
        id: ReviewId,
    },
    /// A review with this id already exists.
    #[error("review {id} already exists")]
    Duplicate {
        /// The id.
        id: ReviewId,
    },
    /// The requester tried to approve or deny their own command.
    #[error("{subject} cannot review their own command")]
    SelfReview {
        /// Who tried.
        subject: String,
    },
    /// The reviewer is in none of the required groups.
    #[error("{subject} is not in any of the reviewer groups {groups:?}")]
    NotAReviewer {
        /// Who tried.
        subject: String,
        /// The groups that may review.
        groups: Vec<String>,
    },
    /// The same subject approved twice; approvals must come from distinct people.
    #[error("{subject} has already approved")]
    AlreadyApproved {
        /// Who.
        subject: String,
    },
    /// The review has expired (nobody decided in time, or the approval was not used in
    /// time).
    #[error("review {id} has expired")]
    Expired {
        /// The id.
        id: ReviewId,
    },
    /// The review is not in a state that allows this.
    #[error("review {id} is {status}")]
    NotPending {
        /// The id.
        id: ReviewId,
        /// Its status.
        status: Status,
    },
    /// The command presented is not the one that was approved.
    #[error("review {id} does not cover this command: the {what} differs")]
    BindingMismatch {
        /// The id.
        id: ReviewId,
        /// `command digest`, `requester` or `target`.
        what: &'static str,
    },
    /// The approval scope is not allowed.
    #[error("invalid approval scope: {reason}")]
    InvalidScope {
        /// Why.
        reason: &'static str,
    },
    /// The request for review is invalid.
    #[error("invalid review request: {reason}")]
    InvalidRequest {
        /// Why.
        reason: &'static str,
    },
    /// The backing store failed.
    #[error("review store: {0}")]
    Store(#[source] BoxError),
}
