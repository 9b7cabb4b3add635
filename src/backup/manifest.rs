//! The JSON manifest written beside each backup: what it is, where it came
//! from, and how to check it.

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::BackupError;

/// Bumped when the manifest changes incompatibly.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// Unix seconds, and the same as RFC 3339 UTC for humans.
    pub created_at: i64,
    pub created: String,
    pub erlmcp_version: String,
    /// `PRAGMA user_version` of the copied database.
    pub schema_version: i64,
    pub node_name: String,
    /// Replication position of the snapshot; zero until replication exists.
    pub replication_epoch: u64,
    pub replication_seq: u64,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    /// SHA-256 (hex) of the compressed file `<id>.db.zst`.
    pub sha256: String,
    /// How long the copy + compression took, in milliseconds.
    pub duration_ms: u64,
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads and checks a manifest; a truncated or foreign file is an error
    /// naming what is wrong.
    pub fn read(path: &Path, id: &str) -> Result<Manifest, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("manifest unreadable: {e}"))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest invalid (truncated?): {e}"))?;
        if m.format != FORMAT {
            return Err(format!("manifest format {} is not {FORMAT}", m.format));
        }
        if m.id != id {
            return Err(format!("manifest names backup {} instead of {id}", m.id));
        }
        if m.sha256.len() != 64 {
            return Err("manifest has no valid sha256".into());
        }
        Ok(m)
    }
}

/// Why a backup was marked bad; the content of `<id>.bad`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BadMarker {
    pub at: i64,
    pub reason: String,
}

pub fn mark_bad(b: &super::Backups, id: &str, reason: &str) -> Result<(), BackupError> {
    let marker = BadMarker {
        at: crate::clock::now_secs(),
        reason: reason.to_owned(),
    };
    let bytes = serde_json::to_vec(&marker).unwrap_or_default();
    Ok(crate::fsx::write_atomic(
        &b.bad_marker(id),
        &b.temp_file(id, "bad"),
        &bytes,
    )?)
}

pub fn read_bad(path: &Path) -> Option<BadMarker> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or(BadMarker {
        at: 0,
        reason: "marked bad".into(),
    }))
}
