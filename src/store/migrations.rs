//! The schema, as an append-only list of reversible migrations. The index
//! of the last applied migration is SQLite's `user_version`.
//!
//! Each migration carries its `down` steps, and applying it records them in
//! the database itself (`schema_downs`). So a binary that finds a *newer*
//! schema — an upgrade being rolled back — takes it back to the schema it
//! knows with the down steps the newer binary left, keeping every row the
//! older schema can hold: a column the newer release added is dropped, a
//! table it added is kept aside under `<name>_kept_v<N>`. A newer schema
//! whose down steps are not all recorded is refused before anything is
//! written ([`StoreError::SchemaTooNew`], exit 65). Up or down, every step
//! of a change of schema runs in one transaction: the database is never
//! left between two schemas.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::StoreError;

/// One step of the schema.
pub struct Migration {
    /// `user_version` once applied.
    pub version: i64,
    pub up: &'static str,
    /// Takes `version` back to `version - 1`.
    pub down: &'static str,
}

const V1_UP: &str = r#"
CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    protocol_version TEXT NOT NULL,
    client_info      TEXT NOT NULL,
    capabilities     TEXT NOT NULL,
    log_level        TEXT,
    subscriptions    TEXT NOT NULL DEFAULT '[]',
    initialized      INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Server-sent events kept for Last-Event-ID replay.
CREATE TABLE sse_events (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    stream_id  INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, stream_id, seq)
) WITHOUT ROWID;
CREATE INDEX sse_events_created ON sse_events(created_at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    session_id  TEXT,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    duration_us INTEGER,
    detail      TEXT
);
CREATE INDEX audit_log_at ON audit_log(at_ms);

-- The knowledge graph of the memory toolset.
CREATE TABLE memory_entities (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL
);
CREATE TABLE memory_observations (
    id        INTEGER PRIMARY KEY,
    entity_id INTEGER NOT NULL REFERENCES memory_entities(id) ON DELETE CASCADE,
    content   TEXT NOT NULL,
    UNIQUE (entity_id, content)
);
-- Relations name their ends, as in the reference server: a relation may
-- point at an entity that does not exist (yet).
CREATE TABLE memory_relations (
    id            INTEGER PRIMARY KEY,
    from_name     TEXT NOT NULL,
    to_name       TEXT NOT NULL,
    relation_type TEXT NOT NULL,
    UNIQUE (from_name, to_name, relation_type)
);
CREATE INDEX memory_relations_to ON memory_relations(to_name);

-- Substring search (case-insensitive) over names, types and observations.
-- Entity rows use negative rowids (-2id, -2id-1), observations their own id.
CREATE VIRTUAL TABLE memory_search USING fts5(
    entity_id UNINDEXED, text, tokenize = 'trigram'
);
CREATE TRIGGER memory_entities_ai AFTER INSERT ON memory_entities BEGIN
    INSERT INTO memory_search(rowid, entity_id, text)
        VALUES (-2 * new.id, new.id, new.name), (-2 * new.id - 1, new.id, new.entity_type);
END;
CREATE TRIGGER memory_entities_ad AFTER DELETE ON memory_entities BEGIN
    DELETE FROM memory_search WHERE rowid IN (-2 * old.id, -2 * old.id - 1);
END;
CREATE TRIGGER memory_observations_ai AFTER INSERT ON memory_observations BEGIN
    INSERT INTO memory_search(rowid, entity_id, text) VALUES (new.id, new.entity_id, new.content);
END;
CREATE TRIGGER memory_observations_ad AFTER DELETE ON memory_observations BEGIN
    DELETE FROM memory_search WHERE rowid = old.id;
END;
"#;

/// A session's standalone (GET) SSE stream, so it can be re-created at
/// startup and keep logging notifications for the client to replay.
const V2_UP: &str = r#"
ALTER TABLE sessions ADD COLUMN standalone_stream INTEGER;
"#;

