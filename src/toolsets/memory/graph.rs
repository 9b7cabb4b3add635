//! The knowledge graph in SQLite: the operations of the reference
//! `server-memory`, with its semantics (names are unique, relations name their
//! ends, searches are case-insensitive substring matches), made durable and
//! indexed.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

use crate::store::StoreError;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    pub name: String,
    pub entity_type: String,
    pub observations: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Relation {
    pub from: String,
    pub to: String,
    pub relation_type: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservationAdd {
    pub entity_name: String,
    pub contents: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservationsAdded {
    pub entity_name: String,
    pub added_observations: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservationDelete {
    pub entity_name: String,
    pub observations: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Graph {
    pub entities: Vec<Entity>,
    pub relations: Vec<Relation>,
}

/// Creates entities whose names are new; returns those created.
pub fn create_entities(
    tx: &Transaction<'_>,
    entities: &[Entity],
) -> Result<Vec<Entity>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO memory_entities (name, entity_type) VALUES (?1, ?2)
         ON CONFLICT(name) DO NOTHING RETURNING id",
    )?;
    let mut obs = tx.prepare_cached(
        "INSERT INTO memory_observations (entity_id, content) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
    )?;
    let mut created = Vec::new();
    for e in entities {
        let id: Option<i64> = insert
            .query_row(params![e.name, e.entity_type], |r| r.get(0))
            .optional()?;
        let Some(id) = id else { continue };
        for o in &e.observations {
            obs.execute(params![id, o])?;
        }
        created.push(e.clone());
    }
    Ok(created)
}

/// Creates relations not already present; returns those created.
pub fn create_relations(
    tx: &Transaction<'_>,
    relations: &[Relation],
) -> Result<Vec<Relation>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO memory_relations (from_name, to_name, relation_type) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    let mut created = Vec::new();
    for r in relations {
        if insert.execute(params![r.from, r.to, r.relation_type])? > 0 {
            created.push(r.clone());
        }
    }
    Ok(created)
}

/// Adds observations to existing entities. An unknown entity fails the
/// whole call (nothing is added), as in the reference server.
pub fn add_observations(
    tx: &Transaction<'_>,
    adds: &[ObservationAdd],
) -> Result<Vec<ObservationsAdded>, StoreError> {
    let mut find = tx.prepare_cached("SELECT id FROM memory_entities WHERE name = ?1")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO memory_observations (entity_id, content) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
    )?;
    let mut out = Vec::new();
    for a in adds {
        let id: Option<i64> = find.query_row([&a.entity_name], |r| r.get(0)).optional()?;
        let Some(id) = id else {
            return Err(StoreError::Invalid(format!(
                "Entity with name {} not found",
                a.entity_name
            )));
        };
        let mut added = Vec::new();
        for c in &a.contents {
            if insert.execute(params![id, c])? > 0 {
                added.push(c.clone());
            }
        }
        out.push(ObservationsAdded {
            entity_name: a.entity_name.clone(),
            added_observations: added,
        });
    }
    Ok(out)
}

/// Deletes entities, their observations, and every relation touching them.
pub fn delete_entities(tx: &Transaction<'_>, names: &[String]) -> Result<(), StoreError> {
    let mut del = tx.prepare_cached("DELETE FROM memory_entities WHERE name = ?1")?;
    let mut rel =
        tx.prepare_cached("DELETE FROM memory_relations WHERE from_name = ?1 OR to_name = ?1")?;
    for n in names {
        del.execute([n])?;
        rel.execute([n])?;
    }
    Ok(())
}

pub fn delete_observations(
    tx: &Transaction<'_>,
    deletions: &[ObservationDelete],
) -> Result<(), StoreError> {
    let mut del = tx.prepare_cached(
        "DELETE FROM memory_observations
         WHERE content = ?2 AND entity_id = (SELECT id FROM memory_entities WHERE name = ?1)",
    )?;
    for d in deletions {
        for o in &d.observations {
            del.execute(params![d.entity_name, o])?;
        }
    }
    Ok(())
}

pub fn delete_relations(tx: &Transaction<'_>, relations: &[Relation]) -> Result<(), StoreError> {
    let mut del = tx.prepare_cached(
        "DELETE FROM memory_relations WHERE from_name = ?1 AND to_name = ?2 AND relation_type = ?3",
    )?;
    for r in relations {
        del.execute(params![r.from, r.to, r.relation_type])?;
    }
    Ok(())
}

