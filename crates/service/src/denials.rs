//! Requests refused before their caller was authenticated, counted per tenant and reason
//! and recorded as at most one `auth.failed` event per tenant, reason and window (a
//! minute), carrying the count: a flood of junk tokens costs the target tenant's audit
//! chain one event a minute per reason, never one per request, and no event holds
//! anything the callers sent (the tenant is a validated id, the reason one of a fixed set).
//!
//! A window opens with the first denial of its (tenant, reason) and is recorded when it
//! has lasted [`DENIAL_WINDOW`]; the next denial opens the next window. The table of open
//! windows is bounded: past [`MAX_OPEN_WINDOWS`] a denial of a new (tenant, reason) is
//! counted in the metrics only.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use model::TenantId;
use tokio::time::Instant;

/// How long a window of denials lasts before it is recorded.
pub const DENIAL_WINDOW: Duration = Duration::from_secs(60);

/// Open windows at most (one per tenant and reason with recent denials).
pub const MAX_OPEN_WINDOWS: usize = 10_000;

/// Why a request was refused before its caller was authenticated. A closed set: these
/// names are metric labels and audit resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Denial {
    /// No `Authorization: Bearer` token.
    NoToken,
    /// A token that is neither an API key token nor the operator token.
    MalformedToken,
    /// A well-formed API key token whose key the tenant does not have.
    UnknownKey,
    /// A known key with another secret.
    WrongSecret,
    /// A revoked key.
    RevokedKey,
    /// A token that did not verify while the bucket shared by such tokens was empty: not
    /// looked up at all.
    Throttled,
}

impl Denial {
    pub const ALL: [Denial; 6] = [
        Denial::NoToken,
        Denial::MalformedToken,
        Denial::UnknownKey,
        Denial::WrongSecret,
        Denial::RevokedKey,
        Denial::Throttled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Denial::NoToken => "no-token",
            Denial::MalformedToken => "malformed-token",
            Denial::UnknownKey => "unknown-key",
            Denial::WrongSecret => "wrong-secret",
            Denial::RevokedKey => "revoked-key",
            Denial::Throttled => "throttled",
        }
    }

    /// The `resource` of the event recording `count` of them.
    pub fn resource(self, count: u64) -> String {
        format!("denials/{}?count={count}", self.as_str())
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    count: u64,
}

/// A window of denials that is due to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueWindow {
    pub tenant: TenantId,
    pub reason: Denial,
    pub count: u64,
}

/// The open windows.
#[derive(Debug)]
pub(crate) struct DenialWindows {
    windows: Mutex<HashMap<(TenantId, Denial), Window>>,
    length: Duration,
    capacity: usize,
}

impl DenialWindows {
    pub fn new(length: Duration, capacity: usize) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            length,
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(TenantId, Denial), Window>> {
        // Every update is complete before anything that could panic.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one denial; `false` when it opens no window because the table is full.
    pub fn count(&self, tenant: TenantId, reason: Denial) -> bool {
        let mut windows = self.lock();
        let full = windows.len() >= self.capacity;
        match windows.entry((tenant, reason)) {
            std::collections::hash_map::Entry::Occupied(mut open) => {
                open.get_mut().count += 1;
                true
            }
            std::collections::hash_map::Entry::Vacant(_) if full => false,
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(Window {
                    opened: Instant::now(),
                    count: 1,
                });
                true
            }
        }
    }

    /// Removes and returns the windows that have lasted their length (all of them when
    /// `all`), in a stable order.
    pub fn take_due(&self, all: bool) -> Vec<DueWindow> {
        let now = Instant::now();
        let mut due = Vec::new();
        self.lock().retain(|&(tenant, reason), window| {
            let closed = all || now.duration_since(window.opened) >= self.length;
            if closed {
                due.push(DueWindow {
                    tenant,
                    reason,
                    count: window.count,
                });
            }
            !closed
        });
        due.sort_by(|a, b| (a.tenant.as_str(), a.reason).cmp(&(b.tenant.as_str(), b.reason)));
        due
    }

    /// Puts back a window that could not be recorded: its count joins the window open
    /// now for the same tenant and reason (or reopens one, due at once), so nothing is
    /// lost and still one event stands for them.
    pub fn put_back(&self, window: DueWindow) {
        let mut windows = self.lock();
        let overdue = Instant::now()
            .checked_sub(self.length)
            .unwrap_or_else(Instant::now);
        windows
            .entry((window.tenant, window.reason))
            .and_modify(|open| {
                open.count += window.count;
                open.opened = overdue;
            })
            .or_insert(Window {
                opened: overdue,
                count: window.count,
            });
    }

    /// How often the recorder looks for due windows.
    pub fn tick(&self) -> Duration {
        (self.length / 12).max(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(byte: u8) -> TenantId {
        TenantId::from_random_bytes([byte; 16])
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_is_due_once_a_minute_with_every_denial_counted() {
        let windows = DenialWindows::new(DENIAL_WINDOW, 100);
        for _ in 0..2000 {
            assert!(windows.count(tenant(1), Denial::UnknownKey));
        }
        windows.count(tenant(1), Denial::NoToken);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(windows.take_due(false).is_empty(), "not a minute yet");
        windows.count(tenant(1), Denial::UnknownKey);
        tokio::time::advance(Duration::from_secs(1)).await;
        let due = windows.take_due(false);
        assert_eq!(
            due,
            vec![
                DueWindow {
                    tenant: tenant(1),
                    reason: Denial::NoToken,
                    count: 1
                },
                DueWindow {
                    tenant: tenant(1),
                    reason: Denial::UnknownKey,
                    count: 2001
                },
            ]
        );
        assert!(windows.take_due(false).is_empty(), "taken once");
        // Three minutes of a steady flood: one window a minute.
        let mut recorded = 0;
        for _ in 0..180 {
            windows.count(tenant(1), Denial::WrongSecret);
            tokio::time::advance(Duration::from_secs(1)).await;
            recorded += windows.take_due(false).len();
        }
        assert_eq!(recorded, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_a_window_put_back_loses_nothing() {
        let windows = DenialWindows::new(DENIAL_WINDOW, 2);
        assert!(windows.count(tenant(1), Denial::NoToken));
        assert!(windows.count(tenant(2), Denial::NoToken));
        assert!(!windows.count(tenant(3), Denial::NoToken), "full");
        assert!(
            windows.count(tenant(1), Denial::NoToken),
            "an open window counts on"
        );
        let due = windows.take_due(true);
        assert_eq!(due.len(), 2);
        windows.put_back(due[0]);
        windows.count(tenant(1), Denial::NoToken);
        let again = windows.take_due(false);
        assert_eq!(again.len(), 1, "a window put back is due at once");
        assert_eq!(again[0].count, 3);
    }

    #[test]
    fn reasons_have_fixed_distinct_names() {
        let mut names: Vec<&str> = Denial::ALL.iter().map(|d| d.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Denial::ALL.len());
        assert_eq!(
            Denial::UnknownKey.resource(7),
            "denials/unknown-key?count=7"
        );
    }
}
