//! File plumbing shared by backup and restore: atomic writes and the
//! backup directory's lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::BackupError;

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync,
/// rename, fsync of the directory. Readers see the old file or the new one.
pub fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let out = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = out {
        let _ = std::fs::remove_file(tmp);
        return Err(BackupError::io("writing", tmp, e));
    }
    publish(tmp, path)
}

/// Renames a complete, fsynced `tmp` to `path` and makes it durable.
pub fn publish(tmp: &Path, path: &Path) -> Result<(), BackupError> {
    std::fs::rename(tmp, path).map_err(|e| BackupError::io("renaming", path, e))?;
    sync_parent(path)
}

pub fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BackupError::io("syncing the directory", dir, e))
}

pub fn remove_if_exists(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackupError::io("removing", path, e)),
    }
}

/// The backup directory's lock: one create / prune / restore at a time, per
/// directory, across processes. Released by the kernel if the holder dies,
/// which is how the next run knows dot-files are leftovers.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates the directory if missing and takes the lock without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, BackupError> {
        let dir_err = |source| BackupError::Dir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(dir_err)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(BackupError::Busy {
                path: dir.display().to_string(),
            });
        }
        Ok(DirLock { _file: file })
    }
}
