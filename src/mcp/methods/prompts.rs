//! `prompts/list` and `prompts/get`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{ListParams, handler_error, list_result, params};
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::server::Server;

pub fn list(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: ListParams = params(raw)?;
    let (prompts, next) = server.catalog().prompts_page(
        ctx.version,
        p.cursor.as_deref(),
        server.settings().page_size,
        ctx.grant.as_deref(),
    )?;
    Ok(list_result("prompts", prompts, next))
}

#[derive(Deserialize)]
struct GetParams {
    name: String,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
}

pub async fn get(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: GetParams = params(raw)?;
    let catalog = server.catalog();
    let Some((def, toolset)) = catalog.prompt(&p.name) else {
        return Err(McpError::invalid_params(format!(
            "Unknown prompt: {}",
            p.name
        )));
    };
    let args = p.arguments.unwrap_or_default();
    if let Some(arg) = def
        .arguments
        .iter()
        .find(|a| a.required && !args.contains_key(&a.name))
    {
        return Err(McpError::invalid_params(format!(
            "prompt {} needs the argument {:?}",
            p.name, arg.name
        )));
    }
    if let Some((k, _)) = args.iter().find(|(_, v)| !v.is_string()) {
        return Err(McpError::invalid_params(format!(
            "prompt argument {k:?} must be a string"
        )));
    }
    match toolset.get_prompt(&p.name, &args, ctx).await {
        Ok(v) => Ok(v),
        Err(e) => handler_error(ctx, e),
    }
}
