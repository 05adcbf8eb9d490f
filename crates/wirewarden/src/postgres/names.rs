//! What the session's statement and portal names mean, as the server made them: every
//! change to a name is numbered with what the name meant before, the server's answer to it
//! is read, and a change the server did not make is undone.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use bytes::Bytes;
use wirewarden_sql::Classifier;

use super::{Portal, Prepared};

/// A change SQL makes to the session's names (`PREPARE`, `DEALLOCATE`, `DECLARE`,
/// `CLOSE`, `DISCARD ALL`), run by a simple query or an execution: done when the server
/// completes the statement with its command tag; not done if the statement failed or was
/// skipped.
#[derive(Debug)]
pub(super) struct Effect {
    /// The change's number, see [`Named`].
    pub(super) seq: u64,
    /// The command tag of the statement that makes it.
    pub(super) tag: &'static str,
    /// What the classifier had for the name a `PREPARE` or `DECLARE` gives, to give back if
    /// the change was not made (a `PREPARE` or `DECLARE` of a name already taken fails on
    /// the server, which keeps what the name had).
    pub(super) forget: Option<Forget>,
}

/// A name whose classifier entry goes back to what it was, because the statement that
/// changed it was not made.
#[derive(Debug, Clone)]
pub(super) enum Forget {
    /// A statement SQL `PREPARE` named, and what the name had before (nothing: forgotten).
    Prepared(String, Option<wirewarden_sql::Prepared>),
    /// A cursor SQL `DECLARE` named, what the name read before, and the record of the
    /// cursor it named before (the number of its `DECLARE`, and whether it was `WITH HOLD`).
    Cursor(
        String,
        Option<wirewarden_sql::Prepared>,
        Option<(u64, bool)>,
    ),
}

/// A change to a name the server did not make.
#[derive(Debug)]
pub(super) struct Rejection {
    /// The change's number.
    pub(super) seq: u64,
    /// What the classifier must forget.
    pub(super) forget: Option<Forget>,
    /// The server found the name taken (42P05, 42P03).
    pub(super) taken: bool,
}

/// Whether running `analysis` does anything [`Named::apply`] follows: a change to a
/// statement, cursor or savepoint name, `DISCARD ALL`, or a procedure or `DO` block (which
/// may commit, and end the portals).
pub(super) fn acts_on_names(analysis: &wirewarden_sql::Analysis) -> bool {
    analysis
        .statements
        .iter()
        .any(|s| s.prepared.is_some() || matches!(s.verb.as_str(), "DISCARD ALL" | "CALL" | "DO"))
}

/// What a statement does to the transaction, read with the command tag that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TxnOp {
    /// `SAVEPOINT name`, answered `SAVEPOINT`.
    Savepoint(String),
    /// `ROLLBACK TO SAVEPOINT name`, answered `ROLLBACK`.
    RollbackTo(String),
    /// `RELEASE SAVEPOINT name`, answered `RELEASE`.
    Release(String),
    /// `COMMIT`, `ROLLBACK`, `PREPARE TRANSACTION`: answered `COMMIT`, `ROLLBACK` (a failed
    /// transaction's `COMMIT` too) or `PREPARE TRANSACTION`.
    End,
}

impl TxnOp {
    /// Whether `tag` is the server's answer to a statement that does this.
    pub(super) fn answered_by(&self, tag: &[u8]) -> bool {
        match self {
            TxnOp::Savepoint(_) => tag == b"SAVEPOINT",
            TxnOp::RollbackTo(_) => tag == b"ROLLBACK",
            TxnOp::Release(_) => tag == b"RELEASE",
            TxnOp::End => matches!(tag, b"COMMIT" | b"ROLLBACK" | b"PREPARE TRANSACTION"),
        }
    }
}

/// What the server answered about the session's changes to names, for the client side
/// to catch up with (see [`Named`]).
#[derive(Debug, Default)]
pub(super) struct Answered {
    /// Every change up to this number has been answered (done or not).
    pub(super) through: u64,
    /// Changes the server did not make, oldest first.
    pub(super) rejected: Vec<Rejection>,
    /// The responses relay stopped: nothing more will be answered.
    pub(super) ended: bool,
    /// A transaction ended after every change up to this number was answered: the portals
    /// `Bind` made by then are gone (a portal lives in its transaction; only a cursor
    /// declared `WITH HOLD` outlives it, and no `Bind` makes one).
    pub(super) portals_end: u64,
    /// Rollbacks, oldest first: each dropped the portals and cursors the changes numbered
    /// in `(from, to]` made, `WITH HOLD` or not.
    pub(super) rolled_back: Vec<(u64, u64)>,
    /// Every change up to this number was made before the transaction under way began.
    txn_from: u64,
    /// The server reported an error since the transaction under way began.
    txn_failed: bool,
    /// Every request up to this one (the tracker's number) is finished and what its
    /// answers did is taken.
    pub(super) finished_through: Option<wirewarden_postgres::RequestId>,
    /// The transaction's savepoints, oldest first: each name, and the changes made before
    /// it (up to that number).
    savepoints: Vec<(String, u64)>,
}

