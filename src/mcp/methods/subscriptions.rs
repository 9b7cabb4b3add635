//! `subscriptions/listen` (2026-07-28): a long-lived request whose response
//! stream carries the change notifications the client opted in to, and,
//! with the tasks extension, `notifications/tasks` for the `taskIds` it
//! asked about (those it may see). The transport keeps the returned
//! [`Listening`] alive for as long as the stream is open; dropping it ends
//! the subscription.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;

use super::params;
use crate::mcp::dispatch::Caller;
use crate::mcp::error::McpError;
use crate::mcp::jsonrpc::{self, RequestId};
use crate::mcp::meta::SUBSCRIPTION_ID;
use crate::mcp::notify::{Change, Registration, Subscriber};
use crate::mcp::outbound::SharedSink;
use crate::mcp::server::Server;
use crate::mcp::tasks::watch::Watching;
use crate::mcp::tasks::{self, Owner};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    tools_list_changed: bool,
    #[serde(default)]
    prompts_list_changed: bool,
    #[serde(default)]
    resources_list_changed: bool,
    #[serde(default)]
    resource_subscriptions: Vec<String>,
    /// The tasks extension's filter.
    #[serde(default)]
    task_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ListenParams {
    #[serde(default)]
    notifications: Filter,
}

struct Listener {
    subscription_id: Value,
    filter: Filter,
    uris: HashSet<String>,
    sink: SharedSink,
}

impl Listener {
    fn wants(&self, change: &Change) -> bool {
        match change {
            Change::ToolsListChanged => self.filter.tools_list_changed,
            Change::PromptsListChanged => self.filter.prompts_list_changed,
            Change::ResourcesListChanged => self.filter.resources_list_changed,
            Change::ResourceUpdated(uri) => self.uris.contains(uri),
        }
    }
}

impl Subscriber for Listener {
    fn deliver(&self, change: &Change) {
        if !self.wants(change) {
            return;
        }
        let mut params = Map::new();
        params.insert(
            "_meta".into(),
            json!({ SUBSCRIPTION_ID: self.subscription_id }),
        );
        if let Change::ResourceUpdated(uri) = change {
            params.insert("uri".into(), json!(uri));
        }
        self.sink.send(jsonrpc::notification(
            change.method(),
            &Value::Object(params),
        ));
    }
}

/// An open subscription; ends when dropped.
pub struct Listening {
    _registration: Registration,
    _tasks: Watching,
    pub subscription_id: Value,
}

impl Listening {
    /// The response that closes the subscription gracefully (server side).
    pub fn closing_result(&self) -> Value {
        json!({ "resultType": "complete", "_meta": { SUBSCRIPTION_ID: self.subscription_id } })
    }
}

/// Validates the filter, acknowledges it on `sink`, and starts delivering.
pub async fn listen(
    server: &Server,
    caller: &Caller,
    id: &RequestId,
    raw: Option<&RawValue>,
    sink: SharedSink,
) -> Result<Listening, McpError> {
    let p: ListenParams = params(raw)?;
    let task_ids = agreed_tasks(server, caller, &p.notifications.task_ids).await?;
    let subscription_id = id.to_value();
    let f = &p.notifications;
    let mut honored = Map::new();
    for (key, on) in [
        ("toolsListChanged", f.tools_list_changed),
        ("promptsListChanged", f.prompts_list_changed),
        ("resourcesListChanged", f.resources_list_changed),
    ] {
        if on {
            honored.insert(key.into(), json!(true));
        }
    }
    if !f.resource_subscriptions.is_empty() {
        honored.insert(
            "resourceSubscriptions".into(),
            json!(f.resource_subscriptions),
        );
    }
    if !task_ids.is_empty() {
        honored.insert("taskIds".into(), json!(task_ids));
    }
    sink.send(jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        &json!({ "_meta": { SUBSCRIPTION_ID: subscription_id }, "notifications": honored }),
    ));
    let uris = f.resource_subscriptions.iter().cloned().collect();
    let tasks = server
        .tasks
        .watchers
        .watch(task_ids, subscription_id.clone(), sink.clone());
    let listener = Arc::new(Listener {
        subscription_id: subscription_id.clone(),
        filter: p.notifications,
        uris,
        sink,
    });
    Ok(Listening {
        _registration: server.hub.register(listener),
        _tasks: tasks,
        subscription_id,
    })
}

/// The asked-for task ids the caller may hear about: its own. Asking
/// without the tasks extension is refused (-32021).
async fn agreed_tasks(
    server: &Server,
    caller: &Caller,
    asked: &[String],
) -> Result<Vec<String>, McpError> {
    if asked.is_empty() {
        return Ok(Vec::new());
    }
    let Caller::Modern {
        meta, principal, ..
    } = caller
    else {
        return Ok(Vec::new());
    };
    if !meta.client.supports_extension(tasks::EXTENSION) {
        let mut e = McpError::missing_capability(json!({ "extensions": { tasks::EXTENSION: {} } }));
        e.message = format!(
            "Missing required client capability: task notifications need the {} extension",
            tasks::EXTENSION
        );
        return Err(e);
    }
    let owner = Owner::principal(principal);
    let mut agreed = Vec::new();
    for id in asked {
        let found = server
            .tasks
            .load(&owner, id)
            .await
            .map_err(McpError::internal)?;
        if found.is_some() {
            agreed.push(id.clone());
        }
    }
    Ok(agreed)
}
