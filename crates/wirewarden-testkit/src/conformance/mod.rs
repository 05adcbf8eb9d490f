//! Conformance suites for implementations of wirewarden's extension traits.
//!
//! Anyone who implements `AuditSink`, `PolicyEngine`, `IdentityProvider`, `ReviewStore` or
//! `GrantStore` calls the matching suite from an integration test with their implementation;
//! the suites check the behaviour the pipeline relies on (ordering, fail-closed errors,
//! expiry), not just that calls return.

pub mod audit;
pub mod grants;
pub mod identity;
pub mod policy;
pub mod review;
