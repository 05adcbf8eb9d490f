//! Export to SIEMs: OCSF 1.7 JSON and JSON Lines of the native events.
//!
//! | event | OCSF class |
//! |---|---|
//! | `CommandDecided` on Postgres or Redis | Datastore Activity (6005) |
//! | `CommandDecided` on HTTP | API Activity (6003) |
//! | `SessionStarted`, `CredentialRenewed`, `AuthenticationFailed`, `SessionEnded` | Authentication (3002): logon, logon again within a session, failed logon, logoff |
//! | `GrantIssued`, `GrantRevoked`, `GrantExpired` | User Access Management (3005): assign / revoke privileges |
//!
//! Decisions become `action_id` (1 allowed, 2 denied) and `disposition_id` (1 allowed,
//! 2 blocked, 14 delayed for review). Transcripts, outcomes and review events have no OCSF
//! class of their own and stay in the native JSON Lines export. The exporter is stateful: it
//! remembers each session's principal (from `SessionStarted`, then `CredentialRenewed`),
//! target and client address, and its current application name from `SessionStarted` and
//! `ApplicationChanged`, so a command event carries its actor (with `app_name`: the agent run
//! and tool call) and endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{Value, json};
use wirewarden_core::{
    AuditEvent, AuditEventKind, Command, CommandClass, Decision, GrantId, Principal, Protocol,
    SessionId, Target,
};

/// The OCSF version produced.
pub const OCSF_VERSION: &str = "1.7.0";

/// One native event as a JSON line (without the newline).
///
/// # Errors
/// A serialization error (not expected for core types).
pub fn to_json_line(event: &AuditEvent) -> Result<String, serde_json::Error> {
    serde_json::to_string(event)
}

/// How a streaming sink renders events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportFormat {
    /// The native events as JSON (the core types' serde form).
    Jsonl,
    /// OCSF 1.7 events; native events without an OCSF class are skipped.
    Ocsf,
}

impl ExportFormat {
    /// `event` as a JSON value in this format, or `None` when the format skips it.
    ///
    /// # Errors
    /// A serialization error (not expected for core types).
    pub fn render(
        self,
        exporter: &mut OcsfExporter,
        event: &AuditEvent,
    ) -> Result<Option<Value>, serde_json::Error> {
        match self {
            Self::Jsonl => serde_json::to_value(event).map(Some),
            Self::Ocsf => Ok(exporter.export(event)),
        }
    }
}

#[derive(Debug, Clone)]
struct SessionInfo {
    principal: Principal,
    target: Target,
    client_addr: Option<String>,
    application: Option<String>,
}

/// Maps native events to OCSF events, remembering sessions and grants as it goes.
#[derive(Debug, Clone, Default)]
pub struct OcsfExporter {
    sessions: HashMap<SessionId, SessionInfo>,
    grants: HashMap<GrantId, (String, String, String)>,
}

fn endpoint(addr: Option<&str>) -> Value {
    match addr.and_then(|a| a.parse::<SocketAddr>().ok()) {
        Some(sa) => json!({ "ip": sa.ip().to_string(), "port": sa.port() }),
        None => json!({}),
    }
}

fn user(p: &Principal) -> Value {
    let groups: Vec<Value> = p.groups.iter().map(|g| json!({ "name": g })).collect();
    json!({ "name": p.subject, "groups": groups })
}

fn datastore_activity(c: &Command) -> u32 {
    let verb = c.verb.to_ascii_uppercase();
    match (c.class, verb.as_str()) {
        (CommandClass::Session, _) => 3,
        (_, "UPDATE") => 2,
        (_, "DELETE" | "DEL" | "UNLINK" | "DROP" | "TRUNCATE") => 7,
        (_, "INSERT" | "CREATE" | "COPY") => 6,
        (_, "SELECT") => 4,
        (_, "KEYS" | "SCAN" | "HKEYS") => 8,
        (CommandClass::Read, _) => {
            if c.protocol == Protocol::Postgres {
                4
            } else {
                1
            }
        }
        (CommandClass::Write, _) => 5,
        _ => 99,
    }
}

fn api_activity(verb: &str) -> u32 {
    match verb.to_ascii_uppercase().as_str() {
        "POST" => 1,
        "GET" | "HEAD" => 2,
        "PUT" | "PATCH" => 3,
        "DELETE" => 4,
        _ => 99,
    }
}

