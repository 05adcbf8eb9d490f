//! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.
//!
//! The codec crates fuzz their decoders one frame at a time; the harnesses here fuzz whole
//! sessions through a proxy: a hostile client and a hostile server at once, with identity,
//! policy, masking and audit all on, in process (the server is a script the input chooses,
//! reached through an in-memory stream). After each session they check what must hold
//! whatever either side sends; see [`redis_relay`], [`postgres_relay`] and [`http_relay`].
//!
//! Both harnesses log in with [`TOKEN`], give the gateway [`UPSTREAM_PASSWORD`] for the
//! server, and mask with a profile whose one custom detector finds [`CANARY`] as a word.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wirewarden_audit::{Appended, AuditSink, Durability};
use wirewarden_core::{AuditEvent, AuditEventKind, BoxError, CommandId, SessionEndReason};
use wirewarden_identity::{StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
use wirewarden_mask::{CustomDetector, Engine, ProfileBuilder};

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "http")]
pub use http::http_relay;
#[cfg(feature = "postgres")]
pub use postgres::postgres_relay;
#[cfg(feature = "redis")]
pub use redis::redis_relay;

/// The word the harnesses' mask profile detects: it must never reach the client as a word
/// unless the client sent it itself.
pub const CANARY: &str = "LEAKCANARY";
/// The token the harnesses log in with.
pub const TOKEN: &str = "tok-fuzz-7c1f9e2a";
/// The password the gateway logs in upstream with.
pub const UPSTREAM_PASSWORD: &str = "up-pass-5d0b8c31";

/// The identity provider: [`TOKEN`] is `agent-fuzz` in group `agents`, valid until
/// `expires_at` (the harnesses': for ever).
fn tokens(expires_at: Option<wirewarden_core::Timestamp>) -> StaticTokens {
    StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: vec![StaticToken {
            id: "fuzz".into(),
            hash: TokenHash::of(TOKEN, None),
            subject: "agent-fuzz".into(),
            groups: ["agents".to_owned()].into_iter().collect(),
            attributes: Default::default(),
            expires_at,
        }],
    })
    .expect("static tokens")
}

/// Adds the [`CANARY`] detector to a profile.
fn with_canary(profile: ProfileBuilder) -> ProfileBuilder {
    profile.custom(CustomDetector::dictionary("canary", [CANARY]).expect("canary detector"))
}

/// An audit sink that keeps the events of the session in memory.
#[derive(Debug, Default)]
struct Collector(Mutex<Vec<AuditEvent>>);

impl Collector {
    fn events(&self) -> MutexGuard<'_, Vec<AuditEvent>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl AuditSink for Collector {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        let mut events = self.events();
        events.push(event.clone());
        Ok(Appended::at(events.len() as u64))
    }

    async fn flush(&self) -> Result<(), BoxError> {
        Ok(())
    }

    fn durability(&self) -> Durability {
        Durability::Fsync
    }
}

/// Lets every task that can make progress make it: a task that yields runs again only once
/// the runtime's queue is empty, and the streams are in memory, so what is left to wait for
/// afterwards is a peer or a timer.
async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// The parts of one input, as every relay harness reads it: `flags`, a little-endian `u16`
/// length `n`, the `n` bytes the client sends, and then the server's script (see
/// [`segments`]).
struct Input<'a> {
    /// Flag bits 0–1: how the harness logs in (each harness says what each value means).
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    login: u8,
    /// Bit 2: the script answers the gateway's own login.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    script_answers_login: bool,
    /// Bit 3: the upstream cannot be reached.
    unreachable: bool,
    /// Bits 4–7: the client's bytes arrive in pieces of `1 << bits`.
    piece: usize,
    client: &'a [u8],
    script: Vec<&'a [u8]>,
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (client, script) = rest.split_at(n);
        Some(Self {
            login: flags & 3,
            script_answers_login: flags & 4 != 0,
            unreachable: flags & 8 != 0,
            piece: 1 << (flags >> 4),
            client,
            script: segments(script),
        })
    }
}

/// A current-thread runtime for one harness's sessions.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// The harnesses' pipeline: `identity`, `policy` (its budgets too), `masks`, `audit`, and
/// an [`AutoReviewer`] settling every review the policy asks for.
fn pipeline(
    identity: StaticTokens,
    policy: &str,
    masks: Engine,
    audit: Arc<Collector>,
) -> Arc<crate::Pipeline> {
    let engine =
        Arc::new(wirewarden_policy::RuleEngine::from_toml(policy).expect("harness policy"));
    let grants = Arc::new(wirewarden_policy::MemoryGrantStore::new());
    let reviewer = Arc::new(AutoReviewer::default());
    let reviews = wirewarden_review::Reviews::new(
        Arc::new(wirewarden_review::MemoryReviewStore::new()),
        grants.clone(),
    )
    .with_notifier(reviewer.clone());
    let pipeline = Arc::new(
        crate::Pipeline::builder(Arc::new(identity), engine.clone())
            .budgets(engine.budgets_handle())
            .grants(grants)
            .reviews(reviews)
            .masking(Arc::new(masks))
            .audit(audit)
            .build()
            .expect("harness pipeline"),
    );
    let _ = reviewer.0.set(Arc::downgrade(&pipeline));
    pipeline
}

