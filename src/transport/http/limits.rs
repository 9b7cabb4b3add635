//! What one client, and all clients together, may spend on the MCP
//! listener: a token bucket of requests per client, and caps on requests
//! running and SSE streams open, per client and per session. Connections
//! are capped where they are accepted ([`super::listener`]), sessions by
//! their registry ([`crate::mcp::session`]); every refusal of any of them
//! is a [`Refusal`]: a 429 (this client's share is spent) or a 503 (the
//! server is full), a `Retry-After`, a JSON-RPC error naming the limit,
//! and one count in `erlmcp_http_refusals_total{limit}`.
//!
//! Whom a request is charged to is a [`ClientKey`]: the client's address,
//! or with `auth.mode = "tokens"` the principal (the token's name) once the
//! request is authenticated, decided in one place, [`charged_to`].

use arc_swap::ArcSwap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use super::json_error;
use crate::config::LimitsConfig;
use crate::mcp::error::McpError;
use crate::mcp::grant::Grant;
use crate::mcp::jsonrpc::RequestId;
use crate::mcp::session::{Owner, SessionError};

/// The JSON-RPC error code of every refusal by a limit (in the range
/// JSON-RPC leaves to servers; MCP assigns none for this).
pub(crate) const LIMIT_EXCEEDED: i64 = -32029;

/// Whom a connection or request is charged to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    /// An IPv4 address, or the /64 network of an IPv6 address (one host
    /// usually holds a whole /64, so single addresses would not bound it).
    Address(IpAddr),
    /// An authenticated principal: the name of the token a request bore
    /// (`auth.mode = "tokens"`).
    Principal(Arc<str>),
}

impl ClientKey {
    pub(crate) fn of_address(ip: IpAddr) -> ClientKey {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    IpAddr::V6(o.into())
                }
            },
            v4 => v4,
        };
        ClientKey::Address(ip)
    }

    /// The label sessions are charged to (see [`Owner`]).
    pub(crate) fn owner(&self) -> Owner {
        Arc::from(self.to_string())
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Address(IpAddr::V4(a)) => write!(f, "{a}"),
            ClientKey::Address(IpAddr::V6(a)) => write!(f, "{a}/64"),
            ClientKey::Principal(p) => write!(f, "principal {p}"),
        }
    }
}

/// What the connection layer tells each request about its client (a
/// request extension).
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) key: ClientKey,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            key: ClientKey::of_address(addr.ip()),
        }
    }
}

/// Whom a request is charged to: the one place that decides it. A request
/// erlmcp authenticated (`grant`, `auth.mode = "tokens"`) is charged to its
/// principal, and every per-client limit (rate, sessions, requests,
/// streams) follows it; otherwise, and before the token is looked up, its
/// connection's address. Connections stay per address, since they are
/// counted before any request is read. (Without `auth.mode = "tokens"` the
/// `Authorization` digest that scopes tasks, [`super::principal`], is not
/// checked by erlmcp: a client could name a new one per request, so no
/// limit may follow it.)
pub(crate) fn charged_to(client: Option<&Client>, grant: Option<&Grant>) -> ClientKey {
    if let Some(g) = grant {
        return ClientKey::Principal(Arc::from(g.principal.as_str()));
    }
    match client {
        Some(c) => c.key.clone(),
        // Only a router served without the connection layer (never in the
        // daemon) lacks the extension: charge everything to one key.
        None => ClientKey::Address(IpAddr::from([0, 0, 0, 0])),
    }
}

/// Which limit refused something (the `limit` label of the metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Limit {
    Rate,
    Connections,
    ConnectionsPerClient,
    Sessions,
    SessionsPerClient,
    RequestsPerClient,
    RequestsPerSession,
    SseStreamsPerClient,
    SseStreamsPerSession,
}

