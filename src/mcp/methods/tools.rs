//! `tools/list` and `tools/call`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::time::Instant;

use super::{ListParams, list_result, params};
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::server::Server;
use crate::mcp::toolset::{ToolError, ToolOutput};
use crate::store::{self, audit::AuditEntry};

pub fn list(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: ListParams = params(raw)?;
    let (tools, next) = server.catalog().tools_page(
        ctx.version,
        p.cursor.as_deref(),
        server.settings().page_size,
    )?;
    Ok(list_result("tools", tools, next))
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

pub async fn call(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: CallParams = params(raw)?;
    let catalog = server.catalog();
    let Some((entry, toolset)) = catalog.tool(&p.name) else {
        return Err(
            McpError::invalid_params(format!("Unknown tool: {}", p.name))
                .with_data(json!({ "name": p.name })),
        );
    };
    let args = match p.arguments {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(a @ Value::Object(_)) => a,
        Some(_) => return Err(McpError::invalid_params("arguments must be an object")),
    };
    let started = Instant::now();
    let outcome = match entry.validate(&args) {
        // Invalid arguments are a tool execution error the model can fix.
        Err(why) => Ok(ToolOutput::error(format!(
            "Invalid arguments for tool {}: {why}",
            p.name
        ))),
        Ok(()) => toolset.call_tool(&p.name, args, ctx).await,
    };
    audit(server, ctx, &p.name, &outcome, started);
    match outcome {
        Ok(out) => Ok(out.to_json(ctx.version)),
        Err(e) => tool_error_to_result(ctx, e),
    }
}

/// Turns a handler's failure into a result or error, for any method that
/// may ask for input (tools/call, prompts/get, resources/read).
pub fn tool_error_to_result(ctx: &RequestContext, e: ToolError) -> Result<Value, McpError> {
    match e {
        ToolError::Failed(msg) => Ok(ToolOutput::error(msg).to_json(ctx.version)),
        ToolError::Protocol(err) => Err(err),
        ToolError::Cancelled => Err(McpError::new(-32800, "Request cancelled")),
        ToolError::InputRequired(ir) if ctx.version.is_stateless() => Ok(ir.to_json()),
        ToolError::InputRequired(_) => Err(McpError::internal(
            "a handler asked for input outside a multi round-trip request",
        )),
    }
}

fn audit(
    server: &Server,
    ctx: &RequestContext,
    tool: &str,
    outcome: &Result<ToolOutput, ToolError>,
    started: Instant,
) {
    if !server.settings().audit_tool_calls {
        return;
    }
    let (result, detail) = match outcome {
        Ok(o) if o.is_error => ("error", None),
        Ok(_) => ("ok", None),
        Err(ToolError::Failed(m)) => ("error", Some(m.clone())),
        Err(ToolError::Protocol(e)) => ("protocol_error", Some(e.message.clone())),
        Err(ToolError::Cancelled) => ("cancelled", None),
        Err(ToolError::InputRequired(_)) => ("input_required", None),
    };
    let entry = AuditEntry {
        at_ms: crate::clock::now_millis(),
        session_id: ctx.session_id().map(str::to_owned),
        kind: "tool".into(),
        subject: tool.to_owned(),
        outcome: result.into(),
        duration_us: Some(started.elapsed().as_micros() as i64),
        detail,
    };
    server
        .store
        .write_batched(move |tx| store::audit::record(tx, &entry));
}
