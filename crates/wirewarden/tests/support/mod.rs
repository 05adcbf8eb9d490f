//! Helpers shared by the end-to-end tests.

// Each test binary uses some of them.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wirewarden::audit::{
    Appended, AuditSink, ChainKey, CheckpointSigner, Durability, FileSink, VerifyKeys, read_log,
    verify_dir,
};
use wirewarden::core::{AuditEvent, AuditEventKind, BoxError, Timestamp};
use wirewarden::review::{Review, Reviews};

/// A sink that refuses every intent (`CommandDecided`) and records everything else: the
/// pipeline must refuse the commands whose intent it could not record.
#[derive(Debug)]
pub(crate) struct RefuseIntents(pub(crate) Arc<dyn AuditSink>);

#[async_trait::async_trait]
impl AuditSink for RefuseIntents {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        if matches!(event.kind, AuditEventKind::CommandDecided { .. }) {
            return Err("disk full".into());
        }
        self.0.append(event).await
    }

    async fn flush(&self) -> Result<(), BoxError> {
        self.0.flush().await
    }

    fn durability(&self) -> Durability {
        Durability::Fsync
    }
}

/// The first pending review, once one has been requested (panics after 30 s).
pub(crate) async fn pending_review(reviews: &Reviews) -> Review {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let p = reviews.store().pending(Timestamp::now()).await.unwrap();
            if let Some(r) = p.into_iter().next() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a review was requested")
}

/// A fresh hash-chained audit trail in durable (`fsync`) mode: its directory, the keys that
/// verify it, and the sink.
pub(crate) fn audit_trail() -> (tempfile::TempDir, VerifyKeys, FileSink) {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainKey::generate("k1").unwrap();
    let signer = CheckpointSigner::generate().unwrap();
    let keys = VerifyKeys {
        chain: chain.clone(),
        checkpoint: signer.public(),
    };
    let sink = FileSink::builder(dir.path(), chain, signer)
        .durability(Durability::Fsync)
        .open()
        .unwrap();
    (dir, keys, sink)
}

/// A client's output as text.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The kinds of the events in the trail in `dir`, in trail order.
pub(crate) fn events(dir: &Path, keys: &VerifyKeys) -> Vec<AuditEventKind> {
    read_log(dir, keys)
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect()
}

/// Panics unless the trail in `dir` verifies with `keys`.
pub(crate) fn assert_verifies(dir: &Path, keys: &VerifyKeys) {
    let report = verify_dir(dir, keys).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Each decided command's text and the session's application when it was decided, walking
/// the trail in order: `SessionStarted` sets the application, `ApplicationChanged` changes it.
pub(crate) fn applications_at_decision(
    kinds: &[AuditEventKind],
) -> Vec<(wirewarden::core::Command, Option<String>)> {
    let mut current = None;
    let mut out = Vec::new();
    for k in kinds {
        match k {
            AuditEventKind::SessionStarted { application, .. }
            | AuditEventKind::ApplicationChanged { application } => {
                current.clone_from(application);
            }
            AuditEventKind::CommandDecided { command, .. } => {
                out.push((command.clone(), current.clone()));
            }
            _ => {}
        }
    }
    out
}

/// Identities for the client-certificate tests, all in group `agents`: certificates whose
/// `field` matches `pattern` map to that name, then the static tokens `(id, secret,
/// subject)`.
pub(crate) fn agents(
    field: wirewarden::identity::CertField,
    pattern: &str,
    tokens: &[(&str, &str, &str)],
) -> wirewarden::identity::Chain {
    use wirewarden::identity::{Chain, StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
    let groups = || ["agents".to_owned()].into_iter().collect();
    let tokens = StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: tokens
            .iter()
            .map(|(id, secret, subject)| StaticToken {
                id: (*id).into(),
                hash: TokenHash::of(secret, None),
                subject: (*subject).into(),
                groups: groups(),
                attributes: Default::default(),
                expires_at: None,
            })
            .collect(),
    })
    .unwrap();
    Chain::new()
        .with(Arc::new(agent_certificates(field, pattern)))
        .with(Arc::new(tokens))
}

