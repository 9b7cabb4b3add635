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
    wait_for("writers to pause", Duration::from_secs(30), || {
        s.in_flight.load(Ordering::SeqCst) == 0
    });
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
        wait_for(
            "the standby to be promoted",
            Duration::from_secs(10),
            || standby.role("primary", false).0 == 0,
        );
        shared.primary_port.store(standby.mcp, Ordering::SeqCst);
        wait_for(
            "a write on the new primary",
            Duration::from_secs(20),
            || shared.acked.lock().unwrap().len() > acked_before,
        );
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
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged writes lost: {lost:?}",
            lost.len()
        );
        assert_same_tables(primary, standby);
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

fn start_pair(tmp: &TestDir, extra: &str) -> (Node, Node) {
    let (mut a, mut b) = pair(tmp.path(), extra);
    a.start();
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    (a, b)
}

fn write_n(node: &Node, prefix: &str, n: usize) -> Vec<String> {
    let mut w = Writer::new();
    assert!(w.open(&node.url()), "a session on {}", node.name);
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            assert_eq!(w.create(&node.url(), &name), Outcome::Acked, "{name}");
            name
        })
        .collect()
}

/// A row the primary never wrote makes the standby's next apply conflict:
/// replication stops (status, metric, log), nothing is skipped; `erlmcp
/// role standby` resyncs it from a snapshot.
#[test]
fn a_conflict_stops_replication_until_a_resync() {
    let tmp = TestDir::new();
    let (a, b) = start_pair(&tmp, "");
    write_n(&a, "before", 3);
    wait_in_sync(&a, &b, Duration::from_secs(10));
    {
        // Behind erlmcp's back, on the standby's file.
        let c = rusqlite::Connection::open(b.db()).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.execute(
            "INSERT INTO memory_entities (name, entity_type) VALUES ('clash', 'x')",
            [],
        )
        .unwrap();
    }
    let mut w = Writer::new();
    assert!(w.open(&a.url()));
    // The primary's write reaches the standby, which cannot apply it: in
    // sync mode the write is not acknowledged.
    let outcome = w.create(&a.url(), "clash");
    assert_ne!(
        outcome,
        Outcome::Acked,
        "a write the standby could not apply was acknowledged"
    );
    wait_for(
        "the standby to report the conflict",
        Duration::from_secs(10),
        || {
            b.replication()["problem"]
                .as_str()
                .is_some_and(|p| p.contains("conflict"))
        },
    );
    assert!(b.metric("erlmcp_replication_conflicts_total") >= 1.0);
    assert_eq!(
        b.role("standby", false).0,
        0,
        "role standby clears the stop"
    );
    wait_in_sync(&a, &b, Duration::from_secs(20));
    write_n(&a, "after", 2);
    wait_in_sync(&a, &b, Duration::from_secs(10));
    assert_same_tables(&a, &b);
    assert!(
        b.metric("erlmcp_replication_snapshots_total") >= 1.0,
        "the resync took a snapshot"
    );
}

/// A standby whose log holds an entry the primary never had (as when a
/// group was shipped, then rolled back) is told apart by the hash chain:
/// it takes a snapshot, and the discarded entry is counted.
#[test]
fn a_standby_whose_history_parted_resyncs_from_a_snapshot_and_counts_the_discarded() {
    let tmp = TestDir::new();
    let (a, mut b) = start_pair(&tmp, "");
    write_n(&a, "one", 3);
    wait_in_sync(&a, &b, Duration::from_secs(10));
    b.kill9();
    {
        let c = rusqlite::Connection::open(b.db()).unwrap();
        c.execute(
            "INSERT INTO repl_log (seq, epoch, hash, at_ms, changeset)
             SELECT seq + 1, epoch, zeroblob(16), at_ms, x'00' FROM repl_log ORDER BY seq DESC LIMIT 1",
            [],
        )
        .unwrap();
    }
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    assert!(b.metric("erlmcp_replication_snapshots_total") >= 1.0);
    // The planted entry, and perhaps one more: a group the primary shipped
    // as the standby was killed, then rolled back for want of its ack.
    assert!(b.metric("erlmcp_replication_discarded_changes_total") >= 1.0);
    write_n(&a, "two", 2);
    wait_in_sync(&a, &b, Duration::from_secs(10));
    assert_same_tables(&a, &b);
}

