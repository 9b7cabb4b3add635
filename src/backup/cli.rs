//! `erlmcp backup create | list | verify [ID] | prune` and `erlmcp restore
//! ID|latest [--dry-run]`: human or `--json` output, through the daemon's
//! ops listener when one answers (`--ops ADDR:PORT`, or the config's), else
//! directly on the files.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::restore::{self, Target};
use super::{BackupError, Backups, catalog, ops_client, retention, snapshot, verify};
use crate::app::AppError;
use crate::config::Config;

/// Flags shared by the backup and restore commands (as `serve` takes them).
#[derive(Args, Debug, Clone)]
pub struct Where {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Directory of the database (default: $STATE_DIRECTORY or ./erlmcp-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The running daemon's ops listener; the command goes through it.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub ops: Option<SocketAddr>,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub action: BackupAction,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Take a backup now (verified before it counts).
    Create,
    /// List backups, newest first, with their status.
    List,
    /// Verify one backup, or all: checksum, decompress, integrity_check.
    Verify {
        /// The backup id; all backups when omitted.
        id: Option<String>,
    },
    /// Apply the retention policy (and remove leftovers of crashed runs).
    Prune {
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A backup id, or `latest` (the newest good one).
    pub target: String,
    /// Verify and report, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub at: Where,
}

/// Where a command runs.
enum Via {
    Daemon(SocketAddr),
    Files(Backups),
}

fn via(at: &Where) -> Result<(Via, Config), AppError> {
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
            return Err(AppError::Reported {
                message: format!(
                    "the daemon at {addr} serves {}, not {}",
                    theirs.display(),
                    c.data_dir.display()
                ),
                code: crate::exit::USAGE,
            });
        }
        return Ok((Via::Daemon(addr), c));
    }
    // Found through the configuration: only if it is the daemon of *this*
    // data directory (another one may own the default port).
    if let Some(addr) = configured_ops(&c)
        && ops_client::answers(addr)
        && daemon_data_dir(addr).is_some_and(|d| same_dir(&d, &c.data_dir))
    {
        return Ok((Via::Daemon(addr), c));
    }
    Ok((Via::Files(Backups::from_config(&c)), c))
}

/// The ops listener named by the configuration, if it has one.
fn configured_ops(c: &Config) -> Option<SocketAddr> {
    c.ops.enabled.then_some(c.ops.listen)
}

/// The data directory the daemon at `addr` reports in `/status`.
fn daemon_data_dir(addr: SocketAddr) -> Option<PathBuf> {
    match ops_client::call(addr, "GET", "/status", None) {
        Ok((200, v)) => v["data_dir"].as_str().map(PathBuf::from),
        _ => None,
    }
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

pub fn backup(args: BackupArgs) -> Result<(), AppError> {
    let (via, _) = via(&args.at)?;
    let out = match via {
        Via::Files(b) => offline_backup(&b, &args.action).map_err(Failed::from),
        Via::Daemon(addr) => {
            let (method, path, body) = match &args.action {
                BackupAction::Create => ("POST", "/backup".to_owned(), None),
                BackupAction::List => ("GET", "/backups".to_owned(), None),
                BackupAction::Verify { id: Some(id) } => {
                    ("POST", format!("/backups/{id}/verify"), None)
                }
                BackupAction::Verify { id: None } => ("POST", "/backups/verify".to_owned(), None),
                BackupAction::Prune { dry_run } => (
                    "POST",
                    "/backup/prune".to_owned(),
                    Some(json!({ "dry_run": dry_run })),
                ),
            };
            remote(addr, method, &path, body.as_ref())
        }
    };
    finish(out, args.at.json, |v| print_backup(&args.action, v))
}

pub fn restore(args: RestoreArgs) -> Result<(), AppError> {
    let (via, _) = via(&args.at)?;
    let target = Target::parse(&args.target);
    let out = match via {
        Via::Files(b) => restore::restore_offline(&b, &target, args.dry_run)
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .map_err(Failed::from),
        Via::Daemon(addr) => remote(
            addr,
            "POST",
            "/restore",
            Some(&json!({ "id": args.target, "dry_run": args.dry_run })),
        ),
    };
    finish(out, args.at.json, print_restore)
}

/// Runs a backup action on the files; the JSON is what the ops endpoint
/// answers too.
pub fn offline_backup(b: &Backups, action: &BackupAction) -> Result<Value, BackupError> {
    let v = match action {
        BackupAction::Create => to_json(snapshot::create(b)?),
        BackupAction::List => to_json(catalog::list(b)?),
        BackupAction::Verify { id } => to_json(verify::verify(b, id.as_deref())?),
        BackupAction::Prune { dry_run } => to_json(retention::prune(b, *dry_run)?),
    };
    Ok(v)
}

fn to_json<T: serde::Serialize>(t: T) -> Value {
    serde_json::to_value(t).unwrap_or_default()
}

/// A failed command: message and exit code, wherever it ran.
pub struct Failed {
    pub message: String,
    pub code: u8,
}

impl From<BackupError> for Failed {
    fn from(e: BackupError) -> Failed {
        Failed {
            message: e.to_string(),
            code: e.exit_code(),
        }
    }
}

/// The JSON body of a failed ops call / `--json` error.
pub fn error_json(message: &str, code: u8) -> Value {
    json!({ "error": message, "exit_code": code })
}

fn remote(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Failed> {
    match ops_client::call(addr, method, path, body) {
        Ok((200, v)) => Ok(v),
        Ok((status, v)) => Err(Failed {
            message: v["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the daemon answered {status}: {v}")),
            code: v["exit_code"]
                .as_u64()
                .map(|c| c as u8)
                .unwrap_or(crate::exit::FAILURE),
        }),
        Err(e) => Err(Failed {
            message: format!("cannot reach the daemon's ops listener at {addr}: {e}"),
            code: crate::exit::TEMP_FAIL,
        }),
    }
}

fn finish(out: Result<Value, Failed>, json: bool, human: impl Fn(&Value)) -> Result<(), AppError> {
    match out {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                human(&v);
            }
            // `verify` reports every backup; one that failed fails the command.
            if let Some(bad) = failed_reports(&v) {
                return Err(AppError::Reported {
                    message: bad,
                    code: crate::exit::DATA_ERROR,
                });
            }
            Ok(())
        }
        Err(f) => {
            if json {
                println!("{}", error_json(&f.message, f.code));
            }
            Err(AppError::Reported {
                message: f.message,
                code: f.code,
            })
        }
    }
}

