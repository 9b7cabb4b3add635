//! The audit log: who called which tool, restored which backup, and how it
//! ended.

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use super::StoreError;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub session_id: Option<String>,
    /// `tool`, `restore`, `backup`, ...
    pub kind: String,
    /// The tool name, backup id, ...
    pub subject: String,
    /// `ok`, `error`, `cancelled`, ...
    pub outcome: String,
    pub duration_us: Option<i64>,
    pub detail: Option<String>,
    /// Who acted: a token's name; `None` where nobody authenticated (auth
    /// off, stdio, the daemon itself).
    pub principal: Option<String>,
}

pub fn record(tx: &Transaction<'_>, e: &AuditEntry) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit_log (at_ms, session_id, kind, subject, outcome, duration_us, detail, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    stmt.execute(params![
        e.at_ms,
        e.session_id,
        e.kind,
        e.subject,
        e.outcome,
        e.duration_us,
        e.detail,
        e.principal
    ])?;
    Ok(())
}

/// The newest `limit` entries of a kind (all kinds when `None`), newest first.
pub fn recent(
    conn: &Connection,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, session_id, kind, subject, outcome, duration_us, detail, principal
         FROM audit_log WHERE ?1 IS NULL OR kind = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![kind, limit], |r| {
            Ok(AuditEntry {
                at_ms: r.get(0)?,
                session_id: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                outcome: r.get(4)?,
                duration_us: r.get(5)?,
                detail: r.get(6)?,
                principal: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// What `erlmcp audit` asks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only rows at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    pub principal: Option<String>,
    pub limit: i64,
}

/// Rows matching `q`, oldest first (the newest `q.limit` of them).
pub fn query(conn: &Connection, q: &Query) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, session_id, kind, subject, outcome, duration_us, detail, principal
         FROM audit_log WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR principal = ?2)
         ORDER BY id DESC LIMIT ?3",
    )?;
    let mut rows = stmt
        .query_map(params![q.since_ms, q.principal, q.limit], |r| {
            Ok(AuditEntry {
                at_ms: r.get(0)?,
                session_id: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                outcome: r.get(4)?,
                duration_us: r.get(5)?,
                detail: r.get(6)?,
                principal: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}
