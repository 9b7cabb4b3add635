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
    let config = Config::load(args.config.as_deref())?;
    let addr = args.ops.unwrap_or(config.ops.listen);
    // Reads are open unless `ops.open_reads = false`; a token found
    // without asking is presented all the same.
    let token = super::via::ops_token(None, &config.data_dir)?;
    match OpsClient::new(addr, Some(Duration::from_secs(3)))
        .with_token(token)
        .get::<serde_json::Value>("/readyz")
    {
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