/// A reviewer who settles each review as soon as it is requested: approves a held command
/// whose text has an even length, once, and denies the others, so the input decides. The
/// resolution goes on record as a reviewer's tool records it.
#[derive(Debug, Default)]
struct AutoReviewer(std::sync::OnceLock<std::sync::Weak<crate::Pipeline>>);

#[async_trait::async_trait]
impl wirewarden_review::Notifier for AutoReviewer {
    async fn notify(
        &self,
        notification: &wirewarden_review::Notification<'_>,
    ) -> Result<(), BoxError> {
        let wirewarden_review::Notification::Requested(review) = notification else {
            return Ok(());
        };
        let Some(pipeline) = self.0.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(());
        };
        let (id, approve) = (review.id, review.command_text.len() % 2 == 0);
        // After the request is stored: the review is decided from outside, as a person would.
        tokio::spawn(async move {
            let reviews = pipeline.reviews();
            let reviewer = wirewarden_review::Reviewer::new("fuzz-reviewer");
            let now = wirewarden_core::Timestamp::now();
            let resolution = if approve {
                let once = wirewarden_review::ApprovalScope::Once;
                reviews.approve(id, &reviewer, once, now).await
            } else {
                reviews.deny(id, &reviewer, "not this one", now).await
            };
            for event in resolution.map(|r| r.events).unwrap_or_default() {
                let _ = pipeline.record(&event).await;
            }
        });
        Ok(())
    }
}

/// The `CommandDecided` records whose command policy held and a reviewer approved: where
/// the record is, the command and its id. (The approval is on record wherever the
/// reviewer's tool put it, which may be after the command ran.)
#[cfg(feature = "postgres")]
fn approved_intents(events: &[AuditEvent]) -> Vec<(usize, &wirewarden_core::Command, CommandId)> {
    let requested: std::collections::HashMap<wirewarden_core::ReviewId, CommandId> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::ReviewRequested {
                review_id,
                command_id,
                ..
            } => Some((*review_id, *command_id)),
            _ => None,
        })
        .collect();
    let approved: std::collections::HashSet<CommandId> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::ReviewResolved {
                review_id,
                outcome: wirewarden_core::ReviewOutcome::Approved,
                ..
            } => requested.get(review_id).copied(),
            _ => None,
        })
        .collect();
    intents_where(events, |decision, id| {
        matches!(decision, wirewarden_core::Decision::Review { .. }) && approved.contains(&id)
    })
}

/// The `CommandDecided` records of a trail whose decision and command id `keep` takes, in
/// order: where each is, its command and its id.
fn intents_where(
    events: &[AuditEvent],
    keep: impl Fn(&wirewarden_core::Decision, CommandId) -> bool,
) -> Vec<(usize, &wirewarden_core::Command, CommandId)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.kind {
            AuditEventKind::CommandDecided {
                command,
                decision,
                command_id,
                ..
            } if keep(decision, *command_id) => Some((i, command, *command_id)),
            _ => None,
        })
        .collect()
}

/// Plays the client: `login`, then `bytes` in pieces of `piece`, letting the gateway settle
/// after each; then closes its side, settles, and calls `done` (which lets the server go).
/// Returns everything the client received, once the gateway closed.
async fn play_client(
    mut client: tokio::io::DuplexStream,
    login: &[u8],
    bytes: &[u8],
    piece: usize,
    done: impl FnOnce(),
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut rx, mut tx) = tokio::io::split(&mut client);
    let receive = async {
        let mut got = Vec::new();
        let _ = rx.read_to_end(&mut got).await;
        got
    };
    let send = async {
        let _ = tx.write_all(login).await;
        settle().await;
        for piece in bytes.chunks(piece) {
            if tx.write_all(piece).await.is_err() {
                break;
            }
            settle().await;
        }
        settle().await;
        let _ = tx.shutdown().await;
        settle().await;
        done();
    };
    tokio::join!(receive, send).0
}

/// The allowed `CommandDecided` records of a trail, in order: where each is, its command
/// and its id.
fn allowed_intents(events: &[AuditEvent]) -> Vec<(usize, &wirewarden_core::Command, CommandId)> {
    intents_where(events, |decision, _| {
        matches!(decision, wirewarden_core::Decision::Allow { .. })
    })
}

