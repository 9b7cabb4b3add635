//! Restore: pick a backup (`ID` or `latest`), verify it into a file beside
//! the database, then swap it in — offline on the files, or through the
//! running daemon's store ([`crate::store::Store::replace_with`]).
//!
//! `latest` walks back from the newest backup and reports every one it
//! passed over and why (bad, invalid, unfinished, schema too new, failed
//! verification now). The database being replaced is kept as
//! `erlmcp.db.pre-restore-<stamp>`; copy it back (daemon stopped) to undo.
//! The rename is the commit point (see [`crate::store::swap`]): killed at
//! any moment, the data directory holds the old database or the new one.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::catalog::{self, Status};
use super::lock::DirLock;
use super::manifest::Manifest;
use super::{BackupError, Backups, Skipped, verify};
use crate::fsx;
use crate::store::audit::{self, AuditEntry};
use crate::store::lock::DataDirLock;
use crate::store::{self, DB_FILE, Store, migrations, swap, tokens};

/// What to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Latest,
    Id(String),
}

impl Target {
    pub fn parse(s: &str) -> Target {
        if s == "latest" {
            Target::Latest
        } else {
            Target::Id(s.to_owned())
        }
    }
}

/// A verified database ready to be swapped in.
pub struct Prepared {
    pub manifest: Manifest,
    pub skipped: Vec<Skipped>,
    pub file: PathBuf,
}

/// What a restore did (or, dry, would do).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restored {
    pub id: String,
    pub dry_run: bool,
    pub created: String,
    pub schema_version: i64,
    pub skipped: Vec<Skipped>,
    /// Where the replaced database was kept.
    pub previous: Option<PathBuf>,
    pub duration_ms: u64,
    /// Tokens revoked in the replaced database but active in the backup,
    /// revoked again in the restored one (see [`keep_revocations`]).
    #[serde(default)]
    pub revocations_kept: usize,
}

/// Prefix of the verified copy waiting in the data directory.
const TEMP_PREFIX: &str = ".erlmcp.db.restore-";

/// Chooses and verifies the backup. The caller holds the backup
/// directory's lock (so a prune cannot remove it meanwhile).
pub fn prepare(b: &Backups, target: &Target) -> Result<Prepared, BackupError> {
    clean_temps(&b.data_dir)?;
    let entries = catalog::list(b)?;
    match target {
        Target::Id(id) => {
            let e = entries
                .iter()
                .find(|e| &e.id == id)
                .ok_or_else(|| BackupError::NotFound {
                    id: id.clone(),
                    dir: b.dir.display().to_string(),
                })?;
            let m = usable(e).map_err(|reason| refusal(id, &e.status, reason))?;
            check_schema(m)?;
            match verify_candidate(b, m)? {
                Ok(file) => Ok(Prepared {
                    manifest: m.clone(),
                    skipped: Vec::new(),
                    file,
                }),
                Err(reason) => Err(BackupError::Corrupt {
                    id: id.clone(),
                    reason,
                }),
            }
        }
        Target::Latest => walk_back(b, &entries),
    }
}

fn walk_back(b: &Backups, entries: &[catalog::Entry]) -> Result<Prepared, BackupError> {
    let mut skipped = Vec::new();
    for e in entries {
        let skip = |reason: String| Skipped {
            id: e.id.clone(),
            reason,
        };
        let m = match usable(e) {
            Ok(m) => m,
            Err(reason) => {
                skipped.push(skip(reason));
                continue;
            }
        };
        if let Err(err) = check_schema(m) {
            skipped.push(skip(err.to_string()));
            continue;
        }
        match verify_candidate(b, m)? {
            Ok(file) => {
                for s in &skipped {
                    tracing::warn!(id = %s.id, reason = %s.reason, "restore latest: skipped {}: {}", s.id, s.reason);
                }
                return Ok(Prepared {
                    manifest: m.clone(),
                    skipped,
                    file,
                });
            }
            Err(reason) => skipped.push(skip(format!("failed verification: {reason}"))),
        }
    }
    Err(BackupError::NoGoodBackup {
        dir: b.dir.display().to_string(),
        skipped,
    })
}

/// The manifest of a backup that may be tried, or why not.
fn usable(e: &catalog::Entry) -> Result<&Manifest, String> {
    match (&e.status, &e.manifest) {
        (Status::Good, Some(m)) => Ok(m),
        (Status::Bad { reason }, _) => Err(format!("marked bad: {reason}")),
        (Status::Invalid { reason }, _) => Err(format!("invalid: {reason}")),
        (Status::Partial, _) => Err("unfinished (no manifest)".into()),
        (Status::Good, None) => Err("no manifest".into()),
    }
}

fn refusal(id: &str, status: &Status, reason: String) -> BackupError {
    match status {
        Status::Bad { .. } => BackupError::Corrupt {
            id: id.to_owned(),
            reason,
        },
        _ => BackupError::Unusable {
            id: id.to_owned(),
            reason,
        },
    }
}