/// With `degrade`, writes go on while the standby is away; the log is
/// pruned past `max_log_entries`, so the returning standby is further
/// behind than the log reaches and catches up from a snapshot.
#[test]
fn a_standby_behind_the_pruned_log_catches_up_from_a_snapshot() {
    let tmp = TestDir::new();
    let (mut a, mut b) = start_pair(
        &tmp,
        "on_standby_loss = \"degrade\"\nmax_log_entries = 1000\nack_timeout_ms = 500",
    );
    b.kill9();
    let names = write_n(&a, "away", 1100);
    assert!(a.metric("erlmcp_replication_degraded_total") >= 1.0);
    // The log is pruned when the node starts (and every minute).
    a.kill9();
    a.start();
    wait_for("the log to be pruned", Duration::from_secs(10), || {
        let c = rusqlite::Connection::open(a.db()).unwrap();
        c.query_row("SELECT min(seq) FROM repl_log", [], |r| r.get::<_, i64>(0))
            .unwrap()
            > 1
    });
    // Counted with the other tables' retention: beyond the cap, the
    // standby away (1,100 entity writes and the session's own).
    wait_for(
        "the pruned entries counted",
        Duration::from_secs(10),
        || {
            a.metric("erlmcp_retention_deleted_rows_total{table=\"repl_log\",reason=\"size\"}")
                >= 100.0
        },
    );
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(30));
    assert!(b.metric("erlmcp_replication_snapshots_total") >= 1.0);
    let on_b = entity_names(&b.db());
    assert!(names.iter().all(|n| on_b.contains(n)));
    assert_same_tables(&a, &b);
}

/// Block mode: without its standby the primary acknowledges no write (the
/// client hears "not replicated" after `ack_timeout_ms`); reads go on;
/// when the standby is back, writes resume.
#[test]
fn with_block_writes_wait_for_the_standby_and_reads_go_on() {
    let tmp = TestDir::new();
    let (a, mut b) = start_pair(&tmp, "ack_timeout_ms = 800");
    write_n(&a, "kept", 2);
    let mut w = Writer::new();
    assert!(w.open(&a.url()));
    b.kill9();
    let outcome = w.create(&a.url(), "blocked");
    assert_eq!(
        outcome,
        Outcome::Unknown,
        "not replicated: indeterminate, not acknowledged"
    );
    assert!(
        !entity_names(&a.db()).contains("blocked"),
        "rolled back on the primary"
    );
    // A read on a session opened before (opening one is a write).
    assert!(w.open_nodes(&a.url(), "kept-0"), "reads go on");
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    write_n(&a, "resumed", 2);
}

