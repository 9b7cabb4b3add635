//! A primary and a hot standby.
//!
//! - [`log`]: the replication log, each entry hash-chained to the one
//!   before; [`tables`]: which tables it records;
//! - [`capture`]: the commit hooks that fill it, [`gate`]: where a write
//!   waits for the standby in sync mode;
//! - [`primary`] and [`standby`]: the two ends of a link, speaking
//!   [`frame`]s over a [`peer::Link`]; [`snapshot`]: catch-up by copy;
//! - [`state`]: this node's role and epoch, outside the database;
//! - [`check`]: asking the peer, to find two primaries.
//!
//! Every promotion raises a durable epoch. A node that learns of a higher
//! epoch stops writing at once and follows; a primary that sees another
//! primary of an equal epoch refuses writes until one of them steps down.

pub(crate) mod capture;
mod check;
pub(crate) mod frame;
pub(crate) mod gate;
pub(crate) mod log;
mod metrics;
pub(crate) mod peer;
mod primary;
pub(crate) mod snapshot;
pub(crate) mod standby;
pub(crate) mod state;
pub(crate) mod tables;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ReplicationConfig, ReplicationMode};
use crate::store::{Store, StoreError};
use frame::{PeerStatus, Role};
use gate::Gate;
use log::Position;
use peer::{Connector, Link};
use state::NodeState;

pub(crate) use primary::serve;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicationError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replication cannot record tables without a primary key: {0}")]
    NoPrimaryKey(String),
    #[error(
        "this standby is not in sync (it lacks up to {behind} entries the primary may have \
         acknowledged); promoting it could lose acknowledged writes. Wait for it to catch up, \
         or promote with --force"
    )]
    NotInSync { behind: u64 },
}

/// What a standby knows of its primary.
#[derive(Clone, Debug, Default)]
struct Following {
    applied: Position,
    primary_last: u64,
    primary_last_at_ms: i64,
}

/// What `/status` and `erlmcp status` show.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub role: String,
    pub epoch: u64,
    pub mode: String,
    pub last_seq: u64,
    /// Primary: the standby following it, if any.
    pub standby: Option<StandbyStatus>,
    /// Primary: writes wait for the standby. Standby: it holds every
    /// acknowledged write, so it may be promoted.
    pub in_sync: bool,
    /// Standby: the primary's last sequence as last heard.
    pub primary_last_seq: Option<u64>,
    pub lag_sequences: u64,
    pub lag_seconds: f64,
    /// Why this node refuses writes or stopped replicating, if it does.
    pub problem: Option<String>,
    pub peer: Option<PeerView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StandbyStatus {
    pub acked_seq: u64,
}

/// The peer as this node last saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerView {
    pub address: String,
    pub reachable: bool,
    pub node: Option<String>,
    pub role: Option<String>,
    pub epoch: Option<u64>,
    pub last_seq: Option<u64>,
}

/// What a role change asks of the rest of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoleChange {
    pub(crate) role: Role,
    pub(crate) epoch: u64,
}

pub(crate) struct Replication {
    cfg: ReplicationConfig,
    node: String,
    data_dir: PathBuf,
    store: Store,
    gate: Arc<Gate>,
    connector: Arc<dyn Connector>,
    backups: crate::backup::Backups,
    /// Shared with the gate, which saves `sync_standby` as it changes.
    state: Arc<Mutex<NodeState>>,
    following: Mutex<Following>,
    /// Why writes are refused on a primary (two primaries), or why a
    /// standby stopped applying (a conflict).
    problem: Mutex<Option<String>>,
    peer: Mutex<Option<PeerView>>,
    roles: watch::Sender<RoleChange>,
    /// The next link starts with a snapshot (after a stop: the database
    /// may hold what the log does not say).
    resync: std::sync::atomic::AtomicBool,
}

