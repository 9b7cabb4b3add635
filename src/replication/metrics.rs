//! Replication metrics (Prometheus names, base units in the name).

use std::time::Duration;

use super::frame::Role;

pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "erlmcp_replication_role",
        "1 for this node's role (label role)"
    );
    describe_gauge!(
        "erlmcp_replication_epoch",
        "The highest epoch this node knows"
    );
    describe_gauge!(
        "erlmcp_replication_last_sequence",
        "The last sequence of this node's replication log"
    );
    describe_gauge!(
        "erlmcp_replication_standby_acked_sequence",
        "Primary: the last sequence the standby has durably"
    );
    describe_gauge!(
        "erlmcp_replication_lag_sequences",
        "Entries the standby lacks (primary and standby report it)"
    );
    describe_gauge!(
        "erlmcp_replication_lag_seconds",
        Unit::Seconds,
        "Age of the oldest entry the standby lacks"
    );
    describe_gauge!(
        "erlmcp_replication_standby_connected",
        "Primary: 1 while a standby follows"
    );
    describe_gauge!(
        "erlmcp_replication_in_sync",
        "Primary: writes wait for the standby; standby: it holds every acknowledged write"
    );
    describe_gauge!(
        "erlmcp_replication_peer_up",
        "1 when the peer answered its last status check"
    );
    describe_gauge!(
        "erlmcp_replication_primaries",
        "Primaries seen in the pair (this node and its peer): 2 is a split brain"
    );
    describe_histogram!(
        "erlmcp_replication_ack_wait_seconds",
        Unit::Seconds,
        "How long a write waited for the standby's acknowledgement"
    );
    describe_counter!(
        "erlmcp_replication_discarded_changes_total",
        "Log entries a node dropped by resyncing (never acknowledged)"
    );
    describe_counter!(
        "erlmcp_replication_conflicts_total",
        "Changesets the standby could not apply (replication stopped)"
    );
    describe_counter!(
        "erlmcp_replication_writes_refused_total",
        "Writes refused by replication, by reason"
    );
    describe_counter!(
        "erlmcp_replication_degraded_total",
        "Times the primary went on without its standby (degrade mode)"
    );
    describe_counter!(
        "erlmcp_replication_snapshots_total",
        "Snapshots a standby installed to catch up"
    );
    describe_counter!(
        "erlmcp_replication_role_changes_total",
        "Promotions and demotions, by new role"
    );
}

/// The counters the alerts watch, at zero from the start: a series that
/// appears at 1 shows no increase.
pub(crate) fn init_counters() {
    for c in [
        "erlmcp_replication_discarded_changes_total",
        "erlmcp_replication_conflicts_total",
        "erlmcp_replication_degraded_total",
        "erlmcp_replication_snapshots_total",
    ] {
        metrics::counter!(c).increment(0);
    }
    metrics::counter!("erlmcp_replication_writes_refused_total", "reason" => "no_standby")
        .increment(0);
    for r in [Role::Primary, Role::Standby] {
        metrics::counter!("erlmcp_replication_role_changes_total", "role" => r.as_str())
            .increment(0);
    }
}

/// A role taken (at start or by a change).
pub(crate) fn role(r: Role) {
    role_gauge(r);
    metrics::counter!("erlmcp_replication_role_changes_total", "role" => r.as_str()).increment(1);
}

/// The role gauge alone (refreshed at every scrape).
pub(crate) fn role_gauge(r: Role) {
    for other in [Role::Primary, Role::Standby] {
        metrics::gauge!("erlmcp_replication_role", "role" => other.as_str()).set(if other == r {
            1.0
        } else {
            0.0
        });
    }
}

pub(crate) fn epoch(e: u64) {
    metrics::gauge!("erlmcp_replication_epoch").set(e as f64);
}

pub(crate) fn last_sequence(s: u64) {
    metrics::gauge!("erlmcp_replication_last_sequence").set(s as f64);
}

pub(crate) fn standby(connected: bool, acked: u64) {
    metrics::gauge!("erlmcp_replication_standby_connected").set(if connected { 1.0 } else { 0.0 });
    metrics::gauge!("erlmcp_replication_standby_acked_sequence").set(acked as f64);
}

pub(crate) fn lag(sequences: u64, seconds: f64) {
    metrics::gauge!("erlmcp_replication_lag_sequences").set(sequences as f64);
    metrics::gauge!("erlmcp_replication_lag_seconds").set(seconds);
}

pub(crate) fn in_sync(yes: bool) {
    metrics::gauge!("erlmcp_replication_in_sync").set(if yes { 1.0 } else { 0.0 });
}

pub(crate) fn peer(up: bool, primaries: u64) {
    metrics::gauge!("erlmcp_replication_peer_up").set(if up { 1.0 } else { 0.0 });
    metrics::gauge!("erlmcp_replication_primaries").set(primaries as f64);
}

pub(crate) fn ack_wait(d: Duration) {
    metrics::histogram!("erlmcp_replication_ack_wait_seconds").record(d.as_secs_f64());
}

pub(crate) fn apply_delay(committed_at_ms: i64) {
    let ms = (crate::clock::now_millis() - committed_at_ms).max(0);
    metrics::histogram!("erlmcp_replication_apply_delay_seconds").record(ms as f64 / 1000.0);
}

pub(crate) fn discarded(n: u64) {
    metrics::counter!("erlmcp_replication_discarded_changes_total").increment(n);
}

pub(crate) fn conflict() {
    metrics::counter!("erlmcp_replication_conflicts_total").increment(1);
}

pub(crate) fn write_refused(reason: &'static str) {
    metrics::counter!("erlmcp_replication_writes_refused_total", "reason" => reason).increment(1);
}

pub(crate) fn degraded() {
    metrics::counter!("erlmcp_replication_degraded_total").increment(1);
}

pub(crate) fn snapshot_installed() {
    metrics::counter!("erlmcp_replication_snapshots_total").increment(1);
}

/// Log entries pruned (`reason`: `replicated`, the standby and the newest
/// backup have them; `size`, beyond `max_log_entries`), counted with the
/// other tables' retention (described by the ops listener).
pub(crate) fn log_pruned(n: u64, reason: &'static str) {
    metrics::counter!("erlmcp_retention_deleted_rows_total", "table" => super::tables::LOG, "reason" => reason)
        .increment(n);
}
