//! Putting another database file in place of `erlmcp.db`, crash-safely.
//!
//! The caller has closed every connection to the old file (the writer after
//! a `TRUNCATE` checkpoint, the readers) and hands over a complete, fsynced,
//! verified file in the same directory. Then:
//!
//! 1. the old WAL must be empty (its frames belong to the old file; a WAL
//!    left next to the new file would be replayed into it — a mix), so it
//!    and the shared-memory index are removed;
//! 2. the old file gets a second name, `erlmcp.db.pre-restore-<stamp>`
//!    (a hard link, so `erlmcp.db` exists at every instant);
//! 3. `rename(new, erlmcp.db)`, then fsync of the directory. The rename is
//!    the commit point: killed before it, the old database is in place;
//!    after it, the new one.

use std::path::{Path, PathBuf};

use super::StoreError;
use crate::fsx;

/// The `-wal` / `-shm` companions of a database path.
pub fn companion(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Swaps `new_file` in for `db`; returns where the old database was kept
/// (`None` when there was none).
pub fn swap_in(db: &Path, new_file: &Path, stamp: &str) -> Result<Option<PathBuf>, StoreError> {
    let dir = db
        .parent()
        .ok_or_else(|| StoreError::Invalid(format!("{} has no directory", db.display())))?;
    drop_empty_wal(db)?;
    let kept = keep_old(db, stamp)?;
    std::fs::rename(new_file, db)
        .map_err(|e| io(format!("renaming {} into place", new_file.display()), e))?;
    fsx::sync_dir(dir)?;
    Ok(kept)
}

/// Refuses to go on when the WAL still holds frames; removes it otherwise.
fn drop_empty_wal(db: &Path) -> Result<(), StoreError> {
    let wal = companion(db, "-wal");
    match std::fs::metadata(&wal) {
        Ok(m) if m.len() > 0 => {
            return Err(StoreError::Invalid(format!(
                "{} still holds {} bytes after the checkpoint (another process has the database open?); \
                 nothing was changed",
                wal.display(),
                m.len()
            )));
        }
        Ok(_) => fsx::remove_if_exists(&wal)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("reading {}", wal.display()), e)),
    }
    Ok(fsx::remove_if_exists(&companion(db, "-shm"))?)
}

fn keep_old(db: &Path, stamp: &str) -> Result<Option<PathBuf>, StoreError> {
    if !db.exists() {
        return Ok(None);
    }
    let kept = companion(db, &format!(".pre-restore-{stamp}"));
    fsx::remove_if_exists(&kept)?;
    std::fs::hard_link(db, &kept)
        .map_err(|e| io(format!("keeping the old database as {}", kept.display()), e))?;
    Ok(Some(kept))
}

fn io(what: String, e: std::io::Error) -> StoreError {
    StoreError::Io { what, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_file_is_kept_and_the_new_one_takes_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("erlmcp.db");
        std::fs::write(&db, b"old").unwrap();
        std::fs::write(companion(&db, "-wal"), b"").unwrap();
        let new = dir.path().join(".new.tmp");
        std::fs::write(&new, b"new").unwrap();
        let kept = swap_in(&db, &new, "x").unwrap().unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"new");
        assert_eq!(std::fs::read(&kept).unwrap(), b"old");
        assert!(!companion(&db, "-wal").exists());
        assert!(!new.exists());
    }

    #[test]
    fn a_wal_with_frames_stops_the_swap_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("erlmcp.db");
        std::fs::write(&db, b"old").unwrap();
        std::fs::write(companion(&db, "-wal"), b"frames").unwrap();
        let new = dir.path().join(".new.tmp");
        std::fs::write(&new, b"new").unwrap();
        assert!(swap_in(&db, &new, "x").is_err());
        assert_eq!(std::fs::read(&db).unwrap(), b"old");
    }
}
