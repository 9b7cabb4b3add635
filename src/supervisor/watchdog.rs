//! The systemd watchdog: `WATCHDOG=1` at half the interval systemd asked
//! for, but only while every critical child's heartbeat is fresh. A hung
//! part stops the pings and systemd kills and restarts the process.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::{Heartbeats, systemd};

/// How often critical children should beat: a quarter of systemd's
/// watchdog interval, at most a second (a second without a watchdog).
pub fn beat_interval() -> Duration {
    match sd_notify::watchdog_enabled() {
        Some(i) => (i / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        None => Duration::from_secs(1),
    }
}

/// Runs until `stop`; returns at once when systemd set no watchdog.
/// `withholding` hears when the pings stop (`true`) and when they resume,
/// so the next start can tell that systemd's watchdog ended this process.
pub async fn run(
    beats: Heartbeats,
    withholding: impl Fn(bool) + Send,
    stop: CancellationToken,
) -> Result<(), super::ChildError> {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        stop.cancelled().await;
        return Ok(());
    };
    tracing::info!(interval = ?interval, "systemd watchdog enabled");
    let period = interval / 2;
    let mut tick = tokio::time::interval(period);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // A beat may be one beat interval older than a ping period.
        let stale = beats.stale(period + beat_interval());
        if stale.is_empty() {
            if withheld {
                tracing::info!("all critical children answer again; watchdog pings resume");
                withheld = false;
                withholding(false);
            }
            systemd::watchdog();
        } else if !withheld {
            withheld = true;
            withholding(true);
            let who: Vec<String> = stale
                .iter()
                .map(|(n, age)| format!("{n} ({age:.1?} ago)"))
                .collect();
            tracing::error!(silent = %who.join(", "), "critical children stopped answering; withholding watchdog pings");
        }
    }
}
