//! Upgrades that roll back by themselves, data included.
//!
//! - Every migration carries its down steps, recorded in the database
//!   (`store::migrations`): an older release that finds a newer schema
//!   takes it back itself, keeping what the older schema can hold.
//! - Before the schema changes (up or down) a verified backup is taken and
//!   pinned: the upgrade's restore point, for when down steps cannot.
//! - A release this data has not run before is on [`probation`] until it
//!   has been ready and healthy for `upgrade.probation_secs`; then it is
//!   confirmed. Its standing is in [`record`], outside the database.
//! - [`apply`]: `erlmcp upgrade apply` on hosts with a releases directory
//!   and a `current` link: flip, restart, wait for confirmation, and flip
//!   back (the older release then takes the data back) when it does not
//!   come; every step recorded, so an interrupted upgrade is finished by
//!   `erlmcp upgrade resume`.

pub(crate) mod apply;
#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
mod metrics;
pub(crate) mod probation;
pub(crate) mod record;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backup::{BackupError, Backups};
use crate::config::Config;
use crate::release;
use crate::store::migrations::{self, Plan};
use crate::store::{DB_FILE, StoreError};
use record::{Record, RecordError, State};

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the restore point before changing the schema could not be taken ({0}); nothing was changed"
    )]
    RestorePoint(#[source] BackupError),
}

impl UpgradeError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            UpgradeError::Store(StoreError::SchemaTooNew { .. }) => crate::exit::DATA_TOO_NEW,
            UpgradeError::RestorePoint(e) => e.exit_code(),
            _ => crate::exit::FAILURE,
        }
    }
}

/// What the node must know before its store opens.
pub(crate) struct Prepared {
    plan: Option<Plan>,
    record: Option<Record>,
    restore_point: Option<String>,
}

/// What opening the store will do to the schema; refuses, touching
/// nothing, a newer schema without recorded down steps. Reads only.
pub(crate) fn plan(config: &Config) -> Result<Option<Plan>, UpgradeError> {
    plan_of(&config.data_dir.join(DB_FILE))
}

/// Before the store opens: when the schema is about to change (up, or down
/// with recorded steps), a verified backup of the database as it is, pinned
/// until this release is confirmed.
pub(crate) fn prepare(config: &Config, plan: Option<Plan>) -> Result<Prepared, UpgradeError> {
    let record = record::load(&config.data_dir)?;
    let changes = matches!(plan, Some(Plan::Up { from, .. }) if from > 0)
        || matches!(plan, Some(Plan::Down { .. }));
    let restore_point = if changes {
        let b = Backups::from_config(config);
        let created = crate::backup::snapshot::create(&b).map_err(UpgradeError::RestorePoint)?;
        let id = created.manifest.id;
        let why = format!(
            "restore point of {} before its schema change {:?}",
            release::VERSION,
            plan.expect("changes implies a plan")
        );
        crate::backup::pin::pin(&b, &id, &why).map_err(UpgradeError::RestorePoint)?;
        tracing::warn!(backup = %id, "restore point taken before the schema changes");
        Some(id)
    } else {
        None
    };
    Ok(Prepared {
        plan,
        record,
        restore_point,
    })
}

/// The schema plan of an existing database, read-only.
fn plan_of(db: &Path) -> Result<Option<Plan>, UpgradeError> {
    if !db.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(StoreError::from)?;
    Ok(Some(migrations::plan(&conn, &db.display().to_string())?))
}

/// This release's standing on this data, for the daemon's life.
pub(crate) struct Upgrade {
    data_dir: PathBuf,
    backups: Backups,
    record: Mutex<Record>,
}

/// What `/status` and `erlmcp status` show.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub release: String,
    pub previous: Option<String>,
    #[serde(flatten)]
    pub state: State,
    pub restore_point: Option<String>,
    pub history: Vec<String>,
}

