//! The MCP listener's accept loop: TCP_NODELAY on every socket, caps on
//! open connections (all clients, and per client address) checked before
//! anything is read, each admitted connection served by
//! [`super::connection`], and the listener's health: when `accept` fails
//! for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the listener
//! reports it, `/readyz` turns false, and it recovers by itself.
//!
//! Also the process's open-file limit: raised to its hard limit at start,
//! and the source of the default connection cap, which keeps a reserve of
//! descriptors for the database, backups and the ops listener so that a
//! flood of connections cannot starve them.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::HttpState;
use super::connection;
use super::limits::{Client, ClientKey, Counts, Limit, LimitSettings, Refusal};

/// File descriptors the default connection cap leaves to everything else.
pub(crate) const FD_RESERVE: u64 = 256;
/// The default connection cap never exceeds this, however high the
/// descriptor limit: memory, not descriptors, bounds it then.
pub(crate) const MAX_DEFAULT_CONNECTIONS: u64 = 16_384;

/// The default of `limits.max_connections` for an open-file limit.
pub(crate) fn default_max_connections(fd_limit: u64) -> usize {
    fd_limit
        .saturating_sub(FD_RESERVE)
        .clamp(16, MAX_DEFAULT_CONNECTIONS) as usize
}

/// The soft open-file limit (`RLIMIT_NOFILE`).
pub(crate) fn fd_limit() -> u64 {
    rlimit().map_or(1024, |(soft, _)| soft)
}

fn rlimit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is u64 on every Linux target.
    Ok((r.rlim_cur, r.rlim_max))
}

/// Raises the soft open-file limit to the hard one (a Debian service gets
/// 1024 soft by default, far below what the connection caps assume).
/// Returns the soft limit in force afterwards. The packaged units set
/// `LimitNOFILE=` themselves and forbid `setrlimit`; then this changes
/// nothing and says why.
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = rlimit()?;
    if soft >= hard {
        return Ok(soft);
    }
    let r = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// Open connections, all clients and per client address.
pub(crate) struct Connections {
    open: AtomicUsize,
    per_client: Counts<ClientKey>,
}

/// One admitted connection, for as long as it is open.
pub(crate) struct ConnSlot {
    conns: Arc<Connections>,
    key: ClientKey,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
        self.conns.per_client.give_back(&self.key);
        metrics::gauge!("erlmcp_http_connections_open").decrement(1.0);
    }
}

impl Connections {
    pub(crate) fn new() -> Arc<Connections> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            per_client: Counts::new(),
        })
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a connection from `key`, or refuses it.
    fn admit(self: &Arc<Self>, key: &ClientKey, l: &LimitSettings) -> Result<ConnSlot, Refusal> {
        if self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < l.max_connections).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refusal::new(
                Limit::Connections,
                l.max_connections as u64,
                1,
                format!(
                    "the server has {} connections open, the most it takes",
                    l.max_connections
                ),
            ));
        }
        if !self.per_client.try_take(key, l.max_connections_per_client) {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::new(
                Limit::ConnectionsPerClient,
                l.max_connections_per_client as u64,
                1,
                format!(
                    "this client has {} connections open, the most allowed",
                    l.max_connections_per_client
                ),
            ));
        }
        metrics::gauge!("erlmcp_http_connections_open").increment(1.0);
        Ok(ConnSlot {
            conns: self.clone(),
            key: key.clone(),
        })
    }
}

/// Whether the listener can accept: the last `accept` failed for want of
/// a resource, since when, and why.
#[derive(Default)]
pub(crate) struct AcceptHealth {
    failing: Mutex<Option<(Instant, String)>>,
}

impl AcceptHealth {
    /// `None` while accepting; else why not.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(since, why)| format!("{why} (for {} s)", since.elapsed().as_secs()))
    }

    fn ok(&self) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, _)) = f.take() {
            tracing::warn!(
                after_secs = since.elapsed().as_secs(),
                "the MCP listener accepts connections again"
            );
            metrics::gauge!("erlmcp_http_listener_accepting").set(1.0);
        }
    }

    fn failed(&self, e: &io::Error) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %e, "the MCP listener cannot accept connections; /readyz reports not ready");
            metrics::gauge!("erlmcp_http_listener_accepting").set(0.0);
            *f = Some((Instant::now(), e.to_string()));
        }
    }

    fn is_failing(&self) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// The `error` label of `erlmcp_http_accept_errors_total`, for errors that
