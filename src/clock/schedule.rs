//! When the scheduler takes a backup. A small grammar, all times UTC:
//!
//! | spec                | meaning                                          |
//! |---------------------|--------------------------------------------------|
//! | `15m`, `6h`, `1d`, `1h 30m` | an interval, counted from the last good backup |
//! | `hourly`            | every hour at minute 00 (`*:00`)                 |
//! | `daily`             | every day at 00:00                               |
//! | `daily HH:MM`, `HH:MM` | every day at that time                        |
//! | `weekly`            | Mondays at 00:00                                 |
//! | `*:MM`              | every hour at minute MM                          |
//! | `*:MM/STEP`         | every STEP minutes, from minute MM of each hour  |
//!
//! Calendar schedules catch up like systemd's `Persistent=true`: when the
//! newest good backup is older than the latest scheduled time (the daemon
//! was down), one backup runs at once.

use std::time::Duration;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Calendar(Calendar),
}

/// Offsets (seconds) inside a repeating period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    period: i64,
    /// Where periods start: weeks start on Monday, 1970-01-01 was a Thursday.
    origin: i64,
    offsets: Vec<i64>,
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// Shortest interval accepted: backups are not a replication stream.
const MIN_INTERVAL: Duration = Duration::from_secs(10);

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = spec.trim();
        let cal = |period, origin, offsets| {
            Ok(Schedule::Calendar(Calendar {
                period,
                origin,
                offsets,
            }))
        };
        match spec {
            "hourly" => return cal(HOUR, 0, vec![0]),
            "daily" => return cal(DAY, 0, vec![0]),
            "weekly" => return cal(WEEK, -3 * DAY, vec![0]),
            _ => {}
        }
        if let Some(rest) = spec.strip_prefix("daily ") {
            return cal(DAY, 0, vec![time_of_day(rest.trim())?]);
        }
        if let Some(rest) = spec.strip_prefix("*:") {
            return cal(HOUR, 0, minutes_in_hour(rest)?);
        }
        if spec.contains(':') {
            return cal(DAY, 0, vec![time_of_day(spec)?]);
        }
        let d = humantime::parse_duration(spec).map_err(|_| {
            format!(
                "{spec:?} is neither an interval (\"15m\", \"6h\") nor a calendar time \
                 (\"hourly\", \"daily\", \"daily 03:30\", \"weekly\", \"*:00/15\")"
            )
        })?;
        if d < MIN_INTERVAL {
            return Err(format!("interval {spec:?} is shorter than 10s"));
        }
        Ok(Schedule::Every(d))
    }

    /// The next time (Unix seconds) strictly after `now` a backup is due,
    /// given the newest good backup's time.
    pub fn next_after(&self, now: i64, last_good: Option<i64>) -> i64 {
        match self {
            Schedule::Every(d) => match last_good {
                Some(t) => (t + d.as_secs() as i64).max(now),
                None => now,
            },
            Schedule::Calendar(c) => {
                let missed = last_good.is_none_or(|t| t < c.previous(now));
                if missed { now } else { c.next(now) }
            }
        }
    }
}

impl Schedule {
    /// The longest time between two scheduled backups: how old the newest
    /// backup may grow while the schedule is kept (what a freshness alert
    /// compares against).
    pub fn longest_gap(&self) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Calendar(c) => {
                let mut offsets = c.offsets.clone();
                offsets.sort_unstable();
                let wrap = offsets
                    .first()
                    .zip(offsets.last())
                    .map_or(c.period, |(first, last)| first + c.period - last);
                let gap = offsets.windows(2).map(|w| w[1] - w[0]).fold(wrap, i64::max);
                Duration::from_secs(gap.max(1) as u64)
            }
        }
    }
}

impl Calendar {
    fn start_of_period(&self, t: i64) -> i64 {
        self.origin + (t - self.origin).div_euclid(self.period) * self.period
    }

    /// The first scheduled time strictly after `t`.
    fn next(&self, t: i64) -> i64 {
        let base = self.start_of_period(t);
        [base, base + self.period]
            .iter()
            .flat_map(|b| self.offsets.iter().map(move |o| b + o))
            .find(|&c| c > t)
            .unwrap_or(base + self.period)
    }

