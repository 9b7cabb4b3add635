//! What an upper layer may do around each commit group of the writer,
//! without the store knowing why: record the group's changes (the SQLite
//! session extension), write something of its own in the same transaction,
//! hold the commit until someone else agrees, refuse it. Replication is the
//! one user: it appends each group's changeset to its log and, in sync
//! mode, waits for the standby before the commit.

use rusqlite::Transaction;
use std::collections::HashSet;
use std::sync::Arc;

use super::StoreError;

/// Tables whose changes are never recorded.
pub type Unrecorded = Arc<HashSet<String>>;

pub trait CommitHook: Send + Sync {
    /// Whether to record the next group's changes, and which tables to
    /// leave out; `None`: record nothing (the hook is not called).
    fn recording(&self) -> Option<Unrecorded>;

    /// The group's jobs ran in `tx`; `changes` is their changeset (empty
    /// when no recorded table changed). Runs on the writer thread before
    /// COMMIT, may write to `tx` and may block; an error rolls the whole
    /// group back and every job in it fails with that error.
    fn before_commit(&self, tx: &Transaction<'_>, changes: Vec<u8>) -> Result<(), StoreError>;

    /// How the group ended after `before_commit` (false when it refused
    /// the group, or the commit failed).
    fn after_commit(&self, committed: bool);
}
