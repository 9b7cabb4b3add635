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
    let rt = super::runtime()?;
    // The trace exporter's batches run on the runtime: enter it first.
    let (log, traces, shutdown) = {
        let _in = rt.enter();
        let (log, traces) =
            logging::init_with_traces(&config.log.level, trace_settings(&config).as_ref())
                .map_err(|e| CliError::Other {
                    message: e.to_string(),
                    code: crate::exit::CONFIG,
                })?;
        (log, traces, node::signals::terminated())
    };
    let outcome = rt.block_on(node::daemon::run(source, activated, log, shutdown));
    // The runtime still runs the batch processor: the last spans go out.
    if let Some(t) = traces {
        t.shutdown();
    }
    Ok(outcome?)
}

/// `[tracing]`, when an endpoint is set.
fn trace_settings(c: &Config) -> Option<logging::traces::Settings> {
    let t = &c.tracing;
    Some(logging::traces::Settings {
        endpoint: t.otlp_endpoint.clone()?,
        service_name: t.service_name.clone(),
        instance: c.node_name.clone(),
        sampling_ratio: t.sampling_ratio,
    })
}
