//! `erlmcp ready`: exit 0 when the local daemon is ready (`/readyz`), 1
//! otherwise; keepalived's `track_script`. A standby is ready only while
//! it may be promoted.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::config::Config;
use crate::exit;
use crate::ops::client::{ClientError, OpsClient};

#[derive(Args, Debug)]
pub(super) struct ReadyArgs {
    /// The daemon's ops listener (default: from --config, else 127.0.0.1:9718).
    #[arg(long)]
    ops: Option<SocketAddr>,
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub(super) fn run(args: ReadyArgs) -> Result<(), CliError> {
    let addr = match args.ops {
        Some(a) => a,
        None => Config::load(args.config.as_deref())?.ops.listen,
    };
    match OpsClient::new(addr, Some(Duration::from_secs(3))).get::<serde_json::Value>("/readyz") {
        Ok(_) => Ok(()),
        Err(ClientError::Unexpected { body, .. }) => Err(CliError::Other {
            message: format!("not ready: {body}"),
            code: exit::FAILURE,
        }),
        Err(e) => Err(CliError::Other {
            message: e.to_string(),
            code: exit::FAILURE,
        }),
    }
}
