//! Tasks whose process died. Every unfinished task names the lease of the
//! process running it (`store::lease`); a lease nobody holds means that
//! process ended (a crash, kill -9, a restart, a failover) and the task
//! would otherwise stay `working` for ever. At start, and on every
//! maintenance pass, such tasks are taken over: one whose tool is marked
//! safe to run again ([`crate::mcp::toolset::ToolDef::rerun_safe`]) and has
//! not been run again already is run once more, here; any other fails with
//! a status message that says why.

use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

use super::runner::{self, Job, Recorder};
use crate::mcp::client::ClientInfo;
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::methods::tools::Actor;
use crate::mcp::server::Server;
use crate::mcp::tasks::slot::Slot;
use crate::mcp::version::ProtocolVersion;
use crate::store::StoreError;
use crate::store::tasks::{self as rows, TaskRow};

/// What a pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TakenOver {
    pub failed: usize,
    pub rerun: usize,
}

/// Takes over every task of a dead process, and any task under this
/// process's own lease that it does not run (a database restored online
/// brings back rows of tasks that ended here long ago).
pub async fn take_over(server: &Server) -> Result<TakenOver, StoreError> {
    let mut out = TakenOver::default();
    let mut orphans = Vec::new();
    for runner in server.tasks.abandoned_runners().await? {
        let r = runner.clone();
        orphans.extend(
            server
                .store
                .read(move |c| rows::unfinished_of(c, &r))
                .await?,
        );
    }
    orphans.extend(server.tasks.own_orphans().await?);
    for row in orphans {
        match decide(server, &row) {
            Ok(()) => out.rerun += usize::from(rerun(server, &row).await?),
            Err(why) => out.failed += usize::from(fail(server, &row, &why).await?),
        }
    }
    if out != TakenOver::default() {
        tracing::warn!(
            failed = out.failed,
            rerun = out.rerun,
            "took over the tasks of an ended process"
        );
        metrics::counter!("erlmcp_tasks_taken_over_total", "action" => "failed")
            .increment(out.failed as u64);
        metrics::counter!("erlmcp_tasks_taken_over_total", "action" => "rerun")
            .increment(out.rerun as u64);
    }
    Ok(out)
}

const ENDED: &str =
    "The server process running this task ended (a crash, a kill or a restart) before it finished";

/// `Ok` if the task may run again, else why not.
fn decide(server: &Server, row: &TaskRow) -> Result<(), String> {
    let tool = tool_name(row);
    let catalog = server.catalog();
    match catalog.tool(&tool) {
        None => Err(format!("{ENDED}; tool {tool:?} is no longer offered here")),
        Some((e, _)) if !e.def.rerun_safe => Err(format!(
            "{ENDED}; tool {tool:?} is not marked safe to run again, so the task failed"
        )),
        Some(_) if row.attempts >= 2 => Err(format!(
            "{ENDED}; it had already been run again once after an earlier interruption, so the task failed"
        )),
        Some(_) => Ok(()),
    }
}

fn tool_name(row: &TaskRow) -> String {
    serde_json::from_str::<Value>(&row.request)
        .ok()
        .and_then(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

async fn fail(server: &Server, row: &TaskRow, why: &str) -> Result<bool, StoreError> {
    let ending = runner::failed(&McpError::internal(why));
    let (id, dead) = (row.id.clone(), row.runner.clone());
    let now = crate::clock::now_millis();
    server
        .store
        .write(move |tx| rows::finish_abandoned(tx, &id, &dead, &ending, now))
        .await
}

/// Claims the task and runs it again in this process; false if another
/// process claimed it first.
async fn rerun(server: &Server, row: &TaskRow) -> Result<bool, StoreError> {
    let message = format!("{ENDED}; running it again (attempt {})", row.attempts + 1);
    let (id, dead, me) = (
        row.id.clone(),
        row.runner.clone(),
        server.tasks.runner().to_owned(),
    );
    let now = crate::clock::now_millis();
    let claimed = server
        .store
        .write(move |tx| rows::claim(tx, &id, &dead, &me, &message, now))
        .await?;
    if !claimed {
        return Ok(false);
    }
    let tool = tool_name(row);
    let catalog = server.catalog();
    let ctx = context(server, row).await;
    let live = server
        .tasks
        .adopt(row, ctx.peer.clone(), Default::default());
    let args = serde_json::from_str::<Value>(&row.request)
        .ok()
        .and_then(|r| r.get("arguments").cloned())
        .unwrap_or_else(|| Value::Object(Default::default()));
    let ctx = RequestContext {
        sink: (!ctx.version.is_stateless()).then(|| live.notices()),
        cancel: live.cancel.clone(),
        task: Some(Slot::task(live.clone())),
        ..ctx
    };
    let settings = server.settings();
    let outcome = runner::start(Job {
        catalog: catalog.clone(),
        tool: tool.clone(),
        args,
        ctx,
    });
    let rec = Recorder {
        tasks: server.tasks.clone(),
        max_result_bytes: settings.tasks.max_result_bytes,
        audit: settings.audit_tool_calls.then(|| server.store.clone()),
        who: Actor {
            session_id: row.session_id.clone(),
            ..Actor::default()
        },
        tool,
        started: Instant::now(),
        in_flight: server.begin(),
    };
    runner::finish_later(rec, live, outcome);
    Ok(true)
}

/// The context of the request that created the task, as far as it can be
/// rebuilt: its session if it still exists, the client as it declared
/// itself, no progress token (the request is long gone).
async fn context(server: &Server, row: &TaskRow) -> RequestContext {
    let version =
        ProtocolVersion::parse(&row.protocol_version).unwrap_or(ProtocolVersion::NEWEST_MODERN);
    let client: Value = serde_json::from_str(&row.client).unwrap_or(Value::Null);
    let client = ClientInfo::new(
        client.get("info").cloned().unwrap_or(Value::Null),
        client.get("capabilities").cloned().unwrap_or(Value::Null),
    );
    let session = match &row.session_id {
        Some(sid) => server.sessions.get(sid).await.ok().flatten(),
        None => None,
    };
    RequestContext {
        version,
        peer: session.as_ref().map(|s| s.peer.clone()),
        session,
        client: Arc::new(client),
        log_level: None,
        progress_token: None,
        cancel: Default::default(),
        sink: None,
        input_responses: None,
        request_state: None,
        signer: server.signer(),
        client_request_timeout: server.settings().client_request_timeout,
        principal: row.owner.strip_prefix("principal:").map(Arc::from),
        // The call was authorized when it was made; its end is audited
        // without a principal (the token is not kept with the task).
        grant: None,
        task: None,
    }
}
