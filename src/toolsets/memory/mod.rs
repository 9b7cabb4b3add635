//! The `memory` toolset: a knowledge graph with the tools (names, argument
//! and result shapes) of the reference `@modelcontextprotocol/server-memory`,
//! stored in SQLite with a trigram full-text index. Also serves the graph as
//! resources: `memory://knowledge-graph` and one `memory://entities/{name}`
//! per entity.

pub mod graph;

use async_trait::async_trait;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::notify::{Change, Hub};
use crate::mcp::toolset::{
    CompletionRef, Page, ResourceDef, ResourceTemplateDef, TaskSupport, ToolDef, ToolError,
    ToolOutput, ToolResult, Toolset,
};
use crate::store::{Store, StoreError};
use graph::{Entity, ObservationAdd, ObservationDelete, Relation};

pub const GRAPH_URI: &str = "memory://knowledge-graph";
const ENTITY_PREFIX: &str = "memory://entities/";

pub struct Memory {
    store: Store,
    hub: Arc<Hub>,
}

impl Memory {
    pub fn new(store: Store, hub: Arc<Hub>) -> Self {
        Memory { store, hub }
    }

    fn changed(&self, entities: impl IntoIterator<Item = String>, list_changed: bool) {
        self.hub.publish(Change::ResourceUpdated(GRAPH_URI.into()));
        for name in entities {
            self.hub.publish(Change::ResourceUpdated(entity_uri(&name)));
        }
        if list_changed {
            self.hub.publish(Change::ResourcesListChanged);
        }
    }
}

pub fn entity_uri(name: &str) -> String {
    format!(
        "{ENTITY_PREFIX}{}",
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    )
}

fn args<T: DeserializeOwned>(v: Value) -> Result<T, ToolError> {
    serde_json::from_value(v).map_err(|e| ToolError::Failed(format!("invalid arguments: {e}")))
}

/// Store errors the caller caused (an unknown entity) are tool failures
/// with the reference server's message; others are storage errors.
fn store_err(e: StoreError) -> ToolError {
    match e {
        StoreError::Invalid(msg) => ToolError::Failed(msg),
        other => ToolError::from(other),
    }
}

#[derive(Deserialize)]
struct EntitiesArg {
    entities: Vec<Entity>,
}
#[derive(Deserialize)]
struct RelationsArg {
    relations: Vec<Relation>,
}
#[derive(Deserialize)]
struct ObservationsArg {
    observations: Vec<ObservationAdd>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntityNamesArg {
    entity_names: Vec<String>,
}
#[derive(Deserialize)]
struct DeletionsArg {
    deletions: Vec<ObservationDelete>,
}
#[derive(Deserialize)]
struct QueryArg {
    query: String,
}
#[derive(Deserialize)]
struct NamesArg {
    names: Vec<String>,
}

/// A `create_entities` batch this large answers a modern client with a task
/// at once rather than after `tasks.promote_after_ms`.
const LONG_BATCH: usize = 1000;

impl Memory {
    async fn create_entities(&self, a: EntitiesArg, ctx: &RequestContext) -> ToolResult {
        if a.entities.len() >= LONG_BATCH {
            ctx.promote().await;
        }
        let created = self
            .store
            .write(move |tx| graph::create_entities(tx, &a.entities))
            .await
            .map_err(store_err)?;
        self.changed(created.iter().map(|e| e.name.clone()), !created.is_empty());
        Ok(ToolOutput::structured(json!({ "entities": created })))
    }

    async fn create_relations(&self, a: RelationsArg) -> ToolResult {
        let created = self
            .store
            .write(move |tx| graph::create_relations(tx, &a.relations))
            .await
            .map_err(store_err)?;
        self.changed(Vec::new(), false);
        Ok(ToolOutput::structured(json!({ "relations": created })))
    }

    async fn add_observations(&self, a: ObservationsArg) -> ToolResult {
        let results = self
            .store
            .write(move |tx| graph::add_observations(tx, &a.observations))
            .await
            .map_err(store_err)?;
        self.changed(results.iter().map(|r| r.entity_name.clone()), false);
        Ok(ToolOutput::structured(json!({ "results": results })))
    }

    async fn delete_entities(&self, a: EntityNamesArg) -> ToolResult {
        let names = a.entity_names.clone();
        self.store
            .write(move |tx| graph::delete_entities(tx, &a.entity_names))
            .await
            .map_err(store_err)?;
        self.changed(names, true);
        Ok(done("Entities deleted successfully"))
    }

    async fn delete_observations(&self, a: DeletionsArg) -> ToolResult {
        let names: Vec<String> = a.deletions.iter().map(|d| d.entity_name.clone()).collect();
        self.store
            .write(move |tx| graph::delete_observations(tx, &a.deletions))
            .await
            .map_err(store_err)?;
        self.changed(names, false);
        Ok(done("Observations deleted successfully"))
    }

    async fn delete_relations(&self, a: RelationsArg) -> ToolResult {
        self.store
            .write(move |tx| graph::delete_relations(tx, &a.relations))
            .await
            .map_err(store_err)?;
        self.changed(Vec::new(), false);
        Ok(done("Relations deleted successfully"))
    }

