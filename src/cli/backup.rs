//! `erlmcp backup create | list | verify [ID] | prune [--dry-run]`, through
//! the daemon's ops listener when one serves this data directory, else on
//! the files. Both ways compute the same typed result.

use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use super::output::{self, mib};
use super::via::{self, Via, Where};
use crate::backup::catalog::Entry;
use crate::backup::retention::Plan;
use crate::backup::snapshot::Created;
use crate::backup::verify::Report;
use crate::backup::{BackupError, Backups, catalog, retention, snapshot, verify};
use crate::exit;
use crate::ops::backup::PruneRequest;

#[derive(Args, Debug)]
pub(super) struct BackupArgs {
    #[command(subcommand)]
    action: BackupAction,
    #[command(flatten)]
    at: Where,
}

#[derive(Subcommand, Debug)]
enum BackupAction {
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

pub(super) fn run(args: BackupArgs) -> Result<(), CliError> {
    let json = args.at.json;
    let out = dispatch(&args.action, &via::via(&args.at)?, json);
    if let Err(e) = &out {
        output::print_failure(e, json);
    }
    out
}

fn dispatch(action: &BackupAction, via: &Via, json: bool) -> Result<(), CliError> {
    match action {
        BackupAction::Create => {
            let c: Created = on(via, snapshot::create, |d| d.post("/backup", &()))?;
            output::print(&c, json, print_created);
        }
        BackupAction::List => {
            let l: Vec<Entry> = on(via, catalog::list, |d| d.get("/backups"))?;
            output::print(&l, json, |l| print_list(l));
        }
        BackupAction::Verify { id } => {
            let path = match id {
                Some(id) => format!("/backups/{id}/verify"),
                None => "/backups/verify".to_owned(),
            };
            let r: Vec<Report> = on(
                via,
                |b| verify::verify(b, id.as_deref()),
                |d| d.post(&path, &()),
            )?;
            output::print(&r, json, |r| print_reports(r));
            // Every backup is reported; one that failed fails the command.
            failed_reports(&r)?;
        }
        BackupAction::Prune { dry_run } => {
            let dry_run = *dry_run;
            let p: Plan = on(
                via,
                |b| retention::prune(b, dry_run),
                |d| d.post("/backup/prune", &PruneRequest { dry_run }),
            )?;
            output::print(&p, json, |p| print_plan(p, dry_run));
        }
    }
    Ok(())
}

/// Runs `local` on the files or `remote` through the daemon.
fn on<T: Serialize + DeserializeOwned>(
    via: &Via,
    local: impl FnOnce(&Backups) -> Result<T, BackupError>,
    remote: impl FnOnce(&crate::ops::client::OpsClient) -> Result<T, crate::ops::client::ClientError>,
) -> Result<T, CliError> {
    match via {
        Via::Files(b) => Ok(local(b)?),
        Via::Daemon(d) => Ok(remote(d)?),
    }
}

fn failed_reports(reports: &[Report]) -> Result<(), CliError> {
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.id, r.reason.as_deref().unwrap_or("")))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(CliError::Reported {
        message: format!("verification failed: {}", bad.join("; ")),
        code: exit::DATA_ERROR,
    })
}

fn print_created(c: &Created) {
    let m = &c.manifest;
    println!(
        "backup {} taken and verified: {} ({} uncompressed), schema {}, {} ms",
        m.id,
        mib(m.compressed_bytes),
        mib(m.uncompressed_bytes),
        m.schema_version,
        m.duration_ms + c.verify_ms,
    );
}

fn print_reports(reports: &[Report]) {
    for r in reports {
        match (r.ok, r.schema_version) {
            (true, Some(v)) => println!("{}  ok  schema {v}  {} ms", r.id, r.duration_ms),
            (true, None) => println!("{}  ok  {} ms", r.id, r.duration_ms),
            (false, _) => println!("{}  BAD  {}", r.id, r.reason.as_deref().unwrap_or("")),
        }
    }
}

fn print_plan(p: &Plan, dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleted" };
    for (id, why) in &p.keep {
        println!("kept {id}  ({})", why.join(", "));
    }
    for (id, why) in &p.delete {
        println!("{verb} {id}  ({why})");
    }
}

fn print_list(entries: &[Entry]) {
    if entries.is_empty() {
        println!("no backups");
        return;
    }
    println!(
        "{:<26} {:<8} {:<21} {:>10} {:>6}",
        "ID", "STATUS", "CREATED", "SIZE", "SCHEMA"
    );
    for e in entries {
        let m = e.manifest.as_ref();
        println!(
            "{:<26} {:<8} {:<21} {:>10} {:>6}{}",
            e.id,
            e.status.name(),
            m.map_or("-", |m| m.created.as_str()),
            m.map_or("-".into(), |m| mib(m.compressed_bytes)),
            m.map_or("-".into(), |m| m.schema_version.to_string()),
            e.status
                .reason()
                .map(|r| format!("  {r}"))
                .unwrap_or_default(),
        );
    }
}
