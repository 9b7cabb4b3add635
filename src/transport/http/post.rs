//! POST /mcp: one JSON-RPC message in; 202 for notifications and responses,
//! JSON or an SSE stream for requests.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::Value;
use serde_json::value::RawValue;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::limits::{ClientKey, Refusal, Slot};
use super::stream::{self, Frame, Kind, PlainSse, SseBody, SseStream};
use super::{
    HttpState, OpenStream, SESSION_HEADER, VERSION_HEADER, headers, json_body, json_error,
};
use crate::logging::traces::Parent;
use crate::mcp::dispatch::{Call, Caller, Reply};
use crate::mcp::error::McpError;
use crate::mcp::grant::Grant;
use crate::mcp::jsonrpc::{self, Incoming, RequestId};
use crate::mcp::meta::RequestMeta;
use crate::mcp::methods;
use crate::mcp::outbound::{SharedSink, Sink};
use crate::mcp::reach;
use crate::mcp::session::Session;
use crate::mcp::version::ProtocolVersion;

pub async fn handle(
    state: Arc<HttpState>,
    client: ClientKey,
    req: Request,
    grant: Option<Arc<Grant>>,
) -> Response {
    let settings = state.settings();
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            &McpError::invalid_request("Content-Type must be application/json"),
        );
    }
    let bytes = match tokio::time::timeout(
        settings.body_read_timeout,
        read_body(body, settings.max_body_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(resp)) => return resp,
        Err(_) => return body_timeout(settings.body_read_timeout),
    };
    let msg = match jsonrpc::parse(&bytes) {
        Ok(m) => m,
        Err(r) => return json_error(StatusCode::BAD_REQUEST, r.id.as_ref(), &r.error),
    };
    match msg {
        Incoming::Request { id, method, params } => {
            if let Some(g) = &grant
                && let Some(refused) =
                    beyond_scope(&state, &parts.headers, g, &id, &method, params.as_deref())
            {
                return refused;
            }
            request(&state, &client, &parts.headers, id, method, params, grant).await
        }
        Incoming::Notification { method, params } => {
            notification(&state, &parts.headers, &method, params.as_deref()).await
        }
        Incoming::Response { id, outcome } => response(&state, &parts.headers, id, outcome).await,
    }
}

/// The 403 of a request the grant does not reach (see
/// [`crate::mcp::reach`]), answered before any session or era check so
/// every route refuses it the same way.
fn beyond_scope(
    state: &HttpState,
    h: &HeaderMap,
    grant: &Grant,
    id: &RequestId,
    method: &str,
    params: Option<&RawValue>,
) -> Option<Response> {
    let needed = reach::beyond(&state.server.catalog(), grant, method, params)?;
    let session = headers::get(h, SESSION_HEADER).map(str::to_owned);
    needed.audit(&state.server.store, session, Some(grant.principal.clone()));
    Some(super::auth::forbidden(
        id,
        &needed,
        state.settings().auth.resource_metadata().as_deref(),
    ))
}

fn is_json(h: &HeaderMap) -> bool {
    headers::get(h, header::CONTENT_TYPE.as_str())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

/// 408: the body did not arrive in time. The connection closes, since the
/// rest of the body would be read as the next request.
fn body_timeout(after: std::time::Duration) -> Response {
    metrics::counter!("erlmcp_http_timeouts_total", "timeout" => "body").increment(1);
    let mut r = json_error(
        StatusCode::REQUEST_TIMEOUT,
        None,
        &McpError::invalid_request(format!(
            "the request body did not arrive within {} s",
            after.as_secs()
        )),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads at most `limit` bytes; more is 413, a broken body 400.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            &McpError::invalid_request(format!("request body larger than {limit} bytes")),
        )
    };
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        drain(body).await;
        return Err(too_large());
    }
    match http_body_util::Limited::new(&mut body, limit)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            drain(body).await;
            Err(too_large())
        }
        Err(e) => Err(json_error(
            StatusCode::BAD_REQUEST,
            None,
            &McpError::invalid_request(format!("cannot read the request body: {e}")),
        )),
    }
}

/// Reads and discards the rest of an oversize body, within bounds. A client
/// still sending when the connection closes gets a reset instead of our
/// 413, and most clients then report a broken pipe, not the reason.
async fn drain(mut body: Body) {
    const MAX_BYTES: usize = 64 << 20;
    const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);
    let discard = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(MAX_TIME, discard).await;
}

