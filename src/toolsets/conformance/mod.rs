//! The `conformance` toolset: the tools, resources and prompts the official
//! MCP conformance suite expects (mirroring its reference
//! `everything-server.ts`). Off unless enabled (`--fixture conformance`).
//!
//! One module per concern, each with a table of its tools ([`Tool`]):
//! every name is written once, beside its description, schema and handler.
//! [`content`] (plain results), [`streaming`] (logs, progress, reconnection,
//! list changes), [`input`] (sampling, elicitation, roots: server requests
//! on a legacy session, `InputRequiredResult` on a modern request),
//! [`tasks`] (tools that run as tasks, each with its `taskSupport`),
//! [`resources`], [`prompts`].

mod content;
mod input;
mod prompts;
mod resources;
mod streaming;
mod tasks;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::notify::Hub;
use crate::mcp::toolset::{
    CompletionRef, Page, PromptDef, ResourceDef, ResourceTemplateDef, ToolDef, ToolError,
    ToolResult, Toolset,
};

/// A 1x1 PNG, as the reference fixture sends it.
const IMAGE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// Runs one fixture tool.
type Call = for<'a> fn(&'a Conformance, Value, &'a RequestContext) -> BoxFuture<'a, ToolResult>;

/// A fixture tool: its name, written once, and everything about it.
struct Tool {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Value,
    call: Call,
}

/// An answer that needs no waiting.
fn done<'a>(out: ToolResult) -> BoxFuture<'a, ToolResult> {
    Box::pin(std::future::ready(out))
}

fn empty() -> Value {
    json!({ "type": "object", "properties": {} })
}

pub struct Conformance {
    hub: Arc<Hub>,
}

impl Conformance {
    pub fn new(hub: Arc<Hub>) -> Self {
        Conformance { hub }
    }

    fn all_tools() -> impl Iterator<Item = &'static Tool> {
        content::TOOLS
            .iter()
            .chain(streaming::TOOLS)
            .chain(input::TOOLS)
            .chain(tasks::TOOLS.iter().map(|t| &t.tool))
    }

    /// A tool's definition, with its task support when it has one.
    fn def(t: &Tool) -> ToolDef {
        let def = ToolDef::new(t.name, t.description, (t.schema)());
        match tasks::TOOLS.iter().find(|x| x.tool.name == t.name) {
            Some(x) if x.rerun_safe => def.task_support(x.support).rerun_safe(),
            Some(x) => def.task_support(x.support),
            None => def,
        }
    }
}

#[async_trait]
impl Toolset for Conformance {
    fn name(&self) -> &'static str {
        "conformance"
    }

    fn tools(&self) -> Vec<ToolDef> {
        Self::all_tools().map(Self::def).collect()
    }

    async fn call_tool(&self, name: &str, args: Value, ctx: &RequestContext) -> ToolResult {
        match Self::all_tools().find(|t| t.name == name) {
            Some(t) => (t.call)(self, args, ctx).await,
            None => Err(ToolError::Protocol(McpError::invalid_params(format!(
                "Unknown tool: {name}"
            )))),
        }
    }

    async fn list_resources(
        &self,
        cursor: Option<&str>,
        _limit: usize,
    ) -> Result<Page<ResourceDef>, McpError> {
        if cursor.is_some() {
            return Ok(Page::default());
        }
        Ok(Page {
            items: resources::list(),
            next: None,
        })
    }

    fn resource_templates(&self) -> Vec<ResourceTemplateDef> {
        resources::templates()
    }

    fn owns_uri(&self, uri: &str) -> bool {
        uri.starts_with(resources::SCHEME)
    }

    async fn read_resource(
        &self,
        uri: &str,
        _ctx: &RequestContext,
    ) -> Result<Option<Vec<Value>>, ToolError> {
        Ok(resources::read(uri))
    }

    fn prompts(&self) -> Vec<PromptDef> {
        prompts::list()
    }

    async fn get_prompt(
        &self,
        name: &str,
        args: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ToolError> {
        prompts::get(name, args, ctx).await
    }

    async fn complete(
        &self,
        _reference: &CompletionRef<'_>,
        _argument: &str,
        _value: &str,
        _context: Option<&Map<String, Value>>,
    ) -> Option<Vec<String>> {
        // The reference fixture answers every completion with no values.
        Some(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_name_is_unique() {
        let mut names: Vec<&str> = Conformance::all_tools().map(|t| t.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
