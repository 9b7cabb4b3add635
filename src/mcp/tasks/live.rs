//! A task running in this process: the token that stops its handler (the
//! same kind of token `notifications/cancelled` fires), the input it waits
//! for, the stream its messages take, and the end `tasks/result` waits for.
//!
//! Input works in each flavour's own way. 2025-11-25: the task turns
//! `input_required` and its server request goes out on the stream of a
//! `tasks/result` call (queued until one comes), carrying the related-task
//! `_meta`. 2026-07-28: the task turns `input_required` with the requests in
//! `inputRequests` (`tasks/get` shows them) and waits for `tasks/update`
//! to bring the answers, any subset at a time.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::watch::Watchers;
use super::wire;
use crate::mcp::jsonrpc;
use crate::mcp::outbound::{Peer, SharedSink, Sink};
use crate::mcp::toolset::ToolError;
use crate::mcp::version::ProtocolVersion;
use crate::store::tasks::{self as rows, TaskRow};
use crate::store::{Store, StoreError};

/// The status message while a task waits for its client.
const WAITING: &str = "Waiting for the client's input";

pub struct LiveTask {
    pub id: String,
    pub version: ProtocolVersion,
    /// Stops the handler: `tasks/cancel`, expiry.
    pub cancel: CancellationToken,
    ended: watch::Sender<bool>,
    outbox: Arc<Outbox>,
    exchange: tokio::sync::Mutex<Exchange>,
    store: Store,
    watchers: Arc<Watchers>,
}

/// Modern input requests still unanswered, and every key ever used (a key
/// names one request for the task's whole life).
#[derive(Default)]
struct Exchange {
    pending: BTreeMap<String, (Value, oneshot::Sender<Value>)>,
    used: HashSet<String>,
}

impl LiveTask {
    /// `peer`: the session of a 2025-11-25 task (its status notifications
    /// and messages go there); a modern task has no session to talk to.
    pub fn new(
        row: &TaskRow,
        peer: Option<Arc<Peer>>,
        cancel: CancellationToken,
        store: Store,
        watchers: Arc<Watchers>,
    ) -> LiveTask {
        let version =
            ProtocolVersion::parse(&row.protocol_version).unwrap_or(ProtocolVersion::NEWEST_MODERN);
        let peer = peer.filter(|_| !version.is_stateless());
        LiveTask {
            id: row.id.clone(),
            version,
            cancel,
            ended: watch::channel(false).0,
            outbox: Arc::new(Outbox::new(peer)),
            exchange: Default::default(),
            store,
            watchers,
        }
    }

    /// Where the task's notifications (progress, logs) go.
    pub fn notices(&self) -> SharedSink {
        Arc::new(Notices(self.outbox.clone()))
    }

    /// Routes the task's server requests to a `tasks/result` stream until
    /// the returned guard drops.
    pub fn attach(&self, sink: SharedSink) -> Attached {
        self.outbox.attach(sink.clone());
        Attached {
            outbox: self.outbox.clone(),
            sink,
        }
    }

    /// Marks the task ended for everyone waiting on it.
    pub(crate) fn end(&self) {
        self.ended.send_replace(true);
    }

    /// Resolves once the task has ended.
    pub async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// 2025-11-25: asks the client through `peer`, the task waiting in
    /// `input_required` meanwhile; no timeout but the task's own end.
    pub async fn ask(&self, peer: &Peer, method: &str, params: &Value) -> Result<Value, ToolError> {
        self.set_status("input_required", Some(WAITING), None)
            .await?;
        let (id, rx) = peer.send_request(self.outbox.as_ref(), method, params)?;
        let answer = tokio::select! {
            r = rx => r.map_err(|_| ToolError::Failed("the session ended".into()))?,
            _ = self.cancel.cancelled() => {
                peer.abandon(&id);
                return Err(ToolError::Cancelled);
            }
        };
        self.set_status("working", None, None).await?;
        answer.map_err(|e| {
            ToolError::Failed(format!(
                "the client answered {method} with an error: {}",
                e.message
            ))
        })
    }

    /// 2026-07-28: publishes the requests as `inputRequests` and waits for
    /// `tasks/update` to answer them all. Returns the answers in order.
    pub async fn inputs(
        &self,
        wanted: Vec<(String, String, Value)>,
    ) -> Result<Vec<Value>, ToolError> {
        let mut waiting = Vec::with_capacity(wanted.len());
        {
            let mut ex = self.exchange.lock().await;
            for (key, method, params) in wanted {
                let key = ex.fresh_key(&key);
                let (tx, rx) = oneshot::channel();
                let request = json!({ "method": method, "params": params });
                ex.pending.insert(key, (request, tx));
                waiting.push(rx);
            }
            self.persist_exchange(&ex).await?;
        }
        let mut answers = Vec::with_capacity(waiting.len());
        for rx in waiting {
            tokio::select! {
                a = rx => answers.push(a.map_err(|_| ToolError::Cancelled)?),
                _ = self.cancel.cancelled() => return Err(ToolError::Cancelled),
            }
        }
        Ok(answers)
    }

    /// `tasks/update`: delivers the answers to keys still pending (others
    /// are ignored) and records what remains, durably, before returning.
    pub async fn answer(&self, responses: Map<String, Value>) -> Result<(), StoreError> {
        let mut ex = self.exchange.lock().await;
        let mut delivered = false;
        for (key, value) in responses {
            if let Some((_, tx)) = ex.pending.remove(&key) {
                let _ = tx.send(value);
                delivered = true;
            }
        }
        if delivered {
            self.persist_exchange(&ex).await?;
        }
        Ok(())
    }

