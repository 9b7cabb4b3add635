//! A small pool of reader threads, each owning a read-only connection. WAL
//! lets them read a consistent snapshot while the writer commits.

use rusqlite::Connection;
use std::path::Path;

use super::StoreError;

pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

pub(super) fn spawn(
    path: &Path,
    count: usize,
    rx: flume::Receiver<ReadJob>,
) -> Result<Vec<std::thread::JoinHandle<()>>, StoreError> {
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let conn = super::open_reader(path)?;
        let rx = rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("erlmcp-reader-{i}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&conn);
                }
            })
            .map_err(|e| StoreError::Invalid(format!("cannot start a reader thread: {e}")))?;
        handles.push(handle);
    }
    Ok(handles)
}
