//! The measured loop: N HTTP sessions each sending one request at a time, or
//! one stdio server with up to N requests outstanding. Requests started
//! during the warm-up are not recorded; the run ends after a fixed duration
//! or a fixed number of measured requests.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::{
    http::{self, Conn},
    rpc::{self, Class, Template},
    stdio::StdioProc,
};

/// When to stop, shared by every worker.
pub struct Control {
    /// A request unanswered this long is an error (HTTP: the connection is
    /// replaced; stdio: the run ends).
    pub timeout: Duration,
    pub measure_start: Instant,
    pub end: Option<Instant>,
    pub tickets: Option<AtomicI64>,
}

impl Control {
    pub fn new(
        warmup: Duration,
        duration: Option<Duration>,
        requests: Option<u64>,
        timeout: Duration,
    ) -> Self {
        let measure_start = Instant::now() + warmup;
        Self {
            timeout,
            measure_start,
            end: duration.map(|d| measure_start + d),
            tickets: requests.map(|n| AtomicI64::new(n as i64)),
        }
    }

    /// May a request starting at `now` be sent?
    #[inline]
    fn may_send(&self, now: Instant) -> bool {
        if now < self.measure_start {
            return true;
        }
        if let Some(end) = self.end {
            if now >= end {
                return false;
            }
        }
        match &self.tickets {
            Some(t) => t.fetch_sub(1, Ordering::Relaxed) > 0,
            None => true,
        }
    }
}

pub fn new_hist() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 10 min, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds")
}

/// What one worker measured.
pub struct Tally {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub last_done: Option<Instant>,
    pub first_error: Option<String>,
    /// Whether replies came as SSE streams (HTTP).
    pub sse: bool,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            hist: new_hist(),
            ok: 0,
            errors: 0,
            last_done: None,
            first_error: None,
            sse: false,
        }
    }

    #[inline]
    fn record(&mut self, sent: Instant, done: Instant, ok: bool, ctl: &Control) {
        if sent < ctl.measure_start {
            return;
        }
        let ns = done.duration_since(sent).as_nanos() as u64;
        let _ = self.hist.record(ns.clamp(1, 600_000_000_000));
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        self.last_done = Some(self.last_done.map_or(done, |l| l.max(done)));
    }

    fn error(&mut self, e: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(e());
        }
    }

    pub fn merge(&mut self, o: Tally) {
        self.hist.add(&o.hist).expect("same bounds");
        self.ok += o.ok;
        self.errors += o.errors;
        self.last_done = match (self.last_done, o.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.sse |= o.sse;
    }
}

