//! The MCP server core shared by every transport: the catalog of what is
//! offered, the sessions, the store, and the settings a reload may change.

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::catalog::Catalog;
use super::context::StateSigner;
use super::notify::{Change, Hub, Registration, Subscriber};
use super::session::SessionRegistry;
use super::tasks::{self, TaskSettings, Tasks};
use super::version::ProtocolVersion;
use crate::config::{McpConfig, TasksConfig};
use crate::store::{self, Store, StoreError};

/// Settings the dispatcher reads on every request; swapped whole on reload.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Items per page of every list.
    pub page_size: usize,
    /// How long a tool waits for the client to answer a server request.
    pub client_request_timeout: Duration,
    /// `instructions` in the initialize/discover result.
    pub instructions: Option<String>,
    /// Record every tool call in the audit log.
    pub audit_tool_calls: bool,
    /// `ttlMs` for cacheable modern results that rarely change.
    pub list_ttl_ms: u64,
    pub tasks: TaskSettings,
}

impl Settings {
    pub fn from_config(c: &McpConfig, tasks: &TasksConfig) -> Settings {
        Settings {
            page_size: c.page_size,
            client_request_timeout: Duration::from_secs(c.client_request_timeout_secs),
            instructions: c.instructions.clone(),
            audit_tool_calls: c.audit_tool_calls,
            list_ttl_ms: c.list_ttl_ms,
            tasks: TaskSettings::from_config(tasks),
        }
    }
}

pub const SERVER_NAME: &str = "erlmcp";
pub const SERVER_VERSION: &str = crate::release::VERSION;

pub struct Server {
    catalog: ArcSwap<Catalog>,
    settings: ArcSwap<Settings>,
    pub sessions: Arc<SessionRegistry>,
    pub store: Store,
    signer: ArcSwap<StateSigner>,
    /// Why this node serves no MCP request right now (a replication
    /// standby), if it does not.
    refusal: arc_swap::ArcSwapOption<String>,
    pub hub: Arc<Hub>,
    /// Tasks this process runs, and the way to all stored ones.
    pub tasks: Arc<Tasks>,
    /// Every request being served holds a token of it; a drain closes it
    /// and waits for the last token to drop.
    in_flight: TaskTracker,
    _sessions_hear_changes: Registration,
}

/// Marks a request in flight while alive.
pub struct InFlight(#[allow(dead_code)] TaskTrackerToken);

impl Server {
    pub async fn new(
        store: Store,
        catalog: Catalog,
        settings: Settings,
        hub: Arc<Hub>,
    ) -> Result<Arc<Server>, StoreError> {
        let key = signing_key(&store).await?;
        let sessions = Arc::new(SessionRegistry::new(Some(store.clone())));
        let reg = hub.register(sessions.clone());
        let tasks = Arc::new(Tasks::new(store.clone())?);
        Ok(Arc::new(Server {
            catalog: ArcSwap::from_pointee(catalog),
            settings: ArcSwap::from_pointee(settings),
            sessions,
            tasks,
            store,
            signer: ArcSwap::from_pointee(StateSigner::new(key)),
            refusal: Default::default(),
            hub,
            in_flight: TaskTracker::new(),
            _sessions_hear_changes: reg,
        }))
    }

    /// Marks a request in flight until the guard drops.
    pub fn begin(&self) -> InFlight {
        InFlight(self.in_flight.token())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits, up to `deadline`, for every request in flight to finish;
    /// returns how many were still running then.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.in_flight.close();
        let _ = tokio::time::timeout(deadline, self.in_flight.wait()).await;
        self.in_flight.len()
    }

    pub fn signer(&self) -> Arc<StateSigner> {
        self.signer.load_full()
    }

    /// Stops (with the reason clients hear) or resumes serving requests.
    pub fn set_refusal(&self, why: Option<String>) {
        self.refusal.store(why.map(Arc::new));
    }

    pub fn refusal(&self) -> Option<Arc<String>> {
        self.refusal.load_full()
    }

    /// This node just became the one that writes (a replication
    /// promotion): sessions in memory may be stale, and the signing key is
    /// the database's.
    pub async fn take_over(&self) -> Result<(), StoreError> {
        let n = self.sessions.forget_all();
        // The caps count what the replicated database holds now.
        self.sessions.recount().await?;
        self.signer
            .store(Arc::new(StateSigner::new(signing_key(&self.store).await?)));
        tracing::info!(
            sessions = n,
            "sessions will be read afresh from the database"
        );
        // The old primary's running tasks have nobody running them here.
        super::tasks::recovery::take_over(self).await?;
        Ok(())
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Swaps in a new catalog and settings (config reload) and tells clients
    /// their lists may have changed. Sessions are untouched.
    pub fn reload(&self, catalog: Catalog, settings: Settings) {
        self.catalog.store(Arc::new(catalog));
        self.settings.store(Arc::new(settings));
        self.hub.publish(Change::ToolsListChanged);
        self.hub.publish(Change::PromptsListChanged);
        self.hub.publish(Change::ResourcesListChanged);
    }

    /// `serverInfo` as a client of `version` expects it.
    pub fn server_info(&self, version: ProtocolVersion) -> Value {
        if version.has_titles() {
            json!({ "name": SERVER_NAME, "title": "erlmcp", "version": SERVER_VERSION })
        } else {
            json!({ "name": SERVER_NAME, "version": SERVER_VERSION })
        }
    }

    /// What this server can do for a client of `version`: the same for
    /// everyone but tasks, which each era declares its own way.
    pub fn capabilities(&self, version: ProtocolVersion) -> Value {
        let mut caps = json!({
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "logging": {},
            "completions": {},
        });
        if !self.settings().tasks.enabled() {
            return caps;
        }
        if version.has_experimental_tasks() {
            caps["tasks"] = json!({
                "list": {},
                "cancel": {},
                "requests": { "tools": { "call": {} } },
            });
        } else if version.is_stateless() {
            caps["extensions"] = json!({ tasks::EXTENSION: {} });
        }
        caps
    }
}

/// The key that signs MRTR `requestState`: stored in the database, so state
/// survives a restart or a failover. A read-only store (a replication
/// standby) reads it, or makes do with a key of its own until it takes over.
async fn signing_key(store: &Store) -> Result<Vec<u8>, StoreError> {
    let made = store
        .write(|tx| {
            store::kv::get_or_insert(tx, "mrtr_state_key", || rand::random::<[u8; 32]>().to_vec())
        })
        .await;
    match made {
        Err(StoreError::ReadOnly(_)) => {
            let stored = store
                .read(|c| {
                    Ok(c.query_row(
                        "SELECT value FROM kv WHERE key = 'mrtr_state_key'",
                        [],
                        |r| r.get::<_, Vec<u8>>(0),
                    )
                    .ok())
                })
                .await?;
            Ok(stored.unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec()))
        }
        other => other,
    }
}

impl Subscriber for SessionRegistry {
    fn deliver(&self, change: &Change) {
        let message = match change {
            Change::ResourceUpdated(uri) => {
                super::jsonrpc::notification(change.method(), &json!({ "uri": uri }))
            }
            _ => super::jsonrpc::notification(change.method(), &json!({})),
        };
        for s in self.all() {
            if let Change::ResourceUpdated(uri) = change
                && !s.is_subscribed(uri)
            {
                continue;
            }
            s.peer.notify(message.clone());
        }
    }
}