    async fn persist_exchange(&self, ex: &Exchange) -> Result<(), StoreError> {
        if ex.pending.is_empty() {
            return self.set_status("working", None, None).await;
        }
        let requests: Map<String, Value> = ex
            .pending
            .iter()
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect();
        let json = Value::Object(requests).to_string();
        self.set_status("input_required", Some(WAITING), Some(json))
            .await
    }

    /// Records a running status durably, then tells the session about it.
    async fn set_status(
        &self,
        status: &'static str,
        message: Option<&'static str>,
        input_requests: Option<String>,
    ) -> Result<(), StoreError> {
        let id = self.id.clone();
        let now = crate::clock::now_millis();
        let changed = self
            .store
            .write(move |tx| {
                rows::set_running_status(tx, &id, status, message, input_requests.as_deref(), now)
            })
            .await?;
        if changed {
            self.announce().await;
        }
        Ok(())
    }

    /// Tells who listens that the task changed, with the task as stored
    /// (best effort: clients must be ready to poll anyway). 2025-11-25:
    /// `notifications/tasks/status` on the session's stream; 2026-07-28:
    /// `notifications/tasks` on the subscriptions that watch the task.
    pub(crate) async fn announce(&self) {
        let id = self.id.clone();
        let Ok(Some(row)) = self.store.read(move |c| rows::load_any(c, &id)).await else {
            return;
        };
        match &self.outbox.peer {
            Some(peer) => {
                let params = wire::legacy_task(&row);
                peer.notify(jsonrpc::notification("notifications/tasks/status", &params));
            }
            None => self.watchers.tell(&row),
        }
    }
}

impl Exchange {
    /// `key` if it never named a request of this task, else `key-2`, `key-3` ...
    fn fresh_key(&mut self, key: &str) -> String {
        let mut candidate = key.to_owned();
        let mut n = 1;
        while self.used.contains(&candidate) {
            n += 1;
            candidate = format!("{key}-{n}");
        }
        self.used.insert(candidate.clone());
        candidate
    }
}

/// How many server requests wait for a `tasks/result` stream at most.
const QUEUE_MAX: usize = 64;

/// A task's way to its client: an attached `tasks/result` stream, else (for
/// requests) a queue until one attaches, or (for notifications) the
/// session's own stream.
struct Outbox {
    peer: Option<Arc<Peer>>,
    state: Mutex<OutboxState>,
}

#[derive(Default)]
struct OutboxState {
    attached: Option<SharedSink>,
    queue: Vec<Vec<u8>>,
}

impl Outbox {
    fn new(peer: Option<Arc<Peer>>) -> Outbox {
        Outbox {
            peer,
            state: Mutex::new(OutboxState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attach(&self, sink: SharedSink) {
        let mut st = self.state();
        for msg in std::mem::take(&mut st.queue) {
            sink.send(msg);
        }
        st.attached = Some(sink);
    }
}

/// Server requests: to the attached stream, or queued for the next one.
impl Sink for Outbox {
    fn send(&self, message: Vec<u8>) -> bool {
        let mut st = self.state();
        if let Some(s) = &st.attached
            && s.send(message.clone())
        {
            return true;
        }
        if st.queue.len() >= QUEUE_MAX {
            return false;
        }
        st.queue.push(message);
        true
    }
}

/// Notifications: to the attached stream, else the session's stream.
struct Notices(Arc<Outbox>);

impl Sink for Notices {
    fn send(&self, message: Vec<u8>) -> bool {
        let attached = self.0.state().attached.clone();
        if let Some(s) = attached
            && s.send(message.clone())
        {
            return true;
        }
        self.0.peer.as_ref().is_some_and(|p| p.notify(message))
    }
}

/// A `tasks/result` stream attached to a task; detached when dropped.
pub struct Attached {
    outbox: Arc<Outbox>,
    sink: SharedSink,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut st = self.outbox.state();
        if st
            .attached
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.sink))
        {
            st.attached = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_keys_are_never_reused() {
        let mut ex = Exchange::default();
        assert_eq!(ex.fresh_key("confirm"), "confirm");
        assert_eq!(ex.fresh_key("confirm"), "confirm-2");
        assert_eq!(ex.fresh_key("confirm"), "confirm-3");
        assert_eq!(ex.fresh_key("other"), "other");
    }

    struct Rec(Mutex<Vec<Vec<u8>>>);
    impl Sink for Rec {
        fn send(&self, m: Vec<u8>) -> bool {
            self.0.lock().unwrap().push(m);
            true
        }
    }

    #[test]
    fn requests_wait_for_a_stream_and_go_out_when_one_attaches() {
        let outbox = Arc::new(Outbox::new(None));
        assert!(outbox.send(b"first".to_vec()));
        let rec = Arc::new(Rec(Mutex::new(Vec::new())));
        let sink: SharedSink = rec.clone();
        outbox.attach(sink.clone());
        assert!(outbox.send(b"second".to_vec()));
        assert_eq!(rec.0.lock().unwrap().len(), 2);
        let guard = Attached {
            outbox: outbox.clone(),
            sink,
        };
        drop(guard);
        assert!(outbox.state().attached.is_none());
    }
}