fn check_schema(m: &Manifest) -> Result<(), BackupError> {
    let known = migrations::latest_version();
    if m.schema_version > known {
        return Err(BackupError::SchemaTooNew {
            id: m.id.clone(),
            found: m.schema_version,
            known,
            made_by: m.erlmcp_version.clone(),
        });
    }
    Ok(())
}

/// Decompresses and verifies into the data directory (same filesystem as
/// the database, so the swap is a rename); marks the backup bad on failure.
fn verify_candidate(b: &Backups, m: &Manifest) -> Result<Result<PathBuf, String>, BackupError> {
    let tmp = b.data_dir.join(format!("{TEMP_PREFIX}{}.tmp", m.id));
    let verdict = verify::check_into(b, m, &tmp, true);
    match verdict {
        Ok(Ok(_)) => Ok(Ok(tmp)),
        Ok(Err(reason)) => {
            fsx::remove_if_exists(&tmp)?;
            verify::record_failure(b, &m.id, &reason)?;
            Ok(Err(reason))
        }
        Err(e) => {
            let _ = fsx::remove_if_exists(&tmp);
            Err(e)
        }
    }
}

/// Removes verified copies a killed restore left in the data directory.
fn clean_temps(data_dir: &Path) -> Result<(), BackupError> {
    let Ok(items) = std::fs::read_dir(data_dir) else {
        return Ok(());
    };
    for item in items.flatten() {
        if item.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            tracing::warn!(file = %item.path().display(), "removing the leftover of an interrupted restore");
            fsx::remove_if_exists(&item.path())?;
        }
    }
    Ok(())
}

/// A name for the kept pre-restore database.
fn stamp() -> String {
    crate::clock::rfc3339(crate::clock::now_secs())
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

fn restored(p: &Prepared, dry_run: bool, previous: Option<PathBuf>, started: Instant) -> Restored {
    Restored {
        id: p.manifest.id.clone(),
        dry_run,
        created: p.manifest.created.clone(),
        schema_version: p.manifest.schema_version,
        skipped: p.skipped.clone(),
        previous,
        duration_ms: started.elapsed().as_millis() as u64,
        revocations_kept: 0,
    }
}

/// A restore never brings a revoked token back: the revocations of the
/// database being replaced are applied to the verified copy before it goes
/// in. (A token made after the backup is gone with the rest of that time's
/// data; its holder gets 401, the safe way round.)
fn keep_revocations(file: &Path, revs: &[tokens::Revocation]) -> Result<usize, BackupError> {
    if revs.is_empty() {
        return Ok(0);
    }
    let mut c = Connection::open(file)?;
    let tx = c.transaction()?;
    let n = tokens::apply_revocations(&tx, revs)?;
    tx.commit()?;
    c.close().map_err(|(_, e)| e)?;
    Ok(n)
}

/// The revocations of the database a restore replaces, offline. One too
/// broken to read (a reason to restore) gives none, with a warning.
fn revocations_of(db: &Path) -> Vec<tokens::Revocation> {
    if !db.exists() {
        return Vec::new();
    }
    let read = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(store::StoreError::from)
        .and_then(|c| tokens::revocations(&c));
    read.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the revocations of the database being replaced");
        Vec::new()
    })
}

/// Restore with no daemon running: refuses if one holds the data directory.
pub fn restore_offline(
    b: &Backups,
    target: &Target,
    dry_run: bool,
) -> Result<Restored, BackupError> {
    let started = Instant::now();
    // Restoring into a fresh directory (a restore test) is fine.
    std::fs::create_dir_all(&b.data_dir).map_err(|source| BackupError::Dir {
        path: b.data_dir.display().to_string(),
        source,
    })?;
    let data_lock = DataDirLock::acquire(&b.data_dir, Duration::ZERO)?;
    let dir_lock = DirLock::acquire(&b.dir)?;
    let prepared = match prepare(b, target) {
        Ok(p) => p,
        Err(e) => {
            audit_offline(&b.data_dir, &refused_entry(target, &e));
            return Err(e);
        }
    };
    if dry_run {
        fsx::remove_if_exists(&prepared.file)?;
        return Ok(restored(&prepared, true, None, started));
    }
    let db = b.data_dir.join(DB_FILE);
    let kept = keep_revocations(&prepared.file, &revocations_of(&db))?;
    let stamp = stamp();
    settle(&db, &stamp);
    crate::clock::pause_point("restore.before_swap");
    let previous = swap::swap_in(&db, &prepared.file, &stamp)?;
    crate::clock::pause_point("restore.after_swap");
    drop(dir_lock);
    let mut out = restored(&prepared, false, previous, started);
    out.revocations_kept = kept;
    migrate(&db)?;
    drop(data_lock);
    audit_offline(&b.data_dir, &done_entry(&out));
    tracing::info!(id = %out.id, previous = ?out.previous, "database restored (offline)");
    Ok(out)
}

