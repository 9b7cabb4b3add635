//! Supervision under injected faults (needs `--features fault-injection`):
//! a panicking writer thread is restarted and counted; a hung writer stops
//! the systemd watchdog pings so systemd would kill the process, and the next
//! start counts that end (`erlmcp_unclean_exits_total{cause="watchdog"}`).

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn restarts_of(ops: u16, child: &str) -> f64 {
    let r = ops_get(ops, "/metrics");
    let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == "erlmcp_child_restarts_total" && s.labels.get("child") == Some(child))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .unwrap_or(0.0)
}

#[test]
fn a_panicking_writer_is_restarted_counted_and_writes_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(&tmp.path().join("d"), mcp, ops, &[], &[]);
    wait_port(mcp);
    let url = format!("http://127.0.0.1:{mcp}/mcp");
    let (mut s, _) = Session::open(&url, "2025-11-25");
    assert_eq!(restarts_of(ops, "store"), 0.0);
    assert_eq!(ops_post(ops, "/fault/panic-writer").status, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while restarts_of(ops, "store") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the store child was not restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.call(
        "create_entities",
        json!({ "entities": [{ "name": "after", "entityType": "t", "observations": [] }] }),
    );
    assert_eq!(
        r.result()["structuredContent"]["entities"][0]["name"],
        "after"
    );
    let status = ops_get(ops, "/status").result_json();
    assert_eq!(status["children"]["store"]["restarts"], 1);
    assert!(
        status["children"]["store"]["last_exit"]
            .as_str()
            .unwrap()
            .contains("writer")
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_hung_writer_stops_the_watchdog_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let notify = Notify::new();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(
        &tmp.path().join("d"),
        mcp,
        ops,
        &[],
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    notify.wait_for("READY=1", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(notify.count("WATCHDOG=1") >= 2, "pings while healthy");
    assert_eq!(ops_post(ops, "/fault/hang-writer").status, 202);
    // The store child beats every second; the watchdog wants beats younger
    // than half its interval. Allow for that, then expect silence.
    std::thread::sleep(Duration::from_millis(2500));
    let before = notify.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        notify.count("WATCHDOG=1"),
        before,
        "pings must stop while the writer hangs"
    );
    assert_eq!(
        ops_get(ops, "/readyz").status,
        503,
        "not ready with a hung writer"
    );
    assert_eq!(
        ops_get(ops, "/healthz").status,
        200,
        "still alive: systemd decides via the watchdog"
    );
    // systemd's kill; the next daemon of this directory says why the last
    // one ended, and counts it across the restart.
    child.kill().unwrap();
    child.wait().unwrap();
    let unclean = |ops: u16, cause: &str| {
        let body = ops_get(ops, "/metrics").body;
        let line = format!("erlmcp_unclean_exits_total{{cause=\"{cause}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map(|v| v.trim().to_owned())
    };
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(&tmp.path().join("d"), mcp, ops, &[], &[]);
    wait_port(ops);
    assert_eq!(unclean(ops, "watchdog").as_deref(), Some("1"));
    assert_eq!(unclean(ops, "crash").as_deref(), Some("0"));
    // A kill without the watchdog withholding is a crash.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(&tmp.path().join("d"), mcp, ops, &[], &[]);
    wait_port(ops);
    assert_eq!(unclean(ops, "watchdog").as_deref(), Some("1"));
    assert_eq!(unclean(ops, "crash").as_deref(), Some("1"));
    // A clean stop is not counted.
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(0));
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(&tmp.path().join("d"), mcp, ops, &[], &[]);
    wait_port(ops);
    assert_eq!(unclean(ops, "crash").as_deref(), Some("1"));
    child.kill().unwrap();
    child.wait().unwrap();
}
