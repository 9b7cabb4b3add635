//! The figures that are not a request loop: idle sessions (for RSS), startup
//! time to the first answer and to READY=1, and the memory toolset timings.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    http::{self, Conn},
    load::new_hist,
    rpc,
    stdio::StdioProc,
};

// ---------------------------------------------------------------- sessions

#[derive(Args)]
pub struct SessionsArgs {
    #[arg(long)]
    url: String,
    /// Sessions to open.
    #[arg(long)]
    count: u64,
    /// Connections opening them in parallel (each reused for many sessions).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct SessionsReport {
    opened: u64,
    errors: u64,
    seconds: f64,
    per_second: f64,
    stateful: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// Opens `count` sessions and leaves them open and idle (no DELETE).
pub async fn sessions(a: SessionsArgs) -> Result<(), String> {
    let target = http::Target::parse(&a.url)?;
    let left = Arc::new(AtomicU64::new(a.count));
    let t0 = Instant::now();
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (target, left) = (target.clone(), left.clone());
        joins.spawn(async move {
            let (mut opened, mut errors, mut stateful) = (0u64, 0u64, false);
            let mut first_error = None;
            let mut conn = match Conn::connect(target).await {
                Ok(c) => c,
                Err(e) => return (0, 1, false, Some(e.to_string())),
            };
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                .is_ok()
            {
                match conn.handshake().await {
                    Ok(sid) => {
                        opened += 1;
                        stateful |= sid.is_some();
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        if matches!(e, http::Error::Transport(_)) {
                            let _ = conn.reconnect().await;
                        }
                    }
                }
            }
            (opened, errors, stateful, first_error)
        });
    }
    let mut r = SessionsReport {
        opened: 0,
        errors: 0,
        seconds: 0.0,
        per_second: 0.0,
        stateful: false,
        first_error: None,
    };
    while let Some(j) = joins.join_next().await {
        let (o, e, s, f) = j.map_err(|e| e.to_string())?;
        r.opened += o;
        r.errors += e;
        r.stateful |= s;
        if r.first_error.is_none() {
            r.first_error = f;
        }
    }
    r.seconds = t0.elapsed().as_secs_f64();
    r.per_second = r.opened as f64 / r.seconds;
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap());
    } else {
        println!(
            "opened {} sessions in {:.2}s ({:.0}/s), errors {}, stateful {}",
            r.opened, r.seconds, r.per_second, r.errors, r.stateful
        );
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
        }
    }
    if r.errors > 0 {
        return Err(format!("{} sessions failed", r.errors));
    }
    Ok(())
}

// ---------------------------------------------------------------- wait

