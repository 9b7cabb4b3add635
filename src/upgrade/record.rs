//! What this data directory knows of its releases: which ran last, the one
//! before, whether the last is on probation, confirmed or was rolled back
//! (and why), its restore point, and a short history. Kept in
//! `<data_dir>/upgrade.json`, outside the database: a rollback may replace
//! the database, never this.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::fsx::{self, FsError};

/// The file's name in the data directory.
pub(crate) const FILE: &str = "upgrade.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Running, not yet healthy for the whole probation.
    Probation {
        since: i64,
    },
    Confirmed {
        at: i64,
    },
    /// The release that runs took over from `from`, which failed.
    RolledBack {
        from: String,
        reason: String,
        at: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The release that ran last.
    pub release: String,
    /// The release before it.
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(flatten)]
    pub state: State,
    /// The pinned backup taken before this release changed the schema.
    #[serde(default)]
    pub restore_point: Option<String>,
    /// Left by `erlmcp upgrade apply` for the release it rolls back to.
    #[serde(default)]
    pub rollback_reason: Option<String>,
    /// What happened, newest last (bounded).
    #[serde(default)]
    pub history: Vec<String>,
}

/// How many history lines are kept.
const HISTORY: usize = 20;

impl Record {
    pub(crate) fn new(release: &str, state: State) -> Record {
        Record {
            release: release.to_owned(),
            previous: None,
            state,
            restore_point: None,
            rollback_reason: None,
            history: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, line: String) {
        tracing::info!(upgrade = %line, "upgrade");
        self.history.push(format!(
            "{} {line}",
            crate::clock::rfc3339(crate::clock::now_secs())
        ));
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
    }
}

pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

pub(crate) fn load(data_dir: &Path) -> Result<Option<Record>, RecordError> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RecordError::Corrupt {
                path: p.display().to_string(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RecordError::Fs(FsError::new("reading", &p, e))),
    }
}

/// Saves atomically and durably.
pub(crate) fn save(data_dir: &Path, r: &Record) -> Result<(), RecordError> {
    let bytes = serde_json::to_vec_pretty(r).expect("the upgrade record serializes");
    fsx::write_atomic(&path(data_dir), &data_dir.join(".upgrade.json.tmp"), &bytes)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the upgrade record {path} is unreadable ({reason}); fix or remove it")]
    Corrupt { path: String, reason: String },
}
