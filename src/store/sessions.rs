//! Rows of the `sessions` table: what must survive a restart for a client to
//! keep using its `Mcp-Session-Id`.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;

#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub protocol_version: String,
    /// JSON of the client's `clientInfo`.
    pub client_info: String,
    /// JSON of the client's capabilities.
    pub capabilities: String,
    pub log_level: Option<String>,
    pub subscriptions: Vec<String>,
    pub initialized: bool,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Who opened it, when the transport authenticated the caller.
    pub principal: Option<String>,
}

pub fn insert(tx: &Transaction<'_>, row: &SessionRow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sessions (id, protocol_version, client_info, capabilities, log_level,
                               subscriptions, initialized, created_at, last_seen_at, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.id,
            row.protocol_version,
            row.client_info,
            row.capabilities,
            row.log_level,
            serde_json::to_string(&row.subscriptions).unwrap_or_else(|_| "[]".into()),
            row.initialized,
            row.created_at,
            row.last_seen_at,
            row.principal
        ],
    )?;
    Ok(())
}

pub fn load(conn: &Connection, id: &str) -> Result<Option<SessionRow>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, protocol_version, client_info, capabilities, log_level, subscriptions,
                    initialized, created_at, last_seen_at, principal
             FROM sessions WHERE id = ?1",
            [id],
            |r| {
                let subs: String = r.get(5)?;
                Ok(SessionRow {
                    id: r.get(0)?,
                    protocol_version: r.get(1)?,
                    client_info: r.get(2)?,
                    capabilities: r.get(3)?,
                    log_level: r.get(4)?,
                    subscriptions: serde_json::from_str(&subs).unwrap_or_default(),
                    initialized: r.get(6)?,
                    created_at: r.get(7)?,
                    last_seen_at: r.get(8)?,
                    principal: r.get(9)?,
                })
            },
        )
        .optional()?;
    Ok(row)
}

pub fn delete(tx: &Transaction<'_>, id: &str) -> Result<bool, StoreError> {
    Ok(tx.execute("DELETE FROM sessions WHERE id = ?1", [id])? > 0)
}

pub fn set_initialized(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    tx.execute("UPDATE sessions SET initialized = 1 WHERE id = ?1", [id])?;
    Ok(())
}

pub fn set_log_level(tx: &Transaction<'_>, id: &str, level: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sessions SET log_level = ?2 WHERE id = ?1",
        params![id, level],
    )?;
    Ok(())
}

pub fn set_subscriptions(
    tx: &Transaction<'_>,
    id: &str,
    uris: &[String],
) -> Result<(), StoreError> {
    let json = serde_json::to_string(uris).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "UPDATE sessions SET subscriptions = ?2 WHERE id = ?1",
        params![id, json],
    )?;
    Ok(())
}

/// Records activity for many sessions at once (batched by the registry).
pub fn touch_many(tx: &Transaction<'_>, ids: &[String], at: i64) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1")?;
    for id in ids {
        stmt.execute(params![id, at])?;
    }
    Ok(())
}

/// Deletes sessions idle since before `cutoff`; returns their ids.
pub fn expire(tx: &Transaction<'_>, cutoff: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare("DELETE FROM sessions WHERE last_seen_at < ?1 RETURNING id")?;
    let ids = stmt
        .query_map([cutoff], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

/// Deletes sessions that never completed the handshake (no
/// `notifications/initialized`) and were created before `cutoff`; returns
/// their ids. Scans the table: it is bounded by `limits.max_sessions`.
pub fn expire_unfinished(tx: &Transaction<'_>, cutoff: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        tx.prepare("DELETE FROM sessions WHERE initialized = 0 AND created_at < ?1 RETURNING id")?;
    let ids = stmt
        .query_map([cutoff], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

/// How many sessions exist.
pub fn count(conn: &Connection) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))?;
    Ok(n as usize)
}

/// Records the session's standalone SSE stream.
pub fn set_standalone_stream(
    tx: &Transaction<'_>,
    id: &str,
    stream: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sessions SET standalone_stream = ?2 WHERE id = ?1",
        params![id, stream as i64],
    )?;
    Ok(())
}

/// Sessions that had a standalone stream, with its id.
pub fn standalone_streams(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, standalone_stream FROM sessions WHERE standalone_stream IS NOT NULL",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
