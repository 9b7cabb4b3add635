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

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3), M::up(V4)])
}

/// The schema version this binary writes.
pub fn latest_version() -> i64 {
    4
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
