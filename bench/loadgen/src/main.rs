//! `loadgen`: the erlmcp benchmark's load generator.
//!
//! ```text
//! loadgen --url http://127.0.0.1:PORT/mcp --method tools/call --tool test_simple_text \
//!         --concurrency 16 --duration 10 --warmup 2 [--json]
//! loadgen --stdio-cmd "erlmcp stdio --fixture conformance" --concurrency 16 --requests 100000
//! loadgen sessions --url URL --count 10000          # open idle sessions, exit
//! loadgen startup --url URL --runs 5 [--notify] -- CMD   # exec -> first /mcp answer, READY=1
//! loadgen memory --stdio-cmd CMD --entities 10000    # memory toolset timings
//! ```
//!
//! # Layout
//! * `rpc`    — pre-serialized request bodies, borrowing response classifier
//! * `http`   — one hyper HTTP/1.1 connection per session, handshake, SSE reader
//! * `stdio`  — spawn a server, newline-delimited JSON-RPC
//! * `load`   — the measured loops, HDR histograms, the report
//! * `extras` — idle sessions (RSS), startup time, memory toolset

mod extras;
mod http;
mod load;
mod rpc;
mod stdio;

use std::{sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", about = "MCP load generator (Streamable HTTP JSON/SSE, stdio)")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open COUNT sessions (initialize + notifications/initialized) and leave them idle.
    Sessions(extras::SessionsArgs),
    /// Time from exec to the first successful POST initialize on --url (and READY=1).
    Startup(extras::StartupArgs),
    /// Memory toolset timings: create_entities, add_observations, search_nodes.
    Memory(extras::MemoryArgs),
    /// Print a free TCP port on 127.0.0.1 (for scripts).
    Port,
    /// Wait until URL answers an HTTP request at all (any status; opens no session).
    Wait(extras::WaitArgs),
}

#[derive(Args)]
struct LoadArgs {
    /// Streamable HTTP endpoint, e.g. http://127.0.0.1:8080/mcp
    #[arg(long, conflicts_with = "stdio_cmd")]
    url: Option<String>,
    /// Server command for stdio mode (run by `sh -c "exec CMD"`).
    #[arg(long)]
    stdio_cmd: Option<String>,
    /// tools/call or tools/list
    #[arg(long, default_value = "tools/call")]
    method: String,
    #[arg(long, default_value = "test_simple_text")]
    tool: String,
    /// Tool arguments as raw JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// HTTP: sessions (one connection each); stdio: requests outstanding.
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    duration: Option<f64>,
    /// Measured request count.
    #[arg(long)]
    requests: Option<u64>,
    /// Warm-up seconds, not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Tokio worker threads of the load generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Append the stdio server's stderr to this file (default: discard).
    #[arg(long)]
    server_stderr: Option<String>,
    /// Seconds after which an unanswered request counts as an error.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Exit non-zero if any request failed or none completed (smoke tests).
    #[arg(long)]
    check: bool,
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime")
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Sessions(a)) => runtime(a.threads).block_on(extras::sessions(a)),
        Some(Cmd::Startup(a)) => runtime(1).block_on(extras::startup(a)),
        Some(Cmd::Memory(a)) => runtime(1).block_on(extras::memory(a)),
        Some(Cmd::Wait(a)) => runtime(1).block_on(extras::wait(a)),
        Some(Cmd::Port) => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| println!("{}", a.port()))
            .map_err(|e| e.to_string()),
        None => {
            let threads = cli.load.threads;
            runtime(threads).block_on(run_load(cli.load))
        }
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

async fn run_load(a: LoadArgs) -> Result<(), String> {
    let tpl = Arc::new(rpc::Template::for_method(&a.method, &a.tool, &a.args)?);
    let duration = match (a.duration, a.requests) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let warmup = Duration::from_secs_f64(a.warmup);
    let n = a.concurrency.max(1);

    let (transport, tally, ctl) = if let Some(url) = &a.url {
        let target = http::Target::parse(url)?;
        // Open every session before the clock starts.
        let mut opened = Vec::with_capacity(n);
        let mut joins = tokio::task::JoinSet::new();
        for _ in 0..n {
            let target = target.clone();
            let limit = Duration::from_secs_f64(a.timeout);
            joins.spawn(async move {
                tokio::time::timeout(limit, async move {
                    let mut c = http::Conn::connect(target).await?;
                    let sid = c.handshake().await?;
                    Ok::<_, http::Error>((c, sid))
                })
                .await
                .unwrap_or_else(|_| Err(http::Error::Transport("handshake timed out".into())))
            });
        }
        while let Some(j) = joins.join_next().await {
            let (c, sid) = j
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("session setup: {e}"))?;
            opened.push((c, sid));
        }
        let ctl = Arc::new(load::Control::new(warmup, duration, a.requests, Duration::from_secs_f64(a.timeout)));
        let mut workers = tokio::task::JoinSet::new();
        for (c, sid) in opened {
            workers.spawn(load::http_worker(c, sid, tpl.clone(), ctl.clone()));
        }
        let mut total = load::Tally::new();
        while let Some(t) = workers.join_next().await {
            total.merge(t.map_err(|e| e.to_string())?);
        }
        let label = if total.sse { "http-sse" } else { "http-json" };
        (label, total, ctl)
    } else if let Some(cmd) = &a.stdio_cmd {
        let mut p = stdio::StdioProc::spawn(cmd, a.server_stderr.as_deref())
            .map_err(|e| format!("spawn {cmd}: {e}"))?;
        tokio::time::timeout(Duration::from_secs_f64(a.timeout), p.handshake())
            .await
            .map_err(|_| "stdio handshake timed out".to_string())??;
        let ctl = Arc::new(load::Control::new(warmup, duration, a.requests, Duration::from_secs_f64(a.timeout)));
        let t = load::stdio_run(p, n, tpl, ctl.clone()).await;
        ("stdio", t, ctl)
    } else {
        return Err("give --url or --stdio-cmd (see --help)".into());
    };
    let report = load::Report::new(transport, &a.method, n, &tally, &ctl);
    if a.json {
        println!("{}", serde_json::to_string(&report).unwrap());
    } else {
        report.print_human();
    }
    if a.check && (report.errors > 0 || report.requests == 0) {
        return Err(format!(
            "check failed: {} requests, {} errors",
            report.requests, report.errors
        ));
    }
    Ok(())
}
