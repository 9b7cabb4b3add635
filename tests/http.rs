//! Streamable HTTP against a real `erlmcp serve`: bad input, sessions,
//! streams, both protocol eras.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

fn init_body() -> Vec<u8> {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": { "name": "t", "version": "1" } } })
    .to_string()
    .into_bytes()
}

#[test]
fn malformed_messages_get_the_right_json_rpc_errors() {
    let server = Server::start(&[]);
    let (s, _) = Session::open(&server.url(), "2025-11-25");
    let h = s.headers();
    let cases: Vec<(&[u8], u16, i64)> = vec![
        (b"{not json", 400, -32700),
        (b"\xff\xfe{}", 400, -32700),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"\xc3\x28"}"#,
            400,
            -32700,
        ),
        (br#"{"id":1,"method":"ping"}"#, 400, -32600),
        (br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, 400, -32600),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            400,
            -32600,
        ),
    ];
    for (body, status, code) in cases {
        let r = post_raw(&server.url(), &h, body);
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(body));
        assert_eq!(r.error_code(), code, "{}", String::from_utf8_lossy(body));
        if code == -32700 {
            assert_eq!(r.response()["id"], Value::Null);
        }
    }
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{}0{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let r = post_raw(&server.url(), &h, deep.as_bytes());
    assert_eq!((r.status, r.error_code()), (400, -32700));
}

#[test]
fn protocol_errors_have_their_codes() {
    let server = Server::start(&[]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    assert_eq!(s.request("no/such/method", json!({})).error_code(), -32601);
    assert_eq!(
        s.request("tools/call", json!({})).error_code(),
        -32602,
        "missing name"
    );
    assert_eq!(
        s.request("tools/call", json!({ "name": 7 })).error_code(),
        -32602
    );
    assert_eq!(
        s.request("tools/call", json!({ "name": "nope" }))
            .error_code(),
        -32602
    );
    assert_eq!(
        s.request("resources/read", json!({ "uri": "nowhere://x" }))
            .error_code(),
        -32002
    );
    // A tool's own failure (here: invalid arguments) is a result, not an error.
    let r = s.call("search_nodes", json!({ "query": 5 }));
    assert_eq!(r.result()["isError"], true);
}

#[test]
fn requests_outside_a_session_are_refused() {
    let server = Server::start(&[]);
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let r = post_raw(&server.url(), &[("Accept", ACCEPT_BOTH)], ping);
    assert_eq!(r.status, 400, "no session: {}", r.body);
    let r = post_raw(
        &server.url(),
        &[("Accept", ACCEPT_BOTH), ("Mcp-Session-Id", "feedface")],
        ping,
    );
    assert_eq!(r.status, 404, "unknown session");
    let r = post_raw(
        &server.url(),
        &[
            ("Accept", ACCEPT_BOTH),
            ("MCP-Protocol-Version", "1999-01-01"),
        ],
        &init_body(),
    );
    assert_eq!(r.status, 400, "bad version header");
}

#[test]
fn transport_level_refusals() {
    let server = Server::start(&[]);
    let url = server.url();
    let r = post_raw(&url, &[("Content-Type", "text/plain")], &init_body());
    assert_eq!(r.status, 415);
    let r = post_raw(&url, &[("Accept", "text/html")], &init_body());
    assert_eq!(r.status, 406);
    let r = post_raw(&url, &[("Origin", "http://evil.example")], &init_body());
    assert_eq!(r.status, 403);
    let r = post_raw(&url, &[("Host", "evil.example")], &init_body());
    assert_eq!(r.status, 403);
    let r = post_raw(&url, &[("Origin", "http://localhost:5173")], &init_body());
    assert_eq!(r.status, 200, "a loopback origin is fine");
    let big = vec![b' '; 5 * 1024 * 1024];
    let r = post_raw(&url, &[], &big);
    assert_eq!(r.status, 413);
}

#[test]
fn oversize_bodies_are_refused_at_the_configured_limit() {
    let server = Server::start_env(&[], &[("ERLMCP_HTTP__MAX_BODY_BYTES", "2048")]);
    let url = server.url();
    let padded = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(3000)
    );
    assert_eq!(post_raw(&url, &[], padded.as_bytes()).status, 413);
    assert_eq!(post_raw(&url, &[], &init_body()).status, 200);
}

