//! What a handler knows about the request it serves, and what it may do
//! besides answering: report progress, log to the client, ask the client for
//! input, notice cancellation.
//!
//! Asking for input works in both eras with one call, [`RequestContext::input`]:
//! on a legacy session the server sends the client a request and waits; on a
//! modern (2026-07-28) request it finds the answer among the retry's
//! `inputResponses`, or ends the attempt with an `InputRequiredResult` (MRTR).

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::client::{ClientInfo, LogLevel};
use super::error::McpError;
use super::grant::Grant;
use super::jsonrpc;
use super::outbound::{Peer, SharedSink};
use super::session::Session;
use super::tasks::live::LiveTask;
use super::tasks::slot::Slot;
use super::version::ProtocolVersion;
use crate::mcp::toolset::ToolError;

/// The interim result of a multi round-trip request.
#[derive(Debug, Default)]
pub struct InputRequired {
    /// Requests the client must answer, by server-chosen key.
    pub requests: Map<String, Value>,
    /// Opaque state the client echoes back on its retry.
    pub state: Option<String>,
}

impl InputRequired {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("resultType".into(), json!("input_required"));
        if !self.requests.is_empty() {
            m.insert("inputRequests".into(), Value::Object(self.requests.clone()));
        }
        if let Some(s) = &self.state {
            m.insert("requestState".into(), json!(s));
        }
        Value::Object(m)
    }
}

/// Signs and verifies `requestState` so a client cannot forge it. The key
/// lives in the database, so state survives a restart or failover.
pub struct StateSigner {
    key: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

impl StateSigner {
    pub fn new(key: Vec<u8>) -> Self {
        StateSigner { key }
    }

    /// `payload` plus an HMAC, as one opaque string.
    pub fn sign(&self, payload: &Value) -> String {
        let data = payload.to_string();
        let tag = self.tag(data.as_bytes());
        json!({ "data": data, "mac": tag }).to_string()
    }

    /// The payload if the string is one we signed, unmodified.
    pub fn verify(&self, state: &str) -> Option<Value> {
        let outer: Value = serde_json::from_str(state).ok()?;
        let data = outer.get("data")?.as_str()?;
        let mac = hex::decode(outer.get("mac")?.as_str()?).ok()?;
        let mut m = HmacSha256::new_from_slice(&self.key).ok()?;
        m.update(data.as_bytes());
        m.verify_slice(&mac).ok()?;
        serde_json::from_str(data).ok()
    }