impl OcsfExporter {
    /// A new exporter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn base(event: &AuditEvent, category: u32, class: u32, activity: u32, severity: u32) -> Value {
        json!({
            "category_uid": category,
            "class_uid": class,
            "activity_id": activity,
            "type_uid": u64::from(class) * 100 + u64::from(activity),
            "severity_id": severity,
            "time": event.time.unix_millis(),
            "metadata": {
                "version": OCSF_VERSION,
                "uid": event.id.to_string(),
                "log_name": "wirewarden-audit",
                "product": {
                    "name": "wirewarden",
                    "vendor_name": "wirewarden",
                    "version": env!("CARGO_PKG_VERSION"),
                },
            },
        })
    }

    fn merge(mut base: Value, extra: Value) -> Value {
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    }

    /// The OCSF event for `event`, or `None` when it has no OCSF class (see the module docs).
    #[must_use]
    pub fn export(&mut self, event: &AuditEvent) -> Option<Value> {
        let session = event.session.and_then(|s| self.sessions.get(&s)).cloned();
        let session_obj = event.session.map(|s| json!({ "uid": s.to_string() }));
        match &event.kind {
            AuditEventKind::SessionStarted {
                principal,
                target,
                client_addr,
                application,
                tls,
            } => {
                if let Some(s) = event.session {
                    self.sessions.insert(
                        s,
                        SessionInfo {
                            principal: principal.clone(),
                            target: target.clone(),
                            client_addr: client_addr.clone(),
                            application: application.clone(),
                        },
                    );
                }
                let base = Self::base(event, 3, 3002, 1, 1);
                Some(Self::merge(
                    base,
                    json!({
                        "status_id": 1,
                        "user": user(principal),
                        "auth_protocol": principal.auth.name(),
                        "src_endpoint": endpoint(client_addr.as_deref()),
                        "dst_endpoint": { "svc_name": target.to_string() },
                        "service": { "name": target.name },
                        "session": session_obj,
                        "actor": actor_app(application.as_deref()),
                        "is_cleartext": !tls,
                        "message": format!("{} logged on to {target}", principal.subject),
                        "unmapped": { "application": application },
                    }),
                ))
            }
            AuditEventKind::AuthenticationFailed {
                target,
                client_addr,
                user: name,
                method,
                reason,
            } => {
                let base = Self::base(event, 3, 3002, 1, 3);
                Some(Self::merge(
                    base,
                    json!({
                        "status_id": 2,
                        "status_detail": reason,
                        "user": { "name": name.clone().unwrap_or_default() },
                        "auth_protocol": method,
                        "src_endpoint": endpoint(client_addr.as_deref()),
                        "dst_endpoint": { "svc_name": target.to_string() },
                        "service": { "name": target.name },
                        "message": format!("authentication to {target} failed: {reason}"),
                    }),
                ))
            }
            AuditEventKind::SessionEnded {
                reason,
                commands,
                duration_us,
            } => {
                if let Some(s) = event.session {
                    self.sessions.remove(&s);
                }
                let base = Self::base(event, 3, 3002, 2, 1);
                let (u, svc, src) = match &session {
                    Some(i) => (
                        user(&i.principal),
                        json!({ "svc_name": i.target.to_string() }),
                        endpoint(i.client_addr.as_deref()),
                    ),
                    None => (json!({}), json!({}), json!({})),
                };
                Some(Self::merge(
                    base,
                    json!({
                        "status_id": 1,
                        "user": u,
                        "dst_endpoint": svc,
                        "src_endpoint": src,
                        "session": session_obj,
                        "message": format!("session ended: {reason:?}"),
                        "unmapped": { "commands": commands, "duration_us": duration_us },
                    }),
                ))
            }
            AuditEventKind::CommandDecided {
                subject,
                command,
                decision,
                policy_version,
                command_id,
            } => {
                let (action, disposition, severity, status) = match decision {
                    Decision::Allow { .. } => (Some(1), 1, 1, 1),
                    Decision::Deny { .. } => (Some(2), 2, 3, 2),
                    _ => (None, 14, 2, 0),
                };
                let actor_user = match &session {
                    Some(i) => user(&i.principal),
                    None => json!({ "name": subject }),
                };
                let mut actor = actor_app(session.as_ref().and_then(|i| i.application.as_deref()));
                if let Some(o) = actor.as_object_mut() {
                    o.insert("user".into(), actor_user);
                    o.insert("session".into(), json!(session_obj));
                }
                let src = endpoint(session.as_ref().and_then(|i| i.client_addr.as_deref()));
                let dst = match &session {
                    Some(i) => json!({ "svc_name": i.target.to_string() }),
                    None => json!({}),
                };
                let unmapped = json!({
                    "rule": decision.rule().as_str(),
                    "outcome": decision.outcome(),
                    "policy_version": policy_version,
                    "command_class": command.class.as_str(),
                    "command_digest": command.digest.to_string(),
                    "command_id": command_id.to_string(),
                });
                let message = match decision {
                    Decision::Deny { reason, .. } | Decision::Review { reason, .. } => {
                        format!("{} {}: {reason}", decision.outcome(), command.verb)
                    }
                    _ => format!("{} {}", decision.outcome(), command.verb),
                };
                let mut out = if command.protocol == Protocol::Http {
                    let activity = api_activity(&command.verb);
                    let path = command.text.split_whitespace().nth(1).unwrap_or("/");
                    let base = Self::base(event, 6, 6003, activity, severity);
                    Self::merge(
                        base,
                        json!({
                            "actor": actor,
                            "api": {
                                "operation": command.verb,
                                "service": { "name": session.as_ref().map(|i| i.target.name.clone()).unwrap_or_default() },
                            },
                            "http_request": {
                                "http_method": command.verb,
                                "url": { "path": path },
                            },
                            "src_endpoint": src,
                            "dst_endpoint": dst,
                            "status_id": status,
                            "disposition_id": disposition,
                            "message": message,
                            "unmapped": unmapped,
                        }),
                    )
                } else {
                    let activity = datastore_activity(command);
                    let base = Self::base(event, 6, 6005, activity, severity);
                    let (type_id, kind) = match command.protocol {
                        Protocol::Postgres => (1, "Relational"),
                        Protocol::Redis => (6, "NoSQL"),
                        _ => (99, "Other"),
                    };
                    let name = session
                        .as_ref()
                        .map(|i| {
                            i.target
                                .database
                                .clone()
                                .unwrap_or_else(|| i.target.name.clone())
                        })
                        .unwrap_or_default();
                    Self::merge(
                        base,
                        json!({
                            "actor": actor,
                            "src_endpoint": src,
                            "dst_endpoint": dst,
                            "database": { "name": name, "type_id": type_id, "type": kind },
                            "query_info": { "query_string": command.text, "name": command.verb },
                            "status_id": status,
                            "disposition_id": disposition,
                            "message": message,
                            "unmapped": unmapped,
                        }),
                    )
                };
                if let (Some(a), Some(o)) = (action, out.as_object_mut()) {
                    o.insert("action_id".into(), json!(a));
                }
                Some(out)
            }
            AuditEventKind::GrantIssued {
                grant_id,
                subject,
                target,
                scope,
                expires_at,
                issued_by,
            } => {
                self.grants
                    .insert(*grant_id, (subject.clone(), target.clone(), scope.clone()));
                let base = Self::base(event, 3, 3005, 1, 1);
                Some(Self::merge(
                    base,
                    json!({
                        "status_id": 1,
                        "user": { "name": subject },
                        "actor": { "user": { "name": issued_by } },
                        "privileges": [scope],
                        "resource": { "name": target, "type": "target" },
                        "message": format!("grant {grant_id}: {scope} on {target} for {subject} until {expires_at}"),
                        "unmapped": { "grant_id": grant_id.to_string(), "expires_at": expires_at.to_string() },
                    }),
                ))
            }
            AuditEventKind::GrantRevoked { grant_id, .. }
            | AuditEventKind::GrantExpired { grant_id } => {
                let (subject, target, scope) = self
                    .grants
                    .remove(grant_id)
                    .unwrap_or_else(|| (String::new(), String::new(), "grant".into()));
                let base = Self::base(event, 3, 3005, 2, 1);
                let mut extra = json!({
                    "status_id": 1,
                    "user": { "name": subject },
                    "privileges": [scope],
                    "resource": { "name": target, "type": "target" },
                    "unmapped": { "grant_id": grant_id.to_string() },
                });
                if let (AuditEventKind::GrantRevoked { revoked_by, .. }, Some(o)) =
                    (&event.kind, extra.as_object_mut())
                {
                    o.insert("actor".into(), json!({ "user": { "name": revoked_by } }));
                    o.insert(
                        "message".into(),
                        json!(format!("grant {grant_id} revoked by {revoked_by}")),
                    );
                } else if let Some(o) = extra.as_object_mut() {
                    o.insert("message".into(), json!(format!("grant {grant_id} expired")));
                }
                Some(Self::merge(base, extra))
            }
            AuditEventKind::ApplicationChanged { application } => {
                if let Some(info) = event.session.and_then(|s| self.sessions.get_mut(&s)) {
                    info.application.clone_from(application);
                }
                None
            }
            AuditEventKind::CredentialRenewed { principal } => {
                let info = event.session.and_then(|s| self.sessions.get_mut(&s));
                let (svc, src, app) = match &info {
                    Some(i) => (
                        json!({ "svc_name": i.target.to_string() }),
                        endpoint(i.client_addr.as_deref()),
                        actor_app(i.application.as_deref()),
                    ),
                    None => (json!({}), json!({}), json!({})),
                };
                if let Some(i) = info {
                    i.principal = principal.clone();
                }
                let base = Self::base(event, 3, 3002, 1, 1);
                Some(Self::merge(
                    base,
                    json!({
                        "status_id": 1,
                        "user": user(principal),
                        "auth_protocol": principal.auth.name(),
                        "src_endpoint": src,
                        "dst_endpoint": svc,
                        "session": session_obj,
                        "actor": app,
                        "message": format!("{} authenticated again within its session", principal.subject),
                    }),
                ))
            }
            _ => None,
        }
    }
}

