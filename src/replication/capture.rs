//! The commit hooks that record changes in the log: [`Capture`] in the
//! daemon (with the sync gate), [`FileCapture`] in `erlmcp stdio`
//! processes sharing the data directory (they follow the daemon's role
//! from its state file and append without waiting: their writes reach the
//! standby asynchronously, with the daemon's next shipment).

use rusqlite::Transaction;
use std::path::PathBuf;
use std::sync::Arc;

use super::frame::Role;
use super::gate::Gate;
use super::{log, state};
use crate::store::StoreError;
use crate::store::hook::{CommitHook, Unrecorded};

pub(crate) struct Capture {
    pub(crate) gate: Arc<Gate>,
    pub(crate) unrecorded: Unrecorded,
}

impl CommitHook for Capture {
    fn recording(&self) -> Option<Unrecorded> {
        self.gate.is_primary().then(|| self.unrecorded.clone())
    }

    fn before_commit(&self, tx: &Transaction<'_>, changes: Vec<u8>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let entry = log::append(tx, self.gate.epoch(), changes)?;
        self.gate.hold(&entry)
    }

    fn after_commit(&self, committed: bool) {
        self.gate.after_commit(committed);
    }
}

pub(crate) struct FileCapture {
    pub(crate) data_dir: PathBuf,
    pub(crate) unrecorded: Unrecorded,
}

impl CommitHook for FileCapture {
    fn recording(&self) -> Option<Unrecorded> {
        // Always record: a change made while the node is a standby must be
        // refused, and only a recording session shows there was one.
        Some(self.unrecorded.clone())
    }

    fn before_commit(&self, tx: &Transaction<'_>, changes: Vec<u8>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let node = state::load(&self.data_dir)
            .map_err(|e| StoreError::Invalid(e.to_string()))?
            .ok_or_else(|| {
                StoreError::ReadOnly(
                    "replication is enabled but the daemon never started here: no role yet".into(),
                )
            })?;
        if node.role != Role::Primary {
            return Err(StoreError::ReadOnly(
                "this node is a standby: write through the primary".into(),
            ));
        }
        log::append(tx, node.epoch, changes)?;
        Ok(())
    }

    fn after_commit(&self, _committed: bool) {}
}
