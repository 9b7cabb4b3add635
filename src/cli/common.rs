//! Flags `serve` and `stdio` share.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

use crate::config::{Config, ConfigError};

#[derive(Args, Debug, Clone)]
pub(super) struct CommonArgs {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short)]
    pub(super) config: Option<PathBuf>,
    /// Directory of the database (default: $STATE_DIRECTORY or ./erlmcp-data).
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
    /// Enable a test fixture toolset.
    #[arg(long, value_enum)]
    pub(super) fixture: Vec<Fixture>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fixture {
    /// The tools, resources and prompts the official conformance suite expects.
    Conformance,
}

impl CommonArgs {
    /// Applies these flags to a loaded configuration.
    pub(super) fn apply(&self, c: &mut Config) {
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if self.fixture.contains(&Fixture::Conformance) {
            c.toolsets.conformance.enabled = true;
        }
    }

    pub(super) fn config(&self) -> Result<Config, ConfigError> {
        let mut c = Config::load(self.config.as_deref())?;
        self.apply(&mut c);
        Ok(c)
    }
}