impl Answered {
    /// The server completed a statement with `tag`, which does `op` to the transaction
    /// (when the relay knows it). `COMMIT` ends the transaction and keeps the `WITH HOLD`
    /// cursors it made (a failed transaction's `COMMIT` is answered `ROLLBACK`). `ROLLBACK` ends it and drops
    /// what it made; as the answer to `ROLLBACK TO SAVEPOINT`, it drops what was made since
    /// the savepoint. Without the savepoint (a statement the relay did not understand, a
    /// savepoint it did not see set) everything the transaction made is taken as dropped:
    /// that may take a cursor the server still holds (a `FETCH` from it is then refused),
    /// but never leaves one it dropped.
    pub(super) fn completed(&mut self, tag: &[u8], op: Option<TxnOp>) {
        match (tag, op) {
            (b"SAVEPOINT", Some(TxnOp::Savepoint(name))) => {
                self.savepoints.push((name, self.through));
            }
            (b"RELEASE", Some(TxnOp::Release(name))) => {
                if let Some(i) = self.savepoints.iter().rposition(|(n, _)| *n == name) {
                    self.savepoints.truncate(i);
                }
            }
            (b"ROLLBACK", Some(TxnOp::RollbackTo(name))) => {
                match self.savepoints.iter().rposition(|(n, _)| *n == name) {
                    Some(i) => {
                        let from = self.savepoints[i].1;
                        self.savepoints.truncate(i + 1);
                        if self.through > from {
                            self.rolled_back.push((from, self.through));
                        }
                    }
                    None => self.roll_back(),
                }
                self.txn_failed = false;
            }
            // The transaction is over, and with it its portals, though a `COMMIT AND
            // CHAIN` or `ROLLBACK AND CHAIN` leaves the session in a block.
            (b"COMMIT", _) => {
                self.txn_from = self.through;
                self.portals_end = self.through;
                self.txn_failed = false;
                self.savepoints.clear();
            }
            (b"ROLLBACK", _) => {
                self.roll_back();
                self.txn_from = self.through;
                self.portals_end = self.through;
                self.txn_failed = false;
                self.savepoints.clear();
            }
            _ => {}
        }
    }

    /// The server reported an error: the transaction under way is rolled back, now if it
    /// is implicit, or when the client ends it.
    pub(super) fn failed(&mut self) {
        self.txn_failed = true;
    }

    /// The server is ready for a query outside a transaction block, so the transaction
    /// under way has ended: rolled back if an error came since it began (an implicit
    /// transaction, or a transaction block whose `COMMIT` failed), committed if not.
    pub(super) fn idle(&mut self) {
        if self.txn_failed {
            self.roll_back();
            self.txn_failed = false;
        }
        // Every request before this one is answered, and nothing after it.
        self.txn_from = self.through;
        self.portals_end = self.through;
        self.savepoints.clear();
    }

    fn roll_back(&mut self) {
        if self.through > self.txn_from {
            self.rolled_back.push((self.txn_from, self.through));
        }
    }
}

/// The two namespaces of the server's names: prepared statements (`Parse`, SQL
/// `PREPARE`) and portals (`Bind`, SQL `DECLARE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Space {
    /// Prepared statements.
    Statement,
    /// Portals, cursors among them.
    Portal,
}

/// The session's prepared statements and portals as the gateway knows them.
///
/// Every change to a name (a `Parse`, `Bind` or `Close`; SQL `PREPARE`, `DEALLOCATE`,
/// `DECLARE`, `CLOSE`, `DISCARD ALL` when it runs) is numbered, with what the name meant
/// before, and the server's answer to it read. The server makes a batch's changes (up to a
/// `Sync`, or one simple query) in order until one fails, and skips the rest: what it did
/// not make is undone, which leaves the names as the server has them. A
/// change the server refused because the name was taken when the gateway took it for free
/// leaves it [ambiguous](Portal::Ambiguous). A decision on a name changed in an earlier
/// batch waits for that change's answer: within a batch, a decision taken on a change that
/// fails is skipped with it, but a later batch runs whatever the name holds.
pub(super) struct Named {
    pub(super) statements: std::collections::HashMap<Bytes, Prepared>,
    pub(super) portals: std::collections::HashMap<Bytes, Portal>,
    /// Statement names whose last `Parse` was refused, which the server does not hold.
    pub(super) refused: std::collections::HashSet<Bytes>,
    /// Statement and portal names whose meaning on the server the gateway does not know:
    /// see [`Portal::Ambiguous`].
    pub(super) ambiguous_statements: std::collections::HashSet<Bytes>,
    pub(super) ambiguous_portals: std::collections::HashSet<Bytes>,
    /// The number the next change takes.
    next: u64,
    /// The first number of the current batch: changes below it were sent before a `Sync`
    /// or simple query.
    batch_start: u64,
    /// Every change up to this number has been answered.
    pub(super) through: u64,
    /// The last unanswered change to each name.
    last: std::collections::HashMap<(Space, Bytes), u64>,
    /// Unanswered changes, oldest first, with what each name they touch meant before.
    undo: VecDeque<(u64, Befores)>,
    /// The number of the `Bind` that made each portal.
    pub(super) bound: std::collections::HashMap<Bytes, u64>,
    /// The cursors SQL declared: the number of the `DECLARE`, and whether it was `WITH
    /// HOLD`. One without ends with its transaction.
    cursors: std::collections::HashMap<String, (u64, bool)>,
    /// The last [`Answered::portals_end`] taken.
    portals_end: u64,
    /// The portals `Bind` made up to this change may be gone: a procedure (`CALL`) or `DO`
    /// block ran after them, and outside a transaction block it may commit, which ends
    /// them.
    binds_end: u64,
    /// The rollbacks taken from [`Answered::rolled_back`], as `(from, to, until)`: the
    /// portals and cursors the changes numbered in `(from, to]` made are gone. Kept while a
    /// change numbered below `until` is unanswered, since undoing it gives a name back
    /// what it had, which may be one of those.
    dropped: Vec<(u64, u64, u64)>,
    /// What [`apply`](Self::apply) numbered, for the statement that carries it.
    pub(super) effects: VecDeque<Effect>,
    /// What [`apply`](Self::apply) found the statements do to the transaction, for the
    /// statement that carries them.
    pub(super) txn: VecDeque<TxnOp>,
    /// What the statement just allowed to run does to the channels the session listens on,
    /// with its decision, for the execution that carries it (staged here beside
    /// [`effects`](Self::effects) and [`txn`](Self::txn), and taken with them).
    pub(super) channels: Option<Box<super::listens::Staged>>,
    /// The request that ended the last batch (a `Sync` or simple query): a decision that
    /// reads a portal or cursor made earlier waits until it is answered.
    pub(super) batch_end: Option<wirewarden_postgres::RequestId>,
    /// The number of the first change after a statement of the current batch that may
    /// end or roll back the transaction (`COMMIT`, `ROLLBACK`, `ROLLBACK TO SAVEPOINT`,
    /// `PREPARE TRANSACTION`, a procedure, a `DO` block). The server's answers come only
    /// after the batch's `Sync`, so until then what was made before it is in doubt.
    pub(super) boundary: Option<u64>,
}

