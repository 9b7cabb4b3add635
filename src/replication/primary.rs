//! The primary's side of a link: answer status and snapshot requests, and
//! stream the log to a standby — what the writer holds for its ack first,
//! then everything committed that it lacks, with a heartbeat every half
//! second — taking its acknowledgements to the gate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Replication;
use super::frame::{Control, Frame, Pos, Refusal, Role};
use super::log::{self, Position};
use super::peer::{Link, LinkError};

/// How often the primary tells the standby where it stands.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A standby silent this long is gone.
const SILENCE: Duration = Duration::from_secs(3);
/// Entries read from the log per catch-up step.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 4 << 20;
/// Where the standby's history and ours part is searched among its last
/// this many entries.
pub(crate) const RECENT: usize = 256;

/// Serves one incoming link until it ends.
pub(crate) async fn serve(repl: Arc<Replication>, mut link: Link) {
    let first = match link.recv_control(Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => {
            return tracing::debug!(error = %e, "a replication link closed before its request");
        }
    };
    let out = match first {
        Control::Status => link
            .control(Control::PeerStatus(repl.peer_status()))
            .await
            .map_err(|e| e.to_string()),
        Control::Snapshot => {
            super::snapshot::send(&link, repl.store.path().to_owned(), repl.data_dir.clone())
                .await
                .map_err(|e| e.to_string())
        }
        Control::Hello {
            node,
            epoch,
            last,
            recent,
            schema,
        } => {
            if let Some(why) = older_schema(schema) {
                tracing::warn!(standby = %node, %why, "a standby with an older schema was refused");
                refuse(&repl, &link, Refusal::OlderSchema, why, None).await
            } else {
                stream(&repl, link, node, epoch, last, recent).await
            }
        }
        other => Err(format!("unexpected first message {other:?}")),
    };
    if let Err(e) = out {
        tracing::warn!(error = %e, "replication link ended");
    }
}

/// A standby whose schema is older than this binary's cannot apply its
/// changes (SQLite would skip what it has no column for): a rolling upgrade
/// upgrades the standby first.
fn older_schema(standby: i64) -> Option<String> {
    let mine = crate::store::migrations::latest_version();
    (standby < mine).then(|| {
        format!(
            "the standby's schema ({standby}) is older than the primary's ({mine}): upgrade the \
             standby first (an older schema cannot apply a newer one's changes)"
        )
    })
}

/// What to do with a standby that says it ends at `last`.
enum Start {
    From(u64),
    Snapshot {
        reason: String,
        discarded: Option<u64>,
    },
}

async fn start_for(repl: &Replication, last: Position, recent: Vec<Pos>) -> Result<Start, String> {
    repl.store
        .read(move |c| {
            let mine = log::last(c)?;
            let oldest = log::oldest(c)?.unwrap_or(mine.seq + 1);
            let agrees = |p: &Position| -> Result<bool, crate::store::StoreError> {
                Ok(p.seq <= mine.seq && log::hash_at(c, p.seq)? == Some(p.hash))
            };
            if agrees(&last)? && last.seq + 1 >= oldest {
                return Ok(Start::From(last.seq + 1));
            }
            if agrees(&last)? {
                let reason = format!("it is at {} and the log starts at {oldest}", last.seq);
                return Ok(Start::Snapshot {
                    reason,
                    discarded: Some(0),
                });
            }
            // Where do the histories part? The standby's newest entries, newest first.
            let mut common = None;
            for p in recent.iter().filter_map(|p| p.position().ok()) {
                if agrees(&p)? {
                    common = Some(p.seq);
                    break;
                }
            }
            let discarded = common.map(|c| last.seq.saturating_sub(c));
            let reason = format!(
                "its history parts from this primary's (it ends at {} epoch {}, this log at {})",
                last.seq, last.epoch, mine.seq
            );
            Ok(Start::Snapshot { reason, discarded })
        })
        .await
        .map_err(|e| e.to_string())
}

async fn refuse(
    repl: &Replication,
    link: &Link,
    refusal: Refusal,
    reason: String,
    discarded: Option<u64>,
) -> Result<(), String> {
    let me = repl.peer_status();
    link.control(Control::Refuse {
        refusal,
        reason,
        node: me.node,
        role: me.role,
        epoch: me.epoch,
        discarded,
    })
    .await
    .map_err(|e| e.to_string())
}