/// Entity types leave the full-text index (a row per entity for a handful
/// of distinct values made every insert rewrite a few huge posting lists);
/// a small table of distinct types is searched instead. FTS5 merges less
/// eagerly (automerge 8, crisismerge 64: a fifth less time per batch of
/// create_entities at 20k entities, the same search time).
const V3_UP: &str = r#"
DROP TRIGGER memory_entities_ai;
DROP TRIGGER memory_entities_ad;
DELETE FROM memory_search WHERE rowid < 0 AND rowid % 2 != 0;
CREATE TABLE memory_types (
    entity_type TEXT PRIMARY KEY,
    entities    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO memory_types SELECT entity_type, count(*) FROM memory_entities GROUP BY entity_type;
CREATE INDEX memory_entities_type ON memory_entities(entity_type);
CREATE TRIGGER memory_entities_ai AFTER INSERT ON memory_entities BEGIN
    INSERT INTO memory_search(rowid, entity_id, text) VALUES (-2 * new.id, new.id, new.name);
    INSERT INTO memory_types(entity_type, entities) VALUES (new.entity_type, 1)
        ON CONFLICT(entity_type) DO UPDATE SET entities = entities + 1;
END;
CREATE TRIGGER memory_entities_ad AFTER DELETE ON memory_entities BEGIN
    DELETE FROM memory_search WHERE rowid = -2 * old.id;
    UPDATE memory_types SET entities = entities - 1 WHERE entity_type = old.entity_type;
    DELETE FROM memory_types WHERE entity_type = old.entity_type AND entities <= 0;
END;
INSERT INTO memory_search(memory_search, rank) VALUES ('automerge', 8);
INSERT INTO memory_search(memory_search, rank) VALUES ('crisismerge', 64);
"#;

/// The replication log: each committed group's changeset (recorded with
/// the SQLite session extension), in commit order. `hash` chains every
/// entry to the one before (see `replication::log`), so two nodes can tell
/// whether their logs agree.
const V4_UP: &str = r#"
CREATE TABLE repl_log (
    seq       INTEGER PRIMARY KEY,
    epoch     INTEGER NOT NULL,
    hash      BLOB NOT NULL,
    at_ms     INTEGER NOT NULL,
    changeset BLOB NOT NULL
);
"#;

/// Tool calls answered with a task handle (MCP tasks), kept until they
/// expire; the result or error is kept once the task ends. `owner` scopes
/// every lookup (a session, a stdio connection or a principal); `session_id`
/// names the persisted session the task ends with; `runner` is the lease of
/// the process running it (see `store::lease`), so a task whose process died
/// is found and never stays `working`. A rowid table: results can be large.
const V5_UP: &str = r#"
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    session_id       TEXT,
    runner           TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    method           TEXT NOT NULL,
    request          TEXT NOT NULL,
    client           TEXT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('working', 'input_required', 'completed', 'failed', 'cancelled')),
    status_message   TEXT,
    input_requests   TEXT,
    result           TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 1,
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    ttl_ms           INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    poll_interval_ms INTEGER NOT NULL
);
CREATE INDEX tasks_owner ON tasks(owner, created_at_ms, id);
CREATE INDEX tasks_expiry ON tasks(expires_at_ms);
CREATE INDEX tasks_session ON tasks(session_id) WHERE session_id IS NOT NULL;
CREATE INDEX tasks_unfinished ON tasks(runner) WHERE status IN ('working', 'input_required');
"#;

/// Tasks are kept aside (their indexes, derived, go with the table).
const V5_DOWN: &str = r#"
CREATE TABLE IF NOT EXISTS tasks_kept_v5 AS SELECT * FROM tasks WHERE 0;
INSERT INTO tasks_kept_v5 SELECT * FROM tasks;
DROP TABLE tasks;
"#;

/// Static API tokens (`erlmcp token`): only a SHA-256 digest of each
/// secret is kept (the secrets are 32 random bytes: a digest needs no salt
/// or stretching to resist guessing). `scopes` is space-separated, as OAuth
/// writes them. A primary key, so replication carries the table (and a
/// revocation) to the standby. Audit rows name who acted: the token's name.
const V6_UP: &str = r#"
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) WITHOUT ROWID;
ALTER TABLE audit_log ADD COLUMN principal TEXT;
CREATE INDEX audit_log_principal ON audit_log(principal, at_ms);
"#;

