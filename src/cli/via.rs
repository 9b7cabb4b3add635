//! Where a backup or restore command runs: through the daemon that serves
//! this data directory (its ops listener), or directly on the files when
//! no daemon does.

use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CliError;
use crate::backup::Backups;
use crate::config::Config;
use crate::exit;
use crate::ops::client::OpsClient;
use crate::ops::status::Status;

/// Flags shared by the backup and restore commands (as `serve` takes them).
#[derive(Args, Debug, Clone)]
pub(super) struct Where {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short, global = true)]
    pub(super) config: Option<PathBuf>,
    /// Directory of the database (default: $STATE_DIRECTORY or ./erlmcp-data).
    #[arg(long, global = true)]
    pub(super) data_dir: Option<PathBuf>,
    /// The running daemon's ops listener; the command goes through it.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub(super) ops: Option<SocketAddr>,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// A file holding the token to present to the ops listener (else
    /// $ERLMCP_OPS_TOKEN, else the daemon's local credential).
    #[arg(long, global = true, value_name = "PATH")]
    pub(super) token_file: Option<PathBuf>,
}

pub(super) enum Via {
    /// A daemon's ops listener; backups may take minutes: no call timeout.
    Daemon(OpsClient),
    Files(Backups),
}

pub(super) fn via(at: &Where) -> Result<Via, CliError> {
    let mut c = Config::load(at.config.as_deref())?;
    if let Some(d) = &at.data_dir {
        c.data_dir = d.clone();
    }
    let _ = crate::logging::init(&c.log.level);
    if let Some(addr) = at.ops {
        // Named explicitly: trust it, unless it serves another directory
        // than an explicit --data-dir.
        if at.data_dir.is_some()
            && let Some(theirs) = daemon_data_dir(addr)
            && !same_dir(&theirs, &c.data_dir)
        {
            return Err(CliError::Other {
                message: format!(
                    "the daemon at {addr} serves {}, not {}",
                    theirs.display(),
                    c.data_dir.display()
                ),
                code: exit::USAGE,
            });
        }
        let token = ops_token(at.token_file.as_deref(), &c.data_dir)?;
        return Ok(Via::Daemon(OpsClient::new(addr, None).with_token(token)));
    }
    // Found through the configuration: only if it is the daemon of *this*
    // data directory (another one may own the default port).
    if c.ops.enabled
        && OpsClient::new(c.ops.listen, None).answers()
        && daemon_data_dir(c.ops.listen).is_some_and(|d| same_dir(&d, &c.data_dir))
    {
        let token = ops_token(at.token_file.as_deref(), &c.data_dir)?;
        return Ok(Via::Daemon(
            OpsClient::new(c.ops.listen, None).with_token(token),
        ));
    }
    Ok(Via::Files(Backups::from_config(&c)))
}

/// The environment variable holding an ops token (not a configuration key).
pub(super) const TOKEN_ENV: &str = "ERLMCP_OPS_TOKEN";

/// The token a command presents to the ops listener: the file `flag`
/// names, else `$ERLMCP_OPS_TOKEN`, else the local credential the daemon
/// of `data_dir` wrote (readable by its own user and root only), else none.
pub(super) fn ops_token(flag: Option<&Path>, data_dir: &Path) -> Result<Option<String>, CliError> {
    if let Some(path) = flag {
        let text = std::fs::read_to_string(path).map_err(|e| CliError::Other {
            message: format!("cannot read the token file {}: {e}", path.display()),
            code: exit::NO_INPUT,
        })?;
        return Ok(Some(text.trim().to_owned()));
    }
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_owned()));
    }
    let local = data_dir.join(crate::ops::auth::LOCAL_TOKEN_FILE);
    Ok(std::fs::read_to_string(local)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// The data directory the daemon at `addr` reports in `/status`.
fn daemon_data_dir(addr: SocketAddr) -> Option<PathBuf> {
    let s: Status = OpsClient::new(addr, Some(Duration::from_secs(5)))
        .get("/status")
        .ok()?;
    Some(PathBuf::from(s.data_dir))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