#[derive(Args)]
pub struct WaitArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// Polls with `GET URL` (no session is created) until any HTTP answer.
pub async fn wait(a: WaitArgs) -> Result<(), String> {
    let target = http::Target::parse(&a.url)?;
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < a.timeout {
        if let Ok(mut c) = Conn::connect(target.clone()).await {
            if c.probe().await.is_ok() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("{} did not answer within {}s", a.url, a.timeout))
}

// ---------------------------------------------------------------- startup

#[derive(Args)]
pub struct StartupArgs {
    /// The endpoint to POST initialize to until it answers 200.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also create a NOTIFY_SOCKET and time READY=1.
    #[arg(long)]
    notify: bool,
    /// Extra environment for the server, KEY=VALUE (repeatable).
    #[arg(long)]
    env: Vec<String>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    #[arg(long)]
    json: bool,
    /// The server command; `{run}` in any argument is replaced by the run number.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Serialize)]
struct StartupReport {
    runs: usize,
    http_ms: Vec<f64>,
    ready_ms: Vec<f64>,
    http_median_ms: f64,
    ready_median_ms: Option<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

pub async fn startup(a: StartupArgs) -> Result<(), String> {
    let target = http::Target::parse(&a.url)?;
    let mut http_ms = Vec::new();
    let mut ready_ms = Vec::new();
    for run in 0..a.runs {
        let argv: Vec<String> = a
            .cmd
            .iter()
            .map(|s| s.replace("{run}", &run.to_string()))
            .collect();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for kv in &a.env {
            let (k, v) = kv.split_once('=').ok_or("--env wants KEY=VALUE")?;
            cmd.env(k, v);
        }
        let sock_path = std::env::temp_dir().join(format!(
            "loadgen-notify-{}-{run}.sock",
            std::process::id()
        ));
        let notify = if a.notify {
            let _ = std::fs::remove_file(&sock_path);
            let s = tokio::net::UnixDatagram::bind(&sock_path).map_err(|e| e.to_string())?;
            cmd.env("NOTIFY_SOCKET", &sock_path);
            Some(s)
        } else {
            None
        };
        let deadline = Duration::from_secs_f64(a.timeout);
        let t0 = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", argv[0]))?;
        let ready = notify.map(|s| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = s.recv(&mut buf).await.ok()?;
                    let msg = &buf[..n];
                    if msg.split(|b| *b == b'\n').any(|l| l == b"READY=1") {
                        return Some(t0.elapsed());
                    }
                }
            })
        });
        let answered = loop {
            if t0.elapsed() > deadline {
                break None;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break None;
            }
            if let Ok(mut c) = Conn::connect(target.clone()).await {
                if let Ok(r) = c.post(rpc::initialize_body(1), None, Some(1)).await {
                    if r.ok {
                        break Some(t0.elapsed());
                    }
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        let ready_at = match ready {
            Some(j) => tokio::time::timeout(Duration::from_secs(5), j)
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten(),
            None => None,
        };
        // SIGTERM, then SIGKILL if it lingers.
        if let Some(pid) = child.id() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let _ = std::fs::remove_file(&sock_path);
        let Some(answered) = answered else {
            return Err(format!("run {run}: no successful initialize within {deadline:?}"));
        };
        http_ms.push(answered.as_secs_f64() * 1e3);
        if a.notify {
            match ready_at {
                Some(r) => ready_ms.push(r.as_secs_f64() * 1e3),
                None => eprintln!("run {run}: no READY=1 on NOTIFY_SOCKET"),
            }
        }
    }
    let r = StartupReport {
        runs: a.runs,
        http_median_ms: median(&http_ms),
        ready_median_ms: (!ready_ms.is_empty()).then(|| median(&ready_ms)),
        http_ms,
        ready_ms,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap());
    } else {
        println!(
            "startup over {} runs: first answer median {:.1} ms {:?}; READY=1 median {:?} ms",
            r.runs, r.http_median_ms, r.http_ms, r.ready_median_ms
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- memory

#[derive(Args)]
pub struct MemoryArgs {
    #[arg(long, conflicts_with = "url")]
    stdio_cmd: Option<String>,
    #[arg(long)]
    url: Option<String>,
    /// Entities in the graph at the end of the create phase.
    #[arg(long, default_value_t = 1000)]
    entities: u64,
    /// Entities per create_entities call.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// add_observations calls and search_nodes calls at full size.
    #[arg(long, default_value_t = 100)]
    ops: u64,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    server_stderr: Option<String>,
}

enum Client {
    Stdio(StdioProc),
    Http(Conn, Option<hyper::header::HeaderValue>),
}

impl Client {
    async fn call(&mut self, body: Bytes, id: u64) -> Result<bool, String> {
        match self {
            Client::Stdio(p) => p.call(&body, id).await,
            Client::Http(c, sid) => c
                .post(body, sid.as_ref(), Some(id))
                .await
                .map(|r| r.ok)
                .map_err(|e| e.to_string()),
        }
    }

    fn last(&self) -> String {
        match self {
            Client::Stdio(p) => String::from_utf8_lossy(p.last_line()).into_owned(),
            Client::Http(c, _) => String::from_utf8_lossy(c.last_body()).into_owned(),
        }
    }
}

#[derive(Serialize)]
struct Phase {
    calls: u64,
    errors: u64,
    seconds: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Mean of the last tenth of the calls (create: the writes at full size).
    tail_mean_ms: f64,
}

#[derive(Serialize)]
struct MemoryReport {
    entities: u64,
    batch: u64,
    create_entities: Phase,
    add_observations: Phase,
    search_nodes: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

struct PhaseRun {
    hist: Histogram<u64>,
    lat: Vec<u64>,
    errors: u64,
    t0: Instant,
}

impl PhaseRun {
    fn new() -> Self {
        Self {
            hist: new_hist(),
            lat: Vec::new(),
            errors: 0,
            t0: Instant::now(),
        }
    }
    fn finish(self) -> Phase {
        let n = self.lat.len() as u64;
        let tail = &self.lat[self.lat.len() - (self.lat.len() / 10).max(1).min(self.lat.len())..];
        let ms = |ns: f64| ns / 1e6;
        Phase {
            calls: n,
            errors: self.errors,
            seconds: self.t0.elapsed().as_secs_f64(),
            mean_ms: ms(self.hist.mean()),
            p50_ms: ms(self.hist.value_at_quantile(0.5) as f64),
            p99_ms: ms(self.hist.value_at_quantile(0.99) as f64),
            tail_mean_ms: if tail.is_empty() {
                0.0
            } else {
                ms(tail.iter().sum::<u64>() as f64 / tail.len() as f64)
            },
        }
    }
}

/// A small deterministic PRNG (xorshift) so every server gets the same ops.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn tool_call(id: u64, tool: &str, args: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    ))
}

pub async fn memory(a: MemoryArgs) -> Result<(), String> {
    let mut client = if let Some(cmd) = &a.stdio_cmd {
        let mut p = StdioProc::spawn(cmd, a.server_stderr.as_deref())
            .map_err(|e| format!("spawn {cmd}: {e}"))?;
        p.handshake().await?;
        Client::Stdio(p)
    } else if let Some(url) = &a.url {
        let mut c = Conn::connect(http::Target::parse(url)?)
            .await
            .map_err(|e| e.to_string())?;
        let sid = c.handshake().await.map_err(|e| e.to_string())?;
        Client::Http(c, sid)
    } else {
        return Err("give --stdio-cmd or --url".into());
    };
    let mut id = 1u64;
    let mut first_error: Option<String> = None;

    let batch = a.batch.max(1);
    let mut create = PhaseRun::new();
    let mut i = 0u64;
    while i < a.entities {
        let end = (i + batch).min(a.entities);
        let mut args = String::with_capacity(((end - i) * 80) as usize);
        args.push_str(r#"{"entities":["#);
        for k in i..end {
            if k > i {
                args.push(',');
            }
            args.push_str(&format!(
                r#"{{"name":"ent{k:06}","entityType":"bench","observations":["seed observation {k}"]}}"#
            ));
        }
        args.push_str("]}");
        id += 1;
        let t = Instant::now();
        let r = client.call(tool_call(id, "create_entities", &args), id).await;
        record(&mut create, r, t.elapsed().as_nanos() as u64, &client, &mut first_error);
        i = end;
    }
    let create = create.finish();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut add = PhaseRun::new();
    for k in 0..a.ops {
        let e = rng.below(a.entities.max(1));
        let args = format!(
            r#"{{"observations":[{{"entityName":"ent{e:06}","contents":["bench note {k}"]}}]}}"#
        );
        id += 1;
        let t = Instant::now();
        let r = client.call(tool_call(id, "add_observations", &args), id).await;
        record(&mut add, r, t.elapsed().as_nanos() as u64, &client, &mut first_error);
    }
    let add = add.finish();

    let mut search = PhaseRun::new();
    for _ in 0..a.ops {
        let e = rng.below(a.entities.max(1));
        let args = format!(r#"{{"query":"ent{e:06}"}}"#);
        id += 1;
        let t = Instant::now();
        let r = client.call(tool_call(id, "search_nodes", &args), id).await;
        record(&mut search, r, t.elapsed().as_nanos() as u64, &client, &mut first_error);
    }
    let search = search.finish();

    if let Client::Stdio(p) = client {
        p.shutdown().await;
    }
    let r = MemoryReport {
        entities: a.entities,
        batch,
        create_entities: create,
        add_observations: add,
        search_nodes: search,
        first_error,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap());
    } else {
        for (name, p) in [
            ("create_entities", &r.create_entities),
            ("add_observations", &r.add_observations),
            ("search_nodes", &r.search_nodes),
        ] {
            println!(
                "{name:17} {:6} calls {:8.2}s  mean {:8.3} ms  p50 {:8.3}  p99 {:8.3}  tail {:8.3}  errors {}",
                p.calls, p.seconds, p.mean_ms, p.p50_ms, p.p99_ms, p.tail_mean_ms, p.errors
            );
        }
        if let Some(e) = &r.first_error {
            println!("first error: {e}");
        }
    }
    let errors = r.create_entities.errors + r.add_observations.errors + r.search_nodes.errors;
    if errors > 0 {
        return Err(format!("{errors} memory calls failed"));
    }
    Ok(())
}

fn record(
    run: &mut PhaseRun,
    r: Result<bool, String>,
    ns: u64,
    client: &Client,
    first_error: &mut Option<String>,
) {
    let _ = run.hist.record(ns.max(1));
    run.lat.push(ns);
    match r {
        Ok(true) => {}
        Ok(false) => {
            run.errors += 1;
            first_error.get_or_insert_with(|| client.last());
        }
        Err(e) => {
            run.errors += 1;
            first_error.get_or_insert(e);
        }
    }
}
