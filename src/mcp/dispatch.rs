//! Routing one request to its method handler, in either era, with the
//! bookkeeping every request shares: context, cancellation, metrics, and
//! the modern result fields (`resultType`, `serverInfo`).

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::RequestContext;
use super::error::McpError;
use super::grant::Grant;
use super::jsonrpc::RequestId;
use super::meta::{ModernMeta, RequestMeta, SERVER_INFO};
use super::methods;
use super::outbound::{Peer, SharedSink};
use super::server::Server;
use super::session::Session;
use crate::logging::traces::{self, Parent};
use tracing::Instrument;

/// A result: a JSON value, or JSON text serialized earlier and shared
/// (a cached `tools/list`), written out as it is.
#[derive(Clone, Debug)]
pub enum Reply {
    Value(Value),
    Raw(Arc<Box<RawValue>>),
}

impl Reply {
    fn is_tool_error(&self) -> bool {
        matches!(self, Reply::Value(v) if v.get("isError") == Some(&Value::Bool(true)))
    }
}

impl serde::Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Reply::Value(v) => v.serialize(s),
            Reply::Raw(r) => r.serialize(s),
        }
    }
}

/// Who sent a request, which fixes its protocol version and capabilities.
pub enum Caller {
    /// A legacy session (HTTP with `Mcp-Session-Id`, or stdio after `initialize`).
    Session(Arc<Session>),
    /// A modern request; `peer` lets stdio cancel it by id; `principal`
    /// is who the transport says is asking (tasks are scoped to it).
    Modern {
        meta: ModernMeta,
        peer: Option<Arc<Peer>>,
        principal: Arc<str>,
    },
}

/// One request to serve.
pub struct Call {
    pub id: RequestId,
    pub method: String,
    pub params: Option<Box<RawValue>>,
    /// What the transport authenticated; `None` when it asked for nothing.
    pub grant: Option<Arc<Grant>>,
    /// The client's trace context, if it sent one (and traces are on).
    pub trace: Parent,
}

/// Methods only the legacy (session) era has. (2026-07-28 removed
/// `tasks/result` and `tasks/list` with the move of tasks to an extension.)
const LEGACY_ONLY: &[&str] = &[
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "tasks/result",
    "tasks/list",
];

