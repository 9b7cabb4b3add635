//! `erlmcp restore ID|latest [--dry-run]`: verified before anything is
//! replaced; through the daemon when one serves this data directory.

use clap::Args;

use super::CliError;
use super::output;
use super::via::{self, Via, Where};
use crate::backup::restore::{self, Restored, Target};
use crate::ops::backup::RestoreRequest;

#[derive(Args, Debug)]
pub(super) struct RestoreArgs {
    /// A backup id, or `latest` (the newest good one).
    target: String,
    /// Verify and report, change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    at: Where,
}

pub(super) fn run(args: RestoreArgs) -> Result<(), CliError> {
    let json = args.at.json;
    let out = restore(&args);
    match &out {
        Ok(r) => output::print(r, json, print_restored),
        Err(e) => output::print_failure(e, json),
    }
    out.map(|_| ())
}

fn restore(args: &RestoreArgs) -> Result<Restored, CliError> {
    Ok(match via::via(&args.at)? {
        Via::Files(b) => restore::restore_offline(&b, &Target::parse(&args.target), args.dry_run)?,
        Via::Daemon(d) => d.post(
            "/restore",
            &RestoreRequest {
                id: args.target.clone(),
                dry_run: args.dry_run,
            },
        )?,
    })
}

fn print_restored(r: &Restored) {
    for s in &r.skipped {
        println!("skipped {}: {}", s.id, s.reason);
    }
    if r.dry_run {
        println!(
            "dry run: backup {} (created {}) verified; it would be restored",
            r.id, r.created
        );
        return;
    }
    println!(
        "restored backup {} (created {}), schema {}",
        r.id, r.created, r.schema_version
    );
    if let Some(p) = &r.previous {
        println!("the previous database is kept at {}", p.display());
    }
    if r.revocations_kept > 0 {
        println!(
            "{} token(s) revoked since the backup stay revoked",
            r.revocations_kept
        );
    }
}
