//! `LISTEN`: the channels a session listens on, each with the decision of the statement that
//! started it, so that every notification on it is masked with that decision's profile,
//! recorded as that statement's transcript, charged to budgets, and delivered only while
//! policy still allows it (when the decision is taken again: [`crate::stream`]).
//!
//! The record follows what the server does, not what was sent. A `LISTEN`, `UNLISTEN` or
//! `DISCARD ALL` policy allowed travels with its statement ([`Staged`]); when the server
//! completes the statement the change waits in the transaction under way, and it is made
//! when that transaction commits: the server listens from then on. A statement that fails,
//! or whose transaction (or savepoint) rolls back, leaves the record as it was, as the
//! server discards its pending `LISTEN` and `UNLISTEN` actions then. A channel the record
//! does not hold cannot end the session when the decision behind it would be refused now.
//!
//! Where the relay cannot tell whether a change was made (a rollback to a savepoint it did
//! not see set, a procedure that commits between a `LISTEN` and a later error) it takes
//! the change as not made: a notification on a channel the session holds no decision for
//! (that, or a `LISTEN` run inside a function) is withheld.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirewarden_core::{CommandId, ObjectKind, Timestamp};
use wirewarden_mask::Profile;
use wirewarden_sql::Analysis;

use super::names::TxnOp;
use crate::stream::Opened;

/// What a statement does to the session's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// `LISTEN name`.
    Listen(String),
    /// `UNLISTEN name`.
    Unlisten(String),
    /// `UNLISTEN *`, `DISCARD ALL`.
    UnlistenAll,
}

impl Change {
    /// Whether `tag` is the server's answer to the statement that makes this change.
    pub(crate) fn answered_by(&self, tag: &[u8]) -> bool {
        match self {
            Change::Listen(_) => tag == b"LISTEN",
            Change::Unlisten(_) => tag == b"UNLISTEN",
            Change::UnlistenAll => matches!(tag, b"UNLISTEN" | b"DISCARD ALL"),
        }
    }
}

/// What the statements of `analysis` do to the session's channels, in order; empty (and
/// not allocated) for the statements that do nothing to them.
pub(crate) fn changes(analysis: &Analysis) -> Vec<Change> {
    let mut out = Vec::new();
    for s in &analysis.statements {
        let channel = || {
            s.objects
                .iter()
                .find(|o| o.kind == ObjectKind::Channel)
                .map(|o| o.name.clone())
        };
        match s.verb.as_str() {
            "LISTEN" => {
                if let Some(c) = channel() {
                    out.push(Change::Listen(c));
                }
            }
            "UNLISTEN" => out.push(channel().map_or(Change::UnlistenAll, Change::Unlisten)),
            "DISCARD ALL" => out.push(Change::UnlistenAll),
            _ => {}
        }
    }
    out
}

/// What an allowed statement does to the channels, with the decision it was allowed
/// under, carried by its execution until the server answers each change.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    /// Its changes not answered yet, in order.
    pub(crate) changes: VecDeque<Change>,
    /// The decision a channel it starts runs under.
    pub(crate) opened: Opened,
}

/// One channel, with the decision its notifications go out under.
#[derive(Debug, Clone)]
pub(crate) struct Listening {
    /// The statement that started it.
    pub(crate) id: CommandId,
    /// The profile its notifications are masked with.
    pub(crate) profile: Arc<Profile>,
    /// The decision it runs under.
    pub(crate) opened: Opened,
}

/// The session's channels.
#[derive(Debug, Default)]
pub(crate) struct Listens {
    /// The channels the server listens on, as far as the relay saw them made.
    open: HashMap<String, Listening>,
    /// The changes statements the server completed in the transaction under way made, in
    /// order: made at its commit, dropped at its rollback.
    uncommitted: Vec<(Change, Listening)>,
    /// The transaction's savepoints, oldest first: each name, and how many of
    /// `uncommitted` came before it.
    savepoints: Vec<(String, usize)>,
    /// The server reported an error since the transaction under way began (or since the
    /// savepoint it rolled back to).
    failed: bool,
}

impl Listens {
    /// The server completed a statement that makes `change` under the decision
    /// `listening`: made when its transaction commits.
    pub(crate) fn completed(&mut self, change: Change, listening: Listening) {
        self.uncommitted.push((change, listening));
    }

    /// The server reported an error: the transaction under way rolls back, now if it is
    /// implicit, or when the client ends it (or rolls back to a savepoint before it).
    pub(crate) fn failed(&mut self) {
        self.failed = true;
    }

