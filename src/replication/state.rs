//! This node's own replication state: its role, the highest epoch it
//! knows, and whether a standby was in sync (primary) or it is in sync
//! (standby). Kept in `<data_dir>/replication.state`, outside the database:
//! a snapshot from the peer replaces the database, never this.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::frame::Role;
use crate::config::InitialRole;
use crate::fsx::{self, FsError};

/// The file's name in the data directory.
pub(crate) const FILE: &str = "replication.state";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeState {
    pub(crate) role: Role,
    /// Raised by every promotion; a node that learns of a higher one stops
    /// writing.
    pub(crate) epoch: u64,
    /// Primary: a standby has been in sync with it, so losing the standby
    /// blocks writes (block mode) instead of going on alone.
    pub(crate) sync_standby: bool,
    /// Standby: it has applied every write the primary of `epoch`
    /// acknowledged, so it may be promoted.
    pub(crate) in_sync: bool,
    /// A primary that stepped down by itself (keepalived's fault hook, an
    /// operator) while a standby was in sync, and has followed no other
    /// primary since: promoted again, it keeps waiting for that standby
    /// instead of writing alone.
    #[serde(default)]
    pub(crate) resume_sync: bool,
}

impl NodeState {
    fn initial(role: InitialRole) -> NodeState {
        NodeState {
            role: match role {
                InitialRole::Primary => Role::Primary,
                InitialRole::Standby => Role::Standby,
            },
            epoch: 1,
            sync_standby: false,
            in_sync: false,
            resume_sync: false,
        }
    }
}

pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The saved state, or the initial one (saved) at the first start.
pub(crate) fn load_or_init(data_dir: &Path, initial: InitialRole) -> Result<NodeState, StateError> {
    match load(data_dir)? {
        Some(s) => Ok(s),
        None => {
            let s = NodeState::initial(initial);
            save(data_dir, &s)?;
            Ok(s)
        }
    }
}

/// The saved state, if any.
pub(crate) fn load(data_dir: &Path) -> Result<Option<NodeState>, StateError> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: p.display().to_string(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Fs(FsError::new("reading", &p, e))),
    }
}

/// Saves atomically and durably: a crash leaves the old state or the new.
pub(crate) fn save(data_dir: &Path, s: &NodeState) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(s).expect("the node state serializes");
    fsx::write_atomic(
        &path(data_dir),
        &data_dir.join(".replication.state.tmp"),
        &bytes,
    )?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "the replication state {path} is unreadable ({reason}); fix or remove it (the node then \
         starts with replication.initial_role)"
    )]
    Corrupt { path: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_saves_the_initial_role_and_later_starts_keep_theirs() {
        let d = tempfile::tempdir().unwrap();
        let s = load_or_init(d.path(), InitialRole::Primary).unwrap();
        assert_eq!((s.role, s.epoch), (Role::Primary, 1));
        let mut later = s.clone();
        later.role = Role::Standby;
        later.epoch = 4;
        save(d.path(), &later).unwrap();
        assert_eq!(load_or_init(d.path(), InitialRole::Primary).unwrap(), later);
        std::fs::write(path(d.path()), b"{").unwrap();
        assert!(matches!(load(d.path()), Err(StateError::Corrupt { .. })));
    }
}