fn failed_reports(v: &Value) -> Option<String> {
    let bad: Vec<String> = v
        .as_array()?
        .iter()
        .filter(|r| r["ok"] == Value::Bool(false))
        .map(|r| {
            format!(
                "{}: {}",
                r["id"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    (!bad.is_empty()).then(|| format!("verification failed: {}", bad.join("; ")))
}

fn mib(v: &Value) -> String {
    format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0))
}

fn print_backup(action: &BackupAction, v: &Value) {
    match action {
        BackupAction::Create => {
            let m = &v["manifest"];
            println!(
                "backup {} taken and verified: {} ({} uncompressed), schema {}, {} ms",
                m["id"].as_str().unwrap_or("?"),
                mib(&m["compressed_bytes"]),
                mib(&m["uncompressed_bytes"]),
                m["schema_version"],
                m["duration_ms"].as_u64().unwrap_or(0) + v["verify_ms"].as_u64().unwrap_or(0),
            );
        }
        BackupAction::List => print_list(v),
        BackupAction::Verify { .. } => {
            for r in v.as_array().into_iter().flatten() {
                if r["ok"] == Value::Bool(true) {
                    println!(
                        "{}  ok  schema {}  {} ms",
                        r["id"].as_str().unwrap_or("?"),
                        r["schema_version"],
                        r["duration_ms"]
                    );
                } else {
                    println!(
                        "{}  BAD  {}",
                        r["id"].as_str().unwrap_or("?"),
                        r["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        BackupAction::Prune { dry_run } => {
            let verb = if *dry_run { "would delete" } else { "deleted" };
            for k in v["keep"].as_array().into_iter().flatten() {
                println!(
                    "kept {}  ({})",
                    k[0].as_str().unwrap_or("?"),
                    k[1].as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
            }
            for d in v["delete"].as_array().into_iter().flatten() {
                println!(
                    "{verb} {}  ({})",
                    d[0].as_str().unwrap_or("?"),
                    d[1].as_str().unwrap_or("")
                );
            }
        }
    }
}

fn print_list(v: &Value) {
    let rows = v.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no backups");
        return;
    }
    println!(
        "{:<26} {:<8} {:<21} {:>10} {:>6}",
        "ID", "STATUS", "CREATED", "SIZE", "SCHEMA"
    );
    for e in rows {
        let m = &e["manifest"];
        println!(
            "{:<26} {:<8} {:<21} {:>10} {:>6}{}",
            e["id"].as_str().unwrap_or("?"),
            e["status"].as_str().unwrap_or("?"),
            m["created"].as_str().unwrap_or("-"),
            if m.is_null() {
                "-".into()
            } else {
                mib(&m["compressed_bytes"])
            },
            m["schema_version"]
                .as_i64()
                .map(|s| s.to_string())
                .unwrap_or("-".into()),
            e["reason"]
                .as_str()
                .map(|r| format!("  {r}"))
                .unwrap_or_default(),
        );
    }
}

fn print_restore(v: &Value) {
    for s in v["skipped"].as_array().into_iter().flatten() {
        println!(
            "skipped {}: {}",
            s["id"].as_str().unwrap_or("?"),
            s["reason"].as_str().unwrap_or("")
        );
    }
    let id = v["id"].as_str().unwrap_or("?");
    if v["dry_run"] == Value::Bool(true) {
        println!(
            "dry run: backup {id} (created {}) verified; it would be restored",
            v["created"].as_str().unwrap_or("?")
        );
        return;
    }
    println!(
        "restored backup {id} (created {}), schema {}",
        v["created"].as_str().unwrap_or("?"),
        v["schema_version"]
    );
    if let Some(p) = v["previous"].as_str() {
        println!("the previous database is kept at {p}");
    }
}
