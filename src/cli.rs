//! The command line: `erlmcp serve | stdio | check-config | backup | restore`.
//! Flags override the configuration file, which overrides defaults.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError};
use crate::config::Config;
use crate::exit;

#[derive(Parser, Debug)]
#[command(name = "erlmcp", version, about = "An MCP server built to be operated")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve MCP over Streamable HTTP (default 127.0.0.1:8080, path /mcp).
    Serve(ServeArgs),
    /// Serve one client over stdin/stdout (newline-delimited JSON-RPC).
    Stdio(CommonArgs),
    /// Validate a configuration file and print the effective settings.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
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
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// The tools, resources and prompts the official conformance suite expects.
    Conformance,
}

impl CommonArgs {
    /// The configuration with these flags applied on top.
    pub fn config(&self) -> Result<Config, AppError> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if self.fixture.contains(&Fixture::Conformance) {
            c.toolsets.conformance.enabled = true;
        }
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
        Command::Serve(args) => {
            let mut config = args.common.config()?;
            if let Some(l) = args.listen {
                config.http.listen = l;
            }
            init_logging(&config.log.level);
            runtime()?.block_on(serve(config))
        }
        Command::Backup(args) => crate::backup::cli::backup(args),
        Command::Restore(args) => crate::backup::cli::restore(args),
        Command::Stdio(args) => {
            let config = args.config()?;
            init_logging(&config.log.level);
            runtime()?.block_on(app::run_stdio(&config))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn serve(config: Config) -> Result<(), AppError> {
    let (store, server) = app::build(&config).await?;
    let listener = app::bind(config.http.listen).await?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    tokio::spawn(app::maintain(server.clone(), config.clone(), stop.clone()));
    if let Some(s) = crate::backup::scheduler::Scheduler::from_config(&config, &store) {
        tokio::spawn(s.run(stop.clone()));
    }
    tracing::info!(
        listen = %config.http.listen,
        data_dir = %config.data_dir.display(),
        toolsets = ?server.catalog().toolset_names(),
        "erlmcp serving MCP on http://{}/mcp",
        config.http.listen
    );
    app::serve_http(&config, server, listener, stop).await?;
    store.checkpoint().await?;
    tracing::info!("erlmcp stopped cleanly");
    Ok(())
}

async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    stop.cancel();
}

/// Logs go to stderr (never stdout: stdio mode owns it). `RUST_LOG` wins
/// over the configured level.
pub fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
