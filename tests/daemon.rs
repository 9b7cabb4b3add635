//! `erlmcp serve` as systemd sees it: these tests play systemd's part
//! (NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS, signals) against the real
//! binary, and read its ops listener.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

#[test]
fn ready_only_when_serving_then_watchdog_reload_and_stop() {
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
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    notify.wait_for("READY=1", Duration::from_secs(20));
    // The moment READY arrives, both listeners accept and the database answers.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", mcp)).is_ok(),
        "READY before the MCP listener"
    );
    assert_eq!(ops_get(ops, "/readyz").status, 200);
    let first = notify.messages();
    let ready_msg = first.iter().find(|(_, m)| m.contains("READY=1")).unwrap();
    assert!(
        ready_msg.1.contains("STATUS="),
        "a human status line with READY: {}",
        ready_msg.1
    );

    // Watchdog pings at half the 400 ms interval.
    std::thread::sleep(Duration::from_millis(1500));
    let pings = notify.count("WATCHDOG=1");
    assert!(pings >= 3, "expected about 7 pings in 1.5 s, got {pings}");

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let readies = notify.count("READY=1");
    signal(&child, libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", Duration::from_secs(5));
    let msg = notify
        .messages()
        .into_iter()
        .find(|(t, _)| *t == reloading)
        .unwrap()
        .1;
    assert!(msg.contains("MONOTONIC_USEC="), "{msg}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while notify.count("READY=1") == readies {
        assert!(Instant::now() < deadline, "no READY=1 after the reload");
        std::thread::sleep(Duration::from_millis(10));
    }

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(&child, libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), Some(0));
}

