//! Streamable HTTP on one endpoint, `/mcp`: POST carries one message, GET
//! opens (or resumes) a session's server stream, DELETE ends a session.
//! Both protocol eras are served side by side: a request with modern
//! (2026-07-28) metadata is handled statelessly, anything else goes through
//! a legacy session named by `Mcp-Session-Id`.
//!
//! The listener ([`listener`], [`connection`]) bounds connections and their
//! timeouts; [`limits`] bounds what each client spends on requests and
//! streams.

pub(crate) mod auth;
mod connection;
mod delete;
mod get;
pub mod guard;
pub(crate) mod headers;
pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod oauth;
mod post;
mod principal;
mod refusals;
pub mod stream;
pub mod tls;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, AuthMode, HttpConfig, LimitsConfig};
use crate::mcp::error::McpError;
use crate::mcp::grant::Grant;
use crate::mcp::jsonrpc::{self, RequestId};
use crate::mcp::server::Server;
use crate::store::Store;
use connection::ConnSettings;
use limits::{Client, ClientKey, LimitSettings, Limits, Slot};
pub use listener::serve;
use listener::{AcceptHealth, Connections};
use stream::SseStream;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// HTTP settings a reload may change.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub json_response: bool,
    pub guard: guard::Guard,
    pub max_body_bytes: usize,
    pub sse_retry_ms: u64,
    pub keepalive: Duration,
    pub(crate) auth: Authentication,
    /// A request body must arrive whole within this long.
    pub body_read_timeout: Duration,
    /// The `Retry-After` of a session refused by a cap: unfinished
    /// sessions are gone by then.
    pub session_retry_secs: u64,
    pub(crate) conn: ConnSettings,
    pub(crate) limits: LimitSettings,
}

/// How `/mcp` authenticates its callers (`auth.mode`).
#[derive(Clone, Debug)]
pub(crate) enum Authentication {
    Off,
    Tokens,
    /// One verifier (and its cached keys) for as long as `[auth.oauth]`
    /// stays the same across reloads.
    OAuth(Arc<oauth::Verifier>),
}

impl Authentication {
    /// The protected resource metadata URL a refusal points to.
    pub(crate) fn resource_metadata(&self) -> Option<String> {
        match self {
            Authentication::OAuth(v) => Some(v.resource_metadata_url()),
            _ => None,
        }
    }
}

impl HttpSettings {
    /// `fd_limit` is the process's open-file limit (the default connection
    /// cap is derived from it).
    pub fn from_config(c: &HttpConfig, l: &LimitsConfig, auth: &AuthConfig, fd_limit: u64) -> Self {
        HttpSettings {
            auth: match auth.mode {
                AuthMode::Off => Authentication::Off,
                AuthMode::Tokens => Authentication::Tokens,
                AuthMode::Oauth => {
                    Authentication::OAuth(Arc::new(oauth::Verifier::new(&auth.oauth)))
                }
            },
            json_response: c.json_response,
            guard: guard::Guard::new(c.listen, &c.allowed_hosts, &c.allowed_origins),
            max_body_bytes: c.max_body_bytes,
            sse_retry_ms: c.sse_retry_ms,
            keepalive: Duration::from_secs(25),
            body_read_timeout: Duration::from_secs(c.body_read_timeout_secs),
            session_retry_secs: c.handshake_timeout_secs,
            conn: ConnSettings {
                header_read_timeout: Duration::from_secs(c.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(c.idle_timeout_secs),
                write_timeout: Duration::from_secs(c.write_timeout_secs),
                max_header_bytes: c.max_header_bytes,
            },
            limits: LimitSettings::from_config(l, fd_limit),
        }
    }
}

pub struct HttpState {
    pub server: Arc<Server>,
    settings: ArcSwap<HttpSettings>,
    /// Streams of legacy sessions that may still be resumed, by (session, stream).
    streams: DashMap<(Arc<str>, u64), Arc<SseStream>>,
    next_stream: AtomicU64,
    /// Fires on graceful shutdown: open SSE bodies end with a `retry` hint.
    pub shutdown: CancellationToken,
    open_streams: AtomicUsize,
    pub(crate) limits: Arc<Limits>,
    refusals: refusals::RefusalAudit,
    pub(crate) connections: Arc<Connections>,
    pub(crate) accept: AcceptHealth,
    /// `None`: plain HTTP.
    pub(crate) tls: Option<tls::Tls>,
}

/// The `kv` counter of server starts that numbers restored SSE streams.
const INCARNATION_KEY: &str = "http.incarnation";

impl HttpState {
    pub fn new(
        server: Arc<Server>,
        settings: HttpSettings,
        tls: Option<tls::Tls>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        // Stream ids start at a random base so ids from before a restart are
        // never reused for different events.
        let base = (rand::random::<u32>() as u64) << 24;
        Arc::new(HttpState {
            server,
            limits: Limits::new(settings.limits),
            refusals: refusals::RefusalAudit::default(),
            connections: Connections::new(),
            accept: AcceptHealth::default(),
            settings: ArcSwap::from_pointee(settings),
            streams: DashMap::new(),
            next_stream: AtomicU64::new(base),
            shutdown,
            open_streams: AtomicUsize::new(0),
            tls,
        })
    }

