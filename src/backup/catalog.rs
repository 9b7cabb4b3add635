//! What is in the backup directory: good backups, bad ones (failed
//! verification), invalid ones (unreadable manifest, missing data) and
//! partial ones (a crash between writing the data and the manifest).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::manifest::{self, Manifest};
use super::{BackupError, Backups};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    /// Verified when written (and since, if re-verified).
    Good,
    /// Failed verification; never restored, never "latest".
    Bad { reason: String },
    /// The manifest is unreadable or the data file is missing or the wrong size.
    Invalid { reason: String },
    /// Data without a manifest: the writer died. Removed by the next run.
    Partial,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub status: Status,
    pub manifest: Option<Manifest>,
    /// Why retention must keep it (an upgrade's restore point), if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

impl Status {
    /// One word for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Good => "good",
            Status::Bad { .. } => "bad",
            Status::Invalid { .. } => "invalid",
            Status::Partial => "partial",
        }
    }

    /// Why a backup is not good, if it is not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Bad { reason } | Status::Invalid { reason } => Some(reason),
            Status::Good | Status::Partial => None,
        }
    }
}

impl Entry {
    pub fn is_good(&self) -> bool {
        self.status == Status::Good
    }
}

/// Every backup in the directory, newest first (ids sort by time). A
/// missing directory is an empty list.
pub fn list(b: &Backups) -> Result<Vec<Entry>, BackupError> {
    let ids = match ids(b) {
        Ok(ids) => ids,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BackupError::Dir {
                path: b.dir.display().to_string(),
                source,
            });
        }
    };
    Ok(ids.into_iter().rev().map(|id| entry(b, id)).collect())
}

/// The newest good backup, if any.
pub fn latest_good(entries: &[Entry]) -> Option<&Entry> {
    entries.iter().find(|e| e.is_good())
}

fn ids(b: &Backups) -> std::io::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for item in std::fs::read_dir(&b.dir)? {
        let name = item?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        if let Some(id) = name
            .strip_suffix(".json")
            .or_else(|| name.strip_suffix(".db.zst"))
        {
            ids.insert(id.to_owned());
        }
    }
    Ok(ids)
}

fn entry(b: &Backups, id: String) -> Entry {
    let pinned = super::pin::pinned(b, &id);
    Entry {
        pinned,
        ..status_of(b, id)
    }
}

fn status_of(b: &Backups, id: String) -> Entry {
    let manifest_path = b.manifest_file(&id);
    if !manifest_path.exists() {
        return Entry {
            id,
            status: Status::Partial,
            manifest: None,
            pinned: None,
        };
    }
    let m = match Manifest::read(&manifest_path, &id) {
        Ok(m) => m,
        Err(reason) => {
            return Entry {
                id,
                status: Status::Invalid { reason },
                manifest: None,
                pinned: None,
            };
        }
    };
    let status = if let Some(bad) = manifest::read_bad(&b.bad_marker(&id)) {
        Status::Bad { reason: bad.reason }
    } else {
        match std::fs::metadata(b.data_file(&id)) {
            Err(_) => Status::Invalid {
                reason: "the data file is missing".into(),
            },
            Ok(md) if md.len() != m.compressed_bytes => Status::Invalid {
                reason: format!(
                    "the data file has {} bytes, the manifest says {}",
                    md.len(),
                    m.compressed_bytes
                ),
            },
            Ok(_) => Status::Good,
        }
    };
    Entry {
        id,
        status,
        manifest: Some(m),
        pinned: None,
    }
}

/// Removes what dead runs left: dot-files (work in progress) and data
/// without a manifest. Call only while holding the directory lock — then
/// nothing else is in progress. Returns the names removed.
pub fn clean_leftovers(b: &Backups) -> Result<Vec<String>, BackupError> {
    let mut removed = Vec::new();
    let items = std::fs::read_dir(&b.dir).map_err(|source| BackupError::Dir {
        path: b.dir.display().to_string(),
        source,
    })?;
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name != ".lock" {
            crate::fsx::remove_if_exists(&item.path())?;
            removed.push(name);
        }
    }
    for e in list(b)? {
        if e.status == Status::Partial {
            crate::fsx::remove_if_exists(&b.data_file(&e.id))?;
            removed.push(format!("{}.db.zst", e.id));
        }
    }
    if !removed.is_empty() {
        tracing::warn!(?removed, dir = %b.dir.display(), "removed leftovers of an interrupted backup");
    }
    Ok(removed)
}

/// Deletes every file of backup `id`, manifest first (so a crash midway
/// leaves a partial, not a "good" backup without data).
pub fn delete(b: &Backups, id: &str) -> Result<(), BackupError> {
    crate::fsx::remove_if_exists(&b.manifest_file(id))?;
    crate::fsx::remove_if_exists(&b.data_file(id))?;
    crate::fsx::remove_if_exists(&b.pin_marker(id))?;
    Ok(crate::fsx::remove_if_exists(&b.bad_marker(id))?)
}
