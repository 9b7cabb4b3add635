//! Time as erlmcp reads it: the wall clock in Unix units, and
//! [`schedule`]s (when something recurs).

pub(crate) mod schedule;

pub use schedule::Schedule;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2025-01-01T03:30:00Z` for Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2025-01-01T03:30:00.123Z` for Unix milliseconds.
pub fn rfc3339_millis(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Test hook: with `TEST_ERLMCP_PAUSE_AT=NAME:MS[,NAME:MS...]` in the
/// environment (not `ERLMCP_*`: those are configuration overrides) the
/// process sleeps MS milliseconds at the point NAME, so an integration test
/// can `kill -9` it exactly there. Points: `backup.after_copy`,
/// `backup.before_manifest`, `restore.before_swap`, `restore.after_swap`,
/// `migrate.before_commit`, `upgrade.after_journal`, `upgrade.after_flip`,
/// `upgrade.rollback.after_flip`, `promote.before_announce` (with the
/// `fault-injection` feature).
pub fn pause_point(name: &str) {
    let Ok(spec) = std::env::var("TEST_ERLMCP_PAUSE_AT") else {
        return;
    };
    for item in spec.split(',') {
        if let Some((point, ms)) = item.split_once(':')
            && point == name
            && let Ok(ms) = ms.parse()
        {
            tracing::warn!(point, ms, "pausing at a test pause point");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}