/// How the request is to be served.
enum Era {
    Modern(Box<RequestMeta>),
    Session(Arc<Session>),
    Initialize,
}

/// Decides the era from headers and `_meta`; `Err` is the HTTP answer.
async fn era(
    state: &HttpState,
    h: &HeaderMap,
    method: Option<&str>,
    meta: RequestMeta,
) -> Result<Era, Response> {
    let header_version = headers::get(h, VERSION_HEADER);
    let session_id = headers::get(h, SESSION_HEADER);
    let header_is_modern = header_version
        .and_then(ProtocolVersion::parse)
        .is_some_and(|v| v.is_stateless());
    if meta.is_modern() || (session_id.is_none() && header_is_modern) {
        return Ok(Era::Modern(Box::new(meta)));
    }
    if let Some(v) = header_version
        && ProtocolVersion::parse(v).is_none()
    {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            None,
            &McpError::invalid_request(format!("unsupported MCP-Protocol-Version {v:?}")),
        ));
    }
    if session_id.is_none() && method == Some("initialize") {
        return Ok(Era::Initialize);
    }
    let Some(sid) = session_id else {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            None,
            &McpError::invalid_request(
                "missing Mcp-Session-Id: send initialize first, or use protocol 2026-07-28 with _meta",
            ),
        ));
    };
    match state.server.sessions.get(sid).await {
        Ok(Some(s)) => {
            s.touch(crate::clock::now_secs());
            Ok(Era::Session(s))
        }
        Ok(None) => Err(json_error(
            StatusCode::NOT_FOUND,
            None,
            &McpError::invalid_request("unknown or expired session: initialize a new one"),
        )),
        Err(e) => Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &McpError::internal(format!("session lookup failed: {e}")),
        )),
    }
}

async fn request(
    state: &Arc<HttpState>,
    client: &ClientKey,
    h: &HeaderMap,
    id: RequestId,
    method: String,
    params: Option<Box<RawValue>>,
    grant: Option<Arc<Grant>>,
) -> Response {
    let (accept_json, accept_sse) = headers::accepts(h);
    if !accept_json && !accept_sse {
        return json_error(
            StatusCode::NOT_ACCEPTABLE,
            Some(&id),
            &McpError::invalid_request("Accept must include application/json or text/event-stream"),
        );
    }
    let meta = RequestMeta::read(params.as_deref());
    let era = match era(state, h, Some(&method), meta).await {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    let settings = state.settings();
    let use_sse = accept_sse && (!settings.json_response || !accept_json);
    // A listening stream is counted as a stream, not as a request.
    let listens = method == "subscriptions/listen" && matches!(era, Era::Modern(_));
    let slot = match &era {
        _ if listens => None,
        Era::Session(s) => Some(state.limits.request(client, Some(&s.id))),
        _ => Some(state.limits.request(client, None)),
    };
    let slot = match slot.transpose() {
        Ok(s) => s,
        Err(refusal) => return state.refuse(client, refusal, Some(&id)),
    };
    match era {
        Era::Initialize => {
            let principal = grant.as_deref().map(|g| g.principal.as_str());
            initialize(state, client, id, params.as_deref(), principal).await
        }
        Era::Modern(meta) => {
            let call = Call {
                id,
                method,
                params,
                grant,
                trace: Parent::from_headers(h),
            };
            modern(state, client, h, call, *meta, use_sse, slot).await
        }
        Era::Session(s) => {
            let call = Call {
                id,
                method,
                params,
                grant,
                trace: Parent::from_headers(h),
            };
            legacy(state, s, call, use_sse, slot).await
        }
    }
}

async fn initialize(
    state: &Arc<HttpState>,
    client: &ClientKey,
    id: RequestId,
    params: Option<&RawValue>,
    principal: Option<&str>,
) -> Response {
    let sessions = &state.server.sessions;
    let admission = match sessions.admit(Some(client.owner())) {
        Ok(a) => a,
        Err(e) => {
            let retry = state.settings().session_retry_secs;
            return match Refusal::session(&e, retry) {
                Some(refusal) => state.refuse(client, refusal, Some(&id)),
                None => json_error(StatusCode::OK, Some(&id), &McpError::internal(e)),
            };
        }
    };
    match methods::lifecycle::initialize(&state.server, sessions, params, principal, admission)
        .await
    {
        Ok((session, result)) => {
            let mut r = json_body(StatusCode::OK, jsonrpc::response(&id, &result));
            if let Ok(v) = HeaderValue::from_str(&session.id) {
                r.headers_mut().insert(SESSION_HEADER, v);
            }
            r
        }
        Err(e) => json_error(StatusCode::OK, Some(&id), &e),
    }
}

/// The HTTP status for a modern error: the spec fixes some, others are 200.
fn modern_status(e: &McpError) -> StatusCode {
    e.http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK)
}

