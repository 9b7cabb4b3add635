//! Legacy (stateful) sessions: created by `initialize`, named by
//! `Mcp-Session-Id`, persisted in SQLite so they outlive a restart.

use dashmap::DashMap;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::client::{ClientInfo, LogLevel};
use super::outbound::Peer;
use super::version::ProtocolVersion;
use crate::store::{self, Store, StoreError, sessions::SessionRow};

pub struct Session {
    pub id: Arc<str>,
    pub version: ProtocolVersion,
    pub client: Arc<ClientInfo>,
    pub peer: Arc<Peer>,
    log_level: AtomicU8,
    subscriptions: Mutex<HashSet<String>>,
    initialized: AtomicBool,
    last_seen: AtomicI64,
    created_at: i64,
}

impl Session {
    fn new(id: Arc<str>, version: ProtocolVersion, client: ClientInfo, now: i64) -> Self {
        Session {
            id,
            version,
            client: Arc::new(client),
            peer: Arc::new(Peer::new()),
            log_level: AtomicU8::new(0),
            subscriptions: Mutex::new(HashSet::new()),
            initialized: AtomicBool::new(false),
            last_seen: AtomicI64::new(now),
            created_at: now,
        }
    }

    /// The minimum level of `notifications/message` the client asked for;
    /// `None` until it calls `logging/setLevel` (then everything is sent).
    pub fn log_level(&self) -> Option<LogLevel> {
        LogLevel::from_u8(self.log_level.load(Ordering::Relaxed))
    }

    pub fn set_log_level(&self, level: LogLevel) {
        self.log_level.store(level as u8, Ordering::Relaxed);
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Relaxed)
    }

    pub fn mark_initialized(&self) -> bool {
        !self.initialized.swap(true, Ordering::Relaxed)
    }

    pub fn subscribe(&self, uri: &str) -> Vec<String> {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        subs.insert(uri.to_owned());
        subs.iter().cloned().collect()
    }

    pub fn unsubscribe(&self, uri: &str) -> Vec<String> {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        subs.remove(uri);
        subs.iter().cloned().collect()
    }

    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uri)
    }

    pub fn touch(&self, now: i64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    fn to_row(&self) -> SessionRow {
        SessionRow {
            id: self.id.to_string(),
            protocol_version: self.version.as_str().to_owned(),
            client_info: self.client.info.to_string(),
            capabilities: self.client.capabilities.to_string(),
            log_level: self.log_level().map(|l| l.as_str().to_owned()),
            subscriptions: self
                .subscriptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
            initialized: self.is_initialized(),
            created_at: self.created_at,
            last_seen_at: self.last_seen(),
        }
    }

    fn from_row(row: SessionRow) -> Option<Self> {
        let version = ProtocolVersion::parse(&row.protocol_version)?;
        let info: Value = serde_json::from_str(&row.client_info).unwrap_or(Value::Null);
        let caps: Value = serde_json::from_str(&row.capabilities).unwrap_or(Value::Null);
        let s = Session::new(
            Arc::from(row.id.as_str()),
            version,
            ClientInfo::new(info, caps),
            row.created_at,
        );
        s.last_seen.store(row.last_seen_at, Ordering::Relaxed);
        if let Some(l) = row.log_level.as_deref().and_then(LogLevel::parse) {
            s.set_log_level(l);
        }
        s.initialized.store(row.initialized, Ordering::Relaxed);
        *s.subscriptions.lock().unwrap_or_else(|p| p.into_inner()) =
            row.subscriptions.into_iter().collect();
        Some(s)
    }
}

/// A fresh session id: 128 random bits as 32 hex characters (visible ASCII).
pub fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// All sessions this process knows, backed by the `sessions` table.
pub struct SessionRegistry {
    live: DashMap<Arc<str>, Arc<Session>>,
    store: Option<Store>,
}

impl SessionRegistry {
    /// `store` is `None` for sessions that must not persist (stdio).
    pub fn new(store: Option<Store>) -> Self {
        SessionRegistry {
            live: DashMap::new(),
            store,
        }
    }

