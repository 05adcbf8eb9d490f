//! Just-in-time grants: time-boxed permissions for one principal on one target.
//!
//! A grant says "`agent-7` may run commands up to class `write` on `crm` until 10:30". It
//! widens what rules allow in exactly one way (see the crate documentation): a command that
//! rules send to review, or that no rule matches, is allowed when an active grant covers it;
//! an explicit `deny` rule always wins over a grant. Grants are kept in a [`GrantStore`]
//! (in memory here; PostgreSQL in `wirewarden-review`); the caller reads the active ones and
//! passes them with each evaluation, and the engine ignores any whose expiry has passed at
//! the evaluation's time, so expiry takes effect in the middle of a session.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wirewarden_core::{
    AuditEvent, AuditEventKind, BoxError, Command, CommandClass, GrantId, ObjectKind, Target,
    Timestamp,
};

use crate::glob;

/// Errors from grants and grant stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// A grant was built with a value that cannot be granted.
    #[error("invalid grant: {reason}")]
    Invalid {
        /// What was wrong.
        reason: &'static str,
    },
    /// No grant has this id.
    #[error("grant {id} not found")]
    NotFound {
        /// The id asked for.
        id: GrantId,
    },
    /// A grant with this id already exists.
    #[error("grant {id} already exists")]
    Duplicate {
        /// The id.
        id: GrantId,
    },
    /// The grant was already revoked.
    #[error("grant {id} was already revoked")]
    AlreadyRevoked {
        /// The id.
        id: GrantId,
    },
    /// The grant had already expired when it was to be revoked.
    #[error("grant {id} has already expired")]
    Expired {
        /// The id.
        id: GrantId,
    },
    /// The backing store failed.
    #[error("grant store: {0}")]
    Store(#[source] BoxError),
}

/// What a grant permits: commands of at most `max_class` and, if `objects` is not empty, only
/// on relations, keys and paths that every one match one of its globs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantScope {
    /// The riskiest class allowed. Never [`CommandClass::Unknown`]: a command nobody
    /// understood cannot be granted.
    pub max_class: CommandClass,
    /// Globs over the names of the relations, keys and paths the command touches; empty
    /// means any object on the target.
    #[serde(default)]
    pub objects: Vec<String>,
}

impl GrantScope {
    /// Commands up to `max_class` on any object.
    #[must_use]
    pub fn up_to(max_class: CommandClass) -> Self {
        Self {
            max_class,
            objects: Vec::new(),
        }
    }

    /// Restricts the scope to objects matching `glob`.
    #[must_use]
    pub fn on(mut self, glob: impl Into<String>) -> Self {
        self.objects.push(glob.into());
        self
    }

    /// Whether the scope covers `command` (ignoring subject, target and time).
    #[must_use]
    pub fn covers(&self, command: &Command) -> bool {
        if command.class == CommandClass::Unknown || command.class > self.max_class {
            return false;
        }
        if self.objects.is_empty() {
            return true;
        }
        command
            .objects
            .iter()
            .filter(|o| {
                matches!(
                    o.kind,
                    ObjectKind::Relation | ObjectKind::Key | ObjectKind::Path
                )
            })
            .all(|o| self.objects.iter().any(|g| glob::matches(g, &o.name)))
    }
}

impl fmt::Display for GrantScope {
    /// `write` or `write on crm.*, public.*`, as recorded in the `GrantIssued` event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.max_class.as_str())?;
        if !self.objects.is_empty() {
            // An empty glob matches no name: "on nothing" but commands that touch none.
            let shown: Vec<&str> = self
                .objects
                .iter()
                .map(|g| if g.is_empty() { "\"\"" } else { g.as_str() })
                .collect();
            write!(f, " on {}", shown.join(", "))?;
        }
        Ok(())
    }
}

/// A revocation of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked it.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// A time-boxed permission for one subject on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant's id.
    pub id: GrantId,
    /// The principal subject it is for.
    pub subject: String,
    /// The target name it covers.
    pub target: String,
    /// What it permits.
    pub scope: GrantScope,
    /// When it starts.
    pub issued_at: Timestamp,
    /// When it stops (exclusive: at `expires_at` it no longer applies).
    pub expires_at: Timestamp,
    /// Who issued it (an approver, an administrator).
    pub issued_by: String,
    /// Why, for the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
    /// Set when it was revoked.
    #[serde(default)]
    pub revoked: Option<Revocation>,
}

