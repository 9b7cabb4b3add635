//! Legacy (stateful) sessions: created by `initialize`, named by
//! `Mcp-Session-Id`, persisted in SQLite so they outlive a restart.
//!
//! The database holds every session; memory holds a bounded cache of them
//! (`limits.session_cache`), and a session not in memory is read back on
//! its next request. How many sessions may exist is capped overall and per
//! owner (whom the transport charges a session to), so a client that opens
//! sessions and never ends them is refused instead of growing the process.

use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;

use super::client::{ClientInfo, LogLevel};
use super::error::McpError;
use super::outbound::Peer;
use super::version::ProtocolVersion;
use crate::config::LimitsConfig;
use crate::store::{self, Store, StoreError, sessions::SessionRow};

/// Whom a session is charged to for the per-client cap: a label the
/// transport chooses (the client's address, or the authenticated
/// principal with `auth.mode = "tokens"`). The registry only compares them.
pub type Owner = Arc<str>;

/// Most bytes of `clientInfo` and `capabilities` (as JSON, together) a
/// session keeps: they are stored with it, and a session row must stay
/// small for `max_sessions` to bound the table.
pub const MAX_CLIENT_BYTES: usize = 16 * 1024;
/// Most resources one session may subscribe to, and the longest URI.
pub const MAX_SUBSCRIPTIONS: usize = 1024;
pub const MAX_SUBSCRIPTION_URI_BYTES: usize = 8 * 1024;

/// Caps of a registry; a reload may change them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions that may exist, all owners together.
    pub max_sessions: usize,
    /// Sessions one owner may hold.
    pub max_per_owner: usize,
    /// Sessions kept in memory (when there is a database to revive from).
    pub cache: usize,
}

impl SessionLimits {
    /// No caps (stdio: one client, nothing stored).
    pub const UNLIMITED: SessionLimits = SessionLimits {
        max_sessions: usize::MAX,
        max_per_owner: usize::MAX,
        cache: usize::MAX,
    };

    pub fn from_config(c: &LimitsConfig) -> SessionLimits {
        SessionLimits {
            max_sessions: c.max_sessions,
            max_per_owner: c.max_sessions_per_client,
            cache: c.session_cache,
        }
    }
}

/// Why a session could not be created.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server holds its maximum of {max} sessions; try again later")]
    Full { max: usize },
    #[error(
        "this client holds its maximum of {max} sessions; end sessions it no longer uses with DELETE"
    )]
    OwnerFull { max: usize },
    #[error("clientInfo and capabilities take {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
}

pub struct Session {
    pub id: Arc<str>,
    pub version: ProtocolVersion,
    pub client: Arc<ClientInfo>,
    pub peer: Arc<Peer>,
    log_level: AtomicU8,
    subscriptions: Mutex<HashSet<String>>,
    initialized: AtomicBool,
    last_seen: AtomicI64,
    /// The last-seen time the database has, so maintenance writes only
    /// what changed.
    persisted_seen: AtomicI64,
    created_at: i64,
    /// Who opened it, when the transport authenticated the caller: only
    /// that principal may use it (a session id is not a credential).
    pub principal: Option<Arc<str>>,
}

