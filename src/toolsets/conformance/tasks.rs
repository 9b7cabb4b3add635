//! Tools for the suite's `tasks-*` scenarios (the tasks extension,
//! SEP-2663), each with its `taskSupport` and whether it is safe to run
//! again after a crash. Long waits watch `ctx.cancel`, so `tasks/cancel`
//! stops them. `slow_once` is erlmcp's own: a long job that is *not* safe
//! to run twice, for the tests of what a crash does to one.

use serde_json::{Value, json};
use std::time::Duration;

use super::input::{answer_text, elicit};
use super::{Tool, done};
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::toolset::{TaskSupport, ToolError, ToolOutput, ToolResult};

/// A fixture tool that may run as a task.
pub(super) struct TaskTool {
    pub(super) tool: Tool,
    pub(super) support: TaskSupport,
    pub(super) rerun_safe: bool,
}

pub(super) const TOOLS: &[TaskTool] = &[
    TaskTool {
        tool: Tool {
            name: "greet",
            description: "Greets someone (never a task)",
            schema: || object(json!({ "name": { "type": "string" } }), &["name"]),
            call: |_, args, _| {
                let name = args.get("name").and_then(Value::as_str).unwrap_or("World");
                done(Ok(ToolOutput::text(format!("Hello, {name}!"))))
            },
        },
        support: TaskSupport::Forbidden,
        rerun_safe: false,
    },
    TaskTool {
        tool: Tool {
            name: "slow_compute",
            description: "Computes for `seconds` seconds, then answers (0: at once)",
            schema: slow_schema,
            call: |_, args, ctx| Box::pin(slow(args, ctx)),
        },
        support: TaskSupport::Optional,
        // A pure computation: running it again changes nothing.
        rerun_safe: true,
    },
    TaskTool {
        tool: Tool {
            name: "slow_once",
            description: "Like slow_compute, but stands for a job with side effects: not safe to run twice",
            schema: slow_schema,
            call: |_, args, ctx| Box::pin(slow(args, ctx)),
        },
        support: TaskSupport::Optional,
        rerun_safe: false,
    },
    TaskTool {
        tool: Tool {
            name: "failing_job",
            description: "Works for a second, then reports a tool error (runs only as a task)",
            schema: super::empty,
            call: |_, _, ctx| {
                Box::pin(async move {
                    pause(ctx, 1.0).await?;
                    Ok(ToolOutput::error("The job failed: the input was rejected"))
                })
            },
        },
        support: TaskSupport::Required,
        rerun_safe: false,
    },
    TaskTool {
        tool: Tool {
            name: "protocol_error_job",
            description: "Works for a second, then fails with a JSON-RPC (protocol) error",
            schema: super::empty,
            call: |_, _, ctx| {
                Box::pin(async move {
                    pause(ctx, 1.0).await?;
                    Err(ToolError::Protocol(McpError::internal(
                        "the job crashed (protocol_error_job always does)",
                    )))
                })
            },
        },
        support: TaskSupport::Optional,
        rerun_safe: false,
    },
    TaskTool {
        tool: Tool {
            name: "confirm_delete",
            description: "Asks the user to confirm deleting a file, as a task",
            schema: || object(json!({ "filename": { "type": "string" } }), &["filename"]),
            call: |_, args, ctx| Box::pin(confirm_delete(args, ctx)),
        },
        support: TaskSupport::Optional,
        rerun_safe: false,
    },
    TaskTool {
        tool: Tool {
            name: "multi_input",
            description: "Asks the user two questions at once, as a task",
            schema: super::empty,
            call: |_, _, ctx| Box::pin(multi_input(ctx)),
        },
        support: TaskSupport::Optional,
        rerun_safe: false,
    },
    TaskTool {
        tool: Tool {
            name: "test_tool_with_task",
            description: "Asks the user's name on the request (MRTR), then finishes as a task",
            schema: super::empty,
            call: |_, _, ctx| Box::pin(name_then_task(ctx)),
        },
        support: TaskSupport::Required,
        rerun_safe: false,
    },
];

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

fn slow_schema() -> Value {
    object(
        json!({
            "seconds": { "type": "number", "minimum": 0, "maximum": 3600 },
            "label": { "type": "string" }
        }),
        &["seconds"],
    )
}

/// Waits `seconds`, or until the call is cancelled.
async fn pause(ctx: &RequestContext, seconds: f64) -> Result<(), ToolError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
    }
}

async fn slow(args: Value, ctx: &RequestContext) -> ToolResult {
    let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
    let label = args.get("label").and_then(Value::as_str).unwrap_or("job");
    pause(ctx, seconds).await?;
    Ok(ToolOutput::text(format!(
        "Computed {label} in {seconds} seconds"
    )))
}

fn confirmed(answer: &Value) -> bool {
    answer.get("action").and_then(Value::as_str) == Some("accept")
        && answer.pointer("/content/confirm") != Some(&Value::Bool(false))
}

async fn confirm_delete(args: Value, ctx: &RequestContext) -> ToolResult {
    let file = args.get("filename").and_then(Value::as_str).unwrap_or("?");
    // Waiting on a person is long: answer with a task first.
    ctx.promote().await;
    let question = elicit(
        &format!("Delete {file}?"),
        json!({ "confirm": { "type": "boolean", "description": "Delete the file" } }),
        &["confirm"],
    );
    let answer = ctx.input("confirm", "elicitation/create", question).await?;
    Ok(ToolOutput::text(if confirmed(&answer) {
        format!("Deleted {file}")
    } else {
        format!("Kept {file}")
    }))
}

async fn multi_input(ctx: &RequestContext) -> ToolResult {
    ctx.promote().await;
    let ask = |what: &str| {
        elicit(
            &format!("Your {what}?"),
            json!({ "name": { "type": "string" }, "confirm": { "type": "boolean" } }),
            &["name"],
        )
    };
    let answers = ctx
        .inputs(vec![
            (
                "first".into(),
                "elicitation/create".into(),
                ask("first name"),
            ),
            (
                "second".into(),
                "elicitation/create".into(),
                ask("second name"),
            ),
        ])
        .await?;
    let names: Vec<String> = answers.iter().map(|a| answer_text(a, "name")).collect();
    Ok(ToolOutput::text(format!("Got {}", names.join(" and "))))
}

/// Input before the task (multi round-trip on the request), then the work
/// as a task: its result carries what was gathered.
async fn name_then_task(ctx: &RequestContext) -> ToolResult {
    let question = elicit(
        "What is your name?",
        json!({ "name": { "type": "string" } }),
        &["name"],
    );
    let answer = ctx
        .input("user_name", "elicitation/create", question)
        .await?;
    ctx.promote().await;
    Ok(ToolOutput::text(format!(
        "Hello, {}!",
        answer_text(&answer, "name")
    )))
}
