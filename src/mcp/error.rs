//! JSON-RPC and MCP error objects.
//!
//! A protocol failure is a JSON-RPC error; a tool that fails is a successful
//! response with `isError: true` (see `toolsets`). Some modern (2026-07-28)
//! errors also fix the HTTP status, which the HTTP transport reads from
//! [`McpError::http_status`].

use serde::Serialize;
use serde_json::{Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Legacy revisions (up to 2025-11-25): resource not found.
pub const RESOURCE_NOT_FOUND_LEGACY: i64 = -32002;
/// 2026-07-28: HTTP headers disagree with the body, or are missing.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the request needs a client capability it did not declare.
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
/// 2026-07-28: the requested protocol version is not served here.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// erlmcp: this node takes no writes (a replication standby, or a primary
/// refusing writes); nothing was written. Retry on the primary.
pub const NOT_WRITABLE: i64 = -32060;
/// erlmcp: the write was not acknowledged by the standby in time and was
/// rolled back on the primary; the standby may hold it (indeterminate).
pub const NOT_REPLICATED: i64 = -32061;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct McpError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The HTTP status a modern request must answer with, when the spec fixes one.
    #[serde(skip)]
    pub http_status: Option<u16>,
}

impl McpError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        McpError {
            code,
            message: message.into(),
            data: None,
            http_status: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(PARSE_ERROR, format!("Parse error: {detail}"))
    }

    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::new(INVALID_REQUEST, format!("Invalid request: {detail}"))
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
            .with_data(json!({ "method": method }))
    }

    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(INVALID_PARAMS, format!("Invalid params: {detail}"))
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(INTERNAL_ERROR, format!("Internal error: {detail}"))
    }

    pub fn not_writable(detail: impl std::fmt::Display) -> Self {
        Self::new(NOT_WRITABLE, format!("Not writable here: {detail}"))
            .with_data(json!({ "outcome": "not_applied", "retry": true }))
    }

    pub fn not_replicated(detail: impl std::fmt::Display) -> Self {
        Self::new(NOT_REPLICATED, format!("Not replicated: {detail}"))
            .with_data(json!({ "outcome": "indeterminate", "retry": true }))
    }

    pub fn unsupported_version(requested: &str) -> Self {
        Self::new(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
            .with_data(json!({
                "supported": super::ProtocolVersion::supported_strings(),
                "requested": requested,
            }))
            .with_status(400)
    }

    pub fn header_mismatch(detail: impl std::fmt::Display) -> Self {
        Self::new(HEADER_MISMATCH, format!("Header mismatch: {detail}")).with_status(400)
    }

    /// `required` is a ClientCapabilities object naming what is missing.
    pub fn missing_capability(required: Value) -> Self {
        let names: Vec<String> = required
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Self::new(
            MISSING_CLIENT_CAPABILITY,
            format!("Missing required client capability: {}", names.join(", ")),
        )
        .with_data(json!({ "requiredCapabilities": required }))
        .with_status(400)
    }
}

impl McpError {
    /// Whether the failure is the server's, not the request's: what the
    /// availability objective counts against erlmcp (`outcome="server_error"`
    /// in `erlmcp_requests_total`). An internal error, or a write this node
    /// could not take or replicate. Everything else (malformed or unknown
    /// requests, bad params, unsupported versions, cancellations) is the
    /// client's.
    pub fn is_server_error(&self) -> bool {
        matches!(self.code, INTERNAL_ERROR | NOT_WRITABLE | NOT_REPLICATED)
    }
}

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for McpError {}