/// Client certificates whose `field` matches `pattern` map to that name, in group `agents`
/// (no trust anchors of their own: the listener's handshake verifies the chain).
pub(crate) fn agent_certificates(
    field: wirewarden::identity::CertField,
    pattern: &str,
) -> wirewarden::identity::ClientCertificates {
    use wirewarden::identity::{CertRule, ClientCertConfig, ClientCertificates};
    ClientCertificates::new(ClientCertConfig {
        rules: vec![CertRule {
            field,
            pattern: pattern.into(),
            groups: ["agents".to_owned()].into_iter().collect(),
            attributes: Default::default(),
        }],
        ..ClientCertConfig::default()
    })
    .unwrap()
}

/// The audit trail once `done` holds for it: outcomes, and refused handshakes, are
/// recorded on their own tasks, so this flushes and reads again until then (panics after
/// 30 s; no timing is asserted).
pub(crate) async fn events_when(
    pipeline: &wirewarden::Pipeline,
    dir: &Path,
    keys: &VerifyKeys,
    done: impl Fn(&[AuditEvent]) -> bool,
) -> Vec<AuditEvent> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            pipeline.audit_sink().flush().await.unwrap();
            let events: Vec<_> = read_log(dir, keys)
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect();
            if done(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the audit trail has the expected events")
}

/// Denies review `id` as a reviewer of `group`, for `reason`.
pub(crate) async fn deny(
    reviews: &Reviews,
    id: wirewarden::core::ReviewId,
    group: &str,
    reason: &str,
) -> Result<(), wirewarden::review::Error> {
    reviews
        .deny(
            id,
            &wirewarden::review::Reviewer::new(format!("{group}-1")).with_group(group),
            reason,
            Timestamp::now(),
        )
        .await
        .map(|_| ())
}

/// Approves review `id` as `<group>-1`, a reviewer in `group`, for one use.
pub(crate) async fn approve(
    reviews: &Reviews,
    id: wirewarden::core::ReviewId,
    group: &str,
) -> Result<(), wirewarden::review::Error> {
    reviews
        .approve(
            id,
            &wirewarden::review::Reviewer::new(format!("{group}-1")).with_group(group),
            wirewarden::review::ApprovalScope::Once,
            Timestamp::now(),
        )
        .await
        .map(|_| ())
}

/// Runs `client` (a command held for review), kills it once its review is pending, and
/// returns the trail once the review is cancelled and the session has ended; a reviewer
/// in `group` can then no longer approve it.
pub(crate) async fn abandon_held(
    pipeline: &wirewarden::Pipeline,
    dir: &Path,
    keys: &VerifyKeys,
    mut client: tokio::process::Command,
    group: &str,
) -> Vec<AuditEvent> {
    let mut client = client
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let reviews = pipeline.reviews().clone();
    let pending = pending_review(&reviews).await;
    client.kill().await.unwrap();
    let events = events_when(pipeline, dir, keys, |events| {
        review_cancelled(events, pending.id) && !end_reasons(events).is_empty()
    })
    .await;
    assert!(approve(&reviews, pending.id, group).await.is_err());
    events
}

/// Whether review `id` was cancelled on record (its requester gave up the wait).
pub(crate) fn review_cancelled(events: &[AuditEvent], id: wirewarden::core::ReviewId) -> bool {
    events.iter().any(|e| {
        matches!(
            &e.kind,
            AuditEventKind::ReviewResolved {
                outcome: wirewarden::core::ReviewOutcome::Cancelled,
                review_id,
                ..
            } if *review_id == id
        )
    })
}

/// The error of the outcome recorded for the first decided command `is` picks: `None` if
/// no outcome is on record, `Some(None)` if it has no error.
pub(crate) fn outcome_error(
    events: &[AuditEvent],
    is: impl Fn(&wirewarden::core::Command) -> bool,
) -> Option<Option<String>> {
    let id = events.iter().find_map(|e| match &e.kind {
        AuditEventKind::CommandDecided {
            command_id,
            command,
            ..
        } if is(command) => Some(*command_id),
        _ => None,
    })?;
    events.iter().find_map(|e| match &e.kind {
        AuditEventKind::CommandCompleted {
            command_id, error, ..
        } if *command_id == id => Some(error.clone()),
        _ => None,
    })
}

