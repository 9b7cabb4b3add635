//! DELETE /mcp: the client ends its session.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::{HttpState, SESSION_HEADER, VERSION_HEADER, headers, json_error};
use crate::mcp::error::McpError;
use crate::mcp::version::ProtocolVersion;

pub async fn handle(state: Arc<HttpState>, req: Request) -> Response {
    let h = req.headers();
    let Some(sid) = headers::get(h, SESSION_HEADER) else {
        let modern = headers::get(h, VERSION_HEADER)
            .and_then(ProtocolVersion::parse)
            .is_some_and(|v| v.is_stateless());
        if modern {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        return json_error(
            StatusCode::BAD_REQUEST,
            None,
            &McpError::invalid_request("missing Mcp-Session-Id"),
        );
    };
    match state.server.sessions.remove(sid).await {
        Ok(true) => {
            state.forget_session(sid);
            tracing::info!(session = sid, "session ended by the client");
            StatusCode::OK.into_response()
        }
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            None,
            &McpError::invalid_request("unknown session"),
        ),
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &McpError::internal(e),
        ),
    }
}
