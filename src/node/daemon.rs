//! `erlmcp serve` as a daemon systemd can trust: the supervision tree
//! ([`super::children`]), the sd_notify lifecycle (READY only once the
//! database is open, migrated and the listeners are bound; STOPPING and a
//! bounded drain when the shutdown future resolves).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::children::{self, Ctx};
use super::exits::Exits;
use super::maintenance::Housekeeping;
use super::{ConfigSource, NodeError};
use crate::backup::Backups;
use crate::config::Config;
use crate::fsx::{Flock, LockMode};
use crate::logging::LogControl;
use crate::ops::auth::OpsAuth;
use crate::ops::replication::{Secret, WsConnector};
use crate::ops::{self, OpsState};
use crate::replication::frame::Role;
use crate::replication::{Replication, RoleChange};
use crate::store::{Store, StoreError};
use crate::supervisor::systemd::{self, Activated};
use crate::supervisor::{Heartbeats, TreeStatus};
use crate::transport::http::tls::Tls;
use crate::transport::http::{HttpSettings, HttpState, listener};
use crate::upgrade::{self, Upgrade};

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, NodeError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| NodeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// One daemon per data directory: an exclusive `flock` held for the
/// process's life (`erlmcp stdio` clients take only the store's shared one).
fn daemon_lock(config: &Config) -> Result<Flock, NodeError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let path = dir.join(DAEMON_LOCK);
    match Flock::take(&path, LockMode::Exclusive, Duration::from_secs(2)) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(NodeError::AlreadyServed {
            path: dir.display().to_string(),
            lock: path.display().to_string(),
        }),
        Err(e) => Err(StoreError::DataDir {
            path: path.display().to_string(),
            source: e.source,
        }
        .into()),
    }
}

/// The lock file that makes a daemon the only one of its data directory.
const DAEMON_LOCK: &str = "erlmcp.daemon.lock";

/// Replication, when the configuration enables it: this node's role taken
/// in the store before the server core writes anything.
async fn replication(
    config: &Config,
    store: &Store,
) -> Result<(Option<Arc<Replication>>, Option<Secret>), NodeError> {
    if !config.replication.enabled {
        return Ok((None, None));
    }
    let path = config.replication.secret_path().ok_or_else(|| {
        NodeError::Secret(
            "replication needs a shared secret: replication.secret_file, or a \
                 `replication-secret` systemd credential (LoadCredential=)"
                .into(),
        )
    })?;
    let secret = Secret::load(&path).map_err(NodeError::Secret)?;
    let peer = config.replication.peer.clone().unwrap_or_default();
    let connector = Arc::new(WsConnector::new(&peer, secret.clone()));
    let repl = Replication::open(config, store.clone(), connector).await?;
    Ok((Some(repl), Some(secret)))
}

