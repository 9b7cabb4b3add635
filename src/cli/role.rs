//! `erlmcp role primary|standby [--force]`: change this node's replication
//! role through the local daemon's ops listener. Idempotent; keepalived's
//! notify hooks call it. Promotion is refused when the standby may lack
//! acknowledged writes (exit 75), unless `--force`.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::config::Config;
use crate::ops::client::OpsClient;
use crate::ops::replication::{RoleAnswer, RoleRequest};

#[derive(Args, Debug)]
pub(super) struct RoleArgs {
    role: Role,
    /// Promote a standby even when it may lack acknowledged writes.
    #[arg(long)]
    force: bool,
    /// The daemon's ops listener (default: from --config, else 127.0.0.1:9718).
    #[arg(long)]
    ops: Option<SocketAddr>,
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A file holding the token to present (else $ERLMCP_OPS_TOKEN, else
    /// the daemon's local credential in its data directory).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Role {
    Primary,
    Standby,
}

pub(super) fn run(args: RoleArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.as_deref())?;
    let addr = args.ops.unwrap_or(config.ops.listen);
    let token = super::via::ops_token(args.token_file.as_deref(), &config.data_dir)?;
    let role = match args.role {
        Role::Primary => "primary",
        Role::Standby => "standby",
    };
    let req = RoleRequest {
        role: role.into(),
        force: args.force,
    };
    // A promotion is quick; a demotion waits for writes in flight.
    let a: RoleAnswer = OpsClient::new(addr, Some(Duration::from_secs(30)))
        .with_token(token)
        .post("/replication/role", &req)?;
    println!("{} at epoch {}", a.role, a.epoch);
    Ok(())
}
