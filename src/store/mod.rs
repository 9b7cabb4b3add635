//! Durable state in one SQLite file: WAL, `synchronous=FULL` by default, one
//! writer thread committing in groups, a few reader threads.
//!
//! Domain code never holds a connection. It hands the store a closure:
//! [`Store::write`] runs it on the writer inside a transaction and answers
//! after the commit is durable; [`Store::read`] runs it on a reader.

mod error;
pub(crate) mod hook;
pub(crate) mod lock;
pub mod migrations;
mod readers;
pub(crate) mod swap;
mod writer;

pub mod audit;
pub(crate) mod events;
pub mod kv;
pub(crate) mod lease;
pub(crate) mod sessions;
pub(crate) mod tasks;
pub mod tokens;

pub use error::StoreError;
pub(crate) use writer::WriterStats;

use rusqlite::{Connection, OpenFlags, Transaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

use hook::CommitHook;

pub use crate::config::{StoreConfig, Synchronous};

/// A handle to the open database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// How long a batched write may wait for company.
pub const BATCH_DELAY: Duration = Duration::from_millis(20);
/// How many batched writes trigger a flush at once.
pub const BATCH_MAX: usize = 512;

type BatchedJob = Box<dyn FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send>;

#[derive(Default)]
struct Batch {
    jobs: Vec<BatchedJob>,
    scheduled: bool,
}

struct Inner {
    batch: std::sync::Mutex<Batch>,
    path: PathBuf,
    writer: flume::Sender<writer::Command>,
    /// Kept so a new writer thread can take over the same queue.
    writer_queue: flume::Receiver<writer::Command>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    synchronous: Synchronous,
    readers: flume::Sender<readers::ReadJob>,
    /// The reader connections, which a restore closes and re-opens.
    reader_pool: Arc<readers::Pool>,
    shared: Arc<writer::Shared>,
    /// Held while the store is open; released when the last handle drops.
    _lock: lock::DataDirLock,
}

/// Commands the writer's queue holds; past it, writers wait for room.
pub const WRITER_QUEUE: usize = 4096;

/// The database file name inside the data directory.
pub const DB_FILE: &str = "erlmcp.db";

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, refuses one
    /// newer than this binary, migrates, and starts the writer and readers.
    pub fn open(data_dir: &Path, opts: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        // A newer database is refused before anything is created beside it,
        // the lock file included.
        precheck_schema(&path)?;
        // A moment's grace: a store closed just before (restart in-process,
        // an offline restore finishing) may still be letting go.
        let lock = lock::DataDirLock::shared(data_dir, Duration::from_secs(2))?;
        let conn = open_writer(&path, opts.synchronous, true)?;

        let shared = Arc::new(writer::Shared {
            foreign_keys: true.into(),
            ..Default::default()
        });
        let (rtx, rrx) = flume::bounded(4096);
        let pool = readers::spawn(&path, opts.readers.max(1), rrx)?;
        let (wtx, wrx) = flume::bounded(WRITER_QUEUE);
        let reopen = writer::Reopen {
            path: path.clone(),
            sync: opts.synchronous,
            readers: pool.clone(),
        };
        let thread = writer::spawn(conn, wrx.clone(), shared.clone(), reopen)
            .map_err(|e| StoreError::Invalid(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                batch: Default::default(),
                path,
                writer: wtx,
                writer_queue: wrx,
                writer_thread: std::sync::Mutex::new(Some(thread)),
                synchronous: opts.synchronous,
                readers: rtx,
                reader_pool: pool,
                shared,
                _lock: lock,
            }),
        })
    }

    /// False once the writer thread has ended (a job panicked).
    pub fn writer_alive(&self) -> bool {
        self.inner
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Starts a new writer thread on the same queue after the old one died;
    /// queued writes are not lost. A no-op while the writer is alive.
    pub fn restart_writer(&self) -> Result<(), StoreError> {
        let mut slot = self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let fk = self.inner.shared.foreign_keys.load(Ordering::Relaxed);
        configure_writer(&conn, self.inner.synchronous, fk)?;
        let reopen = writer::Reopen {
            path: self.inner.path.clone(),
            sync: self.inner.synchronous,
            readers: self.inner.reader_pool.clone(),
        };
        let thread = writer::spawn(
            conn,
            self.inner.writer_queue.clone(),
            self.inner.shared.clone(),
            reopen,
        )
        .map_err(|e| StoreError::Invalid(format!("cannot start the writer thread: {e}")))?;
        *slot = Some(thread);
        tracing::warn!("store writer restarted");
        Ok(())
    }

    /// Fault injection for tests of supervision: the writer thread panics.
    #[cfg(feature = "fault-injection")]
    pub fn panic_writer_for_tests(&self) {
        let cmd = writer::Command::Exclusive(Box::new(|_| panic!("fault injection: writer panic")));
        let _ = self.inner.writer.try_send(cmd);
    }

    /// Fault injection for tests of the watchdog: the writer blocks forever.
    #[cfg(feature = "fault-injection")]
    pub fn hang_writer_for_tests(&self) {
        let cmd = writer::Command::Exclusive(Box::new(|_| {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }));
        let _ = self.inner.writer.try_send(cmd);
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.shared.stats
    }

    /// Commands waiting for the writer (of [`WRITER_QUEUE`] at most).
    pub fn writer_queue_len(&self) -> usize {
        self.inner.writer.len()
    }

    /// Installs (or removes) the hook called around every commit group.
    pub(crate) fn set_commit_hook(&self, hook: Option<Box<dyn CommitHook>>) {
        self.inner.shared.hook.store(hook.map(Arc::new));
    }

    /// Refuses (or allows again) every write but the privileged ones.
    pub(crate) fn set_read_only(&self, read_only: Option<&str>) {
        if let Some(why) = read_only {
            *self
                .inner
                .shared
                .read_only_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = why.to_owned();
        }
        self.inner
            .shared
            .read_only
            .store(read_only.is_some(), Ordering::Relaxed);
    }

    /// True while local writes are refused.
    pub(crate) fn is_read_only(&self) -> bool {
        self.inner.shared.read_only.load(Ordering::Relaxed)
    }

    /// True while the commit hook holds a group on purpose (waiting for
    /// someone else), which is not a hung writer.
    pub(crate) fn writer_waits_in_hook(&self) -> bool {
        self.inner.shared.in_hook.load(Ordering::Relaxed)
    }

    /// Turns foreign-key enforcement on or off, now and at every re-open.
    /// Off where changes arrive as changesets that already carry their
    /// cascades (a replication standby).
    pub(crate) async fn set_foreign_keys(&self, on: bool) -> Result<(), StoreError> {
        self.inner.shared.foreign_keys.store(on, Ordering::Relaxed);
        self.exclusive(move |conn| {
            conn.pragma_update(None, "foreign_keys", on)?;
            Ok(())
        })
        .await
    }

    /// Runs `f` in a write transaction; resolves once the commit is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        // Batched writes made before this one commit no later than it: an
        // acknowledged write vouches for everything logged before it.
        self.flush_batch();
        // For traces: the time queued and the commit, as a child of the
        // caller's span (disabled, and free, while traces are off).
        let span = if crate::logging::traces::in_trace() {
            tracing::info_span!(
                target: crate::logging::traces::TARGET,
                "store.write",
                store.queue_wait_us = tracing::field::Empty,
                store.group_jobs = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let (mut job, rx) = writer::job(f);
        job.trace = writer::Trace::of(&span);
        self.submit(job, rx).instrument(span).await
    }

    /// Queues `job` on the writer and waits for its outcome.
    async fn submit<T>(
        &self,
        job: writer::Job,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.inner
            .writer
            .send_async(writer::Command::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] that runs even while the store is read-only: for
    /// changes that come from the primary.
    pub(crate) async fn write_privileged<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (mut job, rx) = writer::job(f);
        job.privileged = true;
        self.submit(job, rx).await
    }

    /// Queues a write nobody waits for (event log, audit). It is committed
    /// with the next group; a failure is logged.
    pub async fn write_detached<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        let job = writer::detached(what, f);
        if self
            .inner
            .writer
            .send_async(writer::Command::Job(job))
            .await
            .is_err()
        {
            tracing::warn!(what, "store closed; background write dropped");
        }
    }

    /// Buffers a small write nobody waits for (an SSE event, an audit row)
    /// and commits it with others: at most [`BATCH_DELAY`] later, or at
    /// once when [`BATCH_MAX`] are waiting. One job and one commit carry
    /// the lot, instead of one per row. Callable from synchronous code
    /// inside the runtime. A crash loses at most the last batch.
    pub fn write_batched<F>(&self, f: F)
    where
        F: FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        let full = {
            let mut b = self.inner.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.jobs.push(Box::new(f));
            if b.jobs.len() >= BATCH_MAX {
                true
            } else {
                if !b.scheduled {
                    b.scheduled = true;
                    let store = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(BATCH_DELAY).await;
                        store.flush_batch();
                    });
                }
                false
            }
        };
        if full {
            self.flush_batch();
        }
    }

    /// Queues the buffered small writes as one job.
    pub fn flush_batch(&self) {
        let jobs = {
            let mut b = self.inner.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.scheduled = false;
            std::mem::take(&mut b.jobs)
        };
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len();
        let cmd = writer::Command::Job(writer::detached("batched writes", move |tx| {
            let mut failed = 0;
            for job in jobs {
                if job(tx).is_err() {
                    failed += 1;
                }
            }
            if failed > 0 {
                tracing::warn!(failed, of = n, "some batched writes failed");
            }
            Ok(())
        }));
        match self.inner.writer.try_send(cmd) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(cmd)) => {
                let tx = self.inner.writer.clone();
                tokio::spawn(async move {
                    let _ = tx.send_async(cmd).await;
                });
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                tracing::warn!(rows = n, "store closed; batched writes dropped");
            }
        }
    }

    /// Runs `f` on the writer's connection outside any transaction, between
    /// groups: checkpoints, online backups.
    pub async fn exclusive<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cmd = writer::Command::Exclusive(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        self.inner
            .writer
            .send_async(cmd)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Puts `new_file` (a complete, fsynced, verified database in the data
    /// directory) in place of the open database, between two commit
    /// groups: checkpoint, close the writer and the readers, swap the file
    /// (see [`swap`]), re-open (migrating an older schema). Writes and reads
    /// queued meanwhile wait and then run against the new file. Returns
    /// where the old database was kept.
    pub async fn replace_with(
        &self,
        new_file: &Path,
        stamp: &str,
    ) -> Result<Option<PathBuf>, StoreError> {
        // Another process with the file open (a stdio client) would keep
        // writing to the old one: only swap while this is the only user.
        if !self.inner._lock.try_upgrade() {
            return Err(StoreError::Locked {
                path: self.inner._lock.path().display().to_string(),
            });
        }
        let out = self.replace_exclusively(new_file, stamp).await;
        self.inner._lock.downgrade();
        out
    }

    async fn replace_exclusively(
        &self,
        new_file: &Path,
        stamp: &str,
    ) -> Result<Option<PathBuf>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let cmd = writer::Command::Replace(writer::Replace {
            new_file: new_file.to_owned(),
            stamp: stamp.to_owned(),
            reply: tx,
        });
        self.inner
            .writer
            .send_async(cmd)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: readers::ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.inner
            .readers
            .send_async(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Returns once every write the writer had started has ended: what is
    /// decided after this (a role, a read-only flag) holds for all later
    /// writes. A privileged no-op, queued behind them.
    pub(crate) async fn fence(&self) -> Result<(), StoreError> {
        self.write_privileged(|_| Ok(())).await
    }

    /// Proves the writer is alive: a no-op job must commit within `timeout`.
    pub async fn ping_writer(&self, timeout: Duration) -> bool {
        matches!(
            // Privileged: it writes nothing, and a read-only store's writer
            // is as alive as any.
            tokio::time::timeout(timeout, self.write_privileged(|_| Ok(()))).await,
            Ok(Ok(()))
        )
    }

    /// Moves the WAL into the main file and truncates it (after committing
    /// any batched writes).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.flush_batch();
        self.exclusive(|conn| {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await
    }
}

/// Opens the write connection: sets WAL and the pragmas, brings the schema
/// to this binary's (up, or down with recorded steps; a newer schema
/// without them is refused untouched).
fn open_writer(
    path: &Path,
    sync: Synchronous,
    foreign_keys: bool,
) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure_writer(&conn, sync, foreign_keys)?;
    let shown = path.display().to_string();
    match migrations::migrate(&mut conn, &shown, crate::release::VERSION)? {
        migrations::Plan::Current => {}
        migrations::Plan::Up { from, to } => {
            tracing::info!(from, to, "database schema migrated up")
        }
        migrations::Plan::Down { from, to } => tracing::warn!(
            from,
            to,
            "database schema taken back with the down steps the newer release recorded"
        ),
    }
    Ok(conn)
}

/// A read-only look at an existing file's schema version; any other
/// problem is left to [`open_writer`], which checks again.
fn precheck_schema(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        return Ok(());
    }
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Ok(());
    };
    match migrations::plan(&conn, &path.display().to_string()) {
        Err(e @ StoreError::SchemaTooNew { .. }) => Err(e),
        _ => Ok(()),
    }
}

fn configure_writer(
    conn: &Connection,
    sync: Synchronous,
    foreign_keys: bool,
) -> Result<(), StoreError> {
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    let fk = if foreign_keys { "ON" } else { "OFF" };
    // A 64 MiB page cache and memory-mapped reads keep the writer's working
    // set (indexes of the event log, the graph) off pread().
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA foreign_keys = {fk};
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 268435456;"
    ))?;
    Ok(())
}

pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(
        "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;
         PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456;",
    )?;
    // A reader must never checkpoint or delete the WAL on close: after a
    // restore swapped the file, that WAL name belongs to the new database.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    Ok(conn)
}
