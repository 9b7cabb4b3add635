//! `erlmcp upgrade apply RELEASE | rollback | resume`: change the release a
//! systemd host runs, with automatic rollback (see `upgrade::apply`).

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use super::output;
use crate::config::Config;
use crate::ops::client::OpsClient;
use crate::ops::status::Status;
use crate::upgrade::apply::{self, Observed, Outcome, Releases, Systemd};
use crate::upgrade::record::State;

#[derive(Args, Debug)]
pub(super) struct UpgradeArgs {
    #[command(subcommand)]
    action: UpgradeAction,
    /// The service's configuration file (data directory, ops listener,
    /// `[upgrade]` settings).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum UpgradeAction {
    /// Switch to RELEASE (a directory in `upgrade.releases_dir`), restart,
    /// wait for it to be confirmed; roll back by itself when it is not.
    Apply {
        release: String,
        /// Seconds to wait for the confirmation (default: upgrade.deadline_secs).
        #[arg(long)]
        deadline: Option<u64>,
    },
    /// Go back to the release that ran before, now.
    Rollback,
    /// Finish an upgrade a crash interrupted (run at boot).
    Resume,
}

pub(super) fn run(args: UpgradeArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.as_deref())?;
    crate::logging::init(&config.log.level);
    let releases = Releases {
        dir: config.upgrade.releases_dir.clone(),
        current_link: config.upgrade.current_link.clone(),
    };
    let svc = Systemd {
        unit: config.upgrade.unit.clone(),
        config: args.config.clone(),
        observe: observer(&config),
    };
    let data = &config.data_dir;
    let out = match &args.action {
        UpgradeAction::Apply { release, deadline } => {
            let deadline = Duration::from_secs(deadline.unwrap_or(config.upgrade.deadline_secs));
            apply::apply(&releases, &svc, data, release, deadline).map(Some)
        }
        UpgradeAction::Rollback => apply::rollback_now(&releases, &svc, data).map(Some),
        UpgradeAction::Resume => apply::resume(&releases, &svc, data),
    };
    let out = out.map_err(|e| CliError::Other {
        message: e.to_string(),
        code: e.exit_code(),
    });
    match out {
        Ok(Some(o)) => {
            output::print(&o, args.json, print_outcome);
            match o {
                Outcome::Confirmed { .. } => Ok(()),
                // The service runs, but the upgrade did not happen.
                Outcome::RolledBack { reason, .. } => Err(CliError::Reported {
                    message: format!("rolled back: {reason}"),
                    code: crate::exit::FAILURE,
                }),
            }
        }
        Ok(None) => {
            if !args.json {
                println!("no upgrade in progress");
            }
            Ok(())
        }
        Err(e) => {
            output::print_failure(&e, args.json);
            Err(e)
        }
    }
}

/// Reads the daemon's release and standing from its ops listener.
fn observer(config: &Config) -> Box<dyn Fn() -> Option<Observed>> {
    let addr = config.ops.listen;
    let token = super::via::ops_token(None, &config.data_dir).ok().flatten();
    Box::new(move || {
        let client = OpsClient::new(addr, Some(Duration::from_secs(3))).with_token(token.clone());
        let s: Status = client.get("/status").ok()?;
        let u = s.upgrade?;
        let ready = client.get::<serde_json::Value>("/readyz").is_ok();
        Some(Observed {
            release: u.release,
            confirmed: matches!(u.state, State::Confirmed { .. } | State::RolledBack { .. }),
            ready,
        })
    })
}

fn print_outcome(o: &Outcome) {
    match o {
        Outcome::Confirmed {
            release,
            after_secs,
        } => {
            println!("{release} confirmed after {after_secs} s")
        }
        Outcome::RolledBack {
            release,
            from,
            reason,
            after_secs,
        } => println!("ROLLED BACK to {release} after {after_secs} s: {from}: {reason}"),
    }
}