/// The whole graph, in creation order.
pub fn read_graph(conn: &Connection) -> Result<Graph, StoreError> {
    let ids: Vec<i64> = conn
        .prepare_cached("SELECT id FROM memory_entities ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let entities = load_entities(conn, &ids)?;
    let relations = conn
        .prepare_cached(
            "SELECT from_name, to_name, relation_type FROM memory_relations ORDER BY id",
        )?
        .query_map([], relation_row)?
        .collect::<Result<_, _>>()?;
    Ok(Graph {
        entities,
        relations,
    })
}

/// Entities whose name, type or any observation contains `query`
/// (case-insensitive), with every relation touching one of them.
pub fn search_nodes(conn: &Connection, query: &str) -> Result<Graph, StoreError> {
    let ids = matching_ids(conn, query)?;
    let entities = load_entities(conn, &ids)?;
    let relations = relations_touching(conn, &entities)?;
    Ok(Graph {
        entities,
        relations,
    })
}

/// The named entities, with every relation touching one of them.
pub fn open_nodes(conn: &Connection, names: &[String]) -> Result<Graph, StoreError> {
    let mut find = conn.prepare_cached("SELECT id FROM memory_entities WHERE name = ?1")?;
    let mut ids = Vec::new();
    for n in names {
        if let Some(id) = find.query_row([n], |r| r.get::<_, i64>(0)).optional()? {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let entities = load_entities(conn, &ids)?;
    let relations = relations_touching(conn, &entities)?;
    Ok(Graph {
        entities,
        relations,
    })
}

/// A page of entity names after `after_id`, for `resources/list`.
pub fn entity_page(
    conn: &Connection,
    after_id: i64,
    limit: usize,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT id, name, entity_type FROM memory_entities WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after_id, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Entity names starting with `prefix`, for completion.
pub fn names_with_prefix(
    conn: &Connection,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let pattern = format!("{}%", escape_like(prefix));
    let rows = conn
        .prepare_cached(
            "SELECT name FROM memory_entities WHERE name LIKE ?1 ESCAPE '\\' ORDER BY name LIMIT ?2",
        )?
        .query_map(params![pattern, limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn matching_ids(conn: &Connection, query: &str) -> Result<Vec<i64>, StoreError> {
    if query.is_empty() {
        // Every string contains the empty string.
        return Ok(conn
            .prepare_cached("SELECT id FROM memory_entities ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?);
    }
    let mut ids: Vec<i64> = if query.chars().count() >= 3 {
        // The trigram index answers substring queries of three or more characters.
        let phrase = format!("\"{}\"", query.replace('"', "\"\""));
        conn.prepare_cached(
            "SELECT DISTINCT entity_id FROM memory_search WHERE memory_search MATCH ?1",
        )?
        .query_map([phrase], |r| r.get(0))?
        .collect::<Result<_, _>>()?
    } else {
        let pattern = format!("%{}%", escape_like(query));
        conn.prepare_cached(
            "SELECT DISTINCT entity_id FROM memory_search WHERE text LIKE ?1 ESCAPE '\\'",
        )?
        .query_map([pattern], |r| r.get(0))?
        .collect::<Result<_, _>>()?
    };
    // The trigram tokenizer folds ASCII case only; keep the reference
    // server's full Unicode case folding by re-checking non-ASCII queries.
    if !query.is_ascii() {
        ids = recheck_unicode(conn, ids, query)?;
    }
    ids.extend(ids_of_matching_types(conn, query)?);
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Entities whose type contains `query`: the few distinct types are
/// matched in Rust (full Unicode case folding), their entities found by index.
fn ids_of_matching_types(conn: &Connection, query: &str) -> Result<Vec<i64>, StoreError> {
    let q = query.to_lowercase();
    let types: Vec<String> = conn
        .prepare_cached("SELECT entity_type FROM memory_types")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?
        .into_iter()
        .filter(|t| t.to_lowercase().contains(&q))
        .collect();
    let mut stmt = conn.prepare_cached("SELECT id FROM memory_entities WHERE entity_type = ?1")?;
    let mut ids = Vec::new();
    for t in types {
        for id in stmt.query_map([t], |r| r.get(0))? {
            ids.push(id?);
        }
    }
    Ok(ids)
}

fn recheck_unicode(conn: &Connection, ids: Vec<i64>, query: &str) -> Result<Vec<i64>, StoreError> {
    let q = query.to_lowercase();
    let all = load_entities(conn, &ids)?;
    Ok(ids
        .into_iter()
        .zip(all)
        .filter(|(_, e)| {
            e.name.to_lowercase().contains(&q)
                || e.entity_type.to_lowercase().contains(&q)
                || e.observations.iter().any(|o| o.to_lowercase().contains(&q))
        })
        .map(|(id, _)| id)
        .collect())
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn load_entities(conn: &Connection, ids: &[i64]) -> Result<Vec<Entity>, StoreError> {
    let mut ent =
        conn.prepare_cached("SELECT name, entity_type FROM memory_entities WHERE id = ?1")?;
    let mut obs = conn.prepare_cached(
        "SELECT content FROM memory_observations WHERE entity_id = ?1 ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some((name, entity_type)) = ent
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        else {
            continue;
        };
        let observations = obs
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        out.push(Entity {
            name,
            entity_type,
            observations,
        });
    }
    Ok(out)
}

fn relations_touching(conn: &Connection, entities: &[Entity]) -> Result<Vec<Relation>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, from_name, to_name, relation_type FROM memory_relations
         WHERE from_name = ?1 OR to_name = ?1",
    )?;
    let mut found: BTreeMap<i64, Relation> = BTreeMap::new();
    let mut seen = HashSet::new();
    for e in entities {
        if !seen.insert(&e.name) {
            continue;
        }
        let rows = stmt.query_map([&e.name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Relation {
                    from: r.get(1)?,
                    to: r.get(2)?,
                    relation_type: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (id, rel) = row?;
            found.insert(id, rel);
        }
    }
    Ok(found.into_values().collect())
}

fn relation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Relation> {
    Ok(Relation {
        from: r.get(0)?,
        to: r.get(1)?,
        relation_type: r.get(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrations::to_latest(&mut c).unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        c
    }

    fn e(name: &str, ty: &str, obs: &[&str]) -> Entity {
        Entity {
            name: name.into(),
            entity_type: ty.into(),
            observations: obs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn r(from: &str, to: &str, ty: &str) -> Relation {
        Relation {
            from: from.into(),
            to: to.into(),
            relation_type: ty.into(),
        }
    }

    #[test]
    fn reference_semantics_hold() {
        let mut c = db();
        let tx = c.transaction().unwrap();
        let made = create_entities(
            &tx,
            &[e("Ada", "person", &["wrote notes"]), e("Ada", "dup", &[])],
        )
        .unwrap();
        assert_eq!(made.len(), 1, "a name is created once");
        create_entities(&tx, &[e("Engine", "machine", &["Analytical"])]).unwrap();
        let rels = create_relations(
            &tx,
            &[
                r("Ada", "Engine", "programs"),
                r("Ada", "Engine", "programs"),
            ],
        )
        .unwrap();
        assert_eq!(rels.len(), 1);
        create_relations(&tx, &[r("Ada", "Ghost", "knows")]).unwrap();
        let added = add_observations(
            &tx,
            &[ObservationAdd {
                entity_name: "Ada".into(),
                contents: vec!["wrote notes".into(), "Countess".into()],
            }],
        )
        .unwrap();
        assert_eq!(added[0].added_observations, vec!["Countess".to_string()]);
        assert!(
            add_observations(
                &tx,
                &[ObservationAdd {
                    entity_name: "Nobody".into(),
                    contents: vec![]
                }]
            )
            .is_err()
        );
        tx.commit().unwrap();

        let g = search_nodes(&c, "ANALYT").unwrap();
        assert_eq!(
            g.entities
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["Engine"]
        );
        assert_eq!(g.relations, vec![r("Ada", "Engine", "programs")]);
        assert_eq!(
            search_nodes(&c, "da").unwrap().entities.len(),
            1,
            "short queries scan"
        );
        assert_eq!(search_nodes(&c, "").unwrap().entities.len(), 2);
        assert_eq!(search_nodes(&c, "%").unwrap().entities.len(), 0);
        let o = open_nodes(&c, &["Ada".into()]).unwrap();
        assert_eq!(o.relations.len(), 2, "relations touching either end");

        let tx = c.transaction().unwrap();
        delete_entities(&tx, &["Engine".into()]).unwrap();
        tx.commit().unwrap();
        let g = read_graph(&c).unwrap();
        assert_eq!(g.entities.len(), 1);
        assert_eq!(g.relations, vec![r("Ada", "Ghost", "knows")]);
        assert!(
            search_nodes(&c, "Analytical").unwrap().entities.is_empty(),
            "index follows deletes"
        );
    }

    #[test]
    fn unicode_search_folds_case() {
        let mut c = db();
        let tx = c.transaction().unwrap();
        create_entities(&tx, &[e("Émile", "person", &["ÜBER alles"])]).unwrap();
        tx.commit().unwrap();
        assert_eq!(search_nodes(&c, "über").unwrap().entities.len(), 1);
        assert_eq!(search_nodes(&c, "ÉMILE").unwrap().entities.len(), 1);
    }
}