#[test]
fn sockets_passed_by_systemd_are_used() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ops = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (mcp_port, ops_port) = (
        mcp.local_addr().unwrap().port(),
        ops.local_addr().unwrap().port(),
    );
    use std::os::fd::AsRawFd;
    let (mfd, ofd) = (mcp.as_raw_fd(), ops.as_raw_fd());
    // LISTEN_PID must be the server's own pid: a shell sets it to its $$
    // and then becomes erlmcp with exec.
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#, BIN, "serve"])
        .args(["--data-dir", tmp.path().join("d").to_str().unwrap()])
        // Flags that would bind elsewhere: the passed sockets must win.
        .args(["--listen", "127.0.0.1:1", "--ops-listen", "127.0.0.1:2"])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "ops:mcp")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // systemd passes sockets from fd 3 on. Move both out of the way
            // first: either may already be 3 or 4.
            let (o, m) = (
                libc::fcntl(ofd, libc::F_DUPFD, 100),
                libc::fcntl(mfd, libc::F_DUPFD, 100),
            );
            if o < 0 || m < 0 || libc::dup2(o, 3) < 0 || libc::dup2(m, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(o);
            libc::close(m);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop((mcp, ops));
    let url = format!("http://127.0.0.1:{mcp_port}/mcp");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ops_get_ok(ops_port) {
            break;
        }
        assert!(Instant::now() < deadline, "ops socket never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut s, _) = Session::open(&url, "2025-11-25");
    assert!(s.request("tools/list", json!({})).result()["tools"].is_array());
    child.kill().unwrap();
    child.wait().unwrap();
}

fn ops_get_ok(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        && ops_get(port, "/healthz").status == 200
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(&tmp.path().join("d"), mcp, ops, &[], &[]);
    wait_port(mcp);
    let (mut s, _) = Session::open(&format!("http://127.0.0.1:{mcp}/mcp"), "2025-11-25");
    s.call("read_graph", json!({}));
    s.request("no/such", json!({}));
    let r = ops_get(ops, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for want in [
        "erlmcp_requests_total",
        "erlmcp_sessions_active",
        "erlmcp_database_size_bytes",
        "erlmcp_wal_size_bytes",
        "erlmcp_build_info",
        "erlmcp_requests_in_flight",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    // The parser folds `_bucket` lines into one histogram value.
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "erlmcp_request_duration_seconds"
                && matches!(s.value, prometheus_parse::Value::Histogram(_))),
        "latency is a histogram"
    );
    assert!(r.body.contains("erlmcp_request_duration_seconds_bucket{"));
    let calls = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "erlmcp_requests_total" && s.labels.get("method") == Some("tools/call")
        })
        .expect("tools/call counted");
    assert!(matches!(calls.value, prometheus_parse::Value::Counter(v) if v >= 1.0));
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "erlmcp_requests_total"
                && s.labels.get("method") == Some("other")
                && s.labels.get("outcome") == Some("client_error"))
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_applies_a_valid_config_keeps_sessions_and_rejects_an_invalid_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("erlmcp.toml");
    std::fs::write(&cfg, "[[prompts]]\nname = 'first'\ntemplate = 'one'\n").unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(
        &tmp.path().join("d"),
        mcp,
        ops,
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    wait_port(mcp);
    let url = format!("http://127.0.0.1:{mcp}/mcp");
    let (mut s, _) = Session::open(&url, "2025-11-25");
    let names = |s: &mut Session| -> Vec<String> {
        s.request("prompts/list", json!({})).result()["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&mut s), ["first"]);
    std::fs::write(&cfg, "[[prompts]]\nname = 'first'\ntemplate = 'one'\n[[prompts]]\nname = 'second'\ntemplate = 'two'\n").unwrap();
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&mut s) != ["first", "second"] {
        assert!(Instant::now() < deadline, "reload not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        &cfg,
        "[[prompts]]\nname = 'broken'\ntemplate = 'x'\nbogus_key = 1\n",
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ops_get(ops, "/status");
        if st.result_json()["last_reload"]
            .as_str()
            .is_some_and(|r| r.contains("REJECTED") && r.contains("bogus_key"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rejection was not reported: {}",
            st.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        names(&mut s),
        ["first", "second"],
        "the previous configuration stays"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn graceful_stop_closes_streams_with_a_retry_hint_and_finishes_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(
        &tmp.path().join("d"),
        mcp,
        ops,
        &["--fixture", "conformance"],
        &[],
    );
    wait_port(mcp);
    let url = format!("http://127.0.0.1:{mcp}/mcp");
    let (s, _) = Session::open(&url, "2025-11-25");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", mcp)).unwrap();
    write!(stream, "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\n\r\n", s.id).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    // A request still running when the stop begins is finished.
    let body = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": { "name": "test_tool_with_progress", "_meta": { "progressToken": 1 } } });
    let h: Vec<(String, String)> = s
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let u = url.clone();
    let inflight = std::thread::spawn(move || {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        post_raw(&u, &h, body.to_string().as_bytes())
    });
    std::thread::sleep(Duration::from_millis(30));
    signal(&child, libc::SIGTERM);
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(
        rest.contains("retry: "),
        "the GET stream ended with a retry hint: {rest:?}"
    );
    let r = inflight.join().unwrap();
    assert!(
        r.messages.iter().any(|m| m.get("id") == Some(&json!(9))),
        "{}",
        r.body
    );
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), Some(0));
    // Stopped: refused, not hung.
    assert!(std::net::TcpStream::connect(("127.0.0.1", mcp)).is_err());
    let _ = ops;
}

#[test]
fn status_command_summarizes_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(&tmp.path().join("d"), mcp, ops, &[], &[]);
    wait_port(ops);
    let out = std::process::Command::new(BIN)
        .args(["status", "--ops", &format!("127.0.0.1:{ops}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ready") && text.contains(&format!("127.0.0.1:{mcp}")),
        "{text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["status", "--ops", &format!("127.0.0.1:{ops}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "no daemon: unavailable");
}

/// The maintenance task reads its settings live: after a reload that
/// shortens `session_idle_timeout_secs`, an idle session is ended at once
/// (before the fix it kept the value it started with).
#[test]
fn a_reload_changes_the_idle_timeout_the_running_maintenance_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("erlmcp.toml");
    std::fs::write(&cfg, "[http]\nsession_idle_timeout_secs = 3600\n").unwrap();
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(
        &tmp.path().join("d"),
        mcp,
        ops,
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    wait_port(mcp);
    let url = format!("http://127.0.0.1:{mcp}/mcp");
    let (s, _) = Session::open(&url, "2025-11-25");
    let live = || ops_get(ops, "/status").result_json()["sessions"].as_u64();
    assert_eq!(live(), Some(1));
    std::thread::sleep(Duration::from_millis(2100));
    std::fs::write(&cfg, "[http]\nsession_idle_timeout_secs = 1\n").unwrap();
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while live() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the idle session outlived the reloaded timeout"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.request_raw_ping();
    assert_eq!(r, 404, "the ended session is gone for good");
    child.kill().unwrap();
    child.wait().unwrap();
}