    /// The answer to a request a limit refused, audited (sampled: see
    /// [`refusals`]) except on a standby, whose store takes no local writes.
    pub(crate) fn refuse(
        &self,
        client: &ClientKey,
        refusal: limits::Refusal,
        id: Option<&RequestId>,
    ) -> Response {
        if self.server.refusal().is_none() {
            self.refusals.record(&self.server.store, client, &refusal);
        }
        refusal.response(id)
    }

    pub fn settings(&self) -> Arc<HttpSettings> {
        self.settings.load_full()
    }

    pub fn reload(&self, mut settings: HttpSettings) {
        // The same OAuth configuration keeps its verifier and cached keys.
        if let (Authentication::OAuth(old), Authentication::OAuth(new)) =
            (&self.settings().auth, &settings.auth)
            && old.config == new.config
        {
            settings.auth = Authentication::OAuth(old.clone());
        }
        self.limits.reload(settings.limits);
        self.settings.store(Arc::new(settings));
    }

    /// Whether the MCP listener serves TLS.
    pub(crate) fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Connections open on the MCP listener.
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// `None` while the listener accepts connections; else why it cannot.
    pub(crate) fn accept_failure(&self) -> Option<String> {
        self.accept.failure()
    }

    fn store(&self) -> Option<Store> {
        Some(self.server.store.clone())
    }

    fn new_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// SSE bodies currently open.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// After a restart: re-creates the standalone stream of every session
    /// that had one, detached, so notifications (resource updates, list
    /// changes) are logged for the client to replay when its GET returns.
    ///
    /// Events are logged in batches, so a crash can lose the log's last few
    /// rows after their events reached the client. Numbering on from the
    /// last logged seq would then give new events ids the client already
    /// holds, and a resume from such an id would skip them. So each start of
    /// the server (a durable counter) gets its own range of seqs above every
    /// earlier one: `incarnation << 32` and up.
    pub async fn restore_streams(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let incarnation = self
            .server
            .store
            .write(|tx| crate::store::kv::increment(tx, INCARNATION_KEY))
            .await?;
        let floor = incarnation << 32;
        let rows = self
            .server
            .store
            .read(crate::store::sessions::standalone_streams)
            .await?;
        let mut restored = 0;
        for (sid, stream) in rows {
            let Some(session) = self.server.sessions.get(&sid).await? else {
                continue;
            };
            let s = sid.clone();
            let last = self
                .server
                .store
                .read(move |c| crate::store::events::last_seq(c, &s, stream))
                .await?;
            get::adopt_standalone(self, &session, stream, (last + 1).max(floor));
            restored += 1;
        }
        Ok(restored)
    }

    /// Forgets every stream (this node stops serving: a replication
    /// standby); open SSE bodies end.
    pub fn forget_all_streams(&self) {
        self.streams.clear();
    }

