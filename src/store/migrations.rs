//! The schema, as an append-only list of migrations. The index of the last
//! applied migration is SQLite's `user_version`; a database with a higher
//! number than [`latest_version`] was written by a newer erlmcp and is
//! refused before anything is written to it.

use rusqlite_migration::{M, Migrations};

const V1: &str = r#"
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
const V2: &str = r#"
ALTER TABLE sessions ADD COLUMN standalone_stream INTEGER;
"#;

/// Entity types leave the full-text index (a row per entity for a handful
/// of distinct values made every insert rewrite a few huge posting lists);
/// a small table of distinct types is searched instead. FTS5 merges less
/// eagerly (automerge 8, crisismerge 64: a fifth less time per batch of
/// create_entities at 20k entities, the same search time).
const V3: &str = r#"
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
const V4: &str = r#"
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

/// The schema before V5 has no tasks; its indexes go with the table.
const V5_DOWN: &str = r#"
DROP TABLE tasks;
"#;

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5_UP).down(V5_DOWN),
    ])
}

/// The schema version this binary writes.
pub fn latest_version() -> i64 {
    5
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }

    #[test]
    fn tasks_migration_goes_down_exactly() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let m = super::migrations();
        let before = super::latest_version() - 1;
        m.to_version(&mut conn, before as usize).unwrap();
        let schema = |c: &rusqlite::Connection| -> Vec<String> {
            let mut s = c
                .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
                .unwrap();
            s.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let old = schema(&conn);
        m.to_latest(&mut conn).unwrap();
        assert_ne!(schema(&conn), old);
        m.to_version(&mut conn, before as usize).unwrap();
        assert_eq!(schema(&conn), old);
    }

    #[test]
    fn latest_version_matches_the_list() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, super::latest_version());
    }
}
