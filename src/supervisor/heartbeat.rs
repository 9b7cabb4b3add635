//! Liveness proofs of critical children. A child registers a name and
//! beats while it works; the watchdog asks whether every beat is recent.

use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct Heartbeats {
    last: Arc<DashMap<&'static str, Instant>>,
}

impl Heartbeats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `name` is alive now (registering it on first use).
    pub fn beat(&self, name: &'static str) {
        self.last.insert(name, Instant::now());
    }

    /// Critical parts whose last beat is older than `max_age`, with its age.
    pub fn stale(&self, max_age: Duration) -> Vec<(&'static str, Duration)> {
        let now = Instant::now();
        self.last
            .iter()
            .map(|e| (*e.key(), now.duration_since(*e.value())))
            .filter(|(_, age)| *age > max_age)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_beats_are_stale() {
        let h = Heartbeats::new();
        h.beat("writer");
        assert!(h.stale(Duration::from_secs(1)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(h.stale(Duration::from_millis(10))[0].0, "writer");
    }
}
