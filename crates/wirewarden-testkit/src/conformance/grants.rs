//! Conformance suite for `GrantStore` implementations.
//!
//! Call [`grant_store`] with a store (fresh or shared: the suite uses its own subjects). It
//! checks issuing and reading back, activity bounded by issue time, expiry and revocation,
//! typed errors for duplicates, unknown ids, double revocation and revoking an expired grant,
//! the audit events each change returns, and that every expiry is reported exactly once.

use std::time::Duration;

use wirewarden_core::{AuditEventKind, CommandClass, GrantId, Timestamp};
use wirewarden_policy::{Grant, GrantError, GrantScope, GrantStore};

fn secs(t: Timestamp, s: u64) -> Timestamp {
    t.checked_add(Duration::from_secs(s))
        .expect("time in range")
}

/// Runs the suite. Panics with a description of the first violation.
pub async fn grant_store(store: &dyn GrantStore) {
    let run = GrantId::new();
    let subject = format!("conformance-{run}");
    let t0 = Timestamp::now();
    let grant = |target: &str, duration: u64| {
        Grant::new(
            subject.clone(),
            target,
            GrantScope::up_to(CommandClass::Write).on("crm.*"),
            t0,
            Duration::from_secs(duration),
            "conformance-admin",
        )
        .expect("valid grant")
        .with_reason("conformance")
    };

    // Issue and read back.
    let g = grant("crm", 600);
    let event = store.issue(g.clone()).await.expect("issue");
    match &event.kind {
        AuditEventKind::GrantIssued {
            grant_id,
            subject: s,
            target,
            scope,
            expires_at,
            issued_by,
        } => {
            assert_eq!(*grant_id, g.id, "GrantIssued names another grant");
            assert_eq!(s, &subject);
            assert_eq!(target, "crm");
            assert_eq!(scope, "write on crm.*");
            assert_eq!(*expires_at, g.expires_at);
            assert_eq!(issued_by, "conformance-admin");
        }
        other => panic!("issue returned {other:?}, not GrantIssued"),
    }
    assert_eq!(
        store.get(g.id).await.expect("get"),
        Some(g.clone()),
        "a grant does not read back as issued"
    );
    assert!(
        store.get(GrantId::new()).await.expect("get").is_none(),
        "an unknown id reads as a grant"
    );
    match store.issue(g.clone()).await {
        Err(GrantError::Duplicate { id }) => assert_eq!(id, g.id),
        other => panic!("issuing the same id twice gave {other:?}, not Duplicate"),
    }

    // Active only between issue and expiry, for its subject and target only.
    let active = |t: Timestamp| {
        let subject = subject.clone();
        async move { store.active(&subject, "crm", t).await.expect("active") }
    };
    assert_eq!(active(t0).await, vec![g.clone()], "not active when issued");
    assert_eq!(
        active(secs(t0, 599)).await.len(),
        1,
        "not active before expiry"
    );
    assert!(
        active(secs(t0, 600)).await.is_empty(),
        "active at its expiry"
    );
    assert!(
        active(t0.checked_sub(Duration::from_secs(1)).expect("time"))
            .await
            .is_empty(),
        "active before it was issued"
    );
    assert!(
        store
            .active(&subject, "billing", t0)
            .await
            .expect("active")
            .is_empty(),
        "active on another target"
    );
    assert!(
        store
            .active(&format!("{subject}-other"), "crm", t0)
            .await
            .expect("active")
            .is_empty(),
        "active for another subject"
    );

    // Revocation.
    let r = grant("crm", 600);
    store.issue(r.clone()).await.expect("issue");
    assert_eq!(active(t0).await.len(), 2);
    let event = store
        .revoke(r.id, "conformance-bob", secs(t0, 10))
        .await
        .expect("revoke");
    match &event.kind {
        AuditEventKind::GrantRevoked {
            grant_id,
            revoked_by,
        } => {
            assert_eq!(*grant_id, r.id);
            assert_eq!(revoked_by, "conformance-bob");
        }
        other => panic!("revoke returned {other:?}, not GrantRevoked"),
    }
    assert_eq!(
        active(secs(t0, 10)).await,
        vec![g.clone()],
        "a revoked grant is still active"
    );
    let stored = store
        .get(r.id)
        .await
        .expect("get")
        .expect("revoked grant kept");
    assert_eq!(
        stored.revoked.as_ref().map(|v| v.by.as_str()),
        Some("conformance-bob"),
        "the revocation is not recorded"
    );
    assert!(
        matches!(
            store.revoke(r.id, "x", secs(t0, 11)).await,
            Err(GrantError::AlreadyRevoked { .. })
        ),
        "revoking twice is not AlreadyRevoked"
    );
    assert!(
        matches!(
            store.revoke(GrantId::new(), "x", t0).await,
            Err(GrantError::NotFound { .. })
        ),
        "revoking an unknown id is not NotFound"
    );
    assert!(
        matches!(
            store.revoke(g.id, "x", secs(t0, 600)).await,
            Err(GrantError::Expired { .. })
        ),
        "revoking an expired grant is not Expired"
    );

    // Expiry is reported once per grant, never for revoked or unexpired ones.
    let short = grant("crm", 1);
    store.issue(short.clone()).await.expect("issue");
    let ours = |events: Vec<wirewarden_core::AuditEvent>| -> Vec<GrantId> {
        let mut ids: Vec<GrantId> = events
            .into_iter()
            .filter_map(|e| match e.kind {
                AuditEventKind::GrantExpired { grant_id }
                    if [g.id, r.id, short.id].contains(&grant_id) =>
                {
                    Some(grant_id)
                }
                AuditEventKind::GrantExpired { .. } => None,
                other => panic!("sweep_expired returned {other:?}"),
            })
            .collect();
        ids.sort();
        ids
    };
    let first = ours(store.sweep_expired(secs(t0, 1)).await.expect("sweep"));
    assert_eq!(
        first,
        vec![short.id],
        "the first sweep must report exactly the expired grant"
    );
    let second = ours(store.sweep_expired(secs(t0, 1)).await.expect("sweep"));
    assert!(second.is_empty(), "an expiry was reported twice");
    let later = ours(store.sweep_expired(secs(t0, 601)).await.expect("sweep"));
    assert_eq!(
        later,
        vec![g.id],
        "the long grant's expiry (and only it) must be reported"
    );
}
