//! Messages the server sends that are not the response itself: notifications
//! (progress, logs, resource updates) and server-to-client requests
//! (sampling, elicitation, roots). A transport hands the dispatcher a
//! [`Sink`] for each place a message may go; the [`Peer`] tracks the
//! requests in flight in both directions for one client connection.

use dashmap::DashMap;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::error::McpError;
use super::jsonrpc::{self, RequestId};

/// Somewhere serialized JSON-RPC messages can be delivered.
pub trait Sink: Send + Sync + 'static {
    /// Delivers (or queues for replay) one message; false if it cannot.
    fn send(&self, message: Vec<u8>) -> bool;

    /// Ends the underlying connection but keeps the stream resumable, telling
    /// the client to reconnect after `retry_ms` (SSE polling, SEP-1699).
    /// Transports without that notion ignore it.
    fn close_connection(&self, _retry_ms: u64) {}
}

pub type SharedSink = Arc<dyn Sink>;

/// One client connection's bookkeeping: requests we sent it and await,
/// requests it sent us that are still running (so `notifications/cancelled`
/// can stop them), and the stream for messages unrelated to any request.
#[derive(Default)]
pub struct Peer {
    pending: DashMap<RequestId, oneshot::Sender<Result<Value, McpError>>>,
    inflight: DashMap<RequestId, CancellationToken>,
    next_id: AtomicU64,
    server_stream: Mutex<Option<SharedSink>>,
}

impl Peer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a request to the client over `sink` and returns the receiver of
    /// its answer.
    pub fn send_request(
        &self,
        sink: &dyn Sink,
        method: &str,
        params: &Value,
    ) -> Result<(RequestId, oneshot::Receiver<Result<Value, McpError>>), McpError> {
        let id = RequestId::server(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id.clone(), tx);
        if !sink.send(jsonrpc::request(&id, method, params)) {
            self.pending.remove(&id);
            return Err(McpError::internal(
                "the client has no open stream to receive a request on",
            ));
        }
        Ok((id, rx))
    }

    /// Forgets a request we stopped waiting for.
    pub fn abandon(&self, id: &RequestId) {
        self.pending.remove(id);
    }

    /// Routes a client's response to the request waiting for it; false when
    /// nothing waits for that id.
    pub fn resolve(&self, id: &RequestId, outcome: Result<Value, McpError>) -> bool {
        match self.pending.remove(id) {
            Some((_, tx)) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Registers a running client request so it can be cancelled.
    pub fn track(&self, id: &RequestId, token: CancellationToken) {
        self.inflight.insert(id.clone(), token);
    }

    pub fn untrack(&self, id: &RequestId) {
        self.inflight.remove(id);
    }

    /// Cancels a running client request; false if it is not running.
    pub fn cancel(&self, id: &RequestId) -> bool {
        match self.inflight.get(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Sets (or clears) the stream for unrelated server messages; returns the
    /// previous one.
    pub fn set_server_stream(&self, sink: Option<SharedSink>) -> Option<SharedSink> {
        let mut slot = self.server_stream.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *slot, sink)
    }

    pub fn server_stream(&self) -> Option<SharedSink> {
        self.server_stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends a message unrelated to any request; false if no stream takes it.
    pub fn notify(&self, message: Vec<u8>) -> bool {
        match self.server_stream() {
            Some(s) => s.send(message),
            None => false,
        }
    }

    /// True when nothing of this peer exists only in memory: no request in
    /// flight either way, no server stream.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.inflight.is_empty() && self.server_stream().is_none()
    }

    /// Fails every request we are waiting on (the connection is gone).
    pub fn fail_pending(&self, why: &str) {
        let ids: Vec<RequestId> = self.pending.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            self.resolve(&id, Err(McpError::internal(why)));
        }
    }
}