/// Tokens are kept aside; the principals of audit rows go with their column.
const V6_DOWN: &str = r#"
DROP INDEX audit_log_principal;
ALTER TABLE audit_log DROP COLUMN principal;
CREATE TABLE IF NOT EXISTS tokens_kept_v6 AS SELECT * FROM tokens WHERE 0;
INSERT INTO tokens_kept_v6 SELECT * FROM tokens;
DROP TABLE tokens;
"#;

/// A session remembers who opened it (the token's name or the OAuth
/// subject) so another caller holding its id cannot use it; an audit row
/// of a tool call names the scope that allowed it.
const V7_UP: &str = r#"
ALTER TABLE sessions ADD COLUMN principal TEXT;
ALTER TABLE audit_log ADD COLUMN scope TEXT;
"#;

/// An older release binds no session and records no scope: the columns go.
const V7_DOWN: &str = r#"
ALTER TABLE audit_log DROP COLUMN scope;
ALTER TABLE sessions DROP COLUMN principal;
"#;

const V1_DOWN: &str = r#"
DROP TRIGGER memory_observations_ad;
DROP TRIGGER memory_observations_ai;
DROP TRIGGER memory_entities_ad;
DROP TRIGGER memory_entities_ai;
DROP TABLE memory_search;
DROP INDEX memory_relations_to;
DROP INDEX audit_log_at;
DROP INDEX sse_events_created;
CREATE TABLE IF NOT EXISTS memory_relations_kept_v1 AS SELECT * FROM memory_relations WHERE 0;
INSERT INTO memory_relations_kept_v1 SELECT * FROM memory_relations;
DROP TABLE memory_relations;
CREATE TABLE IF NOT EXISTS memory_observations_kept_v1 AS SELECT * FROM memory_observations WHERE 0;
INSERT INTO memory_observations_kept_v1 SELECT * FROM memory_observations;
DROP TABLE memory_observations;
CREATE TABLE IF NOT EXISTS memory_entities_kept_v1 AS SELECT * FROM memory_entities WHERE 0;
INSERT INTO memory_entities_kept_v1 SELECT * FROM memory_entities;
DROP TABLE memory_entities;
CREATE TABLE IF NOT EXISTS audit_log_kept_v1 AS SELECT * FROM audit_log WHERE 0;
INSERT INTO audit_log_kept_v1 SELECT * FROM audit_log;
DROP TABLE audit_log;
CREATE TABLE IF NOT EXISTS sse_events_kept_v1 AS SELECT * FROM sse_events WHERE 0;
INSERT INTO sse_events_kept_v1 SELECT * FROM sse_events;
DROP TABLE sse_events;
CREATE TABLE IF NOT EXISTS sessions_kept_v1 AS SELECT * FROM sessions WHERE 0;
INSERT INTO sessions_kept_v1 SELECT * FROM sessions;
DROP TABLE sessions;
CREATE TABLE IF NOT EXISTS kv_kept_v1 AS SELECT * FROM kv WHERE 0;
INSERT INTO kv_kept_v1 SELECT * FROM kv;
DROP TABLE kv;
"#;

const V2_DOWN: &str = r#"
ALTER TABLE sessions DROP COLUMN standalone_stream;
"#;

/// The entity types go back into the full-text index; `memory_types` is
/// derived from `memory_entities`, so dropping it loses nothing.
const V3_DOWN: &str = r#"
DROP TRIGGER memory_entities_ai;
DROP TRIGGER memory_entities_ad;
DROP INDEX memory_entities_type;
DROP TABLE memory_types;
INSERT INTO memory_search(rowid, entity_id, text)
    SELECT -2 * id - 1, id, entity_type FROM memory_entities;
CREATE TRIGGER memory_entities_ai AFTER INSERT ON memory_entities BEGIN
    INSERT INTO memory_search(rowid, entity_id, text)
        VALUES (-2 * new.id, new.id, new.name), (-2 * new.id - 1, new.id, new.entity_type);
END;
CREATE TRIGGER memory_entities_ad AFTER DELETE ON memory_entities BEGIN
    DELETE FROM memory_search WHERE rowid IN (-2 * old.id, -2 * old.id - 1);
END;
INSERT INTO memory_search(memory_search, rank) VALUES ('automerge', 4);
INSERT INTO memory_search(memory_search, rank) VALUES ('crisismerge', 16);
"#;

