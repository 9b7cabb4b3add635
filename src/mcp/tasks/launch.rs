//! How a `tools/call` runs: on its request, or as a task. The tool's
//! `taskSupport`, the revision and what the client takes decide ([`plan`]).
//! A 2025-11-25 client asks for a task with a `task` param and gets one from
//! the start ([`task_now`]); a 2026-07-28 client that declared the extension
//! leaves it to the server: the call starts on its request and becomes a
//! task once it runs longer than `tasks.promote_after_ms` or its handler
//! asks ([`candidate`]).

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::runner::{self, Job, Recorder};
use super::slot::Slot;
use super::{EXTENSION, NewTask, Owner, TaskError, TaskSettings, wire};
use crate::mcp::catalog::Catalog;
use crate::mcp::context::RequestContext;
use crate::mcp::error::{METHOD_NOT_FOUND, McpError};
use crate::mcp::methods::tools::Actor;
use crate::mcp::server::Server;
use crate::mcp::toolset::{TaskSupport, ToolDef, ToolResult};
use crate::store::tasks::TaskRow;

/// How a call is served.
pub enum Plan {
    /// On the request, as always.
    Direct,
    /// As a task from the start (2025-11-25, asked by the client).
    TaskNow { ttl_ms: i64 },
    /// On the request, becoming a task if it runs long or asks to
    /// (2026-07-28, the client declared the extension).
    Candidate,
}

/// Decides how to serve a call of `def` from its `taskSupport`, the
/// revision, and what the client takes (`task`: the 2025-11-25 param).
pub fn plan(
    ctx: &RequestContext,
    def: &ToolDef,
    task: Option<&Value>,
    settings: &TaskSettings,
) -> Result<Plan, McpError> {
    let legacy_tasks = ctx.version.has_experimental_tasks() && settings.enabled();
    match (def.task_support, settings.enabled()) {
        (TaskSupport::Forbidden, _) if legacy_tasks && task.is_some() => Err(McpError::new(
            METHOD_NOT_FOUND,
            format!(
                "Tool {} does not support task-augmented execution",
                def.name
            ),
        )),
        (TaskSupport::Forbidden, _) => Ok(Plan::Direct),
        (TaskSupport::Required, false) => Err(TaskError::Disabled.into()),
        (_, false) => Ok(Plan::Direct),
        (support, true) if ctx.version.is_stateless() => modern_plan(ctx, def, support),
        (support, true) => legacy_plan(ctx, def, support, task, settings),
    }
}

fn modern_plan(
    ctx: &RequestContext,
    def: &ToolDef,
    support: TaskSupport,
) -> Result<Plan, McpError> {
    match (ctx.client.supports_extension(EXTENSION), support) {
        (true, _) => Ok(Plan::Candidate),
        (false, TaskSupport::Required) => Err(needs_tasks(&def.name)),
        (false, _) => Ok(Plan::Direct),
    }
}

fn legacy_plan(
    ctx: &RequestContext,
    def: &ToolDef,
    support: TaskSupport,
    task: Option<&Value>,
    settings: &TaskSettings,
) -> Result<Plan, McpError> {
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
    let mut e = McpError::missing_capability(json!({ "extensions": { EXTENSION: {} } }));
    e.message = format!(
        "Missing required client capability: tool {tool} runs only as a task; declare the {EXTENSION} extension"
    );
    e
}

/// One call of a tool.
pub struct ToolCall {
    pub catalog: Arc<Catalog>,
    pub name: String,
    pub args: Value,
    pub started: Instant,
    /// The scope that allowed the call (for its audit row).
    pub scope: Option<String>,
}

impl ToolCall {
    fn job(&self, ctx: RequestContext) -> Job {
        Job {
            catalog: self.catalog.clone(),
            tool: self.name.clone(),
            args: self.args.clone(),
            ctx,
        }
    }

    /// Who and what a new task of this call is.
    fn new_task(
        &self,
        server: &Server,
        ctx: &RequestContext,
        ttl_ms: i64,
        cancel: CancellationToken,
    ) -> NewTask {
        NewTask {
            owner: Owner::of(ctx, |id| server.sessions.knows(id)),
            method: "tools/call",
            request: json!({ "name": self.name, "arguments": self.args }),
            ttl_ms,
            version: ctx.version,
            client: ctx.client.clone(),
            peer: ctx.peer.clone(),
            cancel,
        }
    }

