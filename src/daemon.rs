//! `erlmcp serve` as a daemon systemd can trust: the supervision tree, the
//! sd_notify lifecycle (READY only once the database is open, migrated and
//! the listeners are bound; RELOADING/READY on SIGHUP; STOPPING and a
//! bounded drain on SIGTERM), and configuration reload.
//!
//! The tree (root: one_for_one, intensity from `[supervisor]`):
//!
//! ```text
//! root
//!  ├─ store        writer heartbeat; restarts a dead writer thread   (permanent, critical)
//!  ├─ maintenance  session expiry, SSE event-log pruning             (permanent)
//!  ├─ file-watch   watchers of the files toolset's roots             (permanent)
//!  ├─ ops          /healthz /readyz /metrics /status, backup endpoints (permanent)
//!  ├─ backup       scheduled, verified backups + prune ([backup] enabled) (permanent)
//!  ├─ http         the MCP listener on /mcp                          (permanent)
//!  ├─ reload       SIGHUP → configuration reload                     (permanent)
//!  ├─ status       systemd STATUS= line                              (permanent)
//!  └─ watchdog     WATCHDOG=1 while every critical child beats        (permanent)
//! ```

use futures::FutureExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError};
use crate::config::{Config, FilesConfig};
use crate::logging::LogControl;
use crate::mcp::server::Server;
use crate::ops::{self, OpsState};
use crate::store::Store;
use crate::supervisor::systemd::{self, Activated};
use crate::supervisor::{
    ChildSpec, Heartbeats, Intensity, Restart, Strategy, Supervisor, TreeStatus, watchdog,
};
use crate::toolsets::registry;
use crate::transport::http::{self, HttpSettings, HttpState};

/// How the configuration was obtained, so a reload can repeat it.
#[derive(Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    /// Applies the command-line flags on top of a freshly loaded file.
    pub overrides: Arc<dyn Fn(&mut Config) + Send + Sync>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, AppError> {
        let mut c = Config::load(self.path.as_deref())?;
        (self.overrides)(&mut c);
        c.validate().map_err(|message| {
            AppError::Config(crate::config::ConfigError::Invalid {
                origin: "command line".into(),
                message,
            })
        })?;
        Ok(c)
    }
}

/// What the children share.
struct Ctx {
    server: Arc<Server>,
    store: Store,
    http: Arc<HttpState>,
    ops: Arc<OpsState>,
    beats: Heartbeats,
    source: ConfigSource,
    config: std::sync::Mutex<Config>,
    files: watch::Sender<FilesConfig>,
    log: LogControl,
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, AppError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| AppError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs the daemon until SIGTERM/SIGINT (exit 0) or escalation (error).
pub async fn run(
    source: ConfigSource,
    activated: Activated,
    log: LogControl,
) -> Result<(), AppError> {
    let config = source.load()?;
    let (store, server) = app::build(&config).await?;
    let mcp = match activated.mcp {
        Some(l) => l,
        None => bind(config.http.listen)?,
    };
    let mcp_addr = mcp.local_addr()?;
    let ops_listener = match (config.ops.enabled, activated.ops) {
        (_, Some(l)) => Some(l),
        (true, None) => Some(bind(config.ops.listen)?),
        (false, None) => None,
    };
    let root_stop = CancellationToken::new();
    let http_state = HttpState::new(
        server.clone(),
        HttpSettings::from_config(&config.http),
        root_stop.clone(),
    );
    let restored = http_state.restore_streams().await?;
    if restored > 0 {
        tracing::info!(
            sessions = restored,
            "server streams of earlier sessions restored"
        );
    }
    let tree = TreeStatus::default();
    let ops_state = Arc::new(OpsState {
        server: server.clone(),
        http: http_state.clone(),
        heartbeats: Heartbeats::new(),
        tree: tree.clone(),
        started: Instant::now(),
        started_unix: crate::store::now_secs(),
        ready: false.into(),
        metrics: ops::metrics::install(),
        mcp_addr,
        node: config.node_name.clone(),
        config_path: source.path.clone(),
        last_reload: std::sync::Mutex::new(None),
    });
    let (files_tx, _) = watch::channel(config.toolsets.files.clone());
    let ctx = Arc::new(Ctx {
        server,
        store: store.clone(),
        http: http_state,
        ops: ops_state.clone(),
        beats: ops_state.heartbeats.clone(),
        source,
        config: std::sync::Mutex::new(config.clone()),
        files: files_tx,
        log,
    });
    let root = tree_for(&ctx, &config, mcp, ops_listener).with_status(tree);
    let supervisor = tokio::spawn({
        let stop = root_stop.clone();
        async move { root.run(stop).await }
    });

    ops_state.ready.store(true, Ordering::Relaxed);
    let line = ops::status::one_line(&ops::status::snapshot(&ops_state));
    systemd::ready(&line);
    tracing::info!(mcp = %mcp_addr, ops = %config.ops.listen, data_dir = %config.data_dir.display(),
        toolsets = ?ctx.server.catalog().toolset_names(), "erlmcp ready");

    let outcome = tokio::select! {
        r = supervisor => Some(r),
        _ = terminated() => None,
    };
    ops_state.ready.store(false, Ordering::Relaxed);
    let drain = Duration::from_secs(config.shutdown.drain_timeout_secs);
    let result = match outcome {
        None => {
            systemd::stopping();
            tracing::info!(drain = ?drain, "stopping: no new connections, draining requests");
            root_stop.cancel();
            drain_in_flight(&ctx.server, drain).await;
            Ok(())
        }
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(escalation))) => {
            systemd::status(&format!("failed: {escalation}"));
            tracing::error!(%escalation, "the supervision tree gave up");
            Err(AppError::Escalated(escalation.to_string()))
        }
        Some(Err(join)) => Err(AppError::Escalated(format!(
            "root supervisor crashed: {join}"
        ))),
    };
    if let Err(e) = store.checkpoint().await {
        tracing::warn!(error = %e, "final WAL checkpoint failed");
    }
    if result.is_ok() {
        tracing::info!("erlmcp stopped cleanly");
    }
    result
}