async fn stream(
    repl: &Arc<Replication>,
    mut link: Link,
    node: String,
    epoch: u64,
    last: Pos,
    recent: Vec<Pos>,
) -> Result<(), String> {
    let me = repl.peer_status();
    if epoch > me.epoch {
        repl.learned_epoch(epoch, &format!("standby {node} knows epoch {epoch}"))
            .await;
        return refuse(
            repl,
            &link,
            Refusal::StaleEpoch,
            format!("{node} knows a newer epoch"),
            None,
        )
        .await;
    }
    if me.role != Role::Primary || !me.writable {
        return refuse(
            repl,
            &link,
            Refusal::NotPrimary,
            "this node does not take writes".into(),
            None,
        )
        .await;
    }
    let last = last.position().map_err(|e| e.to_string())?;
    let from = match start_for(repl, last, recent).await? {
        Start::From(from) => from,
        Start::Snapshot { reason, discarded } => {
            tracing::info!(standby = %node, %reason, ?discarded, "the standby must take a snapshot");
            return refuse(repl, &link, Refusal::NeedSnapshot, reason, discarded).await;
        }
    };
    link.control(Control::Welcome {
        node: me.node,
        epoch: me.epoch,
        from,
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(standby = %node, from, "a standby follows");
    let (id, ship) = repl.gate.attach(from - 1);
    let out = pump(repl, &mut link, id, ship, from - 1).await;
    repl.gate.detach(id);
    tracing::info!(standby = %node, reason = %out.as_ref().err().map(|e| e.to_string()).unwrap_or_default(), "the standby stopped following");
    out.map_err(|e| e.to_string())
}

async fn pump(
    repl: &Replication,
    link: &mut Link,
    id: u64,
    mut ship: tokio::sync::mpsc::UnboundedReceiver<log::Entry>,
    mut sent: u64,
) -> Result<(), LinkError> {
    let mut committed = repl.gate.committed();
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            Some(e) = ship.recv() => {
                sent = e.seq;
                link.send(Frame::Entry(e)).await?;
            }
            _ = committed.changed() => sent = catch_up(repl, link, sent).await?,
            f = link.rx.recv() => match f {
                Some(Frame::Control(Control::Ack { seq })) => {
                    heard = Instant::now();
                    repl.gate.ack(id, seq);
                }
                Some(Frame::Control(Control::Stop { reason })) => {
                    tracing::warn!(%reason, "the standby stopped");
                    return Ok(());
                }
                Some(_) => heard = Instant::now(),
                None => return Err(LinkError::Closed),
            },
            _ = beat.tick() => {
                if repl.gate.is_dead(id) {
                    return Err(LinkError::Connect("the link was closed by this primary (the standby lost sync)".into()));
                }
                if heard.elapsed() > SILENCE {
                    return Err(LinkError::Timeout(SILENCE));
                }
                // Entries another process (erlmcp stdio) appended.
                sent = catch_up(repl, link, sent).await?;
                let tip = *committed.borrow();
                let at = repl.store.read(move |c| Ok(log::range(c, tip, 1, 1)?.first().map(|e| e.at_ms))).await.ok().flatten();
                link.control(Control::Heartbeat {
                    epoch: repl.gate.epoch(),
                    last_seq: sent.max(tip),
                    last_at_ms: at.unwrap_or_default(),
                    sync: repl.gate.holds_for(id),
                }).await?;
            }
        }
    }
}

/// Sends every committed entry after `sent`; returns the new `sent`.
async fn catch_up(repl: &Replication, link: &Link, mut sent: u64) -> Result<u64, LinkError> {
    loop {
        let from = sent + 1;
        let batch = repl
            .store
            .read(move |c| log::range(c, from, BATCH, BATCH_BYTES))
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        if batch.is_empty() {
            return Ok(sent);
        }
        for e in batch {
            sent = e.seq;
            link.send(Frame::Entry(e)).await?;
        }
        repl.gate.noticed(sent);
    }
}
