//! `tools/list` and `tools/call`. A call is served on its request, or as a
//! task (see `crate::mcp::tasks`): from the start when a 2025-11-25 client
//! asks for one, or, for a 2026-07-28 client that takes tasks, once it runs
//! longer than `tasks.promote_after_ms` or its handler asks.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ListParams, list_result, params};
use crate::mcp::catalog::Catalog;
use crate::mcp::context::RequestContext;
use crate::mcp::error::{METHOD_NOT_FOUND, McpError};
use crate::mcp::server::Server;
use crate::mcp::tasks::runner::{self, Job, Recorder};
use crate::mcp::tasks::slot::Slot;
use crate::mcp::tasks::{self, NewTask, Owner, TaskError, TaskSettings, wire};
use crate::mcp::toolset::{TaskSupport, ToolDef, ToolError, ToolOutput, ToolResult};
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

/// How a call is served.
enum Plan {
    /// On the request, as always.
    Direct,
    /// As a task from the start (2025-11-25, asked by the client).
    TaskNow { ttl_ms: i64 },
    /// On the request, becoming a task if it runs long or asks to
    /// (2026-07-28, the client declared the extension).
    Candidate,
}

pub async fn call(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: CallParams = params(raw)?;
    let catalog = server.catalog();
    let Some((entry, _)) = catalog.tool(&p.name) else {
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
    let settings = server.settings();
    let plan = plan(ctx, &entry.def, p.task.as_ref(), &settings.tasks)?;
    let call = ToolCall {
        catalog: catalog.clone(),
        name: p.name,
        args,
        started: Instant::now(),
    };
    match plan {
        Plan::Direct => direct(server, ctx, call).await,
        Plan::TaskNow { ttl_ms } => task_now(server, ctx, call, ttl_ms).await,
        Plan::Candidate => candidate(server, ctx, call).await,
    }
}

/// One call of a tool, as the ways of serving it share it.
struct ToolCall {
    catalog: Arc<Catalog>,
    name: String,
    args: Value,
    started: Instant,
}

impl ToolCall {
    fn request(&self) -> Value {
        json!({ "name": self.name, "arguments": self.args })
    }
}

/// Decides how to serve a call from the tool's `taskSupport`, the revision,
/// and what the client said it takes.
fn plan(
    ctx: &RequestContext,
    def: &ToolDef,
    task: Option<&Value>,
    settings: &TaskSettings,
) -> Result<Plan, McpError> {
    let support = def.task_support;
    if support == TaskSupport::Forbidden {
        return match (
            ctx.version.has_experimental_tasks() && settings.enabled(),
            task,
        ) {
            (true, Some(_)) => Err(McpError::new(
                METHOD_NOT_FOUND,
                format!(
                    "Tool {} does not support task-augmented execution",
                    def.name
                ),
            )),
            _ => Ok(Plan::Direct),
        };
    }
    if !settings.enabled() {
        return match support {
            TaskSupport::Required => Err(McpError::from(TaskError::Disabled)),
            _ => Ok(Plan::Direct),
        };
    }
    if ctx.version.is_stateless() {
        return match (ctx.client.supports_extension(tasks::EXTENSION), support) {
            (true, _) => Ok(Plan::Candidate),
            (false, TaskSupport::Required) => Err(needs_tasks(&def.name)),
            (false, _) => Ok(Plan::Direct),
        };
    }
    match (ctx.version.has_experimental_tasks(), task, support) {
        (true, Some(t), _) => Ok(Plan::TaskNow {
            ttl_ms: settings.ttl_ms(t.get("ttl").and_then(Value::as_i64)),
        }),
        (_, _, TaskSupport::Required) => Err(McpError::new(
            METHOD_NOT_FOUND,
            format!(
                "Tool {} requires task-augmented execution (tasks need protocol 2025-11-25 or newer)",
                def.name
            ),
        )),
        _ => Ok(Plan::Direct),
    }
}

/// The 2026-07-28 refusal of a task-only tool to a client without tasks.
fn needs_tasks(tool: &str) -> McpError {
    let mut e = McpError::missing_capability(json!({ "extensions": { tasks::EXTENSION: {} } }));
    e.message = format!(
        "Missing required client capability: tool {tool} runs only as a task; declare the {} extension",
        tasks::EXTENSION
    );
    e
}

/// Runs the call on the request and answers its result.
async fn direct(server: &Server, ctx: &RequestContext, call: ToolCall) -> Result<Value, McpError> {
    let outcome = runner::invoke(&call.catalog, &call.name, call.args, ctx).await;
    answer(server, ctx, &call.name, outcome, call.started)
}

fn answer(
    server: &Server,
    ctx: &RequestContext,
    tool: &str,
    outcome: ToolResult,
    started: Instant,
) -> Result<Value, McpError> {
    if server.settings().audit_tool_calls {
        audit_to(
            &server.store,
            ctx.session_id().map(str::to_owned),
            tool,
            &outcome,
            started,
        );
    }
    match outcome {
        Ok(out) => Ok(out.to_json(ctx.version)),
        Err(e) => tool_error_to_result(ctx, e),
    }
}

/// Who and what a new task of this call is.
fn new_task(
    server: &Server,
    ctx: &RequestContext,
    call: &ToolCall,
    ttl_ms: i64,
    cancel: CancellationToken,
) -> NewTask {
    NewTask {
        owner: Owner::of(ctx, |id| server.sessions.knows(id)),
        method: "tools/call",
        request: call.request(),
        ttl_ms,
        version: ctx.version,
        client: ctx.client.clone(),
        peer: ctx.peer.clone(),
        cancel,
    }
}

fn recorder(server: &Server, ctx: &RequestContext, call: &ToolCall) -> Recorder {
    let settings = server.settings();
    Recorder {
        tasks: server.tasks.clone(),
        max_result_bytes: settings.tasks.max_result_bytes,
        audit: settings.audit_tool_calls.then(|| server.store.clone()),
        session_id: ctx.session_id().map(str::to_owned),
        tool: call.name.clone(),
        started: call.started,
        in_flight: server.begin(),
    }
}

/// 2025-11-25: records the task, starts it, answers `CreateTaskResult`.
async fn task_now(
    server: &Server,
    ctx: &RequestContext,
    call: ToolCall,
    ttl_ms: i64,
) -> Result<Value, McpError> {
    let settings = server.settings();
    let new = new_task(server, ctx, &call, ttl_ms, CancellationToken::new());
    let (live, row) = server.tasks.create(new, &settings.tasks).await?;
    let job_ctx = RequestContext {
        sink: Some(live.notices()),
        ..ctx.fork(live.cancel.clone(), Some(Slot::task(live.clone())))
    };
    let rec = recorder(server, ctx, &call);
    let outcome = runner::start(Job {
        catalog: call.catalog,
        tool: call.name,
        args: call.args,
        ctx: job_ctx,
    });
    runner::finish_later(rec, live, outcome);
    Ok(json!({ "task": wire::legacy_task(&row) }))
}

/// 2026-07-28: runs the call on the request; if it is still running after
/// `tasks.promote_after_ms`, or its handler asks, it becomes a task and the
/// request is answered with the handle while the handler goes on.
async fn candidate(
    server: &Server,
    ctx: &RequestContext,
    call: ToolCall,
) -> Result<Value, McpError> {
    let settings = server.settings();
    let slot = Slot::candidate();
    let run = CancellationToken::new();
    let mut outcome = runner::start(Job {
        catalog: call.catalog.clone(),
        tool: call.name.clone(),
        args: call.args.clone(),
        ctx: ctx.fork(run.clone(), Some(slot.clone())),
    });
    // Until it is a task, the handler stops with its request.
    let stop_with_request = run.clone().drop_guard();
    tokio::select! {
        out = &mut outcome => return answer(server, ctx, &call.name, flatten(out), call.started),
        _ = tokio::time::sleep(settings.tasks.promote_after) => {}
        _ = slot.requested() => {}
    }
    let new = new_task(server, ctx, &call, settings.tasks.ttl_ms(None), run);
    let rec = recorder(server, ctx, &call);
    // Recording the task and handing the handler to it finish even if this
    // request goes away meanwhile, so no task is left without its finisher.
    let tasks = server.tasks.clone();
    let promoted = tokio::spawn(async move {
        match tasks.create(new, &settings.tasks).await {
            Ok((live, row)) => {
                slot.settle(Some(live.clone()));
                runner::finish_later(rec, live, outcome);
                Ok(row)
            }
            Err(e) => {
                slot.settle(None);
                Err((e, outcome))
            }
        }
    });
    match promoted.await {
        Ok(Ok(row)) => {
            stop_with_request.disarm();
            let mut created = wire::modern_task(&row);
            created["resultType"] = json!("task");
            Ok(created)
        }
        Ok(Err((e, outcome))) => {
            // No task (at the owner's limit): it finishes on the request.
            tracing::debug!(tool = %call.name, error = %e, "call not promoted to a task");
            answer(
                server,
                ctx,
                &call.name,
                flatten(outcome.await),
                call.started,
            )
        }
        Err(join) => Err(McpError::internal(format!("task promotion failed: {join}"))),
    }
}

/// A handler that ended without an answer (it panicked) is an internal error.
fn flatten(out: Result<ToolResult, oneshot::error::RecvError>) -> ToolResult {
    out.unwrap_or_else(|_| {
        Err(ToolError::Protocol(McpError::internal(
            "the tool's handler stopped without an answer (it panicked)",
        )))
    })
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

/// Records a tool call in the audit log (batched: it never delays the call).
pub(crate) fn audit_to(
    store: &Store,
    session_id: Option<String>,
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
        session_id,
        kind: "tool".into(),
        subject: tool.to_owned(),
        outcome: result.into(),
        duration_us: Some(started.elapsed().as_micros() as i64),
        detail,
    };
    store.write_batched(move |tx| store::audit::record(tx, &entry));
}
