//! `erlmcp check-config FILE`: validate, then print the effective settings.

use clap::Args;
use std::path::PathBuf;

use super::CliError;
use crate::config::Config;

#[derive(Args, Debug)]
pub(super) struct CheckConfigArgs {
    /// The TOML file to check.
    file: PathBuf,
}

pub(super) fn run(args: CheckConfigArgs) -> Result<(), CliError> {
    let c = Config::load(Some(&args.file))?;
    println!("{}: valid", args.file.display());
    println!(
        "{}",
        toml::to_string_pretty(&c).expect("a loaded configuration serializes back to TOML")
    );
    Ok(())
}
