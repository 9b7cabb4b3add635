//! The stdio transport: newline-delimited JSON-RPC on stdin/stdout. Nothing
//! but protocol messages is ever written to stdout (logs go to stderr).
//!
//! One process serves one client, in either era: after `initialize` the
//! connection is a legacy session (kept in memory only: a new process is a
//! new session), while requests carrying modern `_meta` are served
//! statelessly.

use bytes::BytesMut;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::mcp::dispatch::{Call, Caller};
use crate::mcp::error::McpError;
use crate::mcp::jsonrpc::{self, Incoming, RequestId};
use crate::mcp::meta::RequestMeta;
use crate::mcp::methods;
use crate::mcp::notify::Registration;
use crate::mcp::outbound::{Peer, SharedSink, Sink};
use crate::mcp::server::Server;
use crate::mcp::session::{Session, SessionRegistry};

/// Writes whole messages to the output, each followed by a newline.
struct Stdout(mpsc::UnboundedSender<Vec<u8>>);

impl Sink for Stdout {
    fn send(&self, message: Vec<u8>) -> bool {
        self.0.send(message).is_ok()
    }
}

struct Connection {
    server: Arc<Server>,
    out: SharedSink,
    registry: Arc<SessionRegistry>,
    session: Mutex<Option<Arc<Session>>>,
    /// Tracks modern requests (and pre-initialize ones) for cancellation.
    peer: Arc<Peer>,
    /// Set while `initialize` runs, so a request right behind it (before
    /// its response) waits for the session instead of being refused.
    initializing: tokio::sync::watch::Sender<bool>,
    _hears_changes: Registration,
}

/// Serves one client until its input ends; in-flight requests get up to
/// `drain` to finish afterwards.
pub async fn serve<R, W>(
    server: Arc<Server>,
    input: R,
    output: W,
    max_message_bytes: usize,
    drain: Duration,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(rx, output));
    let registry = Arc::new(SessionRegistry::new(None));
    let conn = Arc::new(Connection {
        _hears_changes: server.hub.register(registry.clone()),
        server,
        out: Arc::new(Stdout(tx)),
        registry,
        session: Mutex::new(None),
        peer: Arc::new(Peer::new()),
        initializing: tokio::sync::watch::channel(false).0,
    });
    let mut tasks = JoinSet::new();
    let read = read_loop(input, max_message_bytes, |line| {
        conn.clone().on_message(line, &mut tasks);
    })
    .await;
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    drop(conn);
    let _ = writer.await;
    read
}

async fn write_loop<W: AsyncWrite + Unpin>(mut rx: mpsc::UnboundedReceiver<Vec<u8>>, mut out: W) {
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        batch.push(b'\n');
        // Everything already queued goes out with one flush.
        while let Ok(mut more) = rx.try_recv() {
            more.push(b'\n');
            batch.extend_from_slice(&more);
        }
        if out.write_all(&batch).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

/// Splits the input into lines, never holding more than `max` bytes of one;
/// an oversize line is answered with an error and skipped.
async fn read_loop<R: AsyncRead + Unpin>(
    mut input: R,
    max: usize,
    mut on_line: impl FnMut(Result<&[u8], McpError>),
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut discarding = false;
    loop {
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(pos + 1);
            if discarding {
                discarding = false;
                continue;
            }
            let line = trim(&line);
            if line.len() > max {
                on_line(Err(too_large(max)));
            } else if !line.is_empty() {
                on_line(Ok(line));
            }
        }
        if buf.len() > max {
            if !discarding {
                on_line(Err(too_large(max)));
                discarding = true;
            }
            buf.clear();
        }
        if input.read_buf(&mut buf).await? == 0 {
            let rest = trim(&buf);
            if !discarding && !rest.is_empty() {
                on_line(Ok(rest));
            }
            return Ok(());
        }
    }
}

fn too_large(max: usize) -> McpError {
    McpError::invalid_request(format!("message larger than {max} bytes"))
}

fn trim(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = l {
        l = rest;
    }
    while let [b' ' | b'\t', rest @ ..] = l {
        l = rest;
    }
    l
}

impl Connection {
    fn on_message(self: Arc<Self>, line: Result<&[u8], McpError>, tasks: &mut JoinSet<()>) {
        let msg = match line {
            Err(e) => return self.reply_err(None, &e),
            Ok(bytes) => jsonrpc::parse(bytes),
        };
        match msg {
            Err(r) => self.reply_err(r.id.as_ref(), &r.error),
            Ok(Incoming::Response { id, outcome }) => {
                let peer = self
                    .session_now()
                    .map(|s| s.peer.clone())
                    .unwrap_or(self.peer.clone());
                if !peer.resolve(&id, outcome) {
                    tracing::debug!(%id, "response to no pending request");
                }
            }
            Ok(Incoming::Notification { method, params }) => {
                self.on_notification(&method, params.as_deref())
            }
            Ok(Incoming::Request { id, method, params }) => {
                if method == "initialize" && self.session_now().is_none() {
                    self.initializing.send_replace(true);
                }
                tasks.spawn(async move { self.on_request(id, method, params).await });
            }
        }
    }

