//! What a replication role change does to the rest of the node: a primary
//! serves MCP, with sessions read afresh from the replicated database and
//! the server streams of earlier sessions re-created; a standby refuses MCP
//! requests (503: the client retries, on the primary once the virtual
//! address moved) and forgets what it held in memory.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::mcp::server::Server;
use crate::replication::frame::Role;
use crate::replication::{Replication, RoleChange};
use crate::transport::http::HttpState;

/// Follows role changes until `stop`.
pub(super) async fn follow(
    repl: Arc<Replication>,
    server: Arc<Server>,
    http: Arc<HttpState>,
    stop: CancellationToken,
) {
    let mut roles = repl.roles();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = roles.changed() => if changed.is_err() { return },
        }
        let change = *roles.borrow_and_update();
        apply(change, &server, &http).await;
    }
}

/// Puts the server in `change`'s role.
pub(super) async fn apply(change: RoleChange, server: &Server, http: &Arc<HttpState>) {
    match change.role {
        Role::Primary => {
            if let Err(e) = server.take_over().await {
                tracing::error!(error = %e, "taking over the sessions failed");
            }
            match http.restore_streams().await {
                Ok(n) if n > 0 => {
                    tracing::info!(sessions = n, "server streams of sessions restored")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "server streams could not be restored"),
            }
            server.set_refusal(None);
            tracing::info!(epoch = change.epoch, "serving MCP as the primary");
        }
        Role::Standby => {
            server.set_refusal(Some(format!(
                "this node is a replication standby (epoch {}); write through the primary",
                change.epoch
            )));
            server.sessions.forget_all();
            http.forget_all_streams();
            // The primary takes over the tasks this node was running.
            server.tasks.stop_all();
        }
    }
}
