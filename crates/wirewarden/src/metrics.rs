//! Counters every session updates, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide counters. Cheap to update (relaxed atomics) from every session.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions that authenticated.
    pub sessions_started: AtomicU64,
    /// Sessions open now.
    pub sessions_active: AtomicI64,
    /// Failed client authentications.
    pub auth_failures: AtomicU64,
    /// Commands allowed.
    pub commands_allowed: AtomicU64,
    /// Commands denied (by policy, by a failed audit write, or after review).
    pub commands_denied: AtomicU64,
    /// Commands held for review.
    pub commands_reviewed: AtomicU64,
    /// Rows (or elements) sent to clients.
    pub rows: AtomicU64,
    /// Values masked.
    pub values_masked: AtomicU64,
    /// Results withheld because a value could not be masked.
    pub results_withheld: AtomicU64,
    /// Protocol errors from either peer.
    pub protocol_errors: AtomicU64,
    /// Upstream connections or logins that failed (the client's session could not start).
    pub upstream_failures: AtomicU64,
    /// Requests refused before their client authenticated (answered `-NOAUTH` and the
    /// like), counted when the connection's summary is recorded.
    pub refused_before_login: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text exposition format.
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 11] = [
            (
                "wirewarden_sessions_started_total",
                "Sessions that authenticated.",
                &self.sessions_started,
            ),
            (
                "wirewarden_auth_failures_total",
                "Failed client authentications.",
                &self.auth_failures,
            ),
            (
                "wirewarden_commands_allowed_total",
                "Commands allowed by policy.",
                &self.commands_allowed,
            ),
            (
                "wirewarden_commands_denied_total",
                "Commands refused.",
                &self.commands_denied,
            ),
            (
                "wirewarden_commands_reviewed_total",
                "Commands held for human review.",
                &self.commands_reviewed,
            ),
            (
                "wirewarden_rows_total",
                "Rows or elements sent to clients.",
                &self.rows,
            ),
            (
                "wirewarden_values_masked_total",
                "Values masked on the way to clients.",
                &self.values_masked,
            ),
            (
                "wirewarden_results_withheld_total",
                "Results withheld because a value could not be masked.",
                &self.results_withheld,
            ),
            (
                "wirewarden_protocol_errors_total",
                "Protocol errors from clients or upstreams.",
                &self.protocol_errors,
            ),
            (
                "wirewarden_upstream_failures_total",
                "Upstream connections or logins that failed.",
                &self.upstream_failures,
            ),
            (
                "wirewarden_refused_before_login_total",
                "Requests refused before their client authenticated.",
                &self.refused_before_login,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wirewarden_sessions_active Sessions open now.\n# TYPE wirewarden_sessions_active gauge\nwirewarden_sessions_active {}",
            self.sessions_active.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        Metrics::add(&m.commands_denied, 3);
        m.sessions_active.fetch_add(2, Ordering::Relaxed);
        let text = m.render_prometheus();
        assert!(
            text.contains("wirewarden_commands_denied_total 3\n"),
            "{text}"
        );
        assert!(text.contains("wirewarden_sessions_active 2\n"), "{text}");
        assert!(
            text.contains("wirewarden_refused_before_login_total 0\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE").count(), 12);
    }
}
