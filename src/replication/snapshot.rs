//! Catch-up by snapshot, for a standby that is new, further behind than
//! the log reaches, or whose history parted from the primary's. The
//! primary takes an online copy (the backup machinery: one pinned read
//! transaction, the writer never blocked) and sends it with its log
//! position and SHA-256; the standby checks the checksum, the integrity
//! and the position before it swaps the copy in for its database.

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::frame::{Control, Frame, Pos};
use super::log::{self, Position};
use super::peer::{Link, LinkError};
use crate::backup::{BackupError, Pacing, snapshot::copy_online};
use crate::fsx;
use crate::store::{Store, StoreError, migrations};

/// How much of the file one frame carries.
const CHUNK: usize = 1 << 20;
/// A resync copies as fast as the disk goes: the standby is waiting.
const PACING: Pacing = Pacing {
    step_pages: 16_384,
    pause: Duration::ZERO,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("taking the snapshot failed: {0}")]
    Take(#[from] BackupError),
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("the snapshot is unusable: {0}")]
    Bad(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { what, source }
}

/// A copy taken for a standby: the file and what it holds.
pub(crate) struct Taken {
    pub(crate) file: PathBuf,
    pub(crate) position: Position,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    pub(crate) schema_version: i64,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Primary: copies the database into `dir` (blocking: call off the runtime).
pub(crate) fn take(db: &Path, dir: &Path) -> Result<Taken, SnapshotError> {
    let file = dir.join(format!(".erlmcp.db.snapshot-{}.tmp", rand::random::<u32>()));
    let stats = copy_online(db, &file, PACING, &AtomicBool::new(false))?;
    let taken = Taken {
        position: position_of(&file)?,
        bytes: std::fs::metadata(&file)
            .map_err(io("sizing the snapshot"))?
            .len(),
        sha256: sha256_of(&file)?,
        schema_version: stats.schema_version,
        file,
    };
    Ok(taken)
}

fn position_of(file: &Path) -> Result<Position, SnapshotError> {
    let c = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| SnapshotError::Bad(e.to_string()))?;
    Ok(log::last(&c)?)
}

fn sha256_of(file: &Path) -> Result<String, SnapshotError> {
    let mut f = std::fs::File::open(file).map_err(io("reading the snapshot"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io("reading the snapshot"))?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Primary: sends a snapshot on `link` (meta, chunks, done).
pub(crate) async fn send(link: &Link, db: PathBuf, dir: PathBuf) -> Result<(), SnapshotError> {
    let taken = tokio::task::spawn_blocking(move || take(&db, &dir))
        .await
        .map_err(|e| SnapshotError::Bad(format!("the snapshot task crashed: {e}")))??;
    tracing::info!(
        seq = taken.position.seq,
        bytes = taken.bytes,
        "sending a snapshot to the standby"
    );
    link.control(Control::SnapshotMeta {
        position: Pos::of(&taken.position),
        bytes: taken.bytes,
        sha256: taken.sha256.clone(),
        schema_version: taken.schema_version,
    })
    .await?;
    let mut f = std::fs::File::open(&taken.file).map_err(io("reading the snapshot"))?;
    loop {
        let mut buf = vec![0; CHUNK];
        let n = f.read(&mut buf).map_err(io("reading the snapshot"))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        link.send(Frame::Chunk(buf)).await?;
    }
    link.control(Control::Done).await?;
    Ok(())
}

/// Standby: receives a snapshot into the data directory, verifies it, and
/// swaps it in for the database. Returns its position.
pub(crate) async fn receive(link: &mut Link, store: &Store) -> Result<Position, SnapshotError> {
    let limit = Duration::from_secs(300);
    let (position, bytes, sha256, schema) = match link.recv_control(limit).await? {
        Control::SnapshotMeta {
            position,
            bytes,
            sha256,
            schema_version,
        } => (position, bytes, sha256, schema_version),
        other => {
            return Err(SnapshotError::Bad(format!(
                "expected the snapshot, got {other:?}"
            )));
        }
    };
    let position = position
        .position()
        .map_err(|e| SnapshotError::Bad(e.to_string()))?;
    let dir = store.path().parent().unwrap_or(Path::new(".")).to_owned();
    let file = dir.join(".erlmcp.db.resync.tmp");
    let out = write_chunks(link, &file, limit).await;
    let checked = out.and_then(|(n, digest)| {
        if n != bytes || digest != sha256 {
            return Err(SnapshotError::Bad(format!(
                "received {n} bytes with SHA-256 {digest}; the primary sent {bytes} with {sha256}"
            )));
        }
        verify(&file, &position, schema)
    });
    if let Err(e) = checked {
        let _ = fsx::remove_if_exists(&file);
        return Err(e);
    }
    store.replace_with(&file, "resync").await?;
    Ok(position)
}

async fn write_chunks(
    link: &mut Link,
    file: &Path,
    limit: Duration,
) -> Result<(u64, String), SnapshotError> {
    let mut out = std::fs::File::create(file).map_err(io("writing the snapshot"))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        match link.recv(limit).await? {
            Frame::Chunk(data) => {
                h.update(&data);
                n += data.len() as u64;
                out.write_all(&data).map_err(io("writing the snapshot"))?;
            }
            Frame::Control(Control::Done) => break,
            other => {
                return Err(SnapshotError::Bad(format!(
                    "unexpected frame in a snapshot: {other:?}"
                )));
            }
        }
    }
    out.sync_all().map_err(io("syncing the snapshot"))?;
    Ok((n, hex::encode(h.finalize())))
}

/// The copy opens, passes `integrity_check`, has a schema this binary
/// knows, and ends its log where the primary said.
fn verify(file: &Path, position: &Position, schema: i64) -> Result<(), SnapshotError> {
    let bad = |m: String| SnapshotError::Bad(m);
    let c = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| bad(e.to_string()))?;
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| bad(e.to_string()))?;
    if ok != "ok" {
        return Err(bad(format!("integrity_check: {ok}")));
    }
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| bad(e.to_string()))?;
    if version != schema || version > migrations::latest_version() {
        return Err(bad(format!(
            "schema version {version} (announced {schema}, this erlmcp knows up to {})",
            migrations::latest_version()
        )));
    }
    let last = log::last(&c)?;
    if last != *position {
        return Err(bad(format!(
            "its log ends at {} instead of {}",
            last.seq, position.seq
        )));
    }
    Ok(())
}
