//! The MCP server core shared by every transport: the catalog of what is
//! offered, the sessions, the store, and the settings a reload may change.

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::context::StateSigner;
use super::notify::{Change, Hub, Registration, Subscriber};
use super::session::SessionRegistry;
use super::version::ProtocolVersion;
use crate::store::{self, Store, StoreError};
use crate::toolsets::Catalog;

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            page_size: 100,
            client_request_timeout: Duration::from_secs(60),
            instructions: None,
            audit_tool_calls: true,
            list_ttl_ms: 60_000,
        }
    }
}

pub const SERVER_NAME: &str = "erlmcp";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Server {
    catalog: ArcSwap<Catalog>,
    settings: ArcSwap<Settings>,
    pub sessions: Arc<SessionRegistry>,
    pub store: Store,
    pub signer: Arc<StateSigner>,
    pub hub: Arc<Hub>,
    in_flight: std::sync::atomic::AtomicUsize,
    _sessions_hear_changes: Registration,
}

/// Counts a request as in flight while alive.
pub struct InFlight<'a>(&'a Server);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Server {
    pub async fn new(
        store: Store,
        catalog: Catalog,
        settings: Settings,
        hub: Arc<Hub>,
    ) -> Result<Arc<Server>, StoreError> {
        let key = store
            .write(|tx| {
                store::kv::get_or_insert(tx, "mrtr_state_key", || {
                    rand::random::<[u8; 32]>().to_vec()
                })
            })
            .await?;
        let sessions = Arc::new(SessionRegistry::new(Some(store.clone())));
        let reg = hub.register(sessions.clone());
        Ok(Arc::new(Server {
            catalog: ArcSwap::from_pointee(catalog),
            settings: ArcSwap::from_pointee(settings),
            sessions,
            store,
            signer: Arc::new(StateSigner::new(key)),
            hub,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            _sessions_hear_changes: reg,
        }))
    }

    /// Marks a request in flight until the guard drops (graceful drain waits
    /// for the count to reach zero).
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
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

    /// What this server can do; the same for every client.
    pub fn capabilities(&self) -> Value {
        json!({
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "logging": {},
            "completions": {},
        })
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