/// An OCSF actor naming the client application, if there is one.
fn actor_app(application: Option<&str>) -> Value {
    match application {
        Some(app) => json!({ "app_name": app }),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_events;

    #[test]
    fn classes_and_type_uids() {
        let mut x = OcsfExporter::new();
        let out: Vec<Value> = sample_events().iter().filter_map(|e| x.export(e)).collect();
        let classes: Vec<u64> = out
            .iter()
            .map(|v| v["class_uid"].as_u64().unwrap())
            .collect();
        // Logon, failed logon, two commands, three grant events, logon again (renewed),
        // logoff.
        assert_eq!(
            classes,
            [3002, 3002, 6005, 6003, 3005, 3005, 3005, 3002, 3002]
        );
        let renewed = &out[7];
        assert_eq!(renewed["activity_id"], 1);
        assert_eq!(renewed["session"]["uid"], out[0]["session"]["uid"]);
        assert!(
            renewed["message"]
                .as_str()
                .unwrap()
                .contains("authenticated again")
        );
        for v in &out {
            assert_eq!(
                v["type_uid"].as_u64().unwrap(),
                v["class_uid"].as_u64().unwrap() * 100 + v["activity_id"].as_u64().unwrap()
            );
        }
        let select = &out[2];
        assert_eq!(select["activity_id"], 4);
        assert_eq!(select["action_id"], 1);
        assert_eq!(select["actor"]["user"]["name"], "agent-1");
        assert_eq!(select["src_endpoint"]["ip"], "127.0.0.1");
        assert_eq!(select["database"]["name"], "sales");
        let post = &out[3];
        assert_eq!(
            (
                post["activity_id"].as_u64(),
                post["disposition_id"].as_u64()
            ),
            (Some(1), Some(2))
        );
        assert_eq!(out[1]["status_id"], 2);
        assert_eq!(out[8]["activity_id"], 2);
    }

    #[test]
    fn commands_carry_the_application_current_when_they_were_decided() {
        let events = sample_events();
        let started = events[0].clone();
        let session = started.session;
        let select = events
            .iter()
            .find(|e| matches!(e.kind, AuditEventKind::CommandDecided { .. }))
            .unwrap()
            .clone();
        let renamed = |app: Option<&str>| {
            AuditEvent::new(
                session,
                AuditEventKind::ApplicationChanged {
                    application: app.map(str::to_owned),
                },
            )
        };
        let mut x = OcsfExporter::new();
        let logon = x.export(&started).unwrap();
        assert_eq!(logon["actor"]["app_name"], "run=1 call=2");
        assert_eq!(
            x.export(&select).unwrap()["actor"]["app_name"],
            "run=1 call=2"
        );
        assert!(x.export(&renamed(Some("run=1 call=3"))).is_none());
        let after = x.export(&select).unwrap();
        assert_eq!(after["actor"]["app_name"], "run=1 call=3");
        assert_eq!(after["actor"]["user"]["name"], "agent-1");
        assert!(x.export(&renamed(None)).is_none());
        let cleared = x.export(&select).unwrap();
        assert!(cleared["actor"].get("app_name").is_none(), "{cleared}");
        assert_eq!(
            cleared["actor"]["session"]["uid"],
            session.unwrap().to_string()
        );
    }

    #[test]
    fn json_lines_round_trip() {
        for e in sample_events() {
            let line = to_json_line(&e).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<AuditEvent>(&line).unwrap(), e);
        }
    }
}
