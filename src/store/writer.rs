//! The one writer: a thread that owns the read-write connection and commits
//! queued jobs in groups. Each job runs inside its own savepoint, so a job
//! that fails rolls back alone; the group shares one commit (one fsync), and
//! a job's caller hears back only after that commit is durable.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::readers::Pool;
use super::{StoreError, Synchronous};

/// How many queued jobs one commit may carry.
const MAX_GROUP: usize = 512;

/// Tells a job's caller how its write ended once the group's commit is known.
pub(super) type Finisher = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A unit of work for the writer. Returns whether it failed (so its savepoint
/// is rolled back) and what to do once the commit outcome is known. Given no
/// transaction (one could not be begun), it must not run, only fail.
pub(super) type Job = Box<dyn FnOnce(Option<&Transaction<'_>>) -> (bool, Finisher) + Send>;

pub(super) enum Command {
    Job(Job),
    /// Run outside any transaction (checkpoint, backup, vacuum); the closure
    /// reports back itself.
    Exclusive(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Put another database file in place of ours (restore).
    Replace(Replace),
}

pub(super) struct Replace {
    /// A complete, fsynced, verified database in the same directory.
    pub new_file: PathBuf,
    /// Names the kept pre-restore copy.
    pub stamp: String,
    pub reply: oneshot::Sender<Result<Option<PathBuf>, StoreError>>,
}

/// What the writer needs to close and re-open the database.
pub(super) struct Reopen {
    pub path: PathBuf,
    pub sync: Synchronous,
    pub readers: Arc<Pool>,
}

/// Writer progress, exported as metrics.
#[derive(Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub jobs: AtomicU64,
    pub failed_commits: AtomicU64,
}

pub(super) fn spawn(
    mut conn: Connection,
    rx: flume::Receiver<Command>,
    stats: Arc<WriterStats>,
    reopen: Reopen,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("erlmcp-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = Vec::new();
                let mut after = None;
                match first {
                    Command::Job(j) => group.push(j),
                    other => after = Some(other),
                }
                while after.is_none() && group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Command::Job(j)) => group.push(j),
                        Ok(other) => after = Some(other),
                        Err(_) => break,
                    }
                }
                if !group.is_empty() {
                    commit_group(&mut conn, group, &stats);
                }
                match after {
                    Some(Command::Exclusive(f)) => f(&mut conn),
                    Some(Command::Replace(r)) => {
                        let out = replace(&mut conn, &reopen, &r.new_file, &r.stamp);
                        let _ = r.reply.send(out);
                    }
                    Some(Command::Job(_)) | None => {}
                }
            }
            // The queue is closed: leave a clean database behind.
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        })
}

/// Swaps the database file between two groups. Jobs queued meanwhile wait
/// in the channel; reads wait for their slot. On any failure before the
/// rename the old file is re-opened; after it, the old file is put back.
fn replace(
    conn: &mut Connection,
    ctx: &Reopen,
    new_file: &Path,
    stamp: &str,
) -> Result<Option<PathBuf>, StoreError> {
    let paused = ctx.readers.pause();
    checkpoint_truncate(conn)?;
    // Close ours: as the last connection it also removes the (empty) WAL.
    let old = std::mem::replace(conn, Connection::open_in_memory()?);
    if let Err((_, e)) = old.close() {
        *conn = super::open_writer(&ctx.path, ctx.sync)?;
        return Err(e.into());
    }
    let swapped = super::swap::swap_in(&ctx.path, new_file, stamp);
    let kept = match swapped {
        Ok(kept) => kept,
        Err(e) => {
            *conn = super::open_writer(&ctx.path, ctx.sync)?;
            let _ = paused.reopen();
            return Err(e);
        }
    };
    match super::open_writer(&ctx.path, ctx.sync) {
        Ok(c) => *conn = c,
        Err(e) => {
            tracing::error!(error = %e, "the restored database does not open; putting the old one back");
            if let Some(k) = &kept {
                std::fs::rename(k, &ctx.path).map_err(|source| StoreError::Io {
                    what: "putting the old database back".into(),
                    source,
                })?;
            }
            *conn = super::open_writer(&ctx.path, ctx.sync)?;
            let _ = paused.reopen();
            return Err(e);
        }
    }
    if let Err(e) = paused.reopen() {
        tracing::warn!(error = %e, "readers will re-open on their next read");
    }
    Ok(kept)
}

/// Moves every WAL frame into the main file; fails when a reader elsewhere
/// keeps part of the WAL alive.
fn checkpoint_truncate(conn: &Connection) -> Result<(), StoreError> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(StoreError::Invalid(
            "the WAL could not be checkpointed: another process is reading the database".into(),
        ));
    }
    Ok(())
}

fn commit_group(conn: &mut Connection, group: Vec<Job>, stats: &WriterStats) {
    let n = group.len() as u64;
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = StoreError::CommitFailed(e.to_string());
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            for job in group {
                let (_, fin) = job(None);
                fin(Err(&err));
            }
            return;
        }
    };
    let mut finishers = Vec::with_capacity(group.len());
    // A lone job needs no savepoint: if it fails, the whole transaction is
    // rolled back. (Savepoints are not free: FTS5 flushes its pending index
    // data at each one.)
    let alone = group.len() == 1;
    let mut rollback_all = false;
    for job in group {
        let sp_ok = !alone && tx.execute_batch("SAVEPOINT job").is_ok();
        let (failed, fin) = job(Some(&tx));
        if sp_ok {
            let end = if failed {
                "ROLLBACK TO job; RELEASE job"
            } else {
                "RELEASE job"
            };
            let _ = tx.execute_batch(end);
        }
        rollback_all |= alone && failed;
        finishers.push(fin);
    }
    if rollback_all {
        // The job's own error is what its caller hears; nothing was kept.
        let _ = tx.rollback();
        for f in finishers {
            f(Ok(()));
        }
        return;
    }
    match tx.commit() {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.jobs.fetch_add(n, Ordering::Relaxed);
            for f in finishers {
                f(Ok(()));
            }
        }
        Err(e) => {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, jobs = n, "commit failed; the batch was rolled back");
            let err = StoreError::CommitFailed(e.to_string());
            for f in finishers {
                f(Err(&err));
            }
        }
    }
}

/// Builds a job that runs `f` and reports its value after the commit.
pub(super) fn job<T, F>(f: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |t| {
        let out = match t {
            Some(t) => f(t),
            None => Err(StoreError::CommitFailed(
                "no transaction could be begun".into(),
            )),
        };
        let failed = out.is_err();
        let fin: Finisher = Box::new(move |commit| {
            let _ = tx.send(match commit {
                Ok(()) => out,
                Err(e) => Err(StoreError::CommitFailed(e.to_string())),
            });
        });
        (failed, fin)
    });
    (job, rx)
}

/// Builds a job nobody waits for; failures are logged.
pub(super) fn detached<F>(what: &'static str, f: F) -> Job
where
    F: FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
{
    Box::new(move |t| {
        let started = Instant::now();
        let out = match t {
            Some(t) => f(t),
            None => Err(StoreError::CommitFailed(
                "no transaction could be begun".into(),
            )),
        };
        let failed = out.is_err();
        if let Err(e) = &out {
            tracing::warn!(error = %e, what, "background write failed");
        }
        let fin: Finisher = Box::new(move |commit| {
            if let Err(e) = commit {
                tracing::warn!(error = %e, what, "background write lost in a failed commit");
            }
            if started.elapsed() > Duration::from_secs(1) {
                tracing::debug!(what, "slow background write");
            }
        });
        (failed, fin)
    })
}
