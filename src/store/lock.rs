//! One process owns a data directory at a time. The daemon holds an
//! exclusive `flock` on `erlmcp.db.lock` for as long as its store is open;
//! offline tools that replace the database (restore) take the same lock, so
//! they can tell "no daemon here" from "a daemon is running" without guessing
//! from pid files. The kernel drops the lock when the holder dies, kill -9
//! included, so a crash never leaves a stale lock behind.

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
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock, waiting up to `wait` for a previous holder (a store
    /// being closed in the same process, a restore finishing) to let go.
    pub fn acquire(data_dir: &Path, wait: Duration) -> Result<DataDirLock, StoreError> {
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
            if try_flock(&file) {
                return Ok(DataDirLock { _file: file, path });
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

fn try_flock(file: &File) -> bool {
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
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
}
