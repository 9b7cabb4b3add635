//! `erlmcp status`: what the daemon says about itself, for a human or
//! (`--json`) a script.

use clap::Args;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::config::Config;
use crate::exit;
use crate::ops::client::{ClientError, OpsClient};
use crate::ops::status::{Status, human_bytes};

#[derive(Args, Debug)]
pub(super) struct StatusArgs {
    /// The daemon's ops listener (default: from --config, else 127.0.0.1:9718).
    #[arg(long)]
    ops: Option<SocketAddr>,
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: StatusArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.as_deref())?;
    let addr = args.ops.unwrap_or(config.ops.listen);
    // Reads are open unless `ops.open_reads = false`; a token found
    // without asking is presented all the same.
    let token = super::via::ops_token(None, &config.data_dir)?;
    let s: Status = match OpsClient::new(addr, Some(Duration::from_secs(5)))
        .with_token(token)
        .get("/status")
    {
        Ok(s) => s,
        // No daemon to ask is "unavailable", not "try again".
        Err(e @ ClientError::Unreachable { .. }) => {
            return Err(CliError::Other {
                message: e.to_string(),
                code: exit::UNAVAILABLE,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        let text = serde_json::to_string_pretty(&s).expect("a status serializes");
        println!("{text}");
    } else {
        print!("{}", human(&s));
    }
    Ok(())
}

fn human(s: &Status) -> String {
    let mut out = String::new();
    let ready = if s.ready { "ready" } else { "NOT READY" };
    let up = human_duration(s.uptime_secs);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "erlmcp {} on {} ({}), {ready}, up {up}",
        s.version, s.node, s.role
    );
    let _ = writeln!(
        out,
        "  MCP        {}://{}/mcp, {} connections, {} sessions ({} in memory), {} SSE streams, {} requests in flight",
        if s.mcp_tls { "https" } else { "http" },
        s.mcp_listen,
        s.connections,
        s.sessions_stored,
        s.sessions,
        s.sse_streams,
        s.requests_in_flight
    );
    let _ = writeln!(
        out,
        "  database   {}/erlmcp.db, {} (+{} WAL)",
        s.data_dir,
        human_bytes(s.database_bytes),
        human_bytes(s.wal_bytes)
    );
    if let Some(r) = &s.last_reload {
        let _ = writeln!(out, "  reload     {r}");
    }
    if let Some(b) = &s.last_backup {
        let _ = writeln!(out, "  backup     {b}");
    }
    if let Some(u) = &s.upgrade {
        upgrade(&mut out, u);
    }
    if let Some(r) = &s.replication {
        replication(&mut out, r);
    }
    let _ = writeln!(out, "  children   {}", children(s));
    out
}

fn upgrade(out: &mut String, u: &crate::upgrade::Status) {
    use crate::upgrade::record::State;
    let previous = u
        .previous
        .as_deref()
        .map(|p| format!(" (previous {p})"))
        .unwrap_or_default();
    let state = match &u.state {
        State::Probation { since } => {
            format!("on probation since {}", crate::clock::rfc3339(*since))
        }
        State::Confirmed { at } => format!("confirmed {}", crate::clock::rfc3339(*at)),
        State::RolledBack { from, reason, at } => {
            format!(
                "ROLLED BACK from {from} at {}: {reason}",
                crate::clock::rfc3339(*at)
            )
        }
    };
    let _ = writeln!(out, "  release    {}{previous}, {state}", u.release);
    if let Some(b) = &u.restore_point {
        let _ = writeln!(out, "  restore    point {b} (pinned until confirmed)");
    }
}

fn replication(out: &mut String, r: &crate::replication::Status) {
    let sync = if r.in_sync { "in sync" } else { "NOT in sync" };
    let _ = write!(
        out,
        "  replication {} at epoch {}, {} mode, log at {}, {sync}",
        r.role, r.epoch, r.mode, r.last_seq
    );
    match (&r.standby, r.primary_last_seq) {
        (Some(sb), _) => {
            let _ = write!(
                out,
                "; standby acked {} (lag {})",
                sb.acked_seq, r.lag_sequences
            );
        }
        (None, Some(p)) => {
            let _ = write!(
                out,
                "; primary at {p} (lag {}, {:.1} s)",
                r.lag_sequences, r.lag_seconds
            );
        }
        (None, None) if r.role == "primary" => out.push_str("; NO STANDBY"),
        (None, None) => {}
    }
    out.push('\n');
    if let Some(p) = &r.problem {
        let _ = writeln!(out, "  PROBLEM    {p}");
    }
    if let Some(p) = &r.peer {
        match (&p.node, &p.role, p.epoch, p.last_seq) {
            (Some(n), Some(role), Some(e), Some(seq)) => {
                let _ = writeln!(
                    out,
                    "  peer       {} ({n}): {role} at epoch {e}, log at {seq}",
                    p.address
                );
            }
            _ => {
                let _ = writeln!(out, "  peer       {}: unreachable", p.address);
            }
        }
    }
}

fn children(s: &Status) -> String {
    let restarted: Vec<String> = s
        .children
        .iter()
        .filter(|(_, c)| c.restarts > 0 || !c.running)
        .map(|(n, c)| {
            let stopped = if c.running { "" } else { ", STOPPED" };
            let last = c.last_exit.as_ref().map(|e| format!(", last: {e}"));
            format!(
                "{n} ({} restarts{stopped}{})",
                c.restarts,
                last.unwrap_or_default()
            )
        })
        .collect();
    if restarted.is_empty() {
        format!("{} running, none restarted", s.children.len())
    } else {
        restarted.join("; ")
    }
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}
