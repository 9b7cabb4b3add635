//! File-system steps that must survive a crash at any instant, and
//! advisory locks. Each error names the step and the path, so callers can
//! report it without adding context of their own.
//!
//! A file becomes durable in three moves: write it under a temporary name
//! and fsync it, rename it into place, fsync the directory (the rename is
//! only durable once the directory is). Readers see the old file or the new
//! one, never a mix.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// A file-system step that failed.
#[derive(Debug, Error)]
#[error("{what} {}: {source}", .path.display())]
pub struct FsError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    pub(crate) fn new(what: &'static str, path: &Path, source: std::io::Error) -> FsError {
        FsError {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// True when the disk (or the quota) is full.
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

/// The size of the file system holding a path, and what an unprivileged
/// writer may still use of it (`statvfs`: `f_bavail`, as `df` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    pub(crate) size_bytes: u64,
    pub(crate) avail_bytes: u64,
}

pub(crate) fn space(path: &Path) -> Result<Space, FsError> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| FsError::new("measuring free space of", path, e.into()))?;
    Ok(Space {
        size_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        avail_bytes: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// Writes `bytes` to `path` atomically through `tmp` (same directory).
pub(crate) fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let out = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = out {
        let _ = std::fs::remove_file(tmp);
        return Err(FsError::new("writing", tmp, e));
    }
    publish(tmp, path)
}

/// Renames a complete, fsynced `tmp` to `path` and makes the rename durable.
pub(crate) fn publish(tmp: &Path, path: &Path) -> Result<(), FsError> {
    std::fs::rename(tmp, path).map_err(|e| FsError::new("renaming into", path, e))?;
    sync_parent(path)
}

/// Makes renames and unlinks in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("syncing the directory", dir, e))
}

/// [`sync_dir`] of the directory holding `path`.
pub(crate) fn sync_parent(path: &Path) -> Result<(), FsError> {
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Removes a file; one that is not there is not an error.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), FsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("removing", path, e)),
    }
}

/// How a [`Flock`] is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

impl LockMode {
    fn op(self) -> i32 {
        match self {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        }
    }
}

/// An `flock` on a file, held while this value lives. The kernel drops it
/// when the holder dies, kill -9 included, so a crash never leaves a stale
/// lock behind.
#[derive(Debug)]
pub(crate) struct Flock {
    file: File,
    path: PathBuf,
}

impl Flock {
    /// Opens (creating) `path` and takes the lock in `mode`, retrying for
    /// up to `wait`; `Ok(None)` when someone else still holds it then.
    pub(crate) fn take(
        path: &Path,
        mode: LockMode,
        wait: Duration,
    ) -> Result<Option<Flock>, FsError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FsError::new("opening the lock file", path, e))?;
        let lock = Flock {
            file,
            path: path.to_owned(),
        };
        let deadline = Instant::now() + wait;
        loop {
            if lock.try_set(mode) {
                return Ok(Some(lock));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Changes the mode without waiting: false if another holder is in the way.
    pub(crate) fn try_set(&self, mode: LockMode) -> bool {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        unsafe { libc::flock(self.file.as_raw_fd(), mode.op() | libc::LOCK_NB) == 0 }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, &dir.path().join(".f.tmp"), b"one").unwrap();
        write_atomic(&p, &dir.path().join(".f.tmp"), b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join(".f.tmp").exists());
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
    }

    #[test]
    fn an_exclusive_lock_keeps_others_out_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = Flock::take(&p, LockMode::Exclusive, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert!(
            Flock::take(&p, LockMode::Shared, Duration::from_millis(30))
                .unwrap()
                .is_none()
        );
        drop(a);
        let b = Flock::take(&p, LockMode::Shared, Duration::ZERO)
            .unwrap()
            .unwrap();
        let c = Flock::take(&p, LockMode::Shared, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert!(!b.try_set(LockMode::Exclusive), "c shares it");
        drop(c);
        assert!(b.try_set(LockMode::Exclusive));
    }
}