/// Methods whose modern results carry caching hints.
const CACHEABLE: &[&str] = &[
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

impl Server {
    /// Serves one request. The caller must not send a response if `cancel`
    /// fired (the client asked us to stop).
    pub async fn handle(
        &self,
        call: &Call,
        caller: &Caller,
        sink: Option<SharedSink>,
        cancel: CancellationToken,
    ) -> Result<Reply, McpError> {
        let span = request_span(call, caller);
        let outcome = self
            .serve(call, caller, sink, cancel)
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            record_outcome(&span, &outcome);
        }
        outcome
    }

    async fn serve(
        &self,
        call: &Call,
        caller: &Caller,
        sink: Option<SharedSink>,
        cancel: CancellationToken,
    ) -> Result<Reply, McpError> {
        let started = Instant::now();
        let _in_flight = self.begin();
        let ctx = match self.context(call, caller, sink, cancel.clone()) {
            Ok(ctx) => ctx,
            Err(e) => {
                let outcome = Err(e);
                record_metrics(&call.method, &outcome, started);
                return outcome;
            }
        };
        if let Some(refused) = self.beyond_scope(&call.method, &ctx, call.params.as_deref()) {
            let outcome = Err(refused);
            record_metrics(&call.method, &outcome, started);
            return outcome;
        }
        if let Some(p) = &ctx.peer {
            p.track(&call.id, cancel.clone());
        }
        let outcome = match self.cached(&call.method, &ctx, call.params.as_deref()) {
            Some(reply) => Ok(reply),
            None => tokio::select! {
                r = self.route(&call.method, &ctx, call.params.as_deref()) => r.map(|v| {
                    match caller {
                        Caller::Modern { .. } => Reply::Value(self.decorate_modern(&call.method, v)),
                        Caller::Session(_) => Reply::Value(v),
                    }
                }),
                _ = cancel.cancelled() => Err(McpError::new(-32800, "Request cancelled")),
            },
        };
        if let Some(p) = &ctx.peer {
            p.untrack(&call.id);
        }
        record_metrics(&call.method, &outcome, started);
        tracing::debug!(
            session = ctx.session_id().unwrap_or("-"),
            method = %call.method,
            request_id = %call.id,
            duration_us = started.elapsed().as_micros() as u64,
            outcome = match &outcome { Ok(_) => "ok", Err(e) => e.message.as_str() },
            "request"
        );
        outcome
    }

    /// `tools/list` without a cursor, when every tool fits one page: the
    /// whole result is serialized once per protocol version and catalog.
    fn cached(
        &self,
        method: &str,
        ctx: &RequestContext,
        params: Option<&RawValue>,
    ) -> Option<Reply> {
        // A text search is enough: a false hit (a client named "cursor")
        // only skips the cache.
        if method != "tools/list" || params.is_some_and(|p| p.get().contains("\"cursor\"")) {
            return None;
        }
        // A restricted caller sees its own list, made each time.
        if ctx.grant.as_ref().is_some_and(|g| !g.is_unrestricted()) {
            return None;
        }
        let catalog = self.catalog();
        if catalog.tool_count() > self.settings().page_size {
            return None;
        }
        let raw = catalog.cached_list(ctx.version, || {
            let v = methods::tools::list(self, ctx, None).ok()?;
            let v = if ctx.version.is_stateless() {
                self.decorate_modern(method, v)
            } else {
                v
            };
            serde_json::value::to_raw_value(&v).ok()
        })?;
        Some(Reply::Raw(raw))
    }

    fn context(
        &self,
        call: &Call,
        caller: &Caller,
        sink: Option<SharedSink>,
        cancel: CancellationToken,
    ) -> Result<RequestContext, McpError> {
        let meta = RequestMeta::read(call.params.as_deref());
        let settings = self.settings();
        let (version, session, peer, client, log_level, principal) = match caller {
            Caller::Session(s) => (
                s.version,
                Some(s.clone()),
                Some(s.peer.clone()),
                s.client.clone(),
                s.log_level(),
                None,
            ),
            Caller::Modern {
                meta,
                peer,
                principal,
            } => (
                meta.version,
                None,
                peer.clone(),
                meta.client.clone(),
                meta.log_level,
                Some(principal.clone()),
            ),
        };
        let (input_responses, request_state) = if version.is_stateless() {
            retry_fields(call.params.as_deref())?
        } else {
            (None, None)
        };
        Ok(RequestContext {
            version,
            session,
            peer,
            client,
            log_level,
            progress_token: meta.progress_token,
            cancel,
            sink,
            input_responses,
            request_state,
            signer: self.signer(),
            client_request_timeout: settings.client_request_timeout,
            principal,
            grant: call.grant.clone(),
            task: None,
        })
    }

    /// The refusal of a request its caller's scopes do not reach (see
    /// [`super::reach`]), audited. The HTTP transport refuses these with
    /// 403 before they get here; this holds for every other route.
    fn beyond_scope(
        &self,
        method: &str,
        ctx: &RequestContext,
        params: Option<&RawValue>,
    ) -> Option<McpError> {
        let grant = ctx.grant.as_deref()?;
        let needed = super::reach::beyond(&self.catalog(), grant, method, params)?;
        let session = ctx.session_id().map(str::to_owned);
        needed.audit(&self.store, session, Some(grant.principal.clone()));
        Some(needed.error())
    }

    async fn route(
        &self,
        method: &str,
        ctx: &RequestContext,
        params: Option<&RawValue>,
    ) -> Result<Value, McpError> {
        let modern = ctx.version.is_stateless();
        if modern && LEGACY_ONLY.contains(&method) {
            return Err(McpError::method_not_found(method).with_status(404));
        }
        match method {
            "ping" => Ok(json!({})),
            "server/discover" => Ok(methods::lifecycle::discover(self)),
            "tools/list" => methods::tools::list(self, ctx, params),
            "tools/call" => methods::tools::call(self, ctx, params).await,
            "resources/list" => methods::resources::list(self, ctx, params).await,
            "resources/templates/list" => methods::resources::templates(self, ctx, params),
            "resources/read" => methods::resources::read(self, ctx, params).await,
            "resources/subscribe" => methods::resources::subscribe(self, ctx, params).await,
            "resources/unsubscribe" => methods::resources::unsubscribe(self, ctx, params).await,
            "prompts/list" => methods::prompts::list(self, ctx, params),
            "prompts/get" => methods::prompts::get(self, ctx, params).await,
            "completion/complete" => methods::completion::complete(self, ctx, params).await,
            "logging/setLevel" => methods::logging::set_level(self, ctx, params).await,
            "tasks/get" => methods::tasks::get(self, ctx, params).await,
            "tasks/list" => methods::tasks::list(self, ctx, params).await,
            "tasks/result" => methods::tasks::result(self, ctx, params).await,
            "tasks/cancel" => methods::tasks::cancel(self, ctx, params).await,
            "tasks/update" => methods::tasks::update(self, ctx, params).await,
            "initialize" if !modern => Err(McpError::invalid_request(
                "this session is already initialized",
            )),
            _ => Err(McpError::method_not_found(method).with_status(404)),
        }
    }

    /// Adds what every modern result carries: `resultType`, the server's
    /// identity, and caching hints where the method is cacheable.
    fn decorate_modern(&self, method: &str, mut result: Value) -> Value {
        let Some(obj) = result.as_object_mut() else {
            return result;
        };
        obj.entry("resultType").or_insert(json!("complete"));
        let meta = obj
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                SERVER_INFO.into(),
                self.server_info(super::version::ProtocolVersion::NEWEST_MODERN),
            );
        }
        let complete = obj.get("resultType") == Some(&json!("complete"));
        if complete && CACHEABLE.contains(&method) {
            let ttl = match method {
                "resources/list" | "resources/read" => 0,
                _ => self.settings().list_ttl_ms,
            };
            obj.entry("ttlMs").or_insert(json!(ttl));
            obj.entry("cacheScope")
                .or_insert(json!(if ttl == 0 { "private" } else { "public" }));
        }
        result
    }
}