/// Why each session on record ended, in order.
pub(crate) fn end_reasons(events: &[AuditEvent]) -> Vec<wirewarden::core::SessionEndReason> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::SessionEnded { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The reasons of the sessions that ended because their credential was revoked.
pub(crate) fn revoked_sessions<'k>(
    kinds: impl IntoIterator<Item = &'k AuditEventKind>,
) -> Vec<String> {
    kinds
        .into_iter()
        .filter_map(|k| match k {
            AuditEventKind::SessionEnded {
                reason: wirewarden::core::SessionEndReason::CredentialRevoked { reason },
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The events of the trail in `dir` once `done` holds for them, read again every 100 ms
/// (panics after 30 s; no timing is asserted).
pub(crate) async fn kinds_when(
    dir: &Path,
    keys: &VerifyKeys,
    done: impl Fn(&[AuditEventKind]) -> bool,
) -> Vec<AuditEventKind> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let kinds = events(dir, keys);
            if done(&kinds) {
                return kinds;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the audit trail has the expected events")
}

/// The environment the Python clients of the client-certificate tests read: the gateway's
/// `PORT`, and the testkit authority (`CA`) and client certificate (`CERT`, `KEY`).
pub(crate) fn pki_env(
    port: u16,
    pki: &wirewarden_testkit::TlsMaterial,
) -> [(&'static str, String); 4] {
    [
        ("PORT", port.to_string()),
        ("CA", pki.ca_file().display().to_string()),
        ("CERT", pki.client_cert_file().display().to_string()),
        ("KEY", pki.client_key_file().display().to_string()),
    ]
}

/// A Python client kept open and driven a line at a time: `setup` runs once (with `env` in
/// `os.environ`), then every [`eval`](Self::eval) evaluates one Python expression in its
/// scope and returns what it printed: the value, or `ERROR <type> <message>` if it raised.
pub(crate) struct Interactive {
    child: tokio::process::Child,
    input: tokio::process::ChildStdin,
    output: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Interactive {
    pub(crate) async fn start(setup: &str, env: &[(&str, String)]) -> Self {
        let script = format!(
            "import os, sys\n{setup}\nprint('READY', flush=True)\nfor line in sys.stdin:\n    try:\n        print(eval(line), flush=True)\n    except Exception as e:\n        print('ERROR', type(e).__name__, str(e).replace('\\n', ' '), flush=True)\n"
        );
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", &script])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        let mut me = Self {
            child,
            input,
            output,
        };
        assert_eq!(me.line().await, "READY", "the client's setup ran");
        me
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(60), self.output.next_line())
            .await
            .expect("the client answered")
            .unwrap()
            .expect("the client is running")
    }

    /// Evaluates `expression` (one line) and returns what it printed.
    pub(crate) async fn eval(&mut self, expression: &str) -> String {
        self.send(expression).await;
        self.line().await
    }

    /// Starts evaluating `expression` (one line); [`result`](Self::result) reads what it
    /// printed.
    pub(crate) async fn send(&mut self, expression: &str) {
        use tokio::io::AsyncWriteExt;
        assert!(!expression.contains('\n'));
        self.input
            .write_all(format!("{expression}\n").as_bytes())
            .await
            .unwrap();
        self.input.flush().await.unwrap();
    }

    /// What the expression [`send`](Self::send) started printed.
    pub(crate) async fn result(&mut self) -> String {
        self.line().await
    }

    /// Closes its input and waits for it to exit cleanly.
    pub(crate) async fn finish(mut self) {
        drop(self.input);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the client exited")
            .unwrap();
        assert!(status.success());
    }
}

/// The command whose subscription or `LISTEN` policy withdrew, ending the session, and
/// the rule that refused it.
pub(crate) fn withdrawn(kinds: &[AuditEventKind]) -> Option<(wirewarden::core::CommandId, String)> {
    kinds.iter().find_map(|k| match k {
        AuditEventKind::SessionEnded {
            reason:
                wirewarden::core::SessionEndReason::SubscriptionWithdrawn {
                    command_id, rule, ..
                },
            ..
        } => Some((*command_id, rule.as_str().to_owned())),
        _ => None,
    })
}

/// The messages recorded for the command `id`.
pub(crate) fn transcripts(kinds: &[AuditEventKind], id: wirewarden::core::CommandId) -> Vec<&str> {
    kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::Transcript {
                command_id: Some(c),
                text,
                ..
            } if *c == id => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// A grant of reads to `subject` on `target` from now, for `lasts`, issued by `ops-lead`.
pub(crate) fn read_grant(
    subject: &str,
    target: &str,
    lasts: Duration,
) -> wirewarden::policy::Grant {
    wirewarden::policy::Grant::new(
        subject,
        target,
        wirewarden::policy::GrantScope::up_to(wirewarden::core::CommandClass::Read),
        Timestamp::now(),
        lasts,
        "ops-lead",
    )
    .unwrap()
}
