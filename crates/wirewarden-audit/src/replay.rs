//! Session replay: a readable transcript of what one session's client sent and, after
//! masking, received, with timings, decisions and outcomes, from events the chain vouches
//! for.

use std::fmt::Write as _;

use wirewarden_core::{AuditEvent, AuditEventKind, Decision, Direction, SessionId, Timestamp};

/// Renders the events of one session as they arrive.
#[derive(Debug, Clone)]
pub struct Transcript {
    session: SessionId,
    started: Option<Timestamp>,
    finished: bool,
}

fn secs(us: u64) -> String {
    format!("+{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

fn indent(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(prefix);
        }
        out.push_str(line);
    }
    out
}

/// One line of what went over the wire (`client>` or `client<`), continuation lines under
/// the text, `[truncated]` when the recording was cut.
fn transcript_line(s: &mut String, at: &str, arrow: &str, text: &str, truncated: bool) {
    let _ = write!(
        s,
        "{at:<13} {arrow} {}",
        indent(text, &format!("{}        ", " ".repeat(14)))
    );
    if truncated {
        s.push_str(" [truncated]");
    }
}

impl Transcript {
    /// A transcript of `session`.
    #[must_use]
    pub fn new(session: SessionId) -> Self {
        Self {
            session,
            started: None,
            finished: false,
        }
    }

    /// Whether the session's end has been seen.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn offset(&self, t: Timestamp) -> String {
        match self.started {
            Some(s) => {
                let d = t.saturating_duration_since(s);
                secs(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            }
            None => t.to_string(),
        }
    }