    async fn read_graph(&self) -> ToolResult {
        let g = self
            .store
            .read(graph::read_graph)
            .await
            .map_err(store_err)?;
        Ok(ToolOutput::structured(json!(g)))
    }

    async fn search_nodes(&self, a: QueryArg) -> ToolResult {
        let g = self
            .store
            .read(move |c| graph::search_nodes(c, &a.query))
            .await
            .map_err(store_err)?;
        Ok(ToolOutput::structured(json!(g)))
    }

    async fn open_nodes(&self, a: NamesArg) -> ToolResult {
        let g = self
            .store
            .read(move |c| graph::open_nodes(c, &a.names))
            .await
            .map_err(store_err)?;
        Ok(ToolOutput::structured(json!(g)))
    }
}

/// The reference server's answer to deletions: text plus `{success, message}`.
fn done(message: &str) -> ToolOutput {
    ToolOutput {
        content: vec![json!({ "type": "text", "text": message })],
        structured: Some(json!({ "success": true, "message": message })),
        is_error: false,
    }
}

fn entity_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "The name of the entity" },
            "entityType": { "type": "string", "description": "The type of the entity" },
            "observations": {
                "type": "array", "items": { "type": "string" },
                "description": "An array of observation contents associated with the entity"
            }
        },
        "required": ["name", "entityType", "observations"],
        "additionalProperties": false
    })
}

fn relation_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "from": { "type": "string", "description": "The name of the entity where the relation starts" },
            "to": { "type": "string", "description": "The name of the entity where the relation ends" },
            "relationType": { "type": "string", "description": "The type of the relation" }
        },
        "required": ["from", "to", "relationType"],
        "additionalProperties": false
    })
}

/// An object schema; like the reference server's, it admits no other keys.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required,
            "additionalProperties": false })
}

fn graph_schema() -> Value {
    object(
        json!({
            "entities": { "type": "array", "items": entity_schema() },
            "relations": { "type": "array", "items": relation_schema() }
        }),
        &["entities", "relations"],
    )
}

fn success_schema() -> Value {
    object(
        json!({ "success": { "type": "boolean" }, "message": { "type": "string" } }),
        &["success", "message"],
    )
}

fn hints(read_only: bool, destructive: bool, idempotent: bool) -> Value {
    json!({
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": false
    })
}

