//! `initialize` (legacy handshake) and `server/discover` (modern).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::params;
use crate::mcp::client::ClientInfo;
use crate::mcp::error::McpError;
use crate::mcp::server::Server;
use crate::mcp::session::{Admission, Session, SessionError, SessionRegistry};
use crate::mcp::version::ProtocolVersion;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeParams {
    protocol_version: String,
    #[serde(default)]
    capabilities: Value,
    #[serde(default)]
    client_info: Value,
}

/// Negotiates a version, creates the session in `registry` in the place
/// `admission` holds (see [`SessionRegistry::admit`]), and returns it with
/// the `InitializeResult`.
pub async fn initialize(
    server: &Server,
    registry: &SessionRegistry,
    raw: Option<&RawValue>,
    principal: Option<&str>,
    admission: Admission,
) -> Result<(Arc<Session>, Value), McpError> {
    let p: InitializeParams = params(raw)?;
    if !p.capabilities.is_object() && !p.capabilities.is_null() {
        return Err(McpError::invalid_params("capabilities must be an object"));
    }
    let version = ProtocolVersion::negotiate_legacy(&p.protocol_version);
    let caps = if p.capabilities.is_null() {
        json!({})
    } else {
        p.capabilities
    };
    let session = registry
        .create(
            version,
            ClientInfo::new(p.client_info, caps),
            principal,
            admission,
        )
        .await
        .map_err(|e| match e {
            SessionError::TooLarge { .. } => McpError::invalid_params(e),
            // Caps are checked by `admit`, before this is called.
            e => McpError::internal(format!("cannot store the session: {e}")),
        })?;
    let mut result = Map::new();
    result.insert("protocolVersion".into(), json!(version.as_str()));
    result.insert("capabilities".into(), server.capabilities(version));
    result.insert("serverInfo".into(), server.server_info(version));
    if let Some(i) = &server.settings().instructions {
        result.insert("instructions".into(), json!(i));
    }
    tracing::info!(
        session = %session.id,
        client = session.client.name(),
        requested = %p.protocol_version,
        version = %version,
        "session initialized"
    );
    Ok((session, Value::Object(result)))
}

/// The `DiscoverResult`: versions, capabilities, identity.
pub fn discover(server: &Server) -> Value {
    let mut result = Map::new();
    result.insert(
        "supportedVersions".into(),
        json!(ProtocolVersion::supported_strings()),
    );
    result.insert(
        "capabilities".into(),
        server.capabilities(ProtocolVersion::NEWEST_MODERN),
    );
    if let Some(i) = &server.settings().instructions {
        result.insert("instructions".into(), json!(i));
    }
    Value::Object(result)
}
