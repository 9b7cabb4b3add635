//! GET /mcp (legacy sessions): opens the session's standalone stream for
//! server messages unrelated to a request, or resumes any of its streams
//! from `Last-Event-ID`, replaying what the client missed.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

use super::limits::{ClientKey, Slot};
use super::post::{WithOpen, sse};
use super::stream::{self, EventId, Frame, Kind, SseBody, SseStream};
use super::{HttpState, OpenStream, SESSION_HEADER, VERSION_HEADER, headers, json_error};
use crate::mcp::error::McpError;
use crate::mcp::outbound::SharedSink;
use crate::mcp::session::Session;
use crate::mcp::version::ProtocolVersion;
use crate::store;

pub async fn handle(state: Arc<HttpState>, client: ClientKey, req: Request) -> Response {
    let h = req.headers();
    let modern = headers::get(h, VERSION_HEADER)
        .and_then(ProtocolVersion::parse)
        .is_some_and(|v| v.is_stateless());
    if modern {
        return method_not_allowed();
    }
    if !headers::accepts(h).1 {
        return json_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            &McpError::invalid_request("GET needs Accept: text/event-stream"),
        );
    }
    let Some(sid) = headers::get(h, SESSION_HEADER) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            None,
            &McpError::invalid_request("missing Mcp-Session-Id"),
        );
    };
    let session = match state.server.sessions.get(sid).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                None,
                &McpError::invalid_request("unknown session"),
            );
        }
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &McpError::internal(e),
            );
        }
    };
    let from = match headers::get(h, "last-event-id") {
        Some(last) => match EventId::parse(last.trim()) {
            Some(id) => Some(id),
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    &McpError::invalid_request(format!("unknown Last-Event-ID {last:?}")),
                );
            }
        },
        None => None,
    };
    let slot = match state.limits.stream(&client, Some(&session.id)) {
        Ok(s) => s,
        Err(refusal) => return state.refuse(&client, refusal, None),
    };
    match from {
        Some(id) => resume(&state, &session, id, slot).await,
        None => standalone(&state, &session, slot).await,
    }
}

fn method_not_allowed() -> Response {
    let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// The session's stream for unrelated server messages; one at a time.
async fn standalone(state: &Arc<HttpState>, session: &Arc<Session>, slot: Slot) -> Response {
    let existing = state
        .streams
        .iter()
        .find(|e| e.key().0 == session.id && e.value().kind == Kind::Standalone)
        .map(|e| e.value().clone());
    let sse = match existing {
        Some(s) if s.is_attached() => {
            return json_error(
                StatusCode::CONFLICT,
                None,
                &McpError::invalid_request("this session already has an open GET stream"),
            );
        }
        Some(s) => s,
        None => match new_standalone(state, session).await {
            Ok(s) => s,
            Err(e) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    &McpError::internal(e),
                );
            }
        },
    };
    let rx = sse.attach_fresh();
    let prelude = if session.version.primes_sse_streams() {
        sse.priming(state.settings().sse_retry_ms)
    } else {
        Bytes::new()
    };
    body(state, prelude, rx, slot)
}

/// Creates the session's standalone stream and records it, so a restarted
/// server re-creates it and keeps logging notifications for replay.
async fn new_standalone(
    state: &Arc<HttpState>,
    session: &Arc<Session>,
) -> Result<Arc<SseStream>, crate::store::StoreError> {
    let id = state.new_stream_id();
    let sid = session.id.to_string();
    state
        .server
        .store
        .write(move |tx| store::sessions::set_standalone_stream(tx, &sid, id))
        .await?;
    Ok(adopt_standalone(state, session, id, 1))
}

/// Makes `id` the session's standalone stream (detached until a GET
/// attaches): notifications unrelated to a request go there.
pub(super) fn adopt_standalone(
    state: &Arc<HttpState>,
    session: &Arc<Session>,
    id: u64,
    first_seq: u64,
) -> Arc<SseStream> {
    let s = Arc::new(SseStream::new(
        session.id.clone(),
        id,
        Kind::Standalone,
        first_seq,
        state.store(),
    ));
    state.streams.insert((session.id.clone(), id), s.clone());
    let sink: SharedSink = s.clone();
    session.peer.set_server_stream(Some(sink));
    s
}

/// Replays a stream after `from` and, if it is still live, follows it.
async fn resume(
    state: &Arc<HttpState>,
    session: &Arc<Session>,
    from: EventId,
    slot: Slot,
) -> Response {
    let live = state
        .streams
        .get(&(session.id.clone(), from.stream))
        .map(|e| e.value().clone());
    let (sse, logged) = match live {
        Some(s) => (s, None),
        None => {
            let logged = logged_after(state, session, from).await;
            (revive(state, session, from, &logged), Some(logged))
        }
    };
    let (rx, from_memory) = sse.attach(from.seq);
    let older = match logged {
        Some(l) => l,
        // Older events than memory holds are only in the database.
        None if from_memory > from.seq + 1 => logged_after(state, session, from).await,
        None => Vec::new(),
    };
    let mut prelude = BytesMut::new();
    for (seq, data) in older.into_iter().filter(|(s, _)| *s < from_memory) {
        stream::encode(
            &Frame::Event {
                id: Some(EventId::format(from.kind, from.stream, seq)),
                data: Bytes::from(data),
            },
            &mut prelude,
        );
    }
    body(state, prelude.freeze(), rx, slot)
}

async fn logged_after(state: &HttpState, session: &Session, from: EventId) -> Vec<(u64, String)> {
    let (sid, stream_id, after) = (session.id.to_string(), from.stream, from.seq);
    match state
        .server
        .store
        .read(move |c| store::events::after(c, &sid, stream_id, after))
        .await
    {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the SSE event log");
            Vec::new()
        }
    }
}

/// A stream not in memory (the server restarted, or the request finished
/// long ago): rebuilt after the events the log holds. A standalone stream
/// becomes the session's server stream again; a request's stream only
/// replays.
fn revive(
    state: &Arc<HttpState>,
    session: &Arc<Session>,
    from: EventId,
    logged: &[(u64, String)],
) -> Arc<SseStream> {
    let next = logged.last().map_or(from.seq + 1, |(s, _)| s + 1);
    let sse = Arc::new(SseStream::new(
        session.id.clone(),
        from.stream,
        from.kind,
        next,
        state.store(),
    ));
    if from.kind == Kind::Standalone {
        state
            .streams
            .insert((session.id.clone(), from.stream), sse.clone());
        let sink: SharedSink = sse.clone();
        session.peer.set_server_stream(Some(sink));
    } else {
        sse.finish();
    }
    sse
}

fn body(
    state: &Arc<HttpState>,
    prelude: Bytes,
    rx: tokio::sync::mpsc::UnboundedReceiver<Frame>,
    slot: Slot,
) -> Response {
    let settings = state.settings();
    let body = SseBody::new(
        prelude,
        rx,
        Some(settings.keepalive),
        state.shutdown.clone(),
        settings.sse_retry_ms,
        None,
    );
    sse(Body::from_stream(WithOpen(
        body,
        OpenStream::new(state, Some(slot)),
    )))
}
