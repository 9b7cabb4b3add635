//! The SSE event log: every event sent on a session's streams, so a client
//! that reconnects with `Last-Event-ID` (even to a restarted server) gets
//! what it missed.

use rusqlite::{Connection, Transaction, params};

use super::StoreError;

pub fn append(
    tx: &Transaction<'_>,
    session_id: &str,
    stream_id: u64,
    seq: u64,
    data: &str,
    at: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO sse_events (session_id, stream_id, seq, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![session_id, stream_id as i64, seq as i64, data, at])?;
    Ok(())
}

/// Events of one stream after `seq`, in order.
pub fn after(
    conn: &Connection,
    session_id: &str,
    stream_id: u64,
    seq: u64,
) -> Result<Vec<(u64, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, data FROM sse_events
         WHERE session_id = ?1 AND stream_id = ?2 AND seq > ?3 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map(params![session_id, stream_id as i64, seq as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Drops events older than `cutoff` (seconds since the epoch).
pub fn prune(tx: &Transaction<'_>, cutoff: i64) -> Result<usize, StoreError> {
    Ok(tx.execute("DELETE FROM sse_events WHERE created_at < ?1", [cutoff])?)
}

/// The last seq logged for one stream (0 if none).
pub fn last_seq(conn: &Connection, session_id: &str, stream_id: u64) -> Result<u64, StoreError> {
    let v: Option<i64> = conn.query_row(
        "SELECT max(seq) FROM sse_events WHERE session_id = ?1 AND stream_id = ?2",
        params![session_id, stream_id as i64],
        |r| r.get(0),
    )?;
    Ok(v.unwrap_or(0) as u64)
}