    /// Creates a session; with a store, the row is durable before this returns.
    pub async fn create(
        &self,
        version: ProtocolVersion,
        client: ClientInfo,
    ) -> Result<Arc<Session>, StoreError> {
        let id: Arc<str> = Arc::from(new_session_id());
        let session = Arc::new(Session::new(
            id.clone(),
            version,
            client,
            crate::clock::now_secs(),
        ));
        if let Some(store) = &self.store {
            let row = session.to_row();
            store
                .write(move |tx| store::sessions::insert(tx, &row))
                .await?;
        }
        self.live.insert(id, session.clone());
        Ok(session)
    }

    /// Looks a session up in memory, then in the database (after a restart
    /// or a failover the row is there but the memory is not).
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        if let Some(s) = self.live.get(id) {
            return Ok(Some(s.clone()));
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let owned = id.to_owned();
        let row = store
            .read(move |c| store::sessions::load(c, &owned))
            .await?;
        let Some(session) = row.and_then(Session::from_row) else {
            return Ok(None);
        };
        let session = Arc::new(session);
        // Two requests may race to revive the same session; keep the first.
        let entry = self
            .live
            .entry(session.id.clone())
            .or_insert(session)
            .clone();
        Ok(Some(entry))
    }

    /// Ends a session; false if it did not exist.
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let was_live = match self.live.remove(id) {
            Some((_, s)) => {
                s.peer.fail_pending("session ended");
                true
            }
            None => false,
        };
        let Some(store) = &self.store else {
            return Ok(was_live);
        };
        let owned = id.to_owned();
        let was_stored = store
            .write(move |tx| store::sessions::delete(tx, &owned))
            .await?;
        Ok(was_live || was_stored)
    }

    /// Drops every in-memory session (after a restore replaced the
    /// database). Sessions the restored database still has come back from
    /// it on their next request; the others get "unknown session" (404).
    pub fn forget_all(&self) -> usize {
        let ids: Vec<Arc<str>> = self.live.iter().map(|e| e.key().clone()).collect();
        for id in &ids {
            if let Some((_, s)) = self.live.remove(id) {
                s.peer
                    .fail_pending("the database was restored from a backup");
            }
        }
        ids.len()
    }

    /// True when `id` is a session of this registry now in memory.
    pub fn knows(&self, id: &str) -> bool {
        self.live.contains_key(id)
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.live.iter().map(|e| e.value().clone()).collect()
    }

    /// Persists a session's log level, subscriptions and initialized flag;
    /// durable when this returns, so an acknowledged subscription survives a
    /// crash.
    pub async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let row = session.to_row();
        store
            .write(move |tx| {
                store::sessions::set_log_level(
                    tx,
                    &row.id,
                    row.log_level.as_deref().unwrap_or(""),
                )?;
                store::sessions::set_subscriptions(tx, &row.id, &row.subscriptions)?;
                if row.initialized {
                    store::sessions::set_initialized(tx, &row.id)?;
                }
                Ok(())
            })
            .await
    }

    /// Writes last-seen times and drops sessions idle longer than `idle_secs`,
    /// from memory and from the database. Returns how many expired.
    pub async fn maintain(&self, idle_secs: i64) -> Result<usize, StoreError> {
        let now = crate::clock::now_secs();
        let cutoff = now - idle_secs;
        let idle: Vec<Arc<str>> = self
            .live
            .iter()
            .filter(|e| e.value().last_seen() < cutoff)
            .map(|e| e.key().clone())
            .collect();
        for id in &idle {
            if let Some((_, s)) = self.live.remove(id) {
                s.peer.fail_pending("session expired");
            }
        }
        let Some(store) = &self.store else {
            return Ok(idle.len());
        };
        let seen: Vec<(String, i64)> = self
            .live
            .iter()
            .map(|e| (e.key().to_string(), e.value().last_seen()))
            .collect();
        let expired = store
            .write(move |tx| {
                for (id, at) in &seen {
                    store::sessions::touch_many(tx, std::slice::from_ref(id), *at)?;
                }
                store::sessions::expire(tx, cutoff)
            })
            .await?;
        Ok(idle.len().max(expired.len()))
    }
}
