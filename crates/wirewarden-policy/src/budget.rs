//! Exfiltration budgets: how many rows and bytes one principal may take from one target per
//! time window.
//!
//! Windows are **fixed** and aligned to the Unix epoch: a `1h` budget resets at every full
//! hour UTC. A fixed window needs one counter per (budget, subject, target) and gives an exact
//! reset time to report; the price is that a client may take up to twice the limit across a
//! window boundary, so size limits with that in mind.
//!
//! A budget is consulted before a command ([`Budgets::check`], which the rule engine calls
//! during evaluation and which turns an exhausted budget into a deny) and charged after it
//! with what actually flowed ([`Budgets::charge`]). The command that crosses the limit
//! completes; the next one is refused until the window resets. State is per process.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use wirewarden_core::{Principal, Target, Timestamp};

use crate::glob::Glob;

/// Entries for past windows are dropped once the table grows beyond this.
const PRUNE_AT: usize = 4_096;

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Rows (Postgres) or elements (Redis) returned.
    Rows,
    /// Bytes sent to the client in responses.
    Bytes,
}

/// One budget as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BudgetDef {
    pub(crate) id: String,
    pub(crate) subjects: Vec<Glob>,
    pub(crate) groups: Vec<String>,
    pub(crate) targets: Vec<Glob>,
    pub(crate) max_rows: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) window_secs: u64,
}

impl BudgetDef {
    fn applies(&self, principal: &Principal, target: &Target) -> bool {
        (self.subjects.is_empty() || self.subjects.iter().any(|g| g.matches(&principal.subject)))
            && (self.groups.is_empty() || self.groups.iter().any(|g| principal.in_group(g)))
            && (self.targets.is_empty() || self.targets.iter().any(|g| g.matches(&target.name)))
    }

    /// The index of the window containing `now`, and when the next one starts.
    fn window(&self, now: Timestamp) -> (i64, Timestamp) {
        let len = i64::try_from(self.window_secs).unwrap_or(i64::MAX).max(1);
        let index = now.unix_secs().div_euclid(len);
        let resets_at = index
            .checked_add(1)
            .and_then(|i| i.checked_mul(len))
            .and_then(Timestamp::from_unix_secs)
            .unwrap_or(Timestamp::from_unix_nanos(i128::from(i64::MAX)).unwrap_or_default());
        (index, resets_at)
    }

    fn limit(&self, resource: Resource) -> Option<u64> {
        match resource {
            Resource::Rows => self.max_rows,
            Resource::Bytes => self.max_bytes,
        }
    }
}

/// A budget that has run out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exhaustion {
    /// The budget's id.
    pub budget: String,
    /// Which limit was reached.
    pub resource: Resource,
    /// How much was used in the current window.
    pub used: u64,
    /// The limit.
    pub limit: u64,
    /// When the window resets.
    pub resets_at: Timestamp,
}

/// What remains of one budget in the current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remaining {
    /// The budget's id.
    pub budget: String,
    /// Rows left (`None`: the budget does not count rows).
    pub rows: Option<u64>,
    /// Bytes left (`None`: the budget does not count bytes).
    pub bytes: Option<u64>,
    /// When the window resets.
    pub resets_at: Timestamp,
}

/// The state of the budgets that apply to a principal on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum BudgetStatus {
    /// No budget applies.
    Unbudgeted,
    /// Every applicable budget has something left.
    Within(Vec<Remaining>),
    /// At least one applicable budget is used up (the first one, in configuration order).
    Exhausted(Exhaustion),
}

impl BudgetStatus {
    /// Whether a further command may go ahead.
    #[must_use]
    pub fn allows_more(&self) -> bool {
        !matches!(self, Self::Exhausted(_))
    }
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    window: i64,
    rows: u64,
    bytes: u64,
}

impl Usage {
    /// Nothing used, in no window.
    const NONE: Self = Self {
        window: i64::MIN,
        rows: 0,
        bytes: 0,
    };
}

/// Usage per subject, then per target name, then per budget (indexed like the
/// definitions). Nested maps so that a lookup borrows the names instead of allocating a key.
type UsageTable = HashMap<String, HashMap<String, Vec<Usage>>>;

/// The budgets of a policy and their usage counters.
#[derive(Debug, Default)]
pub struct Budgets {
    defs: Vec<BudgetDef>,
    usage: Mutex<UsageTable>,
}