    fn recorder(&self, server: &Server, ctx: &RequestContext) -> Recorder {
        let settings = server.settings();
        Recorder {
            tasks: server.tasks.clone(),
            max_result_bytes: settings.tasks.max_result_bytes,
            audit: settings.audit_tool_calls.then(|| server.store.clone()),
            who: Actor {
                session_id: ctx.session_id().map(str::to_owned),
                principal: ctx.grant.as_ref().map(|g| g.principal.clone()),
                scope: self.scope.clone(),
            },
            tool: self.name.clone(),
            started: self.started,
            in_flight: server.begin(),
        }
    }
}

/// 2025-11-25: records the task, starts it, answers `CreateTaskResult`.
pub async fn task_now(
    server: &Server,
    ctx: &RequestContext,
    call: ToolCall,
    ttl_ms: i64,
) -> Result<Value, McpError> {
    let settings = server.settings();
    let new = call.new_task(server, ctx, ttl_ms, CancellationToken::new());
    let (live, row) = server.tasks.create(new, &settings.tasks).await?;
    let job_ctx = RequestContext {
        sink: Some(live.notices()),
        ..ctx.fork(live.cancel.clone(), Some(Slot::task(live.clone())))
    };
    let outcome = runner::start(call.job(job_ctx));
    runner::finish_later(call.recorder(server, ctx), live, outcome);
    Ok(json!({ "task": wire::legacy_task(&row) }))
}

/// What a candidate came to.
pub enum Launched {
    /// A task: the `CreateTaskResult` to answer.
    Task(Value),
    /// It finished on its request.
    Finished(ToolResult),
}

/// 2026-07-28: runs the call on the request; if it is still running after
/// `tasks.promote_after_ms`, or its handler asks, it becomes a task and the
/// request is answered with the handle while the handler goes on.
pub async fn candidate(
    server: &Server,
    ctx: &RequestContext,
    call: ToolCall,
) -> Result<Launched, McpError> {
    let settings = server.settings();
    let slot = Slot::candidate();
    let run = CancellationToken::new();
    let mut outcome = runner::start(call.job(ctx.fork(run.clone(), Some(slot.clone()))));
    // Until it is a task, the handler stops with its request.
    let stop_with_request = run.clone().drop_guard();
    tokio::select! {
        out = &mut outcome => return Ok(Launched::Finished(runner::outcome_of(out))),
        _ = tokio::time::sleep(settings.tasks.promote_after) => {}
        _ = slot.requested() => {}
    }
    let new = call.new_task(server, ctx, settings.tasks.ttl_ms(None), run);
    match promote(server, call.recorder(server, ctx), new, slot, outcome).await? {
        Promoted::Task(row) => {
            stop_with_request.disarm();
            let mut created = wire::modern_task(&row);
            created["resultType"] = json!("task");
            Ok(Launched::Task(created))
        }
        // No task (the owner is at its limit): it finishes on the request.
        Promoted::Refused(outcome) => Ok(Launched::Finished(runner::outcome_of(outcome.await))),
    }
}

enum Promoted {
    Task(Box<TaskRow>),
    Refused(oneshot::Receiver<ToolResult>),
}

/// Records the task and hands it the running handler. Done in a tokio task
/// of its own, so it completes even if the request goes away meanwhile:
/// no task is left without the finisher that records its end.
async fn promote(
    server: &Server,
    rec: Recorder,
    new: NewTask,
    slot: Arc<Slot>,
    outcome: oneshot::Receiver<ToolResult>,
) -> Result<Promoted, McpError> {
    let tasks = server.tasks.clone();
    let settings = server.settings();
    let job = tokio::spawn(async move {
        match tasks.create(new, &settings.tasks).await {
            Ok((live, row)) => {
                slot.settle(Some(live.clone()));
                runner::finish_later(rec, live, outcome);
                Promoted::Task(Box::new(row))
            }
            Err(e) => {
                tracing::debug!(error = %e, "call not promoted to a task");
                slot.settle(None);
                Promoted::Refused(outcome)
            }
        }
    });
    job.await
        .map_err(|e| McpError::internal(format!("task promotion failed: {e}")))
}
