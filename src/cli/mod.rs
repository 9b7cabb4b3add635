//! The command line: one module per subcommand, the only layer that prints
//! for humans. Flags override the configuration file, which overrides
//! defaults. Errors are reported once, here, with the exit code of
//! `docs/operations/exit-codes.md`.

mod audit;
mod backup;
mod check_config;
mod common;
mod diagnose;
mod output;
mod ready;
mod restore;
mod role;
mod serve;
mod status;
mod stdio;
mod token;
mod upgrade;
mod via;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use thiserror::Error;

use crate::backup::BackupError;
use crate::config::ConfigError;
use crate::exit;
use crate::node::NodeError;
use crate::ops::client::ClientError;

#[derive(Parser, Debug)]
#[command(
    name = "erlmcp",
    version = crate::release::VERSION,
    about = "An MCP server built to be operated"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve MCP over Streamable HTTP (default 127.0.0.1:8080, path /mcp)
    /// as a supervised daemon (systemd notify, watchdog, reload on SIGHUP).
    Serve(serve::ServeArgs),
    /// Serve one client over stdin/stdout (newline-delimited JSON-RPC).
    Stdio(common::CommonArgs),
    /// Validate a configuration file and print the effective settings.
    CheckConfig(check_config::CheckConfigArgs),
    /// Ask a running daemon how it is doing (through its ops listener).
    Status(status::StatusArgs),
    /// Backups: create, list, verify, prune (through the daemon's ops
    /// listener when one answers, else on the files).
    Backup(backup::BackupArgs),
    /// Restore the database from a backup (ID or `latest`), verified first.
    Restore(restore::RestoreArgs),
    /// Make this node the replication primary or a standby (what
    /// keepalived's notify hooks call).
    Role(role::RoleArgs),
    /// Exit 0 when the local daemon is ready (keepalived's track_script).
    Ready(ready::ReadyArgs),
    /// Switch releases with automatic rollback (hosts with a releases
    /// directory and a `current` link).
    Upgrade(upgrade::UpgradeArgs),
    /// Static API tokens for `auth.mode = "tokens"` and the ops listener:
    /// create (the secret is shown once), list, revoke.
    Token(token::TokenArgs),
    /// Read the audit log: tool calls, refusals, ops changes, with who
    /// made them.
    Audit(audit::AuditArgs),
    /// Write a support bundle (version, status, metrics, configuration,
    /// journal, database check, backups) to attach to a ticket; credential
    /// values are redacted.
    Diagnose(diagnose::DiagnoseArgs),
}

/// Why a command failed; each knows its exit code.
#[derive(Debug, Error)]
enum CliError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Ops(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{message}")]
    Other { message: String, code: u8 },
    /// A failure the command's own output already shows (`--json` too).
    #[error("{message}")]
    Reported { message: String, code: u8 },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Node(e) => e.exit_code(),
            CliError::Config(_) => exit::CONFIG,
            CliError::Backup(e) => e.exit_code(),
            CliError::Ops(e) => e.exit_code(),
            CliError::Io(_) => exit::FAILURE,
            CliError::Other { code, .. } | CliError::Reported { code, .. } => *code,
        }
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
    let out = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Stdio(args) => stdio::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Status(args) => status::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Role(args) => role::run(args),
        Command::Ready(args) => ready::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Token(args) => token::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Diagnose(args) => diagnose::run(args),
    };
    match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "erlmcp stopped");
            eprintln!("erlmcp: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
