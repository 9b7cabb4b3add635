//! `erlmcp upgrade apply RELEASE`, `rollback` and `resume`, for hosts with
//! a releases directory (`<releases_dir>/<release>/erlmcp`) and a `current`
//! link the service runs. Apply flips the link, restarts the unit and waits
//! for the new release to be confirmed (its probation); on a crash loop, a
//! readiness that never comes or the deadline, it flips back and restarts
//! the previous release, which takes the data back with the recorded down
//! steps. Each step is recorded in `<current_link>.upgrade` first, so an
//! upgrade interrupted by a crash is finished by `erlmcp upgrade resume`
//! (run at boot by `erlmcp-upgrade-resume.service`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::record::{self, State};
use crate::fsx::{self, FsError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error("no release {0}: expected an executable erlmcp in {1}")]
    NoRelease(String, String),
    #[error("{0} is already the current release")]
    Already(String),
    #[error("the current link {0} does not point into the releases directory")]
    NoCurrent(String),
    #[error("release {0} does not run: {1}")]
    Broken(String, String),
    #[error("no release to roll back to: the data directory's record names none")]
    NothingToRollBackTo,
    #[error("systemctl {0} failed: {1}")]
    Systemctl(String, String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error(
        "release {release} did not come back after the rollback ({why}); the data directory is as \
         the rollback left it: see docs/operations/upgrades.md, \"A rollback that needs a person\""
    )]
    Stuck { release: String, why: String },
}

impl ApplyError {
    pub(crate) fn exit_code(&self) -> u8 {
        use crate::exit;
        match self {
            ApplyError::NoRelease(..) | ApplyError::NothingToRollBackTo => exit::NO_INPUT,
            ApplyError::Already(_) | ApplyError::NoCurrent(_) => exit::USAGE,
            _ => exit::FAILURE,
        }
    }
}

/// Where releases live and which one runs.
pub(crate) struct Releases {
    pub(crate) dir: PathBuf,
    pub(crate) current_link: PathBuf,
}

impl Releases {
    pub(crate) fn binary(&self, release: &str) -> PathBuf {
        self.dir.join(release).join("erlmcp")
    }

    /// The release the link points to.
    pub(crate) fn current(&self) -> Result<String, ApplyError> {
        let target = std::fs::read_link(&self.current_link)
            .map_err(|_| ApplyError::NoCurrent(self.current_link.display().to_string()))?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ApplyError::NoCurrent(self.current_link.display().to_string()))
    }

    /// Points the link at `release`, atomically (a new link renamed over
    /// the old), durably.
    pub(crate) fn flip(&self, release: &str) -> Result<(), ApplyError> {
        let tmp = self.current_link.with_extension("flip.tmp");
        let _ = fsx::remove_if_exists(&tmp);
        std::os::unix::fs::symlink(self.dir.join(release), &tmp)
            .map_err(|e| FsError::new("linking", &tmp, e))?;
        fsx::publish(&tmp, &self.current_link)?;
        tracing::warn!(release, link = %self.current_link.display(), "current release switched");
        Ok(())
    }

    fn check(&self, release: &str) -> Result<(), ApplyError> {
        let bin = self.binary(release);
        if !bin.is_file() {
            return Err(ApplyError::NoRelease(
                release.into(),
                self.dir.join(release).display().to_string(),
            ));
        }
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .map_err(|e| ApplyError::Broken(release.into(), e.to_string()))?;
        if !out.status.success() {
            return Err(ApplyError::Broken(
                release.into(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(())
    }

    fn journal(&self) -> PathBuf {
        let mut s = self.current_link.as_os_str().to_owned();
        s.push(".upgrade");
        PathBuf::from(s)
    }
}

/// An upgrade in progress, as recorded before each step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InProgress {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) phase: Phase,
    /// How long the release has to be confirmed, counted from when the
    /// wait (re)starts.
    pub(crate) wait_secs: u64,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// The link points at `to`; waiting for its confirmation.
    Switched,
    /// Going back to `from`.
    RollingBack,
}

fn save_journal(r: &Releases, ip: &InProgress) -> Result<(), ApplyError> {
    let bytes = serde_json::to_vec_pretty(ip).expect("the upgrade journal serializes");
    let tmp = r.journal().with_extension("tmp");
    fsx::write_atomic(&r.journal(), &tmp, &bytes)?;
    Ok(())
}

fn load_journal(r: &Releases) -> Option<InProgress> {
    serde_json::from_slice(&std::fs::read(r.journal()).ok()?).ok()
}

/// What the daemon says of itself, as far as an upgrade cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) release: String,
    pub(crate) confirmed: bool,
    pub(crate) ready: bool,
}

/// The service an upgrade restarts and watches.
pub(crate) trait Service {
    fn restart(&self) -> Result<(), ApplyError>;
    /// The unit has given up (systemd's restart limit, or an exit code it
    /// does not restart on).
    fn failed(&self) -> bool;
    /// How often systemd restarted it so far.
    fn restarts(&self) -> u64;
    /// The daemon's own word, if it answers.
    fn observe(&self) -> Option<Observed>;
    /// Stops the service, restores backup `id` with `binary` (offline),
    /// gives the data directory back to the service's user, starts again.
    fn restore(&self, binary: &Path, id: &str, data_dir: &Path) -> Result<(), ApplyError>;
}

/// How an upgrade ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Confirmed {
        release: String,
        after_secs: u64,
    },
    RolledBack {
        release: String,
        from: String,
        reason: String,
        after_secs: u64,
    },
}

