//! rmcp 3.11 (the official Rust MCP SDK) serving the conformance fixture tool
//! `test_simple_text`, the peer erlmcp is compared against.
//!
//! ```text
//! rmcp-peer stdio
//! rmcp-peer http --listen 127.0.0.1:PORT [--nodelay] [--json]
//! ```
//!
//! * `http` without `--nodelay` is rmcp's server as its examples ship it:
//!   `axum::serve(TcpListener, router)`, Nagle left on.
//! * `--nodelay` sets TCP_NODELAY on every accepted socket (axum's
//!   `ListenerExt::tap_io`): the fair comparison.
//! * `--json` selects rmcp's JSON-response mode. rmcp only honours
//!   `json_response` on its stateless path, so this also turns
//!   `legacy_session_mode` off (no `Mcp-Session-Id`); the default (SSE) mode
//!   is stateful with sessions, like erlmcp.
//!
//! The handler is written against the trait directly (no macros) so what it
//! does per call is plain to see: one static tool, one static text.

use std::sync::Arc;

use axum::serve::ListenerExt;
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
        ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};

const TEXT: &str = "This is a simple text response for testing.";

#[derive(Clone)]
struct Fixture {
    tools: Arc<Vec<Tool>>,
}

impl Fixture {
    fn new() -> Self {
        let schema: JsonObject = serde_json::from_str(r#"{"type":"object","properties":{}}"#)
            .expect("static schema");
        let tool = Tool::new(
            "test_simple_text",
            "Tests simple text content response",
            Arc::new(schema),
        );
        Self {
            tools: Arc::new(vec![tool]),
        }
    }
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items((*self.tools).clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name == "test_simple_text" {
            Ok(CallToolResult::success(vec![ContentBlock::text(TEXT)]).into())
        } else {
            Err(ErrorData::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ))
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: rmcp-peer stdio | rmcp-peer http --listen ADDR [--nodelay] [--json]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stdio") => {
            let running = Fixture::new().serve(rmcp::transport::stdio()).await?;
            running.waiting().await?;
        }
        Some("http") => {
            let mut listen = "127.0.0.1:8000".to_string();
            let (mut nodelay, mut json) = (false, false);
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--listen" => listen = it.next().cloned().unwrap_or_else(|| usage()),
                    "--nodelay" => nodelay = true,
                    "--json" => json = true,
                    _ => usage(),
                }
            }
            let mut config = StreamableHttpServerConfig::default();
            if json {
                config = config
                    .with_legacy_session_mode(false)
                    .with_json_response(true);
            }
            let fixture = Fixture::new();
            let service: StreamableHttpService<Fixture, LocalSessionManager> =
                StreamableHttpService::new(
                    move || Ok(fixture.clone()),
                    Default::default(),
                    config,
                );
            let router = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            eprintln!(
                "rmcp-peer listening on http://{}/mcp nodelay={nodelay} json={json}",
                listener.local_addr()?
            );
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            if nodelay {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            } else {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            }
        }
        _ => usage(),
    }
    Ok(())
}
