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

/// Drops up to `chunk` of the events older than `cutoff` (seconds since
/// the epoch), oldest first (the `created_at` index finds them).
pub fn prune(tx: &Transaction<'_>, cutoff: i64, chunk: i64) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM sse_events WHERE (session_id, stream_id, seq) IN
             (SELECT session_id, stream_id, seq FROM sse_events
              WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
        params![cutoff, chunk],
    )?)
}

/// Drops up to `chunk` of the oldest events beyond the newest `keep`.
/// Counting walks the `created_at` index, not the (wide) rows.
pub fn prune_to_rows(tx: &Transaction<'_>, keep: u64, chunk: i64) -> Result<usize, StoreError> {
    let rows: i64 = tx.query_row(
        "SELECT count(*) FROM sse_events INDEXED BY sse_events_created",
        [],
        |r| r.get(0),
    )?;
    let excess = rows.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
    if excess <= 0 {
        return Ok(0);
    }
    Ok(tx.execute(
        "DELETE FROM sse_events WHERE (session_id, stream_id, seq) IN
             (SELECT session_id, stream_id, seq FROM sse_events
              ORDER BY created_at LIMIT ?1)",
        params![excess.min(chunk)],
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_pruned_by_age_and_by_count_oldest_first() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrations()
            .to_latest(&mut c)
            .unwrap();
        let tx = c.transaction().unwrap();
        tx.execute(
            "INSERT INTO sessions (id, protocol_version, client_info, capabilities,
                                   created_at, last_seen_at) VALUES ('s', 'v', '{}', '{}', 0, 0)",
            [],
        )
        .unwrap();
        for seq in 1..=30u64 {
            append(&tx, "s", 1, seq, "{}", seq as i64).unwrap();
        }
        assert_eq!(prune(&tx, 11, 4).unwrap(), 4, "one chunk");
        assert_eq!(prune(&tx, 11, 100).unwrap(), 6);
        assert_eq!(prune_to_rows(&tx, 15, 100).unwrap(), 5);
        assert_eq!(prune_to_rows(&tx, 15, 100).unwrap(), 0);
        let left = after(&tx, "s", 1, 0).unwrap();
        assert_eq!(left.first().map(|e| e.0), Some(16));
        assert_eq!(left.len(), 15);
    }
}
