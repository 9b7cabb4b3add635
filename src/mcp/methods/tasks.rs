//! The task methods. 2025-11-25 (the core's experimental utility):
//! `tasks/get`, `tasks/result` (blocks until the task ends), `tasks/list`,
//! `tasks/cancel` (answers the cancelled task; refuses an ended one).
//! 2026-07-28 (the `io.modelcontextprotocol/tasks` extension, which a
//! request must declare): `tasks/get` (the result inlined),
//! `tasks/update` (answers to `inputRequests`), `tasks/cancel` (an empty
//! acknowledgement, also for an ended task). Every lookup is scoped to the
//! caller's session or principal: anyone else's task is "not found".

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Duration;

use super::{ListParams, list_result, params};
use crate::mcp::context::{RequestContext, with_related_task};
use crate::mcp::error::McpError;
use crate::mcp::server::Server;
use crate::mcp::tasks::{self, Owner, wire};
use crate::store::tasks::{Ending, TaskRow};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ById {
    task_id: String,
}

fn is_running(row: &TaskRow) -> bool {
    matches!(row.status.as_str(), "working" | "input_required")
}

/// Who the caller is, for scoping.
fn owner(server: &Server, ctx: &RequestContext) -> Owner {
    Owner::of(ctx, |id| server.sessions.knows(id))
}

/// A modern request must have declared the extension; a legacy session must
/// speak a revision that has tasks.
fn gate(ctx: &RequestContext, method: &str) -> Result<(), McpError> {
    if ctx.version.is_stateless() {
        if ctx.client.supports_extension(tasks::EXTENSION) {
            return Ok(());
        }
        let required = json!({ "extensions": { tasks::EXTENSION: {} } });
        let mut e = McpError::missing_capability(required);
        e.message = format!(
            "Missing required client capability: {method} needs the {} extension",
            tasks::EXTENSION
        );
        return Err(e);
    }
    if ctx.version.has_experimental_tasks() {
        Ok(())
    } else {
        Err(McpError::method_not_found(method))
    }
}

/// The caller's task `id`, or the one answer for every kind of miss.
async fn find(server: &Server, ctx: &RequestContext, id: &str) -> Result<TaskRow, McpError> {
    server
        .tasks
        .load(&owner(server, ctx), id)
        .await
        .map_err(McpError::internal)?
        .ok_or_else(|| tasks::not_found(id))
}

pub async fn get(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    gate(ctx, "tasks/get")?;
    let p: ById = params(raw)?;
    let row = find(server, ctx, &p.task_id).await?;
    Ok(if ctx.version.is_stateless() {
        wire::modern_detailed(&row)
    } else {
        wire::legacy_task(&row)
    })
}

pub async fn list(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    gate(ctx, "tasks/list")?;
    let p: ListParams = params(raw)?;
    let after = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let limit = server.settings().page_size;
    let mut rows = server
        .tasks
        .page(&owner(server, ctx), after, limit + 1)
        .await
        .map_err(McpError::internal)?;
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        rows.last().map(encode_cursor).unwrap_or_default()
    });
    let items = rows.iter().map(wire::legacy_task).collect();
    Ok(list_result("tasks", items, next))
}

fn encode_cursor(row: &TaskRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("t:{}:{}", row.created_at_ms, row.id))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), McpError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (at, id) = s.strip_prefix("t:")?.split_once(':')?;
            Some((at.parse().ok()?, id.to_owned()))
        })
        .ok_or_else(|| McpError::invalid_params("invalid cursor"))
}

/// 2025-11-25: waits until the task ends, then answers exactly what the
/// call would have: its result (with the related-task `_meta`) or its
/// error. Meanwhile this request's stream carries the task's requests to
/// the client (the `input_required` flow).
pub async fn result(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    gate(ctx, "tasks/result")?;
    let p: ById = params(raw)?;
    let mut row = find(server, ctx, &p.task_id).await?;
    if is_running(&row) {
        match server.tasks.live(&row.id) {
            Some(live) => {
                let _attached = ctx.sink.clone().map(|s| live.attach(s));
                live.ended().await;
            }
            None => poll_until_ended(server, &row).await,
        }
        row = find(server, ctx, &p.task_id).await?;
    }
    payload(&row)
}

