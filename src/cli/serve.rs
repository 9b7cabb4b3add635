//! `erlmcp serve`: the daemon, until SIGTERM or SIGINT.

use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;

use super::CliError;
use super::common::CommonArgs;
use crate::config::Config;
use crate::logging;
use crate::node::{self, ConfigSource};
use crate::supervisor::systemd;

#[derive(Args, Debug, Clone)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the MCP HTTP listener.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the ops listener (health, readiness, metrics, status).
    #[arg(long)]
    ops_listen: Option<SocketAddr>,
}

pub(super) fn run(args: ServeArgs) -> Result<(), CliError> {
    // Sockets from systemd must be taken before any thread exists.
    // SAFETY: still single-threaded: no runtime, no logger thread yet.
    let activated = unsafe { systemd::take_listeners() }?;
    let a = args.clone();
    let source = ConfigSource {
        path: args.common.config.clone(),
        overrides: Arc::new(move |c: &mut Config| {
            a.common.apply(c);
            if let Some(l) = a.listen {
                c.http.listen = l;
            }
            if let Some(o) = a.ops_listen {
                c.ops.listen = o;
            }
        }),
    };
    let config = source.load()?;
    let log = logging::init(&config.log.level);
    let rt = super::runtime()?;
    let shutdown = {
        let _in = rt.enter();
        node::signals::terminated()
    };
    Ok(rt.block_on(node::daemon::run(source, activated, log, shutdown))?)
}
