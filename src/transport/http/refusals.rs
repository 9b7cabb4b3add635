//! The audit rows of refusals by a limit (429 and 503 on `/mcp`). A flood
//! must not become a flood of writes: the first refusal of each client and
//! limit in a window is audited, carrying how many the client's previous
//! window refused beyond its first; every refusal is counted in
//! `erlmcp_http_refusals_total` regardless. Connections refused before a
//! request was read are counted only (there is nothing to name yet).

use dashmap::DashMap;

use super::limits::{ClientKey, Limit, Refusal};
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};

/// One audited refusal per client and limit in this long.
pub(crate) const WINDOW_MS: i64 = 10_000;

/// Clients remembered at most; past it the memory starts over, so a flood
/// from many addresses costs at most this many rows per window.
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub(crate) struct RefusalAudit {
    windows: DashMap<(ClientKey, Limit), Window>,
}

#[derive(Default)]
struct Window {
    start_ms: i64,
    /// Refusals after the window's first (not audited).
    more: u64,
}

impl RefusalAudit {
    /// Audits `refusal` of `client` if it is the first of its window.
    pub(crate) fn record(&self, store: &Store, client: &ClientKey, refusal: &Refusal) {
        let now = crate::clock::now_millis();
        let Some(before) = self.opens_window(client, refusal.limit, now) else {
            return;
        };
        let principal = match client {
            ClientKey::Principal(p) => Some(p.to_string()),
            ClientKey::Address(_) => None,
        };
        let detail = if before > 0 {
            format!("client {client}; {before} more refused in its previous window")
        } else {
            format!("client {client}")
        };
        let status = refusal.status().as_u16().to_string();
        let entry = AuditEntry::event(
            "limit",
            refusal.limit.name(),
            &status,
            Some(&detail),
            principal,
        );
        audit::record_batched(store, entry);
    }

    /// Counts a refusal at `now`; `Some(refused after the first in the
    /// previous window)` when it opens a new window.
    fn opens_window(&self, client: &ClientKey, limit: Limit, now: i64) -> Option<u64> {
        if self.windows.len() > MAX_KEYS {
            self.windows.clear();
        }
        let mut w = self.windows.entry((client.clone(), limit)).or_default();
        if now - w.start_ms >= WINDOW_MS {
            let before = w.more;
            *w = Window {
                start_ms: now,
                more: 0,
            };
            Some(before)
        } else {
            w.more += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_client_and_limit_in_each_window() {
        let a = RefusalAudit::default();
        let c = ClientKey::of_address([10, 0, 0, 1].into());
        let d = ClientKey::of_address([10, 0, 0, 2].into());
        let t = 1_000_000;
        assert_eq!(a.opens_window(&c, Limit::Rate, t), Some(0));
        assert_eq!(a.opens_window(&c, Limit::Rate, t + 1), None);
        assert_eq!(a.opens_window(&c, Limit::Rate, t + 2), None);
        assert_eq!(
            a.opens_window(&d, Limit::Rate, t + 2),
            Some(0),
            "another client"
        );
        assert_eq!(
            a.opens_window(&c, Limit::Sessions, t + 2),
            Some(0),
            "another limit"
        );
        assert_eq!(a.opens_window(&c, Limit::Rate, t + WINDOW_MS), Some(2));
        assert_eq!(a.opens_window(&c, Limit::Rate, t + WINDOW_MS + 1), None);
    }
}