impl Grant {
    /// A grant for `subject` on `target`, valid from `issued_at` for `duration`.
    ///
    /// # Errors
    /// [`GrantError::Invalid`] for an empty subject, target or issuer, a zero or overflowing
    /// duration, or a scope of class `unknown`.
    pub fn new(
        subject: impl Into<String>,
        target: impl Into<String>,
        scope: GrantScope,
        issued_at: Timestamp,
        duration: Duration,
        issued_by: impl Into<String>,
    ) -> Result<Self, GrantError> {
        let (subject, target, issued_by) = (subject.into(), target.into(), issued_by.into());
        let invalid = |reason| Err(GrantError::Invalid { reason });
        if subject.is_empty() {
            return invalid("empty subject");
        }
        if target.is_empty() {
            return invalid("empty target");
        }
        if issued_by.is_empty() {
            return invalid("empty issuer");
        }
        if scope.max_class == CommandClass::Unknown {
            return invalid("class `unknown` cannot be granted");
        }
        if duration.is_zero() {
            return invalid("zero duration");
        }
        let Some(expires_at) = issued_at.checked_add(duration) else {
            return invalid("expiry out of range");
        };
        Ok(Self {
            id: GrantId::new(),
            subject,
            target,
            scope,
            issued_at,
            expires_at,
            issued_by,
            reason: None,
            revoked: None,
        })
    }

    /// Sets the reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Whether the grant is in force at `now`: issued, not expired, not revoked.
    #[must_use]
    pub fn is_active_at(&self, now: Timestamp) -> bool {
        self.revoked.is_none() && self.issued_at <= now && now < self.expires_at
    }

    /// Whether the grant lets `subject` run `command` on `target` at `now`.
    #[must_use]
    pub fn covers(
        &self,
        subject: &str,
        target: &Target,
        command: &Command,
        now: Timestamp,
    ) -> bool {
        self.is_active_at(now)
            && self.subject == subject
            && self.target == target.name
            && self.scope.covers(command)
    }

    /// The `GrantIssued` audit event for this grant.
    #[must_use]
    pub fn issued_event(&self) -> AuditEvent {
        AuditEvent::new(
            None,
            AuditEventKind::GrantIssued {
                grant_id: self.id,
                subject: self.subject.clone(),
                target: self.target.clone(),
                scope: self.scope.to_string(),
                expires_at: self.expires_at,
                issued_by: self.issued_by.clone(),
            },
        )
    }
}

/// The `GrantRevoked` audit event.
#[must_use]
pub fn revoked_event(id: GrantId, revoked_by: &str) -> AuditEvent {
    AuditEvent::new(
        None,
        AuditEventKind::GrantRevoked {
            grant_id: id,
            revoked_by: revoked_by.to_owned(),
        },
    )
}

/// The `GrantExpired` audit event.
#[must_use]
pub fn expired_event(id: GrantId) -> AuditEvent {
    AuditEvent::new(None, AuditEventKind::GrantExpired { grant_id: id })
}

/// Where grants live. Every gateway that shares a store sees the same grants.
///
/// Methods that change state return the audit events the caller must record; the store
/// never writes audit records itself.
#[async_trait]
pub trait GrantStore: fmt::Debug + Send + Sync {
    /// Stores a new grant and returns its `GrantIssued` event.
    ///
    /// # Errors
    /// [`GrantError::Duplicate`] if the id exists; [`GrantError::Store`] on storage failure.
    async fn issue(&self, grant: Grant) -> Result<AuditEvent, GrantError>;

    /// The grant with this id, whatever its state.
    ///
    /// # Errors
    /// [`GrantError::Store`] on storage failure.
    async fn get(&self, id: GrantId) -> Result<Option<Grant>, GrantError>;

    /// The grants of `subject` on `target` that are active at `now`.
    ///
    /// # Errors
    /// [`GrantError::Store`] on storage failure.
    async fn active(
        &self,
        subject: &str,
        target: &str,
        now: Timestamp,
    ) -> Result<Vec<Grant>, GrantError>;

    /// Revokes a grant at `now` and returns its `GrantRevoked` event.
    ///
    /// # Errors
    /// [`GrantError::NotFound`], [`GrantError::AlreadyRevoked`], [`GrantError::Expired`] (a
    /// grant past its expiry cannot be revoked: it already ended), or [`GrantError::Store`].
    async fn revoke(
        &self,
        id: GrantId,
        revoked_by: &str,
        now: Timestamp,
    ) -> Result<AuditEvent, GrantError>;

    /// Finds grants whose expiry is at or before `now`, not revoked and not yet reported, marks
    /// them reported, and returns one `GrantExpired` event for each. Every expiry is reported
    /// exactly once, also when several gateways sweep the same store.
    ///
    /// # Errors
    /// [`GrantError::Store`] on storage failure.
    async fn sweep_expired(&self, now: Timestamp) -> Result<Vec<AuditEvent>, GrantError>;
}

