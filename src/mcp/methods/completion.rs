//! `completion/complete`: argument suggestions for prompts and resource
//! templates.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::params;
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::server::Server;
use crate::mcp::toolset::CompletionRef;

/// The spec caps one completion response at 100 values.
const MAX_VALUES: usize = 100;

/// The `ref` of a completion request.
#[derive(Deserialize)]
pub(crate) struct Reference {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

impl Reference {
    /// The prompt or resource template it names; `None` when malformed.
    pub(crate) fn target(&self) -> Option<CompletionRef<'_>> {
        match (self.kind.as_str(), &self.name, &self.uri) {
            ("ref/prompt", Some(name), _) => Some(CompletionRef::Prompt(name)),
            ("ref/resource", _, Some(uri)) => Some(CompletionRef::Resource(uri)),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Argument {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct CompleteParams {
    #[serde(rename = "ref")]
    reference: Reference,
    argument: Argument,
    #[serde(default)]
    context: Option<Context>,
}

pub async fn complete(
    server: &Server,
    _ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: CompleteParams = params(raw)?;
    let Some(reference) = p.reference.target() else {
        return Err(McpError::invalid_params(format!(
            "ref must be ref/prompt with a name or ref/resource with a uri, not {:?}",
            p.reference.kind
        )));
    };
    let context = p.context.as_ref().and_then(|c| c.arguments.as_ref());
    let mut values = server
        .catalog()
        .complete(&reference, &p.argument.name, &p.argument.value, context)
        .await;
    let total = values.len();
    values.truncate(MAX_VALUES);
    Ok(json!({
        "completion": {
            "values": values,
            "total": total,
            "hasMore": total > MAX_VALUES,
        }
    }))
}