#[async_trait]
impl Toolset for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn tools(&self) -> Vec<ToolDef> {
        let entities = json!({ "type": "array", "items": entity_schema() });
        let relations = json!({ "type": "array", "items": relation_schema() });
        let strings =
            |d: &str| json!({ "type": "array", "items": { "type": "string" }, "description": d });
        vec![
            ToolDef::new("create_entities", "Create multiple new entities in the knowledge graph",
                object(json!({ "entities": entities }), &["entities"]))
                .title("Create Entities")
                .output_schema(object(json!({ "entities": entities }), &["entities"]))
                .annotations(hints(false, false, false))
                // Existing names are skipped, so a second run adds nothing twice.
                .task_support(TaskSupport::Optional)
                .rerun_safe(),
            ToolDef::new("create_relations",
                "Create multiple new relations between entities in the knowledge graph. Relations should be in active voice",
                object(json!({ "relations": relations }), &["relations"]))
                .title("Create Relations")
                .output_schema(object(json!({ "relations": relations }), &["relations"]))
                .annotations(hints(false, false, false)),
            ToolDef::new("add_observations", "Add new observations to existing entities in the knowledge graph",
                object(json!({ "observations": { "type": "array", "items": object(json!({
                    "entityName": { "type": "string", "description": "The name of the entity to add the observations to" },
                    "contents": strings("An array of observation contents to add")
                }), &["entityName", "contents"]) } }), &["observations"]))
                .title("Add Observations")
                .output_schema(object(json!({ "results": { "type": "array", "items": object(json!({
                    "entityName": { "type": "string" },
                    "addedObservations": { "type": "array", "items": { "type": "string" } }
                }), &["entityName", "addedObservations"]) } }), &["results"]))
                .annotations(hints(false, false, false)),
            ToolDef::new("delete_entities", "Delete multiple entities and their associated relations from the knowledge graph",
                object(json!({ "entityNames": strings("An array of entity names to delete") }), &["entityNames"]))
                .title("Delete Entities")
                .output_schema(success_schema())
                .annotations(hints(false, true, true)),
            ToolDef::new("delete_observations", "Delete specific observations from entities in the knowledge graph",
                object(json!({ "deletions": { "type": "array", "items": object(json!({
                    "entityName": { "type": "string", "description": "The name of the entity containing the observations" },
                    "observations": strings("An array of observations to delete")
                }), &["entityName", "observations"]) } }), &["deletions"]))
                .title("Delete Observations")
                .output_schema(success_schema())
                .annotations(hints(false, true, true)),
            ToolDef::new("delete_relations", "Delete multiple relations from the knowledge graph",
                object(json!({ "relations": { "type": "array", "items": relation_schema(),
                    "description": "An array of relations to delete" } }), &["relations"]))
                .title("Delete Relations")
                .output_schema(success_schema())
                .annotations(hints(false, true, true)),
            ToolDef::new("read_graph", "Read the entire knowledge graph", object(json!({}), &[]))
                .title("Read Graph")
                .output_schema(graph_schema())
                .annotations(hints(true, false, true))
                .task_support(TaskSupport::Optional)
                .rerun_safe(),
            ToolDef::new("search_nodes", "Search for nodes in the knowledge graph based on a query",
                object(json!({ "query": { "type": "string",
                    "description": "The search query to match against entity names, types, and observation content" } }), &["query"]))
                .title("Search Nodes")
                .output_schema(graph_schema())
                .annotations(hints(true, false, true)),
            ToolDef::new("open_nodes", "Open specific nodes in the knowledge graph by their names",
                object(json!({ "names": strings("An array of entity names to retrieve") }), &["names"]))
                .title("Open Nodes")
                .output_schema(graph_schema())
                .annotations(hints(true, false, true)),
        ]
    }

    async fn call_tool(&self, name: &str, a: Value, ctx: &RequestContext) -> ToolResult {
        match name {
            "create_entities" => self.create_entities(args(a)?, ctx).await,
            "create_relations" => self.create_relations(args(a)?).await,
            "add_observations" => self.add_observations(args(a)?).await,
            "delete_entities" => self.delete_entities(args(a)?).await,
            "delete_observations" => self.delete_observations(args(a)?).await,
            "delete_relations" => self.delete_relations(args(a)?).await,
            "read_graph" => self.read_graph().await,
            "search_nodes" => self.search_nodes(args(a)?).await,
            "open_nodes" => self.open_nodes(args(a)?).await,
            other => Err(ToolError::Protocol(McpError::invalid_params(format!(
                "Unknown tool: {other}"
            )))),
        }
    }

    async fn list_resources(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ResourceDef>, McpError> {
        let after: i64 = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| McpError::invalid_params("invalid cursor"))?,
        };
        let mut items = Vec::new();
        if after == 0 {
            items.push(ResourceDef {
                uri: GRAPH_URI.into(),
                name: "knowledge-graph".into(),
                title: Some("Knowledge Graph".into()),
                description: Some(
                    "The full knowledge graph with all entities and relations".into(),
                ),
                mime_type: Some("application/json".into()),
                size: None,
            });
        }
        let want = limit.saturating_sub(items.len()).max(1);
        let rows = self
            .store
            .read(move |c| graph::entity_page(c, after, want))
            .await
            .map_err(McpError::internal)?;
        let next = (rows.len() == want)
            .then(|| rows.last().map(|r| r.0.to_string()))
            .flatten();
        items.extend(rows.into_iter().map(|(_, name, ty)| ResourceDef {
            uri: entity_uri(&name),
            description: Some(format!("Entity of type {ty}")),
            name,
            title: None,
            mime_type: Some("application/json".into()),
            size: None,
        }));
        Ok(Page { items, next })
    }

    fn resource_templates(&self) -> Vec<ResourceTemplateDef> {
        vec![ResourceTemplateDef {
            uri_template: format!("{ENTITY_PREFIX}{{name}}"),
            name: "entity".into(),
            title: Some("Knowledge graph entity".into()),
            description: Some("One entity with its observations and relations".into()),
            mime_type: Some("application/json".into()),
        }]
    }

    fn owns_uri(&self, uri: &str) -> bool {
        uri == GRAPH_URI || uri.starts_with(ENTITY_PREFIX)
    }

    async fn read_resource(
        &self,
        uri: &str,
        _ctx: &RequestContext,
    ) -> Result<Option<Vec<Value>>, ToolError> {
        let body = if uri == GRAPH_URI {
            let g = self.store.read(graph::read_graph).await?;
            serde_json::to_string_pretty(&g).unwrap_or_default()
        } else {
            let Some(encoded) = uri.strip_prefix(ENTITY_PREFIX) else {
                return Ok(None);
            };
            let name = percent_decode_str(encoded).decode_utf8_lossy().into_owned();
            let g = self
                .store
                .read(move |c| graph::open_nodes(c, std::slice::from_ref(&name)))
                .await?;
            if g.entities.is_empty() {
                return Ok(None);
            }
            serde_json::to_string_pretty(&g).unwrap_or_default()
        };
        Ok(Some(vec![
            json!({ "uri": uri, "mimeType": "application/json", "text": body }),
        ]))
    }

    async fn complete(
        &self,
        reference: &CompletionRef<'_>,
        argument: &str,
        value: &str,
        _context: Option<&Map<String, Value>>,
    ) -> Option<Vec<String>> {
        match reference {
            CompletionRef::Resource(t) if t.starts_with(ENTITY_PREFIX) && argument == "name" => {
                let prefix = value.to_owned();
                self.store
                    .read(move |c| graph::names_with_prefix(c, &prefix, 101))
                    .await
                    .ok()
            }
            _ => None,
        }
    }
}