/// A [`GrantStore`] in process memory: the embedded default for a single gateway.
#[derive(Debug, Default)]
pub struct MemoryGrantStore {
    inner: Mutex<BTreeMap<GrantId, MemoryEntry>>,
}

#[derive(Debug)]
struct MemoryEntry {
    grant: Grant,
    expiry_reported: bool,
}

impl MemoryGrantStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GrantId, MemoryEntry>> {
        // A panic while holding the lock cannot leave an entry half-written (every mutation
        // is a single assignment), so the data is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl GrantStore for MemoryGrantStore {
    async fn issue(&self, grant: Grant) -> Result<AuditEvent, GrantError> {
        let mut map = self.lock();
        if map.contains_key(&grant.id) {
            return Err(GrantError::Duplicate { id: grant.id });
        }
        let event = grant.issued_event();
        map.insert(
            grant.id,
            MemoryEntry {
                grant,
                expiry_reported: false,
            },
        );
        Ok(event)
    }

    async fn get(&self, id: GrantId) -> Result<Option<Grant>, GrantError> {
        Ok(self.lock().get(&id).map(|e| e.grant.clone()))
    }

    async fn active(
        &self,
        subject: &str,
        target: &str,
        now: Timestamp,
    ) -> Result<Vec<Grant>, GrantError> {
        Ok(self
            .lock()
            .values()
            .filter(|e| {
                e.grant.subject == subject && e.grant.target == target && e.grant.is_active_at(now)
            })
            .map(|e| e.grant.clone())
            .collect())
    }

    async fn revoke(
        &self,
        id: GrantId,
        revoked_by: &str,
        now: Timestamp,
    ) -> Result<AuditEvent, GrantError> {
        let mut map = self.lock();
        let entry = map.get_mut(&id).ok_or(GrantError::NotFound { id })?;
        if entry.grant.revoked.is_some() {
            return Err(GrantError::AlreadyRevoked { id });
        }
        if now >= entry.grant.expires_at {
            return Err(GrantError::Expired { id });
        }
        entry.grant.revoked = Some(Revocation {
            by: revoked_by.to_owned(),
            at: now,
        });
        Ok(revoked_event(id, revoked_by))
    }

    async fn sweep_expired(&self, now: Timestamp) -> Result<Vec<AuditEvent>, GrantError> {
        let mut events = Vec::new();
        for entry in self.lock().values_mut() {
            if !entry.expiry_reported
                && entry.grant.revoked.is_none()
                && entry.grant.expires_at <= now
            {
                entry.expiry_reported = true;
                events.push(expired_event(entry.grant.id));
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use wirewarden_core::{Access, ObjectRef, Protocol};

    use super::*;

    fn cmd(class: CommandClass, table: &str) -> Command {
        Command::new(Protocol::Postgres, "UPDATE", class, "update")
            .unwrap()
            .with_object(ObjectRef::new(ObjectKind::Relation, table, Access::Write))
    }

    #[test]
    fn unknown_cannot_be_granted_and_scope_is_at_most() {
        let t0 = Timestamp::from_unix_secs(1_000).unwrap();
        let err = Grant::new(
            "a",
            "crm",
            GrantScope::up_to(CommandClass::Unknown),
            t0,
            Duration::from_secs(60),
            "admin",
        )
        .unwrap_err();
        assert!(matches!(err, GrantError::Invalid { .. }), "{err}");
        let scope = GrantScope::up_to(CommandClass::Write).on("crm.*");
        assert!(scope.covers(&cmd(CommandClass::Write, "crm.accounts")));
        assert!(scope.covers(&cmd(CommandClass::Read, "crm.accounts")));
        assert!(!scope.covers(&cmd(CommandClass::Schema, "crm.accounts")));
        assert!(!scope.covers(&cmd(CommandClass::Unknown, "crm.accounts")));
        assert!(!scope.covers(&cmd(CommandClass::Write, "hr.salaries")));
        assert_eq!(scope.to_string(), "write on crm.*");
    }

    #[test]
    fn activity_is_bounded_by_issue_expiry_and_revocation() {
        let t0 = Timestamp::from_unix_secs(1_000).unwrap();
        let mut g = Grant::new(
            "a",
            "crm",
            GrantScope::up_to(CommandClass::Write),
            t0,
            Duration::from_secs(60),
            "admin",
        )
        .unwrap();
        assert!(!g.is_active_at(Timestamp::from_unix_secs(999).unwrap()));
        assert!(g.is_active_at(t0));
        assert!(g.is_active_at(Timestamp::from_unix_secs(1_059).unwrap()));
        assert!(!g.is_active_at(Timestamp::from_unix_secs(1_060).unwrap()));
        g.revoked = Some(Revocation {
            by: "b".into(),
            at: t0,
        });
        assert!(!g.is_active_at(t0));
    }
}