/// Block mode, the standby gone, a write waiting for it: the primary is
/// still ready (keepalived's track script), since it is the node that must
/// keep the address; a failed check would have keepalived demote it.
#[test]
fn with_block_the_primary_waiting_for_its_standby_stays_ready() {
    let tmp = TestDir::new();
    let (a, mut b) = start_pair(&tmp, "ack_timeout_ms = 4000");
    let mut w = Writer::new();
    assert!(w.open(&a.url()));
    b.kill9();
    let url = a.url();
    let waiting = std::thread::spawn(move || w.create(&url, "waits"));
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new(common::BIN)
        .args(["ready", "--ops", &format!("127.0.0.1:{}", a.ops)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(waiting.join().unwrap(), Outcome::Unknown);
    assert_eq!(a.replication()["role"], "primary");
}

/// Degrade: the primary goes on alone (counted), and the standby catches
/// up when it returns.
#[test]
fn with_degrade_writes_go_on_and_the_standby_catches_up() {
    let tmp = TestDir::new();
    let (a, mut b) = start_pair(&tmp, "on_standby_loss = \"degrade\"\nack_timeout_ms = 500");
    b.kill9();
    let names = write_n(&a, "alone", 5);
    assert!(a.metric("erlmcp_replication_degraded_total") >= 1.0);
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    let on_b = entity_names(&b.db());
    assert!(names.iter().all(|n| on_b.contains(n)));
    assert_same_tables(&a, &b);
}

/// A standby promoted while the old primary still runs: the old primary
/// learns the higher epoch from its peer check and stops writing; nothing
/// it acknowledged is missing from the new primary.
#[test]
fn a_deposed_primary_stops_writing_and_loses_nothing_it_acknowledged() {
    let tmp = TestDir::new();
    let (a, b) = start_pair(&tmp, "ack_timeout_ms = 1000");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, acked, stop) = (a.url(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = Writer::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if w.session.is_none() && !w.open(&url) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                i += 1;
                let name = format!("old-{i}");
                if w.create(&url, &name) == Outcome::Acked {
                    acked.lock().unwrap().push(name);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.role("primary", false).0, 0);
    wait_for(
        "the old primary to step down",
        Duration::from_secs(5),
        || a.replication()["role"] == "standby",
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let mut w = Writer::new();
    assert!(!w.open(&a.url()), "the deposed primary takes no session");
    wait_in_sync(&b, &a, Duration::from_secs(20));
    let on_b = entity_names(&b.db());
    let acked = acked.lock().unwrap();
    assert!(!acked.is_empty());
    let lost: Vec<&String> = acked.iter().filter(|n| !on_b.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged by the deposed primary, missing: {lost:?}"
    );
}

/// Tokens are replicated like any table: one made on the primary works on
/// the standby once it is promoted, and one revoked on the primary is
/// refused there too (a revocation is effective on every node).
#[test]
fn a_token_revoked_on_the_primary_is_refused_by_the_promoted_standby() {
    let tmp = TestDir::new();
    let (a, b) = start_pair(&tmp, "\n[auth]\nmode = \"tokens\"");
    let token = |node: &Node, args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(["token"])
            .args(args)
            .arg("--config")
            .arg(&node.config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    let (code, kept) = token(&a, &["create", "--name", "kept", "--scope", "*"]);
    assert_eq!(code, Some(0));
    let (code, gone) = token(&a, &["create", "--name", "gone", "--scope", "*"]);
    assert_eq!(code, Some(0));
    assert_ne!(
        token(&b, &["create", "--name", "x", "--scope", "*"]).0,
        Some(0),
        "a standby refuses"
    );
    assert_eq!(token(&a, &["revoke", "gone"]).0, Some(0));
    // The command line's writes go out with the daemon's next shipment.
    wait_for(
        "the revocation on the standby",
        Duration::from_secs(10),
        || {
            let c = rusqlite::Connection::open(b.db()).unwrap();
            c.query_row(
                "SELECT count(*) FROM tokens WHERE name = 'gone' AND revoked_at IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
                == 1
        },
    );
    wait_in_sync(&a, &b, Duration::from_secs(20));
    assert_eq!(b.role("primary", false).0, 0);
    wait_for("b to serve as primary", Duration::from_secs(10), || {
        b.replication()["role"] == "primary"
    });
    let initialize = |secret: &str| {
        common::post_raw(
            &b.url(),
            &[
                ("Accept", common::ACCEPT_BOTH),
                ("Authorization", &format!("Bearer {secret}")),
            ],
            serde_json::json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": { "name": "t", "version": "1" } } })
            .to_string()
            .as_bytes(),
        )
    };
    let r = initialize(&kept);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = initialize(&gone);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("token revoked")
    );
}

/// An entry of the old primary arrives while the standby is being
/// promoted (held between taking the role and announcing it): it is not
/// applied once the node is primary (it would be recorded again as the new
/// primary's own, and the old primary would conflict on it when it
/// follows); the old primary's write is refused, not acknowledged.
#[test]
fn an_entry_arriving_during_promotion_is_not_applied_twice() {
    let tmp = TestDir::new();
    let (mut a, mut b) = pair(tmp.path(), "ack_timeout_ms = 3000");
    b.env.push((
        "TEST_ERLMCP_PAUSE_AT".into(),
        "promote.before_announce:3000".into(),
    ));
    a.start();
    b.start();
    let mut w = Writer::new();
    assert!(w.open(&a.url()));
    wait_in_sync(&a, &b, Duration::from_secs(30));
    let (ops, log) = (b.ops, b.log.clone());
    let promote = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_erlmcp"))
            .args(["role", "primary", "--ops", &format!("127.0.0.1:{ops}")])
            .output()
            .unwrap()
    });
    wait_for("the promotion to pause", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("promote.before_announce"))
    });
    let outcome = w.create(&a.url(), "racing");
    assert!(promote.join().unwrap().status.success());
    assert_ne!(
        outcome,
        Outcome::Acked,
        "acknowledged, and not on the new primary"
    );
    wait_for(
        "the old primary to step down",
        Duration::from_secs(10),
        || a.replication()["role"] == "standby",
    );
    assert_same_tables(&b, &a);
    assert!(!entity_names(&b.db()).contains("racing"));
}

/// One daemon per data directory: a second `serve` is refused with a
/// clear error and exit 75.
#[test]
fn a_second_daemon_on_the_same_data_directory_is_refused() {
    let tmp = TestDir::new();
    let (a, _b) = pair(tmp.path(), "");
    let mut a = a;
    a.start();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--ops-listen"])
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--data-dir")
        .arg(&a.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another erlmcp daemon serves"), "{err}");
}

/// A table the session extension cannot record (no primary key) is refused
/// when replication starts, by name.
#[test]
fn replication_refuses_a_schema_with_a_table_without_primary_key() {
    let tmp = TestDir::new();
    let (a, _b) = pair(tmp.path(), "");
    {
        let c = rusqlite::Connection::open(a.db()).unwrap();
        c.execute_batch("CREATE TABLE loose (x TEXT)").unwrap();
    }
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a primary key") && err.contains("loose"),
        "{err}"
    );
}

fn stdio_call(c: &mut common::StdioClient, name: &str) -> serde_json::Value {
    use serde_json::json;
    c.send(
        &json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": { "name": "t", "version": "1" } } }),
    );
    c.until_response(&json!(1));
    c.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    c.send(
        &json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "create_entities", "arguments": { "entities": [
            { "name": name, "entityType": "t", "observations": ["o"] }] } } }),
    );
    c.until_response(&json!(2))
}