impl Session {
    fn new(
        id: Arc<str>,
        version: ProtocolVersion,
        client: ClientInfo,
        principal: Option<&str>,
        now: i64,
    ) -> Self {
        Session {
            id,
            version,
            client: Arc::new(client),
            peer: Arc::new(Peer::new()),
            log_level: AtomicU8::new(0),
            subscriptions: Mutex::new(HashSet::new()),
            initialized: AtomicBool::new(false),
            last_seen: AtomicI64::new(now),
            persisted_seen: AtomicI64::new(now),
            created_at: now,
            principal: principal.map(Arc::from),
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

    /// Adds a subscription; refused beyond [`MAX_SUBSCRIPTIONS`] or for a
    /// URI longer than [`MAX_SUBSCRIPTION_URI_BYTES`] (they are stored).
    pub fn subscribe(&self, uri: &str) -> Result<(), McpError> {
        if uri.len() > MAX_SUBSCRIPTION_URI_BYTES {
            return Err(McpError::invalid_params(format!(
                "a subscribed URI may be at most {MAX_SUBSCRIPTION_URI_BYTES} bytes long"
            )));
        }
        let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if subs.len() >= MAX_SUBSCRIPTIONS && !subs.contains(uri) {
            return Err(McpError::invalid_params(format!(
                "a session may subscribe to at most {MAX_SUBSCRIPTIONS} resources"
            )));
        }
        subs.insert(uri.to_owned());
        Ok(())
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
            principal: self.principal.as_deref().map(str::to_owned),
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
            row.principal.as_deref(),
            row.created_at,
        );
        s.last_seen.store(row.last_seen_at, Ordering::Relaxed);
        s.persisted_seen.store(row.last_seen_at, Ordering::Relaxed);
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

/// What is counted against the caps: sessions stored, and per owner. An
/// owner's count covers the sessions this process created; it starts from
/// zero at each start (owners are not stored), while `stored` is read back
/// from the database by every maintenance pass.
#[derive(Default)]
struct Accounting {
    stored: AtomicUsize,
    per_owner: DashMap<Owner, usize>,
    owner_of: DashMap<Arc<str>, Owner>,
}

impl Accounting {
    fn release(&self, owner: Option<&Owner>) {
        let _ = self
            .stored
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if let Some(o) = owner {
            self.release_owner(o);
        }
    }

    fn release_owner(&self, owner: &Owner) {
        if let Some(mut n) = self.per_owner.get_mut(owner) {
            *n = n.saturating_sub(1);
        }
        self.per_owner.remove_if(owner, |_, n| *n == 0);
    }

    /// A stored session ended: its owner's count goes down.
    fn ended(&self, id: &str) {
        if let Some((_, owner)) = self.owner_of.remove(id) {
            self.release_owner(&owner);
        }
    }
}

/// A place for one more session, taken by [`SessionRegistry::admit`] and
/// spent by [`SessionRegistry::create`]; dropped unspent, it is given back.
pub struct Admission {
    acct: Arc<Accounting>,
    owner: Option<Owner>,
    spent: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.spent {
            self.acct.release(self.owner.as_ref());
        }
    }
}

/// Sessions a maintenance pass ended.
#[derive(Debug, Default)]
pub struct Expired {
    /// Idle longer than the idle timeout.
    pub idle: usize,
    /// Never completed the handshake (`notifications/initialized`) in time.
    pub unfinished: usize,
    /// Every id ended, so transports can drop what they hold for them.
    pub ids: Vec<Arc<str>>,
}

/// All sessions this process knows, backed by the `sessions` table.
pub struct SessionRegistry {
    live: DashMap<Arc<str>, Arc<Session>>,
    store: Option<Store>,
    limits: ArcSwap<SessionLimits>,
    acct: Arc<Accounting>,
    /// The cache size above which the next eviction scan runs (see
    /// [`SessionRegistry::evict_if_over`]).
    evict_above: AtomicUsize,
}

impl SessionRegistry {
    /// `store` is `None` for sessions that must not persist (stdio). No
    /// caps until [`SessionRegistry::set_limits`].
    pub fn new(store: Option<Store>) -> Self {
        SessionRegistry {
            live: DashMap::new(),
            store,
            limits: ArcSwap::from_pointee(SessionLimits::UNLIMITED),
            acct: Arc::default(),
            evict_above: AtomicUsize::new(0),
        }
    }

    pub fn set_limits(&self, limits: SessionLimits) {
        self.limits.store(Arc::new(limits));
    }

    pub fn limits(&self) -> SessionLimits {
        **self.limits.load()
    }

    /// Takes a place for a new session of `owner`, or says which cap
    /// refuses it. `None` is charged to no owner (only the global cap).
    pub fn admit(&self, owner: Option<Owner>) -> Result<Admission, SessionError> {
        let l = self.limits();
        let acct = &self.acct;
        if acct
            .stored
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < l.max_sessions).then_some(n + 1)
            })
            .is_err()
        {
            return Err(SessionError::Full {
                max: l.max_sessions,
            });
        }
        if let Some(o) = &owner {
            let mut n = acct.per_owner.entry(o.clone()).or_insert(0);
            if *n >= l.max_per_owner {
                drop(n);
                acct.release(None);
                return Err(SessionError::OwnerFull {
                    max: l.max_per_owner,
                });
            }
            *n += 1;
        }
        Ok(Admission {
            acct: self.acct.clone(),
            owner,
            spent: false,
        })
    }

    /// Creates a session in the place `admission` holds; with a store, the
    /// row is durable before this returns.
    pub async fn create(
        &self,
        version: ProtocolVersion,
        client: ClientInfo,
        principal: Option<&str>,
        mut admission: Admission,
    ) -> Result<Arc<Session>, SessionError> {
        let id: Arc<str> = Arc::from(new_session_id());
        let session = Arc::new(Session::new(
            id.clone(),
            version,
            client,
            principal,
            crate::clock::now_secs(),
        ));
        let row = session.to_row();
        let bytes = row.client_info.len() + row.capabilities.len();
        if bytes > MAX_CLIENT_BYTES {
            return Err(SessionError::TooLarge {
                bytes,
                max: MAX_CLIENT_BYTES,
            });
        }
        if let Some(store) = &self.store {
            store
                .write(move |tx| store::sessions::insert(tx, &row))
                .await?;
        }
        admission.spent = true;
        if let Some(owner) = admission.owner.take() {
            self.acct.owner_of.insert(id.clone(), owner);
        }
        self.live.insert(id, session.clone());
        self.evict_if_over();
        Ok(session)
    }

    /// Looks a session up in memory, then in the database (after a restart
    /// or a failover, or once the cache let it go, the row is there but
    /// the memory is not).
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
        self.evict_if_over();
        Ok(Some(entry))
    }

    /// Keeps the cache near its size: when it holds more than
    /// `limits.cache` sessions, the least recently seen of those that hold
    /// nothing only memory has (no request running, no server stream, no
    /// request awaiting the client) are let go, down to nine tenths of the
    /// size; their last-seen time is written first. One scan frees a
    /// tenth, so a flood pays it once per many sessions; when too little
    /// can go, the next scan waits for another tenth to arrive.
    fn evict_if_over(&self) {
        let Some(store) = &self.store else { return };
        let cache = self.limits().cache;
        let len = self.live.len();
        if len <= cache.max(self.evict_above.load(Ordering::Relaxed)) {
            return;
        }
        let target = cache - cache / 10;
        let mut idle: Vec<(i64, Arc<str>)> = self
            .live
            .iter()
            .filter(|e| evictable(e.value()))
            .map(|e| (e.value().last_seen(), e.key().clone()))
            .collect();
        let excess = len.saturating_sub(target);
        if idle.len() > excess {
            idle.select_nth_unstable(excess);
            idle.truncate(excess);
        }
        let mut seen = Vec::new();
        let mut evicted = 0u64;
        for (_, id) in idle {
            if let Some((id, s)) = self.live.remove_if(&id, |_, s| evictable(s)) {
                evicted += 1;
                let at = s.last_seen();
                if at > s.persisted_seen.load(Ordering::Relaxed) {
                    seen.push((id.to_string(), at));
                }
            }
        }
        if !seen.is_empty() {
            store.write_batched(move |tx| {
                for (id, at) in &seen {
                    store::sessions::touch_many(tx, std::slice::from_ref(id), *at)?;
                }
                Ok(())
            });
        }
        let now = self.live.len();
        let next = if now > cache { now + cache / 10 + 1 } else { 0 };
        self.evict_above.store(next, Ordering::Relaxed);
        metrics::counter!("erlmcp_sessions_evicted_total").increment(evicted);
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
            if was_live {
                self.acct.release(None);
                self.acct.ended(id);
            }
            return Ok(was_live);
        };
        let owned = id.to_owned();
        let was_stored = store
            .write(move |tx| store::sessions::delete(tx, &owned))
            .await?;
        if was_stored {
            self.acct.release(None);
            self.acct.ended(id);
        }
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
        // The restored database has other sessions: owners are unknown for
        // them, and the next maintenance pass counts them.
        self.acct.owner_of.clear();
        self.acct.per_owner.clear();
        ids.len()
    }

    /// True when `id` is a session of this registry now in memory.
    pub fn knows(&self, id: &str) -> bool {
        self.live.contains_key(id)
    }

    /// Reads the number of sessions that exist back from the database (the
    /// maintenance pass does it too; a promotion cannot wait for it).
    pub async fn recount(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(self.acct.stored.load(Ordering::Relaxed));
        };
        let n = store.read(store::sessions::count).await?;
        self.acct.stored.store(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Sessions held in memory.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Sessions that exist (as of the last maintenance pass, plus those
    /// created and ended since).
    pub fn stored_count(&self) -> usize {
        self.acct.stored.load(Ordering::Relaxed)
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

    /// Writes the last-seen times that changed, ends sessions idle longer
    /// than `idle_secs` and sessions that did not complete the handshake
    /// within `handshake_secs` of their creation (in memory and in the
    /// database), and counts the sessions that exist.
    pub async fn maintain(
        &self,
        idle_secs: i64,
        handshake_secs: i64,
    ) -> Result<Expired, StoreError> {
        let now = crate::clock::now_secs();
        let cutoff = now - idle_secs;
        let handshake_cutoff = now - handshake_secs;
        let mut out = Expired::default();
        let Some(store) = &self.store else {
            let gone: Vec<(Arc<str>, bool)> = self
                .live
                .iter()
                .filter_map(|e| {
                    let s = e.value();
                    if s.last_seen() < cutoff {
                        Some((e.key().clone(), true))
                    } else if !s.is_initialized() && s.created_at < handshake_cutoff {
                        Some((e.key().clone(), false))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, idle) in gone {
                if let Some((_, s)) = self.live.remove(&id) {
                    s.peer.fail_pending("session expired");
                }
                self.acct.release(None);
                self.acct.ended(&id);
                if idle {
                    out.idle += 1;
                } else {
                    out.unfinished += 1;
                }
                out.ids.push(id);
            }
            return Ok(out);
        };
        // The database decides, and memory follows once it has: a session
        // that left memory first could be read back from its row by a
        // request in between.
        let seen: Vec<(Arc<str>, String, i64)> = self
            .live
            .iter()
            .filter(|e| e.value().last_seen() > e.value().persisted_seen.load(Ordering::Relaxed))
            .map(|e| (e.key().clone(), e.key().to_string(), e.value().last_seen()))
            .collect();
        let written: Vec<(String, i64)> =
            seen.iter().map(|(_, id, at)| (id.clone(), *at)).collect();
        let (idle, unfinished) = store
            .write(move |tx| {
                for (id, at) in &written {
                    store::sessions::touch_many(tx, std::slice::from_ref(id), *at)?;
                }
                let idle = store::sessions::expire(tx, cutoff)?;
                let unfinished = store::sessions::expire_unfinished(tx, handshake_cutoff)?;
                Ok((idle, unfinished))
            })
            .await?;
        // Counted on a reader: the scan need not hold the writer.
        let count = store.read(store::sessions::count).await?;
        for (id, _, at) in &seen {
            if let Some(s) = self.live.get(id) {
                s.persisted_seen.fetch_max(*at, Ordering::Relaxed);
            }
        }
        out.idle = idle.len();
        out.unfinished = unfinished.len();
        for id in idle.into_iter().chain(unfinished) {
            if let Some((_, s)) = self.live.remove(id.as_str()) {
                s.peer.fail_pending("session expired");
            }
            self.acct.ended(&id);
            out.ids.push(Arc::from(id));
        }
        self.acct.stored.store(count, Ordering::Relaxed);
        Ok(out)
    }
}

/// A session memory may let go of: nothing but the map holds it, and it
/// holds nothing the database lacks.
fn evictable(s: &Arc<Session>) -> bool {
    Arc::strong_count(s) == 1 && s.peer.is_idle()
}