impl Limit {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::Connections => "connections",
            Limit::ConnectionsPerClient => "connections_per_client",
            Limit::Sessions => "sessions",
            Limit::SessionsPerClient => "sessions_per_client",
            Limit::RequestsPerClient => "requests_per_client",
            Limit::RequestsPerSession => "requests_per_session",
            Limit::SseStreamsPerClient => "sse_streams_per_client",
            Limit::SseStreamsPerSession => "sse_streams_per_session",
        }
    }

    /// 503 when the server as a whole is full, 429 when one client's
    /// share is spent.
    fn status(self) -> StatusCode {
        match self {
            Limit::Connections | Limit::Sessions => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A refusal by a limit; counted when made.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) limit: Limit,
    message: String,
    max: u64,
    retry_after_secs: u64,
}

impl Refusal {
    pub(crate) fn new(limit: Limit, max: u64, retry_after_secs: u64, message: String) -> Refusal {
        metrics::counter!("erlmcp_http_refusals_total", "limit" => limit.name()).increment(1);
        Refusal {
            limit,
            message,
            max,
            retry_after_secs: retry_after_secs.max(1),
        }
    }

    /// A session the registry would not create.
    pub(crate) fn session(e: &SessionError, retry_after_secs: u64) -> Option<Refusal> {
        let (limit, max) = match e {
            SessionError::Full { max } => (Limit::Sessions, *max),
            SessionError::OwnerFull { max } => (Limit::SessionsPerClient, *max),
            _ => return None,
        };
        Some(Refusal::new(
            limit,
            max as u64,
            retry_after_secs,
            e.to_string(),
        ))
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.limit.status()
    }