/// What the names one change touches meant before it: one name, but for `DEALLOCATE ALL`,
/// `CLOSE ALL` and `DISCARD ALL` (kept without an allocation for the one).
pub(super) enum Befores {
    /// The one name a change touches, and what it meant.
    One((Bytes, Before)),
    /// Every name a change to all of them touches.
    Many(Vec<(Bytes, Before)>),
}

impl Befores {
    fn as_mut_slice(&mut self) -> &mut [(Bytes, Before)] {
        match self {
            Befores::One(one) => std::slice::from_mut(one),
            Befores::Many(many) => many,
        }
    }

    fn into_vec(self) -> Vec<(Bytes, Before)> {
        match self {
            Befores::One(one) => vec![one],
            Befores::Many(many) => many,
        }
    }
}

/// What a name meant before a change.
pub(super) enum Before {
    /// A statement name: its statement, whether its last `Parse` was refused, whether it
    /// was ambiguous.
    Statement {
        prepared: Option<Prepared>,
        refused: bool,
        ambiguous: bool,
    },
    /// A portal name: its portal and the number of the `Bind` that made it, whether it was
    /// ambiguous.
    Portal {
        portal: Option<(Portal, u64)>,
        ambiguous: bool,
    },
}

impl Default for Named {
    fn default() -> Self {
        Named {
            statements: std::collections::HashMap::new(),
            portals: std::collections::HashMap::new(),
            refused: std::collections::HashSet::new(),
            ambiguous_statements: std::collections::HashSet::new(),
            ambiguous_portals: std::collections::HashSet::new(),
            next: 1,
            batch_start: 1,
            through: 0,
            last: std::collections::HashMap::new(),
            undo: VecDeque::new(),
            bound: std::collections::HashMap::new(),
            cursors: std::collections::HashMap::new(),
            portals_end: 0,
            binds_end: 0,
            dropped: Vec::new(),
            effects: VecDeque::new(),
            txn: VecDeque::new(),
            channels: None,
            batch_end: None,
            boundary: None,
        }
    }
}

impl Named {
    /// What `name` means now.
    fn before(&self, space: Space, name: &Bytes) -> Before {
        match space {
            Space::Statement => Before::Statement {
                prepared: self.statements.get(name).cloned(),
                refused: self.refused.contains(name),
                ambiguous: self.ambiguous_statements.contains(name),
            },
            Space::Portal => Before::Portal {
                portal: self
                    .portals
                    .get(name)
                    .cloned()
                    .zip(self.bound.get(name).copied()),
                ambiguous: self.ambiguous_portals.contains(name),
            },
        }
    }

    /// Gives `name` back what it meant before a change.
    fn restore(&mut self, name: Bytes, before: Before) {
        fn set(set: &mut std::collections::HashSet<Bytes>, name: &Bytes, on: bool) {
            if on {
                set.insert(name.clone());
            } else {
                set.remove(name);
            }
        }
        match before {
            Before::Statement {
                prepared,
                refused,
                ambiguous,
            } => {
                set(&mut self.refused, &name, refused);
                set(&mut self.ambiguous_statements, &name, ambiguous);
                match prepared {
                    Some(p) => self.statements.insert(name, p),
                    None => self.statements.remove(&name),
                };
            }
            Before::Portal { portal, ambiguous } => {
                set(&mut self.ambiguous_portals, &name, ambiguous);
                // A portal that ended with its transaction, or was rolled back, since the
                // change is not given back.
                match portal.filter(|(_, seq)| !self.bind_gone(*seq)) {
                    Some((p, seq)) => {
                        self.portals.insert(name.clone(), p);
                        self.bound.insert(name, seq);
                    }
                    None => {
                        self.portals.remove(&name);
                        self.bound.remove(&name);
                    }
                }
            }
        }
    }

    /// Numbers a change to `name`, about to be made.
    pub(super) fn change(&mut self, space: Space, name: &Bytes) -> u64 {
        let seq = self.next;
        self.next += 1;
        let before = self.before(space, name);
        self.undo
            .push_back((seq, Befores::One((name.clone(), before))));
        self.last.insert((space, name.clone()), seq);
        seq
    }

    /// Numbers a change to every name of `spaces` the gateway knows (`DEALLOCATE ALL`,
    /// `CLOSE ALL`, `DISCARD ALL`), about to be made.
    pub(super) fn change_all(&mut self, spaces: &[Space]) -> u64 {
        let seq = self.next;
        self.next += 1;
        let mut befores = Vec::new();
        for space in spaces {
            let names: std::collections::HashSet<Bytes> = match space {
                Space::Statement => self
                    .statements
                    .keys()
                    .chain(&self.ambiguous_statements)
                    .chain(&self.refused)
                    .cloned()
                    .collect(),
                Space::Portal => self
                    .portals
                    .keys()
                    .chain(&self.ambiguous_portals)
                    .cloned()
                    .collect(),
            };
            for name in names {
                befores.push((name.clone(), self.before(*space, &name)));
                self.last.insert((*space, name), seq);
            }
        }
        self.undo.push_back((seq, Befores::Many(befores)));
        seq
    }

