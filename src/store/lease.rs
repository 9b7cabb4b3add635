//! A process's lease on the work it runs: an `flock` on
//! `<data_dir>/leases/<id>.lock`, held for as long as the process lives.
//! Work recorded in the database under a lease id (a running task) belongs
//! to that process. The kernel drops the lock when the process dies, kill -9
//! included, so any other process can tell at once, and for sure, that such
//! work has nobody running it any more: no heartbeats, no timeouts. Several
//! processes share a data directory (a daemon, `erlmcp stdio` clients); each
//! has its own lease.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StoreError;
use crate::fsx::{self, Flock, LockMode};

/// The directory of lease files inside the data directory.
const DIR: &str = "leases";

/// Lease files older than this, and free, are deleted when a lease is
/// taken: the leftovers of processes that died with no task running. A
/// process only just starting has a younger file, so it is never touched.
const STALE: Duration = Duration::from_secs(600);

/// Held while alive; dropping it (or dying) gives the lease up.
#[derive(Debug)]
pub struct Lease {
    id: String,
    _lock: Flock,
}

fn path_of(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(DIR).join(format!("{id}.lock"))
}

impl Lease {
    /// Takes a fresh lease (128 random bits) in `data_dir`.
    pub fn take(data_dir: &Path) -> Result<Lease, StoreError> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        sweep(&dir);
        let id = hex::encode(rand::random::<[u8; 16]>());
        let lock = Flock::take(&path_of(data_dir, &id), LockMode::Exclusive, Duration::ZERO)?
            .ok_or_else(|| StoreError::Invalid(format!("lease {id} is already held")))?;
        Ok(Lease { id, _lock: lock })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// True when nobody holds lease `id` any more: its process ended (or it was
/// taken on another machine, as after a failover or a restore). Its file is
/// removed then. A lease held by this very process counts as held.
pub fn is_abandoned(data_dir: &Path, id: &str) -> bool {
    let path = path_of(data_dir, id);
    if !path.exists() {
        return true;
    }
    match Flock::take(&path, LockMode::Exclusive, Duration::ZERO) {
        Ok(Some(_free)) => {
            let _ = fsx::remove_if_exists(&path);
            true
        }
        // Held, or unreadable: never take work from a process that may live.
        Ok(None) | Err(_) => false,
    }
}

/// Deletes stale lease files nobody holds.
fn sweep(dir: &Path) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let old = item
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        let path = item.path();
        if old && let Ok(Some(_free)) = Flock::take(&path, LockMode::Exclusive, Duration::ZERO) {
            let _ = fsx::remove_if_exists(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Lease::take(dir.path()).unwrap();
        let id = lease.id().to_owned();
        assert!(!is_abandoned(dir.path(), &id));
        drop(lease);
        assert!(is_abandoned(dir.path(), &id));
        assert!(!path_of(dir.path(), &id).exists());
        assert!(is_abandoned(dir.path(), "never-taken"));
    }

    #[test]
    fn stale_free_lease_files_are_swept_and_held_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lease::take(dir.path()).unwrap();
        let long_ago = std::time::SystemTime::now() - 2 * STALE;
        let stale = path_of(dir.path(), "dead");
        let fresh = path_of(dir.path(), "starting");
        for p in [&stale, &fresh] {
            std::fs::write(p, b"").unwrap();
        }
        for p in [&stale, &path_of(dir.path(), held.id())] {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(long_ago).unwrap();
        }
        let _another = Lease::take(dir.path()).unwrap();
        assert!(!stale.exists(), "stale and free: swept");
        assert!(fresh.exists(), "too young to judge");
        assert!(!is_abandoned(dir.path(), held.id()), "old but held");
    }
}
