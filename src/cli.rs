//! The command line. Flags override the configuration file, which
//! overrides defaults.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{self, AppError};
use crate::config::Config;
use crate::daemon::{self, ConfigSource};
use crate::exit;
use crate::logging;
use crate::ops;
use crate::supervisor::systemd;

#[derive(Parser, Debug)]
#[command(name = "erlmcp", version, about = "An MCP server built to be operated")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve MCP over Streamable HTTP (default 127.0.0.1:8080, path /mcp)
    /// as a supervised daemon (systemd notify, watchdog, reload on SIGHUP).
    Serve(ServeArgs),
    /// Serve one client over stdin/stdout (newline-delimited JSON-RPC).
    Stdio(CommonArgs),
    /// Validate a configuration file and print the effective settings.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Ask a running daemon how it is doing (through its ops listener).
    Status(StatusArgs),
    /// Backups: create, list, verify, prune (through the daemon's ops
    /// listener when one answers, else on the files).
    Backup(crate::backup::cli::BackupArgs),
    /// Restore the database from a backup (ID or `latest`), verified first.
    Restore(crate::backup::cli::RestoreArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Directory of the database (default: $STATE_DIRECTORY or ./erlmcp-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Enable a test fixture toolset.
    #[arg(long, value_enum)]
    pub fixture: Vec<Fixture>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address of the MCP HTTP listener.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address of the ops listener (health, readiness, metrics, status).
    #[arg(long)]
    pub ops_listen: Option<SocketAddr>,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The daemon's ops listener (default: from --config, else 127.0.0.1:9718).
    #[arg(long)]
    pub ops: Option<SocketAddr>,
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// The tools, resources and prompts the official conformance suite expects.
    Conformance,
}

impl CommonArgs {
    /// Applies these flags to a loaded configuration.
    pub fn apply(&self, c: &mut Config) {
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if self.fixture.contains(&Fixture::Conformance) {
            c.toolsets.conformance.enabled = true;
        }
    }

    pub fn config(&self) -> Result<Config, AppError> {
        let mut c = Config::load(self.config.as_deref())?;
        self.apply(&mut c);
        Ok(c)
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "erlmcp stopped");
            eprintln!("erlmcp: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), AppError> {
    match cli.command {
        Command::CheckConfig { file } => {
            let c = app::check_config(&file)?;
            println!("{}: valid", file.display());
            println!("{}", toml::to_string_pretty(&c).unwrap_or_default());
            Ok(())
        }
        Command::Serve(args) => serve(args),
        Command::Stdio(args) => {
            let config = args.config()?;
            logging::init(&config.log.level);
            runtime()?.block_on(app::run_stdio(&config))
        }
        Command::Status(args) => status(args),
        Command::Backup(args) => crate::backup::cli::backup(args),
        Command::Restore(args) => crate::backup::cli::restore(args),
    }
}

fn serve(args: ServeArgs) -> Result<(), AppError> {
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
    runtime()?.block_on(daemon::run(source, activated, log))
}

fn status(args: StatusArgs) -> Result<(), AppError> {
    let addr = match args.ops {
        Some(a) => a,
        None => Config::load(args.config.as_deref())?.ops.listen,
    };
    let value = ops::client::get(addr, "/status", Duration::from_secs(5))
        .map_err(|e| AppError::Unreachable(e.to_string()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let s: ops::status::Status = serde_json::from_value(value)
        .map_err(|e| AppError::Unreachable(format!("unexpected /status answer: {e}")))?;
    print!("{}", ops::status::human(&s));
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