/// mean the process (or system) is out of something; `None` for errors
/// that concern one connection only (it was reset before we took it).
fn resource_error(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(libc::EMFILE) => Some("emfile"),
        Some(libc::ENFILE) => Some("enfile"),
        Some(libc::ENOBUFS) => Some("enobufs"),
        Some(libc::ENOMEM) => Some("enomem"),
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::EINTR
            | libc::EPROTO
            | libc::EPERM
            | libc::EAGAIN,
        ) => None,
        _ => Some("other"),
    }
}

/// While failing, how often to see whether a descriptor can be had again.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Serves `/mcp` on `listener` until `stop` fires; then stops accepting,
/// lets every connection finish its requests, and returns once all are
/// closed (the supervisor bounds the wait).
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    stop: CancellationToken,
) -> io::Result<()> {
    let router = super::router(state.clone());
    let connections = TaskTracker::new();
    metrics::gauge!("erlmcp_http_listener_accepting").set(1.0);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
            // Out of descriptors and nobody knocking: the listener can
            // accept again once one can be had.
            _ = tokio::time::sleep(PROBE_EVERY), if state.accept.is_failing() => {
                if listener.as_fd().try_clone_to_owned().is_ok() {
                    state.accept.ok();
                }
                continue;
            }
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                let Some(kind) = resource_error(&e) else {
                    continue;
                };
                metrics::counter!("erlmcp_http_accept_errors_total", "error" => kind).increment(1);
                state.accept.failed(&e);
                // The connection stays in the backlog; try again shortly.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        state.accept.ok();
        let settings = state.settings();
        let client = Client::new(peer);
        let slot = match state.connections.admit(&client.key, &settings.limits) {
            Ok(s) => s,
            Err(refusal) => {
                refuse(tcp, &refusal);
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let (router, conn, stop) = (router.clone(), settings.conn, stop.clone());
        let tls = state.tls.as_ref().map(|t| t.acceptor.clone());
        connections.spawn(async move {
            connection::serve(tcp, tls, client, router, conn, stop).await;
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Refusals whose connection is being closed politely at once; more are
/// closed at once without the courtesy.
static LINGERING: AtomicUsize = AtomicUsize::new(0);
const MAX_LINGERING: usize = 64;

/// Answers a refused connection and closes it. Closing a socket with unread
/// input makes the kernel send a reset, and most clients then report the
/// reset, not the answer: so, when few such closes are under way, the
/// answer is followed by a short read of what the client sent.
fn refuse(mut tcp: TcpStream, refusal: &Refusal) {
    let answer = refusal.http_bytes();
    let _ = tcp.try_write(&answer);
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    tokio::spawn(async move {
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut seen = 0;
            while let Ok(n) = tcp.read(&mut sink).await {
                seen += n;
                if n == 0 || seen > 64 * 1024 {
                    break;
                }
            }
        })
        .await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_reserve_and_stays_sane() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(65_536), 16_384);
        assert_eq!(default_max_connections(100), 16);
    }

    #[test]
    fn connections_are_capped_overall_and_per_client() {
        let l = LimitSettings {
            requests_per_sec: 0,
            request_burst: 0,
            max_connections: 3,
            max_connections_per_client: 2,
            max_requests_per_client: 1,
            max_requests_per_session: 1,
            max_sse_streams_per_client: 1,
            max_sse_streams_per_session: 1,
        };
        let c = Connections::new();
        let a = ClientKey::of_address("10.0.0.1".parse().unwrap());
        let b = ClientKey::of_address("10.0.0.2".parse().unwrap());
        let a1 = c.admit(&a, &l).unwrap();
        let _a2 = c.admit(&a, &l).unwrap();
        assert_eq!(
            c.admit(&a, &l).err().unwrap().limit,
            Limit::ConnectionsPerClient
        );
        let _b1 = c.admit(&b, &l).unwrap();
        assert_eq!(c.admit(&b, &l).err().unwrap().limit, Limit::Connections);
        drop(a1);
        assert_eq!(c.open(), 2);
        c.admit(&b, &l).unwrap();
    }

    #[test]
    fn resource_errors_are_told_from_per_connection_ones() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(resource_error(&e(libc::EMFILE)), Some("emfile"));
        assert_eq!(resource_error(&e(libc::ENFILE)), Some("enfile"));
        assert_eq!(resource_error(&e(libc::ECONNABORTED)), None);
    }
}