/// Waits (bounded) for requests still running after the listeners stopped.
async fn drain_in_flight(server: &Server, deadline: Duration) {
    let until = Instant::now() + deadline;
    while server.in_flight() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = server.in_flight();
    if left > 0 {
        tracing::warn!(
            requests = left,
            "drain deadline passed with requests still running"
        );
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn tree_for(
    ctx: &Arc<Ctx>,
    config: &Config,
    mcp: std::net::TcpListener,
    ops_listener: Option<std::net::TcpListener>,
) -> Supervisor {
    let intensity = Intensity {
        max_restarts: config.supervisor.max_restarts,
        within: Duration::from_secs(config.supervisor.within_secs),
    };
    let drain = Duration::from_secs(config.shutdown.drain_timeout_secs) + Duration::from_secs(2);
    let mut root = Supervisor::new("root", Strategy::OneForOne, intensity)
        .child(store_child(ctx))
        .child(maintenance_child(ctx))
        .child(files_child(ctx));
    if let Some(l) = ops_listener {
        root = root.child(ops_child(ctx, l));
    }
    if let Some(s) = crate::backup::scheduler::Scheduler::from_config(config, &ctx.store) {
        root = root.child(backup_child(s));
    }
    root.child(http_child(ctx, mcp).shutdown(drain))
        .child(reload_child(ctx))
        .child(status_child(ctx))
        .child(watchdog_child(ctx))
}

/// Proves the writer commits (a no-op write every second) and brings a dead
/// writer thread back. A hung writer stops the beats, and the watchdog.
fn store_child(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("store", Restart::Permanent, move |stop| {
        let ctx = ctx.clone();
        async move {
            ctx.store.restart_writer().map_err(|e| e.to_string())?;
            loop {
                if !ctx.store.writer_alive() {
                    return Err("the store writer thread ended".into());
                }
                if ctx.store.ping_writer(Duration::from_secs(5)).await {
                    ctx.beats.beat("store");
                } else {
                    tracing::warn!("the store writer did not commit a ping within 5 s");
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(watchdog::beat_interval()) => {}
                }
            }
        }
        .boxed()
    })
}

fn maintenance_child(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("maintenance", Restart::Permanent, move |stop| {
        let (server, config) = (
            ctx.server.clone(),
            ctx.config.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        );
        async move {
            app::maintain(server, config, stop).await;
            Ok(())
        }
        .boxed()
    })
}

fn files_child(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("file-watch", Restart::Permanent, move |stop| {
        let (rx, hub) = (ctx.files.subscribe(), ctx.server.hub.clone());
        crate::toolsets::files::watch_roots(rx, hub, stop).boxed()
    })
}

/// Takes the scheduled backups; a failing backup is an alert (metrics,
/// log, STATUS=), never a reason for this child to exit.
fn backup_child(scheduler: crate::backup::scheduler::Scheduler) -> ChildSpec {
    ChildSpec::new("backup", Restart::Permanent, move |stop| {
        let s = scheduler.clone();
        async move {
            s.run(stop).await;
            Ok(())
        }
        .boxed()
    })
}

fn ops_child(ctx: &Arc<Ctx>, listener: std::net::TcpListener) -> ChildSpec {
    let ctx = ctx.clone();
    let listener = Arc::new(listener);
    ChildSpec::new("ops", Restart::Permanent, move |stop| {
        let backups = crate::backup::ops::BackupApi {
            backups: crate::backup::Backups::from_config(
                &ctx.config.lock().unwrap_or_else(|p| p.into_inner()),
            ),
            server: ctx.server.clone(),
        };
        let router = ops::router(ctx.ops.clone()).merge(crate::backup::ops::router(backups));
        let listener = listener.clone();
        async move {
            let l =
                tokio::net::TcpListener::from_std(listener.try_clone().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            axum::serve(l, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(|e| format!("ops listener: {e}"))
        }
        .boxed()
    })
}

fn http_child(ctx: &Arc<Ctx>, listener: std::net::TcpListener) -> ChildSpec {
    let ctx = ctx.clone();
    let listener = Arc::new(listener);
    ChildSpec::new("http", Restart::Permanent, move |stop| {
        let (state, listener) = (ctx.http.clone(), listener.clone());
        async move {
            let l =
                tokio::net::TcpListener::from_std(listener.try_clone().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            http::serve(l, http::router(state), stop)
                .await
                .map_err(|e| format!("MCP listener: {e}"))
        }
        .boxed()
    })
}

fn reload_child(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("reload", Restart::Permanent, move |stop| {
        let ctx = ctx.clone();
        async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = hup.recv() => reload(&ctx).await,
                }
            }
        }
        .boxed()
    })
}

/// SIGHUP: re-read the configuration; apply it whole or not at all.
async fn reload(ctx: &Ctx) {
    systemd::reloading();
    let outcome = try_reload(ctx);
    let at = crate::store::now_secs();
    let (line, result) = match &outcome {
        Ok(notes) => (format!("applied at {at}{notes}"), "ok"),
        Err(e) => (
            format!("REJECTED at {at}: {e}; the previous configuration stays"),
            "rejected",
        ),
    };
    match &outcome {
        Ok(_) => tracing::info!(result = %line, "configuration reloaded"),
        Err(_) => tracing::error!(result = %line, "configuration reload rejected"),
    }
    metrics::counter!("erlmcp_config_reloads_total", "outcome" => result).increment(1);
    *ctx.ops
        .last_reload
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(line.clone());
    let status = ops::status::one_line(&ops::status::snapshot(&ctx.ops));
    systemd::ready(&format!("{status}; reload {result}"));
}

fn try_reload(ctx: &Ctx) -> Result<String, String> {
    let new = ctx.source.load().map_err(|e| e.to_string())?;
    let mut current = ctx.config.lock().unwrap_or_else(|p| p.into_inner());
    let mut notes = String::new();
    let fixed = [
        ("http.listen", new.http.listen != current.http.listen),
        ("ops", new.ops != current.ops),
        ("data_dir", new.data_dir != current.data_dir),
        ("store", new.store != current.store),
    ];
    for (key, changed) in fixed {
        if changed {
            notes.push_str(&format!("; {key} changed but needs a restart (kept)"));
        }
    }
    let catalog = registry::build(&new, &ctx.store, &ctx.server.hub)?;
    ctx.log.set_level(&new.log.level)?;
    let mut http = new.http.clone();
    http.listen = current.http.listen;
    ctx.server.reload(catalog, app::mcp_settings(&new));
    ctx.http.reload(HttpSettings::from_config(&http));
    ctx.files.send_replace(new.toolsets.files.clone());
    let (listen, ops, data_dir, store) = (
        current.http.listen,
        current.ops.clone(),
        current.data_dir.clone(),
        current.store.clone(),
    );
    *current = new;
    current.http.listen = listen;
    current.ops = ops;
    current.data_dir = data_dir;
    current.store = store;
    Ok(notes)
}

fn status_child(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("status", Restart::Permanent, move |stop| {
        let ops = ctx.ops.clone();
        async move {
            let mut last = String::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                let line = ops::status::one_line(&ops::status::snapshot(&ops));
                if line != last {
                    systemd::status(&line);
                    last = line;
                }
            }
        }
        .boxed()
    })
}

fn watchdog_child(ctx: &Arc<Ctx>) -> ChildSpec {
    let beats = ctx.beats.clone();
    ChildSpec::new("watchdog", Restart::Permanent, move |stop| {
        watchdog::run(beats.clone(), stop).boxed()
    })
}