    fn session_now(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reply_err(&self, id: Option<&RequestId>, e: &McpError) {
        self.out.send(jsonrpc::error_response(id, e));
    }

    fn on_notification(&self, method: &str, params: Option<&serde_json::value::RawValue>) {
        match method {
            "notifications/initialized" => {
                if let Some(s) = self.session_now() {
                    s.mark_initialized();
                }
            }
            "notifications/cancelled" => {
                let id = params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|v| v.get("requestId").and_then(RequestId::from_value));
                if let Some(id) = id {
                    let by_session = self.session_now().is_some_and(|s| s.peer.cancel(&id));
                    if !by_session {
                        self.peer.cancel(&id);
                    }
                }
            }
            _ => tracing::debug!(method, "notification ignored"),
        }
    }

    async fn on_request(
        self: Arc<Self>,
        id: RequestId,
        method: String,
        params: Option<Box<serde_json::value::RawValue>>,
    ) {
        let meta = RequestMeta::read(params.as_deref());
        if method != "initialize" && !meta.is_modern() {
            let mut init = self.initializing.subscribe();
            let _ = init.wait_for(|running| !running).await;
        }
        let caller = if meta.is_modern() {
            match meta.modern() {
                Ok(m) => Caller::Modern {
                    meta: m,
                    peer: Some(self.peer.clone()),
                    // Whoever can write to this process's stdin is the
                    // local user that started it.
                    principal: Arc::from("local"),
                },
                Err(e) => return self.reply_err(Some(&id), &e),
            }
        } else if method == "initialize" {
            return self.initialize(id, params.as_deref()).await;
        } else if let Some(s) = self.session_now() {
            Caller::Session(s)
        } else if method == "ping" {
            self.out.send(jsonrpc::response(&id, &json!({})));
            return;
        } else {
            let e = McpError::invalid_request(
                "not initialized: send initialize first, or carry protocol 2026-07-28 _meta on each request",
            );
            return self.reply_err(Some(&id), &e);
        };
        if method == "subscriptions/listen" && matches!(caller, Caller::Modern { .. }) {
            return self.listen(&caller, id, params.as_deref()).await;
        }
        let cancel = CancellationToken::new();
        let call = Call {
            id: id.clone(),
            method,
            params,
            // Whoever can write to stdin started this process: the
            // local user, who can read the data directory anyway.
            grant: None,
            // No carrier for a trace context on stdio.
            trace: Default::default(),
        };
        let outcome = self
            .server
            .handle(&call, &caller, Some(self.out.clone()), cancel.clone())
            .await;
        if cancel.is_cancelled() {
            return; // The client cancelled: no response is sent.
        }
        match outcome {
            Ok(result) => self.out.send(jsonrpc::response(&id, &result)),
            Err(e) => self.out.send(jsonrpc::error_response(Some(&id), &e)),
        };
    }

    async fn initialize(&self, id: RequestId, params: Option<&serde_json::value::RawValue>) {
        if self.session_now().is_some() {
            return self.reply_err(Some(&id), &McpError::invalid_request("already initialized"));
        }
        // One client, nothing stored: no cap applies to stdio sessions.
        let admission = match self.registry.admit(None) {
            Ok(a) => a,
            Err(e) => return self.reply_err(Some(&id), &McpError::internal(e)),
        };
        match methods::lifecycle::initialize(&self.server, &self.registry, params, None, admission)
            .await
        {
            Ok((session, result)) => {
                session.peer.set_server_stream(Some(self.out.clone()));
                *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
                self.out.send(jsonrpc::response(&id, &result));
            }
            Err(e) => self.reply_err(Some(&id), &e),
        }
        self.initializing.send_replace(false);
    }

    /// Holds a modern subscription until the client cancels it (by id).
    async fn listen(
        &self,
        caller: &Caller,
        id: RequestId,
        params: Option<&serde_json::value::RawValue>,
    ) {
        let out = self.out.clone();
        let listening =
            match methods::subscriptions::listen(&self.server, caller, &id, params, out).await {
                Ok(l) => l,
                Err(e) => return self.reply_err(Some(&id), &e),
            };
        let cancel = CancellationToken::new();
        self.peer.track(&id, cancel.clone());
        cancel.cancelled().await;
        self.peer.untrack(&id);
        drop(listening);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_oversize_ones_skipped() {
        let input: &[u8] = b"{\"a\":1}\r\n\n  \n{\"b\":2}\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n{\"c\":3}";
        let mut got = Vec::new();
        read_loop(input, 32, |l| {
            got.push(l.map(|b| b.to_vec()).map_err(|e| e.code))
        })
        .await
        .unwrap();
        assert_eq!(
            got,
            vec![
                Ok(b"{\"a\":1}".to_vec()),
                Ok(b"{\"b\":2}".to_vec()),
                Err(-32600),
                Ok(b"{\"c\":3}".to_vec()),
            ]
        );
    }
}
