//! The PostgreSQL stores against a real PostgreSQL started by `wirewarden-testkit`: the
//! conformance suites, two gateways sharing one review queue (approve through one, the
//! waiter on the other wakes), wake-ups surviving a dropped `LISTEN` connection, and grant
//! expiry reported once across gateways.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Duration;

use wirewarden_core::{
    AuthMethod, Command, CommandClass, CommandId, GrantId, Principal, Protocol, ReviewRequirement,
    RuleId, Target, Timestamp,
};
use wirewarden_policy::{Grant, GrantScope, GrantStore};
use wirewarden_review::postgres::{LISTENER_APPLICATION_NAME, PgGrantStore, PgReviewStore};
use wirewarden_review::{ApprovalScope, ReviewStore, Reviewer, Reviews, Status};
use wirewarden_testkit::Postgres;
use wirewarden_testkit::conformance::grants::grant_store;
use wirewarden_testkit::conformance::review::{review_store, review_store_shared};

/// Long enough that a waiter can only wake in time through NOTIFY or a reconnect re-read.
const NO_POLL: Duration = Duration::from_secs(600);

fn start_pg() -> Postgres {
    Postgres::builder()
        .database("reviews")
        .start()
        .expect("start PostgreSQL")
}

async fn store(pg: &Postgres) -> PgReviewStore {
    PgReviewStore::connect(&pg.url())
        .await
        .expect("connect")
        .with_poll_interval(NO_POLL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_review_store_passes_the_review_suite() {
    let pg = start_pg();
    let store = store(&pg).await;
    review_store(&store).await;
    // Housekeeping: nothing was due an hour ago; a day later everything is.
    let hour_ago = Timestamp::now()
        .checked_sub(Duration::from_secs(3_600))
        .unwrap();
    assert_eq!(store.purge(hour_ago).await.unwrap(), 0);
    let tomorrow = Timestamp::now()
        .checked_add(Duration::from_secs(86_400))
        .unwrap();
    assert!(store.purge(tomorrow).await.unwrap() > 5);
    assert_eq!(
        pg.psql("SELECT count(*) FROM wirewarden_reviews")
            .unwrap()
            .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pg_review_stores_pass_the_shared_suite() {
    let pg = start_pg();
    let (a, b) = (store(&pg).await, store(&pg).await);
    review_store_shared(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_grant_store_passes_the_grant_suite() {
    let pg = start_pg();
    grant_store(&PgGrantStore::connect(&pg.url()).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_reviews_and_grants() {
    let pg = start_pg();
    // Two gateways, each with its own connections to the shared database.
    let gw1 = Reviews::new(
        Arc::new(store(&pg).await),
        Arc::new(PgGrantStore::connect(&pg.url()).await.unwrap()),
    );
    let gw2_grants = Arc::new(PgGrantStore::connect(&pg.url()).await.unwrap());
    let gw2 = Reviews::new(Arc::new(store(&pg).await), gw2_grants.clone());

    let agent = Principal::new(
        "agent-7",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap();
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let update = Command::new(
        Protocol::Postgres,
        "UPDATE",
        CommandClass::Write,
        "UPDATE accounts SET tier = 'gold' WHERE id = 42",
    )
    .unwrap();

    // Gateway 1 holds the command and waits; the reviewer uses gateway 2.
    let held = gw1
        .request(
            &agent,
            &crm,
            &update,
            CommandId::new(),
            RuleId::new("writes-need-review"),
            "writes to crm need a DBA",
            ReviewRequirement::one_of("dba", Duration::from_secs(300)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let id = held.review.id;
    let pending = gw2.store().pending(Timestamp::now()).await.unwrap();
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);

    let waiter = tokio::spawn({
        let gw1 = gw1.clone();
        async move { gw1.wait(id, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice = Reviewer::new("alice").with_group("dba");
    let resolution = gw2
        .approve(
            id,
            &alice,
            ApprovalScope::grant(Duration::from_secs(1_800)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let grant = resolution.grant.expect("the approval issued a grant");

    let (review, expired_event) = waiter.await.unwrap().unwrap();
    assert_eq!(review.status(Timestamp::now()), Status::Approved);
    assert!(expired_event.is_none());
    gw1.release(id, &agent, &crm, &update, Timestamp::now())
        .await
        .unwrap();
    // Gateway 2 cannot release it a second time.
    assert!(
        gw2.release(id, &agent, &crm, &update, Timestamp::now())
            .await
            .is_err()
    );

    // The grant issued through gateway 2 is visible to gateway 1's grant store.
    let gw1_grants = PgGrantStore::connect(&pg.url()).await.unwrap();
    let active = gw1_grants
        .active("agent-7", "crm", Timestamp::now())
        .await
        .unwrap();
    assert_eq!(active, vec![grant.clone()]);
    assert_eq!(active[0].scope.max_class, CommandClass::Write);
    let events = gw2_grants
        .revoke(grant.id, "bob", Timestamp::now())
        .await
        .unwrap();
    assert_eq!(events.kind.name(), "grant_revoked");
    assert!(
        gw1_grants
            .active("agent-7", "crm", Timestamp::now())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_wake_after_the_listen_connection_drops() {
    let pg = start_pg();
    let (a, b) = (store(&pg).await, store(&pg).await);
    let agent = "agent-9";
    let review = wirewarden_review::Review::new(
        CommandId::new(),
        wirewarden_review::Binding {
            digest: wirewarden_core::CommandDigest::compute(
                Protocol::Postgres,
                b"DELETE FROM t",
                [],
            ),
            requester: agent.into(),
            target: Target::new("crm", Protocol::Postgres).unwrap(),
        },
        "DELETE FROM t",
        CommandClass::Write,
        RuleId::new("r"),
        "why",
        ReviewRequirement::one_of("dba", Duration::from_secs(300)),
        Timestamp::now(),
    )
    .unwrap();
    a.submit(&review).await.unwrap();
    let b = Arc::new(b);
    let waiter = tokio::spawn({
        let b = b.clone();
        let id = review.id;
        async move { b.wait(id, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kill every LISTEN connection, then approve while they reconnect.
    let killed = pg
        .psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{LISTENER_APPLICATION_NAME}'"
        ))
        .unwrap();
    assert_eq!(killed.trim(), "2", "two listeners were connected");
    a.apply(
        review.id,
        &wirewarden_review::Operation::Approve {
            reviewer: Reviewer::new("alice").with_group("dba"),
            scope: ApprovalScope::Once,
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    let woken = waiter.await.unwrap().unwrap();
    assert_eq!(woken.status(Timestamp::now()), Status::Approved);

    // Both listeners come back.
    let mut listeners = String::new();
    for _ in 0..100 {
        listeners = pg
            .psql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{LISTENER_APPLICATION_NAME}'"
            ))
            .unwrap();
        if listeners.trim() == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listeners.trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_expiry_is_reported_once_across_gateways() {
    let pg = start_pg();
    let g1 = Arc::new(PgGrantStore::connect(&pg.url()).await.unwrap());
    let g2 = Arc::new(PgGrantStore::connect(&pg.url()).await.unwrap());
    let t0 = Timestamp::now();
    let mut ids: Vec<GrantId> = Vec::new();
    for i in 0..20 {
        let g = Grant::new(
            format!("agent-{i}"),
            "crm",
            GrantScope::up_to(CommandClass::Write),
            t0,
            Duration::from_secs(60),
            "admin",
        )
        .unwrap();
        ids.push(g.id);
        g1.issue(g).await.unwrap();
    }
    let later = t0.checked_add(Duration::from_secs(60)).unwrap();
    let (e1, e2) = tokio::join!(g1.sweep_expired(later), g2.sweep_expired(later));
    let mut reported: Vec<GrantId> = e1
        .unwrap()
        .into_iter()
        .chain(e2.unwrap())
        .map(|e| match e.kind {
            wirewarden_core::AuditEventKind::GrantExpired { grant_id } => grant_id,
            other => panic!("{other:?}"),
        })
        .collect();
    reported.sort();
    ids.sort();
    assert_eq!(reported, ids, "each expiry reported exactly once");
}
