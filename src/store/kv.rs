//! Small server-wide values: the secret that signs MRTR `requestState`, the
//! node's identity.

use rusqlite::{OptionalExtension, Transaction, params};

use super::StoreError;

pub fn get(tx: &Transaction<'_>, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(tx
        .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn put(tx: &Transaction<'_>, key: &str, value: &[u8]) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Returns the value under `key`, storing `make()` first if there is none.
pub fn get_or_insert(
    tx: &Transaction<'_>,
    key: &str,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, StoreError> {
    if let Some(v) = get(tx, key)? {
        return Ok(v);
    }
    let v = make();
    put(tx, key, &v)?;
    Ok(v)
}

/// Adds one to the counter under `key` (stored as a decimal string; absent
/// counts as 0) and returns the new value.
pub fn increment(tx: &Transaction<'_>, key: &str) -> Result<u64, StoreError> {
    let current = get(tx, key)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let next = current + 1;
    put(tx, key, next.to_string().as_bytes())?;
    Ok(next)
}