/// Splits a server script into its segments: each a little-endian `u16` length and that
/// many bytes (fewer if the input ends first). Lengths rather than separators, because
/// PostgreSQL messages are binary and RESP values may hold any byte.
fn segments(mut script: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = script.split_first_chunk::<2>() {
        let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (segment, rest) = rest.split_at(n);
        out.push(segment);
        script = rest;
    }
    out
}

/// An input: `flags`, the client's bytes and the server's `segments` (for tests).
#[cfg(test)]
fn input(flags: u8, client: &[u8], segments: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(
        &u16::try_from(client.len())
            .expect("a short client part")
            .to_le_bytes(),
    );
    v.extend_from_slice(client);
    v.extend_from_slice(&script(segments));
    v
}

/// A script of `segments`, as [`segments`] reads it (for tests and seeds).
#[cfg(test)]
fn script(segments: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        out.extend_from_slice(
            &u16::try_from(s.len())
                .expect("a short segment")
                .to_le_bytes(),
        );
        out.extend_from_slice(s);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `bytes` hold [`CANARY`] anywhere, ignoring ASCII case.
fn mentions_canary(bytes: &[u8]) -> bool {
    bytes
        .windows(CANARY.len())
        .any(|w| w.eq_ignore_ascii_case(CANARY.as_bytes()))
}

/// What the harnesses' profiles put in place of a value they mask.
const REDACTED: &[u8] = b"[REDACTED]";

/// Whether `text` holds [`CANARY`] as a word (ignoring ASCII case), as the dictionary
/// detector finds it: not preceded or followed by a letter or digit. An occurrence right
/// next to a value the gateway masked is passed over: what stood there before (`4444…`
/// masked as a number) may have made it no word at all in what the server sent.
fn canary_word(text: &[u8]) -> bool {
    let needle = CANARY.as_bytes();
    let alnum_before = |i: usize| {
        (1..=4.min(i)).any(|k| {
            std::str::from_utf8(&text[i - k..i])
                .ok()
                .and_then(|s| s.chars().next_back())
                .is_some_and(char::is_alphanumeric)
        })
    };
    let alnum_after = |i: usize| {
        (1..=4.min(text.len() - i)).any(|k| {
            std::str::from_utf8(&text[i..i + k])
                .ok()
                .and_then(|s| s.chars().next())
                .is_some_and(char::is_alphanumeric)
        })
    };
    (0..text.len().saturating_sub(needle.len() - 1)).any(|i| {
        text[i..i + needle.len()].eq_ignore_ascii_case(needle)
            && !alnum_before(i)
            && !alnum_after(i + needle.len())
            && !text[..i].ends_with(REDACTED)
            && !text[i + needle.len()..].starts_with(REDACTED)
    })
}

/// How long an upstream error's recorded text may be before it can have been cut (the
/// Redis relay renders at most 512 bytes of an error).
const ERROR_TEXT_CUT: usize = 500;

/// `text` without the last [`CANARY`]-length bytes when it was cut.
fn uncut(text: &[u8], cut: bool) -> &[u8] {
    if cut {
        &text[..text.len().saturating_sub(CANARY.len())]
    } else {
        text
    }
}

/// What every session's trail must satisfy, whatever the protocol:
///
/// - no event holds [`TOKEN`] unless a peer sent it (the client after logging in, or the
///   upstream in a reply, which is recorded as the client received it), nor
///   [`UPSTREAM_PASSWORD`] unless a peer sent it;
/// - no recorded reply (when `recordings`: a PostgreSQL recording holds column names,
///   which are not masked) or upstream error holds [`CANARY`] as a word unless the client
///   sent it;
/// - each `CommandCompleted` follows its own `CommandDecided` (once only, unless
///   `repeats`: a prepared statement runs as often as it is executed), and every allowed
///   command in `allowed` has an outcome;
/// - a session that started ends exactly once.
fn check_trail(
    events: &[AuditEvent],
    client: &[u8],
    script: &[u8],
    allowed: &[CommandId],
    repeats: bool,
    recordings: bool,
) {
    let token = TOKEN.as_bytes();
    let password = UPSTREAM_PASSWORD.as_bytes();
    let client_sent_canary = mentions_canary(client);
    for e in events {
        let text = format!("{e:?}").into_bytes();
        if !contains(client, token) && !contains(script, token) {
            assert!(!contains(&text, token), "the client's token is in {e:?}");
        }
        if !contains(script, password) && !contains(client, password) {
            assert!(
                !contains(&text, password),
                "the upstream password is in {e:?}"
            );
        }
        if let AuditEventKind::CommandCompleted { reply, error, .. } = &e.kind
            && !client_sent_canary
        {
            // A recording cut to its limit may end in the first letters of a longer word,
            // which the client saw whole and the detector rightly passed over: the cut end
            // is not looked at.
            let (text, cut) = reply
                .as_ref()
                .map_or((&b""[..], false), |r| (r.text.as_bytes(), r.truncated));
            assert!(
                !recordings || !canary_word(uncut(text, cut)),
                "a detected value was recorded: {e:?}"
            );
            let error = error.as_deref().unwrap_or_default().as_bytes();
            let error_cut = error.len() >= ERROR_TEXT_CUT;
            assert!(
                !canary_word(uncut(error, error_cut)),
                "a detected value was recorded: {e:?}"
            );
        }
    }

    let mut decided = std::collections::HashSet::new();
    let mut completed = std::collections::HashSet::new();
    for e in events {
        match &e.kind {
            AuditEventKind::CommandDecided { command_id, .. } => {
                decided.insert(*command_id);
            }
            AuditEventKind::CommandCompleted { command_id, .. } => {
                assert!(
                    decided.contains(command_id),
                    "{command_id:?} completed without a decision before it"
                );
                assert!(
                    completed.insert(*command_id) || repeats,
                    "{command_id:?} completed twice"
                );
            }
            _ => {}
        }
    }
    for id in allowed {
        assert!(
            completed.contains(id),
            "the allowed command {id:?} has no outcome on record"
        );
    }
    let started = events
        .iter()
        .filter(|e| matches!(e.kind, AuditEventKind::SessionStarted { .. }))
        .count();
    let ends: Vec<&SessionEndReason> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::SessionEnded { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(started <= 1, "{started} sessions started");
    assert_eq!(
        ends.len(),
        started,
        "{started} session(s) started and {} ended: {ends:?}",
        ends.len()
    );
}

/// A current-thread runtime whose clock stands still until nothing else can run, for
/// tests that let the wall clock pass a credential's expiry before its timer fires.
#[cfg(all(test, any(feature = "postgres", feature = "redis")))]
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a paused runtime")
}

/// Blocks the calling thread (and with it a current-thread runtime's clock) until the wall
/// clock is past `at`.
#[cfg(all(test, any(feature = "postgres", feature = "redis")))]
fn wait_past(at: wirewarden_core::Timestamp) {
    while !at
        .saturating_duration_since(wirewarden_core::Timestamp::now())
        .is_zero()
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Checks that a trail holds `verb`'s denial by the rule `credential-expired` (policy
/// version `builtin`), and the session's end as `CredentialExpired` after `commands`.
#[cfg(all(test, any(feature = "postgres", feature = "redis")))]
fn assert_expired_denial(events: &[AuditEvent], verb: &str, commands: u64) {
    let denied = events.iter().find_map(|e| match &e.kind {
        AuditEventKind::CommandDecided {
            command,
            decision: wirewarden_core::Decision::Deny { rule, .. },
            policy_version,
            ..
        } => Some((
            command.verb.as_str(),
            rule.as_str(),
            policy_version.as_str(),
        )),
        _ => None,
    });
    assert_eq!(
        denied,
        Some((verb, "credential-expired", "builtin")),
        "{events:#?}"
    );
    let end = events.iter().find_map(|e| match &e.kind {
        AuditEventKind::SessionEnded {
            reason, commands, ..
        } => Some((reason.clone(), *commands)),
        _ => None,
    });
    assert_eq!(
        end,
        Some((SessionEndReason::CredentialExpired, commands)),
        "{events:#?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_next_to_a_masked_value_is_passed_over() {
        assert!(!canary_word(b"+[REDACTED]LEAKCANARY\r\n"));
        assert!(!canary_word(b"LEAKCANARY[REDACTED]"));
        assert!(canary_word(b"[REDACTED] LEAKCANARY"));
    }

    #[test]
    fn the_canary_is_found_as_a_word_only() {
        assert!(canary_word(b"$10\r\nLEAKCANARY\r\n"));
        assert!(canary_word(b"a leakcanary."));
        assert!(!canary_word(b"xLEAKCANARY"));
        assert!(!canary_word(b"LEAKCANARY7"));
        assert!(!canary_word("\u{e9}LEAKCANARY".as_bytes()));
        assert!(canary_word(b"\xffLEAKCANARY"));
        assert!(mentions_canary(b"xleakCanary7"));
    }

    #[test]
    fn scripts_split_into_length_prefixed_segments() {
        let s = script(&[b"+OK\r\n", b"", b"\0\0"]);
        assert_eq!(segments(&s), [&b"+OK\r\n"[..], b"", b"\0\0"]);
        // A length past the end takes what is there; a lone byte is no segment.
        assert_eq!(segments(&[9, 0, b'a', b'b']), [&b"ab"[..]]);
        assert!(segments(&[7]).is_empty());
    }
}