const V4_DOWN: &str = r#"
CREATE TABLE IF NOT EXISTS repl_log_kept_v4 AS SELECT * FROM repl_log WHERE 0;
INSERT INTO repl_log_kept_v4 SELECT * FROM repl_log;
DROP TABLE repl_log;
"#;

/// Every migration of this release, in order.
const REGULAR: &[Migration] = &[
    Migration {
        version: 1,
        up: V1_UP,
        down: V1_DOWN,
    },
    Migration {
        version: 2,
        up: V2_UP,
        down: V2_DOWN,
    },
    Migration {
        version: 3,
        up: V3_UP,
        down: V3_DOWN,
    },
    Migration {
        version: 4,
        up: V4_UP,
        down: V4_DOWN,
    },
    Migration {
        version: 5,
        up: V5_UP,
        down: V5_DOWN,
    },
    Migration {
        version: 6,
        up: V6_UP,
        down: V6_DOWN,
    },
    Migration {
        version: 7,
        up: V7_UP,
        down: V7_DOWN,
    },
];

/// The test build of a next release (`next-release`, never a release):
/// one more migration that adds a column and a table.
#[cfg(feature = "next-release")]
const NEXT: Migration = Migration {
    version: REGULAR.len() as i64 + 1,
    up: r#"
ALTER TABLE memory_entities ADD COLUMN updated_at INTEGER;
CREATE TABLE memory_tags (
    entity_id INTEGER NOT NULL,
    tag       TEXT NOT NULL,
    PRIMARY KEY (entity_id, tag)
) WITHOUT ROWID;
"#,
    down: r#"
CREATE TABLE IF NOT EXISTS memory_tags_kept AS SELECT * FROM memory_tags WHERE 0;
INSERT INTO memory_tags_kept SELECT * FROM memory_tags;
DROP TABLE memory_tags;
ALTER TABLE memory_entities DROP COLUMN updated_at;
"#,
};

/// Every migration this binary knows, in order.
pub fn all() -> impl Iterator<Item = &'static Migration> {
    let next: &'static [Migration] = {
        #[cfg(feature = "next-release")]
        {
            std::slice::from_ref(&NEXT)
        }
        #[cfg(not(feature = "next-release"))]
        {
            &[]
        }
    };
    REGULAR.iter().chain(next)
}

/// The schema version this binary writes.
pub fn latest_version() -> i64 {
    all().last().map_or(0, |m| m.version)
}

/// Where the down steps of applied migrations are kept, with the release
/// that recorded them. Not a migration: it must read the same in every
/// version.
const DOWNS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_downs (
    version INTEGER PRIMARY KEY,
    down    TEXT NOT NULL,
    by      TEXT NOT NULL,
    at      INTEGER NOT NULL
)";

/// What opening a database will do to its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The schema is this binary's.
    Current,
    /// Up from `from` (0: a new database).
    Up { from: i64, to: i64 },
    /// Down from `from`, with the down steps recorded in the database.
    Down { from: i64, to: i64 },
}

/// The database's schema version.
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// What [`migrate`] will do; refuses a newer schema it cannot take back.
/// Reads only.
pub fn plan(conn: &Connection, path: &str) -> Result<Plan, StoreError> {
    plan_to(conn, path, latest_version())
}

