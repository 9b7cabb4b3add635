//! The one writer: a thread that owns the read-write connection and commits
//! queued jobs in groups. Each job runs inside its own savepoint, so a job
//! that fails rolls back alone; the group shares one commit (one fsync), and
//! a job's caller hears back only after that commit is durable.

use arc_swap::ArcSwapOption;
use rusqlite::session::Session;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::hook::{CommitHook, Unrecorded};
use super::readers::Pool;
use super::{StoreError, Synchronous};

/// How many queued jobs one commit may carry.
const MAX_GROUP: usize = 512;

/// Tells a job's caller how its write ended once the group's commit is known.
pub(super) type Finisher = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A unit of work for the writer. Returns whether it failed (so its savepoint
/// is rolled back) and what to do once the commit outcome is known. Given an
/// error instead of a transaction (none could be begun, or the store is
/// read-only), it must not run, only fail with it.
pub(super) type Run =
    Box<dyn FnOnce(Result<&Transaction<'_>, &StoreError>) -> (bool, Finisher) + Send>;

pub(super) struct Job {
    pub run: Run,
    /// Runs even while the store is read-only (replication applying what
    /// the primary committed).
    pub privileged: bool,
    /// The caller's trace span, when traces are on.
    pub trace: Option<Trace>,
}

/// A traced job's span (its caller's, on another thread) and when it was
/// queued.
pub(super) struct Trace {
    span: tracing::Span,
    queued: Instant,
}

impl Trace {
    pub(super) fn of(span: &tracing::Span) -> Option<Trace> {
        (!span.is_disabled()).then(|| Trace {
            span: span.clone(),
            queued: Instant::now(),
        })
    }
}

/// The span of a group's commit, on the writer thread: a child of the
/// first traced job's span, following from the others' (the group is
/// theirs too). Records each job's wait in the queue. Disabled when no job
/// is traced.
fn commit_span(group: &[Job]) -> tracing::Span {
    let mut traced = group.iter().filter_map(|j| j.trace.as_ref());
    let Some(first) = traced.next() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        target: crate::logging::traces::TARGET,
        parent: &first.span,
        "store.commit",
        store.group_jobs = group.len(),
    );
    for t in group.iter().filter_map(|j| j.trace.as_ref()) {
        t.span
            .record("store.queue_wait_us", t.queued.elapsed().as_micros() as u64);
        t.span.record("store.group_jobs", group.len());
        if t.span.id() != first.span.id() {
            span.follows_from(&t.span);
        }
    }
    span
}

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

/// What the writer thread shares with the store's handles.
#[derive(Default)]
pub(super) struct Shared {
    pub stats: WriterStats,
    pub hook: ArcSwapOption<Box<dyn CommitHook>>,
    /// Local (unprivileged) jobs fail with [`StoreError::ReadOnly`].
    pub read_only: AtomicBool,
    /// Why, for the error message.
    pub read_only_reason: std::sync::Mutex<String>,
    /// Set while the hook holds a commit: the writer is waiting on purpose,
    /// not hung.
    pub in_hook: AtomicBool,
    /// `PRAGMA foreign_keys`, applied at every (re)open.
    pub foreign_keys: AtomicBool,
}

pub(super) fn spawn(
    mut conn: Connection,
    rx: flume::Receiver<Command>,
    shared: Arc<Shared>,
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
                    commit_group(&conn, group, &shared);
                }
                match after {
                    Some(Command::Exclusive(f)) => f(&mut conn),
                    Some(Command::Replace(r)) => {
                        let out = replace(&mut conn, &reopen, &shared, &r.new_file, &r.stamp);
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
    shared: &Shared,
    new_file: &Path,
    stamp: &str,
) -> Result<Option<PathBuf>, StoreError> {
    let fk = shared.foreign_keys.load(Ordering::Relaxed);
    let paused = ctx.readers.pause();
    checkpoint_truncate(conn)?;
    // Close ours: as the last connection it also removes the (empty) WAL.
    let old = std::mem::replace(conn, Connection::open_in_memory()?);
    if let Err((_, e)) = old.close() {
        *conn = super::open_writer(&ctx.path, ctx.sync, fk)?;
        return Err(e.into());
    }
    let swapped = super::swap::swap_in(&ctx.path, new_file, stamp);
    let kept = match swapped {
        Ok(kept) => kept,
        Err(e) => {
            *conn = super::open_writer(&ctx.path, ctx.sync, fk)?;
            let _ = paused.reopen();
            return Err(e);
        }
    };
    match super::open_writer(&ctx.path, ctx.sync, fk) {
        Ok(c) => *conn = c,
        Err(e) => {
            tracing::error!(error = %e, "the restored database does not open; putting the old one back");
            if let Some(k) = &kept {
                std::fs::rename(k, &ctx.path).map_err(|source| StoreError::Io {
                    what: "putting the old database back".into(),
                    source,
                })?;
            }
            *conn = super::open_writer(&ctx.path, ctx.sync, fk)?;
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

fn fail_all(group: Vec<Job>, err: &StoreError) {
    for job in group {
        let (_, fin) = (job.run)(Err(err));
        fin(Err(err));
    }
}

/// Starts recording the group's changes, when the hook asks for it.
fn start_session<'c>(
    conn: &'c Connection,
    unrecorded: Unrecorded,
) -> Result<Session<'c>, StoreError> {
    let mut s = Session::new(conn)?;
    s.table_filter(Some(move |t: &str| !unrecorded.contains(t)));
    s.attach::<&str>(None)?;
    Ok(s)
}

fn commit_group(conn: &Connection, group: Vec<Job>, shared: &Shared) {
    let span = commit_span(&group);
    let _in = span.enter();
    let stats = &shared.stats;
    let n = group.len() as u64;
    let hook = shared.hook.load_full();
    let recording = hook.as_ref().and_then(|h| h.recording());
    let session = match recording.map(|u| start_session(conn, u)).transpose() {
        Ok(s) => s,
        Err(e) => {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot record the group's changes; nothing was written");
            return fail_all(group, &e);
        }
    };
    let tx = match Transaction::new_unchecked(conn, TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            return fail_all(group, &StoreError::CommitFailed(e.to_string()));
        }
    };
    let (finishers, rollback_all) = run_jobs(&tx, group, shared);
    if rollback_all {
        // The job's own error is what its caller hears; nothing was kept.
        let _ = tx.rollback();
        return finishers.into_iter().for_each(|f| f(Ok(())));
    }
    if let (Some(hook), Some(mut session)) = (hook.as_ref(), session) {
        let held = changes(&mut session).and_then(|c| {
            drop(session);
            shared.in_hook.store(true, Ordering::Relaxed);
            let out = hook.before_commit(&tx, c);
            shared.in_hook.store(false, Ordering::Relaxed);
            out
        });
        if let Err(e) = held {
            let _ = tx.rollback();
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            hook.after_commit(false);
            return finishers.into_iter().for_each(|f| f(Err(&e)));
        }
        let committed = finish(tx, finishers, n, stats);
        return hook.after_commit(committed);
    }
    finish(tx, finishers, n, stats);
}

fn changes(session: &mut Session<'_>) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    session.changeset_strm(&mut out)?;
    Ok(out)
}

/// Runs each job in its own savepoint (a lone job needs none: if it fails,
/// the whole transaction is rolled back; savepoints are not free, FTS5
/// flushes its pending index data at each one). Returns the finishers and
/// whether everything must be rolled back.
fn run_jobs(tx: &Transaction<'_>, group: Vec<Job>, shared: &Shared) -> (Vec<Finisher>, bool) {
    let mut finishers = Vec::with_capacity(group.len());
    let alone = group.len() == 1;
    let mut rollback_all = false;
    let read_only = shared.read_only.load(Ordering::Relaxed).then(|| {
        let why = shared
            .read_only_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        StoreError::ReadOnly(why.clone())
    });
    for job in group {
        if let (Some(e), false) = (&read_only, job.privileged) {
            let (_, fin) = (job.run)(Err(e));
            let e = e.clone_refusal();
            finishers.push(Box::new(move |_: Result<(), &StoreError>| fin(Err(&e))) as Finisher);
            continue;
        }
        let sp_ok = !alone && tx.execute_batch("SAVEPOINT job").is_ok();
        let (failed, fin) = (job.run)(Ok(tx));
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
    (finishers, rollback_all)
}

/// Commits; tells every job how it ended. True when committed.
fn finish(tx: Transaction<'_>, finishers: Vec<Finisher>, n: u64, stats: &WriterStats) -> bool {
    match tx.commit() {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.jobs.fetch_add(n, Ordering::Relaxed);
            for f in finishers {
                f(Ok(()));
            }
            true
        }
        Err(e) => {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, jobs = n, "commit failed; the batch was rolled back");
            let err = StoreError::CommitFailed(e.to_string());
            for f in finishers {
                f(Err(&err));
            }
            false
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
    let run: Run = Box::new(move |t| {
        let out = match t {
            Ok(t) => f(t),
            Err(e) => Err(e.clone_refusal()),
        };
        let failed = out.is_err();
        let fin: Finisher = Box::new(move |commit| {
            let _ = tx.send(match commit {
                Ok(()) => out,
                Err(e) => Err(e.clone_refusal()),
            });
        });
        (failed, fin)
    });
    (
        Job {
            run,
            privileged: false,
            trace: None,
        },
        rx,
    )
}

/// Builds a job nobody waits for; failures are logged.
pub(super) fn detached<F>(what: &'static str, f: F) -> Job
where
    F: FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
{
    let run: Run = Box::new(move |t| {
        let started = Instant::now();
        let out = match t {
            Ok(t) => f(t),
            Err(e) => Err(e.clone_refusal()),
        };
        let failed = out.is_err();
        match &out {
            // A standby keeps no local writes: expected, not alarming.
            Err(StoreError::ReadOnly(_)) => {
                tracing::debug!(what, "background write skipped: read-only")
            }
            Err(e) => tracing::warn!(error = %e, what, "background write failed"),
            Ok(()) => {}
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
    });
    Job {
        run,
        privileged: false,
        trace: None,
    }
}