impl Upgrade {
    /// After the store opened (and migrated): decides this release's
    /// standing — new (probation), the same as before, or the one an upgrade
    /// rolled back to — and records it.
    pub(crate) fn start(config: &Config, p: Prepared) -> Result<Arc<Upgrade>, UpgradeError> {
        let backups = Backups::from_config(config);
        let this = release::VERSION.to_owned();
        let schema = match p.plan {
            Some(Plan::Up { from, to }) if from > 0 => format!(", schema {from} → {to}"),
            Some(Plan::Down { from, to }) => {
                format!(", schema {from} → {to} with the recorded down steps")
            }
            _ => String::new(),
        };
        let r = match p.record {
            // The first start with a record: a database an older release
            // made is an upgrade; a new one is simply this release's.
            None if p.restore_point.is_some() => {
                let mut r = Record::new(&this, State::Probation { since: now() });
                r.restore_point = p.restore_point;
                r.note(format!(
                    "{this} started on data of an earlier release, on probation{schema}"
                ));
                r
            }
            None => {
                let mut r = Record::new(&this, State::Confirmed { at: now() });
                r.note(format!("{this} started"));
                r
            }
            Some(r) if r.release == this => continue_with(r, p.restore_point, &backups),
            Some(r) if is_rollback(&r, &this, p.plan) => {
                rolled_back(r, &this, p.restore_point, &backups, &schema)
            }
            Some(mut r) => {
                let from = std::mem::replace(&mut r.release, this.clone());
                r.note(format!("{this} started after {from}, on probation{schema}"));
                r.previous = Some(from);
                r.state = State::Probation { since: now() };
                unpin(&backups, r.restore_point.take());
                r.restore_point = p.restore_point;
                r
            }
        };
        record::save(&config.data_dir, &r)?;
        metrics::describe();
        metrics::state(&r.state);
        Ok(Arc::new(Upgrade {
            data_dir: config.data_dir.clone(),
            backups,
            record: Mutex::new(r),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn on_probation(&self) -> bool {
        matches!(self.lock().state, State::Probation { .. })
    }

    /// Probation passed: confirmed, the restore point let go.
    pub(crate) fn confirm(&self, healthy_secs: u64) {
        let mut r = self.lock();
        if !matches!(r.state, State::Probation { .. }) {
            return;
        }
        r.state = State::Confirmed {
            at: crate::clock::now_secs(),
        };
        let release = r.release.clone();
        r.note(format!(
            "{release} confirmed after {healthy_secs} s ready and healthy"
        ));
        unpin(&self.backups, r.restore_point.take());
        metrics::state(&r.state);
        if let Err(e) = record::save(&self.data_dir, &r) {
            tracing::error!(error = %e, "cannot record the confirmation");
        }
    }

    pub(crate) fn status(&self) -> Status {
        let r = self.lock();
        Status {
            release: r.release.clone(),
            previous: r.previous.clone(),
            state: r.state.clone(),
            restore_point: r.restore_point.clone(),
            history: r.history.clone(),
        }
    }
}

fn now() -> i64 {
    crate::clock::now_secs()
}

/// The release that ran before starts again on data a newer one touched:
/// the schema comes back down, or the newer one never left probation.
fn is_rollback(r: &Record, this: &str, plan: Option<Plan>) -> bool {
    matches!(plan, Some(Plan::Down { .. }))
        || (r.previous.as_deref() == Some(this) && matches!(r.state, State::Probation { .. }))
}

fn rolled_back(
    mut r: Record,
    this: &str,
    restore_point: Option<String>,
    backups: &Backups,
    schema: &str,
) -> Record {
    let reason = r
        .rollback_reason
        .take()
        .unwrap_or_else(|| format!("an older release ({this}) started on this data"));
    let from = std::mem::replace(&mut r.release, this.to_owned());
    r.note(format!(
        "{this} took over from {from}, rolled back: {reason}{schema}"
    ));
    r.previous = Some(from.clone());
    r.state = State::RolledBack {
        from,
        reason,
        at: now(),
    };
    // The data came back by its down steps: the restore points have served.
    unpin(backups, r.restore_point.take());
    unpin(backups, restore_point);
    r
}

/// The same release again: a restart during probation starts it over.
fn continue_with(mut r: Record, restore_point: Option<String>, backups: &Backups) -> Record {
    if let State::Probation { .. } = r.state {
        r.state = State::Probation { since: now() };
        let release = r.release.clone();
        r.note(format!("{release} restarted during its probation"));
    }
    // A schema change within one release (a restore of an older backup)
    // is no upgrade to hold a restore point for.
    unpin(backups, restore_point);
    r.rollback_reason = None;
    r
}

fn unpin(b: &Backups, id: Option<String>) {
    if let Some(id) = id
        && let Err(e) = crate::backup::pin::unpin(b, &id)
    {
        tracing::warn!(error = %e, backup = %id, "cannot unpin the restore point");
    }
}
