//! The daemon's supervision tree (root: one_for_one, intensity from
//! `[supervisor]`):
//!
//! ```text
//! root
//!  ├─ store        writer heartbeat; restarts a dead writer thread   (permanent, critical)
//!  ├─ maintenance  session expiry, retention of audit log and SSE events (permanent)
//!  ├─ file-watch   watchers of the files toolset's roots             (permanent)
//!  ├─ ops          /healthz /readyz /metrics /status, backup endpoints (permanent)
//!  ├─ backup       scheduled, verified backups + prune ([backup] enabled) (permanent)
//!  ├─ replication  follow the primary / check the peer / prune the log ([replication] enabled)
//!  ├─ role         serve MCP as a primary, refuse it as a standby     (permanent)
//!  ├─ probation    confirms a new release once healthy long enough   (transient, while on probation)
//!  ├─ http         the MCP listener on /mcp                          (permanent)
//!  ├─ reload       SIGHUP → configuration reload                     (permanent)
//!  ├─ status       systemd STATUS= line                              (permanent)
//!  └─ watchdog     WATCHDOG=1 while every critical child beats        (permanent)
//! ```

use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::ConfigSource;
use super::maintenance::{self, Housekeeping};
use crate::backup::scheduler::Scheduler;
use crate::config::{Config, FilesConfig};
use crate::logging::LogControl;
use crate::mcp::server::Server;
use crate::ops::{self, OpsState};
use crate::replication::Replication;
use crate::store::Store;
use crate::supervisor::{ChildSpec, Intensity, Restart, Strategy, Supervisor, systemd, watchdog};
use crate::transport::http::{self, HttpState};
use crate::upgrade::Upgrade;

/// What the children share.
pub(super) struct Ctx {
    pub(super) server: Arc<Server>,
    pub(super) store: Store,
    pub(super) http: Arc<HttpState>,
    pub(super) ops: Arc<OpsState>,
    pub(super) source: ConfigSource,
    /// The configuration in force (what a reload compares against).
    pub(super) config: std::sync::Mutex<Config>,
    pub(super) files: watch::Sender<FilesConfig>,
    pub(super) housekeeping: watch::Sender<Housekeeping>,
    pub(super) log: LogControl,
    pub(super) replication: Option<Arc<Replication>>,
    pub(super) upgrade: Arc<Upgrade>,
    /// This daemon's entry in the record of exits.
    pub(super) exits: Arc<super::exits::Exits>,
}

pub(super) fn tree(
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
        .child(store(ctx))
        .child(maintenance(ctx))
        .child(file_watch(ctx));
    if let Some(l) = ops_listener {
        root = root.child(ops(ctx, l));
    }
    if let Some(s) = Scheduler::from_config(config, &ctx.store) {
        root = root.child(backup(s));
    }
    if let Some(r) = &ctx.replication {
        root = root
            .child(replication(r.clone()))
            .child(role(ctx, r.clone()));
    }
    if ctx.upgrade.on_probation() {
        let probation = Duration::from_secs(config.upgrade.probation_secs);
        root = root.child(probation_child(ctx, probation));
    }
    root.child(mcp_listener(ctx, mcp).shutdown(drain))
        .child(reload(ctx))
        .child(status(ctx))
        .child(watchdog(ctx))
}