    /// The server completed a statement with `tag`, which does `op` to the transaction
    /// (when the relay knows it). `COMMIT` makes the transaction's changes (a failed
    /// transaction's `COMMIT` is answered `ROLLBACK`); `ROLLBACK` drops them, and as the
    /// answer to `ROLLBACK TO SAVEPOINT`, drops those made since the savepoint; without
    /// the savepoint, all of them. Returns whether the channels changed.
    pub(crate) fn transaction(&mut self, tag: &[u8], op: Option<&TxnOp>) -> bool {
        match (tag, op) {
            (b"SAVEPOINT", Some(TxnOp::Savepoint(name))) => {
                self.savepoints.push((name.clone(), self.uncommitted.len()));
                false
            }
            (b"RELEASE", Some(TxnOp::Release(name))) => {
                // What came after it now belongs to the savepoint (or transaction) around it.
                if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                    self.savepoints.truncate(i);
                }
                false
            }
            (b"ROLLBACK", Some(TxnOp::RollbackTo(name))) => {
                match self.savepoints.iter().rposition(|(n, _)| n == name) {
                    Some(i) => {
                        let kept = self.savepoints.get(i).map_or(0, |(_, at)| *at);
                        self.uncommitted.truncate(kept);
                        self.savepoints.truncate(i + 1);
                    }
                    None => self.uncommitted.clear(),
                }
                self.failed = false;
                false
            }
            (b"COMMIT", _) => self.end(true),
            (b"ROLLBACK" | b"PREPARE TRANSACTION", _) => {
                // A prepared transaction cannot have run `LISTEN` or `UNLISTEN`: the server
                // refuses to prepare one that did. Nothing it held is taken as made.
                self.end(false)
            }
            _ => false,
        }
    }

    /// The server is outside any transaction (ready for a query outside a transaction
    /// block, or sending a notification, which it does only then): the transaction under
    /// way has ended, rolled back if an error came since it began, committed if not.
    /// Returns whether the channels changed.
    pub(crate) fn between_transactions(&mut self) -> bool {
        let commit = !self.failed;
        self.end(commit)
    }

    /// Ends the transaction under way: its changes are made if it committed, dropped if
    /// not. Returns whether the channels changed.
    fn end(&mut self, commit: bool) -> bool {
        self.failed = false;
        self.savepoints.clear();
        if self.uncommitted.is_empty() {
            return false;
        }
        let made = std::mem::take(&mut self.uncommitted);
        if !commit {
            return false;
        }
        for (change, listening) in made {
            match change {
                Change::Listen(name) => {
                    self.open.insert(name, listening);
                }
                Change::Unlisten(name) => {
                    self.open.remove(&name);
                }
                Change::UnlistenAll => self.open.clear(),
            }
        }
        true
    }

    /// When the first decision falls due if no notification comes (see
    /// [`Opened::due_at`]); `None` when the session listens on nothing.
    pub(crate) fn next_due(&self, every: Duration) -> Option<Instant> {
        self.open.values().map(|l| l.opened.due_at(every)).min()
    }

    /// The channels whose decision is due at `now`.
    pub(crate) fn due(&self, now: Instant, wall: Timestamp, every: Duration) -> Vec<String> {
        self.open
            .iter()
            .filter(|(_, l)| l.opened.due(now, wall, every))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The channel named `channel` as the server sends it.
    pub(crate) fn get_mut(&mut self, channel: &[u8]) -> Option<&mut Listening> {
        let name = std::str::from_utf8(channel).ok()?;
        self.open.get_mut(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirewarden_core::{Command, CommandClass, Protocol};
    use wirewarden_sql::Classifier;

    fn of(sql: &str) -> Vec<Change> {
        changes(&Classifier::new().classify(sql))
    }

    #[test]
    fn statements_say_what_they_do_to_channels() {
        assert_eq!(of("SELECT 1"), vec![]);
        assert_eq!(of("LISTEN Jobs"), vec![Change::Listen("jobs".into())]);
        assert_eq!(
            of("LISTEN \"Jobs\"; UNLISTEN other; UNLISTEN *; DISCARD ALL"),
            vec![
                Change::Listen("Jobs".into()),
                Change::Unlisten("other".into()),
                Change::UnlistenAll,
                Change::UnlistenAll,
            ]
        );
        assert_eq!(of("NOTIFY jobs, 'x'"), vec![]);
    }

    fn listening(id: CommandId) -> Listening {
        let profile = Arc::new(Profile::builder("p").build().unwrap());
        let command =
            Command::new(Protocol::Postgres, "LISTEN", CommandClass::Read, "LISTEN a").unwrap();
        Listening {
            id,
            profile,
            opened: Opened::new(command, &[]),
        }
    }

    /// Completes every change `sql` makes, as the server would, under `id`.
    fn complete(l: &mut Listens, sql: &str, id: CommandId) {
        for c in of(sql) {
            l.completed(c, listening(id));
        }
    }

    #[test]
    fn changes_are_answered_by_their_statements_tags() {
        assert!(Change::Listen("a".into()).answered_by(b"LISTEN"));
        assert!(!Change::Listen("a".into()).answered_by(b"UNLISTEN"));
        assert!(Change::Unlisten("a".into()).answered_by(b"UNLISTEN"));
        assert!(Change::UnlistenAll.answered_by(b"UNLISTEN"));
        assert!(Change::UnlistenAll.answered_by(b"DISCARD ALL"));
        assert!(!Change::UnlistenAll.answered_by(b"SELECT 1"));
    }

    #[test]
    fn channels_follow_committed_listen_and_unlisten() {
        let mut l = Listens::default();
        let (a, b) = (CommandId::new(), CommandId::new());
        complete(&mut l, "LISTEN a; LISTEN b", a);
        // Completed, not yet committed: the server does not listen yet.
        assert!(l.get_mut(b"a").is_none());
        assert!(l.between_transactions());
        assert_eq!(l.get_mut(b"a").unwrap().id, a);
        complete(&mut l, "LISTEN b", b);
        assert!(l.transaction(b"COMMIT", Some(&TxnOp::End)));
        assert_eq!(l.get_mut(b"b").unwrap().id, b);
        complete(&mut l, "UNLISTEN a", b);
        l.between_transactions();
        assert!(l.get_mut(b"a").is_none());
        assert!(l.get_mut(b"b").is_some());
        complete(&mut l, "DISCARD ALL", b);
        l.between_transactions();
        assert!(l.get_mut(b"b").is_none());
        assert!(l.get_mut(b"\xff").is_none());
        assert_eq!(l.next_due(Duration::from_secs(1)), None);
    }

    /// As the server discards the pending actions of a transaction that rolls back or
    /// fails, and of a subtransaction rolled back to its savepoint.
    #[test]
    fn what_fails_or_rolls_back_is_not_made() {
        let mut l = Listens::default();
        let id = CommandId::new();
        complete(&mut l, "LISTEN a", id);
        assert!(!l.transaction(b"ROLLBACK", Some(&TxnOp::End)));
        assert!(l.get_mut(b"a").is_none());
        // An implicit transaction that failed after the LISTEN completed.
        complete(&mut l, "LISTEN a", id);
        l.failed();
        assert!(!l.between_transactions());
        assert!(l.get_mut(b"a").is_none());
        // The error is the last transaction's: the next one commits.
        complete(&mut l, "LISTEN a", id);
        assert!(l.between_transactions());
        assert!(l.get_mut(b"a").is_some());
        // An UNLISTEN rolled back leaves the channel.
        complete(&mut l, "UNLISTEN *", id);
        l.transaction(b"ROLLBACK", None);
        assert!(l.get_mut(b"a").is_some());
        // A rollback to a savepoint drops what came after it, and keeps what came before.
        complete(&mut l, "LISTEN b", id);
        l.transaction(b"SAVEPOINT", Some(&TxnOp::Savepoint("s".into())));
        complete(&mut l, "LISTEN c", id);
        l.failed();
        l.transaction(b"ROLLBACK", Some(&TxnOp::RollbackTo("s".into())));
        complete(&mut l, "LISTEN d", id);
        assert!(l.transaction(b"COMMIT", Some(&TxnOp::End)));
        assert!(l.get_mut(b"b").is_some());
        assert!(l.get_mut(b"c").is_none());
        assert!(l.get_mut(b"d").is_some());
        // Released, a savepoint's changes belong to the transaction; a rollback to one the
        // relay does not know drops everything.
        l.transaction(b"SAVEPOINT", Some(&TxnOp::Savepoint("s".into())));
        complete(&mut l, "LISTEN e", id);
        l.transaction(b"RELEASE", Some(&TxnOp::Release("s".into())));
        complete(&mut l, "LISTEN f", id);
        l.transaction(b"ROLLBACK", Some(&TxnOp::RollbackTo("s".into())));
        l.between_transactions();
        assert!(l.get_mut(b"e").is_none());
        assert!(l.get_mut(b"f").is_none());
        // A failed transaction's COMMIT is answered ROLLBACK.
        complete(&mut l, "LISTEN g", id);
        l.failed();
        l.transaction(b"ROLLBACK", Some(&TxnOp::End));
        assert!(l.get_mut(b"g").is_none());
    }
}