/// A task running in another process (or none): polled at its interval.
async fn poll_until_ended(server: &Server, row: &TaskRow) {
    let every = Duration::from_millis(row.poll_interval_ms.max(50) as u64);
    loop {
        tokio::time::sleep(every).await;
        let id = row.id.clone();
        match server
            .store
            .read(move |c| crate::store::tasks::load_any(c, &id))
            .await
        {
            Ok(Some(r)) if is_running(&r) => continue,
            _ => return,
        }
    }
}

fn payload(row: &TaskRow) -> Result<Value, McpError> {
    let parse = |t: &Option<String>| t.as_deref().and_then(|t| serde_json::from_str(t).ok());
    match row.status.as_str() {
        "completed" => {
            let result: Value = parse(&row.result).unwrap_or_else(|| json!({ "content": [] }));
            Ok(with_related_task(result, &row.id))
        }
        "failed" => {
            let e: Value = parse(&row.error).unwrap_or(Value::Null);
            let mut err = McpError::new(
                e.get("code").and_then(Value::as_i64).unwrap_or(-32603),
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the task failed"),
            );
            err.data = e.get("data").cloned();
            Err(err)
        }
        _ => Err(McpError::new(
            -32800,
            "Request cancelled: the task was cancelled",
        )),
    }
}

/// Cancels a running task: recorded before the answer, then its handler is
/// stopped through its cancellation token.
pub async fn cancel(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    gate(ctx, "tasks/cancel")?;
    let p: ById = params(raw)?;
    let row = find(server, ctx, &p.task_id).await?;
    let cancelled = is_running(&row) && mark_cancelled(server, &row.id).await?;
    if ctx.version.is_stateless() {
        // The extension acknowledges, whatever state the task was in.
        return Ok(json!({}));
    }
    let row = find(server, ctx, &p.task_id).await?;
    if !cancelled {
        return Err(McpError::invalid_params(format!(
            "Cannot cancel task: already in terminal status '{}'",
            wire::legacy_status(&row)
        )));
    }
    Ok(wire::legacy_task(&row))
}

async fn mark_cancelled(server: &Server, id: &str) -> Result<bool, McpError> {
    let ending = Ending {
        status: "cancelled".into(),
        message: Some("The task was cancelled by request".into()),
        result: None,
        error: None,
    };
    let task_id = id.to_owned();
    let now = crate::clock::now_millis();
    let done = server
        .store
        .write(move |tx| crate::store::tasks::finish(tx, &task_id, &ending, now))
        .await
        .map_err(McpError::internal)?;
    if let Some(live) = server.tasks.live(id) {
        live.cancel.cancel();
        if done {
            live.announce().await;
        }
    }
    if done {
        metrics::counter!("erlmcp_tasks_finished_total", "status" => "cancelled").increment(1);
    }
    Ok(done)
}

/// 2026-07-28: answers to a task's `inputRequests`, any subset; keys not
/// outstanding are ignored. Acknowledged once what remains is recorded.
pub async fn update(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    if !ctx.version.is_stateless() {
        return Err(McpError::method_not_found("tasks/update"));
    }
    gate(ctx, "tasks/update")?;
    let p: ById = params(raw)?;
    let row = find(server, ctx, &p.task_id).await?;
    if let (Some(live), Some(answers)) = (server.tasks.live(&row.id), &ctx.input_responses) {
        live.answer(answers.clone())
            .await
            .map_err(McpError::internal)?;
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let row = TaskRow {
            id: "a-b".into(),
            created_at_ms: 42,
            ..Default::default()
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&row)).unwrap(),
            (42, "a-b".into())
        );
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("x:1:a"),
            &URL_SAFE_NO_PAD.encode("t:n:a"),
        ] {
            assert_eq!(decode_cursor(bad).unwrap_err().code, -32602);
        }
    }
}