    /// Numbers a change that frees `name` (`Close`, `DEALLOCATE`, `CLOSE`), and makes it.
    pub(super) fn free(&mut self, space: Space, name: &Bytes) -> u64 {
        let seq = self.change(space, name);
        match space {
            Space::Statement => {
                self.statements.remove(name);
                self.refused.remove(name);
                self.ambiguous_statements.remove(name);
            }
            Space::Portal => {
                self.portals.remove(name);
                self.ambiguous_portals.remove(name);
                self.bound.remove(name);
                if let Ok(name) = std::str::from_utf8(name) {
                    self.cursors.remove(name);
                }
            }
        }
        seq
    }

    /// Numbers a change that frees every name of `spaces` (`DEALLOCATE ALL`, `CLOSE ALL`,
    /// `DISCARD ALL`), and makes it.
    fn free_all(&mut self, spaces: &[Space]) -> u64 {
        let seq = self.change_all(spaces);
        for space in spaces {
            match space {
                Space::Statement => {
                    self.statements.clear();
                    self.refused.clear();
                    self.ambiguous_statements.clear();
                }
                Space::Portal => {
                    self.portals.clear();
                    self.ambiguous_portals.clear();
                    self.bound.clear();
                    self.cursors.clear();
                }
            }
        }
        seq
    }

    /// Numbers a change that gives `name` a statement or cursor in SQL (`PREPARE`,
    /// `DECLARE`), and makes it. If a `Parse` or `Bind` of the session holds the name, the
    /// server fails the SQL and keeps that, or the gateway's record was stale and the SQL
    /// took the name; the server's answer tells which, and until then the name is
    /// ambiguous.
    fn take_for_sql(&mut self, space: Space, name: &str) -> u64 {
        let key = Bytes::copy_from_slice(name.as_bytes());
        let seq = self.change(space, &key);
        match space {
            Space::Statement => {
                self.refused.remove(&key);
                if self.statements.remove(&key).is_some() {
                    self.ambiguous_statements.insert(key);
                }
            }
            Space::Portal => {
                self.bound.remove(&key);
                if self.portals.remove(&key).is_some() {
                    self.ambiguous_portals.insert(key);
                }
            }
        }
        seq
    }

    /// Whether the portal `name` was made by a `Bind` of the current batch (so no
    /// transaction's end can come between, but one sent in the batch itself).
    pub(super) fn bound_in_this_batch(&self, name: &Bytes) -> bool {
        self.bound
            .get(name)
            .is_some_and(|seq| *seq >= self.batch_start)
    }

    /// A `Sync` or simple query ends the batch.
    pub(super) fn end_batch(&mut self) {
        self.batch_start = self.next;
        self.boundary = None;
    }

    /// The change of an earlier batch to `name` not yet answered, which a decision on that
    /// name waits for.
    pub(super) fn awaits(&self, space: Space, name: &Bytes) -> Option<u64> {
        self.last
            .get(&(space, name.clone()))
            .copied()
            .filter(|seq| *seq < self.batch_start && *seq > self.through)
    }

    /// The last change of an earlier batch, if it is not yet answered: SQL may name any
    /// statement or cursor, so a simple query waits for every change before it.
    pub(super) fn awaits_any(&self) -> Option<u64> {
        let last = self.batch_start - 1;
        (last > self.through).then_some(last)
    }

