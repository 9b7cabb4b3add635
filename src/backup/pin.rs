//! Pinned backups: a marker `ID.pinned` (why, as text) keeps a backup out
//! of retention's reach until it is unpinned. The upgrade machinery pins
//! the restore point of an upgrade until the upgrade is confirmed.

use super::{BackupError, Backups};
use crate::fsx;

/// Pins backup `id`, saying why.
pub fn pin(b: &Backups, id: &str, why: &str) -> Result<(), BackupError> {
    Ok(fsx::write_atomic(
        &b.pin_marker(id),
        &b.temp_file(id, "pinned"),
        why.as_bytes(),
    )?)
}

/// Lets retention decide about backup `id` again.
pub fn unpin(b: &Backups, id: &str) -> Result<(), BackupError> {
    Ok(fsx::remove_if_exists(&b.pin_marker(id))?)
}

/// Why backup `id` is pinned, if it is.
pub fn pinned(b: &Backups, id: &str) -> Option<String> {
    std::fs::read_to_string(b.pin_marker(id)).ok()
}