/// Runs the daemon until `shutdown` resolves (then drains and returns
/// `Ok`) or the supervision tree escalates (an error).
pub(crate) async fn run(
    source: ConfigSource,
    activated: Activated,
    log: LogControl,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let config = source.load()?;
    // Before anything is opened: a certificate that cannot serve is a
    // configuration error, not a listener that fails every handshake.
    let tls = Tls::from_config(&config.http.tls)?;
    // First, so that what the start-up sets (upgrade standing, replication
    // role, backup freshness) is recorded, not lost to a no-op recorder.
    let metrics = ops::metrics::install();
    // Before any listener or database file is opened: connections are
    // capped below this limit (see transport::http::listener).
    let fd_limit = match listener::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            let n = listener::fd_limit();
            tracing::info!(error = %e, limit = n, "cannot raise the open-file limit; keeping it");
            n
        }
    };
    // A database from a newer erlmcp it cannot take back is refused before
    // anything is created beside it.
    let plan = upgrade::plan(&config)?;
    let _one_daemon = daemon_lock(&config)?;
    let prepared = upgrade::prepare(&config, plan)?;
    let store = super::open_store(&config)?;
    let upgrade = Upgrade::start(&config, prepared)?;
    #[cfg(feature = "fault-injection")]
    if upgrade::fault::active("crash") {
        tracing::error!("fault injection: crashing after the migrations");
        std::process::exit(1);
    }
    let (replication, secret) = replication(&config, &store).await?;
    let server = super::server(&config, &store).await?;
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
        HttpSettings::from_config(&config.http, &config.limits, &config.auth, fd_limit),
        tls,
        root_stop.clone(),
    );
    tracing::info!(
        fd_limit,
        max_connections = http_state.settings().limits.max_connections,
        "open-file limit and connection cap"
    );
    match &replication {
        // A standby serves nothing until it is promoted.
        Some(r) if r.role() != Role::Primary => {
            let change = RoleChange {
                role: r.role(),
                epoch: r.epoch(),
            };
            super::role::apply(change, &server, &http_state).await;
        }
        _ => match http_state.restore_streams().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "server streams of earlier sessions restored"),
            // Not a reason to stay down (a primary whose standby is away
            // cannot write in block mode): clients re-open their streams.
            Err(e) => tracing::warn!(error = %e, "server streams of earlier sessions not restored"),
        },
    }
    let mut ops_auth = match &ops_listener {
        Some(l) => OpsAuth::new(
            l.local_addr()?,
            config.ops.require_auth,
            config.ops.open_reads,
        ),
        None => OpsAuth::new(
            config.ops.listen,
            config.ops.require_auth,
            config.ops.open_reads,
        ),
    };
    if ops_listener.is_some() {
        // For the command line on this host (see ops::auth); a daemon that
        // cannot write it still serves, the command line then needs a token.
        match ops_auth.write_local(&config.data_dir) {
            Ok(path) => tracing::debug!(path = %path.display(), "local ops credential written"),
            Err(e) => tracing::warn!(error = %e, "cannot write the local ops credential"),
        }
    }
    if ops_auth.required {
        tracing::info!("the ops listener asks for a token with scope ops for every change");
    }
    // Start-up is over (a failure before here has its own exit code): from
    // now on an end without a clean stop is counted.
    let exits = Arc::new(Exits::start(&config.data_dir));
    let backups = Backups::from_config(&config);
    let schedule = config
        .backup
        .enabled
        .then(|| crate::clock::Schedule::parse(&config.backup.schedule).ok())
        .flatten();
    crate::backup::metrics::init(&backups, schedule.as_ref());
    let ops_state = Arc::new(OpsState {
        server: server.clone(),
        http: http_state.clone(),
        backups,
        heartbeats: Heartbeats::new(),
        tree: TreeStatus::default(),
        started: Instant::now(),
        started_unix: crate::clock::now_secs(),
        ready: false.into(),
        metrics,
        mcp_addr,
        node: config.node_name.clone(),
        config_path: source.path.clone(),
        last_reload: std::sync::Mutex::new(None),
        replication: replication.clone(),
        secret,
        upgrade: Some(upgrade.clone()),
        auth: ops_auth,
    });
    let ctx = Arc::new(Ctx {
        server,
        store: store.clone(),
        http: http_state,
        ops: ops_state.clone(),
        source,
        config: std::sync::Mutex::new(config.clone()),
        files: watch::channel(config.toolsets.files.clone()).0,
        housekeeping: watch::channel(Housekeeping::from_config(&config)).0,
        log,
        replication,
        upgrade,
        exits: exits.clone(),
    });
    let root = children::tree(&ctx, &config, mcp, ops_listener).with_status(ops_state.tree.clone());
    let mut supervisor = tokio::spawn({
        let stop = root_stop.clone();
        async move { root.run(stop).await }
    });

    ops_state.ready.store(true, Ordering::Relaxed);
    systemd::ready(&ops::status::one_line(&ops::status::snapshot(&ops_state)));
    tracing::info!(mcp = %mcp_addr, ops = %config.ops.listen, data_dir = %config.data_dir.display(),
        toolsets = ?ctx.server.catalog().toolset_names(), "erlmcp ready");

    let outcome = tokio::select! {
        r = &mut supervisor => Some(r),
        _ = shutdown => None,
    };
    ops_state.ready.store(false, Ordering::Relaxed);
    let result = match outcome {
        None => {
            let drain = Duration::from_secs(config.shutdown.drain_timeout_secs);
            systemd::stopping();
            tracing::info!(drain = ?drain, "stopping: no new connections, draining requests");
            root_stop.cancel();
            let left = ctx.server.drain(drain).await;
            if left > 0 {
                tracing::warn!(
                    requests = left,
                    "drain deadline passed with requests still running"
                );
            }
            // The listeners finish writing the answers of the drained
            // requests as they stop; each child is bounded by its own
            // shutdown time.
            if tokio::time::timeout(drain + Duration::from_secs(5), &mut supervisor)
                .await
                .is_err()
            {
                tracing::warn!("the supervision tree did not stop in time");
            }
            Ok(())
        }
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(escalation))) => {
            systemd::status(&format!("failed: {escalation}"));
            tracing::error!(%escalation, "the supervision tree gave up");
            exits.escalated(&escalation.to_string());
            Err(escalation.into())
        }
        Some(Err(join)) => {
            exits.escalated(&format!("the root supervisor crashed: {join}"));
            Err(NodeError::Crashed(join.to_string()))
        }
    };
    if let Err(e) = store.checkpoint().await {
        tracing::warn!(error = %e, "final WAL checkpoint failed");
    }
    if result.is_ok() {
        exits.stopped_cleanly();
        tracing::info!("erlmcp stopped cleanly");
    }
    result
}