/// One HTTP session's loop.
pub async fn http_worker(
    mut conn: Conn,
    session: Option<hyper::header::HeaderValue>,
    tpl: Arc<Template>,
    ctl: Arc<Control>,
) -> Tally {
    let mut t = Tally::new();
    let mut id: u64 = 1;
    loop {
        let sent = Instant::now();
        if !ctl.may_send(sent) {
            break;
        }
        id += 1;
        let res = match tokio::time::timeout(
            ctl.timeout,
            conn.post(tpl.body(id), session.as_ref(), Some(id)),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(http::Error::Transport(format!(
                "no complete response within {:?}",
                ctl.timeout
            ))),
        };
        let done = Instant::now();
        match res {
            Ok(r) => {
                t.sse |= conn.last_was_sse;
                if !r.ok && t.first_error.is_none() {
                    t.error(|| {
                        format!(
                            "error response: {}",
                            String::from_utf8_lossy(conn.last_body())
                        )
                    });
                }
                t.record(sent, done, r.ok, &ctl);
            }
            Err(e) => {
                t.record(sent, done, false, &ctl);
                let transport = matches!(e, http::Error::Transport(_));
                t.error(|| e.to_string());
                if transport {
                    // Reconnect (same MCP session); back off if that fails.
                    if conn.reconnect().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
    t
}

/// The stdio loop: up to `n` requests outstanding on one server process.
/// Request ids are `k * n + slot`, so a response's slot is `id % n`.
pub async fn stdio_run(proc_: StdioProc, n: usize, tpl: Arc<Template>, ctl: Arc<Control>) -> Tally {
    let StdioProc {
        mut child,
        mut w,
        mut r,
        mut line,
    } = proc_;
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();

    // Writer: sends a request on each freed slot, flushing once per batch.
    let writer = {
        let sent_at = sent_at.clone();
        let tpl = tpl.clone();
        tokio::spawn(async move {
            let mut k: u64 = 1;
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(slot) = rx.recv().await {
                let mut next = Some(slot);
                while let Some(slot) = next {
                    k += 1;
                    let id = k * n as u64 + slot as u64;
                    sent_at[slot].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    tpl.write(id, &mut buf);
                    buf.push(b'\n');
                    next = rx.try_recv().ok();
                }
                if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                    break;
                }
                buf.clear();
            }
            w
        })
    };

    let mut t = Tally::new();
    let mut live = 0usize;
    for slot in 0..n {
        if ctl.may_send(Instant::now()) {
            live += 1;
            let _ = tx.send(slot);
        }
    }
    while live > 0 {
        line.clear();
        match tokio::time::timeout(ctl.timeout, r.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                t.error(|| "server closed stdout".into());
                t.errors += live as u64;
                break;
            }
            Err(_) => {
                t.error(|| format!("no response within {:?}", ctl.timeout));
                t.errors += live as u64;
                break;
            }
            Ok(Ok(_)) => {}
        }
        let (id, ok) = match rpc::classify(&line) {
            Class::Response { id, ok } => (id, ok),
            Class::Other => continue,
            Class::Garbage => {
                t.error(|| format!("unparsable line: {}", String::from_utf8_lossy(&line)));
                continue;
            }
        };
        let done = Instant::now();
        let slot = (id % n as u64) as usize;
        let sent = base + Duration::from_nanos(sent_at[slot].load(Ordering::Relaxed));
        if !ok {
            t.error(|| format!("error response: {}", String::from_utf8_lossy(&line)));
        }
        t.record(sent, done, ok, &ctl);
        if ctl.may_send(done) {
            let _ = tx.send(slot);
        } else {
            live -= 1;
        }
    }
    drop(tx);
    if let Ok(mut w) = writer.await {
        let _ = w.shutdown().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), child.wait()).await;
    let _ = child.start_kill();
    t
}

#[derive(Serialize)]
pub struct Report {
    pub transport: String,
    pub method: String,
    pub concurrency: usize,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    pub fn new(transport: &str, method: &str, concurrency: usize, t: &Tally, ctl: &Control) -> Self {
        let seconds = t
            .last_done
            .map(|l| l.duration_since(ctl.measure_start).as_secs_f64())
            .unwrap_or(0.0);
        let n = t.ok + t.errors;
        let us = |q: f64| t.hist.value_at_quantile(q) as f64 / 1000.0;
        Self {
            transport: transport.into(),
            method: method.into(),
            concurrency,
            requests: n,
            ok: t.ok,
            errors: t.errors,
            seconds,
            rps: if seconds > 0.0 { n as f64 / seconds } else { 0.0 },
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            max_us: t.hist.max() as f64 / 1000.0,
            mean_us: t.hist.mean() / 1000.0,
            first_error: t.first_error.clone(),
        }
    }

    pub fn print_human(&self) {
        println!(
            "{} {} c={}: {} requests in {:.2}s = {:.0} req/s, errors {}",
            self.transport, self.method, self.concurrency, self.requests, self.seconds, self.rps, self.errors
        );
        println!(
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
            self.p50_us, self.p90_us, self.p99_us, self.max_us, self.mean_us
        );
        if let Some(e) = &self.first_error {
            println!("  first error: {e}");
        }
    }
}
