//! What a client told us about itself: identity, capabilities, log level.

use serde_json::Value;

/// The client's `clientInfo` and capabilities, from `initialize` (legacy) or
/// from a request's `_meta` (modern).
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub info: Value,
    pub capabilities: Value,
}

impl ClientInfo {
    pub fn new(info: Value, capabilities: Value) -> Self {
        ClientInfo { info, capabilities }
    }

    /// True when the client declared capability `name` (`sampling`,
    /// `elicitation`, `roots`).
    pub fn supports(&self, name: &str) -> bool {
        self.capabilities
            .get(name)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
    }

    /// True when the client declared extension `id` under
    /// `capabilities.extensions` (2026-07-28).
    pub fn supports_extension(&self, id: &str) -> bool {
        self.capabilities
            .get("extensions")
            .and_then(|e| e.get(id))
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
    }

    /// A name for logs.
    pub fn name(&self) -> &str {
        self.info
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
    }
}

/// `notifications/message` severities, lowest first (RFC 5424 order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug = 1,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "debug" => Self::Debug,
            "info" => Self::Info,
            "notice" => Self::Notice,
            "warning" => Self::Warning,
            "error" => Self::Error,
            "critical" => Self::Critical,
            "alert" => Self::Alert,
            "emergency" => Self::Emergency,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Notice => "notice",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
            Self::Alert => "alert",
            Self::Emergency => "emergency",
        }
    }

    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Notice,
            4 => Self::Warning,
            5 => Self::Error,
            6 => Self::Critical,
            7 => Self::Alert,
            8 => Self::Emergency,
            _ => return None,
        })
    }
}
