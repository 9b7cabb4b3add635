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

/// The key of one logged event.
pub type EventKey = (String, i64, i64);

/// Up to `limit` of the oldest events beyond the newest `max_rows` or the
/// newest `max_bytes` of data (0: no such limit), oldest first. Reads the
/// whole log (its lengths, not its data): run it on a reader; the row cap
/// keeps the log, and so this scan, small.
pub fn over_budget(
    conn: &Connection,
    max_rows: u64,
    max_bytes: u64,
    limit: i64,
) -> Result<Vec<EventKey>, StoreError> {
    let cap = |v: u64| {
        if v == 0 {
            i64::MAX
        } else {
            i64::try_from(v).unwrap_or(i64::MAX)
        }
    };
    let mut stmt = conn.prepare_cached(
        "SELECT session_id, stream_id, seq FROM (
             SELECT session_id, stream_id, seq, created_at,
                    row_number() OVER newest AS newer_rows,
                    sum(octet_length(data)) OVER newest AS newer_bytes
             FROM sse_events
             WINDOW newest AS (ORDER BY created_at DESC, session_id DESC, stream_id DESC,
                                        seq DESC ROWS UNBOUNDED PRECEDING))
         WHERE newer_rows > ?1 OR newer_bytes > ?2
         ORDER BY created_at, session_id, stream_id, seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![cap(max_rows), cap(max_bytes), limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes the given events; returns how many existed.
pub fn delete(tx: &Transaction<'_>, keys: &[EventKey]) -> Result<usize, StoreError> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM sse_events WHERE session_id = ?1 AND stream_id = ?2 AND seq = ?3",
    )?;
    let mut n = 0;
    for (sid, stream, seq) in keys {
        n += stmt.execute(params![sid, stream, seq])?;
    }
    Ok(n)
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
        crate::store::migrations::to_latest(&mut c).unwrap();
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
        // 20 rows of 2 bytes are left: keep 15 rows, or 20 bytes.
        let victims = over_budget(&tx, 15, 0, 100).unwrap();
        assert_eq!(victims.len(), 5);
        assert_eq!(victims[0].2, 11, "oldest first");
        assert_eq!(delete(&tx, &victims).unwrap(), 5);
        assert!(over_budget(&tx, 15, 0, 100).unwrap().is_empty());
        assert_eq!(over_budget(&tx, 0, 20, 100).unwrap().len(), 5);
        assert_eq!(over_budget(&tx, 0, 20, 2).unwrap().len(), 2, "a chunk");
        assert!(over_budget(&tx, 0, 0, 100).unwrap().is_empty(), "no limits");
        let left = after(&tx, "s", 1, 0).unwrap();
        assert_eq!(left.first().map(|e| e.0), Some(16));
        assert_eq!(left.len(), 15);
        assert!(over_budget(&tx, 0, 30, 100).unwrap().is_empty());
    }
}
