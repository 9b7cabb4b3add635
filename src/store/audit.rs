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
    /// The scope that allowed a tool call (`memory:write`, `tool:x`, `*`),
    /// when the caller authenticated.
    pub scope: Option<String>,
}

/// Longest `detail` kept: an error message can quote client input, and a
/// row per tool call must stay small for the retention by rows to bound
/// the table's size.
pub const MAX_DETAIL_BYTES: usize = 1024;

impl AuditEntry {
    /// An event of the daemon's own (no session, no duration), now.
    pub fn event(
        kind: &str,
        subject: &str,
        outcome: &str,
        detail: Option<&str>,
        principal: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            at_ms: crate::clock::now_millis(),
            session_id: None,
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            outcome: outcome.to_owned(),
            duration_us: None,
            detail: detail.map(str::to_owned),
            principal,
            scope: None,
        }
    }
}

/// Records `e` with the writer's next batch: for refusals and other events
/// whose caller must not wait for (or fail on) the audit write.
pub fn record_batched(store: &super::Store, e: AuditEntry) {
    store.write_batched(move |tx| record(tx, &e));
}

pub fn record(tx: &Transaction<'_>, e: &AuditEntry) -> Result<(), StoreError> {
    let detail = e.detail.as_deref().map(|d| truncate(d, MAX_DETAIL_BYTES));
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit_log (at_ms, session_id, kind, subject, outcome, duration_us, detail, principal, scope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        e.at_ms,
        e.session_id,
        e.kind,
        e.subject,
        e.outcome,
        e.duration_us,
        detail,
        e.principal,
        e.scope
    ])?;
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary, marked as cut.
fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// Rows deleted per transaction by the pruning functions, so a prune of a
/// large backlog never holds the writer for long: the caller repeats
/// until less than a chunk was deleted.
pub const PRUNE_CHUNK: i64 = 5_000;

/// Deletes up to [`PRUNE_CHUNK`] of the oldest entries written before
/// `cutoff_ms` (Unix milliseconds); returns how many (the `at_ms` index
/// finds them).
pub fn prune_older_than(tx: &Transaction<'_>, cutoff_ms: i64) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM audit_log WHERE id IN
             (SELECT id FROM audit_log WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
        params![cutoff_ms, PRUNE_CHUNK],
    )?)
}

/// Deletes up to [`PRUNE_CHUNK`] of the oldest entries beyond the newest
/// `keep`; returns how many. Ids only grow, so the newest `keep` rows have
/// ids above `max(id) - keep` (gaps only make fewer rows); no count of the
/// table is needed.
pub fn prune_to_rows(tx: &Transaction<'_>, keep: u64) -> Result<usize, StoreError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    Ok(tx.execute(
        "DELETE FROM audit_log WHERE id IN
             (SELECT id FROM audit_log
              WHERE id <= (SELECT max(id) FROM audit_log) - ?1 ORDER BY id LIMIT ?2)",
        params![keep, PRUNE_CHUNK],
    )?)
}

/// The newest `limit` entries of a kind (all kinds when `None`), newest first.
pub fn recent(
    conn: &Connection,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, session_id, kind, subject, outcome, duration_us, detail, principal, scope
         FROM audit_log WHERE ?1 IS NULL OR kind = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![kind, limit], entry)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One row of the `SELECT at_ms, session_id, ... principal, scope` above.
fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at_ms: r.get(0)?,
        session_id: r.get(1)?,
        kind: r.get(2)?,
        subject: r.get(3)?,
        outcome: r.get(4)?,
        duration_us: r.get(5)?,
        detail: r.get(6)?,
        principal: r.get(7)?,
        scope: r.get(8)?,
    })
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
        "SELECT at_ms, session_id, kind, subject, outcome, duration_us, detail, principal, scope
         FROM audit_log WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR principal = ?2)
         ORDER BY id DESC LIMIT ?3",
    )?;
    let mut rows = stmt
        .query_map(params![q.since_ms, q.principal, q.limit], entry)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::to_latest(&mut c).unwrap();
        c
    }

    fn entry(at_ms: i64, detail: Option<String>) -> AuditEntry {
        AuditEntry {
            at_ms,
            session_id: None,
            kind: "tool".into(),
            subject: "t".into(),
            outcome: "ok".into(),
            duration_us: None,
            detail,
            principal: None,
            scope: None,
        }
    }

    fn ids(c: &rusqlite::Connection) -> Vec<i64> {
        let mut s = c.prepare("SELECT id FROM audit_log ORDER BY id").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn pruning_by_age_and_by_rows_keeps_the_newest() {
        let mut c = db();
        let tx = c.transaction().unwrap();
        for at in 1..=20 {
            record(&tx, &entry(at * 1000, None)).unwrap();
        }
        assert_eq!(prune_older_than(&tx, 5_500).unwrap(), 5);
        assert_eq!(prune_older_than(&tx, 5_500).unwrap(), 0);
        assert_eq!(prune_to_rows(&tx, 10).unwrap(), 5);
        assert_eq!(prune_to_rows(&tx, 10).unwrap(), 0);
        tx.commit().unwrap();
        assert_eq!(ids(&c), (11..=20).collect::<Vec<_>>());
        let tx = c.transaction().unwrap();
        assert_eq!(prune_to_rows(&tx, 0).unwrap(), 10, "keep 0 empties it");
    }

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        let mut c = db();
        let tx = c.transaction().unwrap();
        record(&tx, &entry(1, Some("é".repeat(4000)))).unwrap();
        let d: String = tx
            .query_row("SELECT detail FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert!(
            d.len() <= MAX_DETAIL_BYTES && d.ends_with('…'),
            "{}",
            d.len()
        );
    }
}
