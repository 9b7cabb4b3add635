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

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2)])
}

/// The schema version this binary writes.
pub fn latest_version() -> i64 {
    2
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
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
