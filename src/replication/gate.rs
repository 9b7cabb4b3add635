//! Where the writer thread and the primary's link to its standby meet. The
//! writer holds each group's commit here until the standby acknowledged
//! the group's log entry (sync mode, once a standby has been in sync), or
//! lets it through at once (async mode; no standby in sync yet; or just
//! promoted, alone). The link task ships what the writer hands it and
//! reports the standby's acknowledgements.
//!
//! The writer thread is a plain thread: it waits on a condition variable,
//! never on the async runtime.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use super::log::Entry;
use super::metrics;
use crate::config::{ReplicationMode, StandbyLoss};
use crate::store::StoreError;

/// The connected standby, as the writer sees it.
struct Attached {
    id: u64,
    /// Every entry up to here is durable on the standby.
    acked: u64,
    /// Entries the writer holds for this standby's ack, in order.
    ship: mpsc::UnboundedSender<Entry>,
    /// The link must close: the standby may hold an entry this node rolled
    /// back, or it stopped answering.
    dead: bool,
}

struct State {
    /// Recording and holding: this node is the primary.
    primary: bool,
    epoch: u64,
    /// A standby has been in sync: losing it blocks (block mode).
    sync_standby: bool,
    standby: Option<Attached>,
    next_id: u64,
    /// The group being held: its sequence, and whether it was shipped.
    pending: Option<(u64, bool)>,
    /// The last sequence this node committed.
    committed: u64,
}

/// What the gate tells the node to persist.
pub(crate) type SyncFlagSaver = Box<dyn Fn(bool) + Send + Sync>;

pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
    mode: ReplicationMode,
    loss: StandbyLoss,
    ack_timeout: Duration,
    committed_tx: watch::Sender<u64>,
    save_sync_flag: SyncFlagSaver,
}