    /// Takes what the server answered: the changes it did not make are undone (a later
    /// change to the same name, not yet answered, then follows what the name had before);
    /// a name it found taken when the gateway took it for free is ambiguous; a statement or
    /// cursor SQL named is forgotten by the classifier.
    pub(super) fn catch_up(&mut self, answered: &StdMutex<Answered>, classifier: &mut Classifier) {
        let (through, rejected, portals_end, rolled_back) = match answered.lock() {
            Ok(mut a)
                if a.through > self.through
                    || !a.rejected.is_empty()
                    || a.portals_end > self.portals_end
                    || !a.rolled_back.is_empty() =>
            {
                (
                    a.through,
                    std::mem::take(&mut a.rejected),
                    a.portals_end,
                    std::mem::take(&mut a.rolled_back),
                )
            }
            _ => return,
        };
        // What ended or was rolled back is known before anything is given back, so
        // nothing gone is.
        let ended = portals_end > self.portals_end || !rolled_back.is_empty();
        self.portals_end = self.portals_end.max(portals_end);
        let until = self.next;
        self.dropped
            .extend(rolled_back.into_iter().map(|(from, to)| (from, to, until)));
        for rejection in &rejected {
            let Some(i) = self.undo.iter().position(|(seq, _)| *seq == rejection.seq) else {
                continue;
            };
            let Some((_, befores)) = self.undo.remove(i) else {
                continue;
            };
            for (name, mut before) in befores.into_vec() {
                if rejection.taken {
                    // The name holds what the gateway did not know of.
                    before = match before {
                        Before::Statement { .. } => Before::Statement {
                            prepared: None,
                            refused: false,
                            ambiguous: true,
                        },
                        Before::Portal { .. } => Before::Portal {
                            portal: None,
                            ambiguous: true,
                        },
                    };
                }
                // A later change to the name, not yet answered, now follows what the name
                // had before this one; with none, the name gets it back.
                let statement = matches!(before, Before::Statement { .. });
                let later = self.undo.iter_mut().skip(i).find_map(|(_, bs)| {
                    bs.as_mut_slice().iter_mut().find(|(n, b)| {
                        *n == name && matches!(b, Before::Statement { .. }) == statement
                    })
                });
                match later {
                    Some((_, b)) => *b = before,
                    None => self.restore(name, before),
                }
            }
        }
        // Newest first, so a name two statements of one text changed gets the first one's
        // previous entry.
        for rejection in rejected.into_iter().rev() {
            match rejection.forget {
                Some(Forget::Prepared(name, Some(before))) => {
                    classifier.register_prepared(&name, before);
                }
                Some(Forget::Prepared(name, None)) => classifier.forget_prepared(&name),
                Some(Forget::Cursor(name, before, record)) => {
                    match record {
                        // The cursor the name had before is gone as well.
                        Some((seq, hold)) if self.gone(seq, hold) => {
                            self.cursors.remove(&name);
                            classifier.forget_cursor(&name);
                        }
                        record => {
                            match record {
                                Some(record) => self.cursors.insert(name.clone(), record),
                                None => self.cursors.remove(&name),
                            };
                            match before {
                                Some(before) => classifier.register_cursor(&name, before),
                                None => classifier.forget_cursor(&name),
                            }
                        }
                    }
                }
                None => {}
            }
        }
        if ended {
            let gone: Vec<Bytes> = self
                .bound
                .iter()
                .filter(|(_, seq)| self.bind_gone(**seq))
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                self.bound.remove(&name);
                self.portals.remove(&name);
            }
            let gone: Vec<String> = self
                .cursors
                .iter()
                .filter(|(_, (seq, hold))| self.gone(*seq, *hold))
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                self.cursors.remove(&name);
                classifier.forget_cursor(&name);
            }
        }
        self.through = through;
        while self.undo.front().is_some_and(|(seq, _)| *seq <= through) {
            self.undo.pop_front();
        }
        self.last.retain(|_, seq| *seq > through);
        // Every change that could give a name back a record of a rollback is answered.
        self.dropped.retain(|(_, _, until)| *until > through + 1);
    }

    /// A `Bind` to `name` is about to be sent, and the classifier has forgotten the cursor
    /// of that name (`before`), which a `Bind` that succeeds ends: what gives the cursor
    /// back if the `Bind` is not made (the server keeps a cursor whose name a `Bind`
    /// takes, 42P03).
    pub(super) fn forget_cursor_for_bind(
        &self,
        name: &str,
        before: wirewarden_sql::Prepared,
    ) -> Forget {
        Forget::Cursor(
            name.to_owned(),
            Some(before),
            self.cursors.get(name).copied(),
        )
    }

    /// A procedure or `DO` block is about to run: outside a transaction block it may
    /// commit, which ends every portal made before it, and a later `Execute` of one of
    /// their names would run whatever took the name since (a cursor the procedure opened,
    /// say). The gateway does not know whether it commits, nor, with requests in flight,
    /// whether the session is in a block: those portals are forgotten now, before anything
    /// later in the batch is decided. The unnamed portal is bound afresh for each
    /// statement; a named one bound before the call and run after it is refused.
    fn end_binds(&mut self) {
        self.binds_end = self.next - 1;
        let gone: Vec<Bytes> = self
            .bound
            .iter()
            .filter(|(_, seq)| **seq <= self.binds_end)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.bound.remove(&name);
            self.portals.remove(&name);
        }
    }

    /// Whether the portal or cursor that change `seq` made is gone on the server: a
    /// portal, or a cursor not declared `WITH HOLD`, whose transaction ended; any of them
    /// if a rollback dropped it.
    fn gone(&self, seq: u64, hold: bool) -> bool {
        (!hold && seq <= self.portals_end)
            || self
                .dropped
                .iter()
                .any(|(from, to, _)| *from < seq && seq <= *to)
    }

    /// Whether the portal `Bind` change `seq` made is gone on the server, or may be: as
    /// [`gone`](Self::gone), and if a procedure or `DO` block that may have committed ran
    /// after it.
    fn bind_gone(&self, seq: u64) -> bool {
        seq <= self.binds_end || self.gone(seq, false)
    }

    /// Applies what SQL run upstream does to names, numbering each change for the server
    /// to answer ([`effects`](Self::effects)): forgets what it deallocated or closed
    /// (`DEALLOCATE`, `CLOSE`, `DISCARD ALL`), and forgets that a name's `Parse` was
    /// refused once SQL `PREPARE` has given the server a statement of that name: a `Bind` to
    /// it then runs that statement, which is decided.
    pub(super) fn apply(
        &mut self,
        analysis: &wirewarden_sql::Analysis,
        classifier: &mut Classifier,
    ) {
        // A statement not understood might answer with a transaction's tag: the tags of
        // a text with one are read without what the statements do (see
        // [`Answered::completed`]).
        let understood = analysis
            .statements
            .iter()
            .all(|s| s.class != wirewarden_core::CommandClass::Unknown);
        for s in &analysis.statements {
            use wirewarden_sql::PreparedEffect;
            let op = match &s.prepared {
                Some(PreparedEffect::Savepoint { name }) => Some(TxnOp::Savepoint(name.clone())),
                Some(PreparedEffect::RollbackToSavepoint { name }) => {
                    Some(TxnOp::RollbackTo(name.clone()))
                }
                Some(PreparedEffect::ReleaseSavepoint { name }) => {
                    Some(TxnOp::Release(name.clone()))
                }
                _ if matches!(
                    s.verb.as_str(),
                    "COMMIT" | "ROLLBACK" | "PREPARE TRANSACTION"
                ) =>
                {
                    Some(TxnOp::End)
                }
                _ => None,
            };
            if matches!(op, Some(TxnOp::End | TxnOp::RollbackTo(_)))
                || matches!(s.verb.as_str(), "CALL" | "DO")
            {
                self.boundary.get_or_insert(self.next);
            }
            if understood && let Some(op) = op {
                self.txn.push_back(op);
            }
            if matches!(s.verb.as_str(), "CALL" | "DO") {
                self.end_binds();
            }
            let before = match &s.prepared {
                Some(PreparedEffect::Prepare { name, .. }) => classifier.prepared(name).cloned(),
                Some(PreparedEffect::DeclareCursor { name, .. }) => {
                    classifier.cursor(name).cloned()
                }
                _ => None,
            };
            classifier.record_statement(s);
            let (seq, tag, forget) = match &s.prepared {
                Some(PreparedEffect::Prepare { name, .. }) => {
                    let seq = self.take_for_sql(Space::Statement, name);
                    (seq, "PREPARE", Some(Forget::Prepared(name.clone(), before)))
                }
                Some(PreparedEffect::Deallocate { name: Some(name) }) => {
                    let seq = self.free(Space::Statement, &Bytes::copy_from_slice(name.as_bytes()));
                    (seq, "DEALLOCATE", None)
                }
                Some(PreparedEffect::Deallocate { name: None }) => {
                    (self.free_all(&[Space::Statement]), "DEALLOCATE ALL", None)
                }
                Some(PreparedEffect::DeclareCursor { name, hold, .. }) => {
                    let record = self.cursors.get(name).copied();
                    let seq = self.take_for_sql(Space::Portal, name);
                    self.cursors.insert(name.clone(), (seq, *hold));
                    let forget = Forget::Cursor(name.clone(), before, record);
                    (seq, "DECLARE CURSOR", Some(forget))
                }
                Some(PreparedEffect::CloseCursor { name: Some(name) }) => {
                    let seq = self.free(Space::Portal, &Bytes::copy_from_slice(name.as_bytes()));
                    (seq, "CLOSE CURSOR", None)
                }
                Some(PreparedEffect::CloseCursor { name: None }) => {
                    (self.free_all(&[Space::Portal]), "CLOSE CURSOR ALL", None)
                }
                _ if s.verb == "DISCARD ALL" => (
                    self.free_all(&[Space::Statement, Space::Portal]),
                    "DISCARD ALL",
                    None,
                ),
                _ => continue,
            };
            self.effects.push_back(Effect { seq, tag, forget });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(sql: &'static str) -> Prepared {
        Prepared::Held(Bytes::from_static(sql.as_bytes()))
    }

    fn held_sql<'a>(named: &'a Named, name: &'static str) -> Option<&'a [u8]> {
        match named.statements.get(&Bytes::from_static(name.as_bytes())) {
            Some(Prepared::Held(sql)) => Some(sql),
            _ => None,
        }
    }

    fn answer(answered: &StdMutex<Answered>, through: u64, rejected: &[(u64, bool)]) {
        let mut a = answered.lock().unwrap();
        a.through = through;
        a.rejected
            .extend(rejected.iter().map(|(seq, taken)| Rejection {
                seq: *seq,
                forget: None,
                taken: *taken,
            }));
    }

    /// A `Parse` of `name` as the relay makes it.
    fn parse(named: &mut Named, name: &'static str, sql: &'static str) -> u64 {
        let key = Bytes::from_static(name.as_bytes());
        let seq = named.change(Space::Statement, &key);
        named.statements.insert(key, held(sql));
        seq
    }

    fn close(named: &mut Named, name: &'static str) -> u64 {
        let key = Bytes::from_static(name.as_bytes());
        let seq = named.change(Space::Statement, &key);
        named.statements.remove(&key);
        seq
    }

    /// Nothing answered, a classifier, and no names.
    fn fresh() -> (StdMutex<Answered>, Classifier, Named) {
        (
            StdMutex::new(Answered::default()),
            Classifier::new(),
            Named::default(),
        )
    }

    #[test]
    fn a_change_the_server_did_not_make_is_undone() {
        let (answered, mut classifier, mut named) = fresh();
        let first = parse(&mut named, "s1", "SELECT 1");
        named.end_batch();
        let closed = close(&mut named, "s1");
        named.end_batch();
        // The close is of an earlier batch: a decision on s1 waits for its answer.
        assert_eq!(
            named.awaits(Space::Statement, &Bytes::from_static(b"s1")),
            Some(closed)
        );
        answer(&answered, closed, &[(closed, false)]);
        named.catch_up(&answered, &mut classifier);
        assert_eq!(held_sql(&named, "s1"), Some(&b"SELECT 1"[..]));
        assert_eq!(
            named.awaits(Space::Statement, &Bytes::from_static(b"s1")),
            None
        );
        assert!(named.undo.is_empty() && named.last.is_empty(), "{first}");
    }

    #[test]
    fn a_later_change_follows_what_the_name_had_before_an_undone_one() {
        let (answered, mut classifier, mut named) = fresh();
        let first = parse(&mut named, "s1", "SELECT 1");
        let closed = close(&mut named, "s1");
        let second = parse(&mut named, "s1", "SELECT 2");
        // The close was skipped; the second Parse is not answered yet.
        answer(&answered, closed, &[(closed, false)]);
        named.catch_up(&answered, &mut classifier);
        assert_eq!(held_sql(&named, "s1"), Some(&b"SELECT 2"[..]));
        // Then it fails too: the name has the first statement again.
        answer(&answered, second, &[(second, false)]);
        named.catch_up(&answered, &mut classifier);
        assert_eq!(held_sql(&named, "s1"), Some(&b"SELECT 1"[..]), "{first}");
        assert!(named.undo.is_empty());
    }

    #[test]
    fn a_batch_skipped_after_its_first_change_leaves_that_change_alone() {
        let (answered, mut classifier, mut named) = fresh();
        let first = parse(&mut named, "s1", "SELECT 1");
        let closed = close(&mut named, "s1");
        let second = parse(&mut named, "s1", "SELECT 2");
        answer(&answered, second, &[(closed, false), (second, false)]);
        named.catch_up(&answered, &mut classifier);
        assert_eq!(held_sql(&named, "s1"), Some(&b"SELECT 1"[..]), "{first}");
    }

    #[test]
    fn a_name_the_server_found_taken_is_ambiguous() {
        let (answered, mut classifier, mut named) = fresh();
        let seq = parse(&mut named, "s1", "SELECT 1");
        answer(&answered, seq, &[(seq, true)]);
        named.catch_up(&answered, &mut classifier);
        assert!(!named.statements.contains_key(&Bytes::from_static(b"s1")));
        assert!(
            named
                .ambiguous_statements
                .contains(&Bytes::from_static(b"s1"))
        );
    }

    /// The command tags a change waits for are the classifier's verbs for its statements,
    /// which `wirewarden-sql`'s differential test holds to the tags the server reports.
    #[test]
    fn each_change_waits_for_its_statements_command_tag() {
        let mut classifier = Classifier::new();
        let mut named = Named::default();
        for sql in [
            "PREPARE q AS SELECT 1",
            "DEALLOCATE q",
            "DEALLOCATE PREPARE q",
            "DEALLOCATE ALL",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CLOSE c",
            "CLOSE ALL",
            "DISCARD ALL",
        ] {
            let analysis = classifier.classify_bytes(sql.as_bytes());
            named.apply(&analysis, &mut classifier);
            let effect = named.effects.pop_front().expect(sql);
            assert_eq!(effect.tag, analysis.statements[0].verb, "{sql}");
            assert!(named.effects.is_empty(), "{sql}");
        }
    }

    #[test]
    fn an_undone_deallocate_all_gives_every_name_back() {
        let (answered, mut classifier, mut named) = fresh();
        let a = parse(&mut named, "a", "SELECT 1");
        let b = parse(&mut named, "b", "SELECT 2");
        answer(&answered, b, &[]);
        named.catch_up(&answered, &mut classifier);
        let analysis = classifier.classify_bytes(b"DEALLOCATE ALL");
        named.apply(&analysis, &mut classifier);
        let effect = named.effects.pop_front().expect("an effect");
        assert_eq!(effect.tag, "DEALLOCATE ALL");
        assert!(named.statements.is_empty());
        answer(&answered, effect.seq, &[(effect.seq, false)]);
        named.catch_up(&answered, &mut classifier);
        assert_eq!(held_sql(&named, "a"), Some(&b"SELECT 1"[..]), "{a}");
        assert_eq!(held_sql(&named, "b"), Some(&b"SELECT 2"[..]));
    }

    /// `DECLARE` through [`Named::apply`], as the relay runs it: the effect it numbered.
    fn declare(named: &mut Named, classifier: &mut Classifier, sql: &'static str) -> Effect {
        let analysis = classifier.classify_bytes(sql.as_bytes());
        named.apply(&analysis, classifier);
        named.effects.pop_front().expect("an effect")
    }

    /// The server completed a statement that does `op` to the transaction with `tag`.
    fn tell(answered: &StdMutex<Answered>, tag: &[u8], op: TxnOp) {
        answered.lock().unwrap().completed(tag, Some(op));
    }

    /// The server made change `seq`, as the relay answers it.
    fn made(answered: &StdMutex<Answered>, seq: u64) {
        let mut a = answered.lock().unwrap();
        a.through = a.through.max(seq);
    }

    #[test]
    fn a_rollback_drops_what_its_transaction_made_and_a_commit_keeps_it() {
        let (answered, mut classifier, mut named) = fresh();
        // Committed: kept.
        let kept = declare(
            &mut named,
            &mut classifier,
            "DECLARE k CURSOR WITH HOLD FOR SELECT 1",
        );
        made(&answered, kept.seq);
        tell(&answered, b"COMMIT", TxnOp::End);
        // A later implicit transaction fails: what it made goes, what came before stays.
        let lost = declare(
            &mut named,
            &mut classifier,
            "DECLARE l CURSOR WITH HOLD FOR SELECT 2",
        );
        made(&answered, lost.seq);
        answered.lock().unwrap().failed();
        answered.lock().unwrap().idle();
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("k").is_some());
        assert!(classifier.cursor("l").is_none());
        // A rollback inside a block whose savepoint the relay does not know takes
        // everything the block made, and the block goes on: a later commit keeps what came
        // after.
        let a = declare(&mut named, &mut classifier, "DECLARE a CURSOR FOR SELECT 3");
        made(&answered, a.seq);
        tell(&answered, b"ROLLBACK", TxnOp::RollbackTo("unseen".into()));
        let b = declare(
            &mut named,
            &mut classifier,
            "DECLARE b CURSOR WITH HOLD FOR SELECT 4",
        );
        made(&answered, b.seq);
        tell(&answered, b"COMMIT", TxnOp::End);
        answered.lock().unwrap().idle();
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("a").is_none());
        assert!(classifier.cursor("b").is_some());
        assert!(classifier.cursor("k").is_some());
        // An error after the commit, in the same query text, leaves the commit's cursors.
        answered.lock().unwrap().failed();
        answered.lock().unwrap().idle();
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("b").is_some());
        assert!(named.dropped.is_empty(), "{:?}", named.dropped);
    }

    /// A rollback is taken before the changes undone with it: a `DECLARE` the server did
    /// not run gives its name back the cursor it had only if that cursor is still there.
    #[test]
    fn an_undone_declare_does_not_give_back_a_rolled_back_cursor() {
        let (answered, mut classifier, mut named) = fresh();
        let first = declare(
            &mut named,
            &mut classifier,
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        );
        let second = declare(&mut named, &mut classifier, "DECLARE c CURSOR FOR SELECT 2");
        {
            let mut a = answered.lock().unwrap();
            a.through = first.seq;
            a.failed();
            a.idle();
            a.through = second.seq;
            a.rejected.push(Rejection {
                seq: second.seq,
                forget: second.forget,
                taken: false,
            });
        }
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("c").is_none());
        assert!(named.cursors.is_empty());
        assert!(named.dropped.is_empty());
    }

    /// A `Bind` the server skipped gives its portal name back the portal it had only while
    /// that portal's transaction lasts.
    #[test]
    fn an_undone_bind_does_not_give_back_a_portal_whose_transaction_ended() {
        let (answered, mut classifier, mut named) = fresh();
        let name = Bytes::from_static(b"p");
        let bind = |named: &mut Named| {
            let seq = named.change(Space::Portal, &name);
            named.portals.insert(name.clone(), Portal::Refused);
            named.bound.insert(name.clone(), seq);
            seq
        };
        let first = bind(&mut named);
        named.end_batch();
        let second = bind(&mut named);
        {
            let mut a = answered.lock().unwrap();
            a.through = first;
            a.idle();
        }
        named.catch_up(&answered, &mut classifier);
        // The second `Bind` holds the name; the server skipped it, after the first one's
        // transaction ended.
        assert!(named.portals.contains_key(&name));
        answer(&answered, second, &[(second, false)]);
        named.catch_up(&answered, &mut classifier);
        assert!(!named.portals.contains_key(&name));
        assert!(!named.bound.contains_key(&name));
    }

    /// `ROLLBACK TO SAVEPOINT` drops what was made since the savepoint, and keeps the
    /// savepoint and what came before it; `RELEASE` forgets the savepoint and the later
    /// ones, and keeps what they made.
    #[test]
    fn a_rollback_to_a_savepoint_drops_what_came_after_it() {
        let (answered, mut classifier, mut named) = fresh();
        let run = |named: &mut Named, classifier: &mut Classifier, sql: &'static str| {
            let e = declare(named, classifier, sql);
            made(&answered, e.seq);
        };
        run(
            &mut named,
            &mut classifier,
            "DECLARE before CURSOR FOR SELECT 1",
        );
        tell(&answered, b"SAVEPOINT", TxnOp::Savepoint("a".into()));
        run(
            &mut named,
            &mut classifier,
            "DECLARE inside CURSOR WITH HOLD FOR SELECT 2",
        );
        tell(&answered, b"SAVEPOINT", TxnOp::Savepoint("b".into()));
        run(
            &mut named,
            &mut classifier,
            "DECLARE deeper CURSOR FOR SELECT 3",
        );
        tell(&answered, b"RELEASE", TxnOp::Release("b".into()));
        tell(&answered, b"ROLLBACK", TxnOp::RollbackTo("a".into()));
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("before").is_some());
        assert!(classifier.cursor("inside").is_none());
        assert!(classifier.cursor("deeper").is_none());
        // The savepoint stays: a second rollback to it drops what came since.
        run(
            &mut named,
            &mut classifier,
            "DECLARE again CURSOR FOR SELECT 4",
        );
        tell(&answered, b"ROLLBACK", TxnOp::RollbackTo("a".into()));
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("again").is_none());
        assert!(classifier.cursor("before").is_some());
        // Released, it is gone: a rollback to it is to a savepoint the relay does not
        // know, which drops everything the transaction made.
        tell(&answered, b"RELEASE", TxnOp::Release("a".into()));
        tell(&answered, b"ROLLBACK", TxnOp::RollbackTo("a".into()));
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("before").is_none());
    }

    #[test]
    fn a_text_with_a_statement_not_understood_says_nothing_of_its_transaction() {
        let (_, mut classifier, mut named) = fresh();
        let analysis = classifier.classify_bytes(b"SAVEPOINT a; ROLLBACK TO a; COMMIT");
        named.apply(&analysis, &mut classifier);
        assert_eq!(
            named.txn.drain(..).collect::<Vec<_>>(),
            [
                TxnOp::Savepoint("a".into()),
                TxnOp::RollbackTo("a".into()),
                TxnOp::End
            ]
        );
        let analysis = classifier.classify_bytes(b"ROLLBACK TO a; FETCH 1 FROM nowhere");
        named.apply(&analysis, &mut classifier);
        assert!(named.txn.is_empty());
    }

    /// `COMMIT AND CHAIN` ends the transaction, though the session stays in a block: its
    /// cursors not declared `WITH HOLD` end with it.
    #[test]
    fn a_chained_commit_ends_the_transactions_cursors() {
        let (answered, mut classifier, mut named) = fresh();
        for sql in [
            "DECLARE plain CURSOR FOR SELECT 1",
            "DECLARE held CURSOR WITH HOLD FOR SELECT 2",
        ] {
            let e = declare(&mut named, &mut classifier, sql);
            made(&answered, e.seq);
        }
        tell(&answered, b"COMMIT", TxnOp::End);
        named.catch_up(&answered, &mut classifier);
        assert!(classifier.cursor("plain").is_none());
        assert!(classifier.cursor("held").is_some());
    }

    /// A procedure or `DO` block may commit, which ends the portals bound before it: they
    /// are forgotten when it is sent, and an undone change does not give one back.
    #[test]
    fn a_procedure_ends_the_portals_bound_before_it() {
        let (answered, mut classifier, mut named) = fresh();
        let name = Bytes::from_static(b"p");
        let bind = |named: &mut Named| {
            let seq = named.change(Space::Portal, &name);
            named.portals.insert(name.clone(), Portal::Refused);
            named.bound.insert(name.clone(), seq);
            seq
        };
        bind(&mut named);
        let rebound = bind(&mut named);
        for sql in ["CALL tidy()", "DO $$ BEGIN COMMIT; END $$"] {
            let analysis = classifier.classify_bytes(sql.as_bytes());
            assert!(acts_on_names(&analysis), "{sql}");
            named.apply(&analysis, &mut classifier);
            assert!(!named.portals.contains_key(&name), "{sql}");
        }
        answer(&answered, rebound, &[(rebound, false)]);
        named.catch_up(&answered, &mut classifier);
        assert!(!named.portals.contains_key(&name));
        // A portal bound after the call is the session's like any other.
        bind(&mut named);
        assert!(named.portals.contains_key(&name));
        assert!(!acts_on_names(&classifier.classify_bytes(b"SELECT 1")));
    }
}
