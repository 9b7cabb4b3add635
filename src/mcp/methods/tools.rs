//! `tools/list` and `tools/call`. A call runs on its request or as a task;
//! `crate::mcp::tasks::launch` decides and starts it.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::time::Instant;

use super::{ListParams, list_result, params};
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::server::Server;
use crate::mcp::tasks::launch::{self, Launched, Plan, ToolCall};
use crate::mcp::tasks::runner;
use crate::mcp::toolset::{ToolError, ToolOutput, ToolResult};
use crate::store::{self, Store, audit::AuditEntry};

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
        ctx.grant.as_deref(),
    )?;
    Ok(list_result("tools", tools, next))
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
    /// 2025-11-25: the client asks for a task (`{ "ttl": ms }`). Other
    /// revisions ignore it (2026-07-28 clients may still send it).
    #[serde(default)]
    task: Option<Value>,
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
    // The request's span (see `dispatch`) names the tool.
    tracing::Span::current()
        .record("gen_ai.tool.name", p.name.as_str())
        .record("erlmcp.toolset", toolset.name());
    let plan = launch::plan(ctx, &entry.def, p.task.as_ref(), &server.settings().tasks)?;
    let started = Instant::now();
    let duration = entry.duration.clone();
    let scope = ctx
        .grant
        .as_deref()
        .and_then(|g| catalog.scope_for(g, entry))
        .map(str::to_owned);
    let call = ToolCall {
        catalog: catalog.clone(),
        name: p.name,
        args,
        started,
        scope,
    };
    let answered = run(server, ctx, call, plan).await;
    // The latency objective's measure: until the client has its answer (a
    // result, an error, or the handle of a task that goes on).
    duration.record(started.elapsed().as_secs_f64());
    answered
}

async fn run(
    server: &Server,
    ctx: &RequestContext,
    call: ToolCall,
    plan: Plan,
) -> Result<Value, McpError> {
    match plan {
        Plan::Direct => {
            let mut call = call;
            let args = std::mem::take(&mut call.args);
            let outcome = runner::invoke(&call.catalog, &call.name, args, ctx).await;
            answer(server, ctx, &call, outcome)
        }
        Plan::TaskNow { ttl_ms } => launch::task_now(server, ctx, call, ttl_ms).await,
        Plan::Candidate => {
            // What the answer needs of the call, should it finish in time.
            let done = ToolCall {
                catalog: call.catalog.clone(),
                name: call.name.clone(),
                args: Value::Null,
                started: call.started,
                scope: call.scope.clone(),
            };
            match launch::candidate(server, ctx, call).await? {
                Launched::Task(created) => Ok(created),
                Launched::Finished(outcome) => answer(server, ctx, &done, outcome),
            }
        }
    }
}

/// The answer of a call that ran on its request, recorded in the audit log.
fn answer(
    server: &Server,
    ctx: &RequestContext,
    call: &ToolCall,
    outcome: ToolResult,
) -> Result<Value, McpError> {
    if server.settings().audit_tool_calls {
        let who = Actor {
            session_id: ctx.session_id().map(str::to_owned),
            principal: ctx.grant.as_ref().map(|g| g.principal.clone()),
            scope: call.scope.clone(),
        };
        audit_to(&server.store, who, &call.name, &outcome, call.started);
    }
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

/// Who made a tool call, as its audit row names them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Actor {
    pub session_id: Option<String>,
    pub principal: Option<String>,
    /// The scope that allowed the call.
    pub scope: Option<String>,
}

/// Records a tool call in the audit log (batched: it never delays the call).
pub(crate) fn audit_to(
    store: &Store,
    who: Actor,
    tool: &str,
    outcome: &ToolResult,
    started: Instant,
) {
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
        session_id: who.session_id,
        kind: "tool".into(),
        subject: tool.to_owned(),
        outcome: result.into(),
        duration_us: Some(started.elapsed().as_micros() as i64),
        detail,
        principal: who.principal,
        scope: who.scope,
    };
    store.write_batched(move |tx| store::audit::record(tx, &entry));
}
