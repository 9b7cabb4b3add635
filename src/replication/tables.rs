//! Which tables the log records. The session extension records ordinary
//! tables with a primary key; left out are tables that triggers derive from
//! others (the standby's own triggers rebuild them as changes are applied:
//! the FTS5 index and its shadow tables, `memory_types`) and the log itself.
//! Found from the schema, so a new derived table needs no list kept by hand.

use rusqlite::Connection;
use std::collections::HashSet;

use crate::store::StoreError;

/// The log's own table.
pub(crate) const LOG: &str = "repl_log";
/// Each node's record of its schema's down steps (written by migrations,
/// which are not replicated).
const DOWNS: &str = "schema_downs";

/// Every table the log leaves out.
pub(crate) fn unrecorded(conn: &Connection) -> Result<HashSet<String>, StoreError> {
    let mut out: HashSet<String> = HashSet::from([LOG.to_owned(), DOWNS.to_owned()]);
    let virtuals = names(
        conn,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'",
    )?;
    let tables = names(conn, "SELECT name FROM sqlite_schema WHERE type = 'table'")?;
    // Rows a newer release's table held, kept aside by its down steps: an
    // archive no release writes.
    out.extend(tables.iter().filter(|t| t.contains("_kept")).cloned());
    for v in &virtuals {
        out.insert(v.clone());
        // FTS5 and friends keep their data in `<name>_<part>` tables.
        let prefix = format!("{v}_");
        out.extend(tables.iter().filter(|t| t.starts_with(&prefix)).cloned());
    }
    for sql in names(conn, "SELECT sql FROM sqlite_schema WHERE type = 'trigger'")? {
        out.extend(trigger_targets(&sql));
    }
    Ok(out)
}

/// The tables the log records: every ordinary table but the
/// [`unrecorded`] ones. A standby applies changes to these only.
pub(crate) fn recorded(conn: &Connection) -> Result<HashSet<String>, StoreError> {
    let skip = unrecorded(conn)?;
    Ok(names(
        conn,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )?
    .into_iter()
    .filter(|t| !skip.contains(t))
    .collect())
}

/// Recorded tables without a primary key: their changes would be lost.
pub(crate) fn without_primary_key(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for t in recorded(conn)? {
        let pk: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_table_info(?1) WHERE pk > 0",
            [&t],
            |r| r.get(0),
        )?;
        if pk == 0 {
            out.push(t);
        }
    }
    out.sort();
    Ok(out)
}

fn names(conn: &Connection, sql: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The tables a trigger's body writes.
fn trigger_targets(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let body = match lower.find(" begin") {
        Some(i) => &lower[i..],
        None => return Vec::new(),
    };
    let words: Vec<&str> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let target = match *w {
            "into" | "from"
                if i > 0
                    && matches!(
                        words[i - 1],
                        "insert" | "replace" | "ignore" | "delete" | "abort" | "fail" | "rollback"
                    ) =>
            {
                words.get(i + 1)
            }
            // `UPDATE t SET`, not the upsert's `DO UPDATE SET`.
            "update" if i > 0 && words[i - 1] != "do" => words.get(i + 1),
            _ => None,
        };
        if let Some(t) = target.filter(|t| !matches!(**t, "or" | "set")) {
            out.push((*t).to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrations::to_latest(&mut c).unwrap();
        c
    }

    #[test]
    fn derived_and_virtual_tables_are_left_out_and_base_tables_recorded() {
        let u = unrecorded(&db()).unwrap();
        let r = recorded(&db()).unwrap();
        assert!(r.is_disjoint(&u));
        for t in [
            "repl_log",
            "memory_search",
            "memory_search_data",
            "memory_types",
        ] {
            assert!(u.contains(t), "{t} must not be recorded: {u:?}");
        }
        for t in [
            "memory_entities",
            "memory_observations",
            "sessions",
            "kv",
            "audit_log",
        ] {
            assert!(!u.contains(t) && r.contains(t), "{t} must be recorded");
        }
    }

    /// Every table the log records has a primary key; a schema change that
    /// adds one without fails here.
    #[test]
    fn every_recorded_table_has_a_primary_key() {
        let c = db();
        assert_eq!(without_primary_key(&c).unwrap(), Vec::<String>::new());
        c.execute_batch("CREATE TABLE no_key (a TEXT)").unwrap();
        assert_eq!(without_primary_key(&c).unwrap(), vec!["no_key".to_owned()]);
    }
}