/// Restarts within one wait that make a crash loop.
const CRASH_LOOP: u64 = 3;

pub(crate) fn apply(
    r: &Releases,
    svc: &dyn Service,
    data_dir: &Path,
    to: &str,
    deadline: Duration,
) -> Result<Outcome, ApplyError> {
    let from = r.current()?;
    if from == to {
        return Err(ApplyError::Already(to.into()));
    }
    r.check(to)?;
    let ip = InProgress {
        from,
        to: to.into(),
        phase: Phase::Switched,
        wait_secs: deadline.as_secs(),
        reason: None,
    };
    save_journal(r, &ip)?;
    crate::clock::pause_point("upgrade.after_journal");
    finish(r, svc, data_dir, ip)
}

/// `erlmcp upgrade resume`: finishes what an interrupted upgrade left.
pub(crate) fn resume(
    r: &Releases,
    svc: &dyn Service,
    data_dir: &Path,
) -> Result<Option<Outcome>, ApplyError> {
    match load_journal(r) {
        None => Ok(None),
        Some(ip) => {
            tracing::warn!(from = %ip.from, to = %ip.to, phase = ?ip.phase, "finishing an interrupted upgrade");
            finish(r, svc, data_dir, ip).map(Some)
        }
    }
}

/// `erlmcp upgrade rollback`: back to the release that ran before.
pub(crate) fn rollback_now(
    r: &Releases,
    svc: &dyn Service,
    data_dir: &Path,
) -> Result<Outcome, ApplyError> {
    let rec = record::load(data_dir)?.ok_or(ApplyError::NothingToRollBackTo)?;
    let to = rec.previous.ok_or(ApplyError::NothingToRollBackTo)?;
    r.check(&to)?;
    let ip = InProgress {
        from: to,
        to: r.current()?,
        phase: Phase::RollingBack,
        wait_secs: 0,
        reason: Some("asked by `erlmcp upgrade rollback`".into()),
    };
    save_journal(r, &ip)?;
    rollback(r, svc, data_dir, ip, Instant::now())
}

/// Runs `release`: the link points at it and the service runs it. Each
/// step is idempotent, so a resumed upgrade redoes what may not have
/// happened.
fn run_release(
    r: &Releases,
    svc: &dyn Service,
    release: &str,
    flipped_point: &str,
) -> Result<(), ApplyError> {
    if r.current()? != release {
        r.flip(release)?;
    }
    crate::clock::pause_point(flipped_point);
    if svc.observe().is_none_or(|o| o.release != release) {
        svc.restart()?;
    }
    Ok(())
}