#[test]
fn delete_ends_a_session_and_get_streams_are_exclusive() {
    let server = Server::start(&[]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    // A GET stream stays open: read it on a raw socket so it can be held.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        held,
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\n\r\n",
        s.id
    )
    .unwrap();
    let mut buf = [0u8; 512];
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = held.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let second = get_raw(
        &server.url(),
        &[("Accept", "text/event-stream"), ("Mcp-Session-Id", &s.id)],
    );
    assert_eq!(second.status, 409);
    drop(held);

    let d = delete_raw(&server.url(), &[("Mcp-Session-Id", &s.id)]);
    assert_eq!(d.status, 200);
    assert_eq!(s.request("tools/list", json!({})).status, 404);
    assert_eq!(
        delete_raw(&server.url(), &[("Mcp-Session-Id", &s.id)]).status,
        404
    );
}

#[test]
fn sessions_and_data_survive_a_crash() {
    let mut server = Server::start(&[]);
    let (mut s, _) = Session::open(&server.url(), "2025-06-18");
    let r = s.call(
        "create_entities",
        json!({ "entities": [{ "name": "Kept", "entityType": "t", "observations": ["o"] }] }),
    );
    assert_eq!(
        r.result()["structuredContent"]["entities"][0]["name"],
        "Kept"
    );
    server.crash_and_restart();
    let r = s.call("open_nodes", json!({ "names": ["Kept"] }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.result()["structuredContent"]["entities"][0]["observations"],
        json!(["o"])
    );
    assert_eq!(s.version, "2025-06-18");
}

#[test]
fn sse_events_replay_from_last_event_id_even_after_a_restart() {
    let mut server = Server::start(&["--fixture", "conformance"]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    let r = s.request(
        "tools/call",
        json!({ "name": "test_tool_with_progress", "_meta": { "progressToken": 9 } }),
    );
    assert_eq!(
        r.messages.len(),
        4,
        "three progress notifications and the result: {}",
        r.body
    );
    let priming = r.event_ids.first().unwrap().clone();
    assert!(r.body.contains("retry: "), "a retry hint: {}", r.body);
    // Event-log writes are queued, not awaited; an awaited write behind them
    // in the writer's queue commits only after they have.
    s.call("create_entities", json!({ "entities": [] }));
    server.crash_and_restart();
    let replay = get_raw(
        &server.url(),
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &s.id),
            ("Last-Event-ID", &priming),
        ],
    );
    assert_eq!(replay.status, 200);
    assert_eq!(
        replay.messages, r.messages,
        "everything after the priming event, in order"
    );
    let after_second = get_raw(
        &server.url(),
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &s.id),
            ("Last-Event-ID", &r.event_ids[2]),
        ],
    );
    assert_eq!(after_second.messages, r.messages[2..].to_vec());
}

/// Sends a request on a raw socket and returns the socket.
fn raw_post(port: u16, session: &str, body: &str) -> std::net::TcpStream {
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        raw,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    raw
}

