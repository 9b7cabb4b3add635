//! A running erlmcp process: configuration in, a served store out.
//!
//! - [`daemon`]: `erlmcp serve`, a tree of supervised children
//!   ([`children`]) with the sd_notify lifecycle, until a shutdown future
//!   resolves;
//! - [`stdio`]: one client on stdin/stdout, as a small tree;
//! - [`reload`]: SIGHUP, the configuration applied whole or not at all;
//! - [`maintenance`]: housekeeping on the live configuration;
//! - [`exits`]: how the daemons of a data directory ended (watchdog, crash);
//! - [`signals`]: the shutdown future the command line passes in.

mod children;
pub(crate) mod daemon;
mod exits;
mod maintenance;
mod reload;
mod role;
pub(crate) mod signals;
pub(crate) mod stdio;

use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::exit;
use crate::mcp::notify::Hub;
use crate::mcp::server::{Server, Settings};
use crate::mcp::session::SessionLimits;
use crate::store::{Store, StoreError};
use crate::supervisor::Escalation;
use crate::toolsets::registry;

/// Why a node could not start or stopped abnormally.
#[derive(Debug, Error)]
pub(crate) enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Toolsets(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Escalated(#[from] Escalation),
    #[error("the root supervisor crashed: {0}")]
    Crashed(String),
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    #[error(transparent)]
    Upgrade(#[from] crate::upgrade::UpgradeError),
    #[error("{0}")]
    Secret(String),
    #[error(transparent)]
    Tls(#[from] crate::transport::http::tls::TlsError),
    #[error(
        "another erlmcp daemon serves {path} (lock {lock}); one daemon per data directory \
         (`erlmcp stdio` clients may share it)"
    )]
    AlreadyServed { path: String, lock: String },
}

impl NodeError {
    /// The exit code an operator (and systemd) sees.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            NodeError::Config(_) | NodeError::Toolsets(_) => exit::CONFIG,
            NodeError::Store(StoreError::SchemaTooNew { .. }) => exit::DATA_TOO_NEW,
            NodeError::Store(StoreError::DataDir { .. }) => exit::CANT_CREATE,
            NodeError::Store(StoreError::Locked { .. }) => exit::TEMP_FAIL,
            NodeError::Store(StoreError::Sqlite(_)) => exit::CANT_CREATE,
            NodeError::Store(_) => exit::FAILURE,
            NodeError::Bind { .. } => exit::UNAVAILABLE,
            NodeError::Io(_)
            | NodeError::Escalated(_)
            | NodeError::Crashed(_)
            | NodeError::Replication(_) => exit::FAILURE,
            NodeError::Secret(_) | NodeError::Tls(_) => exit::CONFIG,
            NodeError::Upgrade(e) => e.exit_code(),
            NodeError::AlreadyServed { .. } => exit::TEMP_FAIL,
        }
    }
}

/// How the configuration was obtained, so a reload can repeat it.
#[derive(Clone)]
pub(crate) struct ConfigSource {
    pub(crate) path: Option<PathBuf>,
    /// Applies the command-line flags on top of a freshly loaded file.
    pub(crate) overrides: Arc<dyn Fn(&mut Config) + Send + Sync>,
}

impl ConfigSource {
    pub(crate) fn load(&self) -> Result<Config, ConfigError> {
        let mut c = Config::load(self.path.as_deref())?;
        (self.overrides)(&mut c);
        c.validate().map_err(|message| ConfigError::Invalid {
            origin: "command line".into(),
            message,
        })?;
        Ok(c)
    }
}

/// Opens the store (creating and migrating it) in the data directory.
pub(crate) fn open_store(config: &Config) -> Result<Store, NodeError> {
    Ok(Store::open(&config.data_dir, &config.store)?)
}

/// The server core over an open store.
pub(crate) async fn server(config: &Config, store: &Store) -> Result<Arc<Server>, NodeError> {
    let hub = Hub::new();
    let catalog = registry::build(config, store, &hub).map_err(NodeError::Toolsets)?;
    let settings = Settings::from_config(&config.mcp, &config.tasks);
    let server = Server::new(store.clone(), catalog, settings, hub).await?;
    server
        .sessions
        .set_limits(SessionLimits::from_config(&config.limits));
    // Before serving: tasks an ended process left behind fail or run again,
    // so none is seen `working` with nobody running it. A standby leaves
    // that to the primary; a failure (a primary that cannot write yet) is
    // not a reason to stay down: housekeeping tries again.
    if !store.is_read_only()
        && let Err(e) = crate::mcp::tasks::recovery::take_over(&server).await
    {
        tracing::warn!(error = %e, "taking over the tasks of ended processes failed");
    }
    Ok(server)
}

/// A process beside the daemon (`erlmcp stdio`): the store, recording its
/// changes in the replication log when the node replicates (refusing them
/// on a standby), and the server core.
pub(crate) async fn build(config: &Config) -> Result<(Store, Arc<Server>), NodeError> {
    let store = open_beside(config).await?;
    let server = server(config, &store).await?;
    Ok((store, server))
}

/// The store of a process beside the daemon (`erlmcp stdio`, `erlmcp
/// token`): SQLite lets it write while the daemon does (WAL, busy
/// timeout); with replication on, its changes go into the replication log
/// for the daemon to ship, and are refused while this node is a standby.
pub(crate) async fn open_beside(config: &Config) -> Result<Store, NodeError> {
    let store = open_store(config)?;
    if config.replication.enabled {
        let unrecorded = store.read(crate::replication::tables::unrecorded).await?;
        store.set_commit_hook(Some(Box::new(crate::replication::capture::FileCapture {
            data_dir: config.data_dir.clone(),
            unrecorded: Arc::new(unrecorded),
        })));
    }
    Ok(store)
}
