//! Taking a backup while the server keeps serving.
//!
//! The copy runs on its own read-only connection, never on the writer
//! thread. It opens a read transaction first and holds it across every
//! `backup.step()`: in WAL mode that pins one snapshot, so the copy is
//! consistent and is never restarted by the writer's commits (without it,
//! each step would start a new read transaction, see the source changed,
//! and start over — forever, under steady writes). The writer keeps
//! committing into the WAL meanwhile; the price is that checkpoints cannot
//! recycle the WAL until the copy ends, so it grows by the writes made
//! during the backup.
//!
//! Steps are `step_pages` pages with a short pause between them. The copy
//! lands in a staging file in the backup directory, is compressed (zstd,
//! with a SHA-256 computed on the way) to a dot-file, fsynced, renamed,
//! verified, and only then gets its manifest.

use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::catalog;
use super::lock::DirLock;
use super::manifest::{FORMAT, Manifest};
use super::{BackupError, Backups, Pacing, verify};
use crate::fsx;

/// How the online copy went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CopyStats {
    pub pages: i64,
    pub steps: u64,
    /// Times the backup API started over (the source changed under it).
    /// Zero with the read transaction held; kept to prove it.
    pub restarts: u64,
    pub copy_ms: u64,
    pub schema_version: i64,
    /// The replication log's last (epoch, sequence) in the copy; zeros
    /// when the log is empty.
    #[serde(default)]
    pub replication: (u64, u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Created {
    pub manifest: Manifest,
    pub copy: CopyStats,
    pub verify_ms: u64,
    /// Leftovers of interrupted runs removed first.
    pub cleaned: Vec<String>,
}

/// Takes, verifies and records one backup. Metrics and the `STATUS=`
/// summary are updated either way.
pub fn create(b: &Backups) -> Result<Created, BackupError> {
    let started = Instant::now();
    let out = create_locked(b);
    match &out {
        Ok(c) => {
            super::metrics::succeeded(&c.manifest, started.elapsed().as_secs_f64());
            tracing::info!(
                id = %c.manifest.id,
                bytes = c.manifest.compressed_bytes,
                uncompressed = c.manifest.uncompressed_bytes,
                ms = started.elapsed().as_millis() as u64,
                "backup taken and verified"
            );
        }
        Err(e) => {
            super::metrics::failed(&e.to_string());
            tracing::error!(error = %e, dir = %b.dir.display(), "backup failed");
        }
    }
    out
}

fn create_locked(b: &Backups) -> Result<Created, BackupError> {
    let db = b.db_path();
    if !db.exists() {
        return Err(BackupError::NoDatabase {
            path: db.display().to_string(),
        });
    }
    let _lock = DirLock::acquire(&b.dir)?;
    let cleaned = catalog::clean_leftovers(b)?;
    let id = super::new_id(crate::clock::now_millis());
    let out = build(b, &db, &id);
    if out.is_err() {
        // Leave nothing half-made behind (the next run would clean it too).
        remove_temps(b, &id);
        if !b.manifest_file(&id).exists() {
            let _ = fsx::remove_if_exists(&b.data_file(&id));
        }
    }
    let (manifest, copy, verify_ms) = out?;
    Ok(Created {
        manifest,
        copy,
        verify_ms,
        cleaned,
    })
}

fn build(b: &Backups, db: &Path, id: &str) -> Result<(Manifest, CopyStats, u64), BackupError> {
    let started = Instant::now();
    let created_at = crate::clock::now_secs();
    let staging = b.temp_file(id, "staging");
    let copy = copy_online(db, &staging, b.pacing, &b.cancel)?;
    crate::clock::pause_point("backup.after_copy");
    let zst_tmp = b.temp_file(id, "zst");
    let packed = compress(&staging, &zst_tmp, b.level)?;
    fsx::remove_if_exists(&staging)?;
    fsx::publish(&zst_tmp, &b.data_file(id))?;
    let manifest = Manifest {
        format: FORMAT,
        id: id.to_owned(),
        created_at,
        created: crate::clock::rfc3339(created_at),
        erlmcp_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: copy.schema_version,
        node_name: b.node_name.clone(),
        replication_epoch: copy.replication.0,
        replication_seq: copy.replication.1,
        uncompressed_bytes: packed.uncompressed,
        compressed_bytes: packed.compressed,
        sha256: packed.sha256,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let verify_started = Instant::now();
    let verdict = verify::check_into(b, &manifest, &b.temp_file(id, "verify"), false);
    fsx::remove_if_exists(&b.temp_file(id, "verify"))?;
    if let Err(reason) = verdict? {
        // Keep it, marked, for an operator to look at; it never counts.
        verify::record_failure(b, id, &reason)?;
        write_manifest(b, &manifest)?;
        return Err(BackupError::Corrupt {
            id: id.to_owned(),
            reason,
        });
    }
    crate::clock::pause_point("backup.before_manifest");
    write_manifest(b, &manifest)?;
    Ok((manifest, copy, verify_started.elapsed().as_millis() as u64))
}

/// Removes every dot-file of backup `id` (staging copy, its journal, ...).
fn remove_temps(b: &Backups, id: &str) {
    let prefix = format!(".{id}.");
    let Ok(items) = std::fs::read_dir(&b.dir) else {
        return;
    };
    for item in items.flatten() {
        if item.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fsx::remove_if_exists(&item.path());
        }
    }
}

fn write_manifest(b: &Backups, m: &Manifest) -> Result<(), BackupError> {
    Ok(fsx::write_atomic(
        &b.manifest_file(&m.id),
        &b.temp_file(&m.id, "json"),
        &m.to_bytes(),
    )?)
}

/// Copies one consistent snapshot of `db` into `dest` with the backup API,
/// in paced steps; `dest` ends as a standalone rollback-journal database.
pub fn copy_online(
    db: &Path,
    dest: &Path,
    pacing: Pacing,
    cancel: &AtomicBool,
) -> Result<CopyStats, BackupError> {
    let started = Instant::now();
    let src = open_source(db)?;
    // The read transaction that pins the snapshot (see the module doc).
    src.execute_batch("BEGIN DEFERRED")?;
    src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let mut dst = Connection::open(dest).map_err(|e| BackupError::sqlite(dest, e))?;
    let mut stats = CopyStats::default();
    run_steps(&src, &mut dst, dest, pacing, cancel, &mut stats)?;
    src.execute_batch("COMMIT")?;
    // The copy carries the source's WAL flag; make it a plain file that
    // opens anywhere without -wal/-shm companions.
    dst.execute_batch("PRAGMA journal_mode = DELETE")
        .map_err(|e| BackupError::sqlite(dest, e))?;
    stats.schema_version = dst.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    stats.replication = replication_position(&dst)?;
    dst.close().map_err(|(_, e)| BackupError::sqlite(dest, e))?;
    stats.copy_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

/// The manifest records where the copy stands in the replication log
/// (`repl_log`, schema 4 on), so a restore or a standby knows what it
/// holds and the log is pruned only below the newest backup.
fn replication_position(db: &Connection) -> Result<(u64, u64), BackupError> {
    let has_log: bool = db.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'repl_log'",
        [],
        |r| r.get(0),
    )?;
    if !has_log {
        return Ok((0, 0));
    }
    let pos = db
        .query_row(
            "SELECT epoch, seq FROM repl_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .optional()?;
    Ok(pos.unwrap_or((0, 0)))
}

fn open_source(db: &Path) -> Result<Connection, BackupError> {
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Never checkpoint or delete the WAL when this connection closes: the
    // daemon owns the file (and may have swapped it meanwhile).
    src.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    src.busy_timeout(Duration::from_secs(5))?;
    Ok(src)
}

fn run_steps(
    src: &Connection,
    dst: &mut Connection,
    dest: &Path,
    pacing: Pacing,
    cancel: &AtomicBool,
    stats: &mut CopyStats,
) -> Result<(), BackupError> {
    let backup = Backup::new(src, dst).map_err(|e| BackupError::sqlite(dest, e))?;
    let mut last_remaining = i64::MAX;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(BackupError::Cancelled);
        }
        let step = backup
            .step(pacing.step_pages as std::os::raw::c_int)
            .map_err(|e| BackupError::sqlite(dest, e))?;
        stats.steps += 1;
        let p = backup.progress();
        stats.pages = p.pagecount as i64;
        if (p.remaining as i64) > last_remaining {
            stats.restarts += 1;
        }
        last_remaining = p.remaining as i64;
        match step {
            StepResult::Done => return Ok(()),
            StepResult::More => std::thread::sleep(pacing.pause),
            StepResult::Busy | StepResult::Locked => {
                std::thread::sleep(pacing.pause.max(Duration::from_millis(10)))
            }
            _ => std::thread::sleep(pacing.pause),
        }
    }
}

struct Packed {
    uncompressed: u64,
    compressed: u64,
    sha256: String,
}

/// Counts and hashes what goes to the file.
struct HashingWriter {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// zstd-compresses `src` into `dest` (fsynced), hashing the output.
fn compress(src: &Path, dest: &Path, level: i32) -> Result<Packed, BackupError> {
    let input = File::open(src).map_err(|e| BackupError::io("opening", src, e))?;
    let file = File::create(dest).map_err(|e| BackupError::io("creating", dest, e))?;
    let out = HashingWriter {
        file,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let io = |e| BackupError::io("compressing into", dest, e);
    let mut enc = zstd::Encoder::new(out, level).map_err(io)?;
    enc.include_checksum(true).map_err(io)?;
    let uncompressed =
        std::io::copy(&mut BufReader::with_capacity(1 << 20, input), &mut enc).map_err(io)?;
    let mut out = enc.finish().map_err(io)?;
    out.flush().map_err(io)?;
    out.file.sync_all().map_err(io)?;
    Ok(Packed {
        uncompressed,
        compressed: out.bytes,
        sha256: hex::encode(out.hasher.finalize()),
    })
}
