//! `resources/list`, `resources/templates/list`, `resources/read`, and the
//! legacy `resources/subscribe` / `resources/unsubscribe`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ListParams, handler_error, list_result, params};
use crate::mcp::context::RequestContext;
use crate::mcp::error::{self, McpError};
use crate::mcp::server::Server;

pub async fn list(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: ListParams = params(raw)?;
    let page = server
        .catalog()
        .resources_page(
            p.cursor.as_deref(),
            server.settings().page_size,
            ctx.grant.as_deref(),
        )
        .await?;
    let items = page.items.iter().map(|r| r.to_json(ctx.version)).collect();
    Ok(list_result("resources", items, page.next))
}

pub fn templates(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: ListParams = params(raw)?;
    let (items, next) = server.catalog().templates_page(
        ctx.version,
        p.cursor.as_deref(),
        server.settings().page_size,
        ctx.grant.as_deref(),
    )?;
    Ok(list_result("resourceTemplates", items, next))
}

#[derive(Deserialize)]
struct UriParams {
    uri: String,
}

/// The error for a URI nobody serves: -32002 up to 2025-11-25, -32602 since.
fn not_found(ctx: &RequestContext, uri: &str) -> McpError {
    let code = if ctx.version.is_stateless() {
        error::INVALID_PARAMS
    } else {
        error::RESOURCE_NOT_FOUND_LEGACY
    };
    McpError::new(code, format!("Resource not found: {uri}")).with_data(json!({ "uri": uri }))
}

pub async fn read(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: UriParams = params(raw)?;
    let catalog = server.catalog();
    let Some(owner) = catalog.owner_of(&p.uri) else {
        return Err(not_found(ctx, &p.uri));
    };
    match owner.read_resource(&p.uri, ctx).await {
        Ok(Some(contents)) => Ok(json!({ "contents": contents })),
        Ok(None) => Err(not_found(ctx, &p.uri)),
        Err(e) => handler_error(ctx, e),
    }
}

pub async fn subscribe(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: UriParams = params(raw)?;
    let Some(session) = &ctx.session else {
        return Err(McpError::invalid_request(
            "resources/subscribe needs a session",
        ));
    };
    if server.catalog().owner_of(&p.uri).is_none() {
        return Err(not_found(ctx, &p.uri));
    }
    session.subscribe(&p.uri)?;
    server
        .sessions
        .save(session)
        .await
        .map_err(|e| McpError::internal(format!("cannot store the subscription: {e}")))?;
    Ok(json!({}))
}

pub async fn unsubscribe(
    server: &Server,
    ctx: &RequestContext,
    raw: Option<&RawValue>,
) -> Result<Value, McpError> {
    let p: UriParams = params(raw)?;
    let Some(session) = &ctx.session else {
        return Err(McpError::invalid_request(
            "resources/unsubscribe needs a session",
        ));
    };
    session.unsubscribe(&p.uri);
    server
        .sessions
        .save(session)
        .await
        .map_err(|e| McpError::internal(format!("cannot store the subscription: {e}")))?;
    Ok(json!({}))
}