fn plan_to(conn: &Connection, path: &str, known: i64) -> Result<Plan, StoreError> {
    let found = version(conn)?;
    if found < known {
        return Ok(Plan::Up {
            from: found,
            to: known,
        });
    }
    if found == known {
        return Ok(Plan::Current);
    }
    let missing = missing_downs(conn, known, found)?;
    if !missing.is_empty() {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    Ok(Plan::Down {
        from: found,
        to: known,
    })
}

/// Versions in `(known, found]` whose down steps the database lacks.
fn missing_downs(conn: &Connection, known: i64, found: i64) -> Result<Vec<i64>, StoreError> {
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_downs'",
        [],
        |r| r.get(0),
    )?;
    let mut missing = Vec::new();
    for v in known + 1..=found {
        let there = has_table
            && conn
                .query_row("SELECT 1 FROM schema_downs WHERE version = ?1", [v], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
        if !there {
            missing.push(v);
        }
    }
    Ok(missing)
}

/// Brings the database to this binary's schema: up (recording each
/// migration's down steps), or down (with the steps the newer binary
/// recorded), in one transaction. `by` names this release in the record.
pub fn migrate(conn: &mut Connection, path: &str, by: &str) -> Result<Plan, StoreError> {
    migrate_to(conn, path, by, latest_version())
}

fn migrate_to(
    conn: &mut Connection,
    path: &str,
    by: &str,
    target: i64,
) -> Result<Plan, StoreError> {
    let plan = plan_to(conn, path, target)?;
    let tx = Transaction::new(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(DOWNS_TABLE)?;
    match plan {
        Plan::Current => {}
        Plan::Up { from, to } => {
            for m in all().filter(|m| m.version > from && m.version <= to) {
                tx.execute_batch(m.up).map_err(|e| {
                    StoreError::Migration(format!("up to version {}: {e}", m.version))
                })?;
            }
            tx.pragma_update(None, "user_version", to)?;
        }
        Plan::Down { from, to } => {
            for v in (to + 1..=from).rev() {
                let down: String = tx.query_row(
                    "SELECT down FROM schema_downs WHERE version = ?1",
                    [v],
                    |r| r.get(0),
                )?;
                tx.execute_batch(&down)
                    .map_err(|e| StoreError::Migration(format!("down from version {v}: {e}")))?;
            }
            tx.execute("DELETE FROM schema_downs WHERE version > ?1", [to])?;
            tx.pragma_update(None, "user_version", to)?;
        }
    }
    record_downs(&tx, by)?;
    if plan != Plan::Current {
        crate::clock::pause_point("migrate.before_commit");
    }
    tx.commit()?;
    Ok(plan)
}

/// Records the down steps of every migration this binary knows and the
/// database has (also those applied before they were recorded).
fn record_downs(tx: &Transaction<'_>, by: &str) -> Result<(), StoreError> {
    let at = crate::clock::now_secs();
    let current = version(tx)?;
    for m in all().filter(|m| m.version <= current) {
        tx.execute(
            "INSERT INTO schema_downs (version, down, by, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(version) DO NOTHING",
            params![m.version, m.down, by, at],
        )?;
    }
    Ok(())
}

/// Migrates to this binary's schema, as a test or a tool would.
pub fn to_latest(conn: &mut Connection) -> Result<Plan, StoreError> {
    migrate(conn, ":memory:", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn versions_follow_each_other_from_one() {
        for (i, m) in all().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }

    #[test]
    fn a_new_database_reaches_the_latest_version_with_every_down_recorded() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            to_latest(&mut conn).unwrap(),
            Plan::Up {
                from: 0,
                to: latest_version()
            }
        );
        assert_eq!(version(&conn).unwrap(), latest_version());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schema_downs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, latest_version());
        assert_eq!(to_latest(&mut conn).unwrap(), Plan::Current);
    }

    /// Rows in every table of a schema at `v`, as the releases write them.
    fn populate(c: &Connection, v: i64) {
        c.execute_batch(
            "INSERT INTO kv VALUES ('k', x'01');
             INSERT INTO sessions (id, protocol_version, client_info, capabilities, created_at, last_seen_at)
                 VALUES ('s1', '2025-11-25', '{}', '{}', 1, 2);
             INSERT INTO sse_events VALUES ('s1', 7, 1, 'data', 3);
             INSERT INTO audit_log (at_ms, kind, subject, outcome) VALUES (4, 'tool', 't', 'ok');
             INSERT INTO memory_entities (name, entity_type) VALUES ('alice', 'person'), ('bob', 'cat');
             INSERT INTO memory_observations (entity_id, content) VALUES (1, 'likes tea');
             INSERT INTO memory_relations (from_name, to_name, relation_type) VALUES ('alice', 'bob', 'owns');",
        )
        .unwrap();
        if v >= 2 {
            c.execute_batch("UPDATE sessions SET standalone_stream = 7")
                .unwrap();
        }
        if v >= 4 {
            c.execute_batch("INSERT INTO repl_log VALUES (1, 1, x'00', 5, x'00')")
                .unwrap();
        }
        if v >= 5 {
            c.execute_batch(
                "INSERT INTO tasks (id, owner, runner, protocol_version, method, request, client, status,
                    created_at_ms, updated_at_ms, ttl_ms, expires_at_ms, poll_interval_ms)
                 VALUES ('t1', 'o', 'r', '2025-11-25', 'tools/call', '{}', '{}', 'completed', 1, 2, 3, 4, 5)",
            )
            .unwrap();
        }
        if v >= 6 {
            c.execute_batch(
                "INSERT INTO tokens VALUES ('ci', x'0102', 'memory:read', 1, NULL, NULL);
                 UPDATE audit_log SET principal = 'ci';",
            )
            .unwrap();
        }
    }

    /// Every table's rows in order; the full-text index by what it finds.
    fn dump(c: &Connection) -> BTreeMap<String, Vec<String>> {
        let tables: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                 AND name NOT LIKE 'memory_search_%' AND name != 'schema_downs'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let mut out = BTreeMap::new();
        for t in tables {
            let sql = if t == "memory_search" {
                "SELECT rowid, entity_id, text FROM memory_search ORDER BY rowid".to_owned()
            } else {
                format!("SELECT * FROM \"{t}\" ORDER BY 1")
            };
            let mut stmt = c.prepare(&sql).unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    let vals: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                        .collect();
                    Ok(vals.join("|"))
                })
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            out.insert(t, rows);
        }
        out
    }

    /// Up to the latest schema and back down with the recorded steps gives
    /// back the same rows, from every version; what the newer schema's
    /// tables held is kept aside, never dropped.
    #[test]
    fn every_migration_goes_up_and_down_keeping_the_rows() {
        for k in 1..latest_version() {
            let mut c = Connection::open_in_memory().unwrap();
            migrate_to(&mut c, "t", "test", k).unwrap();
            populate(&c, k);
            let before = dump(&c);
            migrate(&mut c, "t", "test").unwrap();
            populate_newer(&c, k);
            // As an older binary: down with what the newer one recorded.
            assert_eq!(
                migrate_to(&mut c, "t", "old", k).unwrap(),
                Plan::Down {
                    from: latest_version(),
                    to: k
                }
            );
            let mut after = dump(&c);
            let kept: Vec<String> = after
                .keys()
                .filter(|t| t.contains("_kept"))
                .cloned()
                .collect();
            for t in kept {
                let rows = after.remove(&t).unwrap();
                assert!(
                    !rows.is_empty() || !(t.contains("tasks") || t.contains("tokens")),
                    "from {k}: {t} kept the newer release's rows"
                );
            }
            assert_eq!(before, after, "from version {k} up and down again");
            migrate(&mut c, "t", "test").unwrap();
            assert_eq!(version(&c).unwrap(), latest_version(), "and up again");
        }
    }

    /// Rows only the newer schema can hold, which the way down keeps aside
    /// (or drops with the column that held them).
    fn populate_newer(c: &Connection, k: i64) {
        #[cfg(feature = "next-release")]
        c.execute_batch(
            "UPDATE memory_entities SET updated_at = 9;
             INSERT INTO memory_tags VALUES (1, 'friend');",
        )
        .unwrap();
        if k < 6 {
            c.execute_batch(
                "INSERT INTO tokens VALUES ('new', x'03', '*', 1, 2, NULL);
                 UPDATE audit_log SET principal = 'new';",
            )
            .unwrap();
        }
        if k < 5 {
            c.execute_batch(
                "INSERT INTO tasks (id, owner, runner, protocol_version, method, request, client, status,
                    created_at_ms, updated_at_ms, ttl_ms, expires_at_ms, poll_interval_ms)
                 VALUES ('new', 'o', 'r', '2025-11-25', 'tools/call', '{}', '{}', 'working', 1, 2, 3, 4, 5)",
            )
            .unwrap();
        }
    }

    #[test]
    fn a_newer_schema_without_its_down_steps_is_refused_untouched() {
        let mut c = Connection::open_in_memory().unwrap();
        to_latest(&mut c).unwrap();
        let newer = latest_version() + 1;
        c.pragma_update(None, "user_version", newer).unwrap();
        let err = migrate(&mut c, "db", "test").unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == newer),
            "{err}"
        );
        assert_eq!(version(&c).unwrap(), newer);
    }
}
