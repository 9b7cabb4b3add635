//! `erlmcp check-config FILE`: validate, then print the effective settings.

use clap::Args;
use std::path::PathBuf;

use super::CliError;
use crate::config::Config;
use crate::exit;
use crate::transport::http::tls;

#[derive(Args, Debug)]
pub(super) struct CheckConfigArgs {
    /// The TOML file to check.
    file: PathBuf,
}

pub(super) fn run(args: CheckConfigArgs) -> Result<(), CliError> {
    let c = Config::load(Some(&args.file))?;
    // The files a start or reload would read, read the same way; relative
    // paths name systemd credentials, which a check outside the service
    // (the NixOS module's, at build time) does not have.
    let tls = match (c.http.tls.enabled, c.http.tls.files_reachable()) {
        (false, _) => None,
        (true, true) => {
            let loaded = tls::load(&c.http.tls).map_err(|e| CliError::Other {
                code: exit::CONFIG,
                message: format!("invalid config {}: {e}", args.file.display()),
            })?;
            Some(loaded.summary)
        }
        (true, false) => Some(
            "not read: its files are systemd credentials and $CREDENTIALS_DIRECTORY is not set \
             (the service reads them at start)"
                .to_owned(),
        ),
    };
    println!("{}: valid", args.file.display());
    if let Some(summary) = tls {
        println!("# TLS certificate: {summary}");
    }
    println!(
        "{}",
        toml::to_string_pretty(&c).expect("a loaded configuration serializes back to TOML")
    );
    Ok(())
}
