//! `logging/setLevel` (legacy): the minimum level of `notifications/message`
//! this session receives.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::params;
use crate::mcp::client::LogLevel;
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::server::Server;

#[derive(Deserialize)]
struct SetLevel {
    level: String,
}

pub async fn set_level(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: SetLevel = params(raw)?;
    let level = LogLevel::parse(&p.level)
        .ok_or_else(|| McpError::invalid_params(format!("unknown log level {:?}", p.level)))?;
    let Some(session) = &ctx.session else {
        return Err(McpError::invalid_request(
            "logging/setLevel needs a session",
        ));
    };
    session.set_log_level(level);
    server
        .sessions
        .save(session)
        .await
        .map_err(|e| McpError::internal(format!("cannot store the log level: {e}")))?;
    Ok(json!({}))
}