    fn tag(&self, data: &[u8]) -> String {
        match HmacSha256::new_from_slice(&self.key) {
            Ok(mut m) => {
                m.update(data);
                hex::encode(m.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }
}

/// Everything a handler may use about the request in hand.
pub struct RequestContext {
    pub version: ProtocolVersion,
    pub session: Option<Arc<Session>>,
    pub peer: Option<Arc<Peer>>,
    pub client: Arc<ClientInfo>,
    /// Legacy: the session's level (None = all). Modern: the request's
    /// `logLevel`; without it no log notifications are sent at all.
    pub log_level: Option<LogLevel>,
    pub progress_token: Option<Value>,
    pub cancel: CancellationToken,
    /// Where messages related to this request go (its SSE stream, stdout).
    pub sink: Option<SharedSink>,
    /// Modern retries: the client's answers, by key.
    pub input_responses: Option<Map<String, Value>>,
    /// Modern retries: the state echoed back, as sent.
    pub request_state: Option<String>,
    pub signer: Arc<StateSigner>,
    pub client_request_timeout: Duration,
    /// Modern requests: who is asking (tasks are scoped to it).
    pub principal: Option<Arc<str>>,
    /// Who authenticated and what they may call; `None`: nobody had to
    /// (auth off, stdio, a task resumed after a restart).
    pub grant: Option<Arc<Grant>>,
    /// Set when the call runs, or may come to run, as a task.
    pub task: Option<Arc<Slot>>,
}

impl RequestContext {
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| &*s.id)
    }

    /// An owned copy for a handler that runs apart from its request (as a
    /// task, or as a call that may become one): its own cancellation token
    /// and task slot, everything else as the request had it.
    pub fn fork(&self, cancel: CancellationToken, task: Option<Arc<Slot>>) -> RequestContext {
        RequestContext {
            version: self.version,
            session: self.session.clone(),
            peer: self.peer.clone(),
            client: self.client.clone(),
            log_level: self.log_level,
            progress_token: self.progress_token.clone(),
            cancel,
            sink: self.sink.clone(),
            input_responses: self.input_responses.clone(),
            request_state: self.request_state.clone(),
            signer: self.signer.clone(),
            client_request_timeout: self.client_request_timeout,
            principal: self.principal.clone(),
            grant: self.grant.clone(),
            task,
        }
    }

    /// The task this call runs as, if it is one.
    pub fn live_task(&self) -> Option<Arc<LiveTask>> {
        self.task.as_ref().and_then(|s| s.live())
    }

    /// Asks to finish as a task, answering the request now with the task's
    /// handle: for a handler about to take long (a big batch, waiting on the
    /// user). True once the call is a task; false where it cannot be (the
    /// client takes no tasks, the tool is not allowed, the owner is at its
    /// limit), and the handler then simply goes on.
    pub async fn promote(&self) -> bool {
        match &self.task {
            Some(slot) => slot.promote().await,
            None => false,
        }
    }

    /// Sends a notification related to this request. A 2026-07-28 task has
    /// none (the extension carries progress and logs on no stream); a
    /// 2025-11-25 task's carry its related-task `_meta`.
    pub fn notify(&self, method: &str, params: Value) {
        let live = self.live_task();
        if live.is_some() && self.version.is_stateless() {
            return;
        }
        let params = match &live {
            Some(t) => with_related_task(params, &t.id),
            None => params,
        };
        if let Some(sink) = &self.sink {
            sink.send(jsonrpc::notification(method, &params));
        }
    }

    /// `notifications/message`, if the client wants messages of this level.
    pub fn log(&self, level: LogLevel, logger: Option<&str>, data: Value) {
        let wanted = if self.version.is_stateless() {
            self.log_level.is_some_and(|min| level >= min)
        } else {
            self.log_level.is_none_or(|min| level >= min)
        };
        if !wanted {
            return;
        }
        let mut params = Map::new();
        params.insert("level".into(), json!(level.as_str()));
        if let Some(l) = logger {
            params.insert("logger".into(), json!(l));
        }
        params.insert("data".into(), data);
        self.notify("notifications/message", Value::Object(params));
    }

    /// `notifications/progress`, if the client sent a progress token.
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = &self.progress_token else {
            return;
        };
        let mut params = Map::new();
        params.insert("progressToken".into(), token.clone());
        params.insert("progress".into(), json!(progress));
        if let Some(t) = total {
            params.insert("total".into(), json!(t));
        }
        if let Some(m) = message
            && self.version.has_titles()
        {
            params.insert("message".into(), json!(m));
        }
        self.notify("notifications/progress", Value::Object(params));
    }

    /// Asks the client for one input (`elicitation/create`,
    /// `sampling/createMessage`, `roots/list`) under `key`.
    pub async fn input(&self, key: &str, method: &str, params: Value) -> Result<Value, ToolError> {
        let mut answers = self
            .inputs(vec![(key.to_owned(), method.to_owned(), params)])
            .await?;
        Ok(answers.pop().unwrap_or(Value::Null))
    }

    /// Asks for several inputs at once. Modern requests get every missing
    /// one requested in a single `InputRequiredResult`.
    pub async fn inputs(
        &self,
        wanted: Vec<(String, String, Value)>,
    ) -> Result<Vec<Value>, ToolError> {
        for (_, method, _) in &wanted {
            self.require_capability_for(method)?;
        }
        if let Some(live) = self.live_task() {
            return self.task_inputs(&live, wanted).await;
        }
        if self.version.is_stateless() {
            return self.inputs_from_retry(wanted);
        }
        let mut answers = Vec::with_capacity(wanted.len());
        for (_, method, params) in wanted {
            answers.push(self.client_request(&method, params).await?);
        }
        Ok(answers)
    }

    /// Input inside a task: published for `tasks/update` (2026-07-28), or
    /// asked on the task's stream with its related-task `_meta` (2025-11-25).
    async fn task_inputs(
        &self,
        live: &LiveTask,
        wanted: Vec<(String, String, Value)>,
    ) -> Result<Vec<Value>, ToolError> {
        if self.version.is_stateless() {
            return live.inputs(wanted).await;
        }
        let Some(peer) = &self.peer else {
            return Err(ToolError::Failed(
                "the task's session is gone; nobody can answer".into(),
            ));
        };
        let mut answers = Vec::with_capacity(wanted.len());
        for (_, method, params) in wanted {
            let params = with_related_task(params, &live.id);
            answers.push(live.ask(peer, &method, &params).await?);
        }
        Ok(answers)
    }