fn finish(
    r: &Releases,
    svc: &dyn Service,
    data_dir: &Path,
    ip: InProgress,
) -> Result<Outcome, ApplyError> {
    let started = Instant::now();
    if ip.phase == Phase::RollingBack {
        return rollback(r, svc, data_dir, ip, started);
    }
    run_release(r, svc, &ip.to, "upgrade.after_flip")?;
    let deadline = Instant::now() + Duration::from_secs(ip.wait_secs);
    let base = svc.restarts();
    loop {
        if let Some(o) = svc.observe()
            && o.release == ip.to
            && o.confirmed
        {
            let _ = fsx::remove_if_exists(&r.journal());
            return Ok(Outcome::Confirmed {
                release: ip.to,
                after_secs: started.elapsed().as_secs(),
            });
        }
        let why = if svc.failed() {
            Some("the service failed (systemd gave up restarting it)".to_owned())
        } else if svc.restarts().saturating_sub(base) >= CRASH_LOOP {
            Some(format!("a crash loop ({CRASH_LOOP} restarts)"))
        } else if Instant::now() >= deadline {
            Some(match svc.observe() {
                Some(o) if !o.ready => "not ready before the deadline".to_owned(),
                Some(_) => "not confirmed (healthy long enough) before the deadline".to_owned(),
                None => "no answer from the daemon before the deadline".to_owned(),
            })
        } else {
            None
        };
        if let Some(why) = why {
            let ip = InProgress {
                phase: Phase::RollingBack,
                reason: Some(format!("{} failed: {why}", ip.to)),
                ..ip
            };
            save_journal(r, &ip)?;
            return rollback(r, svc, data_dir, ip, started);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn rollback(
    r: &Releases,
    svc: &dyn Service,
    data_dir: &Path,
    ip: InProgress,
    started: Instant,
) -> Result<Outcome, ApplyError> {
    let reason = ip.reason.clone().unwrap_or_else(|| "rolled back".into());
    tracing::error!(from = %ip.to, to = %ip.from, %reason, "rolling back");
    leave_reason(data_dir, &reason)?;
    run_release(r, svc, &ip.from, "upgrade.rollback.after_flip")?;
    let until = Instant::now() + Duration::from_secs(120);
    let mut restored = false;
    loop {
        if let Some(o) = svc.observe()
            && o.release == ip.from
            && o.ready
        {
            let _ = fsx::remove_if_exists(&r.journal());
            return Ok(Outcome::RolledBack {
                release: ip.from,
                from: ip.to,
                reason,
                after_secs: started.elapsed().as_secs(),
            });
        }
        if svc.failed() && !restored {
            // The down steps could not take the data back: the restore
            // point can (what was written since it is kept aside with the
            // failed release's database).
            restored = true;
            let rec = record::load(data_dir)?;
            let Some(id) = rec.and_then(|r| r.restore_point) else {
                return Err(stuck(&ip.from, "it failed, and there is no restore point"));
            };
            tracing::error!(backup = %id, "the previous release cannot take the data back; restoring the restore point");
            svc.restore(&r.binary(&ip.from), &id, data_dir)?;
            continue;
        }
        if svc.failed() || Instant::now() >= until {
            let why = if svc.failed() {
                "the service failed"
            } else {
                "no ready answer within 120 s"
            };
            return Err(stuck(&ip.from, why));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stuck(release: &str, why: &str) -> ApplyError {
    ApplyError::Stuck {
        release: release.into(),
        why: why.into(),
    }
}

/// Tells the release that runs next why it runs again: the data
/// directory's record, written as its owner (the service's user) owns it.
fn leave_reason(data_dir: &Path, reason: &str) -> Result<(), ApplyError> {
    let Some(mut rec) = record::load(data_dir)? else {
        return Ok(());
    };
    if matches!(rec.state, State::Probation { .. } | State::Confirmed { .. }) {
        rec.rollback_reason = Some(reason.to_owned());
        record::save(data_dir, &rec)?;
        let owner =
            std::fs::metadata(data_dir).map_err(|e| FsError::new("reading", data_dir, e))?;
        use std::os::unix::fs::MetadataExt;
        let file = record::path(data_dir);
        std::os::unix::fs::chown(&file, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| FsError::new("giving to the service", &file, e))?;
    }
    Ok(())
}

/// The unit, through `systemctl`.
pub(crate) struct Systemd {
    pub(crate) unit: String,
    /// The configuration file the service runs with (for an offline restore).
    pub(crate) config: Option<PathBuf>,
    pub(crate) observe: Box<dyn Fn() -> Option<Observed>>,
}

impl Systemd {
    fn ctl(&self, args: &[&str]) -> Result<String, ApplyError> {
        let out = Command::new("systemctl")
            .args(args)
            .arg(&self.unit)
            .output()
            .map_err(|e| ApplyError::Systemctl(args.join(" "), e.to_string()))?;
        if !out.status.success() {
            return Err(ApplyError::Systemctl(
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Service for Systemd {
    fn restart(&self) -> Result<(), ApplyError> {
        let _ = self.ctl(&["reset-failed"]);
        // --no-block: a release that never becomes ready must not hold us.
        self.ctl(&["restart", "--no-block"]).map(|_| ())
    }

    fn failed(&self) -> bool {
        Command::new("systemctl")
            .args(["is-failed", "--quiet", &self.unit])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn restarts(&self) -> u64 {
        self.ctl(&["show", "--value", "--property=NRestarts"])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn observe(&self) -> Option<Observed> {
        (self.observe)()
    }

    fn restore(&self, binary: &Path, id: &str, data_dir: &Path) -> Result<(), ApplyError> {
        self.ctl(&["stop"])?;
        let mut cmd = Command::new(binary);
        cmd.args(["restore", id, "--data-dir"]).arg(data_dir);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd
            .output()
            .map_err(|e| ApplyError::Broken(binary.display().to_string(), e.to_string()))?;
        if !out.status.success() {
            return Err(stuck(
                &binary.display().to_string(),
                &format!(
                    "restoring {id}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        give_back(data_dir)?;
        self.restart()
    }
}

/// Files root made in the data directory go to its owner (the service).
fn give_back(data_dir: &Path) -> Result<(), ApplyError> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(data_dir).map_err(|e| FsError::new("reading", data_dir, e))?;
    let entries = std::fs::read_dir(data_dir).map_err(|e| FsError::new("listing", data_dir, e))?;
    for e in entries.flatten() {
        let p = e.path();
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid()))
            .map_err(|err| FsError::new("giving to the service", &p, err))?;
    }
    Ok(())
}
