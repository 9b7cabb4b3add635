//! `erlmcp audit [--since 1h] [--principal NAME] [--limit N] [--json]`:
//! the audit log, oldest first: tool calls (with the token that made
//! them), refusals of `/mcp` and the ops listener (401/403), ops changes,
//! backups and restores. Read from the data directory's database; the
//! daemon may be running (the last 20 ms of its rows may not be there yet).

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use super::output;
use crate::config::Config;
use crate::node;
use crate::store::audit::{self, AuditEntry, Query};

#[derive(Args, Debug)]
pub(super) struct AuditArgs {
    /// Only rows of the last DURATION (`15m`, `24h`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only rows of this principal (a token's name; `local` for the ops
    /// listener's local credential).
    #[arg(long)]
    principal: Option<String>,
    /// At most this many rows (the newest).
    #[arg(long, default_value_t = 1000)]
    limit: i64,
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Directory of the database (default: $STATE_DIRECTORY or ./erlmcp-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Machine-readable output (one JSON array on stdout).
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: AuditArgs) -> Result<(), CliError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    let q = Query {
        since_ms: args
            .since
            .map(|d| crate::clock::now_millis() - d.as_millis() as i64),
        principal: args.principal.clone(),
        limit: args.limit.max(1),
    };
    let rows = super::runtime()?.block_on(async {
        let store = node::open_beside(&config).await?;
        store
            .read(move |c| audit::query(c, &q))
            .await
            .map_err(node::NodeError::from)
    });
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            let e = CliError::from(e);
            output::print_failure(&e, args.json);
            return Err(e);
        }
    };
    output::print(&rows, args.json, |r| print_rows(r));
    Ok(())
}

fn print_rows(rows: &[AuditEntry]) {
    for r in rows {
        let mut line = format!(
            "{}  {:<12} {:<6} {:<28} {}",
            crate::clock::rfc3339_millis(r.at_ms),
            r.principal.as_deref().unwrap_or("-"),
            r.kind,
            r.subject,
            r.outcome
        );
        if let Some(s) = &r.scope {
            line.push_str("  scope ");
            line.push_str(s);
        }
        if let Some(d) = &r.detail {
            // Details of backups are whole manifests: a line shows a start.
            let d: String = d.chars().take(120).collect();
            line.push_str("  ");
            line.push_str(&d);
        }
        println!("{line}");
    }
}