    /// Forgets streams of sessions that no longer exist.
    pub fn forget_session(&self, session_id: &str) {
        self.streams.retain(|(s, _), _| &**s != session_id);
    }

    /// Forgets streams of sessions that ended (expired), in one pass.
    pub(crate) fn forget_sessions(&self, ids: &[Arc<str>]) {
        if ids.is_empty() {
            return;
        }
        let ended: std::collections::HashSet<&str> = ids.iter().map(|s| &**s).collect();
        self.streams.retain(|(s, _), _| !ended.contains(&**s));
    }

    /// Forgets request streams that finished more than `after` ago: their
    /// events are in the log, and a resume reads them from there. Returns
    /// how many streams memory still holds.
    pub(crate) fn prune_streams(&self, after: Duration) -> usize {
        self.streams.retain(|_, s| !s.finished_longer_than(after));
        self.streams.len()
    }

    /// Whom `req` is charged to (see [`limits::charged_to`]), once
    /// authenticated as `grant`, if at all.
    fn client_of(req: &Request, grant: Option<&Grant>) -> ClientKey {
        limits::charged_to(req.extensions().get::<Client>(), grant)
    }
}

/// Counts an open SSE body for as long as it lives, and holds the slot the
/// limits gave it, if any.
pub(crate) struct OpenStream(Arc<HttpState>, #[allow(dead_code)] Option<Slot>);

impl OpenStream {
    fn new(state: &Arc<HttpState>, slot: Option<Slot>) -> Self {
        state.open_streams.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("erlmcp_sse_streams_open").increment(1.0);
        OpenStream(state.clone(), slot)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("erlmcp_sse_streams_open").decrement(1.0);
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    // Origin/Host are checked in the handler, not a middleware layer: the
    // layer boxed and moved every request's future once more, for one call.
    Router::new()
        .route("/mcp", any(endpoint))
        .route(
            "/.well-known/oauth-protected-resource",
            any(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            any(resource_metadata),
        )
        .fallback(not_found)
        .with_state(state)
}

/// RFC 9728 protected resource metadata, in `auth.mode = "oauth"` only
/// (at the root and with `/mcp` appended: clients try both).
async fn resource_metadata(State(state): State<Arc<HttpState>>, req: Request) -> Response {
    let client = HttpState::client_of(&req, None);
    if let Err(refusal) = state.limits.check_rate(&client) {
        return state.refuse(&client, refusal, None);
    }
    let Authentication::OAuth(verifier) = &state.settings().auth else {
        return not_found(State(state), req).await;
    };
    if !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) {
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let doc = verifier.metadata(&state.server.catalog().toolset_names());
    let mut r = json_body(StatusCode::OK, doc.to_string().into_bytes());
    // Browser-based clients read it cross-origin; it holds nothing secret.
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

async fn not_found(State(state): State<Arc<HttpState>>, req: Request) -> Response {
    let client = HttpState::client_of(&req, None);
    if let Err(refusal) = state.limits.check_rate(&client) {
        return state.refuse(&client, refusal, None);
    }
    if let Some(refused) = origin_refusal(&state, &req) {
        return refused;
    }
    StatusCode::NOT_FOUND.into_response()
}

/// The refusal of a request naming a session another principal opened (or
/// one opened before authentication was on): 404 as for an unknown
/// session, so an id alone tells nothing, and audited. A session id is
/// not a credential: a leaked one is useless without its opener's token.
async fn foreign_session(
    state: &HttpState,
    h: &axum::http::HeaderMap,
    grant: &Grant,
) -> Option<Response> {
    let sid = headers::get(h, SESSION_HEADER)?;
    let session = state.server.sessions.get(sid).await.ok()??;
    if session.principal.as_deref() == Some(grant.principal.as_str()) {
        return None;
    }
    let entry = crate::store::audit::AuditEntry::event(
        "auth",
        "session",
        "foreign_session",
        Some("the session was opened by another principal"),
        Some(grant.principal.clone()),
    );
    crate::store::audit::record_batched(&state.server.store, entry);
    Some(json_error(
        StatusCode::NOT_FOUND,
        None,
        &McpError::invalid_request("unknown or expired session: initialize a new one"),
    ))
}

/// Who is calling `/mcp`, as `auth.mode` says to find out; `None` when
/// authentication is off.
async fn authenticated(
    state: &HttpState,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> Option<auth::Checked> {
    let store = &state.server.store;
    let what = || format!("{method} /mcp");
    Some(match &state.settings().auth {
        Authentication::Off => return None,
        Authentication::Tokens => auth::authenticate(store, headers, &what()).await,
        Authentication::OAuth(verifier) => {
            let toolsets = state.server.catalog().toolset_names();
            auth::authenticate_oauth(store, verifier, &toolsets, headers, &what()).await
        }
    })
}

async fn endpoint(State(state): State<Arc<HttpState>>, req: Request) -> Response {
    // The address's bucket first, before a token is looked up: a flood of
    // bad credentials is refused here.
    let address = HttpState::client_of(&req, None);
    if let Err(refusal) = state.limits.check_rate(&address) {
        return state.refuse(&address, refusal, None);
    }
    if let Some(refused) = origin_refusal(&state, &req) {
        return refused;
    }
    if let Some(why) = state.server.refusal() {
        // A replication standby: the client retries, on the primary once
        // the virtual address moved.
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &McpError::not_writable(why),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    // After the standby's refusal: a standby serves nobody, and audits
    // nothing (its store takes no local writes).
    let grant = match authenticated(&state, req.method(), req.headers()).await {
        None => None,
        Some(auth::Checked::Granted(g)) => Some(g),
        Some(auth::Checked::Refused(r)) => return drained(&state, req, r).await,
    };
    // Authenticated, the principal's own bucket too: every per-client
    // limit from here on is the principal's.
    let client = match grant.as_deref() {
        None => address,
        Some(g) => {
            let principal = HttpState::client_of(&req, Some(g));
            if let Err(refusal) = state.limits.check_rate(&principal) {
                return state.refuse(&principal, refusal, None);
            }
            principal
        }
    };
    if let Some(g) = grant.as_deref()
        && let Some(refused) = foreign_session(&state, req.headers(), g).await
    {
        return refused;
    }
    match *req.method() {
        axum::http::Method::POST => post::handle(state, client, req, grant).await,
        axum::http::Method::GET => get::handle(state, client, req).await,
        axum::http::Method::DELETE => delete::handle(state, req).await,
        _ => {
            let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}

/// An authentication refusal, sent once the request body is read (up to
/// `http.max_body_bytes`, within `http.body_read_timeout_secs`). Answered
/// with the body unread, hyper would close the connection as it pleases,
/// and a client reusing it for its retry with a fresh token (the Python
/// SDK did, now and then) would find it gone; a body too large or too slow
/// gets `Connection: close` instead.
async fn drained(state: &HttpState, req: Request, mut refusal: Response) -> Response {
    let settings = state.settings();
    let read = tokio::time::timeout(
        settings.body_read_timeout,
        axum::body::to_bytes(req.into_body(), settings.max_body_bytes),
    )
    .await;
    if !matches!(read, Ok(Ok(_))) {
        refusal
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    refusal
}

/// DNS rebinding protection: the 403 for an Origin or Host not allowed.
fn origin_refusal(state: &HttpState, req: &Request) -> Option<Response> {
    let why = state.settings().guard.check(req.headers()).err()?;
    tracing::warn!(reason = %why, "request refused (DNS rebinding protection)");
    Some(json_error(
        StatusCode::FORBIDDEN,
        None,
        &McpError::invalid_request(why),
    ))
}

/// A JSON-RPC error as an HTTP response with `status`.
pub fn json_error(status: StatusCode, id: Option<&jsonrpc::RequestId>, e: &McpError) -> Response {
    json_body(status, jsonrpc::error_response(id, e))
}

pub fn json_body(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