    #[cfg(test)]
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.retry_after_secs
    }

    fn error(&self) -> McpError {
        McpError::new(LIMIT_EXCEEDED, format!("Limit exceeded: {}", self.message)).with_data(
            json!({
                "limit": self.limit.name(),
                "max": self.max,
                "retryAfterSeconds": self.retry_after_secs,
            }),
        )
    }

    /// The HTTP answer: status, `Retry-After`, a JSON-RPC error.
    pub(crate) fn response(&self, id: Option<&RequestId>) -> Response {
        let mut r = json_error(self.status(), id, &self.error());
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        r
    }

    /// The same answer as bytes on the wire, for a connection refused
    /// before any request was read; it closes the connection.
    pub(crate) fn http_bytes(&self) -> Vec<u8> {
        let body = crate::mcp::jsonrpc::error_response(None, &self.error());
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nretry-after: {}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.retry_after_secs,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// The numbers of `[limits]` the HTTP transport applies; a reload swaps
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LimitSettings {
    pub(crate) requests_per_sec: u32,
    pub(crate) request_burst: u32,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_client: usize,
    pub(crate) max_requests_per_client: usize,
    pub(crate) max_requests_per_session: usize,
    pub(crate) max_sse_streams_per_client: usize,
    pub(crate) max_sse_streams_per_session: usize,
}

impl LimitSettings {
    /// `fd_limit` is the process's open-file limit, from which an unset
    /// `max_connections` is derived.
    pub(crate) fn from_config(c: &LimitsConfig, fd_limit: u64) -> LimitSettings {
        LimitSettings {
            requests_per_sec: c.requests_per_sec,
            request_burst: c.request_burst,
            max_connections: c
                .max_connections
                .unwrap_or_else(|| super::listener::default_max_connections(fd_limit)),
            max_connections_per_client: c.max_connections_per_client,
            max_requests_per_client: c.max_requests_per_client,
            max_requests_per_session: c.max_requests_per_session,
            max_sse_streams_per_client: c.max_sse_streams_per_client,
            max_sse_streams_per_session: c.max_sse_streams_per_session,
        }
    }

    fn quota(&self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.requests_per_sec)?;
        let burst = NonZeroU32::new(self.request_burst).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// How many of something each key holds (requests running, streams open).
pub(crate) struct Counts<K: Hash + Eq>(DashMap<K, usize>);

impl<K: Hash + Eq + Clone> Counts<K> {
    pub(crate) fn new() -> Self {
        Counts(DashMap::new())
    }

    /// Takes one for `key` unless it holds `max` already.
    pub(crate) fn try_take(&self, key: &K, max: usize) -> bool {
        let mut n = self.0.entry(key.clone()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives one back; a key holding none is forgotten.
    pub(crate) fn give_back(&self, key: &K) {
        if let Some(mut n) = self.0.get_mut(key) {
            *n = n.saturating_sub(1);
        }
        self.0.remove_if(key, |_, n| *n == 0);
    }

    #[cfg(test)]
    pub(crate) fn held(&self, key: &K) -> usize {
        self.0.get(key).map_or(0, |n| *n)
    }

    /// Keys holding something.
    pub(crate) fn keys(&self) -> usize {
        self.0.len()
    }
}

/// What requests and streams spend; shared by every request.
pub(crate) struct Limits {
    settings: ArcSwap<LimitSettings>,
    rate: ArcSwap<Option<DefaultKeyedRateLimiter<ClientKey>>>,
    requests: Counts<ClientKey>,
    session_requests: Counts<Arc<str>>,
    streams: Counts<ClientKey>,
    session_streams: Counts<Arc<str>>,
}

/// Which count a [`Slot`] was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    Request,
    Stream,
}

/// One request running, or one stream open, for as long as it lives.
pub(crate) struct Slot {
    limits: Arc<Limits>,
    kind: SlotKind,
    client: ClientKey,
    session: Option<Arc<str>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (per_client, per_session) = self.limits.counts(self.kind);
        per_client.give_back(&self.client);
        if let Some(s) = &self.session {
            per_session.give_back(s);
        }
    }
}

impl Limits {
    pub(crate) fn new(settings: LimitSettings) -> Arc<Limits> {
        Arc::new(Limits {
            rate: ArcSwap::from_pointee(settings.quota().map(RateLimiter::dashmap)),
            settings: ArcSwap::from_pointee(settings),
            requests: Counts::new(),
            session_requests: Counts::new(),
            streams: Counts::new(),
            session_streams: Counts::new(),
        })
    }

    pub(crate) fn settings(&self) -> LimitSettings {
        **self.settings.load()
    }

    /// New numbers; the token buckets start full again only if the rate
    /// changed.
    pub(crate) fn reload(&self, new: LimitSettings) {
        let old = self.settings();
        if old.quota() != new.quota() {
            self.rate
                .store(Arc::new(new.quota().map(RateLimiter::dashmap)));
        }
        self.settings.store(Arc::new(new));
    }

    /// Spends a token of `client`'s bucket.
    pub(crate) fn check_rate(&self, client: &ClientKey) -> Result<(), Refusal> {
        let rate = self.rate.load();
        let Some(limiter) = rate.as_ref() else {
            return Ok(());
        };
        match limiter.check_key(client) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let s = self.settings();
                Err(Refusal::new(
                    Limit::Rate,
                    u64::from(s.requests_per_sec),
                    wait.as_secs_f64().ceil() as u64,
                    format!(
                        "this client sent more than {} requests per second (bursts up to {})",
                        s.requests_per_sec, s.request_burst
                    ),
                ))
            }
        }
    }

    fn counts(&self, kind: SlotKind) -> (&Counts<ClientKey>, &Counts<Arc<str>>) {
        match kind {
            SlotKind::Request => (&self.requests, &self.session_requests),
            SlotKind::Stream => (&self.streams, &self.session_streams),
        }
    }

    fn take(
        self: &Arc<Self>,
        kind: SlotKind,
        client: &ClientKey,
        session: Option<&Arc<str>>,
    ) -> Result<Slot, Refusal> {
        let s = self.settings();
        let (per_client, per_session) = self.counts(kind);
        let (client_max, session_max, client_limit, session_limit, what) = match kind {
            SlotKind::Request => (
                s.max_requests_per_client,
                s.max_requests_per_session,
                Limit::RequestsPerClient,
                Limit::RequestsPerSession,
                "requests running",
            ),
            SlotKind::Stream => (
                s.max_sse_streams_per_client,
                s.max_sse_streams_per_session,
                Limit::SseStreamsPerClient,
                Limit::SseStreamsPerSession,
                "SSE streams open",
            ),
        };
        if !per_client.try_take(client, client_max) {
            return Err(Refusal::new(
                client_limit,
                client_max as u64,
                1,
                format!("this client has {client_max} {what}, the most allowed"),
            ));
        }
        if let Some(sid) = session
            && !per_session.try_take(sid, session_max)
        {
            per_client.give_back(client);
            return Err(Refusal::new(
                session_limit,
                session_max as u64,
                1,
                format!("this session has {session_max} {what}, the most allowed"),
            ));
        }
        Ok(Slot {
            limits: self.clone(),
            kind,
            client: client.clone(),
            session: session.cloned(),
        })
    }

    /// A request about to be served.
    pub(crate) fn request(
        self: &Arc<Self>,
        client: &ClientKey,
        session: Option<&Arc<str>>,
    ) -> Result<Slot, Refusal> {
        self.take(SlotKind::Request, client, session)
    }

    /// A listening SSE stream about to be opened.
    pub(crate) fn stream(
        self: &Arc<Self>,
        client: &ClientKey,
        session: Option<&Arc<str>>,
    ) -> Result<Slot, Refusal> {
        self.take(SlotKind::Stream, client, session)
    }

    /// Forgets token buckets that are full again (they behave as new
    /// ones), so the map does not keep every client ever seen.
    pub(crate) fn prune(&self) {
        if let Some(l) = self.rate.load().as_ref() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Clients with a token bucket, a request running, a stream open.
    pub(crate) fn tracked(&self) -> (usize, usize, usize) {
        let buckets = self.rate.load().as_ref().as_ref().map_or(0, |l| l.len());
        (buckets, self.requests.keys(), self.streams.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LimitSettings {
        LimitSettings {
            requests_per_sec: 2,
            request_burst: 3,
            max_connections: 10,
            max_connections_per_client: 2,
            max_requests_per_client: 3,
            max_requests_per_session: 2,
            max_sse_streams_per_client: 1,
            max_sse_streams_per_session: 1,
        }
    }

    fn key(s: &str) -> ClientKey {
        ClientKey::of_address(s.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_their_slash_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_eq!(key("2001:db8::1").to_string(), "2001:db8::/64");
    }

    #[test]
    fn the_bucket_allows_the_burst_then_says_when_to_retry() {
        let l = Limits::new(settings());
        let a = key("10.0.0.1");
        for _ in 0..3 {
            l.check_rate(&a).unwrap();
        }
        let r = l.check_rate(&a).unwrap_err();
        assert_eq!(r.limit, Limit::Rate);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.retry_after_secs() >= 1);
        l.check_rate(&key("10.0.0.2")).unwrap();
        let mut off = settings();
        off.requests_per_sec = 0;
        l.reload(off);
        for _ in 0..100 {
            l.check_rate(&a).unwrap();
        }
    }

    #[test]
    fn slots_are_capped_per_client_and_per_session_and_given_back() {
        let l = Limits::new(settings());
        let (a, s1, s2): (ClientKey, Arc<str>, Arc<str>) =
            (key("10.0.0.1"), Arc::from("s1"), Arc::from("s2"));
        let r1 = l.request(&a, Some(&s1)).unwrap();
        let _r2 = l.request(&a, Some(&s1)).unwrap();
        let e = l.request(&a, Some(&s1)).err().unwrap();
        assert_eq!(e.limit, Limit::RequestsPerSession);
        assert_eq!(
            l.requests.held(&a),
            2,
            "the refused one gave its client slot back"
        );
        let _r3 = l.request(&a, Some(&s2)).unwrap();
        let e = l.request(&a, None).err().unwrap();
        assert_eq!(e.limit, Limit::RequestsPerClient);
        drop(r1);
        l.request(&a, Some(&s1)).unwrap();
        assert_eq!(l.session_requests.held(&s1), 1);
        let _st = l.stream(&a, None).unwrap();
        assert_eq!(
            l.stream(&a, None).err().unwrap().limit,
            Limit::SseStreamsPerClient
        );
    }

    #[test]
    fn a_refusal_on_the_wire_is_a_complete_http_response() {
        let r = Refusal::new(Limit::Connections, 5, 1, "full".into());
        let text = String::from_utf8(r.http_bytes()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], LIMIT_EXCEEDED);
        assert_eq!(v["error"]["data"]["limit"], "connections");
    }
}
