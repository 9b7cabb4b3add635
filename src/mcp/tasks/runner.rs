//! Running a tool call as a task: the handler on its own tokio task, and a
//! finisher that records how it ended (durably, and only if the task had
//! not ended otherwise, say by `tasks/cancel`), wakes its waiters and tells
//! its session.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

use super::Tasks;
use super::live::LiveTask;
use crate::mcp::catalog::Catalog;
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::methods::tools::Actor;
use crate::mcp::server::InFlight;
use crate::mcp::toolset::{ToolError, ToolOutput, ToolResult};
use crate::mcp::version::ProtocolVersion;
use crate::store::Store;
use crate::store::tasks::{self as rows, Ending};

/// A tool call, with the context its handler runs in.
pub struct Job {
    pub catalog: Arc<Catalog>,
    pub tool: String,
    pub args: Value,
    pub ctx: RequestContext,
}

/// Starts the handler on its own tokio task, so it outlives the request
/// that started it. The receiver gets the outcome; a handler that panics
/// drops the sender instead.
pub fn start(job: Job) -> oneshot::Receiver<ToolResult> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let out = invoke(&job.catalog, &job.tool, job.args, &job.ctx).await;
        let _ = tx.send(out);
    });
    rx
}

/// Runs a tool: arguments checked against its inputSchema (invalid ones are
/// an error result the model can fix), then its toolset's handler.
pub async fn invoke(
    catalog: &Catalog,
    tool: &str,
    args: Value,
    ctx: &RequestContext,
) -> ToolResult {
    let Some((entry, toolset)) = catalog.tool(tool) else {
        return Err(ToolError::Protocol(McpError::invalid_params(format!(
            "Unknown tool: {tool}"
        ))));
    };
    match entry.validate(&args) {
        Err(why) => Ok(ToolOutput::error(format!(
            "Invalid arguments for tool {tool}: {why}"
        ))),
        Ok(()) => toolset.call_tool(tool, args, ctx).await,
    }
}

/// What recording a task's end needs besides the outcome.
pub struct Recorder {
    pub tasks: Arc<Tasks>,
    pub max_result_bytes: usize,
    /// The audit log, when tool calls are audited.
    pub audit: Option<Store>,
    /// Who called, for the audit row.
    pub who: Actor,
    pub tool: String,
    pub started: Instant,
    /// Keeps a graceful stop waiting for the task, as for a request.
    pub in_flight: InFlight,
}

/// Waits (in the background) for the handler's outcome and records it.
pub fn finish_later(rec: Recorder, live: Arc<LiveTask>, outcome: oneshot::Receiver<ToolResult>) {
    tokio::spawn(async move {
        record(rec, &live, outcome_of(outcome.await)).await;
    });
}

/// A handler that ended without an answer (it panicked) is an internal error.
pub fn outcome_of(out: Result<ToolResult, oneshot::error::RecvError>) -> ToolResult {
    out.unwrap_or_else(|_| {
        Err(ToolError::Protocol(McpError::internal(
            "the tool's handler stopped without an answer (it panicked)",
        )))
    })
}

async fn record(rec: Recorder, live: &LiveTask, out: ToolResult) {
    if let Some(store) = &rec.audit {
        crate::mcp::methods::tools::audit_to(store, rec.who.clone(), &rec.tool, &out, rec.started);
    }
    let ending = ending(live.version, out, rec.max_result_bytes);
    let status = ending.status.clone();
    let id = live.id.clone();
    let now = crate::clock::now_millis();
    match rec
        .tasks
        .store
        .write(move |tx| rows::finish(tx, &id, &ending, now))
        .await
    {
        Ok(true) => {
            metrics::counter!("erlmcp_tasks_finished_total", "status" => status).increment(1);
            live.announce().await;
        }
        Ok(false) => {} // it had ended already (cancelled, expired)
        Err(e) => tracing::warn!(task = %live.id, error = %e, "cannot record the end of a task"),
    }
    live.end();
    rec.tasks.forget(&live.id);
    drop(rec.in_flight);
}

/// How a handler's outcome ends its task.
pub fn ending(version: ProtocolVersion, out: ToolResult, max_result_bytes: usize) -> Ending {
    match out {
        Ok(output) => completed(version, &output, max_result_bytes),
        // A tool that ran and failed is a result, as on a plain call.
        Err(ToolError::Failed(msg)) => {
            completed(version, &ToolOutput::error(msg), max_result_bytes)
        }
        Err(ToolError::Protocol(e)) => failed(&e),
        Err(ToolError::Cancelled) => Ending {
            status: "cancelled".into(),
            message: Some("The task was cancelled".into()),
            result: None,
            error: None,
        },
        Err(ToolError::InputRequired(_)) => failed(&McpError::internal(
            "the tool asked for input in a form a task cannot carry",
        )),
    }
}

fn completed(version: ProtocolVersion, output: &ToolOutput, max_bytes: usize) -> Ending {
    let mut result = output.to_json(version);
    if version.is_stateless() {
        // The inlined result is what the call would have returned.
        result["resultType"] = json!("complete");
    }
    let text = result.to_string();
    if text.len() > max_bytes {
        return failed(&McpError::internal(format!(
            "the task's result is {} bytes, more than tasks.max_result_bytes ({max_bytes})",
            text.len()
        )));
    }
    Ending {
        status: "completed".into(),
        message: None,
        result: Some(text),
        error: None,
    }
}

/// A task that ended with a JSON-RPC error.
pub fn failed(e: &McpError) -> Ending {
    Ending {
        status: "failed".into(),
        message: Some(e.message.clone()),
        result: None,
        error: serde_json::to_string(e).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_too_big_fail_the_task() {
        let big = ToolOutput::text("x".repeat(5000));
        let e = ending(ProtocolVersion::V2025_11_25, Ok(big.clone()), 4096);
        assert_eq!(e.status, "failed");
        assert!(e.error.unwrap().contains("max_result_bytes"));
        let ok = ending(ProtocolVersion::V2026_07_28, Ok(big), 1 << 20);
        assert_eq!(ok.status, "completed");
        assert!(ok.result.unwrap().contains(r#""resultType":"complete""#));
    }

    #[test]
    fn tool_errors_complete_and_protocol_errors_fail() {
        let v = ProtocolVersion::V2026_07_28;
        let e = ending(v, Err(ToolError::Failed("boom".into())), 1 << 20);
        assert_eq!(e.status, "completed");
        assert!(e.result.unwrap().contains(r#""isError":true"#));
        let e = ending(
            v,
            Err(ToolError::Protocol(McpError::internal("x"))),
            1 << 20,
        );
        assert_eq!(e.status, "failed");
        assert!(e.error.unwrap().contains("-32603"));
        assert_eq!(ending(v, Err(ToolError::Cancelled), 1).status, "cancelled");
    }
}
