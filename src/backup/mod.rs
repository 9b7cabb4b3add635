//! Backups: online, compressed, verified snapshots of the database, their
//! retention, and restore.
//!
//! A backup `ID` is two files in the backup directory, written in this order:
//!
//! - `ID.db.zst` — the zstd-compressed database, written to a dot-file,
//!   fsynced, renamed into place, directory fsynced;
//! - `ID.json` — the [`manifest::Manifest`], written the same way only after
//!   the backup passed [`verify`]. Its presence is what makes a backup
//!   count: a data file without a manifest is a leftover of a crash.
//!
//! A backup that fails verification gets an `ID.bad` marker (and is never a
//! "latest good" one). Dot-files (`.ID.*.tmp`) are work in progress; the
//! directory lock (`.lock`, `flock`) tells a live one from a crashed one, so
//! the next run removes leftovers safely ([`catalog::clean_leftovers`]).
//!
//! One file per step: [`snapshot`] (create), [`verify`], [`catalog`]
//! (listing), [`retention`] (prune), [`restore`], [`scheduler`] (the daemon's loop), [`manifest`], [`lock`] (the
//! directory's lock), [`metrics`].

pub(crate) mod audit;
pub mod catalog;
pub(crate) mod lock;
pub mod manifest;
pub mod metrics;
pub mod pin;
pub mod restore;
pub(crate) mod retention;
pub mod scheduler;
pub mod snapshot;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use thiserror::Error;

use crate::config::Config;
use crate::store::{DB_FILE, StoreError};

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("the backup directory {path} cannot be used: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("the disk holding {path} is full; the backup was abandoned and its files removed")]
    DiskFull { path: String },
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("another backup, prune or restore is running in {path}")]
    Busy { path: String },
    #[error("there is no database at {path}")]
    NoDatabase { path: String },
    #[error("no backup {id} in {dir}")]
    NotFound { id: String, dir: String },
    #[error("no good backup to restore in {dir}{}", skipped_text(.skipped))]
    NoGoodBackup { dir: String, skipped: Vec<Skipped> },
    #[error("backup {id} is corrupt: {reason}; it was marked bad and will not be restored")]
    Corrupt { id: String, reason: String },
    #[error("backup {id} cannot be used: {reason}")]
    Unusable { id: String, reason: String },
    #[error(
        "backup {id} has schema version {found}, newer than this erlmcp understands ({known}); \
         restore it with the erlmcp that made it (version {made_by})"
    )]
    SchemaTooNew {
        id: String,
        found: i64,
        known: i64,
        made_by: String,
    },
    #[error("the backup was cancelled (the server is stopping)")]
    Cancelled,
    #[error("the backup task crashed: {0}")]
    Crashed(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A backup `restore latest` passed over, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

fn skipped_text(skipped: &[Skipped]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = skipped
        .iter()
        .map(|s| format!("{} ({})", s.id, s.reason))
        .collect();
    format!("; skipped: {}", list.join(", "))
}

impl From<crate::fsx::FsError> for BackupError {
    fn from(e: crate::fsx::FsError) -> BackupError {
        if e.is_disk_full() {
            return BackupError::DiskFull {
                path: e.path.display().to_string(),
            };
        }
        BackupError::Io {
            what: e.what,
            path: e.path.display().to_string(),
            source: e.source,
        }
    }
}

impl BackupError {
    /// Maps an I/O error on `path`, telling a full disk apart.
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> BackupError {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return BackupError::DiskFull {
                path: path.display().to_string(),
            };
        }
        BackupError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }

    /// Maps an SQLite error on `path`, telling a full disk apart.
    pub fn sqlite(path: &Path, e: rusqlite::Error) -> BackupError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                BackupError::DiskFull {
                    path: path.display().to_string(),
                }
            }
            _ => BackupError::Sqlite(e),
        }
    }

    /// The exit code of the CLI command that failed with this.
    pub fn exit_code(&self) -> u8 {
        use crate::exit;
        match self {
            BackupError::Corrupt { .. } | BackupError::Unusable { .. } => exit::DATA_ERROR,
            BackupError::SchemaTooNew { .. } => exit::DATA_TOO_NEW,
            BackupError::NotFound { .. }
            | BackupError::NoGoodBackup { .. }
            | BackupError::NoDatabase { .. } => exit::NO_INPUT,
            BackupError::Busy { .. } | BackupError::Store(StoreError::Locked { .. }) => {
                exit::TEMP_FAIL
            }
            BackupError::Dir { .. } => exit::CANT_CREATE,
            BackupError::DiskFull { .. } | BackupError::Io { .. } => exit::IO_ERROR,
            BackupError::Sqlite(_)
            | BackupError::Store(_)
            | BackupError::Cancelled
            | BackupError::Crashed(_) => exit::FAILURE,
        }
    }
}

/// How the online copy is paced.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub step_pages: u32,
    pub pause: Duration,
}

/// Everything backup code needs to know, from the configuration.
#[derive(Clone, Debug)]
pub struct Backups {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub pacing: Pacing,
    pub level: i32,
    pub retention: retention::Policy,
    /// Set when the daemon stops: a copy in progress gives up at its next
    /// step (its files are removed) instead of holding the shutdown.
    pub cancel: Arc<AtomicBool>,
}

impl Backups {
    pub fn from_config(c: &Config) -> Backups {
        Backups {
            dir: c.backup.dir_for(&c.data_dir),
            data_dir: c.data_dir.clone(),
            node_name: c.node_name.clone(),
            pacing: Pacing {
                step_pages: c.backup.step_pages,
                pause: Duration::from_millis(c.backup.step_pause_ms),
            },
            level: c.backup.compression_level,
            retention: retention::Policy {
                keep_last: c.backup.keep_last,
                hourly: c.backup.hourly,
                daily: c.backup.daily,
                weekly: c.backup.weekly,
            },
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    pub fn data_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.db.zst"))
    }

    pub fn manifest_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn pin_marker(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.pinned"))
    }

    pub fn bad_marker(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bad"))
    }

    /// A work-in-progress file of backup `id`; removed by the next run if
    /// this one dies.
    pub fn temp_file(&self, id: &str, what: &str) -> PathBuf {
        self.dir.join(format!(".{id}.{what}.tmp"))
    }
}

/// A backup id for a time in milliseconds: `20250101T033000Z-123a7`, the
/// UTC second, then the millisecond and a random byte. Ids sort by time,
/// and two backups in the same second stay apart.
pub fn new_id(millis: i64) -> String {
    let stamp: String = crate::clock::rfc3339(millis / 1000)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let suffix: u8 = rand::random();
    format!("{stamp}-{:03}{suffix:02x}", millis % 1000)
}
