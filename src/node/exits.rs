//! How the daemons of this data directory ended: each start finds out
//! whether the one before stopped cleanly, and counts those that did not,
//! by cause. Prometheus sees a process that died only as a gap; this
//! count (kept across restarts, so an increase survives the restart that
//! followed it) tells a watchdog kill from a crash.
//!
//! The record is `<data_dir>/exits.json`, outside the database (a restore
//! replaces the database, not this history):
//!
//! - at start, the daemon writes itself in as `running`;
//! - while the watchdog withholds its pings it notes since when (systemd
//!   kills the process once `WatchdogSec` passes without one);
//! - when the supervision tree gives up it notes the reason (the process
//!   then exits 1 and systemd restarts it);
//! - a clean stop removes `running`.
//!
//! A start that finds `running` counts the previous daemon as unclean:
//! `watchdog` when it was withholding pings, `escalation` when its tree
//! gave up, `crash` otherwise (killed, panicked, power lost).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fsx::{self, FsError};

const FILE: &str = "exits.json";

/// The causes, as label values of `erlmcp_unclean_exits_total`.
const CAUSES: [&str; 3] = ["crash", "watchdog", "escalation"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The daemon running now; `None` after a clean stop.
    #[serde(default)]
    running: Option<Run>,
    /// Daemons that ended without a clean stop, by cause.
    #[serde(default)]
    unclean: BTreeMap<String, u64>,
    /// The last of them.
    #[serde(default)]
    last_unclean: Option<Unclean>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    pid: u32,
    started: i64,
    /// Since when the watchdog withholds its pings.
    #[serde(default)]
    watchdog_since: Option<i64>,
    /// Why the supervision tree gave up.
    #[serde(default)]
    escalated: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Unclean {
    cause: String,
    pid: u32,
    started: i64,
    /// When the next start found out.
    noticed: i64,
    #[serde(default)]
    detail: Option<String>,
}

impl Run {
    fn cause(&self) -> (&'static str, Option<String>) {
        if let Some(why) = &self.escalated {
            return ("escalation", Some(why.clone()));
        }
        if let Some(t) = self.watchdog_since {
            return (
                "watchdog",
                Some(format!(
                    "watchdog pings withheld since {}",
                    crate::clock::rfc3339(t)
                )),
            );
        }
        ("crash", None)
    }
}

/// This daemon's entry in the record.
pub(super) struct Exits {
    dir: PathBuf,
    record: Mutex<Record>,
}

impl Exits {
    /// At start (the data directory is this daemon's): counts the previous
    /// daemon if it did not stop cleanly, and writes this one in.
    pub(super) fn start(data_dir: &Path) -> Exits {
        let mut r = load(data_dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the record of earlier exits is unreadable; starting a new one");
            Record::default()
        });
        if let Some(prev) = r.running.take() {
            let (cause, detail) = prev.cause();
            *r.unclean.entry(cause.to_owned()).or_default() += 1;
            tracing::warn!(
                cause,
                pid = prev.pid,
                started = %crate::clock::rfc3339(prev.started),
                detail = detail.as_deref().unwrap_or(""),
                "the previous erlmcp daemon of this data directory did not stop cleanly"
            );
            r.last_unclean = Some(Unclean {
                cause: cause.to_owned(),
                pid: prev.pid,
                started: prev.started,
                noticed: crate::clock::now_secs(),
                detail,
            });
        }
        r.running = Some(Run {
            pid: std::process::id(),
            started: crate::clock::now_secs(),
            watchdog_since: None,
            escalated: None,
        });
        describe();
        for cause in CAUSES {
            metrics::counter!("erlmcp_unclean_exits_total", "cause" => cause)
                .absolute(r.unclean.get(cause).copied().unwrap_or(0));
        }
        let exits = Exits {
            dir: data_dir.to_owned(),
            record: Mutex::new(r),
        };
        exits.save();
        exits
    }

    /// The watchdog withholds its pings (`true`) or sends them again.
    pub(super) fn watchdog_withheld(&self, withheld: bool) {
        self.update(|run| {
            run.watchdog_since = match (withheld, run.watchdog_since) {
                (true, None) => Some(crate::clock::now_secs()),
                (true, since) => since,
                (false, _) => None,
            };
        });
    }

    /// The supervision tree gave up; the process exits non-zero next.
    pub(super) fn escalated(&self, why: &str) {
        self.update(|run| run.escalated = Some(why.to_owned()));
    }

    /// A clean stop: the next start counts nothing.
    pub(super) fn stopped_cleanly(&self) {
        self.lock().running = None;
        self.save();
    }

    fn update(&self, f: impl FnOnce(&mut Run)) {
        if let Some(run) = self.lock().running.as_mut() {
            f(run);
        }
        self.save();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self) {
        let bytes = serde_json::to_vec_pretty(&*self.lock()).expect("the record serializes");
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        if let Err(e) = fsx::write_atomic(&self.dir.join(FILE), &tmp, &bytes) {
            tracing::warn!(error = %e, "cannot write the record of exits");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
}

fn load(data_dir: &Path) -> Result<Record, LoadError> {
    let p = data_dir.join(FILE);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt {
            path: p.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(FsError::new("reading", &p, e).into()),
    }
}

fn describe() {
    metrics::describe_counter!(
        "erlmcp_unclean_exits_total",
        "Daemons of this data directory that ended without a clean stop, by cause \
         (crash, watchdog, escalation); kept across restarts"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path) -> Record {
        load(dir).unwrap()
    }

    #[test]
    fn a_clean_stop_counts_nothing() {
        let d = tempfile::tempdir().unwrap();
        Exits::start(d.path()).stopped_cleanly();
        let e = Exits::start(d.path());
        assert!(record(d.path()).unclean.is_empty());
        e.stopped_cleanly();
        assert_eq!(record(d.path()).running, None);
    }

    #[test]
    fn each_unclean_end_is_counted_by_its_cause() {
        let d = tempfile::tempdir().unwrap();
        // Killed: never stopped cleanly.
        drop(Exits::start(d.path()));
        let e = Exits::start(d.path());
        e.watchdog_withheld(true);
        drop(e);
        let e = Exits::start(d.path());
        e.watchdog_withheld(true);
        e.watchdog_withheld(false); // the pings came back before systemd acted
        e.escalated("child http restarted 6 times in 60 s");
        drop(e);
        let e = Exits::start(d.path());
        let r = record(d.path());
        assert_eq!(r.unclean.get("crash"), Some(&1));
        assert_eq!(r.unclean.get("watchdog"), Some(&1));
        assert_eq!(r.unclean.get("escalation"), Some(&1));
        let last = r.last_unclean.unwrap();
        assert_eq!(last.cause, "escalation");
        assert!(last.detail.unwrap().contains("http"));
        e.stopped_cleanly();
    }
}
