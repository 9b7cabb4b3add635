//! Replication with real processes on loopback: a primary and a standby,
//! writers through MCP, kill -9 at random moments, promotion through
//! `erlmcp role`, and the count that matters: acknowledged writes lost.

mod common;

use common::pair::*;
use rand::RngExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the writers share: where the primary is, whether to pause, what
/// was acknowledged.
struct Shared {
    primary_port: AtomicU16,
    paused: AtomicBool,
    stop: AtomicBool,
    acked: Mutex<HashSet<String>>,
    unknown: AtomicU64,
    refused: AtomicU64,
    /// Sessions a node did not know (a session lost in a failover).
    no_session: AtomicU64,
    in_flight: AtomicU64,
}

fn writer(id: usize, s: Arc<Shared>) {
    let mut w = Writer::new();
    let mut i = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        if s.paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let port = s.primary_port.load(Ordering::Relaxed);
        let url = format!("http://127.0.0.1:{port}/mcp");
        // The session is kept across a failover: the new primary has it.
        if w.session.is_none() && !w.open(&url) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        i += 1;
        let name = format!("w{id}-{i}");
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        let outcome = w.create(&url, &name);
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Outcome::Acked => {
                s.acked.lock().unwrap().insert(name);
            }
            Outcome::Refused => {
                s.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Outcome::NoSession => {
                s.no_session.fetch_add(1, Ordering::Relaxed);
                w.session = None;
            }
            Outcome::Unknown => {
                s.unknown.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Pauses the writers and waits for their requests in flight.
fn pause(s: &Shared) {
    s.paused.store(true, Ordering::SeqCst);
    wait_for("writers to pause", Duration::from_secs(30), || s.in_flight.load(Ordering::SeqCst) == 0);
}

/// 20 kills of the primary at random moments, 8 writers: every
/// acknowledged write is on the new primary, sessions carry on, and once
/// the old primary is back as a standby both databases are equal.
#[test]
fn no_acknowledged_write_is_lost_when_the_primary_is_killed() {
    let tmp = TestDir::new();
    let (mut a, mut b) = pair(tmp.path(), "ack_timeout_ms = 3000");
    a.start();
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    let shared = Arc::new(Shared {
        primary_port: AtomicU16::new(a.mcp),
        paused: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        acked: Mutex::new(HashSet::new()),
        unknown: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        no_session: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    });
    let writers: Vec<_> = (0..8)
        .map(|id| {
            let s = shared.clone();
            std::thread::spawn(move || writer(id, s))
        })
        .collect();
    let mut rng = rand::rng();
    let (mut primary, mut standby) = (&mut a, &mut b);
    let mut rto = Vec::new();
    for round in 0..20 {
        shared.paused.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        let acked_before = shared.acked.lock().unwrap().len();
        primary.kill9();
        let killed = Instant::now();
        // keepalived's notify_master, done by hand.
        wait_for("the standby to be promoted", Duration::from_secs(10), || standby.role("primary", false).0 == 0);
        shared.primary_port.store(standby.mcp, Ordering::SeqCst);
        wait_for("a write on the new primary", Duration::from_secs(20), || {
            shared.acked.lock().unwrap().len() > acked_before
        });
        rto.push(killed.elapsed());
        // The old primary returns, learns the higher epoch, follows.
        primary.start();
        std::mem::swap(&mut primary, &mut standby);
        wait_for("the old primary to follow", Duration::from_secs(30), || {
            standby.replication()["role"] == "standby"
        });
        pause(&shared);
        wait_in_sync(primary, standby, Duration::from_secs(30));
        let acked = shared.acked.lock().unwrap().clone();
        let on_primary = entity_names(&primary.db());
        let lost: Vec<&String> = acked.iter().filter(|n| !on_primary.contains(*n)).collect();
        assert!(lost.is_empty(), "round {round}: {} acknowledged writes lost: {lost:?}", lost.len());
        let (hp, hs) = (table_hashes(&primary.db()), table_hashes(&standby.db()));
        assert_eq!(hp, hs, "round {round}: the databases differ");
    }
    shared.stop.store(true, Ordering::SeqCst);
    shared.paused.store(false, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = shared.acked.lock().unwrap().len();
    eprintln!(
        "nemesis: 20 kills, {acked} writes acknowledged, 0 lost, {} indeterminate, {} refused; \
         crash to first acknowledged write on the new primary: max {:?}",
        shared.unknown.load(Ordering::Relaxed),
        shared.refused.load(Ordering::Relaxed),
        rto.iter().max().unwrap()
    );
    assert!(acked > 100, "too few writes to prove anything: {acked}");
    assert_eq!(
        shared.no_session.load(Ordering::Relaxed),
        0,
        "a session was unknown after a failover"
    );
}
