//! Who uses a data directory, told by an `flock` on `erlmcp.db.lock`.
//! Every process with the store open (the daemon, `erlmcp stdio` clients)
//! holds it *shared*: SQLite serializes their writes. Replacing the
//! database needs it *exclusive*: an offline restore takes it (and is
//! refused while anyone uses the directory), an online restore upgrades the
//! daemon's own lock (refused while another process, say a stdio client,
//! still has the file open: it would keep writing to the replaced one).
//! The kernel drops the lock when the holder dies, kill -9 included, so a
//! crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "erlmcp.db.lock";

/// Held while alive; the lock is released when dropped (the fd closes).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock exclusively, waiting up to `wait` for previous holders
    /// (a store being closed in the same process, a restore finishing).
    pub fn acquire(data_dir: &Path, wait: Duration) -> Result<DataDirLock, StoreError> {
        Self::take(data_dir, wait, libc::LOCK_EX)
    }

    /// Takes the lock shared, as every process with the store open does.
    pub fn shared(data_dir: &Path, wait: Duration) -> Result<DataDirLock, StoreError> {
        Self::take(data_dir, wait, libc::LOCK_SH)
    }

    /// Turns a shared lock exclusive, without waiting: false if another
    /// process holds it too. [`DataDirLock::downgrade`] undoes it.
    pub fn try_upgrade(&self) -> bool {
        flock(&self.file, libc::LOCK_EX | libc::LOCK_NB)
    }

    pub fn downgrade(&self) {
        let _ = flock(&self.file, libc::LOCK_SH | libc::LOCK_NB);
    }

    fn take(data_dir: &Path, wait: Duration, mode: i32) -> Result<DataDirLock, StoreError> {
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::DataDir {
                path: path.display().to_string(),
                source,
            })?;
        let deadline = Instant::now() + wait;
        loop {
            if flock(&file, mode | libc::LOCK_NB) {
                return Ok(DataDirLock { file, path });
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Locked {
                    path: path.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn flock(file: &File, op: i32) -> bool {
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
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
