//! Tools that talk while they run: log messages, progress, a stream closed
//! mid-call, list changes announced to listeners.

use serde_json::{Value, json};
use std::time::Duration;

use super::{Tool, done, empty};
use crate::mcp::client::LogLevel;
use crate::mcp::context::RequestContext;
use crate::mcp::notify::Change;
use crate::mcp::toolset::{ToolOutput, ToolResult};

pub(super) const TOOLS: &[Tool] = &[
    Tool {
        name: "test_tool_with_logging",
        description: "Tests tool that emits log messages during execution",
        schema: empty,
        call: |_, _, ctx| Box::pin(with_logging(ctx)),
    },
    Tool {
        name: "test_tool_with_progress",
        description: "Tests tool that reports progress notifications",
        schema: empty,
        call: |_, _, ctx| Box::pin(with_progress(ctx)),
    },
    Tool {
        name: "test_reconnection",
        description: "Tests SSE stream disconnection and client reconnection (SEP-1699). Server will close the stream mid-call and send the result after client reconnects.",
        schema: empty,
        call: |_, _, ctx| Box::pin(reconnection(ctx)),
    },
    Tool {
        name: "test_streaming_elicitation",
        description: "Diagnostic tool validating response progress streams",
        schema: empty,
        call: |_, _, ctx| {
            ctx.progress(50.0, Some(100.0), None);
            done(Ok(ToolOutput::text("Streaming complete")))
        },
    },
    Tool {
        name: "test_logging_tool",
        description: "Diagnostic logging validator tool",
        schema: empty,
        call: |_, _, ctx| {
            let msg = json!("Diagnostic trace logging activated");
            ctx.log(LogLevel::Info, None, msg);
            done(Ok(ToolOutput::text("Logging evaluated")))
        },
    },
    Tool {
        name: "test_trigger_tool_change",
        description: "Announces a tools list change to listeners",
        schema: empty,
        call: |c, _, _| {
            c.hub.publish(Change::ToolsListChanged);
            done(Ok(ToolOutput::text("Mutation triggered")))
        },
    },
    Tool {
        name: "test_trigger_prompt_change",
        description: "Announces a prompts list change to listeners",
        schema: empty,
        call: |c, _, _| {
            c.hub.publish(Change::PromptsListChanged);
            done(Ok(ToolOutput::text("Mutation triggered")))
        },
    },
];

async fn with_logging(ctx: &RequestContext) -> ToolResult {
    let steps = [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ];
    for (i, msg) in steps.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctx.log(LogLevel::Info, None, json!(msg));
    }
    Ok(ToolOutput::text("Tool with logging executed successfully"))
}

async fn with_progress(ctx: &RequestContext) -> ToolResult {
    for (i, p) in [0.0, 50.0, 100.0].iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctx.progress(*p, Some(100.0), Some(&format!("Completed step {p} of 100")));
    }
    let token = match &ctx.progress_token {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "0".into(),
    };
    Ok(ToolOutput::text(token))
}

async fn reconnection(ctx: &RequestContext) -> ToolResult {
    ctx.close_connection(500);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(ToolOutput::text(
        "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
    ))
}
