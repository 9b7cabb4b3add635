//! Who uses a data directory, told by an `flock` on `erlmcp.db.lock`.
//! Every process with the store open (the daemon, `erlmcp stdio` clients)
//! holds it *shared*: SQLite serializes their writes. Replacing the
//! database needs it *exclusive*: an offline restore takes it (and is
//! refused while anyone uses the directory), an online restore upgrades the
//! daemon's own lock (refused while another process, say a stdio client,
//! still has the file open: it would keep writing to the replaced one).
//! The kernel drops the lock when the holder dies, kill -9 included, so a
//! crash never leaves a stale lock behind.

use std::path::Path;
use std::time::Duration;

use super::StoreError;
use crate::fsx::{Flock, LockMode};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "erlmcp.db.lock";

/// Held while alive; the lock is released when dropped (the fd closes).
#[derive(Debug)]
pub struct DataDirLock(Flock);

impl DataDirLock {
    /// Takes the lock exclusively, waiting up to `wait` for previous holders
    /// (a store being closed in the same process, a restore finishing).
    pub fn acquire(data_dir: &Path, wait: Duration) -> Result<DataDirLock, StoreError> {
        Self::take(data_dir, wait, LockMode::Exclusive)
    }

    /// Takes the lock shared, as every process with the store open does.
    pub fn shared(data_dir: &Path, wait: Duration) -> Result<DataDirLock, StoreError> {
        Self::take(data_dir, wait, LockMode::Shared)
    }

    /// Turns a shared lock exclusive, without waiting: false if another
    /// process holds it too. [`DataDirLock::downgrade`] undoes it.
    pub fn try_upgrade(&self) -> bool {
        self.0.try_set(LockMode::Exclusive)
    }

    pub fn downgrade(&self) {
        let _ = self.0.try_set(LockMode::Shared);
    }

    fn take(data_dir: &Path, wait: Duration, mode: LockMode) -> Result<DataDirLock, StoreError> {
        let path = data_dir.join(LOCK_FILE);
        match Flock::take(&path, mode, wait) {
            Ok(Some(l)) => Ok(DataDirLock(l)),
            Ok(None) => Err(StoreError::Locked {
                path: path.display().to_string(),
            }),
            Err(e) => Err(StoreError::DataDir {
                path: path.display().to_string(),
                source: e.source,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let err = DataDirLock::acquire(dir.path(), Duration::from_millis(60)).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn users_share_and_a_replacement_needs_everyone_gone() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = DataDirLock::shared(dir.path(), Duration::ZERO).unwrap();
        let stdio = DataDirLock::shared(dir.path(), Duration::ZERO).unwrap();
        assert!(
            DataDirLock::acquire(dir.path(), Duration::ZERO).is_err(),
            "offline restore refused"
        );
        assert!(
            !daemon.try_upgrade(),
            "online restore refused while a stdio client is there"
        );
        drop(stdio);
        assert!(daemon.try_upgrade());
        assert!(
            DataDirLock::shared(dir.path(), Duration::ZERO).is_err(),
            "nobody joins during a swap"
        );
        daemon.downgrade();
        DataDirLock::shared(dir.path(), Duration::ZERO).unwrap();
    }
}