    /// The lines for `event`, or `None` when it belongs to another session.
    #[must_use]
    pub fn render(&mut self, event: &AuditEvent) -> Option<String> {
        if event.session != Some(self.session) {
            return None;
        }
        let mut s = String::new();
        let pad = "              ";
        match &event.kind {
            AuditEventKind::SessionStarted {
                principal,
                target,
                client_addr,
                application,
                tls,
            } => {
                self.started = Some(event.time);
                let _ = write!(
                    s,
                    "== session {} started {} ==\n{pad}principal {} ({}",
                    self.session,
                    event.time,
                    principal.subject,
                    principal.auth.name()
                );
                if !principal.groups.is_empty() {
                    let groups: Vec<&str> = principal.groups.iter().map(String::as_str).collect();
                    let _ = write!(s, "; groups {}", groups.join(","));
                }
                let _ = write!(s, ") -> {target}");
                if let Some(a) = client_addr {
                    let _ = write!(s, " from {a}");
                }
                s.push_str(if *tls { " over TLS" } else { " in clear" });
                if let Some(app) = application {
                    let _ = write!(s, "\n{pad}application {app:?}");
                }
            }
            AuditEventKind::Transcript {
                direction,
                elapsed_us,
                text,
                truncated,
                ..
            } => {
                let arrow = match direction {
                    Direction::FromClient => "client>",
                    Direction::FromUpstream => "client<",
                };
                // On the clock of every other line (the session's start event) when it was
                // seen; `elapsed_us` counts from when the proxy began relaying, a little later.
                let at = match self.started {
                    Some(_) => self.offset(event.time),
                    None => secs(*elapsed_us),
                };
                transcript_line(&mut s, &at, arrow, text, *truncated);
            }
            AuditEventKind::CommandDecided {
                command,
                decision,
                policy_version,
                ..
            } => {
                let _ = write!(
                    s,
                    "{:<13} decided {} {} ({}): ",
                    self.offset(event.time),
                    command.protocol,
                    command.verb,
                    command.class
                );
                match decision {
                    Decision::Allow { rule, mask_profile } => {
                        let _ = write!(s, "allow by rule {rule}");
                        if let Some(m) = mask_profile {
                            let _ = write!(s, ", masking {m}");
                        }
                    }
                    Decision::Deny { rule, reason } => {
                        let _ = write!(s, "DENY by rule {rule}: {reason}");
                    }
                    Decision::Review { rule, reason, .. } => {
                        let _ = write!(s, "REVIEW by rule {rule}: {reason}");
                    }
                    _ => s.push_str("(decision of a newer kind)"),
                }
                let _ = write!(s, " [policy {policy_version}]");
                // The statement itself, as the client sent it: what an auditor replays.
                let pad = " ".repeat(14);
                let _ = write!(
                    s,
                    "\n{pad}client> {}",
                    indent(&command.text, &format!("{pad}        "))
                );
            }
            AuditEventKind::CommandCompleted {
                rows,
                bytes,
                masked,
                duration_us,
                error,
                reply,
                ..
            } => {
                let at = self.offset(event.time);
                // The reply as the client saw it, then the summary, as when the reply was a
                // record of its own.
                if let Some(reply) = reply {
                    transcript_line(&mut s, &at, "client<", &reply.text, reply.truncated);
                    s.push('\n');
                }
                let _ = write!(
                    s,
                    "{at:<13} completed in {duration_us} us: {rows} rows, {bytes} bytes"
                );
                if !masked.is_empty() {
                    let parts: Vec<String> =
                        masked.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = write!(s, ", masked {}", parts.join(" "));
                }
                if let Some(e) = error {
                    let _ = write!(s, ", error {e:?}");
                }
            }
            AuditEventKind::ReviewRequested {
                review_id, reason, ..
            } => {
                let _ = write!(
                    s,
                    "{:<13} held for review {review_id}: {reason}",
                    self.offset(event.time)
                );
            }
            AuditEventKind::ReviewResolved {
                review_id,
                outcome,
                approvers,
                denied_by,
            } => {
                let _ = write!(
                    s,
                    "{:<13} review {review_id} {outcome:?}",
                    self.offset(event.time)
                );
                if !approvers.is_empty() {
                    let _ = write!(s, " by {}", approvers.join(", "));
                }
                if let Some(d) = denied_by {
                    let _ = write!(s, " (denied by {d})");
                }
            }
            AuditEventKind::CredentialRenewed { principal } => {
                let _ = write!(
                    s,
                    "{:<13} {} authenticated again ({})",
                    self.offset(event.time),
                    principal.subject,
                    principal.auth.name()
                );
                if let Some(at) = principal.expires_at {
                    let _ = write!(s, ", credential valid until {at}");
                }
            }
            AuditEventKind::ApplicationChanged { application } => {
                let _ = match application {
                    Some(app) => write!(s, "{:<13} application {app:?}", self.offset(event.time)),
                    None => write!(s, "{:<13} application cleared", self.offset(event.time)),
                };
            }
            AuditEventKind::ProtocolError { direction, error } => {
                let _ = write!(
                    s,
                    "{:<13} protocol error from {}: {error}",
                    self.offset(event.time),
                    match direction {
                        Direction::FromClient => "client",
                        Direction::FromUpstream => "upstream",
                    }
                );
            }
            AuditEventKind::SessionEnded {
                reason,
                commands,
                duration_us,
            } => {
                self.finished = true;
                let _ = write!(
                    s,
                    "== session ended after {} ({commands} commands): {reason:?} ==",
                    secs(*duration_us)
                );
            }
            other => {
                let _ = write!(s, "{:<13} {}", self.offset(event.time), other.name());
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_events;
    use wirewarden_core::{CommandId, MaskedCounts, Recording};

    #[test]
    fn a_session_renders_in_order_with_directions() {
        let events = sample_events();
        let session = events[0].session.unwrap();
        let mut t = Transcript::new(session);
        let text: Vec<String> = events.iter().filter_map(|e| t.render(e)).collect();
        let all = text.join("\n");
        assert!(
            all.starts_with(&format!("== session {session} started")),
            "{all}"
        );
        assert!(all.contains("principal agent-1 (jwt; groups agents,analysts) -> postgres://crm/sales from 127.0.0.1:5000 over TLS"), "{all}");
        assert!(
            all.contains("s    client> Query \"SELECT email FROM customers WHERE id = $1\""),
            "{all}"
        );
        assert!(
            all.contains(
                "client< DataRow [\"j***@example.com\"]\n                      CommandComplete"
            ),
            "{all}"
        );
        assert!(
            all.contains("allow by rule analysts-read, masking pii"),
            "{all}"
        );
        assert!(all.contains("DENY by rule no-refunds"), "{all}");
        assert!(all.contains("masked email=1 ssn=2"), "{all}");
        assert!(all.contains("s    application \"run=1 call=3\""), "{all}");
        assert!(t.is_finished());
        let mut other = Transcript::new(SessionId::new());
        assert!(events.iter().all(|e| other.render(e).is_none()));
    }

    #[test]
    fn transcript_lines_are_on_the_clock_of_the_other_lines() {
        let events = sample_events();
        let session = events[0].session.unwrap();
        let start = Timestamp::from_unix_secs(1_800_000_000).unwrap();
        let at = |ms: i64| Timestamp::from_unix_millis(1_800_000_000_000 + ms).unwrap();
        let mut started = events[0].clone();
        started.time = start;
        let reply = AuditEvent {
            time: at(5),
            ..AuditEvent::new(
                Some(session),
                AuditEventKind::Transcript {
                    command_id: None,
                    direction: Direction::FromUpstream,
                    // Counted from when relaying began, after the start event.
                    elapsed_us: 4_000,
                    text: "OK".into(),
                    truncated: false,
                },
            )
        };
        let mut t = Transcript::new(session);
        t.render(&started).unwrap();
        assert_eq!(t.render(&reply).unwrap(), "+0.005000s    client< OK");
        // Without the start event, the transcript's own count is all there is.
        let mut t = Transcript::new(session);
        assert_eq!(t.render(&reply).unwrap(), "+0.004000s    client< OK");
    }

    #[test]
    fn a_reply_in_its_completion_reads_as_a_transcript_line_then_the_summary() {
        let events = sample_events();
        let session = events[0].session.unwrap();
        let mut started = events[0].clone();
        started.time = Timestamp::from_unix_secs(1_800_000_000).unwrap();
        let mut masked = MaskedCounts::new();
        masked.add("email", 1);
        let completed = |reply: Option<Recording>| AuditEvent {
            time: Timestamp::from_unix_millis(1_800_000_000_007).unwrap(),
            ..AuditEvent::new(
                Some(session),
                AuditEventKind::CommandCompleted {
                    command_id: CommandId::new(),
                    rows: 2,
                    bytes: 40,
                    masked: masked.clone(),
                    duration_us: 310,
                    error: None,
                    reply,
                },
            )
        };
        let mut t = Transcript::new(session);
        t.render(&started).unwrap();
        let two_values = Recording::new("1) \"j***@example.com\"\n2) \"***\"", true);
        assert_eq!(
            t.render(&completed(Some(two_values))).unwrap(),
            "+0.007000s    client< 1) \"j***@example.com\"\n\
             \x20                     2) \"***\" [truncated]\n\
             +0.007000s    completed in 310 us: 2 rows, 40 bytes, masked email=1"
        );
        assert_eq!(
            t.render(&completed(None)).unwrap(),
            "+0.007000s    completed in 310 us: 2 rows, 40 bytes, masked email=1"
        );
    }
}
