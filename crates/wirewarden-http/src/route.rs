//! Route templates and request → command.

/// A request matched to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The template that matched, such as `/customers/{id}`.
    pub template: String,
}