/// `erlmcp stdio` beside the daemon: on the primary its writes enter the
/// log and reach the standby; on the standby they are refused.
#[test]
fn stdio_writes_beside_the_primary_are_replicated_and_beside_a_standby_refused() {
    let tmp = TestDir::new();
    let (a, b) = start_pair(&tmp, "");
    let cfg = |n: &Node| n.config.to_str().unwrap().to_owned();
    let mut c = common::StdioClient::start(&a.dir, &["--config", &cfg(&a)]);
    let r = stdio_call(&mut c, "from-stdio");
    assert!(
        r.get("result").is_some() && r["result"]["isError"] != true,
        "{r}"
    );
    wait_for(
        "the stdio write on the standby",
        Duration::from_secs(10),
        || entity_names(&b.db()).contains("from-stdio"),
    );
    let mut d = common::StdioClient::start(&b.dir, &["--config", &cfg(&b)]);
    let r = stdio_call(&mut d, "on-standby");
    assert_eq!(r["error"]["code"], -32060, "{r}");
    assert!(!entity_names(&b.db()).contains("on-standby"));
}

/// keepalived's track script asks a standby in sync whether it is ready,
/// every second: it answers yes, and goes on answering everything else
/// (the readiness check once held the state's lock while taking it again).
#[test]
fn a_standby_in_sync_is_ready_and_stays_responsive() {
    let tmp = TestDir::new();
    let (a, b) = start_pair(&tmp, "");
    for node in [&a, &b] {
        for _ in 0..3 {
            let out = std::process::Command::new(common::BIN)
                .args(["ready", "--ops", &format!("127.0.0.1:{}", node.ops)])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}: {out:?}", node.name);
        }
    }
    assert_eq!(b.replication()["role"], "standby");
    write_n(&a, "after-ready", 3);
    wait_in_sync(&a, &b, Duration::from_secs(10));
}

/// What keepalived's hooks run: `erlmcp ready|role --config` with the
/// daemon's configuration, outside the service, so without its credential
/// (`$CREDENTIALS_DIRECTORY`). The configuration is valid there
/// (`check-config` too, as NixOS runs it at build time); only `serve`
/// needs the secret, and refuses to start without it (78).
#[test]
fn hooks_read_the_config_without_the_credential() {
    let tmp = TestDir::new();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let (mcp, ops) = (common::free_port(), common::free_port());
    let config = tmp.path().join("a.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"a\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{mcp}\"\n\
             [ops]\nlisten = \"127.0.0.1:{ops}\"\n[replication]\nenabled = true\n\
             peer = \"127.0.0.1:{}\"\ninitial_role = \"primary\"\n",
            tmp.path().join("a").display(),
            common::free_port()
        ),
    )
    .unwrap();
    let erlmcp = |args: &[&str], creds: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(args).env_remove("CREDENTIALS_DIRECTORY");
        if let Some(d) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", d);
        }
        cmd
    };
    let cfg = config.to_str().unwrap();
    let out = erlmcp(&["check-config", cfg], None).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = erlmcp(&["serve", "--config", cfg], None).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replication-secret"), "{err}");

    // The credential as systemd passes it.
    let creds = tmp.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::copy(&secret, creds.join("replication-secret")).unwrap();
    let mut daemon = erlmcp(&["serve", "--config", cfg], Some(&creds))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the daemon", Duration::from_secs(20), || {
        erlmcp(&["ready", "--config", cfg], None)
            .output()
            .unwrap()
            .status
            .success()
    });
    let out = erlmcp(&["role", "primary", "--config", cfg], None)
        .output()
        .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("primary at epoch"));
}

/// keepalived's fault hook then its master hook (a flap, erlmcp's own
/// restart) demote and re-promote the primary while its standby is away:
/// in block mode it still waits for that standby, it does not write alone.
#[test]
fn a_primary_that_stepped_down_and_back_up_still_waits_for_its_standby() {
    let tmp = TestDir::new();
    let (a, mut b) = start_pair(&tmp, "ack_timeout_ms = 800");
    let mut w = Writer::new();
    assert!(w.open(&a.url()));
    b.kill9();
    assert_eq!(a.role("standby", false).0, 0);
    assert_eq!(a.role("primary", false).0, 0);
    // The session opened before is still known (sessions are in the
    // database); until the node serves again it answers 503.
    let mut outcome = Outcome::Refused;
    for _ in 0..50 {
        outcome = w.create(&a.url(), "alone");
        if outcome != Outcome::Refused {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        outcome,
        Outcome::Unknown,
        "acknowledged without the standby"
    );
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    assert_eq!(w.create(&a.url(), "together"), Outcome::Acked);
}