impl Replication {
    /// Reads this node's state and takes its role in `store`: the commit
    /// hook, read-only or not, foreign keys (off on a standby: changesets
    /// carry their cascades).
    pub(crate) async fn open(
        config: &Config,
        store: Store,
        connector: Arc<dyn Connector>,
    ) -> Result<Arc<Replication>, ReplicationError> {
        let cfg = config.replication.clone();
        let node = state::load_or_init(&config.data_dir, cfg.initial_role)?;
        let (last, unrecorded, no_key) = store
            .read(|c| {
                Ok((
                    log::last(c)?,
                    tables::unrecorded(c)?,
                    tables::without_primary_key(c)?,
                ))
            })
            .await?;
        if !no_key.is_empty() {
            return Err(ReplicationError::NoPrimaryKey(no_key.join(", ")));
        }
        let data_dir = config.data_dir.clone();
        let save_dir = data_dir.clone();
        let shared_state = Arc::new(Mutex::new(node.clone()));
        let for_gate = shared_state.clone();
        let gate = Arc::new(Gate::new(
            cfg.mode,
            cfg.on_standby_loss,
            Duration::from_millis(cfg.ack_timeout_ms),
            last.seq,
            Box::new(move |flag| {
                let mut s = for_gate.lock().unwrap_or_else(|p| p.into_inner());
                s.sync_standby = flag;
                if let Err(e) = state::save(&save_dir, &s) {
                    tracing::error!(error = %e, "cannot save the replication state");
                }
            }),
        ));
        store.set_commit_hook(Some(Box::new(capture::Capture {
            gate: gate.clone(),
            unrecorded: Arc::new(unrecorded),
        })));
        metrics::describe();
        metrics::init_counters();
        let repl = Arc::new(Replication {
            node: config.node_name.clone(),
            cfg,
            data_dir,
            store,
            gate,
            connector,
            backups: crate::backup::Backups::from_config(config),
            state: shared_state,
            following: Mutex::new(Following {
                applied: last,
                ..Default::default()
            }),
            problem: Mutex::new(None),
            peer: Mutex::new(None),
            roles: watch::channel(RoleChange {
                role: node.role,
                epoch: node.epoch,
            })
            .0,
            resync: false.into(),
        });
        repl.take_role(&node).await?;
        // Before serving anything: a peer that was promoted while this node
        // was down deposes it now, not a check interval later.
        if let Some(peer) = check::ask(&repl).await {
            repl.learned_epoch(peer.epoch, &format!("peer {}", peer.node))
                .await;
        }
        let node = repl.lock_state().clone();
        tracing::info!(
            role = node.role.as_str(),
            epoch = node.epoch,
            seq = last.seq,
            "replication ready"
        );
        Ok(repl)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the store and the gate in `node`'s role.
    /// The order matters: no write may ever commit unrecorded. A new
    /// primary records before it takes local writes; a new standby refuses
    /// local writes before it stops recording.
    async fn take_role(&self, node: &NodeState) -> Result<u64, StoreError> {
        let last = match node.role {
            Role::Primary => {
                let last = self.store.read(log::last).await?.seq;
                self.store.set_foreign_keys(true).await?;
                self.gate
                    .set_primary(true, node.epoch, node.sync_standby, last);
                self.store.set_read_only(None);
                last
            }
            Role::Standby => {
                self.store.set_read_only(Some(
                    "this node is a replication standby: write through the primary",
                ));
                let committed = *self.gate.committed().borrow();
                self.gate.set_primary(false, node.epoch, false, committed);
                // A group the writer started before the refusal may still
                // commit (or, deposed, roll back): past the fence, the end
                // of the log is final and the follower starts from there.
                self.store.fence().await?;
                self.store.set_foreign_keys(false).await?;
                let last = self.store.read(log::last).await?;
                self.following
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .applied = last;
                last.seq
            }
        };
        metrics::role(node.role);
        metrics::epoch(node.epoch);
        Ok(last)
    }

    fn save(&self, s: &NodeState) {
        if let Err(e) = state::save(&self.data_dir, s) {
            tracing::error!(error = %e, "cannot save the replication state");
        }
    }

    /// Role changes, for the node to follow (serving or not, sessions).
    pub(crate) fn roles(&self) -> watch::Receiver<RoleChange> {
        self.roles.subscribe()
    }

    pub(crate) fn role(&self) -> Role {
        self.lock_state().role
    }

    fn is_standby(&self) -> bool {
        self.role() == Role::Standby
    }

    /// A check that can travel to the writer thread: still a standby?
    fn still_standby(&self) -> impl Fn() -> bool + Send + 'static {
        let state = self.state.clone();
        move || state.lock().unwrap_or_else(|p| p.into_inner()).role == Role::Standby
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.lock_state().epoch
    }

