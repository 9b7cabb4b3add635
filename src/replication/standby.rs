//! The standby's side: follow the primary. Say where this log ends, then
//! apply what arrives in order — each batch in one transaction on the
//! writer (durable with `synchronous=FULL`), checked against the hash chain
//! — and acknowledge the last entry once it is durable. A conflict stops
//! replication loudly; a history that parted from the primary's, or a gap,
//! is mended by a snapshot.

use rusqlite::Transaction;
use rusqlite::session::{ConflictAction, ConflictType};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::frame::{Control, Frame, Pos, Refusal};
use super::log::{self, Entry, Position};
use super::peer::{Link, LinkError};
use super::primary::RECENT;
use super::{Replication, metrics};
use crate::store::StoreError;

/// Entries applied in one transaction at most.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 8 << 20;
/// The primary heartbeats every half second; this much silence ends the link.
const SILENCE: Duration = Duration::from_secs(3);

/// Why applying stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// The changeset does not fit this database: replication stops.
    #[error("conflict applying entry {seq}: {detail}")]
    Conflict { seq: u64, detail: String },
    /// The entry does not follow this log (its history parted, or a gap).
    #[error("entry {seq} does not follow this log (it ends at {at}): {why}")]
    Mismatch {
        seq: u64,
        at: u64,
        why: &'static str,
    },
    /// The node was promoted while entries were on their way: the old
    /// primary's stream ends here.
    #[error("this node is no longer a standby")]
    Promoted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Follows the primary until `stop`, or until this node is no standby.