#[allow(clippy::too_many_arguments)]
async fn modern(
    state: &Arc<HttpState>,
    client: &ClientKey,
    h: &HeaderMap,
    call: Call,
    meta: RequestMeta,
    use_sse: bool,
    slot: Option<Slot>,
) -> Response {
    let (id, method, params) = (&call.id, call.method.as_str(), call.params.as_deref());
    let meta = match check_modern_request(h, method, params, &meta) {
        Ok(m) => m,
        Err(e) => return json_error(modern_status(&e), Some(id), &e),
    };
    if method == "tools/call"
        && let Err(e) = check_param_headers(state, h, params)
    {
        return json_error(modern_status(&e), Some(id), &e);
    }
    let caller = Caller::Modern {
        meta,
        peer: None,
        principal: super::principal::of(h),
    };
    if method == "subscriptions/listen" {
        return listen(state, client, &caller, call.id.clone(), params).await;
    }
    if !use_sse {
        let cancel = CancellationToken::new();
        let _stop_on_disconnect = cancel.clone().drop_guard();
        return finish_json(
            &call.id,
            state.server.handle(&call, &caller, None, cancel).await,
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: SharedSink = Arc::new(PlainSse(tx.clone()));
    let cancel = CancellationToken::new();
    let server = state.server.clone();
    let c = cancel.clone();
    let work = async move {
        let outcome = server.handle(&call, &caller, Some(sink), c).await;
        drop(slot);
        let status = outcome.as_ref().err().and_then(|e| e.http_status);
        (answer(&call.id, outcome), status)
    };
    // Closing the response stream cancels the request (2026-07-28).
    sse_response(state, work, tx, rx, Bytes::new(), Some(cancel), None).await
}

/// The checks of a modern POST, in the order the spec's errors rank: the
/// version header must exist (-32020), `_meta` must carry its required
/// fields (-32602), header and `_meta` must agree (-32020), the version must
/// be one we serve (-32022), and `Mcp-Method`/`Mcp-Name` must mirror the body.
fn check_modern_request(
    h: &HeaderMap,
    method: &str,
    params: Option<&RawValue>,
    meta: &RequestMeta,
) -> Result<crate::mcp::meta::ModernMeta, McpError> {
    let header = headers::get(h, VERSION_HEADER)
        .ok_or_else(|| McpError::header_mismatch("the MCP-Protocol-Version header is missing"))?;
    let Some(body_version) = meta.protocol_version.as_deref() else {
        return Err(meta
            .modern()
            .err()
            .unwrap_or_else(|| McpError::invalid_params("_meta is missing")));
    };
    if meta.client_capabilities.is_none() {
        return Err(meta
            .modern()
            .err()
            .unwrap_or_else(|| McpError::invalid_params("_meta is missing")));
    }
    if header != body_version {
        return Err(McpError::header_mismatch(format!(
            "MCP-Protocol-Version header {header:?} does not match _meta protocolVersion {body_version:?}"
        )));
    }
    let m = meta.modern()?;
    headers::check_modern(h, method, params, m.version.as_str())?;
    Ok(m)
}

/// For a modern tools/call: `Mcp-Param-*` headers must mirror the tool's
/// `x-mcp-header` arguments.
fn check_param_headers(
    state: &HttpState,
    h: &HeaderMap,
    params: Option<&RawValue>,
) -> Result<(), McpError> {
    #[derive(serde::Deserialize)]
    struct Call {
        name: String,
        #[serde(default)]
        arguments: Value,
    }
    let Some(call) = params.and_then(|p| serde_json::from_str::<Call>(p.get()).ok()) else {
        return Ok(());
    };
    let catalog = state.server.catalog();
    match catalog.tool(&call.name) {
        Some((entry, _)) if !entry.header_params.is_empty() => {
            headers::check_params(h, &entry.header_params, &call.arguments)
        }
        _ => Ok(()),
    }
}

/// A modern subscription: acknowledged at once, open until the client
/// closes the stream or the server shuts down.
async fn listen(
    state: &Arc<HttpState>,
    client: &ClientKey,
    caller: &Caller,
    id: RequestId,
    params: Option<&RawValue>,
) -> Response {
    let slot = match state.limits.stream(client, None) {
        Ok(s) => s,
        Err(refusal) => return state.refuse(client, refusal, Some(&id)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: SharedSink = Arc::new(PlainSse(tx.clone()));
    let server = &state.server;
    let listening = match methods::subscriptions::listen(server, caller, &id, params, sink).await {
        Ok(l) => l,
        Err(e) => return json_error(modern_status(&e), Some(&id), &e),
    };
    let shutdown = state.shutdown.clone();
    let closed = CancellationToken::new();
    let on_close = closed.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Graceful closure: answer the listen request, then end.
                let result = jsonrpc::response(&id, &listening.closing_result());
                let _ = tx.send(Frame::Event { id: None, data: Bytes::from(result) });
            }
            _ = on_close.cancelled() => {}
        }
        drop(listening);
    });
    let settings = state.settings();
    let body = SseBody::new(
        Bytes::new(),
        rx,
        Some(settings.keepalive),
        CancellationToken::new(),
        settings.sse_retry_ms,
        Some(closed),
    );
    sse(Body::from_stream(WithOpen(
        body,
        OpenStream::new(state, Some(slot)),
    )))
}