impl Gate {
    pub(crate) fn new(
        mode: ReplicationMode,
        loss: StandbyLoss,
        ack_timeout: Duration,
        committed: u64,
        save_sync_flag: SyncFlagSaver,
    ) -> Gate {
        Gate {
            state: Mutex::new(State {
                primary: false,
                epoch: 0,
                sync_standby: false,
                standby: None,
                next_id: 1,
                pending: None,
                committed,
            }),
            changed: Condvar::new(),
            mode,
            loss,
            ack_timeout,
            committed_tx: watch::channel(committed).0,
            save_sync_flag,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or stops) recording and holding commits as the primary of
    /// `epoch`. Writers waiting here when the node is deposed fail.
    pub(crate) fn set_primary(
        &self,
        primary: bool,
        epoch: u64,
        sync_standby: bool,
        committed: u64,
    ) {
        let mut st = self.lock();
        st.primary = primary;
        st.epoch = epoch;
        st.sync_standby = sync_standby;
        st.committed = committed;
        if !primary && let Some(s) = &mut st.standby {
            s.dead = true;
        }
        self.committed_tx.send_replace(committed);
        self.changed.notify_all();
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.lock().primary
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    pub(crate) fn sync_standby(&self) -> bool {
        self.lock().sync_standby
    }

    /// Writer thread: the group whose log entry is `entry` may commit once
    /// this returns `Ok`; an error rolls it back.
    pub(crate) fn hold(&self, entry: &Entry) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.ack_timeout;
        let mut st = self.lock();
        if !st.primary {
            return Err(deposed());
        }
        st.pending = Some((entry.seq, false));
        if self.mode == ReplicationMode::Async {
            return Ok(());
        }
        let caught_up = |st: &State| {
            st.standby
                .as_ref()
                .is_some_and(|s| !s.dead && s.acked + 1 >= entry.seq)
        };
        if !st.sync_standby && !caught_up(&st) {
            // No standby in sync (yet, or since a promotion): alone.
            return Ok(());
        }
        let started = Instant::now();
        // A child of the commit's span (the writer thread is in it) when
        // the group carries a traced write.
        let span = if crate::logging::traces::in_trace() {
            tracing::info_span!(
                target: crate::logging::traces::TARGET,
                "replication.wait",
                replication.mode = "sync",
                replication.seq = entry.seq,
            )
        } else {
            tracing::Span::none()
        };
        let _in = span.enter();
        let (mut st, ready) = self.wait(st, deadline, |st| !st.primary || caught_up(st));
        if !st.primary {
            return Err(deposed());
        }
        if !ready {
            return self.lost(st, "no standby in sync answered");
        }
        if !st.sync_standby {
            st.sync_standby = true;
            (self.save_sync_flag)(true);
            tracing::info!("the standby is in sync: writes now wait for its acknowledgement");
        }
        let standby = st.standby.as_mut().expect("caught_up means attached");
        let id = standby.id;
        if standby.ship.send(entry.clone()).is_err() {
            standby.dead = true;
        }
        st.pending = Some((entry.seq, true));
        let acked = |st: &State| {
            st.standby
                .as_ref()
                .is_some_and(|s| s.id == id && !s.dead && s.acked >= entry.seq)
        };
        let (st, ok) = self.wait(st, deadline, |st| {
            !st.primary || acked(st) || st.standby.as_ref().is_none_or(|s| s.id != id || s.dead)
        });
        metrics::ack_wait(started.elapsed());
        if !st.primary {
            return Err(deposed());
        }
        if ok && acked(&st) {
            return Ok(());
        }
        self.lost(st, "the standby did not acknowledge in time")
    }

    /// Waits until `done` or the deadline; returns whether `done` held.
    fn wait<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        deadline: Instant,
        done: impl Fn(&State) -> bool,
    ) -> (MutexGuard<'a, State>, bool) {
        loop {
            if done(&st) {
                return (st, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (st, false);
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The standby in sync is gone: block (refuse this write) or degrade
    /// (go on alone), as configured.
    fn lost(&self, mut st: MutexGuard<'_, State>, why: &str) -> Result<(), StoreError> {
        if let Some(s) = &mut st.standby {
            s.dead = true;
        }
        match self.loss {
            StandbyLoss::Block => {
                metrics::write_refused("no_standby");
                Err(StoreError::Refused(format!(
                    "the write was not replicated ({why} within {} ms) and was rolled back on the \
                     primary; the standby may hold it, so its outcome is indeterminate. Writes wait \
                     for the standby (replication.on_standby_loss = \"block\")",
                    self.ack_timeout.as_millis()
                )))
            }
            StandbyLoss::Degrade => {
                st.sync_standby = false;
                (self.save_sync_flag)(false);
                metrics::degraded();
                tracing::warn!(
                    reason = why,
                    "replication degraded: writes go on without the standby (RPO > 0 until it is back in sync)"
                );
                Ok(())
            }
        }
    }

    /// The shipper found committed entries up to `seq` in the log that
    /// another process (`erlmcp stdio`, `erlmcp token`) appended: the
    /// committed tip moves up to them, so the status and the standby's
    /// sync count them too.
    pub(crate) fn noticed(&self, seq: u64) {
        let mut st = self.lock();
        if !st.primary || seq <= st.committed || st.pending.is_some() {
            return;
        }
        st.committed = seq;
        self.committed_tx.send_replace(seq);
        self.changed.notify_all();
    }

    /// Writer thread: how the held group's commit ended.
    pub(crate) fn after_commit(&self, committed: bool) {
        let mut st = self.lock();
        let Some((seq, shipped)) = st.pending.take() else {
            return;
        };
        if committed {
            st.committed = seq;
            self.committed_tx.send_replace(seq);
        } else if shipped && let Some(s) = &mut st.standby {
            // The standby may hold what this node does not: it must resync.
            s.dead = true;
        }
        self.changed.notify_all();
    }

    /// The link: a standby that has everything up to `acked` attaches,
    /// replacing any other. Returns its id and the entries to ship.
    pub(crate) fn attach(&self, acked: u64) -> (u64, mpsc::UnboundedReceiver<Entry>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        if let Some(old) = &mut st.standby {
            old.dead = true;
        }
        st.standby = Some(Attached {
            id,
            acked,
            ship: tx,
            dead: false,
        });
        self.changed.notify_all();
        (id, rx)
    }

    /// The link: the standby has `seq` durably. A standby that catches up
    /// with everything committed is in sync from then on.
    pub(crate) fn ack(&self, id: u64, seq: u64) {
        let mut st = self.lock();
        let committed = st.committed;
        let Some(s) = st.standby.as_mut().filter(|s| s.id == id) else {
            return;
        };
        s.acked = s.acked.max(seq);
        let caught_up = s.acked >= committed && !s.dead;
        if caught_up && st.primary && !st.sync_standby && self.mode == ReplicationMode::Sync {
            st.sync_standby = true;
            (self.save_sync_flag)(true);
            tracing::info!(
                "the standby caught up and is in sync: writes now wait for its acknowledgement"
            );
        }
        self.changed.notify_all();
    }

    /// The link: whether it must close.
    pub(crate) fn is_dead(&self, id: u64) -> bool {
        self.lock()
            .standby
            .as_ref()
            .is_none_or(|s| s.id != id || s.dead)
    }

    pub(crate) fn detach(&self, id: u64) {
        let mut st = self.lock();
        if st.standby.as_ref().is_some_and(|s| s.id == id) {
            st.standby = None;
        }
        self.changed.notify_all();
    }

    /// What the link tells its standby: whether writes wait for it.
    pub(crate) fn holds_for(&self, id: u64) -> bool {
        let st = self.lock();
        st.primary
            && st.sync_standby
            && self.mode == ReplicationMode::Sync
            && st.standby.as_ref().is_some_and(|s| s.id == id && !s.dead)
    }

    /// The last committed sequence, and its changes.
    pub(crate) fn committed(&self) -> watch::Receiver<u64> {
        self.committed_tx.subscribe()
    }

    /// (connected, acked) of the standby, for status and lag.
    pub(crate) fn standby(&self) -> Option<(u64, u64)> {
        let st = self.lock();
        st.standby
            .as_ref()
            .filter(|s| !s.dead)
            .map(|s| (s.acked, st.committed))
    }
}

fn deposed() -> StoreError {
    StoreError::ReadOnly("this node is no longer the primary; nothing was committed".into())
}