#[test]
fn a_vanished_client_loses_nothing_committed() {
    let server = Server::start(&["--fixture", "conformance"]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");

    // A write whose client hangs up before reading the answer still commits whole.
    let entities: Vec<Value> = (0..300)
        .map(|i| json!({ "name": format!("e{i}"), "entityType": "t", "observations": [format!("obs {i}")] }))
        .collect();
    let body = json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": { "name": "create_entities", "arguments": { "entities": entities } } });
    let raw = raw_post(server.port, &s.id, &body.to_string());
    // Give the server time to take the request in, then vanish without
    // reading a byte of the answer.
    std::thread::sleep(Duration::from_millis(1000));
    drop(raw);
    let mut found = 0;
    for _ in 0..50 {
        let r = s.call("search_nodes", json!({ "query": "obs " }));
        found = r.result()["structuredContent"]["entities"]
            .as_array()
            .unwrap()
            .len();
        if found == 300 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(found, 300);

    // A client that drops mid-stream resumes and gets the rest, answer included.
    let body = json!({ "jsonrpc": "2.0", "id": 6, "method": "tools/call",
        "params": { "name": "test_tool_with_progress", "_meta": { "progressToken": "t" } } });
    let mut raw = raw_post(server.port, &s.id, &body.to_string());
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("notifications/progress") {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(raw);
    let last_id = got
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let rest = get_raw(
        &server.url(),
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &s.id),
            ("Last-Event-ID", &last_id),
        ],
    );
    let answer = rest
        .messages
        .iter()
        .find(|m| m.get("id") == Some(&json!(6)));
    assert_eq!(
        answer.expect("the answer was kept")["result"]["content"][0]["text"],
        "t"
    );
}

#[test]
fn cancelled_requests_stop_and_send_no_response() {
    let server = Server::start(&["--fixture", "conformance"]);
    let (s, _) = Session::open(&server.url(), "2025-11-25");
    let body = json!({ "jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": { "name": "test_elicitation", "arguments": { "message": "wait" } } });
    let mut raw = raw_post(server.port, &s.id, &body.to_string());
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The handler runs (and can be cancelled) once it has asked the client.
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("elicitation/create") {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let c = s.post(
        &json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": 77, "reason": "user gave up" } }),
    );
    assert_eq!(c.status, 202);
    // The stream ends without a response to 77.
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("the cancelled request's stream did not end: {e}; got {got}"),
        }
        if got.ends_with("0\r\n\r\n") {
            break; // the chunked body's last chunk
        }
    }
    assert!(
        !got.contains("\"id\":77"),
        "a cancelled request gets no response: {got}"
    );
}

#[test]
fn json_response_mode_answers_with_one_json_body() {
    let server = Server::start_env(&[], &[("ERLMCP_HTTP__JSON_RESPONSE", "true")]);
    let url = server.url();
    let (mut s, _) = Session::open(&url, "2025-11-25");
    let r = s.request("tools/list", json!({}));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.result()["tools"].as_array().unwrap().len() >= 9);
}