/// Brings the old database to a state where its WAL can go: checkpointed
/// and closed. A database too broken to open (why one restores) has its
/// WAL and index moved aside, next to the kept copy.
fn settle(db: &Path, stamp: &str) {
    if !db.exists() {
        return;
    }
    let checkpointed = Connection::open(db).and_then(|c| {
        let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        c.close().map_err(|(_, e)| e)?;
        Ok(busy == 0)
    });
    if matches!(checkpointed, Ok(true)) {
        return;
    }
    tracing::warn!(result = ?checkpointed, "the old database could not be checkpointed; keeping its WAL aside");
    for suffix in ["-wal", "-shm"] {
        let from = swap::companion(db, suffix);
        if from.exists() {
            let to = swap::companion(db, &format!(".pre-restore-{stamp}{suffix}"));
            let _ = std::fs::rename(&from, &to);
        }
    }
}

/// Opens the restored database as the daemon will: an older schema is
/// migrated now, so the first start after the restore is an ordinary one.
fn migrate(db: &Path) -> Result<(), BackupError> {
    let mut conn = Connection::open(db)?;
    migrations::migrate(
        &mut conn,
        &db.display().to_string(),
        crate::release::VERSION,
    )?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

fn done_entry(r: &Restored) -> AuditEntry {
    AuditEntry {
        at_ms: crate::clock::now_millis(),
        session_id: None,
        kind: "restore".into(),
        subject: r.id.clone(),
        outcome: "ok".into(),
        duration_us: Some(r.duration_ms as i64 * 1000),
        detail: serde_json::to_string(r).ok(),
        principal: None,
        scope: None,
    }
}

fn refused_entry(target: &Target, e: &BackupError) -> AuditEntry {
    let subject = match target {
        Target::Latest => "latest".to_owned(),
        Target::Id(id) => id.clone(),
    };
    AuditEntry {
        at_ms: crate::clock::now_millis(),
        session_id: None,
        kind: "restore".into(),
        subject,
        outcome: "refused".into(),
        duration_us: None,
        detail: Some(e.to_string()),
        principal: None,
        scope: None,
    }
}

/// Records an audit entry with no daemon running (we hold the data lock).
/// Best effort: the restore's outcome does not depend on it.
pub fn audit_offline(data_dir: &Path, entry: &AuditEntry) {
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return;
    }
    let out = (|| -> Result<(), BackupError> {
        let mut c = Connection::open(&db)?;
        c.busy_timeout(Duration::from_secs(5))?;
        let tx = c.transaction()?;
        audit::record(&tx, entry)?;
        tx.commit()?;
        Ok(())
    })();
    if let Err(e) = out {
        tracing::warn!(error = %e, kind = %entry.kind, "could not record the audit entry");
    }
}

/// Restore through the running daemon's store: prepare (verify) off the
/// async threads, then [`Store::replace_with`]. `forget_sessions` runs
/// right after the swap, so requests naming sessions the restored database
/// lacks get a clean "unknown session" instead of stale state.
pub async fn restore_online(
    b: &Backups,
    store: &Store,
    target: Target,
    dry_run: bool,
    forget_sessions: impl FnOnce(),
) -> Result<Restored, BackupError> {
    let started = Instant::now();
    let bb = b.clone();
    let t = target.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let lock = DirLock::acquire(&bb.dir)?;
        prepare(&bb, &t).map(|p| (lock, p))
    })
    .await
    .map_err(|e| BackupError::Store(store::StoreError::Invalid(e.to_string())))?;
    let (lock, prepared) = match joined {
        Ok(x) => x,
        Err(e) => {
            audit_online(store, refused_entry(&target, &e)).await;
            return Err(e);
        }
    };
    if dry_run {
        fsx::remove_if_exists(&prepared.file)?;
        return Ok(restored(&prepared, true, None, started));
    }
    let revs = store.read(tokens::revocations).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the revocations of the database being replaced");
        Vec::new()
    });
    let file = prepared.file.clone();
    let kept = tokio::task::spawn_blocking(move || keep_revocations(&file, &revs))
        .await
        .map_err(|e| BackupError::Store(store::StoreError::Invalid(e.to_string())))??;
    tokio::task::spawn_blocking(|| crate::clock::pause_point("restore.before_swap"))
        .await
        .ok();
    let previous = match store.replace_with(&prepared.file, &stamp()).await {
        Ok(p) => p,
        Err(e) => {
            let _ = fsx::remove_if_exists(&prepared.file);
            return Err(e.into());
        }
    };
    forget_sessions();
    drop(lock);
    let mut out = restored(&prepared, false, previous, started);
    out.revocations_kept = kept;
    audit_online(store, done_entry(&out)).await;
    tracing::info!(id = %out.id, previous = ?out.previous, "database restored (online)");
    Ok(out)
}

async fn audit_online(store: &Store, entry: AuditEntry) {
    if let Err(e) = store.write(move |tx| audit::record(tx, &entry)).await {
        tracing::warn!(error = %e, "could not record the audit entry");
    }
}
