//! A small pool of reader threads, each owning a read-only connection. WAL
//! lets them read a consistent snapshot while the writer commits.
//!
//! Each connection sits in a slot behind a mutex so that a restore can
//! close them all (waiting for reads in flight), swap the file, and open
//! them again; reads queued meanwhile wait for the slot.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;

pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

pub(super) struct Pool {
    path: PathBuf,
    slots: Vec<Mutex<Option<Connection>>>,
}

/// The pool with every connection closed; dropping it lets reads go on.
pub(super) struct Paused<'a> {
    pool: &'a Pool,
    guards: Vec<MutexGuard<'a, Option<Connection>>>,
}

impl Pool {
    /// Closes every reader connection once its current read is done.
    pub(super) fn pause(&self) -> Paused<'_> {
        let guards = self
            .slots
            .iter()
            .map(|s| {
                let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                *g = None;
                g
            })
            .collect();
        Paused { pool: self, guards }
    }
}

impl Paused<'_> {
    /// Opens the connections again (on whatever file is now at the path).
    pub(super) fn reopen(mut self) -> Result<(), StoreError> {
        for g in &mut self.guards {
            **g = Some(super::open_reader(&self.pool.path)?);
        }
        Ok(())
    }
}

pub(super) fn spawn(
    path: &Path,
    count: usize,
    rx: flume::Receiver<ReadJob>,
) -> Result<Arc<Pool>, StoreError> {
    let mut slots = Vec::with_capacity(count);
    for _ in 0..count {
        slots.push(Mutex::new(Some(super::open_reader(path)?)));
    }
    let pool = Arc::new(Pool {
        path: path.to_owned(),
        slots,
    });
    for i in 0..count {
        let rx = rx.clone();
        let pool = pool.clone();
        std::thread::Builder::new()
            .name(format!("erlmcp-reader-{i}"))
            .spawn(move || serve(&pool, i, rx))
            .map_err(|e| StoreError::Invalid(format!("cannot start a reader thread: {e}")))?;
    }
    Ok(pool)
}

fn serve(pool: &Pool, i: usize, rx: flume::Receiver<ReadJob>) {
    while let Ok(job) = rx.recv() {
        let mut slot = pool.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            // A reopen after a swap failed; try again for this read.
            match super::open_reader(&pool.path) {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "a reader cannot open the database");
                    continue; // dropping the job tells its caller the store is closed
                }
            }
        }
        if let Some(conn) = slot.as_ref() {
            job(conn);
        }
    }
}
