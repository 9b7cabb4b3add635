//! One module per MCP method group. Each handler deserializes exactly the
//! params it needs from the raw JSON and returns the result object.

pub mod completion;
pub mod lifecycle;
pub mod logging;
pub mod prompts;
pub mod resources;
pub mod subscriptions;
pub mod tasks;
pub mod tools;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use serde_json::Value;

use super::context::RequestContext;
use super::error::McpError;
use crate::mcp::toolset::ToolError;

/// Deserializes params (absent params read as `{}`); a mismatch is -32602.
pub fn params<T: DeserializeOwned>(raw: Option<&RawValue>) -> Result<T, McpError> {
    let text = raw.map(RawValue::get).unwrap_or("{}");
    serde_json::from_str(text).map_err(McpError::invalid_params)
}

/// The optional `cursor` of list requests.
#[derive(serde::Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Turns a prompt or resource handler's failure into the response: a failed
/// handler is an internal error here (only tools report `isError` results).
pub fn handler_error(ctx: &RequestContext, e: ToolError) -> Result<Value, McpError> {
    match e {
        ToolError::Failed(msg) => Err(McpError::internal(msg)),
        other => tools::tool_error_to_result(ctx, other),
    }
}

/// A list result: the items under `key`, and `nextCursor` when there is more.
pub fn list_result(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut result = serde_json::Map::new();
    result.insert(key.into(), Value::Array(items));
    if let Some(n) = next {
        result.insert("nextCursor".into(), Value::String(n));
    }
    Value::Object(result)
}