    fn inputs_from_retry(
        &self,
        wanted: Vec<(String, String, Value)>,
    ) -> Result<Vec<Value>, ToolError> {
        let given = self.input_responses.as_ref();
        let missing: Map<String, Value> = wanted
            .iter()
            .filter(|(k, _, _)| given.is_none_or(|g| !g.contains_key(k)))
            .map(|(k, m, p)| (k.clone(), json!({ "method": m, "params": p })))
            .collect();
        if !missing.is_empty() {
            return Err(ToolError::InputRequired(InputRequired {
                requests: missing,
                state: None,
            }));
        }
        Ok(wanted
            .iter()
            .map(|(k, _, _)| given.and_then(|g| g.get(k)).cloned().unwrap_or(Value::Null))
            .collect())
    }

    fn require_capability_for(&self, method: &str) -> Result<(), ToolError> {
        let cap = match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            _ => return Ok(()),
        };
        if cap == "elicitation" && !self.version.has_titles() {
            return Err(ToolError::Failed(format!(
                "elicitation arrived in protocol 2025-06-18; this session speaks {}",
                self.version
            )));
        }
        if self.client.supports(cap) {
            return Ok(());
        }
        if self.version.is_stateless() {
            Err(ToolError::Protocol(McpError::missing_capability(
                json!({ cap: {} }),
            )))
        } else {
            Err(ToolError::Failed(format!(
                "the client does not support {cap} (it did not declare the capability)"
            )))
        }
    }

    /// Legacy: sends a request to the client on this request's stream and
    /// waits for the answer, the timeout, or cancellation.
    async fn client_request(&self, method: &str, params: Value) -> Result<Value, ToolError> {
        let (Some(peer), Some(sink)) = (&self.peer, &self.sink) else {
            return Err(ToolError::Failed(
                "no stream to the client is open for a server request".into(),
            ));
        };
        let (id, rx) = peer.send_request(sink.as_ref(), method, &params)?;
        let outcome = tokio::select! {
            r = rx => r.map_err(|_| ToolError::Failed("the session ended".into()))?,
            _ = self.cancel.cancelled() => {
                peer.abandon(&id);
                return Err(ToolError::Cancelled);
            }
            _ = tokio::time::sleep(self.client_request_timeout) => {
                peer.abandon(&id);
                self.notify("notifications/cancelled", json!({
                    "requestId": id.to_value(),
                    "reason": "timed out",
                }));
                return Err(ToolError::Failed(format!(
                    "the client did not answer {method} within {:?}",
                    self.client_request_timeout
                )));
            }
        };
        outcome.map_err(|e| {
            ToolError::Failed(format!(
                "the client answered {method} with an error: {}",
                e.message
            ))
        })
    }

    /// The verified payload of the echoed `requestState`: `Ok(None)` if there
    /// is none, an invalid-params error if it was forged or altered.
    pub fn verified_state(&self) -> Result<Option<Value>, ToolError> {
        match &self.request_state {
            None => Ok(None),
            Some(s) => self.signer.verify(s).map(Some).ok_or_else(|| {
                ToolError::Protocol(McpError::invalid_params(
                    "requestState failed its integrity check",
                ))
            }),
        }
    }

    /// Signs state to carry to the client's retry.
    pub fn sign_state(&self, payload: &Value) -> String {
        self.signer.sign(payload)
    }

    /// Ends this request's HTTP connection but keeps its stream resumable
    /// (the client reconnects with Last-Event-ID after `retry_ms`).
    pub fn close_connection(&self, retry_ms: u64) {
        if let Some(sink) = &self.sink {
            sink.close_connection(retry_ms);
        }
    }
}

/// `params` with `_meta["io.modelcontextprotocol/related-task"]` naming
/// `task_id` (2025-11-25: every message a task sends carries it).
pub fn with_related_task(mut params: Value, task_id: &str) -> Value {
    if let Some(obj) = params.as_object_mut() {
        let meta = obj
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                super::tasks::RELATED_TASK.into(),
                json!({ "taskId": task_id }),
            );
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_state_verifies_and_tampering_is_caught() {
        let s = StateSigner::new(b"k".to_vec());
        let state = s.sign(&json!({ "round": 1 }));
        assert_eq!(s.verify(&state), Some(json!({ "round": 1 })));
        let tampered = state.replace("1", "2");
        assert_eq!(s.verify(&tampered), None);
        assert_eq!(s.verify("not json"), None);
        assert_eq!(StateSigner::new(b"other".to_vec()).verify(&state), None);
    }
}