    /// The last scheduled time at or before `t`.
    fn previous(&self, t: i64) -> i64 {
        let base = self.start_of_period(t);
        [base, base - self.period]
            .iter()
            .flat_map(|b| self.offsets.iter().rev().map(move |o| b + o))
            .find(|&c| c <= t)
            .unwrap_or(base - self.period)
    }
}

fn time_of_day(s: &str) -> Result<i64, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: i64 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: i64 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * HOUR + m * 60)
}

/// `MM` or `MM/STEP` after `*:`.
fn minutes_in_hour(s: &str) -> Result<Vec<i64>, String> {
    let (start, step) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let start: i64 = start
        .parse()
        .map_err(|_| format!("\"*:{s}\" is not *:MM or *:MM/STEP"))?;
    if !(0..60).contains(&start) {
        return Err(format!("minute {start} is out of range"));
    }
    let Some(step) = step else {
        return Ok(vec![start * 60]);
    };
    let step: i64 = step
        .parse()
        .map_err(|_| format!("\"*:{s}\" has a bad step"))?;
    if !(1..=60).contains(&step) {
        return Err(format!("step {step} must be 1..=60 minutes"));
    }
    Ok((start..60).step_by(step as usize).map(|m| m * 60).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2025-01-01 was a Wednesday; 00:00 UTC.
    const JAN1: i64 = 1_735_689_600;

    #[test]
    fn intervals_count_from_the_last_good_backup() {
        let s = Schedule::parse("6h").unwrap();
        assert_eq!(s, Schedule::Every(Duration::from_secs(6 * 3600)));
        assert_eq!(s.next_after(JAN1, None), JAN1, "no backup yet: now");
        assert_eq!(s.next_after(JAN1, Some(JAN1 - 3600)), JAN1 + 5 * 3600);
        assert_eq!(
            s.next_after(JAN1, Some(JAN1 - 7 * 3600)),
            JAN1,
            "overdue: now"
        );
    }

    #[test]
    fn calendar_times_are_utc() {
        let s = Schedule::parse("daily 03:30").unwrap();
        let last = Some(JAN1 - 60); // taken before today's 03:30 was due
        assert_eq!(s.next_after(JAN1 + 60, last), JAN1 + 3 * 3600 + 1800);
        let s = Schedule::parse("*:00/15").unwrap();
        assert_eq!(s.next_after(JAN1 + 1, Some(JAN1)), JAN1 + 900);
        assert_eq!(s.next_after(JAN1 + 3000, Some(JAN1 + 2700)), JAN1 + 3600);
        let s = Schedule::parse("hourly").unwrap();
        assert_eq!(s.next_after(JAN1 + 10, Some(JAN1)), JAN1 + 3600);
    }

    #[test]
    fn weekly_means_monday() {
        let s = Schedule::parse("weekly").unwrap();
        // Wednesday Jan 1 -> Monday Jan 6.
        assert_eq!(s.next_after(JAN1, Some(JAN1)), JAN1 + 5 * DAY);
    }

    #[test]
    fn a_missed_time_runs_at_once() {
        let s = Schedule::parse("daily").unwrap();
        let now = JAN1 + 5 * 3600;
        assert_eq!(s.next_after(now, Some(JAN1 - DAY)), now);
        assert_eq!(s.next_after(now, None), now);
    }

    #[test]
    fn nonsense_is_explained() {
        for bad in ["sometimes", "25:00", "*:61", "*:00/0", "daily 3", "1s", ""] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_gap_is_what_freshness_allows() {
        let gap = |spec: &str| Schedule::parse(spec).unwrap().longest_gap().as_secs();
        assert_eq!(gap("15m"), 900);
        assert_eq!(gap("hourly"), 3600);
        assert_eq!(gap("daily 03:30"), 86_400);
        assert_eq!(gap("weekly"), 7 * 86_400);
        assert_eq!(gap("*:00/15"), 900);
        // 05 and 50 past: 45 minutes, then 15 to the next hour's 05.
        assert_eq!(gap("*:05/45"), 45 * 60);
    }
}
