//! One accepted connection, served by hyper's HTTP/1 connection, with the
//! timeouts hyper leaves to its user:
//!
//! - **header**: a request head must arrive whole within
//!   `http.header_read_timeout_secs` of its first byte (and a new
//!   connection must send one that soon), so connections that send half a
//!   header and hold do not pile up;
//! - **idle**: a connection with no request in progress and no traffic for
//!   `http.idle_timeout_secs` is closed;
//! - **write**: a connection whose client reads nothing of a response for
//!   `http.write_timeout_secs` (its socket buffer full) is closed, so an
//!   SSE stream nobody reads cannot hold its queue forever.
//!
//! hyper's own `header_read_timeout` starts when a connection goes idle,
//! which would make it the idle timeout too; and a read timeout on the
//! socket would cut SSE streams, during which hyper keeps a read pending to
//! notice the client leaving. So the IO wrapper [`Watched`] notes when bytes
//! move and when a write blocks, the service notes when a request is in
//! progress (from its head until its response body ends), and the task
//! serving the connection wakes at the next deadline these imply. Request
//! bodies have their own deadline where they are read (`post`).

use axum::Router;
use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::limits::Client;

/// The per-connection settings, read when the connection is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnSettings {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_header_bytes: usize,
}

/// Why a connection was closed by a timeout (the `timeout` label of
/// `erlmcp_http_timeouts_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
    Write,
}

impl Expiry {
    fn name(self) -> &'static str {
        match self {
            Expiry::Header => "header",
            Expiry::Idle => "idle",
            Expiry::Write => "write",
        }
    }
}

/// What a connection is doing, as milliseconds since it was accepted
/// (0: not happening). Written by the IO wrapper and the service, read by
/// the task that serves the connection.
struct Activity {
    accepted: Instant,
    last_io: AtomicU64,
    /// A request head began (its first byte came, or the connection was
    /// accepted) and is not complete.
    head_since: AtomicU64,
    /// A write has been waiting for the client to read.
    write_blocked_since: AtomicU64,
    /// Requests whose response (body included) is not finished.
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            last_io: AtomicU64::new(1),
            // A new connection is waiting for its first head.
            head_since: AtomicU64::new(1),
            write_blocked_since: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    /// Now, in ms since accepted, never 0.
    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms - 1)
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0 {
            let _ = self
                .head_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
        self.write_blocked_since.store(0, Ordering::Relaxed);
    }

    fn write_blocked(&self) {
        let now = self.now();
        let _ =
            self.write_blocked_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A request head was parsed: the request is in progress until the
    /// returned guard (carried by its response body) drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// The earliest deadline now in force, and what expires then. A
    /// blocked write is not idleness: hyper may hold a whole response in
    /// its buffer after the body ended.
    fn next_deadline(&self, s: &ConnSettings) -> (Instant, Option<Expiry>) {
        let head = self.head_since.load(Ordering::Relaxed);
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        let idle = blocked == 0 && self.busy.load(Ordering::Relaxed) == 0;
        let candidates = [
            (head != 0).then(|| (self.at(head) + s.header_read_timeout, Expiry::Header)),
            (blocked != 0).then(|| (self.at(blocked) + s.write_timeout, Expiry::Write)),
            idle.then(|| {
                let last = self.last_io.load(Ordering::Relaxed);
                (self.at(last) + s.idle_timeout, Expiry::Idle)
            }),
        ];
        match candidates.into_iter().flatten().min_by_key(|(at, _)| *at) {
            Some((at, e)) => (at, Some(e)),
            // Busy and flowing: nothing expires; look again later.
            None => (Instant::now() + s.idle_timeout, None),
        }
    }
}

/// A request in progress.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        // The idle clock starts when the response ends.
        self.0.last_io.store(self.0.now(), Ordering::Relaxed);
    }
}

/// The socket, noting when bytes move and when a write blocks.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.activity.read(buf.filled().len() - before);
        }
        r
    }
}

impl Watched {
    fn note<T>(&self, r: &Poll<io::Result<T>>) {
        match r {
            Poll::Ready(Ok(_)) => self.activity.wrote(),
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in progress until it ends.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves one connection until it ends, a timeout closes it, or `stop`
/// fires (then in-flight requests finish and the connection closes). With
/// `tls`, the handshake comes first, within the header timeout (a new
/// connection's clock for its first request head is already running).
pub(super) async fn serve(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    client: Client,
    router: Router,
    settings: ConnSettings,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = Watched {
        tcp,
        activity: activity.clone(),
    };
    let Some(acceptor) = tls else {
        return drive(TokioIo::new(io), activity, client, router, settings, stop).await;
    };
    let peer = client.addr;
    let handshake = tokio::select! {
        r = tokio::time::timeout(settings.header_read_timeout, acceptor.accept(io)) => r,
        _ = stop.cancelled() => return,
    };
    match handshake {
        Ok(Ok(tls)) => drive(TokioIo::new(tls), activity, client, router, settings, stop).await,
        Ok(Err(e)) => {
            metrics::counter!("erlmcp_http_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("erlmcp_http_timeouts_total", "timeout" => Expiry::Header.name())
                .increment(1);
            tracing::debug!(%peer, "TLS handshake not finished within the header timeout");
        }
    }
}

/// Serves HTTP/1.1 on `io` (plain or TLS) until the connection ends.
async fn drive<I>(
    io: I,
    activity: Arc<Activity>,
    client: Client,
    router: Router,
    settings: ConnSettings,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = client.addr;
    let a = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = a.begin();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(client.clone());
        let mut router = router.clone();
        let response = tower_service::Service::call(&mut router, req);
        async move {
            let response = response
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(settings.max_header_bytes);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let (deadline, expiry) = activity.next_deadline(&settings);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                // Activity since the deadline was computed moves it on.
                let (now_deadline, now_expiry) = activity.next_deadline(&settings);
                if let Some(e) = expiry.filter(|_| now_expiry == expiry && now_deadline <= Instant::now()) {
                    metrics::counter!("erlmcp_http_timeouts_total", "timeout" => e.name()).increment(1);
                    tracing::debug!(%peer, timeout = e.name(), "connection closed by a timeout");
                    return;
                }
            }
        }
    }
}