/// Proves the writer commits (a no-op write every beat) and brings a dead
/// writer thread back. A hung writer stops the beats, and the watchdog.
fn store(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("store", Restart::Permanent, move |stop| {
        let ctx = ctx.clone();
        async move {
            ctx.store.restart_writer()?;
            loop {
                if !ctx.store.writer_alive() {
                    return Err("the store writer thread ended".into());
                }
                // A writer holding a commit for the standby's ack (bounded by
                // replication.ack_timeout_ms) waits on purpose; it is not hung.
                if ctx.store.ping_writer(Duration::from_secs(5)).await
                    || ctx.store.writer_waits_in_hook()
                {
                    ctx.ops.heartbeats.beat("store");
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

fn maintenance(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("maintenance", Restart::Permanent, move |stop| {
        let (server, http) = (ctx.server.clone(), ctx.http.clone());
        let settings = ctx.housekeeping.subscribe();
        async move {
            maintenance::run(server, http, settings, stop).await;
            Ok(())
        }
        .boxed()
    })
}

fn file_watch(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("file-watch", Restart::Permanent, move |stop| {
        let (rx, hub) = (ctx.files.subscribe(), ctx.server.hub.clone());
        crate::toolsets::files::watch_roots(rx, hub, stop).boxed()
    })
}

/// Takes the scheduled backups; a failing backup is an alert (metrics,
/// log, STATUS=), never a reason for this child to exit.
fn backup(scheduler: Scheduler) -> ChildSpec {
    ChildSpec::new("backup", Restart::Permanent, move |stop| {
        let s = scheduler.clone();
        async move {
            s.run(stop).await;
            Ok(())
        }
        .boxed()
    })
}

fn ops(ctx: &Arc<Ctx>, listener: std::net::TcpListener) -> ChildSpec {
    let ctx = ctx.clone();
    let listener = Arc::new(listener);
    ChildSpec::new("ops", Restart::Permanent, move |stop| {
        let (state, listener) = (ctx.ops.clone(), listener.clone());
        async move {
            let l = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
            ops::serve(l, state, stop).await?;
            Ok(())
        }
        .boxed()
    })
}

/// Follows the primary while a standby, asks the peer who it is, prunes
/// the replication log.
fn replication(repl: Arc<Replication>) -> ChildSpec {
    ChildSpec::new("replication", Restart::Permanent, move |stop| {
        let repl = repl.clone();
        async move {
            repl.run(stop).await;
            Ok(())
        }
        .boxed()
    })
}

/// Confirms a new release once it has been ready and healthy long enough.
fn probation_child(ctx: &Arc<Ctx>, probation: Duration) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("probation", Restart::Transient, move |stop| {
        let (upgrade, ops) = (ctx.upgrade.clone(), ctx.ops.clone());
        async move {
            let healthy =
                move || ops::health::ready_now(&ops) && ops.heartbeats.stale(STALE).is_empty();
            crate::upgrade::probation::run(upgrade, healthy, probation, stop).await;
            Ok(())
        }
        .boxed()
    })
}

/// A heartbeat older than this is not healthy (the critical children beat
/// every second at most).
const STALE: Duration = Duration::from_secs(5);

/// Serves MCP as a primary, refuses it as a standby.
fn role(ctx: &Arc<Ctx>, repl: Arc<Replication>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("role", Restart::Permanent, move |stop| {
        let (repl, server, http) = (repl.clone(), ctx.server.clone(), ctx.http.clone());
        async move {
            super::role::follow(repl, server, http, stop).await;
            Ok(())
        }
        .boxed()
    })
}

fn mcp_listener(ctx: &Arc<Ctx>, listener: std::net::TcpListener) -> ChildSpec {
    let ctx = ctx.clone();
    let listener = Arc::new(listener);
    ChildSpec::new("http", Restart::Permanent, move |stop| {
        let (state, listener) = (ctx.http.clone(), listener.clone());
        async move {
            let l = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
            http::serve(l, state, stop).await?;
            Ok(())
        }
        .boxed()
    })
}

fn reload(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("reload", Restart::Permanent, move |stop| {
        let ctx = ctx.clone();
        async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = signal(SignalKind::hangup())?;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = hup.recv() => super::reload::reload(&ctx).await,
                }
            }
        }
        .boxed()
    })
}

fn status(ctx: &Arc<Ctx>) -> ChildSpec {
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

fn watchdog(ctx: &Arc<Ctx>) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new("watchdog", Restart::Permanent, move |stop| {
        let (beats, ctx) = (ctx.ops.heartbeats.clone(), ctx.clone());
        watchdog::run(beats, move |w| ctx.exits.watchdog_withheld(w), stop).boxed()
    })
}