async fn legacy(
    state: &Arc<HttpState>,
    session: Arc<Session>,
    call: Call,
    use_sse: bool,
    slot: Option<Slot>,
) -> Response {
    let caller = Caller::Session(session.clone());
    if !use_sse {
        // Related messages go to the session's GET stream, if it has one.
        let sink = session.peer.server_stream();
        let outcome = state
            .server
            .handle(&call, &caller, sink, CancellationToken::new())
            .await;
        return finish_json(&call.id, outcome);
    }
    let stream_id = state.new_stream_id();
    let sse = Arc::new(SseStream::new(
        session.id.clone(),
        stream_id,
        Kind::Request,
        1,
        state.store(),
    ));
    let (tx, rx) = {
        let (rx, _) = sse.attach(0);
        let (tx, _) = mpsc::unbounded_channel::<Frame>();
        (tx, rx)
    };
    state
        .streams
        .insert((session.id.clone(), stream_id), sse.clone());
    let prelude = if session.version.primes_sse_streams() {
        sse.priming(state.settings().sse_retry_ms)
    } else {
        Bytes::new()
    };
    let server = state.server.clone();
    let st = state.clone();
    let s = sse.clone();
    let sink: SharedSink = sse.clone();
    let work = async move {
        // A disconnect does not cancel a legacy request: its events are
        // logged for the client to resume. notifications/cancelled does, and
        // then no response is sent.
        let cancel = CancellationToken::new();
        let outcome = server
            .handle(&call, &caller, Some(sink), cancel.clone())
            .await;
        drop(slot);
        if !cancel.is_cancelled() {
            s.send(answer(&call.id, outcome).to_vec());
        }
        if s.finish() {
            st.streams.remove(&(s.session_id.clone(), s.id));
        }
        (Bytes::new(), None)
    };
    sse_response(state, work, tx, rx, prelude, None, Some(sse)).await
}

fn answer(id: &RequestId, outcome: Result<Reply, McpError>) -> Bytes {
    Bytes::from(match outcome {
        Ok(r) => jsonrpc::response(id, &r),
        Err(e) => jsonrpc::error_response(Some(id), &e),
    })
}

fn finish_json(id: &RequestId, outcome: Result<Reply, McpError>) -> Response {
    match outcome {
        Ok(r) => json_body(StatusCode::OK, jsonrpc::response(id, &r)),
        Err(e) => json_error(modern_status(&e), Some(id), &e),
    }
}

/// Bytes that go out in one TCP segment on any common path MTU.
const ONE_SEGMENT: usize = 1400;