#[test]
fn modern_requests_are_validated_and_stateless() {
    let server = Server::start(&["--fixture", "conformance"]);
    let url = server.url();
    let r = modern(&url, 1, "tools/list", json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(r.result()["resultType"], "complete");
    assert!(r.result()["ttlMs"].is_number());
    assert!(
        r.header("mcp-session-id").is_none(),
        "no sessions in 2026-07-28"
    );

    let body = |meta: Value| {
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": { "_meta": meta } })
            .to_string()
    };
    let hdr = [
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/list"),
    ];
    let no_caps = json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28" });
    let r = post_raw(&url, &hdr, body(no_caps).as_bytes());
    assert_eq!((r.status, r.error_code()), (400, -32602));
    let r = post_raw(&url, &hdr[..2], body(modern_meta(json!({}))).as_bytes());
    assert_eq!(
        (r.status, r.error_code()),
        (400, -32020),
        "Mcp-Method missing"
    );
    let mut old = modern_meta(json!({}));
    old["io.modelcontextprotocol/protocolVersion"] = json!("2031-01-01");
    let hdr_old = [
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2031-01-01"),
        ("Mcp-Method", "tools/list"),
    ];
    let r = post_raw(&url, &hdr_old, body(old).as_bytes());
    assert_eq!((r.status, r.error_code()), (400, -32022));
    assert!(
        r.response()["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    let r = modern(&url, 3, "ping", json!({}));
    assert_eq!(
        (r.status, r.error_code()),
        (404, -32601),
        "ping is gone in 2026-07-28"
    );
    let g = get_raw(
        &url,
        &[
            ("Accept", "text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"),
        ],
    );
    assert_eq!(g.status, 405);
    let r = modern(
        &url,
        4,
        "tools/call",
        json!({ "name": "test_missing_capability" }),
    );
    assert_eq!(r.status, 200, "the client declared sampling");
    let r = modern(
        &url,
        5,
        "resources/read",
        json!({ "uri": "test://nothing" }),
    );
    assert_eq!(
        r.error_code(),
        -32602,
        "resource not found is invalid params since 2026-07-28"
    );
}

#[test]
fn notifications_made_while_the_client_was_away_are_replayed_after_a_restart() {
    let mut server = Server::start(&[]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    let r = s.request(
        "resources/subscribe",
        json!({ "uri": "memory://knowledge-graph" }),
    );
    assert_eq!(r.status, 200);
    // Open the GET stream and note its priming event id.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(raw, "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\n\r\n", s.id).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while !got.contains("data:") {
        let n = raw.read(&mut buf).unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let last = got
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    drop(raw);
    server.crash_and_restart();
    // Another client writes while the subscriber's stream is gone.
    let (mut other, _) = Session::open(&server.url(), "2025-11-25");
    other.call(
        "create_entities",
        json!({ "entities": [{ "name": "x", "entityType": "t", "observations": [] }] }),
    );
    std::thread::sleep(Duration::from_millis(300));
    other.call("create_entities", json!({ "entities": [] }));
    // The stream is live again, so read it as it comes rather than to its end.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        raw,
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\nLast-Event-ID: {last}\r\n\r\n",
        s.id
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = String::new();
    while !got.contains("notifications/resources/updated") {
        let n = raw.read(&mut buf).unwrap_or(0);
        assert!(
            n > 0,
            "the update made during the absence was not replayed: {got}"
        );
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("memory://knowledge-graph"), "{got}");
}

/// Reads an SSE connection until `needle` shows up; panics if it ends first.
fn read_until(raw: &mut std::net::TcpStream, needle: &str) -> String {
    let (mut got, mut buf) = (String::new(), [0u8; 4096]);
    while !got.contains(needle) {
        let n = raw.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "the stream ended before {needle:?} came: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

fn open_get(port: u16, session: &str, last_event_id: Option<&str>) -> std::net::TcpStream {
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        raw,
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {session}\r\n{resume}\r\n"
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw
}

/// The event log is written in batches, so a crash can lose its last rows
/// after their events reached the client (here: deleted by hand, which is
/// what such a crash leaves). Events after the restart must still get ids
/// above the client's, or a resume from the client's id would skip them.
#[test]
fn a_crash_that_lost_logged_events_does_not_reuse_their_ids() {
    let mut server = Server::start(&[]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    s.request(
        "resources/subscribe",
        json!({ "uri": "memory://knowledge-graph" }),
    );
    let mut raw = open_get(server.port, &s.id, None);
    read_until(&mut raw, "data:");
    s.call(
        "create_entities",
        json!({ "entities": [{ "name": "a", "entityType": "t", "observations": [] }] }),
    );
    let got = read_until(&mut raw, "notifications/resources/updated");
    let seen = got
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_owned();
    drop(raw);
    std::thread::sleep(Duration::from_millis(200));
    server.crash();
    let db = rusqlite::Connection::open(server.data.join("erlmcp.db")).unwrap();
    let lost = db
        .execute("DELETE FROM sse_events WHERE session_id = ?1", [&s.id])
        .unwrap();
    assert!(lost > 0, "the live event was never logged");
    drop(db);
    server.restart();
    s.call(
        "create_entities",
        json!({ "entities": [{ "name": "b", "entityType": "t", "observations": [] }] }),
    );
    let mut raw = open_get(server.port, &s.id, Some(&seen));
    let got = read_until(&mut raw, "notifications/resources/updated");
    let replayed: Vec<&str> = got.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert!(
        !replayed.contains(&seen.as_str()),
        "a new event reused the id {seen}: {got}"
    );
}
