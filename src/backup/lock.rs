//! The backup directory's lock: one create, prune or restore at a time per
//! directory, across processes. Released by the kernel if the holder dies,
//! which is how the next run knows dot-files are leftovers.

use std::path::Path;
use std::time::Duration;

use super::BackupError;
use crate::fsx::{Flock, LockMode};

pub struct DirLock(#[allow(dead_code)] Flock);

impl DirLock {
    /// Creates the directory if missing and takes the lock without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, BackupError> {
        std::fs::create_dir_all(dir).map_err(|source| BackupError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        match Flock::take(&dir.join(".lock"), LockMode::Exclusive, Duration::ZERO) {
            Ok(Some(l)) => Ok(DirLock(l)),
            Ok(None) => Err(BackupError::Busy {
                path: dir.display().to_string(),
            }),
            Err(e) => Err(BackupError::Dir {
                path: dir.display().to_string(),
                source: e.source,
            }),
        }
    }
}