pub(crate) async fn follow(repl: Arc<Replication>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() && repl.is_standby() {
        if let Some(why) = repl.stopped() {
            tracing::debug!(%why, "replication stopped; waiting for `erlmcp role standby`");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        match session(&repl, &stop).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::debug!(error = %e, "following the primary");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One link to the primary, from hello to its end.
async fn session(repl: &Arc<Replication>, stop: &CancellationToken) -> Result<(), LinkError> {
    if repl.resync.swap(false, std::sync::atomic::Ordering::SeqCst) {
        repl.set_in_sync(false);
        if let Err(e) = resync(repl).await {
            repl.resync.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
    }
    let (last, recent) = repl
        .store
        .read(|c| Ok((log::last(c)?, log::recent(c, RECENT)?)))
        .await
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    let mut link = repl.connector.connect().await?;
    link.control(Control::Hello {
        node: repl.node.clone(),
        epoch: repl.epoch(),
        last: Pos::of(&last),
        recent: recent
            .iter()
            .map(|(seq, hash)| Pos {
                seq: *seq,
                epoch: 0,
                hash: hex::encode(hash),
            })
            .collect(),
        schema: crate::store::migrations::latest_version(),
    })
    .await?;
    match link.recv_control(Duration::from_secs(10)).await? {
        Control::Welcome { node, epoch, from } => {
            repl.learned_epoch(epoch, &format!("primary {node}")).await;
            tracing::info!(primary = %node, epoch, from, "following the primary");
            stream(repl, &mut link, stop).await
        }
        Control::Refuse {
            refusal: Refusal::NeedSnapshot,
            reason,
            discarded,
            node,
            ..
        } => {
            repl.set_in_sync(false);
            if let Some(n) = discarded.filter(|n| *n > 0) {
                metrics::discarded(n);
                tracing::warn!(primary = %node, discarded = n, "this node's log holds {n} entries the primary never acknowledged; they are discarded by the resync");
            }
            tracing::warn!(primary = %node, %reason, "taking a snapshot from the primary");
            resync(repl).await
        }
        Control::Refuse {
            refusal: Refusal::OlderSchema,
            reason,
            node,
            ..
        } => {
            // Nothing changes until this node runs a newer release.
            repl.stop_replication(&format!("primary {node} refused: {reason}"));
            Err(LinkError::Connect(reason))
        }
        Control::Refuse {
            refusal,
            reason,
            node,
            role,
            epoch,
            ..
        } => {
            repl.learned_epoch(epoch, &format!("peer {node}")).await;
            Err(LinkError::Connect(format!(
                "{node} ({}, epoch {epoch}) refused: {refusal:?}: {reason}",
                role.as_str()
            )))
        }
        other => Err(LinkError::Unexpected(format!("{other:?}"), "welcome")),
    }
}

async fn resync(repl: &Arc<Replication>) -> Result<(), LinkError> {
    let mut link = repl.connector.connect().await?;
    link.control(Control::Snapshot).await?;
    match super::snapshot::receive(&mut link, &repl.store).await {
        Ok(pos) => {
            metrics::snapshot_installed();
            repl.after_resync(pos);
            tracing::info!(
                seq = pos.seq,
                epoch = pos.epoch,
                "snapshot installed; following from there"
            );
            Ok(())
        }
        Err(e) => Err(LinkError::Connect(format!("snapshot: {e}"))),
    }
}

async fn stream(
    repl: &Arc<Replication>,
    link: &mut Link,
    stop: &CancellationToken,
) -> Result<(), LinkError> {
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            f = link.recv(SILENCE) => f?,
        };
        match frame {
            Frame::Entry(first) => {
                let batch = more(link, first);
                let n = batch.len();
                let committed_at: Vec<i64> = batch.iter().map(|e| e.at_ms).collect();
                match apply(repl, batch).await {
                    Ok(pos) => {
                        committed_at.into_iter().for_each(metrics::apply_delay);
                        repl.applied(pos);
                        link.control(Control::Ack { seq: pos.seq }).await?;
                        tracing::trace!(entries = n, seq = pos.seq, "applied");
                    }
                    Err(ApplyError::Conflict { seq, detail }) => {
                        let why = format!("conflict applying entry {seq}: {detail}");
                        metrics::conflict();
                        repl.stop_replication(&why);
                        let _ = link
                            .control(Control::Stop {
                                reason: why.clone(),
                            })
                            .await;
                        return Err(LinkError::Connect(why));
                    }
                    Err(e) => return Err(LinkError::Connect(e.to_string())),
                }
            }
            Frame::Control(Control::Heartbeat {
                epoch,
                last_seq,
                last_at_ms,
                sync,
            }) => {
                if epoch < repl.epoch() {
                    return Err(LinkError::Connect(format!(
                        "the primary's epoch {epoch} is stale"
                    )));
                }
                repl.heard_primary(last_seq, last_at_ms, sync);
                // The answer keeps the link alive both ways.
                let applied = repl.applied_seq();
                link.control(Control::Ack { seq: applied }).await?;
            }
            Frame::Control(Control::Stop { reason }) => {
                return Err(LinkError::Connect(format!("the primary stopped: {reason}")));
            }
            other => {
                return Err(LinkError::Unexpected(
                    format!("{other:?}"),
                    "an entry or a heartbeat",
                ));
            }
        }
    }
}

/// `first` and whatever else already arrived, up to a batch.
fn more(link: &mut Link, first: Entry) -> Vec<Entry> {
    let mut bytes = first.changeset.len();
    let mut batch = vec![first];
    while batch.len() < BATCH && bytes < BATCH_BYTES {
        match link.rx.try_recv() {
            Ok(Frame::Entry(e)) => {
                bytes += e.changeset.len();
                batch.push(e);
            }
            // A control frame waits for the next round (heartbeats are
            // idempotent; nothing else comes mid-stream).
            Ok(_) | Err(_) => break,
        }
    }
    batch
}

/// Applies `batch` in one transaction on the writer; the position after it.
async fn apply(repl: &Replication, batch: Vec<Entry>) -> Result<Position, ApplyError> {
    let standby = repl.still_standby();
    repl.store
        .write_privileged(move |tx| {
            // Decided on the writer, in order with promotion's fence: an
            // entry applied once the node is primary would be recorded
            // again as the new primary's own.
            if !standby() {
                return Ok(Err(ApplyError::Promoted));
            }
            Ok(apply_in(tx, batch))
        })
        .await?
}

fn apply_in(tx: &Transaction<'_>, batch: Vec<Entry>) -> Result<Position, ApplyError> {
    let mut at = log::last(tx)?;
    for e in batch {
        if e.seq <= at.seq && log::hash_at(tx, e.seq)? == Some(e.hash) {
            continue; // already here (a resend after a reconnect)
        }
        // Entries of older epochs are history like any other: the chain says
        // whether they are the primary's; the primary's own epoch was
        // checked when the link opened and at every heartbeat.
        let mismatch = |why| ApplyError::Mismatch {
            seq: e.seq,
            at: at.seq,
            why,
        };
        if !e.follows(&at) {
            return Err(mismatch(if e.seq == at.seq + 1 {
                "hash"
            } else {
                "sequence"
            }));
        }
        changeset(tx, &e)?;
        log::insert(tx, &e)?;
        at = e.position();
    }
    Ok(at)
}

/// Applies one changeset; any conflict aborts it (never skip, never replace).
fn changeset(tx: &Transaction<'_>, e: &Entry) -> Result<(), ApplyError> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let record = seen.clone();
    let out = tx.apply_strm(
        &mut &e.changeset[..],
        None::<fn(&str) -> bool>,
        move |kind: ConflictType, item| {
            let table = item
                .op()
                .map(|o| o.table_name().to_owned())
                .unwrap_or_default();
            *record.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{kind:?} on table {table}"));
            ConflictAction::SQLITE_CHANGESET_ABORT
        },
    );
    match out {
        Ok(()) => Ok(()),
        Err(err) => {
            let detail = seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| err.to_string());
            Err(ApplyError::Conflict { seq: e.seq, detail })
        }
    }
}