/// Runs `work` (in its own task, so a vanished client does not stop a
/// legacy request) and answers with SSE. If it finishes before sending
/// anything else, the whole body goes out at once; otherwise the stream is
/// returned immediately and filled as `work` proceeds.
///
/// `work` returns the final frame's bytes for plain (modern) streams, or
/// empty bytes when it delivered its answer through the stream itself, and
/// the HTTP status the spec fixes for it, if any: an answer that has one and
/// is the only message goes out as JSON with that status.
/// `cancel_on_drop` is cancelled if the client goes away first.
async fn sse_response<F>(
    state: &Arc<HttpState>,
    work: F,
    tx: mpsc::UnboundedSender<Frame>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    prelude: Bytes,
    cancel_on_drop: Option<CancellationToken>,
    resumable: Option<Arc<SseStream>>,
) -> Response
where
    F: Future<Output = (Bytes, Option<u16>)> + Send + 'static,
{
    let guard = cancel_on_drop.map(CancellationToken::drop_guard);
    let mut task = tokio::spawn(work);
    let first = tokio::select! {
        biased;
        done = &mut task => {
            let (last, status) = done.unwrap_or_default();
            if let Some(g) = guard {
                g.disarm();
            }
            if let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok())
                && rx.is_empty()
            {
                return json_body(status, last.to_vec());
            }
            let mut out = BytesMut::from(&prelude[..]);
            while let Ok(f) = rx.try_recv() {
                stream::encode(&f, &mut out);
            }
            if !last.is_empty() {
                stream::encode(&Frame::Event { id: None, data: last }, &mut out);
            }
            // A body larger than one TCP segment may arrive in part: keep
            // its events for a resume (see transport::http::stream).
            if out.len() > ONE_SEGMENT
                && let Some(s) = &resumable
            {
                s.log_from_now();
            }
            return sse(Body::from(out.freeze()));
        }
        f = rx.recv() => f,
    };
    // Something arrived before the answer: stream from here on.
    tokio::spawn(async move {
        if let Ok((last, _)) = task.await
            && !last.is_empty()
        {
            let _ = tx.send(Frame::Event {
                id: None,
                data: last,
            });
        }
    });
    let mut prelude = BytesMut::from(&prelude[..]);
    if let Some(f) = first {
        stream::encode(&f, &mut prelude);
    }
    if let Some(s) = &resumable {
        s.log_from_now();
    }
    let settings = state.settings();
    // A request's stream is not cut on shutdown: the drain lets it finish
    // (the listener's stop deadline bounds it).
    let body = SseBody::new(
        prelude.freeze(),
        rx,
        None,
        CancellationToken::new(),
        settings.sse_retry_ms,
        guard.map(|g| g.disarm()),
    );
    sse(Body::from_stream(WithOpen(
        body,
        OpenStream::new(state, None),
    )))
}

pub(super) fn sse(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// An SSE body that counts itself as open while alive.
pub(super) struct WithOpen(pub SseBody, #[allow(dead_code)] pub OpenStream);

impl futures::Stream for WithOpen {
    type Item = Result<Bytes, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0).poll_next(cx)
    }
}

async fn notification(
    state: &Arc<HttpState>,
    h: &HeaderMap,
    method: &str,
    params: Option<&RawValue>,
) -> Response {
    let meta = RequestMeta::read(params);
    match era(state, h, None, meta).await {
        Ok(Era::Session(s)) => {
            match method {
                "notifications/initialized" => {
                    if s.mark_initialized()
                        && let Err(e) = state.server.sessions.save(&s).await
                    {
                        tracing::warn!(error = %e, "cannot record the initialized notification");
                    }
                }
                "notifications/cancelled" => {
                    let id = params
                        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                        .and_then(|v| v.get("requestId").and_then(RequestId::from_value));
                    if let Some(id) = id {
                        s.peer.cancel(&id);
                    }
                }
                _ => tracing::debug!(method, "notification ignored"),
            }
            StatusCode::ACCEPTED.into_response()
        }
        // Modern notifications carry no state to act on over HTTP.
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(resp) => resp,
    }
}

async fn response(
    state: &Arc<HttpState>,
    h: &HeaderMap,
    id: RequestId,
    outcome: Result<Value, McpError>,
) -> Response {
    match era(state, h, None, RequestMeta::default()).await {
        Ok(Era::Session(s)) => {
            if !s.peer.resolve(&id, outcome) {
                tracing::debug!(%id, "response to no pending request");
            }
            StatusCode::ACCEPTED.into_response()
        }
        Ok(_) => json_error(
            StatusCode::BAD_REQUEST,
            None,
            &McpError::invalid_request("responses are accepted only within a session"),
        ),
        Err(resp) => resp,
    }
}
