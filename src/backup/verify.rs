//! Proof that a backup restores: the checksum matches the manifest, it
//! decompresses to the recorded size, `PRAGMA integrity_check` says `ok`,
//! and the schema version is readable and the recorded one.
//!
//! Two kinds of "no": the backup is bad (a [`Failure`], it gets marked), or
//! the check could not run (a [`BackupError`]: no space for the temp file),
//! which says nothing about the backup and marks nothing.

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::time::Instant;

use super::catalog::{self, Status};
use super::lock::DirLock;
use super::manifest::{self, Manifest};
use super::{BackupError, Backups};
use crate::fsx;

/// Why a backup is bad, in words for an operator.
pub type Failure = String;

#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub id: String,
    pub schema_version: i64,
    pub uncompressed_bytes: u64,
    pub duration_ms: u64,
}

/// One backup's verdict, as `erlmcp backup verify` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
}

const CHUNK: usize = 1 << 20;

/// Checks backup `m`, leaving the decompressed database at `dest` (the
/// caller removes it, or restores it). `durable` fsyncs `dest`.
pub fn check_into(
    b: &Backups,
    m: &Manifest,
    dest: &Path,
    durable: bool,
) -> Result<Result<Verified, Failure>, BackupError> {
    let started = Instant::now();
    let data = b.data_file(&m.id);
    if let Err(f) = checksum(&data, m) {
        return Ok(Err(f));
    }
    match decompress(&data, dest, durable)? {
        Err(f) => return Ok(Err(f)),
        Ok(n) if n != m.uncompressed_bytes => {
            return Ok(Err(format!(
                "decompressed to {n} bytes, the manifest says {}",
                m.uncompressed_bytes
            )));
        }
        Ok(_) => {}
    }
    let schema_version = match check_database(dest) {
        Ok(v) => v,
        Err(f) => return Ok(Err(f)),
    };
    if schema_version != m.schema_version {
        return Ok(Err(format!(
            "schema version {schema_version}, the manifest says {}",
            m.schema_version
        )));
    }
    Ok(Ok(Verified {
        id: m.id.clone(),
        schema_version,
        uncompressed_bytes: m.uncompressed_bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    }))
}

fn checksum(data: &Path, m: &Manifest) -> Result<(), Failure> {
    let mut f = File::open(data).map_err(|e| format!("data file unreadable: {e}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("data file unreadable: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != m.compressed_bytes {
        return Err(format!(
            "the data file has {total} bytes, the manifest says {}",
            m.compressed_bytes
        ));
    }
    let found = hex::encode(hasher.finalize());
    if found != m.sha256 {
        return Err(format!(
            "checksum mismatch: expected sha256 {}, found {found}",
            m.sha256
        ));
    }
    Ok(())
}

/// Decompresses `data` into `dest`. Decoding errors are failures of the
/// backup; write errors are errors of this run.
fn decompress(
    data: &Path,
    dest: &Path,
    durable: bool,
) -> Result<Result<u64, Failure>, BackupError> {
    let input = File::open(data).map_err(|e| BackupError::io("opening", data, e))?;
    let mut decoder = match zstd::Decoder::new(BufReader::new(input)) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("not a zstd stream: {e}"))),
    };
    let mut out = File::create(dest).map_err(|e| BackupError::io("creating", dest, e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Ok(Err(format!("decompression failed: {e}"))),
        };
        out.write_all(&buf[..n])
            .map_err(|e| BackupError::io("writing", dest, e))?;
        total += n as u64;
    }
    if durable {
        out.sync_all()
            .map_err(|e| BackupError::io("syncing", dest, e))?;
    }
    Ok(Ok(total))
}

/// `integrity_check` and `user_version` on a decompressed copy.
fn check_database(path: &Path) -> Result<i64, Failure> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("does not open as SQLite: {e}"))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| format!("integrity_check failed to run: {e}"))?;
    if rows != ["ok"] {
        return Err(format!("integrity_check: {}", rows.join("; ")));
    }
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("schema version unreadable: {e}"))
}

/// `erlmcp backup verify [ID]`: verifies one backup, or all of them,
/// marking the bad ones and clearing the mark of those that pass.
pub fn verify(b: &Backups, id: Option<&str>) -> Result<Vec<Report>, BackupError> {
    let _lock = DirLock::acquire(&b.dir)?;
    let entries = catalog::list(b)?;
    let chosen: Vec<_> =
        match id {
            Some(id) => {
                let e = entries.into_iter().find(|e| e.id == id).ok_or_else(|| {
                    BackupError::NotFound {
                        id: id.to_owned(),
                        dir: b.dir.display().to_string(),
                    }
                })?;
                vec![e]
            }
            None => entries,
        };
    chosen.into_iter().map(|e| verify_entry(b, e)).collect()
}

fn verify_entry(b: &Backups, e: catalog::Entry) -> Result<Report, BackupError> {
    let started = Instant::now();
    let outcome = match (&e.status, &e.manifest) {
        (Status::Partial, _) => Err("unfinished: no manifest".to_owned()),
        (Status::Invalid { reason }, _) => Err(reason.clone()),
        (_, None) => Err("no manifest".to_owned()),
        (_, Some(m)) => verify_one(b, m)?,
    };
    let ms = started.elapsed().as_millis() as u64;
    Ok(match outcome {
        Ok(v) => {
            if matches!(e.status, Status::Bad { .. }) {
                tracing::warn!(id = %e.id, "backup passed verification again; its bad mark is cleared");
                fsx::remove_if_exists(&b.bad_marker(&e.id))?;
            }
            Report {
                id: e.id,
                ok: true,
                schema_version: Some(v.schema_version),
                reason: None,
                duration_ms: ms,
            }
        }
        Err(reason) => Report {
            id: e.id,
            ok: false,
            schema_version: None,
            reason: Some(reason),
            duration_ms: ms,
        },
    })
}

/// Verifies into a temp file and removes it; marks the backup bad on failure.
pub fn verify_one(b: &Backups, m: &Manifest) -> Result<Result<Verified, Failure>, BackupError> {
    let tmp = b.temp_file(&m.id, "verify");
    let out = check_into(b, m, &tmp, false);
    fsx::remove_if_exists(&tmp)?;
    let out = out?;
    if let Err(reason) = &out {
        record_failure(b, &m.id, reason)?;
    }
    Ok(out)
}

/// A backup failed verification: mark it, count it, say it loudly.
pub fn record_failure(b: &Backups, id: &str, reason: &str) -> Result<(), BackupError> {
    tracing::error!(id, reason, dir = %b.dir.display(), "backup failed verification; marked bad");
    super::metrics::verification_failed();
    manifest::mark_bad(b, id, reason)
}