    fn stopped(&self) -> Option<String> {
        if self.is_standby() {
            self.problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            None
        }
    }

    /// `erlmcp role primary`: promote this standby (idempotent on a
    /// primary). Refused when it may lack acknowledged writes, unless forced.
    pub(crate) async fn promote(&self, force: bool) -> Result<RoleChange, ReplicationError> {
        let mut node = self.lock_state().clone();
        if node.role == Role::Primary {
            return Ok(RoleChange {
                role: node.role,
                epoch: node.epoch,
            });
        }
        let behind = {
            let f = self.following.lock().unwrap_or_else(|p| p.into_inner());
            f.primary_last.saturating_sub(f.applied.seq)
        };
        if !node.in_sync && !force {
            if self.cfg.mode == ReplicationMode::Async {
                tracing::warn!(
                    behind,
                    "promoting an async standby: up to {behind} sequences the old primary committed may be lost"
                );
            } else {
                return Err(ReplicationError::NotInSync { behind });
            }
        }
        if !node.in_sync && force {
            tracing::warn!(
                behind,
                "forced promotion of a standby that is not in sync: up to {behind} acknowledged sequences may be lost"
            );
        }
        let peer_epoch = self
            .peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|p| p.epoch)
            .unwrap_or(0);
        node.epoch = node.epoch.max(peer_epoch) + 1;
        node.role = Role::Primary;
        // Back to the role it left by itself, with no other primary in
        // between: its standby may still be there, in sync, and block mode
        // must go on waiting for it rather than write alone.
        node.sync_standby = std::mem::take(&mut node.resume_sync);
        node.in_sync = false;
        self.save(&node);
        *self.lock_state() = node.clone();
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // The follower may be applying the old primary's last entries: the
        // fence lets that finish (nothing after it applies), so `last` is
        // where this log really ends before the node records its own.
        self.store.fence().await?;
        let last = self.take_role(&node).await?;
        #[cfg(feature = "fault-injection")]
        let _ =
            tokio::task::spawn_blocking(|| crate::clock::pause_point("promote.before_announce"))
                .await;
        tracing::warn!(epoch = node.epoch, seq = last, "promoted to primary");
        let change = RoleChange {
            role: Role::Primary,
            epoch: node.epoch,
        };
        self.roles.send_replace(change);
        Ok(change)
    }

    /// `erlmcp role standby`, or a higher epoch seen: stop writing at once
    /// and follow. Also clears a stopped standby, so it resyncs.
    pub(crate) async fn demote(&self, why: &str) -> Result<RoleChange, ReplicationError> {
        let mut node = self.lock_state().clone();
        let stopped = self
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if node.role == Role::Standby {
            if let Some(was) = stopped {
                tracing::warn!(stopped = %was, "replication restarts with a snapshot");
                self.resync.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            return Ok(RoleChange {
                role: node.role,
                epoch: node.epoch,
            });
        }
        node.role = Role::Standby;
        // A primary stepping down holds every write it acknowledged: it may
        // be promoted again (a deposed one learns a higher epoch, and with
        // it that it is not in sync: see `learned_epoch`).
        node.in_sync = true;
        node.resume_sync = self.gate.sync_standby();
        node.sync_standby = false;
        self.save(&node);
        *self.lock_state() = node.clone();
        self.take_role(&node).await?;
        tracing::warn!(reason = why, epoch = node.epoch, "demoted to standby");
        let change = RoleChange {
            role: Role::Standby,
            epoch: node.epoch,
        };
        self.roles.send_replace(change);
        Ok(change)
    }

    /// Another node knows `epoch`: a higher one deposes this primary.
    async fn learned_epoch(&self, epoch: u64, from: &str) {
        let (mine, role) = {
            let s = self.lock_state();
            (s.epoch, s.role)
        };
        if epoch <= mine {
            return;
        }
        if role == Role::Primary
            && let Err(e) = self
                .demote(&format!(
                    "{from} is at epoch {epoch}, this primary at {mine}"
                ))
                .await
        {
            tracing::error!(error = %e, "cannot step down");
        }
        let mut s = self.lock_state();
        if epoch > s.epoch {
            s.epoch = epoch;
            // In sync with an older primary says nothing about this one;
            // and another primary exists, so this one's old standby is not
            // its to wait for.
            s.in_sync = false;
            s.resume_sync = false;
            let copy = s.clone();
            drop(s);
            self.save(&copy);
            metrics::epoch(epoch);
        }
    }

    fn set_in_sync(&self, yes: bool) {
        let mut s = self.lock_state();
        if s.in_sync != yes {
            s.in_sync = yes;
            let copy = s.clone();
            drop(s);
            self.save(&copy);
            metrics::in_sync(yes);
        }
    }

    fn applied(&self, pos: Position) {
        let mut f = self.following.lock().unwrap_or_else(|p| p.into_inner());
        f.applied = pos;
        metrics::last_sequence(pos.seq);
    }

    fn applied_seq(&self) -> u64 {
        self.following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied
            .seq
    }

    fn after_resync(&self, pos: Position) {
        self.applied(pos);
    }

    /// A heartbeat: where the primary is, and whether it holds writes for us.
    fn heard_primary(&self, last_seq: u64, last_at_ms: i64, sync: bool) {
        let caught_up = {
            let mut f = self.following.lock().unwrap_or_else(|p| p.into_inner());
            f.primary_last = last_seq;
            f.primary_last_at_ms = last_at_ms;
            let lag = last_seq.saturating_sub(f.applied.seq);
            let secs = if lag == 0 {
                0.0
            } else {
                (crate::clock::now_millis() - last_at_ms).max(0) as f64 / 1000.0
            };
            metrics::lag(lag, secs);
            lag == 0
        };
        if sync && caught_up {
            self.set_in_sync(true);
        } else if !sync && caught_up && self.cfg.mode == ReplicationMode::Async {
            // Nothing ever waits in async mode: caught up is as good as it gets.
            self.set_in_sync(true);
        }
    }

    fn stop_replication(&self, why: &str) {
        tracing::error!(
            reason = why,
            "replication STOPPED: this standby no longer applies the primary's changes; resync with `erlmcp role standby` (takes a snapshot)"
        );
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
        self.set_in_sync(false);
    }

    /// What this node tells its peer.
    pub(crate) fn peer_status(&self) -> PeerStatus {
        let s = self.lock_state().clone();
        let refusing = s.role == Role::Primary
            && self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
        PeerStatus {
            node: self.node.clone(),
            role: s.role,
            epoch: s.epoch,
            last_seq: self.last_seq(),
            writable: s.role == Role::Primary && !refusing,
        }
    }

    fn last_seq(&self) -> u64 {
        if self.is_standby() {
            self.following
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .applied
                .seq
        } else {
            *self.gate.committed().borrow()
        }
    }

    /// Ready for keepalived: a primary is; a standby only while it may be
    /// promoted (in sync, applying).
    pub(crate) fn ready(&self) -> (bool, &'static str) {
        // The state's guard is dropped before `stopped()`, which takes it
        // again (a std Mutex deadlocks on that).
        let (role, in_sync) = {
            let s = self.lock_state();
            (s.role, s.in_sync)
        };
        match role {
            Role::Primary => (true, "primary"),
            Role::Standby if in_sync && self.stopped().is_none() => (true, "standby in sync"),
            Role::Standby => (false, "standby not in sync"),
        }
    }

    pub(crate) fn status(&self) -> Status {
        let s = self.lock_state().clone();
        let f = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let standby = self.gate.standby();
        let (lag, lag_secs) = match s.role {
            Role::Primary => (
                standby
                    .map(|(acked, tip)| tip.saturating_sub(acked))
                    .unwrap_or(0),
                0.0,
            ),
            Role::Standby => {
                let lag = f.primary_last.saturating_sub(f.applied.seq);
                let secs = if lag == 0 {
                    0.0
                } else {
                    (crate::clock::now_millis() - f.primary_last_at_ms).max(0) as f64 / 1000.0
                };
                (lag, secs)
            }
        };
        metrics::role_gauge(s.role);
        if s.role == Role::Primary {
            let (connected, acked) = standby.map(|(a, _)| (true, a)).unwrap_or((false, 0));
            metrics::standby(connected, acked);
            metrics::lag(lag, lag_secs);
            metrics::in_sync(self.gate.sync_standby());
        } else {
            metrics::in_sync(s.in_sync);
        }
        metrics::last_sequence(self.last_seq());
        Status {
            role: s.role.as_str().into(),
            epoch: s.epoch,
            mode: match self.cfg.mode {
                ReplicationMode::Sync => "sync".into(),
                ReplicationMode::Async => "async".into(),
            },
            last_seq: self.last_seq(),
            standby: standby.map(|(acked_seq, _)| StandbyStatus { acked_seq }),
            in_sync: match s.role {
                Role::Primary => self.gate.sync_standby(),
                Role::Standby => s.in_sync,
            },
            primary_last_seq: (s.role == Role::Standby).then_some(f.primary_last),
            lag_sequences: lag,
            lag_seconds: lag_secs,
            problem: self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            peer: self.peer.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Serves one incoming link (the ops listener accepted and
    /// authenticated it).
    pub(crate) async fn accept(self: &Arc<Self>, link: Link) {
        serve(self.clone(), link).await
    }

    /// The replication child: follows the primary while a standby, checks
    /// the peer, prunes the log. Runs until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let checker = tokio::spawn(check::run(self.clone(), stop.clone()));
        let pruner = tokio::spawn(prune_loop(self.clone(), stop.clone()));
        let mut roles = self.roles();
        loop {
            if self.is_standby() {
                let leg = stop.child_token();
                let follower = tokio::spawn(standby::follow(self.clone(), leg.clone()));
                tokio::select! {
                    _ = stop.cancelled() => { leg.cancel(); let _ = follower.await; break; }
                    _ = roles.changed() => { leg.cancel(); let _ = follower.await; }
                }
            } else {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = roles.changed() => {}
                }
            }
        }
        let _ = checker.await;
        let _ = pruner.await;
    }

    fn problem(&self, why: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// Every minute: drop log entries the standby has and the newest backup
/// holds, or beyond `max_log_entries` whatever they are.
async fn prune_loop(repl: Arc<Replication>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = prune(&repl).await {
            tracing::warn!(error = %e, "pruning the replication log failed");
        }
    }
}

async fn prune(repl: &Replication) -> Result<usize, StoreError> {
    // What a follower still needs: the standby's next entry (a primary
    // without one cannot tell, and keeps everything up to the cap). A
    // standby has no follower, only backups to honour.
    let follower = match repl.role() {
        Role::Primary => repl.gate.standby().map(|(acked, _)| acked + 1),
        Role::Standby => Some(u64::MAX),
    };
    let backups = repl.backups.clone();
    let newest_backup = tokio::task::spawn_blocking(move || newest_backup_seq(&backups))
        .await
        .ok()
        .flatten();
    let max = repl.cfg.max_log_entries;
    let (n, reason) = repl
        .store
        .write_privileged(move |tx| {
            let last = log::last(tx)?.seq;
            let below = match (follower, newest_backup) {
                (Some(f), Some(b)) => f.min(b + 1),
                _ => 0,
            };
            // Past the cap, a follower that far behind takes a snapshot. The
            // last entry always stays: it is where this log stands (an empty
            // log would say "nothing yet").
            let cap = last.saturating_sub(max);
            let reason = if cap > below { "size" } else { "replicated" };
            Ok((log::prune_below(tx, below.max(cap).min(last))?, reason))
        })
        .await?;
    metrics::log_pruned(n as u64, reason);
    if n > 0 {
        tracing::info!(entries = n, reason, "pruned the replication log");
    }
    Ok(n)
}

/// The replication sequence the newest good backup holds.
fn newest_backup_seq(b: &crate::backup::Backups) -> Option<u64> {
    let entries = crate::backup::catalog::list(b).ok()?;
    crate::backup::catalog::latest_good(&entries)
        .and_then(|e| e.manifest.as_ref())
        .map(|m| m.replication_seq)
}
