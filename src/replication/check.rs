//! Asking the peer, every `peer_check_ms`, who it is: keepalived's notify
//! hooks are not the source of truth (it can leave two MASTERs), epochs
//! are. A primary that sees a primary of a higher epoch steps down; of an
//! equal epoch, it refuses writes until one of them steps down.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::frame::{Control, PeerStatus, Role};
use super::{PeerView, Replication, metrics};

pub(super) async fn run(repl: Arc<Replication>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(repl.cfg.peer_check_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = ask(&repl).await;
        judge(&repl, seen.as_ref()).await;
    }
}

pub(super) async fn ask(repl: &Replication) -> Option<PeerStatus> {
    let limit = Duration::from_millis(repl.cfg.peer_check_ms.max(500));
    let asked = async {
        let mut link = repl.connector.connect().await.ok()?;
        link.control(Control::Status).await.ok()?;
        match link.recv_control(limit).await.ok()? {
            Control::PeerStatus(p) => Some(p),
            _ => None,
        }
    };
    tokio::time::timeout(limit, asked).await.ok().flatten()
}

async fn judge(repl: &Replication, seen: Option<&PeerStatus>) {
    let address = repl.cfg.peer.clone().unwrap_or_default();
    *repl.peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(PeerView {
        address,
        reachable: seen.is_some(),
        node: seen.map(|p| p.node.clone()),
        role: seen.map(|p| p.role.as_str().to_owned()),
        epoch: seen.map(|p| p.epoch),
        last_seq: seen.map(|p| p.last_seq),
    });
    let me = repl.peer_status();
    let primaries = u64::from(me.role == Role::Primary)
        + u64::from(seen.is_some_and(|p| p.role == Role::Primary));
    metrics::peer(seen.is_some(), primaries);
    let Some(peer) = seen else { return };
    if peer.epoch > me.epoch {
        repl.learned_epoch(peer.epoch, &format!("peer {}", peer.node))
            .await;
        return;
    }
    let two = me.role == Role::Primary && peer.role == Role::Primary;
    let refusing = repl
        .problem
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    if two && peer.epoch == me.epoch {
        if !refusing {
            let why = format!(
                "two primaries at epoch {}: this node and {}; writes are refused until one steps down (`erlmcp role standby`)",
                me.epoch, peer.node
            );
            tracing::error!(reason = %why, "split brain");
            repl.store.set_read_only(Some(&why));
            repl.problem(Some(why));
        }
    } else if refusing && me.role == Role::Primary {
        tracing::warn!("the other primary stepped down: writes are taken again");
        repl.store.set_read_only(None);
        repl.problem(None);
    }
    if two && peer.epoch < me.epoch {
        tracing::warn!(peer = %peer.node, epoch = peer.epoch, "the peer still claims primary at an older epoch; it must step down");
    }
}
