//! Probation: a new release is confirmed once it has been ready, its
//! critical children beating, for `upgrade.probation_secs` without a break.
//! Until then `erlmcp upgrade apply` waits, and rolls back when the
//! confirmation does not come in time.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::Upgrade;

/// Runs until confirmed or `stop`. `healthy` says whether the node is
/// ready and every heartbeat fresh.
pub(crate) async fn run(
    upgrade: Arc<Upgrade>,
    healthy: impl Fn() -> bool,
    probation: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut healthy_for = Duration::ZERO;
    while upgrade.on_probation() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if healthy() {
            healthy_for += Duration::from_secs(1);
        } else if healthy_for > Duration::ZERO {
            tracing::warn!(after = ?healthy_for, "probation starts over: not ready or not healthy");
            healthy_for = Duration::ZERO;
        }
        if healthy_for >= probation {
            upgrade.confirm(healthy_for.as_secs());
        }
    }
}