impl Budgets {
    pub(crate) fn new(defs: Vec<BudgetDef>) -> Self {
        Self {
            defs,
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn defs(&self) -> &[BudgetDef] {
        &self.defs
    }

    /// Whether any budget is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UsageTable> {
        // Counters are plain integers updated in one step: a poisoned lock holds valid data.
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status of every budget that applies to `principal` on `target` at `now`.
    #[must_use]
    pub fn check(&self, principal: &Principal, target: &Target, now: Timestamp) -> BudgetStatus {
        if !self.defs.iter().any(|d| d.applies(principal, target)) {
            return BudgetStatus::Unbudgeted;
        }
        let usage = self.lock();
        self.status(&usage, principal, target, now)
    }

    fn status(
        &self,
        usage: &UsageTable,
        principal: &Principal,
        target: &Target,
        now: Timestamp,
    ) -> BudgetStatus {
        let mut remaining = Vec::new();
        let counters = usage
            .get(&principal.subject)
            .and_then(|t| t.get(&target.name));
        for (i, def) in self.defs.iter().enumerate() {
            if !def.applies(principal, target) {
                continue;
            }
            let (window, resets_at) = def.window(now);
            let used = counters
                .and_then(|c| c.get(i))
                .filter(|u| u.window == window)
                .copied()
                .unwrap_or(Usage::NONE);
            for (resource, used) in [(Resource::Rows, used.rows), (Resource::Bytes, used.bytes)] {
                if let Some(limit) = def.limit(resource)
                    && used >= limit
                {
                    return BudgetStatus::Exhausted(Exhaustion {
                        budget: def.id.clone(),
                        resource,
                        used,
                        limit,
                        resets_at,
                    });
                }
            }
            remaining.push(Remaining {
                budget: def.id.clone(),
                rows: def.max_rows.map(|l| l.saturating_sub(used.rows)),
                bytes: def.max_bytes.map(|l| l.saturating_sub(used.bytes)),
                resets_at,
            });
        }
        if remaining.is_empty() {
            BudgetStatus::Unbudgeted
        } else {
            BudgetStatus::Within(remaining)
        }
    }

    /// Charges what a completed command returned to every budget that applies, and returns
    /// the status afterwards (so the caller learns at once that the next command will be
    /// refused).
    pub fn charge(
        &self,
        principal: &Principal,
        target: &Target,
        rows: u64,
        bytes: u64,
        now: Timestamp,
    ) -> BudgetStatus {
        if !self.defs.iter().any(|d| d.applies(principal, target)) {
            return BudgetStatus::Unbudgeted;
        }
        let mut usage = self.lock();
        if usage.len() > PRUNE_AT {
            let defs = &self.defs;
            // Drop subjects and targets with nothing counted in a current window.
            usage.retain(|_, targets| {
                targets.retain(|_, counters| {
                    counters
                        .iter()
                        .zip(defs)
                        .any(|(u, d)| d.window(now).0 == u.window)
                });
                !targets.is_empty()
            });
        }
        let n = self.defs.len();
        // Charging happens once per completed command, so the two key copies are cheap
        // next to the command itself; evaluation (the hot path) only borrows.
        let counters = usage
            .entry(principal.subject.clone())
            .or_default()
            .entry(target.name.clone())
            .or_insert_with(|| vec![Usage::NONE; n]);
        for (def, entry) in self.defs.iter().zip(counters.iter_mut()) {
            if !def.applies(principal, target) {
                continue;
            }
            let (window, _) = def.window(now);
            if entry.window != window {
                *entry = Usage {
                    window,
                    rows: 0,
                    bytes: 0,
                };
            }
            entry.rows = entry.rows.saturating_add(rows);
            entry.bytes = entry.bytes.saturating_add(bytes);
        }
        self.status(&usage, principal, target, now)
    }

    /// The configured window length of a budget, by id.
    #[must_use]
    pub fn window_of(&self, budget: &str) -> Option<Duration> {
        self.defs
            .iter()
            .find(|d| d.id == budget)
            .map(|d| Duration::from_secs(d.window_secs))
    }
}

#[cfg(test)]
mod tests {
    use wirewarden_core::{AuthMethod, Protocol};

    use super::*;

    fn def() -> BudgetDef {
        BudgetDef {
            id: "b".into(),
            subjects: vec![],
            groups: vec![],
            targets: vec![],
            max_rows: Some(10),
            max_bytes: None,
            window_secs: 60,
        }
    }

    fn principal(subject: &str) -> Principal {
        Principal::new(
            subject,
            AuthMethod::External {
                mechanism: "t".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn counters_of_past_windows_are_pruned() {
        let budgets = Budgets::new(vec![def()]);
        let target = Target::new("crm", Protocol::Redis).unwrap();
        let t0 = Timestamp::from_unix_secs(600).unwrap();
        for i in 0..=PRUNE_AT {
            budgets.charge(&principal(&format!("s{i}")), &target, 1, 0, t0);
        }
        assert_eq!(budgets.lock().len(), PRUNE_AT + 1);
        let t1 = Timestamp::from_unix_secs(660).unwrap();
        let status = budgets.charge(&principal("fresh"), &target, 11, 0, t1);
        assert!(matches!(
            status,
            BudgetStatus::Exhausted(Exhaustion { used: 11, .. })
        ));
        assert_eq!(
            budgets.lock().len(),
            1,
            "only the current window's counter is kept"
        );
        // Earlier subjects start afresh in the new window.
        assert!(budgets.check(&principal("s0"), &target, t1).allows_more());
    }

    #[test]
    fn windows_are_fixed_and_aligned_to_the_epoch() {
        let budgets = Budgets::new(vec![def()]);
        let target = Target::new("crm", Protocol::Redis).unwrap();
        let p = principal("a");
        let at = |s| Timestamp::from_unix_secs(s).unwrap();
        assert!(!budgets.charge(&p, &target, 10, 0, at(659)).allows_more());
        match budgets.check(&p, &target, at(659)) {
            BudgetStatus::Exhausted(ex) => assert_eq!(ex.resets_at, at(660)),
            other => panic!("{other:?}"),
        }
        assert!(budgets.check(&p, &target, at(660)).allows_more());
    }
}
