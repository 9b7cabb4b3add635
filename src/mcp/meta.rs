//! The `_meta` of an incoming request: the progress token in every era, and
//! in the modern era the protocol version, client identity, capabilities and
//! log level that replace the `initialize` handshake.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

use super::client::{ClientInfo, LogLevel};
use super::error::McpError;
use super::version::ProtocolVersion;

pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

#[derive(Deserialize, Default)]
struct Fields {
    #[serde(rename = "progressToken")]
    progress_token: Option<Value>,
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<Value>,
    #[serde(rename = "io.modelcontextprotocol/clientInfo")]
    client_info: Option<Value>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities")]
    client_capabilities: Option<Value>,
    #[serde(rename = "io.modelcontextprotocol/logLevel")]
    log_level: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WithMeta {
    #[serde(rename = "_meta")]
    meta: Option<Fields>,
}

/// The parts of `_meta` the protocol defines.
#[derive(Default)]
pub struct RequestMeta {
    pub progress_token: Option<Value>,
    /// Present on modern requests.
    pub protocol_version: Option<String>,
    pub client_info: Option<Value>,
    pub client_capabilities: Option<Value>,
    pub log_level: Option<String>,
}

impl RequestMeta {
    /// Reads `_meta` from raw params; absent or unreadable meta is empty.
    pub fn read(params: Option<&RawValue>) -> RequestMeta {
        let Some(p) = params else {
            return RequestMeta::default();
        };
        // Most params carry no `_meta`; a key can only be spelled another
        // way with a `\u` escape, so without either there is nothing to read.
        let text = p.get();
        if !text.contains("_meta") && !text.contains("\\u") {
            return RequestMeta::default();
        }
        let f = serde_json::from_str::<WithMeta>(text)
            .ok()
            .and_then(|w| w.meta)
            .unwrap_or_default();
        let progress_token = f
            .progress_token
            .filter(|t| t.is_string() || t.is_i64() || t.is_u64());
        RequestMeta {
            progress_token,
            protocol_version: f.protocol_version.map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            }),
            client_info: f.client_info,
            client_capabilities: f.client_capabilities,
            log_level: f.log_level.and_then(|v| v.as_str().map(str::to_owned)),
        }
    }

    /// True when the request claims the modern (per-request) lifecycle.
    pub fn is_modern(&self) -> bool {
        self.protocol_version.is_some()
    }

    /// Validates the fields every modern request must carry.
    pub fn modern(&self) -> Result<ModernMeta, McpError> {
        let missing = |what: &str| {
            McpError::invalid_params(format!("_meta is missing the required field {what}"))
                .with_status(400)
        };
        let requested = self
            .protocol_version
            .as_deref()
            .ok_or_else(|| missing(PROTOCOL_VERSION))?;
        let caps = self
            .client_capabilities
            .as_ref()
            .ok_or_else(|| missing(CLIENT_CAPABILITIES))?;
        if !caps.is_object() {
            return Err(McpError::invalid_params(format!(
                "{CLIENT_CAPABILITIES} must be an object"
            ))
            .with_status(400));
        }
        let version = match ProtocolVersion::parse(requested) {
            Some(v) if v.is_stateless() => v,
            _ => return Err(McpError::unsupported_version(requested)),
        };
        let log_level = match self.log_level.as_deref() {
            None => None,
            Some(l) => Some(LogLevel::parse(l).ok_or_else(|| {
                McpError::invalid_params(format!("unknown log level {l:?}")).with_status(400)
            })?),
        };
        Ok(ModernMeta {
            version,
            client: Arc::new(ClientInfo::new(
                self.client_info.clone().unwrap_or(Value::Null),
                caps.clone(),
            )),
            log_level,
        })
    }
}

/// A validated modern request's context.
#[derive(Clone)]
pub struct ModernMeta {
    pub version: ProtocolVersion,
    pub client: Arc<ClientInfo>,
    pub log_level: Option<LogLevel>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> RequestMeta {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        RequestMeta::read(Some(&raw))
    }

    #[test]
    fn modern_meta_needs_version_and_capabilities() {
        let ok = meta(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                "io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}}"#,
        );
        let m = ok.modern().unwrap();
        assert!(m.client.supports("sampling"));
        let no_caps = meta(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#);
        assert_eq!(no_caps.modern().err().unwrap().code, -32602);
        let old = meta(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25",
                "io.modelcontextprotocol/clientCapabilities":{}}}"#,
        );
        assert_eq!(old.modern().err().unwrap().code, -32022);
    }

    #[test]
    fn meta_is_read_however_its_key_is_spelled() {
        assert!(
            meta(r#"{"name":"x","arguments":{}}"#)
                .progress_token
                .is_none()
        );
        let plain = meta(r#"{"_meta":{"progressToken":"t"}}"#);
        assert_eq!(plain.progress_token, Some(Value::from("t")));
        let escaped = meta(r#"{"\u005fmeta":{"progressToken":7}}"#);
        assert_eq!(escaped.progress_token, Some(Value::from(7)));
    }

    #[test]
    fn progress_tokens_must_be_strings_or_integers() {
        assert!(
            meta(r#"{"_meta":{"progressToken":"t"}}"#)
                .progress_token
                .is_some()
        );
        assert!(
            meta(r#"{"_meta":{"progressToken":{}}}"#)
                .progress_token
                .is_none()
        );
    }
}
