//! Which backups to keep: the newest `keep_last` good ones, plus the newest
//! good one of each of the last `hourly` hours, `daily` days and `weekly`
//! ISO weeks (UTC) that have one — the grandfather-father-son scheme of
//! restic and borg. The newest good backup is kept whatever the policy
//! says. Bad and invalid backups are deleted by a prune (their reasons are
//! in the log and the prune report).

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

use super::catalog::{self, Entry, Status};
use super::lock::DirLock;
use super::{BackupError, Backups};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Kept backups and why (`last`, `hourly`, `daily`, `weekly`, `newest`,
    /// `pinned`).
    pub keep: Vec<(String, Vec<String>)>,
    /// Deleted backups and why.
    pub delete: Vec<(String, String)>,
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// A retention tier: its name, how many buckets, and a time's bucket.
type Tier = (&'static str, usize, fn(i64) -> i64);

/// Decides; touches nothing. `entries` are newest first.
pub fn plan(entries: &[Entry], p: &Policy) -> Plan {
    let good: Vec<(&str, i64)> = entries
        .iter()
        .filter(|e| e.is_good())
        .filter_map(|e| e.manifest.as_ref().map(|m| (e.id.as_str(), m.created_at)))
        .collect();
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); good.len()];
    for (i, e) in entries
        .iter()
        .filter(|e| e.is_good() && e.manifest.is_some())
        .enumerate()
    {
        if e.pinned.is_some() {
            reasons[i].push("pinned");
        }
    }
    if !good.is_empty() {
        reasons[0].push("newest");
    }
    for r in reasons.iter_mut().take(p.keep_last) {
        r.push("last");
    }
    let buckets: [Tier; 3] = [
        ("hourly", p.hourly, |t| t.div_euclid(HOUR)),
        ("daily", p.daily, |t| t.div_euclid(DAY)),
        // Weeks start on Monday; 1970-01-01 was a Thursday.
        ("weekly", p.weekly, |t| {
            (t.div_euclid(DAY) + 3).div_euclid(7)
        }),
    ];
    for (name, count, bucket) in buckets {
        let mut seen = HashSet::new();
        for (i, (_, at)) in good.iter().enumerate() {
            if seen.len() >= count {
                break;
            }
            if seen.insert(bucket(*at)) {
                reasons[i].push(name);
            }
        }
    }
    let mut out = Plan::default();
    for ((id, _), why) in good.iter().zip(reasons) {
        if why.is_empty() {
            out.delete
                .push((id.to_string(), "outside the retention policy".into()));
        } else {
            out.keep
                .push((id.to_string(), why.into_iter().map(String::from).collect()));
        }
    }
    for e in entries {
        match &e.status {
            Status::Bad { reason } => out.delete.push((e.id.clone(), format!("bad: {reason}"))),
            Status::Invalid { reason } => out
                .delete
                .push((e.id.clone(), format!("invalid: {reason}"))),
            Status::Good | Status::Partial => {}
        }
    }
    out
}

/// `erlmcp backup prune`: removes leftovers, then what the policy drops.
pub fn prune(b: &Backups, dry_run: bool) -> Result<Plan, BackupError> {
    let _lock = DirLock::acquire(&b.dir)?;
    if !dry_run {
        catalog::clean_leftovers(b)?;
    }
    let entries = catalog::list(b)?;
    let plan = plan(&entries, &b.retention);
    if !dry_run {
        for (id, why) in &plan.delete {
            tracing::info!(id, why, "pruning backup");
            catalog::delete(b, id)?;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::Manifest;

    fn good(id: &str, at: i64) -> Entry {
        let m = Manifest {
            format: 1,
            id: id.into(),
            created_at: at,
            created: String::new(),
            erlmcp_version: String::new(),
            schema_version: 1,
            node_name: String::new(),
            replication_epoch: 0,
            replication_seq: 0,
            uncompressed_bytes: 0,
            compressed_bytes: 0,
            sha256: String::new(),
            duration_ms: 0,
        };
        Entry {
            id: id.into(),
            status: Status::Good,
            manifest: Some(m),
            pinned: None,
        }
    }

    fn kept(p: &Plan) -> Vec<&str> {
        p.keep.iter().map(|(id, _)| id.as_str()).collect()
    }

    const T: i64 = 1_735_689_600; // 2025-01-01T00:00Z, a Wednesday

    #[test]
    fn keep_last_and_buckets_combine() {
        // Every 30 minutes for 3 days, newest first.
        let entries: Vec<Entry> = (0..144)
            .rev()
            .map(|i| good(&format!("b{i:03}"), T + i * 1800))
            .collect();
        let p = plan(
            &entries,
            &Policy {
                keep_last: 2,
                hourly: 3,
                daily: 2,
                weekly: 1,
            },
        );
        // last 2 (b143, b142), hourly: b143 (hour 71), b141 (70), b139 (69),
        // daily: b143 (day 2), b095 (day 1), weekly: b143.
        assert_eq!(kept(&p), ["b143", "b142", "b141", "b139", "b095"]);
        assert_eq!(p.delete.len(), 144 - 5);
    }

    #[test]
    fn the_newest_good_backup_survives_any_policy() {
        let mut entries = vec![
            Entry {
                id: "z".into(),
                status: Status::Bad {
                    reason: "checksum".into(),
                },
                manifest: None,
                pinned: None,
            },
            good("y", T + 10),
            good("x", T),
        ];
        entries.push(Entry {
            id: "w".into(),
            status: Status::Invalid {
                reason: "truncated".into(),
            },
            manifest: None,
            pinned: None,
        });
        let p = plan(
            &entries,
            &Policy {
                keep_last: 0,
                hourly: 0,
                daily: 0,
                weekly: 0,
            },
        );
        assert_eq!(kept(&p), ["y"]);
        let deleted: Vec<&str> = p.delete.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(deleted, ["x", "z", "w"]);
    }

    #[test]
    fn a_pinned_backup_outlives_the_policy() {
        let mut old = good("old", T - 100 * 86_400);
        old.pinned = Some("restore point of an upgrade".into());
        let entries = vec![good("new", T), old];
        let p = plan(
            &entries,
            &Policy {
                keep_last: 1,
                hourly: 0,
                daily: 0,
                weekly: 0,
            },
        );
        assert_eq!(kept(&p), ["new", "old"]);
        assert!(p.delete.is_empty());
    }
}