type RetryFields = (Option<Map<String, Value>>, Option<String>);

/// The MRTR fields of a modern retry: `inputResponses` must map keys to
/// result objects, `requestState` must be a string.
fn retry_fields(params: Option<&RawValue>) -> Result<RetryFields, McpError> {
    #[derive(serde::Deserialize)]
    struct Retry {
        #[serde(rename = "inputResponses", default, deserialize_with = "present")]
        input_responses: Option<Value>,
        #[serde(rename = "requestState", default, deserialize_with = "present")]
        request_state: Option<Value>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        <Value as serde::Deserialize>::deserialize(d).map(Some)
    }
    let Some(p) = params else {
        return Ok((None, None));
    };
    let r: Retry = serde_json::from_str(p.get())
        .map_err(|e| McpError::invalid_params(format!("malformed params: {e}")))?;
    let inputs = match r.input_responses {
        None => None,
        Some(Value::Object(m)) => {
            if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_object()) {
                return Err(McpError::invalid_params(format!(
                    "inputResponses[{k:?}] must be a result object"
                )));
            }
            Some(m)
        }
        Some(_) => {
            return Err(McpError::invalid_params(
                "inputResponses must be an object mapping keys to results",
            ));
        }
    };
    let state = match r.request_state {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(McpError::invalid_params("requestState must be a string")),
    };
    Ok((inputs, state))
}

/// Known method names, so metrics labels stay bounded whatever clients send.
fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        "tasks/update",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The trace span of one request (disabled, and nothing more is done,
/// while traces are off). Attribute names follow OpenTelemetry's semantic
/// conventions for MCP and JSON-RPC.
fn request_span(call: &Call, caller: &Caller) -> tracing::Span {
    let span = tracing::info_span!(
        target: traces::TARGET,
        "mcp.request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        mcp.method.name = %call.method,
        jsonrpc.request.id = %call.id,
        gen_ai.tool.name = tracing::field::Empty,
        mcp.session.id = tracing::field::Empty,
        enduser.id = tracing::field::Empty,
        mcp.outcome = tracing::field::Empty,
        rpc.jsonrpc.error_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    call.trace.adopt(&span);
    let tool = (call.method == "tools/call")
        .then(|| tool_name(call.params.as_deref()))
        .flatten();
    match &tool {
        Some(t) => span.record("otel.name", format!("{} {t}", call.method)),
        None => span.record("otel.name", call.method.as_str()),
    };
    if let Some(t) = &tool {
        span.record("gen_ai.tool.name", t.as_str());
    }
    match caller {
        Caller::Session(s) => {
            span.record("mcp.session.id", &*s.id);
        }
        Caller::Modern { principal, .. } => {
            span.record("enduser.id", &**principal);
        }
    }
    if let Some(g) = &call.grant {
        span.record("enduser.id", &*g.principal);
    }
    span
}

fn tool_name(params: Option<&RawValue>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    serde_json::from_str::<Named>(params?.get())
        .ok()
        .map(|n| n.name)
}

fn record_outcome(span: &tracing::Span, outcome: &Result<Reply, McpError>) {
    let label = match outcome {
        Ok(r) if r.is_tool_error() => "tool_error",
        Ok(_) => "ok",
        Err(e) => {
            span.record("rpc.jsonrpc.error_code", e.code);
            span.record("otel.status_code", "ERROR");
            "error"
        }
    };
    span.record("mcp.outcome", label);
}

pub fn record_metrics(method: &str, outcome: &Result<Reply, McpError>, started: Instant) {
    let method = method_label(method);
    let outcome = match outcome {
        Ok(r) if r.is_tool_error() => "tool_error",
        Ok(_) => "ok",
        Err(e) if e.is_server_error() => "server_error",
        Err(_) => "client_error",
    };
    let (requests, duration) = request_metrics(method, outcome);
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
}

/// The request metrics' handles by label. The macros look a metric up by
/// name and labels on every call, a measurable share of a request; the label
/// sets are few and fixed, so each is looked up once.
fn request_metrics(
    method: &'static str,
    outcome: &'static str,
) -> (metrics::Counter, metrics::Histogram) {
    type Handles =
        dashmap::DashMap<(&'static str, &'static str), (metrics::Counter, metrics::Histogram)>;
    static HANDLES: std::sync::LazyLock<Handles> = std::sync::LazyLock::new(Handles::default);
    if let Some(h) = HANDLES.get(&(method, outcome)) {
        return h.clone();
    }
    let handles = (
        metrics::counter!("erlmcp_requests_total", "method" => method, "outcome" => outcome),
        metrics::histogram!("erlmcp_request_duration_seconds", "method" => method),
    );
    HANDLES.insert((method, outcome), handles.clone());
    handles
}
